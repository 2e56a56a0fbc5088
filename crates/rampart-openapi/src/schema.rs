//! Schemas: each one the spec uses is bundled into a self-contained JSON Schema 2020-12 document
//! (every `$ref` it reaches copied under `$defs`, OpenAPI 3.0 dialect translated), compiled once
//! with `jsonschema`, and kept beside the bundled tree for the walks validation cannot do:
//! `readOnly` in requests, stripping undeclared and `writeOnly` properties from responses.

use crate::spec::{esc, Docs, SpecError, Version};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which way the data flows: `required` means different things for `readOnly`/`writeOnly`
/// properties in each (OpenAPI: a required read-only property is required in responses only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// The prefix of the names Rampart gives the definitions it bundles.
const DEF: &str = "rampart-";

/// Keywords whose value is a map of schemas.
const MAP_KEYS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is one schema.
const ONE_KEYS: &[&str] = &[
    "additionalProperties",
    "items",
    "not",
    "contains",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
];
/// Keywords whose value is an array of schemas.
const LIST_KEYS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

struct Bundler<'d> {
    docs: &'d Docs,
    dir: Direction,
    defs: Map<String, Value>,
    names: HashMap<String, String>,
    origins: HashMap<String, (PathBuf, String)>,
    /// Request direction: `readOnly` properties were turned into `false` schemas.
    read_only_seen: bool,
    pending: Vec<(String, PathBuf, String)>,
}

/// A schema bundled and compiled.
pub struct Compiled {
    pub validator: jsonschema::Validator,
    /// The same schema compiled for [`crate::tape`] documents: the fast path that only has to
    /// say "valid"; anything else goes through `validator` for the error messages.
    pub fast: jsonschema::Validator<crate::tape::Tape>,
    /// The schema compiled for [`crate::onepass`], which parses and checks a body in one pass
    /// (`None`: the schema is left to the tape).
    pub onepass: Option<crate::onepass::OnePass>,
    /// The bundled schema: refs point into its own `$defs`.
    pub tree: Arc<Value>,
    /// Some property somewhere is `readOnly` / `writeOnly`.
    pub has_read_only: bool,
    pub has_write_only: bool,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("tree", &self.tree)
            .finish()
    }
}

/// Bundle the schema at (`file`, `pointer`) into a self-contained 2020-12 document. Also says
/// whether `readOnly` properties were forbidden (request direction).
pub fn bundle(
    docs: &Docs,
    dir: Direction,
    file: &Path,
    pointer: &str,
    schema: &Value,
) -> Result<(Value, bool), SpecError> {
    let mut b = Bundler {
        docs,
        dir,
        defs: Map::new(),
        names: HashMap::new(),
        origins: HashMap::new(),
        read_only_seen: false,
        pending: Vec::new(),
    };
    let mut root = b.conv(file, pointer, schema)?;
    while let Some((name, f, p)) = b.pending.pop() {
        let target = docs
            .at(&f, &p)
            .ok_or_else(|| SpecError::new(&f, &p, "$ref points at nothing"))?;
        let converted = b.conv(&f, &p, target)?;
        b.defs.insert(name, converted);
    }
    if !b.defs.is_empty() {
        match &mut root {
            Value::Object(m) => {
                let defs = m
                    .entry("$defs")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(d) = defs {
                    d.extend(std::mem::take(&mut b.defs));
                }
            }
            Value::Bool(x) => {
                let x = *x;
                let mut m = Map::new();
                m.insert("$defs".into(), Value::Object(std::mem::take(&mut b.defs)));
                if !x {
                    m.insert("not".into(), Value::Object(Map::new()));
                }
                root = Value::Object(m);
            }
            _ => {}
        }
    }
    Ok((root, b.read_only_seen))
}

