//! The `openapi` guard: the positive security model on the request path.
//!
//! Request headers: match the operation (404/405 for what the spec does not declare), report or
//! refuse deprecated operations, validate path, query, header and cookie parameters, check the
//! body's presence and content type (415). Request body: parse JSON, form or multipart, refuse
//! or strip `readOnly` properties, validate against the schema. Response: status and content
//! type declared, JSON body valid; `strip` removes undeclared and `writeOnly` properties.

use crate::api::{Api, Operation};
use crate::body::{self, Kind};
use crate::params::In;
use crate::schema::{self, Failure};
use crate::tape;
use bytes::Bytes;
use http::{header, Method, StatusCode};
use rampart_config::{DeprecatedPolicy, Mode, ReadOnlyPolicy, ResponsePolicy, UnknownQuery};
use rampart_core::guard::{Block, RequestHead};
use rampart_core::{Guard, RequestContext, Step, TypedInputs, Verdict};
use rampart_telemetry::{Action, SecurityEvent};
use serde_json::{json, Value};
use std::sync::Arc;

const NAME: &str = "openapi";
/// Most failures reported to the client at once.
const MAX_FAILURES: usize = 10;

/// Per-route settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub unknown: Mode,
    pub deprecated: DeprecatedPolicy,
    pub read_only: ReadOnlyPolicy,
    pub unknown_query: UnknownQuery,
    pub responses: ResponsePolicy,
    pub max_body: usize,
    pub max_response: usize,
    /// The route's prefix, removed before matching when the route strips it.
    pub strip_prefix: Option<String>,
}

pub struct OpenApiGuard {
    api: Arc<Api>,
    s: Settings,
}

/// What the request phase learned, for the later phases.
#[derive(Clone, Copy)]
struct Matched {
    op: usize,
    /// Index of the request body's media type in the operation's `body.media`.
    media: Option<usize>,
    /// Parameters passed validation.
    params_ok: bool,
    /// Index of the response media type to validate, set in the response-header phase.
    resp_media: Option<(usize, usize)>,
}

/// A request whose parameters and body passed: list its strictly typed inputs for content
/// inspectors (the WAF skips them).
fn record_typed(ctx: &mut RequestContext, m: &Matched, op: &Operation) {
    if m.params_ok {
        if let Some(t) = &op.typed {
            ctx.typed_inputs = Some(t.clone());
        }
    }
}

fn problem_errors(failures: &[Failure]) -> Value {
    Value::Array(failures.iter().map(Failure::to_json).collect())
}

fn invalid(rule: &str, status: StatusCode, message: String, failures: &[Failure]) -> Verdict {
    let errs = problem_errors(failures);
    Verdict::Block(
        Block::new(status, rule, message)
            .detail(json!({ "errors": errs }))
            .public("errors", errs),
    )
}

impl OpenApiGuard {
    pub fn new(api: Arc<Api>, s: Settings) -> Self {
        OpenApiGuard { api, s }
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// The path the spec's templates are matched against, or `None` when it is outside every
    /// base path.
    fn spec_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        let mut p = path;
        if let Some(prefix) = &self.s.strip_prefix {
            p = p.strip_prefix(prefix.as_str()).unwrap_or(p);
            if p.is_empty() {
                p = "/";
            }
        }
        if self.api.base_paths.is_empty() {
            return Some(p);
        }
        for b in &self.api.base_paths {
            if b.is_empty() {
                return Some(p);
            }
            if let Some(rest) = p.strip_prefix(b.as_str()) {
                if rest.is_empty() {
                    return Some("/");
                }
                if rest.starts_with('/') {
                    return Some(rest);
                }
            }
        }
        None
    }

    fn unknown(&self, ctx: &mut RequestContext, block: Block) -> Verdict {
        if self.s.unknown == Mode::Monitor {
            ctx.event(SecurityEvent {
                guard: NAME,
                rule: block.rule,
                message: block.message,
                action: Action::Monitored,
                status: Some(block.status.as_u16()),
                detail: block.detail,
            });
            Verdict::Continue
        } else {
            Verdict::Block(block)
        }
    }

