//! The fastest path for JSON bodies: one pass over the bytes that parses and validates at once,
//! against a schema compiled into plain checks (types, bounds, lengths, string choices,
//! properties, `required`, `additionalProperties`, items). Nothing is built per body: no tape,
//! no tree; a property name is looked up in its object's schema as it is read and its value
//! checked right there.
//!
//! Like [`crate::tape`], it only ever answers "valid". A body it does not accept (invalid JSON,
//! a failed check, or a case it leaves to the validator, such as `2.0` for an integer or a
//! bound it cannot compare exactly) goes through the full path, which decides and explains.
//! So it must never accept what the full path refuses: the differential tests
//! (`tests/fast_path.rs`) and the `json_onepass` fuzz target hold it to that.
//!
//! Keywords it does not implement (`oneOf`, `multipleOf`, `uniqueItems`, ...) make their
//! subschema *opaque*: that value is read onto a tape with [`crate::tape::parse_at`] and checked
//! by `jsonschema` compiled for that subschema alone, so every schema gets the one pass for the
//! parts it can do. `pattern` and `format` are checked by `jsonschema` too (on the string, no
//! copy), so they mean exactly what they mean on the full path.

use crate::tape::{self, TNode, Tape};
use jsonschema::Validator;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;

/// Deepest nesting read (the tape's limit; deeper bodies take the full path).
const DEPTH: usize = 100;
/// Opaque subschemas per schema: each is a compiled validator carrying the schema's `$defs`.
/// A schema needing more is left to the tape path entirely.
const MAX_OPAQUE: usize = 32;
/// At most this many declared properties per object (a bit each while reading).
const MAX_PROPS: usize = 64;

const NULL: u8 = 1;
const BOOL: u8 = 2;
const INT: u8 = 4;
const NUM: u8 = 8;
const STR: u8 = 16;
const ARR: u8 = 32;
const OBJ: u8 = 64;
const ALL: u8 = 127;

/// Node 0 accepts anything (`true`, or no keywords); node 1 nothing (`false`).
const ANY: u32 = 0;
const NEVER: u32 = 1;

/// A schema compiled for the one pass.
pub struct OnePass {
    nodes: Vec<Node>,
    root: u32,
}

impl std::fmt::Debug for OnePass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnePass")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

enum Node {
    Check(Box<Check>),
    Never,
    /// A `$ref` and nothing else: the target's node.
    Ref(u32),
    Opaque(Box<Validator<Tape>>),
}

#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i128),
    Float(f64),
}

#[derive(Clone, Copy)]
enum Bound {
    Min,
    Max,
    ExclusiveMin,
    ExclusiveMax,
}

/// The allowed values of `enum` / `const` when they are all strings, booleans or null.
#[derive(Default)]
struct Choices {
    strings: Vec<Box<str>>,
    null: bool,
    yes: bool,
    no: bool,
}

struct Check {
    types: u8,
    choices: Option<Choices>,
    // strings
    min_len: u64,
    max_len: u64,
    /// `pattern` and `format`, compiled by `jsonschema` alone.
    leaf: Option<Validator<Tape>>,
    // numbers
    bounds: Vec<(Num, Bound)>,
    // arrays
    items: u32,
    min_items: u64,
    max_items: u64,
    // objects
    props: Vec<Prop>,
    /// Bits of `props` that `required` names.
    required: u64,
    additional: u32,
    min_props: u64,
    max_props: u64,
}

impl Check {
    fn any() -> Check {
        Check {
            types: ALL,
            choices: None,
            min_len: 0,
            max_len: u64::MAX,
            leaf: None,
            bounds: Vec::new(),
            items: ANY,
            min_items: 0,
            max_items: u64::MAX,
            props: Vec::new(),
            required: 0,
            additional: ANY,
            min_props: 0,
            max_props: u64::MAX,
        }
    }
}

/// A declared property: its name, and the name's length and first eight bytes as one word, so
/// that most names a body sends are told apart without a byte comparison.
struct Prop {
    len: usize,
    word: u64,
    /// The bits of a word read from the body that hold the name's first eight bytes.
    mask: u64,
    /// The name is written in JSON as its own bytes (no `"`, `\\` or control characters), so
    /// the body's bytes can be compared with it before the string is read.
    plain: bool,
    name: Box<str>,
    node: u32,
}

/// The first eight bytes of `name` (zero-padded) as a little-endian word.
fn head_word(name: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = name.len().min(8);
    b[..n].copy_from_slice(&name[..n]);
    u64::from_le_bytes(b)
}

/// Keywords that never change whether an instance is valid (annotations, and `$defs`, which is
/// reached through `$ref` only).
const INERT: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "example",
    "readOnly",
    "writeOnly",
    "deprecated",
    "$comment",
    "$defs",
    "definitions",
    "xml",
    "externalDocs",
];

/// Builds a validator for one subschema with the options the full path uses.
pub type SubBuilder<'a> = &'a dyn Fn(&Value) -> Option<Validator<Tape>>;

struct Compiler<'a> {
    root: &'a Value,
    sub: SubBuilder<'a>,
    nodes: Vec<Node>,
    refs: HashMap<String, u32>,
    opaque: usize,
    failed: bool,
}