impl Bundler<'_> {
    fn conv(&mut self, file: &Path, ptr: &str, s: &Value) -> Result<Value, SpecError> {
        let m = match s {
            Value::Bool(_) if self.docs.version == Version::V31 => return Ok(s.clone()),
            Value::Object(m) => m,
            _ => {
                return Err(SpecError::new(
                    file,
                    ptr,
                    "a schema must be an object".to_string(),
                ))
            }
        };
        let v30 = self.docs.version == Version::V30;
        let mut out = Map::new();
        if let Some(r) = m.get("$ref") {
            let Some(r) = r.as_str() else {
                return Err(SpecError::new(file, ptr, "$ref must be a string"));
            };
            let (tf, tp, _) = self
                .docs
                .resolve(file, r)
                .map_err(|msg| SpecError::new(file, ptr, msg))?;
            let key = format!("{}#{}", tf.display(), tp);
            let name = match self.names.get(&key) {
                Some(n) => n.clone(),
                None => {
                    let n = format!("{DEF}{}", self.names.len());
                    self.names.insert(key, n.clone());
                    self.origins.insert(n.clone(), (tf.clone(), tp.clone()));
                    self.pending.push((n.clone(), tf, tp));
                    n
                }
            };
            out.insert("$ref".into(), Value::String(format!("#/$defs/{name}")));
            if v30 {
                // OpenAPI 3.0: siblings of `$ref` are ignored.
                return Ok(Value::Object(out));
            }
        }
        for (k, v) in m {
            if k == "$ref" {
                continue;
            }
            let here = format!("{ptr}/{}", esc(k));
            let k = k.as_str();
            if MAP_KEYS.contains(&k) {
                let Value::Object(sub) = v else {
                    return Err(SpecError::new(file, &here, format!("`{k}` must be a map")));
                };
                let mut o = Map::new();
                for (name, sv) in sub {
                    let p = format!("{here}/{}", esc(name));
                    o.insert(name.clone(), self.conv(file, &p, sv)?);
                }
                out.insert(k.into(), Value::Object(o));
            } else if ONE_KEYS.contains(&k) && (v.is_object() || v.is_boolean()) {
                if v.is_boolean() {
                    out.insert(k.into(), v.clone());
                } else {
                    out.insert(k.into(), self.conv(file, &here, v)?);
                }
            } else if LIST_KEYS.contains(&k) || (k == "items" && v.is_array()) {
                let Value::Array(list) = v else {
                    return Err(SpecError::new(file, &here, format!("`{k}` must be a list")));
                };
                let mut o = Vec::with_capacity(list.len());
                for (i, sv) in list.iter().enumerate() {
                    o.push(self.conv(file, &format!("{here}/{i}"), sv)?);
                }
                let key = if k == "items" { "prefixItems" } else { k };
                out.insert(key.into(), Value::Array(o));
            } else if v30
                && (k == "nullable"
                    || ((k == "exclusiveMinimum" || k == "exclusiveMaximum") && v.is_boolean()))
            {
                // 3.0 keywords: translated below.
            } else {
                out.insert(k.into(), v.clone());
            }
        }
        if v30 {
            self.translate_30(m, &mut out);
        }
        widen_integer_formats(&mut out);
        self.relax_required(&mut out);
        if self.dir == Direction::Request {
            self.forbid_read_only(&mut out);
        }
        Ok(Value::Object(out))
    }

    /// OpenAPI 3.0's schema dialect into 2020-12.
    fn translate_30(&self, m: &Map<String, Value>, out: &mut Map<String, Value>) {
        if m.get("nullable") == Some(&Value::Bool(true)) {
            if let Some(Value::String(t)) = out.get("type").cloned() {
                out.insert(
                    "type".into(),
                    Value::Array(vec![Value::String(t), Value::String("null".into())]),
                );
            }
            if let Some(Value::Array(e)) = out.get_mut("enum") {
                if !e.contains(&Value::Null) {
                    e.push(Value::Null);
                }
            }
        }
        for (flag, bound) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            if m.get(flag) == Some(&Value::Bool(true)) {
                if let Some(b) = out.remove(bound) {
                    out.insert(flag.into(), b);
                }
            }
        }
    }

    /// In requests a required `readOnly` property need not be sent; in responses a required
    /// `writeOnly` one need not be returned.
    fn relax_required(&self, out: &mut Map<String, Value>) {
        let flag = match self.dir {
            Direction::Request => "readOnly",
            Direction::Response => "writeOnly",
        };
        let Some(Value::Object(props)) = out.get("properties") else {
            return;
        };
        let Some(Value::Array(req)) = out.get("required") else {
            return;
        };
        let mut keep = Vec::with_capacity(req.len());
        for r in req {
            let name = r.as_str().unwrap_or("");
            let marked = props.get(name).is_some_and(|p| self.has_flag(p, flag));
            if !marked {
                keep.push(r.clone());
            }
        }
        if keep.len() != req.len() {
            out.insert("required".into(), Value::Array(keep));
        }
    }

    /// In requests a `readOnly` property must not be sent at all: its schema becomes `false`,
    /// so the validator reports it (as a `false`-schema error at its pointer) in the same pass.
    fn forbid_read_only(&mut self, out: &mut Map<String, Value>) {
        let Some(Value::Object(props)) = out.get("properties") else {
            return;
        };
        let marked: Vec<String> = props
            .iter()
            .filter(|(_, p)| self.has_flag(p, "readOnly"))
            .map(|(k, _)| k.clone())
            .collect();
        if marked.is_empty() {
            return;
        }
        self.read_only_seen = true;
        if let Some(Value::Object(props)) = out.get_mut("properties") {
            for k in marked {
                props.insert(k, Value::Bool(false));
            }
        }
    }

    /// Whether a (converted) property schema carries `flag: true`, looking through its `$ref`.
    fn has_flag(&self, p: &Value, flag: &str) -> bool {
        if p.get(flag) == Some(&Value::Bool(true)) {
            return true;
        }
        if let Some(Value::String(r)) = p.get("$ref") {
            if let Some(name) = r.strip_prefix("#/$defs/") {
                // Look at the definition where the spec wrote it.
                if let Some((f, ptr)) = self.origins.get(name) {
                    if let Some(t) = self.docs.at(f, ptr) {
                        return t.get(flag) == Some(&Value::Bool(true));
                    }
                }
            }
        }
        false
    }
}