    fn check_params(
        &self,
        op: &Operation,
        req: &RequestHead,
        caps: &[(&str, &str)],
        failures: &mut Vec<Failure>,
    ) {
        let mut pairs: Vec<crate::params::QueryPair> = Vec::new();
        let needs_query = self.s.unknown_query == UnknownQuery::Reject
            || op.params.iter().any(|p| p.loc == In::Query);
        if needs_query {
            if let Some(q) = req.uri.query() {
                pairs = crate::params::query_pairs(q);
            }
        }
        let mut used = vec![false; pairs.len()];
        for p in &op.params {
            if failures.len() >= MAX_FAILURES {
                return;
            }
            let value = match p.loc {
                In::Path => match caps.iter().find(|(n, _)| *n == p.name) {
                    Some((_, raw)) if p.fast_valid(raw) => continue,
                    Some((_, raw)) => p.parse_single(raw).map(Some),
                    None => Ok(None),
                },
                In::Query if p.query_fast_valid(&pairs, &mut used) => continue,
                In::Query => p.from_query(&pairs, &mut used),
                In::Header => {
                    if matches!(
                        p.lname.as_str(),
                        "accept" | "content-type" | "authorization"
                    ) {
                        continue;
                    }
                    let mut vals = req.headers.get_all(p.lname.as_str()).iter().peekable();
                    if vals.peek().is_none() {
                        Ok(None)
                    } else {
                        let mut joined = String::new();
                        let mut ok = true;
                        for v in vals {
                            match v.to_str() {
                                Ok(s) => {
                                    if !joined.is_empty() {
                                        joined.push(',');
                                    }
                                    joined.push_str(s.trim());
                                }
                                Err(_) => ok = false,
                            }
                        }
                        if ok {
                            p.parse_single(&joined).map(Some)
                        } else {
                            Err("is not valid text".to_string())
                        }
                    }
                }
                In::Cookie => {
                    let mut found: Option<String> = None;
                    let mut repeated = false;
                    for h in req.headers.get_all(header::COOKIE) {
                        if let Ok(h) = h.to_str() {
                            for (k, v) in crate::params::cookies(h) {
                                if k == p.name {
                                    repeated |= found.is_some();
                                    found = Some(v.to_string());
                                }
                            }
                        }
                    }
                    match found {
                        _ if repeated => Err("is repeated".to_string()),
                        Some(v) => {
                            let v = percent_encoding::percent_decode_str(&v)
                                .decode_utf8_lossy()
                                .into_owned();
                            p.parse_single(&v).map(Some)
                        }
                        None => Ok(None),
                    }
                }
            };
            match value {
                Ok(Some(v)) => p.check(&v, failures),
                Ok(None) if p.required => failures.push(p.missing()),
                Ok(None) => {}
                Err(why) => failures.push(p.malformed(why)),
            }
        }
        if self.s.unknown_query == UnknownQuery::Reject && used.iter().any(|u| !u) {
            failures.push(Failure {
                location: "query",
                name: String::new(),
                pointer: String::new(),
                reason: "has a parameter the operation does not declare".into(),
            });
        }
    }

    fn response_violation(
        &self,
        ctx: &mut RequestContext,
        rule: &str,
        message: String,
        detail: Value,
    ) -> Verdict {
        if self.s.responses == ResponsePolicy::Block {
            return Verdict::Block(
                Block::new(StatusCode::BAD_GATEWAY, rule, message).detail(detail),
            );
        }
        ctx.event(SecurityEvent {
            guard: NAME,
            rule: rule.to_string(),
            message,
            action: Action::Monitored,
            status: None,
            detail,
        });
        Verdict::Continue
    }
}