impl OnePass {
    /// Compile a bundled schema (refs as `#/...` pointers into `tree`). `None` when the schema
    /// is better left to the tape path (too many opaque parts, a part `jsonschema` would not
    /// compile alone).
    pub fn compile(tree: &Value, sub: SubBuilder<'_>) -> Option<OnePass> {
        let mut c = Compiler {
            root: tree,
            sub,
            nodes: vec![Node::Check(Box::new(Check::any())), Node::Never],
            refs: HashMap::new(),
            opaque: 0,
            failed: false,
        };
        let root = c.node(tree);
        if c.failed || c.has_ref_cycle() {
            return None;
        }
        Some(OnePass {
            nodes: c.nodes,
            root,
        })
    }

    /// Whether `body` is a JSON document valid against the schema. `false` means "not shown
    /// valid here": the full path decides.
    pub fn is_valid(&self, body: &[u8]) -> bool {
        let Ok(src) = std::str::from_utf8(body) else {
            return false;
        };
        if body.len() >= u32::MAX as usize {
            return false;
        }
        let mut r = Reader {
            pass: self,
            src,
            s: body,
            i: 0,
            scratch: String::new(),
            keys: Vec::new(),
            arena: String::new(),
        };
        r.ws();
        if r.value(self.root, 0).is_err() {
            return false;
        }
        r.ws();
        r.i == body.len()
    }
}

/// A parameter's value as the full path reads it from text (see `params::Prim::coerce`),
/// checked without building JSON.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar<'a> {
    Int(i128),
    /// Finite.
    Float(f64),
    Bool(bool),
    Null,
    Str(&'a str),
}

impl Scalar<'_> {
    /// The JSON value the full path validates for this scalar.
    pub fn to_value(self) -> Value {
        match self {
            Scalar::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                (Ok(i), _) => Value::from(i),
                (_, Ok(u)) => Value::from(u),
                // Wider than JSON integers: as a float, as serde_json would read it.
                _ => serde_json::Number::from_f64(i as f64).map_or(Value::Null, Value::Number),
            },
            Scalar::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Null => Value::Null,
            Scalar::Str(s) => Value::String(s.to_string()),
        }
    }
}

impl OnePass {
    /// The check at `at`, through `$ref`s; `None` for `false` and opaque schemas.
    fn check_at(&self, mut at: u32) -> Option<&Check> {
        loop {
            match &self.nodes[at as usize] {
                Node::Ref(next) => at = *next,
                Node::Check(c) => return Some(c),
                Node::Never | Node::Opaque(_) => return None,
            }
        }
    }

    /// Whether a scalar is valid against the schema. `false` means "not shown valid here".
    pub fn scalar_valid(&self, v: Scalar<'_>) -> bool {
        self.check_at(self.root)
            .is_some_and(|c| scalar_ok(c, v).is_ok())
    }

    /// Whether an array of these scalars is valid against the schema. `false` means "not
    /// shown valid here".
    pub fn array_valid<'a>(&self, items: impl IntoIterator<Item = Scalar<'a>>) -> bool {
        let Some(c) = self.check_at(self.root) else {
            return false;
        };
        if c.types & ARR == 0 || c.choices.is_some() {
            return false;
        }
        let Some(item) = self.check_at(c.items) else {
            return false;
        };
        let mut n = 0u64;
        for v in items {
            n += 1;
            if n > c.max_items || scalar_ok(item, v).is_err() {
                return false;
            }
        }
        n >= c.min_items
    }
}