/// `format: int32` / `int64` bound the integer: the validator checks the range.
fn widen_integer_formats(out: &mut Map<String, Value>) {
    let (lo, hi): (i64, i64) = match out.get("format").and_then(Value::as_str) {
        Some("int32") => (i32::MIN as i64, i32::MAX as i64),
        Some("int64") => (i64::MIN, i64::MAX),
        _ => return,
    };
    if !out.contains_key("minimum") && !out.contains_key("exclusiveMinimum") {
        out.insert("minimum".into(), Value::from(lo));
    }
    if !out.contains_key("maximum") && !out.contains_key("exclusiveMaximum") {
        out.insert("maximum".into(), Value::from(hi));
    }
}

fn is_base64(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        || base64::engine::general_purpose::URL_SAFE.decode(s).is_ok()
}

/// `format: email`: the common shape (`name.tag+x@host.example`) is accepted here; anything
/// else is decided by `jsonschema`'s own email check. Its check parses the address with the
/// full RFC 5321 grammar and costs as much as the rest of validating a typical order body, and
/// nearly all addresses APIs see are the plain kind. What is accepted here is a strict subset
/// of what it accepts (a test holds it to that): a dot-atom local part of letters, digits and
/// `.`, `_`, `+`, `-`, and a host name of at least two labels ending in a letters-only label.
fn is_email(s: &str) -> bool {
    common_email(s) || builtin_email(s)
}

fn common_email(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() > 254 {
        return false;
    }
    let Some(at) = b.iter().position(|&c| c == b'@') else {
        return false;
    };
    let (local, domain) = (&b[..at], &b[at + 1..]);
    if local.is_empty() || local.len() > 64 || local[0] == b'.' || local[local.len() - 1] == b'.' {
        return false;
    }
    let mut prev = 0u8;
    for &c in local {
        let ok = c.is_ascii_alphanumeric()
            || matches!(c, b'_' | b'+' | b'-')
            || (c == b'.' && prev != b'.');
        if !ok {
            return false;
        }
        prev = c;
    }
    if domain.len() > 253 {
        return false;
    }
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|&c| c == b'.') {
        let n = label.len();
        let ok = n > 0
            && n <= 63
            && label.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            && label[0] != b'-'
            && label[n - 1] != b'-'
            // `xn--` and other `??--` labels take the full check (A-label rules).
            && !(n >= 4 && label[2] == b'-' && label[3] == b'-');
        if !ok {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic)
}

fn builtin_email(s: &str) -> bool {
    static CHECK: std::sync::LazyLock<Option<jsonschema::Validator>> =
        std::sync::LazyLock::new(|| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&serde_json::json!({ "format": "email" }))
                .ok()
        });
    CHECK
        .as_ref()
        .is_some_and(|v| v.is_valid(&Value::String(s.to_string())))
}

