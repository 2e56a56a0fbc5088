//! A spec compiled for the request path: the router, every operation with its parameters,
//! bodies and responses, and every schema compiled once.

use crate::body::{FormShape, Kind};
use crate::params::{In, Param, Prim, Shape, Style};
use crate::router::{param_names, Router};
use crate::schema::{self, Compiled, Direction};
use crate::spec::{esc, Docs, SpecError, Version};
use http::{HeaderValue, Method};
use rampart_core::TypedInputs;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One declared media type of a body.
pub struct Media {
    pub kind: Kind,
    pub schema: Option<Compiled>,
    pub form: FormShape,
}

pub struct RequestBody {
    pub required: bool,
    /// (media range, media), in the spec's order.
    pub media: Vec<(String, Media)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKey {
    Exact(u16),
    /// `2XX`: the hundreds digit.
    Range(u16),
    Default,
}

pub struct Response {
    pub media: Vec<(String, Media)>,
}

pub struct Operation {
    /// `operationId`, or `METHOD /template` when the spec gives none.
    pub id: Arc<str>,
    pub method: Method,
    pub template: String,
    pub deprecated: bool,
    pub params: Vec<Param>,
    pub body: Option<RequestBody>,
    pub responses: Vec<(StatusKey, Response)>,
    /// Inputs validated against strict types, for content-inspecting guards.
    pub typed: Option<Arc<TypedInputs>>,
    /// Where the operation is in the spec.
    pub pointer: String,
}

impl Operation {
    /// The declared response for a status (exact code, then `NXX`, then `default`), with its
    /// index in `responses`.
    pub fn response(&self, status: u16) -> Option<(usize, &Response)> {
        let find = |key: StatusKey| self.responses.iter().position(|(k, _)| *k == key);
        let i = find(StatusKey::Exact(status))
            .or_else(|| find(StatusKey::Range(status / 100)))
            .or_else(|| find(StatusKey::Default))?;
        Some((i, &self.responses[i].1))
    }
}

pub struct PathItem {
    pub template: String,
    /// (method, index into `Api::ops`).
    pub methods: Vec<(Method, usize)>,
    /// The `Allow` header for a 405.
    pub allow: HeaderValue,
}

/// A compiled spec.
pub struct Api {
    pub file: PathBuf,
    pub version: Version,
    pub router: Router,
    pub paths: Vec<PathItem>,
    pub ops: Vec<Operation>,
    /// Base paths from `servers` (without a trailing `/`; empty = the root).
    pub base_paths: Vec<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("file", &self.file)
            .field("operations", &self.ops.len())
            .finish()
    }
}

/// The path part of a server URL, variables replaced by their defaults.
fn server_base(server: &Value) -> Option<String> {
    let mut url = server.get("url")?.as_str()?.to_string();
    if let Some(Value::Object(vars)) = server.get("variables") {
        for (k, v) in vars {
            if let Some(d) = v.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{k}}}"), d);
            }
        }
    }
    let path = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("")
        }
        None if url.starts_with('/') => url.as_str(),
        None => "",
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    Some(path.trim_end_matches('/').to_string())
}

struct Ctx<'d> {
    docs: &'d Docs,
    file: PathBuf,
    errors: Vec<SpecError>,
}

impl Ctx<'_> {
    fn err(&mut self, pointer: &str, msg: impl Into<String>) {
        self.errors.push(SpecError::new(&self.file, pointer, msg));
    }
}