fn has_body(req: &RequestHead) -> bool {
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    req.headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

impl OpenApiGuard {
    fn request_head(&self, req: &RequestHead, ctx: &mut RequestContext, path: &str) -> Verdict {
        let Some(path) = self.spec_path(path) else {
            return self.unknown(
                ctx,
                Block::new(
                    StatusCode::NOT_FOUND,
                    "unknown_path",
                    "path is outside the spec's base paths",
                ),
            );
        };
        let Some((pi, caps)) = self.api.router.find(path) else {
            return self.unknown(
                ctx,
                Block::new(
                    StatusCode::NOT_FOUND,
                    "unknown_path",
                    "no operation in the spec matches this path",
                ),
            );
        };
        let item = &self.api.paths[pi];
        let found = item
            .methods
            .iter()
            .find(|(m, _)| *m == req.method)
            .or_else(|| {
                (req.method == Method::HEAD)
                    .then(|| item.methods.iter().find(|(m, _)| *m == Method::GET))
                    .flatten()
            });
        let Some(&(_, oi)) = found else {
            let b = Block::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "unknown_method",
                format!("{} is not declared for {}", req.method, item.template),
            )
            .header(header::ALLOW, item.allow.clone())
            .detail(json!({ "path": item.template }));
            return self.unknown(ctx, b);
        };
        let op = &self.api.ops[oi];
        ctx.operation = Some(op.id.clone());
        if op.deprecated {
            match self.s.deprecated {
                DeprecatedPolicy::Allow => {}
                DeprecatedPolicy::Report => ctx.event(SecurityEvent {
                    guard: NAME,
                    rule: "deprecated_operation".into(),
                    message: format!("deprecated operation {} called", op.id),
                    action: Action::Logged,
                    status: None,
                    detail: json!({ "operation": &*op.id }),
                }),
                DeprecatedPolicy::Block => {
                    return Verdict::Block(
                        Block::new(
                            StatusCode::GONE,
                            "deprecated_operation",
                            format!("deprecated operation {} refused", op.id),
                        )
                        .detail(json!({ "operation": &*op.id })),
                    )
                }
            }
        }
        let mut failures = Vec::new();
        self.check_params(op, req, &caps, &mut failures);
        let params_ok = failures.is_empty();
        let mut matched = Matched {
            op: oi,
            media: None,
            params_ok,
            resp_media: None,
        };
        let body_sent = has_body(req);
        let mut unsupported: Option<Vec<String>> = None;
        match &op.body {
            None => {
                if body_sent && req.method != Method::OPTIONS {
                    failures.push(Failure::body(
                        String::new(),
                        "this operation takes no request body",
                    ));
                }
            }
            Some(b) => {
                if !body_sent {
                    if b.required {
                        failures.push(Failure::body(String::new(), "a request body is required"));
                    }
                } else {
                    let ct = req
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(body::essence)
                        .unwrap_or_default();
                    match body::best_match(&b.media, &ct) {
                        Some(i) => matched.media = Some(i),
                        None if b.media.is_empty() => {}
                        None => {
                            unsupported = Some(b.media.iter().map(|(r, _)| r.clone()).collect())
                        }
                    }
                }
            }
        }
        ctx.extensions.insert(matched);
        if let Some(accepted) = unsupported {
            return Verdict::Block(
                Block::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("content type not declared for {}", op.id),
                )
                .detail(json!({ "operation": &*op.id, "accepted": accepted }))
                .public("accepted", json!(accepted)),
            );
        }
        if !failures.is_empty() {
            return invalid(
                "invalid_request",
                StatusCode::BAD_REQUEST,
                format!("request does not match operation {}", op.id),
                &failures,
            );
        }
        if matched.media.is_none() {
            if let Some(t) = &op.typed {
                ctx.typed_inputs = Some(t.clone());
            }
        }
        Verdict::Continue
    }
}