/// Compile a bundled schema.
pub fn compile(
    tree: Value,
    read_only: bool,
    file: &Path,
    pointer: &str,
) -> Result<Compiled, SpecError> {
    // The same options for both instance representations, so both decide alike.
    fn build<F: jsonschema::json::Json>(
        tree: &Value,
        file: &Path,
        pointer: &str,
    ) -> Result<jsonschema::Validator<F>, SpecError> {
        jsonschema::options_for::<F>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .with_format("byte", is_base64)
            .with_format("email", is_email)
            .build(tree)
            .map_err(|e| {
                SpecError::new(
                    file,
                    pointer,
                    format!("invalid schema: {}", e.masked_with("value")),
                )
            })
    }
    let validator = build::<jsonschema::json::SerdeJson>(&tree, file, pointer)?;
    let fast = build::<crate::tape::Tape>(&tree, file, pointer)?;
    let onepass = crate::onepass::OnePass::compile(&tree, &|sub: &Value| {
        build::<crate::tape::Tape>(sub, file, pointer).ok()
    });
    let has_read_only = read_only || contains_flag(&tree, "readOnly");
    let has_write_only = contains_flag(&tree, "writeOnly");
    Ok(Compiled {
        validator,
        fast,
        onepass,
        tree: Arc::new(tree),
        has_read_only,
        has_write_only,
    })
}

/// Bundle and compile in one step.
pub fn load(
    docs: &Docs,
    dir: Direction,
    file: &Path,
    pointer: &str,
    schema: &Value,
) -> Result<Compiled, SpecError> {
    let (tree, read_only) = bundle(docs, dir, file, pointer, schema)?;
    compile(tree, read_only, file, pointer)
}

fn contains_flag(v: &Value, flag: &str) -> bool {
    match v {
        Value::Object(m) => {
            m.get(flag) == Some(&Value::Bool(true)) || m.values().any(|x| contains_flag(x, flag))
        }
        Value::Array(a) => a.iter().any(|x| contains_flag(x, flag)),
        _ => false,
    }
}

/// One validation failure, safe to show the client: where, and which rule of the spec it broke.
/// Never the offending value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `path`, `query`, `header`, `cookie` or `body`.
    pub location: &'static str,
    /// The parameter name (empty for the body).
    pub name: String,
    /// JSON pointer within the value.
    pub pointer: String,
    pub reason: String,
}