impl Compiler<'_> {
    fn push(&mut self, n: Node) -> u32 {
        self.nodes.push(n);
        (self.nodes.len() - 1) as u32
    }

    fn node(&mut self, s: &Value) -> u32 {
        match s {
            Value::Bool(true) => ANY,
            Value::Bool(false) => NEVER,
            Value::Object(m) => {
                if let Some(r) = m.get("$ref") {
                    let alone = m.keys().all(|k| k == "$ref" || inert(k));
                    match (r.as_str(), alone) {
                        (Some(r), true) => self.reference(r, s),
                        _ => self.opaque(s),
                    }
                } else {
                    let n = self.build(m, s);
                    self.push(n)
                }
            }
            _ => self.opaque(s),
        }
    }

    fn reference(&mut self, r: &str, s: &Value) -> u32 {
        if let Some(&at) = self.refs.get(r) {
            return at;
        }
        let target = r
            .strip_prefix('#')
            .filter(|p| !p.contains('%'))
            .and_then(|p| self.root.pointer(p));
        let Some(target) = target else {
            return self.opaque(s);
        };
        // Reserved first, so a schema that refers to itself ends here.
        let at = self.push(Node::Never);
        self.refs.insert(r.to_string(), at);
        let inner = self.node(target);
        self.nodes[at as usize] = Node::Ref(inner);
        at
    }

    fn opaque(&mut self, s: &Value) -> u32 {
        self.opaque += 1;
        if self.opaque > MAX_OPAQUE {
            self.failed = true;
            return NEVER;
        }
        // The subschema with the document's `$defs`, so its refs resolve as before.
        let doc = match (s, self.root.get("$defs")) {
            (Value::Object(m), Some(defs)) if !std::ptr::eq(s, self.root) => {
                if m.contains_key("$defs") {
                    // Its own `$defs` would hide the document's: leave it all to the tape.
                    self.failed = true;
                    return NEVER;
                }
                let mut m = m.clone();
                m.insert("$defs".into(), defs.clone());
                Value::Object(m)
            }
            _ => s.clone(),
        };
        match (self.sub)(&doc) {
            Some(v) => self.push(Node::Opaque(Box::new(v))),
            None => {
                self.failed = true;
                NEVER
            }
        }
    }

    fn build(&mut self, m: &Map<String, Value>, s: &Value) -> Node {
        match self.checks(m) {
            Some(c) => Node::Check(Box::new(c)),
            None => match self.opaque(s) {
                NEVER => Node::Never,
                at => Node::Ref(at),
            },
        }
    }

    /// The checks of a schema object; `None` if it uses anything the one pass does not do.
    fn checks(&mut self, m: &Map<String, Value>) -> Option<Check> {
        let mut c = Check::any();
        for (k, v) in m {
            let k = k.as_str();
            match k {
                "type" => c.types = types(v)?,
                "enum" => c.choices = Some(choices(v.as_array()?)?),
                "const" => c.choices = Some(choices(std::slice::from_ref(v))?),
                "minLength" => c.min_len = v.as_u64()?,
                "maxLength" => c.max_len = v.as_u64()?,
                "minItems" => c.min_items = v.as_u64()?,
                "maxItems" => c.max_items = v.as_u64()?,
                "minProperties" => c.min_props = v.as_u64()?,
                "maxProperties" => c.max_props = v.as_u64()?,
                "minimum" => c.bounds.push((num(v)?, Bound::Min)),
                "maximum" => c.bounds.push((num(v)?, Bound::Max)),
                "exclusiveMinimum" => c.bounds.push((num(v)?, Bound::ExclusiveMin)),
                "exclusiveMaximum" => c.bounds.push((num(v)?, Bound::ExclusiveMax)),
                "pattern" | "format" => {
                    v.as_str()?;
                }
                "required" | "properties" | "additionalProperties" | "items" => {}
                k if inert(k) => {}
                _ => return None,
            }
        }
        // Structure once the object is known to be supported (children compile only then).
        let props = match m.get("properties") {
            Some(Value::Object(p)) if p.len() <= MAX_PROPS => p,
            Some(_) => return None,
            None => &Map::new(),
        };
        if let Some(r) = m.get("required") {
            for name in r.as_array()? {
                let at = props
                    .keys()
                    .position(|k| Some(k.as_str()) == name.as_str())?;
                c.required |= 1 << at;
            }
        }
        match m.get("items") {
            Some(v @ (Value::Object(_) | Value::Bool(_))) => c.items = self.node(v),
            Some(_) => return None,
            None => {}
        }
        match m.get("additionalProperties") {
            Some(v @ (Value::Object(_) | Value::Bool(_))) => c.additional = self.node(v),
            Some(_) => return None,
            None => {}
        }
        for (name, v) in props {
            let at = self.node(v);
            c.props.push(Prop {
                len: name.len(),
                word: head_word(name.as_bytes()),
                mask: if name.len() >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * name.len())) - 1
                },
                plain: !name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
                name: name.as_str().into(),
                node: at,
            });
        }
        let mut leaf = Map::new();
        for k in ["pattern", "format"] {
            if let Some(v) = m.get(k) {
                leaf.insert(k.into(), v.clone());
            }
        }
        if !leaf.is_empty() {
            match (self.sub)(&Value::Object(leaf)) {
                Some(v) => c.leaf = Some(v),
                None => {
                    self.failed = true;
                    return None;
                }
            }
        }
        Some(c)
    }

    /// A chain of `$ref`s that never reaches a schema would loop forever when read.
    fn has_ref_cycle(&self) -> bool {
        (0..self.nodes.len()).any(|start| {
            let mut at = start;
            for _ in 0..=self.nodes.len() {
                match self.nodes[at] {
                    Node::Ref(next) => at = next as usize,
                    _ => return false,
                }
            }
            true
        })
    }
}

fn inert(k: &str) -> bool {
    INERT.contains(&k) || k.starts_with("x-")
}

fn types(v: &Value) -> Option<u8> {
    let one = |t: &Value| {
        Some(match t.as_str()? {
            "null" => NULL,
            "boolean" => BOOL,
            "integer" => INT,
            "number" => NUM | INT,
            "string" => STR,
            "array" => ARR,
            "object" => OBJ,
            _ => return None,
        })
    };
    match v {
        Value::Array(list) => list.iter().try_fold(0, |acc, t| Some(acc | one(t)?)),
        t => one(t),
    }
}

fn choices(list: &[Value]) -> Option<Choices> {
    let mut c = Choices::default();
    for v in list {
        match v {
            Value::String(s) => c.strings.push(s.as_str().into()),
            Value::Null => c.null = true,
            Value::Bool(true) => c.yes = true,
            Value::Bool(false) => c.no = true,
            _ => return None,
        }
    }
    Some(c)
}