/// Compile a loaded spec. `base_path` replaces the servers' base paths when given.
pub fn compile(docs: &Docs, base_path: Option<&str>) -> Result<Api, Vec<SpecError>> {
    let root = docs.root_value();
    let mut cx = Ctx {
        docs,
        file: docs.root.clone(),
        errors: Vec::new(),
    };
    let base_paths = match base_path {
        Some(b) => vec![b.trim_end_matches('/').to_string()],
        None => {
            let mut v: Vec<String> = root
                .get("servers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(server_base).collect())
                .unwrap_or_default();
            v.sort();
            v.dedup();
            v
        }
    };
    let mut paths = Vec::new();
    let mut ops = Vec::new();
    let empty = serde_json::Map::new();
    let path_map = match root.get("paths") {
        Some(Value::Object(m)) => m,
        None => &empty,
        Some(_) => {
            cx.err("/paths", "`paths` must be a map");
            &empty
        }
    };
    if path_map.is_empty() && root.get("webhooks").is_none() {
        cx.err("/paths", "the spec declares no paths");
    }
    for (template, item) in path_map {
        if template.starts_with("x-") {
            continue;
        }
        let ptr = format!("/paths/{}", esc(template));
        let (ifile, iptr, item) = match docs.deref(&cx.file, &ptr, item) {
            Ok(x) => x,
            Err(e) => {
                cx.errors.push(e);
                continue;
            }
        };
        let shared_params = item.get("parameters");
        let mut methods = Vec::new();
        for m in METHODS {
            let Some(op) = item.get(*m) else { continue };
            let optr = format!("{iptr}/{m}");
            let method =
                Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
            let saved = std::mem::replace(&mut cx.file, ifile.clone());
            let compiled = compile_op(
                &mut cx,
                template,
                method.clone(),
                &optr,
                op,
                shared_params,
                &iptr,
            );
            cx.file = saved;
            if let Some(o) = compiled {
                methods.push((method, ops.len()));
                ops.push(o);
            }
        }
        let allow = methods
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        paths.push(PathItem {
            template: template.clone(),
            methods,
            allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("")),
        });
    }
    // operationId must be unique.
    let mut seen = std::collections::HashMap::new();
    for o in &ops {
        if let Some(prev) = seen.insert(o.id.clone(), o.pointer.clone()) {
            cx.err(
                &o.pointer,
                format!("operationId `{}` is also used at #{prev}", o.id),
            );
        }
    }
    let router = match Router::build(
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.template.as_str(), i)),
    ) {
        Ok(r) => r,
        Err(es) => {
            for (t, m) in es {
                cx.err(&format!("/paths/{}", esc(&t)), m);
            }
            Router::default()
        }
    };
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    Ok(Api {
        file: docs.root.clone(),
        version: docs.version,
        router,
        paths,
        ops,
        base_paths,
    })
}

#[allow(clippy::too_many_arguments)]
fn compile_op(
    cx: &mut Ctx<'_>,
    template: &str,
    method: Method,
    optr: &str,
    op: &Value,
    shared: Option<&Value>,
    iptr: &str,
) -> Option<Operation> {
    let before = cx.errors.len();
    let id: Arc<str> = match op.get("operationId").and_then(Value::as_str) {
        Some(id) => Arc::from(id),
        None => Arc::from(format!("{} {template}", method.as_str())),
    };
    // Parameters: the path item's, overridden by the operation's of the same name and place.
    let mut raw: Vec<(String, &Value)> = Vec::new();
    for (list, base) in [
        (shared, format!("{iptr}/parameters")),
        (op.get("parameters"), format!("{optr}/parameters")),
    ] {
        let Some(list) = list else { continue };
        let Some(list) = list.as_array() else {
            cx.err(&base, "`parameters` must be a list");
            continue;
        };
        for (i, p) in list.iter().enumerate() {
            raw.push((format!("{base}/{i}"), p));
        }
    }
    let mut params: Vec<Param> = Vec::new();
    for (pptr, p) in raw {
        let file = cx.file.clone();
        let (pfile, pptr, p) = match cx.docs.deref(&file, &pptr, p) {
            Ok(x) => x,
            Err(e) => {
                cx.errors.push(e);
                continue;
            }
        };
        if let Some(param) = compile_param(cx, &pfile, &pptr, p) {
            if let Some(i) = params
                .iter()
                .position(|q| q.name == param.name && q.loc == param.loc)
            {
                params[i] = param;
            } else {
                params.push(param);
            }
        }
    }
    let declared_path: Vec<&str> = params
        .iter()
        .filter(|p| p.loc == In::Path)
        .map(|p| p.name.as_str())
        .collect();
    let names = param_names(template);
    for d in &declared_path {
        if !names.iter().any(|n| n == d) {
            cx.err(
                optr,
                format!("path parameter `{d}` is not in the path template `{template}`"),
            );
        }
    }
    let body = match op.get("requestBody") {
        None => None,
        Some(b) => {
            let file = cx.file.clone();
            match cx.docs.deref(&file, &format!("{optr}/requestBody"), b) {
                Ok((bfile, bptr, b)) => Some(RequestBody {
                    required: b.get("required").and_then(Value::as_bool).unwrap_or(false),
                    media: compile_content(cx, &bfile, &bptr, b, Direction::Request),
                }),
                Err(e) => {
                    cx.errors.push(e);
                    None
                }
            }
        }
    };
    let mut responses = Vec::new();
    match op.get("responses") {
        Some(Value::Object(rs)) => {
            for (code, r) in rs {
                if code.starts_with("x-") {
                    continue;
                }
                let rptr = format!("{optr}/responses/{}", esc(code));
                let key = if code == "default" {
                    StatusKey::Default
                } else if code.len() == 3 && code.ends_with("XX") {
                    match code[..1].parse::<u16>() {
                        Ok(d @ 1..=5) => StatusKey::Range(d),
                        _ => {
                            cx.err(&rptr, format!("`{code}` is not a status code or range"));
                            continue;
                        }
                    }
                } else {
                    match code.parse::<u16>() {
                        Ok(c @ 100..=599) => StatusKey::Exact(c),
                        _ => {
                            cx.err(&rptr, format!("`{code}` is not a status code or range"));
                            continue;
                        }
                    }
                };
                let file = cx.file.clone();
                match cx.docs.deref(&file, &rptr, r) {
                    Ok((rfile, rptr, r)) => {
                        let media = compile_content(cx, &rfile, &rptr, r, Direction::Response);
                        responses.push((key, Response { media }));
                    }
                    Err(e) => cx.errors.push(e),
                }
            }
        }
        None => {}
        Some(_) => cx.err(&format!("{optr}/responses"), "`responses` must be a map"),
    }
    if cx.errors.len() > before {
        return None;
    }
    let typed = typed_inputs(&params, body.as_ref());
    Some(Operation {
        id,
        method,
        template: template.to_string(),
        deprecated: op
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        params,
        body,
        responses,
        typed,
        pointer: optr.to_string(),
    })
}