impl Failure {
    /// A failure of the request or response body at `pointer`.
    pub fn body(pointer: String, reason: impl Into<String>) -> Failure {
        Failure {
            location: "body",
            name: String::new(),
            pointer,
            reason: reason.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("in".into(), Value::String(self.location.into()));
        if !self.name.is_empty() {
            m.insert("name".into(), Value::String(self.name.clone()));
        }
        m.insert("pointer".into(), Value::String(self.pointer.clone()));
        m.insert("reason".into(), Value::String(self.reason.clone()));
        Value::Object(m)
    }
}

/// Explain a validation error from the spec's side only (limits and names the spec declares).
pub fn reason(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    match e.kind() {
        K::Type { kind } => format!("must be of type {}", type_name(kind)),
        K::Required { property } => format!(
            "required property {} is missing",
            property
                .as_str()
                .map(|s| format!("`{s}`"))
                .unwrap_or_default()
        ),
        K::AdditionalProperties { .. } | K::UnevaluatedProperties { .. } => {
            "has a property the schema does not allow".into()
        }
        K::Enum { .. } => "must be one of the values the schema lists".into(),
        K::Constant { .. } => "must equal the value the schema fixes".into(),
        K::Minimum { limit } => format!("must be >= {limit}"),
        K::Maximum { limit } => format!("must be <= {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be > {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be < {limit}"),
        K::MinLength { limit } => format!("must be at least {limit} characters"),
        K::MaxLength { limit } => format!("must be at most {limit} characters"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        K::Pattern { .. } => "does not match the required pattern".into(),
        K::Format { format } => format!("must be a valid `{format}`"),
        K::UniqueItems => "items must be unique".into(),
        K::MultipleOf { .. } => "is not a multiple the schema allows".into(),
        K::OneOfNotValid { .. } | K::OneOfMultipleValid { .. } => {
            "must match exactly one of the schema's alternatives".into()
        }
        K::AnyOf { .. } => "must match one of the schema's alternatives".into(),
        K::Not { .. } => "matches a schema it must not match".into(),
        K::FalseSchema => "is not allowed here (readOnly properties may not be sent)".into(),
        _ => format!("fails the `{}` rule", e.kind().keyword()),
    }
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(ts) => {
            let v: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
            v.join(" or ")
        }
    }
}

/// Validate, returning at most `max` failures.
pub fn check(
    c: &Compiled,
    v: &Value,
    location: &'static str,
    name: &str,
    max: usize,
) -> Vec<Failure> {
    if c.validator.is_valid(v) {
        return Vec::new();
    }
    c.validator
        .iter_errors(v)
        .take(max)
        .map(|e| Failure {
            location,
            name: name.to_string(),
            pointer: e.instance_path().to_string(),
            reason: reason(&e),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Walks over a bundled tree.

fn lookup<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    let mut s = s;
    for _ in 0..32 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(t) => s = t,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

/// The schema and every `allOf`/`anyOf`/`oneOf` branch under it (refs followed): the places
/// that declare properties for an instance.
fn branches<'a>(root: &'a Value, s: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    if depth > 16 {
        return;
    }
    let s = lookup(root, s);
    out.push(s);
    // 3.1 allows siblings beside `$ref`.
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        if let Some(t) = r.strip_prefix('#').and_then(|p| root.pointer(p)) {
            branches(root, t, out, depth + 1);
        }
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = s.get(k) {
            for b in list {
                branches(root, b, out, depth + 1);
            }
        }
    }
}

/// The schema that governs property `name` of an object under schema `s`, if one is declared.
fn property_schemas<'a>(root: &'a Value, s: &'a Value, name: &str) -> Vec<&'a Value> {
    let mut bs = Vec::new();
    branches(root, s, &mut bs, 0);
    bs.iter()
        .filter_map(|b| b.get("properties").and_then(|p| p.get(name)))
        .map(|p| lookup(root, p))
        .collect()
}

fn item_schema<'a>(root: &'a Value, s: &'a Value) -> Vec<&'a Value> {
    let mut bs = Vec::new();
    branches(root, s, &mut bs, 0);
    bs.iter()
        .filter_map(|b| b.get("items").filter(|i| i.is_object()))
        .map(|p| lookup(root, p))
        .collect()
}

/// Pointers of the `readOnly` properties a request body sends (request-direction schemas turn
/// them into `false` schemas; see `Bundler::forbid_read_only`).
pub fn read_only_pointers(c: &Compiled, v: &Value) -> Vec<String> {
    use jsonschema::error::ValidationErrorKind as K;
    if !c.has_read_only {
        return Vec::new();
    }
    c.validator
        .iter_errors(v)
        .filter(|e| matches!(e.kind(), K::FalseSchema))
        .map(|e| e.instance_path().to_string())
        .collect()
}

/// Remove the properties at these pointers.
pub fn remove_pointers(v: &mut Value, pointers: &[String]) {
    // Deepest first so indices and parents stay valid.
    let mut ps: Vec<&String> = pointers.iter().collect();
    ps.sort_by(|a, b| b.cmp(a));
    for p in ps {
        let Some((parent, last)) = p.rsplit_once('/') else {
            continue;
        };
        let key = last.replace("~1", "/").replace("~0", "~");
        if let Some(Value::Object(m)) = v.pointer_mut(parent) {
            m.remove(&key);
        }
    }
}

/// Excessive data exposure: remove from a response every property the schema does not declare
/// (where it declares properties and does not explicitly allow others) and every `writeOnly`
/// one. Returns the pointers removed.
pub fn strip_response(c: &Compiled, v: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    strip(&c.tree, &c.tree, v, "", &mut removed, 0);
    removed
}

fn strip(
    root: &Value,
    s: &Value,
    v: &mut Value,
    at: &str,
    removed: &mut Vec<String>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    let mut bs = Vec::new();
    branches(root, s, &mut bs, 0);
    match v {
        Value::Object(m) => {
            let declares = bs.iter().any(|b| b.get("properties").is_some());
            let open = bs.iter().any(|b| {
                matches!(
                    b.get("additionalProperties"),
                    Some(Value::Object(_) | Value::Bool(true))
                ) || b.get("patternProperties").is_some()
            });
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let here = format!("{at}/{}", esc(&k));
                let ps = property_schemas(root, s, &k);
                if ps.is_empty() {
                    if declares && !open {
                        m.remove(&k);
                        removed.push(here);
                    }
                    continue;
                }
                if ps
                    .iter()
                    .any(|p| p.get("writeOnly") == Some(&Value::Bool(true)))
                {
                    m.remove(&k);
                    removed.push(here);
                    continue;
                }
                if let Some(x) = m.get_mut(&k) {
                    for p in ps {
                        strip(root, p, x, &here, removed, depth + 1);
                    }
                }
            }
        }
        Value::Array(a) => {
            for is in item_schema(root, s) {
                for (i, x) in a.iter_mut().enumerate() {
                    strip(root, is, x, &format!("{at}/{i}"), removed, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Whether values under this schema cannot carry free text: numbers, booleans, enums of
/// scalars, strict formats, anchored patterns of plain characters.
pub fn is_strict(root: &Value, s: &Value) -> bool {
    let s = lookup(root, s);
    if let Some(Value::Array(e)) = s.get("enum") {
        return e
            .iter()
            .all(|x| !x.is_object() && !x.is_array() && x.as_str().is_none_or(is_plain_token));
    }
    if let Some(c) = s.get("const") {
        return c.as_str().is_none_or(is_plain_token) && !c.is_object() && !c.is_array();
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return false,
    };
    types.iter().all(|t| match *t {
        "integer" | "number" | "boolean" | "null" => true,
        "string" => {
            matches!(
                s.get("format").and_then(Value::as_str),
                Some("uuid" | "date" | "date-time" | "time" | "ipv4" | "ipv6" | "int32" | "int64")
            ) || s
                .get("pattern")
                .and_then(Value::as_str)
                .is_some_and(is_tight_pattern)
        }
        _ => false,
    })
}

fn is_plain_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `^...$` built only from literal word characters, classes of them and quantifiers.
fn is_tight_pattern(p: &str) -> bool {
    let Some(inner) = p.strip_prefix('^').and_then(|x| x.strip_suffix('$')) else {
        return false;
    };
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d' | 'w' | '-' | '.' | '_') => {}
                _ => return false,
            },
            '[' => {
                if chars.peek() == Some(&'^') {
                    return false;
                }
            }
            c if c.is_ascii_alphanumeric() => {}
            ']' | '{' | '}' | ',' | '-' | '_' | '+' | '*' | '?' | '(' | ')' | '|' | ':' => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_emails_are_a_subset_of_the_full_check() {
        for ok in [
            "maria.garcia@example.com",
            "a+tag@sub.example.co",
            "x_y-z@a-b.example.org",
            "A1@B2.io",
        ] {
            assert!(common_email(ok), "{ok}");
            assert!(builtin_email(ok), "{ok}");
        }
        // Left to the full check, which still decides them.
        for (s, valid) in [
            ("\"quoted local\"@example.com", true),
            ("user@[127.0.0.1]", true),
            ("user@localhost", true),
            ("user@xn--bcher-kva.example", true),
            ("a..b@example.com", false),
            ("a@-example.com", false),
            ("a@example..com", false),
            ("@example.com", false),
            ("a@b@example.com", false),
        ] {
            assert!(!common_email(s), "{s}");
            assert_eq!(is_email(s), valid, "{s}");
        }
        // Generated addresses: whatever the fast path accepts, the full check accepts.
        let alphabet: &[u8] = b"aZ09._+-@@..--\"[]: \\!#x";
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..60_000 {
            let len = 3 + (next() % 24) as usize;
            let mut v: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Bias towards the plausible shape: an `@` and a letters-only last label.
            if next() % 2 == 0 {
                let at = 1 + (next() % (len as u64 - 1)) as usize;
                v[at] = b'@';
                v.extend_from_slice(b".com");
            }
            let Ok(s) = String::from_utf8(v) else {
                continue;
            };
            if common_email(&s) {
                accepted += 1;
                assert!(
                    builtin_email(&s),
                    "fast path accepted {s:?}, the full check refuses it"
                );
            }
        }
        assert!(
            accepted > 100,
            "the generator rarely produced a plain address ({accepted})"
        );
    }

    #[test]
    fn tight_patterns() {
        assert!(is_tight_pattern("^[a-z0-9]{3,16}$"));
        assert!(is_tight_pattern("^\\d+$"));
        assert!(!is_tight_pattern("^.*$"));
        assert!(!is_tight_pattern("[a-z]+"));
        assert!(!is_tight_pattern("^[^/]+$"));
        assert!(!is_tight_pattern("^\\S+$"));
    }
}