fn num(v: &Value) -> Option<Num> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        Some(Num::Int(i.into()))
    } else if let Some(u) = n.as_u64() {
        Some(Num::Int(u.into()))
    } else {
        n.as_f64().filter(|f| f.is_finite()).map(Num::Float)
    }
}

/// Exact comparison, or `None` when an integer too large for an `f64` meets a float of
/// similar size.
fn compare(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => float_cmp(y, x).map(Ordering::reverse),
        (Num::Float(x), Num::Int(y)) => float_cmp(x, y),
    }
}

fn float_cmp(x: f64, y: i128) -> Option<Ordering> {
    // Integers up to 2^53 are exact as f64; past that, only a float clearly smaller in
    // magnitude has a known order.
    const EXACT: i128 = 1 << 53;
    if y.abs() <= EXACT {
        // Through i64: the i128 conversion is a slow library call.
        x.partial_cmp(&(y as i64 as f64))
    } else if x.abs() < EXACT as f64 {
        Some(if y > 0 {
            Ordering::Less
        } else {
            Ordering::Greater
        })
    } else {
        None
    }
}

/// Not shown valid (invalid, or left to the full path).
struct No;
type R = Result<(), No>;

/// A name of an object member not declared by its schema, kept while the object is read to
/// find a repeated one: in the body, or (had escapes) decoded in the arena.
#[derive(Clone, Copy)]
enum Key {
    Body(u32, u32),
    Arena(u32, u32),
}

struct Reader<'p, 'b> {
    pass: &'p OnePass,
    src: &'b str,
    s: &'b [u8],
    i: usize,
    /// The last string read, decoded, when it had escapes.
    scratch: String,
    keys: Vec<Key>,
    arena: String,
}