fn shape_of(c: &Compiled) -> Shape {
    let root = &*c.tree;
    let s = resolve_root(root, root);
    let prim_of = |x: &Value| Prim::of(resolve_root(root, x));
    match s.get("type").and_then(Value::as_str) {
        Some("array") => Shape::Array(s.get("items").map(prim_of).unwrap_or(Prim {
            string: true,
            ..Prim::default()
        })),
        Some("object") => Shape::Object(
            s.get("properties")
                .and_then(Value::as_object)
                .map(|props| props.iter().map(|(k, v)| (k.clone(), prim_of(v))).collect())
                .unwrap_or_default(),
        ),
        _ => Shape::Scalar(Prim::of(s)),
    }
}

fn resolve_root<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    let mut s = s;
    for _ in 0..16 {
        match s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| root.pointer(p))
        {
            Some(t) => s = t,
            None => break,
        }
    }
    s
}

fn compile_param(cx: &mut Ctx<'_>, file: &Path, ptr: &str, p: &Value) -> Option<Param> {
    let err = |cx: &mut Ctx<'_>, m: String| {
        cx.errors.push(SpecError::new(file, ptr, m));
        None
    };
    let Some(name) = p.get("name").and_then(Value::as_str) else {
        return err(cx, "a parameter needs a `name`".into());
    };
    let loc = match p.get("in").and_then(Value::as_str) {
        Some("path") => In::Path,
        Some("query") => In::Query,
        Some("header") => In::Header,
        Some("cookie") => In::Cookie,
        other => {
            return err(
                cx,
                format!(
                    "parameter `{name}`: `in` must be path, query, header or cookie, not {}",
                    other.unwrap_or("missing")
                ),
            )
        }
    };
    let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
    if loc == In::Path && !required {
        return err(
            cx,
            format!("path parameter `{name}` must be `required: true`"),
        );
    }
    let style = match p.get("style").and_then(Value::as_str) {
        None => match loc {
            In::Path | In::Header => Style::Simple,
            In::Query | In::Cookie => Style::Form,
        },
        Some(s) => match Style::parse(s) {
            Some(st) if st.allowed_in(loc) => st,
            _ => {
                return err(
                    cx,
                    format!(
                        "parameter `{name}`: style `{s}` is not allowed in {}",
                        loc.as_str()
                    ),
                )
            }
        },
    };
    let explode = p
        .get("explode")
        .and_then(Value::as_bool)
        .unwrap_or(style == Style::Form);
    let (schema, json) = if let Some(s) = p.get("schema") {
        match schema::load(
            cx.docs,
            Direction::Request,
            file,
            &format!("{ptr}/schema"),
            s,
        ) {
            Ok(c) => (Some(c), false),
            Err(e) => {
                cx.errors.push(e);
                return None;
            }
        }
    } else if let Some(Value::Object(content)) = p.get("content") {
        let Some((mt, m)) = content.iter().next() else {
            return err(cx, format!("parameter `{name}`: empty `content`"));
        };
        let sch = match m.get("schema") {
            Some(s) => match schema::load(
                cx.docs,
                Direction::Request,
                file,
                &format!("{ptr}/content/{}/schema", esc(mt)),
                s,
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    cx.errors.push(e);
                    return None;
                }
            },
            None => None,
        };
        (sch, Kind::of(mt) == Kind::Json)
    } else {
        (None, false)
    };
    let shape = if json {
        Shape::Json
    } else {
        match &schema {
            Some(c) => shape_of(c),
            None => Shape::Scalar(Prim {
                string: true,
                ..Prim::default()
            }),
        }
    };
    let strict = schema
        .as_ref()
        .is_some_and(|c| !json && schema::is_strict(&c.tree, &c.tree));
    Some(Param {
        name: name.to_string(),
        lname: name.to_ascii_lowercase(),
        loc,
        style,
        explode,
        required,
        allow_empty: p
            .get("allowEmptyValue")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        shape,
        schema,
        strict,
    })
}