impl Guard for OpenApiGuard {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mode(&self) -> Mode {
        self.s.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        // CORS preflights belong to the `cors` guard.
        if req.method == Method::OPTIONS
            && req.headers.contains_key(header::ORIGIN)
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Verdict::Continue.into();
        }
        let path = std::mem::take(&mut ctx.path);
        let v = self.request_head(req, ctx, &path);
        ctx.path = path;
        v.into()
    }

    fn request_body_limit(&self, _req: &RequestHead, ctx: &RequestContext) -> Option<usize> {
        let m = ctx.extensions.get::<Matched>()?;
        let op = &self.api.ops[m.op];
        let (_, media) = &op.body.as_ref()?.media[m.media?];
        (media.kind != Kind::Other && media.schema.is_some()).then_some(self.s.max_body)
    }

    fn on_request_body<'a>(
        &'a self,
        req: &'a RequestHead,
        body: &'a mut Bytes,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let Some(m) = ctx.extensions.get::<Matched>().copied() else {
            return Verdict::Continue.into();
        };
        let op = &self.api.ops[m.op];
        let Some((_, media)) = op.body.as_ref().and_then(|b| b.media.get(m.media?)) else {
            return Verdict::Continue.into();
        };
        let Some(c) = &media.schema else {
            return Verdict::Continue.into();
        };
        let bad = |reason: &str| {
            invalid(
                "invalid_body",
                StatusCode::BAD_REQUEST,
                format!("request body of {} cannot be read: {reason}", op.id),
                &[Failure::body(String::new(), reason.to_string())],
            )
        };
        // Fast path: most bodies are valid; parse and check them in one pass (or, for schemas
        // the one pass does not take, read them onto a tape and validate it in place).
        // Anything else (invalid JSON, invalid, readOnly properties sent) takes the full path
        // below, which says what is wrong.
        if media.kind == Kind::Json && fast_valid(c, body) {
            record_typed(ctx, &m, op);
            return Verdict::Continue.into();
        }
        let parsed = match media.kind {
            Kind::Json => rampart_core::json::parse_strict(body).map_err(|e| {
                if e.starts_with("duplicate key") {
                    "an object repeats a key".to_string()
                } else {
                    "is not valid JSON".to_string()
                }
            }),
            Kind::Form => body::form_to_json(body, &media.form),
            Kind::Multipart => {
                let ct = req
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                match body::boundary(ct) {
                    Some(b) => body::multipart_to_json(body, &b, &media.form),
                    None => Err("multipart content type without a boundary".to_string()),
                }
            }
            Kind::Other => return Verdict::Continue.into(),
        };
        let mut value = match parsed {
            Ok(v) => v,
            Err(why) => return bad(&why).into(),
        };
        let mut failures = schema::check(c, &value, "body", "", MAX_FAILURES);
        let mut rewrite = false;
        if !failures.is_empty() && c.has_read_only {
            let flagged = schema::read_only_pointers(c, &value);
            if !flagged.is_empty() {
                let strip =
                    self.s.read_only == ReadOnlyPolicy::Strip && media.kind != Kind::Multipart;
                if !strip {
                    let ro: Vec<Failure> = flagged
                        .into_iter()
                        .take(MAX_FAILURES)
                        .map(|p| Failure::body(p, "is readOnly and may not be sent"))
                        .collect();
                    return invalid(
                        "mass_assignment",
                        StatusCode::BAD_REQUEST,
                        format!("readOnly properties sent to {}", op.id),
                        &ro,
                    )
                    .into();
                }
                schema::remove_pointers(&mut value, &flagged);
                rewrite = true;
                ctx.event(SecurityEvent {
                    guard: NAME,
                    rule: "read_only_stripped".into(),
                    message: format!("readOnly properties removed from a {} body", op.id),
                    action: Action::Logged,
                    status: None,
                    detail: json!({ "pointers": flagged }),
                });
                failures = schema::check(c, &value, "body", "", MAX_FAILURES);
            }
        }
        if !failures.is_empty() {
            return invalid(
                "invalid_request",
                StatusCode::BAD_REQUEST,
                format!("request body does not match operation {}", op.id),
                &failures,
            )
            .into();
        }
        if rewrite {
            match media.kind {
                Kind::Json => {
                    if let Ok(b) = serde_json::to_vec(&value) {
                        *body = Bytes::from(b);
                    }
                }
                Kind::Form => {
                    if let Value::Object(kept) = &value {
                        let mut ser = form_urlencoded::Serializer::new(String::new());
                        for (k, v) in form_urlencoded::parse(body) {
                            if kept.contains_key(k.as_ref()) {
                                ser.append_pair(&k, &v);
                            }
                        }
                        *body = Bytes::from(ser.finish());
                    }
                }
                _ => {}
            }
        }
        record_typed(ctx, &m, op);
        Verdict::Continue.into()
    }

    fn on_response_headers(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestContext,
    ) -> Verdict {
        if self.s.responses == ResponsePolicy::Off || ctx.deciding_guard.is_some() {
            return Verdict::Continue;
        }
        let Some(mut m) = ctx.extensions.get::<Matched>().copied() else {
            return Verdict::Continue;
        };
        let op = &self.api.ops[m.op];
        if op.responses.is_empty() {
            return Verdict::Continue;
        }
        let status = resp.status.as_u16();
        let Some((ri, r)) = op.response(status) else {
            return self.response_violation(
                ctx,
                "undeclared_status",
                format!(
                    "{} answered {status}, which the spec does not declare",
                    op.id
                ),
                json!({ "operation": &*op.id, "status": status }),
            );
        };
        let no_body = ctx.method == Method::HEAD || status == 204 || status == 304;
        if no_body {
            return Verdict::Continue;
        }
        let ct = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(body::essence);
        let empty = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            == Some("0");
        if r.media.is_empty() {
            if ct.is_some() && !empty {
                return self.response_violation(
                    ctx,
                    "undeclared_content",
                    format!(
                        "{} answered {status} with a body the spec does not declare",
                        op.id
                    ),
                    json!({ "operation": &*op.id, "status": status }),
                );
            }
            return Verdict::Continue;
        }
        let ct = ct.unwrap_or_default();
        let Some(mi) = body::best_match(&r.media, &ct) else {
            if empty {
                return Verdict::Continue;
            }
            return self.response_violation(
                ctx,
                "unexpected_content_type",
                format!(
                    "{} answered {status} with an undeclared content type",
                    op.id
                ),
                json!({ "operation": &*op.id, "status": status, "content_type": ct }),
            );
        };
        let media = &r.media[mi].1;
        let encoded = resp
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity");
        if media.kind == Kind::Json && media.schema.is_some() {
            if encoded {
                ctx.tags.push("openapi:encoded_response_unchecked".into());
            } else {
                m.resp_media = Some((ri, mi));
                ctx.extensions.insert(m);
            }
        }
        Verdict::Continue
    }

    fn response_body_limit(
        &self,
        _resp: &http::response::Parts,
        ctx: &RequestContext,
    ) -> Option<usize> {
        if self.s.responses == ResponsePolicy::Off || ctx.deciding_guard.is_some() {
            return None;
        }
        ctx.extensions
            .get::<Matched>()
            .and_then(|m| m.resp_media)
            .map(|_| self.s.max_response)
    }

    fn on_response_body(
        &self,
        _resp: &mut http::response::Parts,
        body: &mut Bytes,
        ctx: &mut RequestContext,
    ) -> Verdict {
        if ctx.deciding_guard.is_some() {
            return Verdict::Continue;
        }
        let Some(m) = ctx.extensions.get::<Matched>().copied() else {
            return Verdict::Continue;
        };
        let Some((ri, mi)) = m.resp_media else {
            return Verdict::Continue;
        };
        let op = &self.api.ops[m.op];
        let Some(c) = op.responses[ri].1.media[mi].1.schema.as_ref() else {
            return Verdict::Continue;
        };
        if self.s.responses != ResponsePolicy::Strip && fast_valid(c, body) {
            return Verdict::Continue;
        }
        let mut value = match rampart_core::json::parse_strict(body) {
            Ok(v) => v,
            Err(_) => {
                return self.response_violation(
                    ctx,
                    "invalid_response",
                    format!("{} answered with a body that is not valid JSON", op.id),
                    json!({ "operation": &*op.id }),
                )
            }
        };
        if self.s.responses == ResponsePolicy::Strip {
            let removed = schema::strip_response(c, &mut value);
            if !removed.is_empty() {
                if let Ok(b) = serde_json::to_vec(&value) {
                    *body = Bytes::from(b);
                }
                ctx.event(SecurityEvent {
                    guard: NAME,
                    rule: "response_stripped".into(),
                    message: format!(
                        "{} properties the spec does not expose removed from a {} response",
                        removed.len(),
                        op.id
                    ),
                    action: Action::Logged,
                    status: None,
                    detail: json!({ "operation": &*op.id, "pointers": removed }),
                });
            }
        }
        let failures = schema::check(c, &value, "body", "", MAX_FAILURES);
        if !failures.is_empty() {
            return self.response_violation(
                ctx,
                "invalid_response",
                format!(
                    "{} answered with a body that does not match the spec",
                    op.id
                ),
                json!({ "operation": &*op.id, "errors": problem_errors(&failures) }),
            );
        }
        Verdict::Continue
    }
}

/// The strict inputs the guard recorded for a request, if any.
pub fn typed_inputs(ctx: &RequestContext) -> Option<&Arc<TypedInputs>> {
    ctx.typed_inputs.as_ref()
}

/// Whether a JSON body is valid by the fast paths (`false`: not shown valid; the full path
/// decides).
fn fast_valid(c: &schema::Compiled, body: &[u8]) -> bool {
    match &c.onepass {
        Some(p) => p.is_valid(body),
        None => tape::parse(body).is_ok_and(|doc| c.fast.is_valid(doc.root())),
    }
}