impl<'p> Reader<'p, '_> {
    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn value(&mut self, mut at: u32, depth: usize) -> R {
        let pass: &'p OnePass = self.pass;
        loop {
            match &pass.nodes[at as usize] {
                Node::Ref(next) => at = *next,
                Node::Never => return Err(No),
                Node::Opaque(v) => {
                    let (doc, end) = tape::parse_at(self.src, self.i).map_err(|_| No)?;
                    if !v.is_valid(doc.root()) {
                        return Err(No);
                    }
                    self.i = end;
                    return Ok(());
                }
                Node::Check(c) => return self.checked(c, depth),
            }
        }
    }

    fn checked(&mut self, c: &'p Check, depth: usize) -> R {
        let allowed = |t: u8| if c.types & t != 0 { Ok(()) } else { Err(No) };
        match self.peek() {
            b'{' => {
                allowed(OBJ)?;
                if c.choices.is_some() {
                    return Err(No);
                }
                self.object(c, depth)
            }
            b'[' => {
                allowed(ARR)?;
                if c.choices.is_some() {
                    return Err(No);
                }
                self.array(c, depth)
            }
            // Scalars: read, then checked as parameters are (`scalar_ok`).
            b'"' => self.string_value(c),
            b't' => {
                self.literal(b"true")?;
                scalar_ok(c, Scalar::Bool(true))
            }
            b'f' => {
                self.literal(b"false")?;
                scalar_ok(c, Scalar::Bool(false))
            }
            b'n' => {
                self.literal(b"null")?;
                scalar_ok(c, Scalar::Null)
            }
            b'-' | b'0'..=b'9' => {
                let n = self.number()?;
                number_ok(c, n)
            }
            _ => Err(No),
        }
    }

    fn literal(&mut self, word: &[u8]) -> R {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(No)
        }
    }

    /// Digits from here, accumulated into `acc` (`None` once past 64 bits); how many.
    fn digits(&mut self, acc: &mut Option<u64>) -> usize {
        let from = self.i;
        while let Some(d) = self.s.get(self.i).map(|c| c.wrapping_sub(b'0')) {
            if d > 9 {
                break;
            }
            *acc = acc
                .and_then(|v| v.checked_mul(10))
                .and_then(|v| v.checked_add(u64::from(d)));
            self.i += 1;
        }
        self.i - from
    }

    /// A JSON number: an integer when written without fraction or exponent and within 64 bits
    /// (as `serde_json` reads it), otherwise a float.
    fn number(&mut self) -> Result<Num, No> {
        let start = self.i;
        let negative = self.peek() == b'-';
        if negative {
            self.i += 1;
        }
        // All the significant digits as one integer, and the power of ten to scale it by.
        let mut mantissa = Some(0u64);
        match self.peek() {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits(&mut mantissa);
            }
            _ => return Err(No),
        }
        let mut float = false;
        let mut scale: i64 = 0;
        if self.peek() == b'.' {
            self.i += 1;
            let n = self.digits(&mut mantissa);
            if n == 0 {
                return Err(No);
            }
            scale = -(n as i64);
            float = true;
        }
        if matches!(self.peek(), b'e' | b'E') {
            self.i += 1;
            let minus = self.peek() == b'-';
            if matches!(self.peek(), b'+' | b'-') {
                self.i += 1;
            }
            let mut exp = Some(0u64);
            if self.digits(&mut exp) == 0 {
                return Err(No);
            }
            let exp = exp.and_then(|e| i64::try_from(e).ok()).unwrap_or(i64::MAX);
            scale = if minus {
                scale.saturating_sub(exp)
            } else {
                scale.saturating_add(exp)
            };
            float = true;
        }
        if !float {
            // -0 is a float for serde_json; past 64 bits too. Both are left to the full path
            // (a float here would only be compared, and "-0" is rare enough).
            let v = mantissa.ok_or(No)?;
            return if negative {
                match i64::try_from(v) {
                    Ok(v) if v != 0 => Ok(Num::Int(-i128::from(v))),
                    // i64::MIN has no positive i64 counterpart.
                    _ if v == 1 << 63 => Ok(Num::Int(i128::from(i64::MIN))),
                    _ => Err(No),
                }
            } else {
                Ok(Num::Int(i128::from(v)))
            };
        }
        // Exact when the digits fit an f64's mantissa and the power of ten is exact too: one
        // correctly rounded operation, the same value the full parse gives.
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        let f = match mantissa {
            Some(m) if m < 1 << 53 && (-22..=22).contains(&scale) => {
                let m = m as f64;
                let p = POW10[scale.unsigned_abs() as usize];
                let v = if scale < 0 { m / p } else { m * p };
                if negative {
                    -v
                } else {
                    v
                }
            }
            _ => self.src[start..self.i].parse().map_err(|_| No)?,
        };
        if !f.is_finite() {
            return Err(No);
        }
        Ok(Num::Float(f))
    }

    /// Reads a string; returns its span in the body, or `None` when it had escapes and was
    /// decoded into `scratch`.
    #[inline(always)]
    fn string(&mut self) -> Result<Option<(usize, usize)>, No> {
        self.i += 1;
        let start = self.i;
        let stop = tape::plain_run(&self.s[start..]).ok_or(No)?;
        self.i += stop;
        match self.s[self.i] {
            b'"' => {
                self.i += 1;
                Ok(Some((start, start + stop)))
            }
            b'\\' => self.escaped(start),
            _ => Err(No),
        }
    }

    /// The rest of a string with escapes (at its first backslash), decoded into `scratch`.
    #[cold]
    fn escaped(&mut self, start: usize) -> Result<Option<(usize, usize)>, No> {
        self.scratch.clear();
        self.i = tape::unescape(self.src, start, self.i, &mut self.scratch).map_err(|_| No)?;
        Ok(None)
    }

    fn string_value(&mut self, c: &Check) -> R {
        let span = self.string()?;
        let src: &str = self.src;
        let text: &str = match span {
            Some((a, b)) => &src[a..b],
            None => &self.scratch,
        };
        scalar_ok(c, Scalar::Str(text))
    }

    fn array(&mut self, c: &Check, depth: usize) -> R {
        if depth >= DEPTH {
            return Err(No);
        }
        self.i += 1;
        self.ws();
        let mut n = 0u64;
        if self.peek() == b']' {
            self.i += 1;
        } else {
            loop {
                n += 1;
                if n > c.max_items {
                    return Err(No);
                }
                self.value(c.items, depth + 1)?;
                self.ws();
                if self.next_member(b']')? {
                    break;
                }
            }
        }
        if n < c.min_items {
            return Err(No);
        }
        Ok(())
    }

    fn object(&mut self, c: &Check, depth: usize) -> R {
        if depth >= DEPTH {
            return Err(No);
        }
        self.i += 1;
        self.ws();
        let (mark, arena_mark) = (self.keys.len(), self.arena.len());
        let mut seen = 0u64;
        let mut n = 0u64;
        if self.peek() == b'}' {
            self.i += 1;
        } else {
            loop {
                if self.peek() != b'"' {
                    return Err(No);
                }
                if let Some(p) = self.declared_name(c) {
                    let bit = 1u64 << p;
                    if seen & bit != 0 {
                        return Err(No);
                    }
                    seen |= bit;
                    self.member(c, c.props[p].node, &mut n, depth)?;
                    if self.next_member(b'}')? {
                        break;
                    }
                    continue;
                }
                let span = self.string()?;
                let src: &str = self.src;
                let name: &str = match span {
                    Some((a, b)) => &src[a..b],
                    None => &self.scratch,
                };
                let len = name.len();
                let word = match span {
                    // Eight bytes from the body (the name's, then its quote and what follows)
                    // masked to the name's length.
                    Some((a, _)) if a + 8 <= self.s.len() => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.s[a..a + 8]);
                        let w = u64::from_le_bytes(b);
                        if len >= 8 {
                            w
                        } else {
                            w & ((1u64 << (8 * len)) - 1)
                        }
                    }
                    _ => head_word(name.as_bytes()),
                };
                let declared = c.props.iter().position(|p| {
                    p.len == len
                        && p.word == word
                        && (len <= 8 || p.name.as_bytes()[8..] == name.as_bytes()[8..])
                });
                let target = match declared {
                    Some(p) => {
                        let bit = 1u64 << p;
                        if seen & bit != 0 {
                            return Err(No);
                        }
                        seen |= bit;
                        c.props[p].node
                    }
                    None => {
                        let key = match span {
                            Some((a, b)) => Key::Body(a as u32, b as u32),
                            None => {
                                let a = self.arena.len();
                                self.arena.push_str(&self.scratch);
                                Key::Arena(a as u32, self.arena.len() as u32)
                            }
                        };
                        self.keys.push(key);
                        c.additional
                    }
                };
                self.member(c, target, &mut n, depth)?;
                if self.next_member(b'}')? {
                    break;
                }
            }
        }
        if seen & c.required != c.required || n < c.min_props {
            return Err(No);
        }
        if self.keys.len() - mark > 1 && self.repeats(mark) {
            return Err(No);
        }
        self.keys.truncate(mark);
        self.arena.truncate(arena_mark);
        Ok(())
    }

    /// At the opening quote of a member name: the declared property whose plain name the body
    /// holds here, followed by the closing quote, with the reader moved past that quote. A plain
    /// name cannot end in an escaped quote (it has no backslash), so the body's string is exactly
    /// that name. `None` (reader unmoved): read the name as a string.
    #[inline(always)]
    fn declared_name(&mut self, c: &Check) -> Option<usize> {
        let a = self.i + 1;
        let head = self.s.get(a..a + 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        let w = u64::from_le_bytes(b);
        let s = self.s;
        let p = c.props.iter().position(|p| {
            p.plain
                && w & p.mask == p.word
                && s.get(a + p.len) == Some(&b'"')
                && (p.len <= 8 || s.get(a + 8..a + p.len) == Some(&p.name.as_bytes()[8..]))
        })?;
        self.i = a + c.props[p].len + 1;
        Some(p)
    }

    /// After a member name: counts the member, reads the colon and checks the value.
    #[inline(always)]
    fn member(&mut self, c: &Check, target: u32, n: &mut u64, depth: usize) -> R {
        *n += 1;
        if *n > c.max_props {
            return Err(No);
        }
        self.ws();
        if self.peek() != b':' {
            return Err(No);
        }
        self.i += 1;
        self.ws();
        self.value(target, depth + 1)?;
        self.ws();
        Ok(())
    }

    /// After a member or element: `true` at the closing `close`, `false` after a comma.
    #[inline(always)]
    fn next_member(&mut self, close: u8) -> Result<bool, No> {
        match self.peek() {
            b',' => {
                self.i += 1;
                self.ws();
                Ok(false)
            }
            x if x == close => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(No),
        }
    }

    fn key(&self, k: Key) -> &str {
        match k {
            Key::Body(a, b) => &self.src[a as usize..b as usize],
            Key::Arena(a, b) => &self.arena[a as usize..b as usize],
        }
    }

    /// Whether an undeclared member name of the current object repeats.
    fn repeats(&self, mark: usize) -> bool {
        let keys = &self.keys[mark..];
        if keys.len() <= 16 {
            return keys
                .iter()
                .enumerate()
                .any(|(x, &a)| keys[x + 1..].iter().any(|&b| self.key(a) == self.key(b)));
        }
        let mut names: Vec<&str> = keys.iter().map(|&k| self.key(k)).collect();
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    }
}