fn form_shape(c: &Compiled) -> FormShape {
    let root = &*c.tree;
    let s = resolve_root(root, root);
    let props = s
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| {
                    let v = resolve_root(root, v);
                    if v.get("type").and_then(Value::as_str) == Some("array") {
                        let it = v
                            .get("items")
                            .map(|i| Prim::of(resolve_root(root, i)))
                            .unwrap_or_default();
                        (k.clone(), it, true)
                    } else {
                        (k.clone(), Prim::of(v), false)
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    FormShape { props }
}

fn compile_content(
    cx: &mut Ctx<'_>,
    file: &Path,
    ptr: &str,
    v: &Value,
    dir: Direction,
) -> Vec<(String, Media)> {
    let mut out = Vec::new();
    let Some(content) = v.get("content") else {
        return out;
    };
    let Some(content) = content.as_object() else {
        cx.errors.push(SpecError::new(
            file,
            &format!("{ptr}/content"),
            "`content` must be a map",
        ));
        return out;
    };
    for (mt, m) in content {
        let mptr = format!("{ptr}/content/{}", esc(mt));
        let kind = Kind::of(mt);
        let schema = match m.get("schema") {
            Some(s) => match schema::load(cx.docs, dir, file, &format!("{mptr}/schema"), s) {
                Ok(c) => Some(c),
                Err(e) => {
                    cx.errors.push(e);
                    continue;
                }
            },
            None => None,
        };
        let form = schema.as_ref().map(form_shape).unwrap_or_default();
        out.push((
            crate::body::essence(mt).into_owned(),
            Media { kind, schema, form },
        ));
    }
    out
}

/// Strict inputs of an operation (see [`TypedInputs`]).
fn typed_inputs(params: &[Param], body: Option<&RequestBody>) -> Option<Arc<TypedInputs>> {
    let mut t = TypedInputs::default();
    for p in params.iter().filter(|p| p.strict) {
        let list = match p.loc {
            In::Path => &mut t.path,
            In::Query => &mut t.query,
            In::Header => &mut t.headers,
            In::Cookie => &mut t.cookies,
        };
        list.push(if p.loc == In::Header {
            p.lname.clone()
        } else {
            p.name.clone()
        });
    }
    if let Some(b) = body {
        // Only when every declared JSON media type agrees: take the first JSON one.
        if let Some((_, m)) = b.media.iter().find(|(_, m)| m.kind == Kind::Json) {
            if let Some(c) = &m.schema {
                strict_pointers(&c.tree, &c.tree, "", &mut t.body, 0);
            }
        }
    }
    let any = !(t.query.is_empty()
        && t.path.is_empty()
        && t.headers.is_empty()
        && t.cookies.is_empty()
        && t.body.is_empty());
    any.then(|| Arc::new(t))
}

fn strict_pointers(root: &Value, s: &Value, at: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    let s = resolve_root(root, s);
    if schema::is_strict(root, s) {
        if !at.is_empty() {
            out.push(at.to_string());
        }
        return;
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        for (k, v) in props {
            strict_pointers(root, v, &format!("{at}/{}", esc(k)), out, depth + 1);
        }
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        strict_pointers(root, items, &format!("{at}/*"), out, depth + 1);
    }
}