/// A number's checks, its type allowed by `c`.
#[inline(always)]
fn number_ok(c: &Check, n: Num) -> R {
    let t = if matches!(n, Num::Int(_)) { INT } else { NUM };
    if c.types & t == 0 || c.choices.is_some() {
        return Err(No);
    }
    for &(limit, bound) in &c.bounds {
        let ord = compare(n, limit).ok_or(No)?;
        let ok = match bound {
            Bound::Min => ord != Ordering::Less,
            Bound::Max => ord != Ordering::Greater,
            Bound::ExclusiveMin => ord == Ordering::Greater,
            Bound::ExclusiveMax => ord == Ordering::Less,
        };
        if !ok {
            return Err(No);
        }
    }
    Ok(())
}

/// A string's checks (lengths, choices, `pattern` and `format`), strings allowed by `c`.
#[inline(always)]
fn string_ok(c: &Check, text: &str) -> R {
    if c.min_len > 0 || c.max_len < u64::MAX {
        let n = if text.is_ascii() {
            text.len()
        } else {
            text.chars().count()
        } as u64;
        if n < c.min_len || n > c.max_len {
            return Err(No);
        }
    }
    if let Some(ch) = &c.choices {
        if !ch.strings.iter().any(|s| **s == *text) {
            return Err(No);
        }
    }
    if let Some(leaf) = &c.leaf {
        if !leaf.is_valid(TNode::Name(text)) {
            return Err(No);
        }
    }
    Ok(())
}

/// A scalar's checks: its type must be allowed by `c`, then the checks of that type.
#[inline(always)]
fn scalar_ok(c: &Check, v: Scalar<'_>) -> R {
    let allowed = |t: u8| if c.types & t != 0 { Ok(()) } else { Err(No) };
    match v {
        Scalar::Str(s) => {
            allowed(STR)?;
            string_ok(c, s)
        }
        Scalar::Int(i) => number_ok(c, Num::Int(i)),
        Scalar::Float(f) => number_ok(c, Num::Float(f)),
        Scalar::Bool(b) => {
            allowed(BOOL)?;
            choose(c, |ch| if b { ch.yes } else { ch.no })
        }
        Scalar::Null => {
            allowed(NULL)?;
            choose(c, |ch| ch.null)
        }
    }
}

fn choose(c: &Check, pick: impl Fn(&Choices) -> bool) -> R {
    match &c.choices {
        Some(ch) if !pick(ch) => Err(No),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(tree: &Value) -> Option<Validator<Tape>> {
        jsonschema::options_for::<Tape>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(tree)
            .ok()
    }

    fn pass(schema: Value) -> OnePass {
        OnePass::compile(&schema, &build).expect("compiles")
    }

    #[test]
    fn reads_and_checks_in_one_pass() {
        let p = pass(json!({
            "type": "object", "additionalProperties": false, "required": ["id", "qty"],
            "properties": {
                "id": {"type": "string", "pattern": "^c_[0-9]+$"},
                "qty": {"type": "integer", "minimum": 1, "maximum": 10},
                "price": {"type": "number", "exclusiveMinimum": 0},
                "kind": {"enum": ["a", "b", null]},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 3}},
                "mail": {"type": "string", "format": "email"},
                "meta": {"type": "object", "additionalProperties": {"type": "boolean"}}
            }
        }));
        let ok = |b: &str| p.is_valid(b.as_bytes());
        assert!(ok(r#"{"id":"c_1","qty":3}"#));
        assert!(ok(
            r#" { "id" : "c_1" , "qty" : 10, "price": 0.5, "kind": null,
            "tags": ["x", "yz"], "mail": "a@b.example", "meta": {"a": true, "b": false} } "#
        ));
        assert!(ok(r#"{"\u0069d":"c_\u0031","qty":1}"#));
        for bad in [
            r#"{"id":"c_1"}"#,
            r#"{"id":"x","qty":3}"#,
            r#"{"id":"c_1","qty":0}"#,
            r#"{"id":"c_1","qty":11}"#,
            r#"{"id":"c_1","qty":2.0}"#,
            r#"{"id":"c_1","qty":3,"price":0}"#,
            r#"{"id":"c_1","qty":3,"kind":"c"}"#,
            r#"{"id":"c_1","qty":3,"kind":1}"#,
            r#"{"id":"c_1","qty":3,"tags":["a","b","c"]}"#,
            r#"{"id":"c_1","qty":3,"tags":["abcd"]}"#,
            r#"{"id":"c_1","qty":3,"mail":"nope"}"#,
            r#"{"id":"c_1","qty":3,"extra":1}"#,
            r#"{"id":"c_1","qty":3,"id":"c_2"}"#,
            r#"{"id":"c_1","qty":3,"\u0069d":"c_2"}"#,
            r#"{"id":"c_1","qty":3,"meta":{"a":true,"a":false}}"#,
            r#"{"id":"c_1","qty":3,"meta":{"a":true,"\u0061":false}}"#,
            r#"{"id":"c_1","qty":3} x"#,
            r#"{"id":"c_1","qty":3"#,
            r#"{"id":"c_1","qty":-0}"#,
            "{\"id\":\"c_1\",\"qty\":3,\"kind\":\"a\u{1}\"}",
            r#"{"id":"c_\ud800","qty":3}"#,
        ] {
            assert!(!ok(bad), "accepted {bad}");
        }
    }

    #[test]
    fn names_matched_in_the_body_end_at_their_quote() {
        let p = pass(json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "id": {"type": "integer"},
                "idx": {"type": "string"},
                "": {"type": "boolean"},
                "say \"hi\"": {"type": "null"}
            }
        }));
        assert!(p.is_valid(br#"{"id":1,"idx":"a","":true}"#));
        assert!(p.is_valid(br#"{"idx":"a","id":1}"#));
        assert!(p.is_valid(br#"{"say \"hi\"":null,"id":1}"#));
        assert!(p.is_valid(br#"{"i\u0064x":"a","\u0069d":2}"#));
        assert!(!p.is_valid(br#"{"idx":1}"#));
        assert!(!p.is_valid(br#"{"id":"a"}"#));
        assert!(!p.is_valid(br#"{"":1}"#));
        assert!(!p.is_valid(br#"{"say \"hi\"":1}"#));
        assert!(!p.is_valid(br#"{"id":1,"i\u0064":2}"#));
        assert!(!p.is_valid(br#"{"idy":"a","id":1}"#));
        assert!(!p.is_valid(br#"{"i":1,"id":1}"#));
        // Near the end of the body (fewer than eight bytes after the quote).
        assert!(p.is_valid(br#"{"id":1}"#));
        assert!(!p.is_valid(br#"{"id":1,"id":2}"#));
    }

    #[test]
    fn long_names_are_told_apart_past_their_first_eight_bytes() {
        let p = pass(json!({
            "type": "object", "additionalProperties": false, "required": ["customer_name"],
            "properties": {
                "customer_name": {"type": "string"},
                "customer_note": {"type": "integer"},
                "customer": {"type": "boolean"}
            }
        }));
        assert!(p.is_valid(br#"{"customer_name":"a","customer_note":1,"customer":true}"#));
        assert!(p.is_valid(br#"{"customer":true,"customer_name":"a"}"#));
        assert!(p.is_valid(br#"{"customer_n\u0061me":"a"}"#));
        assert!(!p.is_valid(br#"{"customer_name":"a","customer_note":"x"}"#));
        assert!(!p.is_valid(br#"{"customer_nota":1,"customer_name":"a"}"#));
        assert!(!p.is_valid(br#"{"customer_name":"a","customer_name":"b"}"#));
        assert!(!p.is_valid(br#"{"customer_name":"a","customerX":1}"#));
        assert!(!p.is_valid(br#"{"customer_name":"a","custome":1}"#));
        assert!(!p.is_valid(br#"{"customer_note":1}"#));
    }

    #[test]
    fn unsupported_keywords_are_checked_by_the_validator() {
        let p = pass(json!({
            "type": "object",
            "properties": {
                "pay": {"oneOf": [
                    {"type": "object", "required": ["card"]},
                    {"type": "object", "required": ["iban"]}
                ]},
                "n": {"type": "number", "multipleOf": 0.5},
                "u": {"type": "array", "uniqueItems": true}
            }
        }));
        assert!(p.is_valid(br#"{"pay":{"card":"1"},"n":1.5,"u":[1,2]}"#));
        assert!(!p.is_valid(br#"{"pay":{"card":"1","iban":"2"}}"#));
        assert!(!p.is_valid(br#"{"n":1.2}"#));
        assert!(!p.is_valid(br#"{"u":[1,1]}"#));
        assert!(!p.is_valid(br#"{"u":[1,{"a":1,"a":2}]}"#));
    }

    #[test]
    fn references_and_recursion() {
        let p = pass(json!({
            "$ref": "#/$defs/node",
            "$defs": {
                "node": {"type": "object", "additionalProperties": false,
                         "properties": {"v": {"type": "integer"},
                                        "next": {"$ref": "#/$defs/node"},
                                        "alias": {"$ref": "#/$defs/alias"}}},
                "alias": {"$ref": "#/$defs/node"}
            }
        }));
        assert!(p.is_valid(br#"{"v":1,"next":{"v":2,"next":{"alias":{"v":3}}}}"#));
        assert!(!p.is_valid(br#"{"v":1,"next":{"v":"x"}}"#));
        assert!(!p.is_valid(br#"{"v":1,"next":{"w":2}}"#));
    }

    /// The number reader against `serde_json` on generated literals: integers, decimals and
    /// exponents around the exact-conversion limits.
    #[test]
    fn numbers_read_as_serde_reads_them() {
        let p = pass(json!(true));
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..50_000 {
            let mut lit = String::new();
            if next(2) == 0 {
                lit.push('-');
            }
            let int_digits = 1 + next(20);
            lit.push(char::from(b'1' + next(9) as u8));
            for _ in 1..int_digits {
                lit.push(char::from(b'0' + next(10) as u8));
            }
            if next(2) == 0 {
                lit.push('.');
                for _ in 0..1 + next(20) {
                    lit.push(char::from(b'0' + next(10) as u8));
                }
            }
            if next(3) == 0 {
                lit.push(['e', 'E'][next(2) as usize]);
                lit.push_str(["", "+", "-"][next(3) as usize]);
                lit.push_str(&next(30).to_string());
            }
            let mut r = Reader {
                pass: &p,
                src: &lit,
                s: lit.as_bytes(),
                i: 0,
                scratch: String::new(),
                keys: Vec::new(),
                arena: String::new(),
            };
            let ours = r.number();
            let serde: serde_json::Number = serde_json::from_str(&lit).expect("a JSON number");
            match ours {
                Ok(Num::Int(v)) => {
                    assert!(serde.is_i64() || serde.is_u64(), "{lit}");
                    assert_eq!(v, serde.as_i128().expect("integer"), "{lit}");
                }
                Ok(Num::Float(f)) => {
                    assert!(serde.is_f64(), "{lit}");
                    assert_eq!(
                        f.to_bits(),
                        serde.as_f64().expect("float").to_bits(),
                        "{lit}"
                    );
                }
                // Left to the full path: only integers past 64 bits, and -0.
                Err(No) => assert!(!lit.contains(['.', 'e', 'E']), "{lit}"),
            }
            assert_eq!(r.i, lit.len(), "{lit}");
        }
    }

    #[test]
    fn numbers_compare_exactly_or_not_at_all() {
        let p = pass(json!({"type": "number", "minimum": 0.5, "maximum": 9007199254740993u64}));
        assert!(p.is_valid(b"1"));
        assert!(p.is_valid(b"0.5"));
        assert!(!p.is_valid(b"0.4"));
        assert!(p.is_valid(b"9007199254740993"));
        assert!(!p.is_valid(b"9007199254740994"));
        assert!(p.is_valid(b"100.5"));
        // A float near an integer bound past 2^53 is left to the full path.
        assert!(!p.is_valid(b"9007199254740992.0"));
        let big = pass(json!({"type": "integer"}));
        assert!(big.is_valid(b"-9223372036854775808"));
        assert!(big.is_valid(b"18446744073709551615"));
        assert!(!big.is_valid(b"18446744073709551616"));
        assert!(!big.is_valid(b"1e2"));
    }
}
