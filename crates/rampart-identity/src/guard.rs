//! The `auth` guard: lockout check, authentication, authorization, identity forwarding, and
//! login failure counting.

use crate::apikey::{KeyCache, KeyError};
use crate::bruteforce::Policy;
use crate::credentials as cred;
use crate::introspect::Introspector;
use crate::jwt::JwtVerifier;
use crate::rules::{parse_json_strict, Denied, Rule};
use crate::{AuthFailure, ClaimPaths, State};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::StatusCode;
use rampart_config::{CertSubject, Mode};
use rampart_core::guard::{Block, Guard, Identity, RequestContext, RequestHead, Step, Verdict};
use rampart_telemetry::{Action, SecurityEvent};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Where a bearer token may be read from.
#[derive(Clone, Debug)]
pub struct TokenSource {
    pub header: bool,
    pub cookie: Option<String>,
    pub query: Option<String>,
}

/// Where the credential was found (to strip it before the upstream).
#[derive(Clone, Debug)]
enum Found {
    Authorization,
    Cookie(String),
    Query(String),
    Header(HeaderName),
    Cert,
}

pub enum Kind {
    Jwt(Box<JwtVerifier>, TokenSource),
    Introspection(Box<Introspector>, TokenSource, ClaimPaths),
    ApiKey {
        cache: Arc<KeyCache>,
        header: HeaderName,
        query: Option<String>,
    },
    Mtls {
        from: CertSubject,
        grants: HashMap<String, (Vec<String>, Vec<String>)>,
    },
}

/// A configured identity provider.
pub struct Provider {
    pub name: Arc<str>,
    pub kind: Kind,
}

impl Provider {
    fn is_bearer(&self) -> bool {
        matches!(self.kind, Kind::Jwt(..) | Kind::Introspection(..))
    }

    /// The credential this provider would use, if the request carries one.
    fn find(&self, req: &RequestHead, ctx: &RequestContext) -> Option<(String, Found)> {
        let bearer = |src: &TokenSource, jwt_only: bool| -> Option<(String, Found)> {
            let ok = |t: &str| !jwt_only || cred::looks_like_jwt(t);
            if src.header {
                if let Some(t) = cred::authorization(&req.headers, "Bearer") {
                    if ok(t) {
                        return Some((t.to_string(), Found::Authorization));
                    }
                }
            }
            if let Some(c) = &src.cookie {
                if let Some(t) = cred::cookie(&req.headers, c) {
                    if ok(t) {
                        return Some((t.to_string(), Found::Cookie(c.clone())));
                    }
                }
            }
            if let Some(q) = &src.query {
                if let Some(t) = cred::query_param(req.uri.query(), q) {
                    if ok(&t) {
                        return Some((t, Found::Query(q.clone())));
                    }
                }
            }
            None
        };
        match &self.kind {
            Kind::Jwt(_, src) => bearer(src, true),
            Kind::Introspection(_, src, _) => bearer(src, false),
            Kind::ApiKey { header, query, .. } => {
                if let Some(v) = req.headers.get(header).and_then(|v| v.to_str().ok()) {
                    return Some((v.trim().to_string(), Found::Header(header.clone())));
                }
                if let Some(k) = cred::authorization(&req.headers, "ApiKey") {
                    return Some((k.to_string(), Found::Authorization));
                }
                if let Some(q) = query {
                    if let Some(k) = cred::query_param(req.uri.query(), q) {
                        return Some((k, Found::Query(q.clone())));
                    }
                }
                None
            }
            Kind::Mtls { .. } => ctx
                .conn
                .tls
                .as_ref()
                .and_then(|t| t.client_cert.as_ref())
                .map(|_| (String::new(), Found::Cert)),
        }
    }

    /// Authenticate without waiting, when possible (API keys, certificates, cached tokens).
    fn try_now(
        &self,
        secret: &str,
        ctx: &RequestContext,
    ) -> Option<Result<Identity, (AuthFailure, Option<String>)>> {
        match &self.kind {
            Kind::Jwt(v, _) => v.cached(secret).map(|c| {
                v.claims
                    .identity(c, "jwt", &self.name, &[])
                    .map_err(|f| (f, None))
            }),
            Kind::Introspection(..) => None,
            Kind::ApiKey { cache, .. } => Some(match cache.check(secret) {
                Ok(rec) => Ok(Identity {
                    subject: rec.owner,
                    scopes: rec.scopes,
                    roles: rec.roles,
                    method: "api_key",
                    provider: self.name.to_string(),
                    claims: Arc::new(
                        [("key_id".to_string(), serde_json::Value::String(rec.id))]
                            .into_iter()
                            .collect(),
                    ),
                }),
                Err(e) => Err(match e {
                    KeyError::Malformed => (
                        AuthFailure::invalid("malformed_key", "API key is malformed".into()),
                        None,
                    ),
                    KeyError::Unknown(id) => (
                        AuthFailure::invalid("unknown_key", format!("no API key `{id}`")),
                        None,
                    ),
                    KeyError::Wrong(id) => (
                        AuthFailure::invalid(
                            "wrong_key",
                            format!("wrong secret for API key `{id}`"),
                        ),
                        Some(id),
                    ),
                    KeyError::Revoked(id) => (
                        AuthFailure::invalid("revoked_key", format!("API key `{id}` is revoked")),
                        Some(id),
                    ),
                    KeyError::Expired(id) => (
                        AuthFailure::invalid("expired_key", format!("API key `{id}` has expired")),
                        Some(id),
                    ),
                }),
            }),
            Kind::Mtls { from, grants } => {
                let cert = ctx.conn.tls.as_ref()?.client_cert.as_ref()?;
                let pick = |prefix: &str| {
                    cert.sans
                        .iter()
                        .find_map(|s| s.strip_prefix(prefix).map(str::to_string))
                };
                let subject = match from {
                    CertSubject::Subject => Some(cert.subject.clone()),
                    CertSubject::Cn => cert
                        .subject
                        .split(',')
                        .find_map(|p| p.trim().strip_prefix("CN=").map(str::to_string)),
                    CertSubject::SanDns => pick("DNS:"),
                    CertSubject::SanUri => pick("URI:"),
                    CertSubject::SanEmail => pick("email:"),
                    CertSubject::Fingerprint => Some(cert.fingerprint_sha256.clone()),
                };
                Some(match subject {
                    Some(s) if !s.is_empty() => {
                        let (roles, scopes) = grants.get(&s).cloned().unwrap_or_default();
                        Ok(Identity {
                            subject: s,
                            scopes,
                            roles,
                            method: "mtls",
                            provider: self.name.to_string(),
                            claims: Arc::default(),
                        })
                    }
                    _ => Err((
                        AuthFailure::invalid(
                            "certificate_identity_missing",
                            format!("client certificate has no {from:?} to use as subject"),
                        ),
                        None,
                    )),
                })
            }
        }
    }

    async fn authenticate(&self, secret: &str) -> Result<Identity, AuthFailure> {
        match &self.kind {
            Kind::Jwt(v, _) => {
                let c = v.verify(secret).await?;
                v.claims.identity(c, "jwt", &self.name, &[])
            }
            Kind::Introspection(i, _, claims) => {
                let c = i.introspect(secret).await?;
                claims.identity(c, "introspection", &self.name, &["username", "client_id"])
            }
            _ => Err(AuthFailure::invalid(
                "internal",
                "provider cannot authenticate asynchronously".into(),
            )),
        }
    }
}

/// Headers that carry the identity upstream.
#[derive(Default)]
pub struct Forward {
    pub subject: Option<HeaderName>,
    pub scopes: Option<HeaderName>,
    pub roles: Option<HeaderName>,
    pub claims: Vec<(String, HeaderName)>,
}

impl Forward {
    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.subject
            .iter()
            .chain(&self.scopes)
            .chain(&self.roles)
            .chain(self.claims.iter().map(|(_, h)| h))
    }
}

pub struct Login {
    pub template: crate::rules::Template,
    pub methods: Vec<http::Method>,
    pub username: UsernameAt,
    pub failure_status: Vec<u16>,
    pub max_body: usize,
}

pub enum UsernameAt {
    Json(String),
    Form(String),
}

/// Per-request notes between phases.
#[derive(Clone, Default)]
struct Scratch {
    rule: Option<usize>,
    login: bool,
    username: Option<String>,
}

pub struct AuthGuard {
    pub mode: Mode,
    pub providers: Vec<Arc<Provider>>,
    /// False for a route with only a `login` block.
    pub authenticate: bool,
    pub optional: bool,
    pub strip: bool,
    pub forward: Forward,
    pub rules: Vec<Rule>,
    pub unmatched_deny: bool,
    pub realm: String,
    pub login: Option<Login>,
    pub brute_force: Option<Policy>,
    pub state: Arc<State>,
}

/// Body bytes read to check JSON ownership rules.
const OWNER_BODY_LIMIT: usize = 1024 * 1024;

impl AuthGuard {
    fn challenges(
        &self,
        error: Option<&str>,
        scope: Option<&str>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        let realm = &self.realm;
        if self.providers.iter().any(|p| p.is_bearer()) {
            let mut c = format!("Bearer realm=\"{realm}\"");
            if let Some(e) = error {
                c.push_str(&format!(", error=\"{e}\""));
            }
            if let Some(s) = scope {
                c.push_str(&format!(", scope=\"{s}\""));
            }
            if let Ok(v) = HeaderValue::from_str(&c) {
                out.push((WWW_AUTHENTICATE, v));
            }
        }
        for p in &self.providers {
            if let Kind::ApiKey { header, .. } = &p.kind {
                if let Ok(v) =
                    HeaderValue::from_str(&format!("ApiKey realm=\"{realm}\", header=\"{header}\""))
                {
                    out.push((WWW_AUTHENTICATE, v));
                }
            }
        }
        if out.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&format!("Certificate realm=\"{realm}\"")) {
                out.push((WWW_AUTHENTICATE, v));
            }
        }
        out
    }

    fn unauthorized(
        &self,
        code: &str,
        message: String,
        provider: Option<&str>,
        bearer_error: bool,
    ) -> Verdict {
        let mut b = Block::new(StatusCode::UNAUTHORIZED, code, message).detail(json!({
            "provider": provider,
            "reason": code,
        }));
        b.headers = self.challenges(bearer_error.then_some("invalid_token"), None);
        Verdict::Block(b)
    }

    fn forbidden(&self, d: Denied, id: &Identity) -> Verdict {
        let mut b = Block::new(StatusCode::FORBIDDEN, d.code, d.message).detail(json!({
            "provider": id.provider,
            "subject": id.subject,
            "reason": d.code,
        }));
        if d.code == "insufficient_scope" && self.providers.iter().any(|p| p.is_bearer()) {
            let scope = d.scopes.join(" ");
            b.headers = self.challenges(Some("insufficient_scope"), Some(&scope));
        }
        Verdict::Block(b)
    }

    fn locked_out(&self, what: &str, left: std::time::Duration) -> Verdict {
        let secs = left.as_millis().div_ceil(1000).max(1) as u64;
        Verdict::Block(
            Block::new(
                StatusCode::TOO_MANY_REQUESTS,
                "locked_out",
                format!("{what} is locked out after repeated failed authentication"),
            )
            .header(RETRY_AFTER, HeaderValue::from(secs))
            .detail(json!({ "locked": what, "retry_after_secs": secs })),
        )
    }

    /// Count a failure toward lockout; record an event when a lockout starts.
    fn count_failure(&self, key: String, ctx: &mut RequestContext) {
        let Some(p) = &self.brute_force else { return };
        if let Some(d) = self.state.lockouts.fail(&key, p, Instant::now()) {
            ctx.event(SecurityEvent {
                guard: "auth",
                rule: "lockout_started".into(),
                message: format!(
                    "{key} locked out for {}s after repeated failures",
                    d.as_secs()
                ),
                action: Action::Blocked,
                status: None,
                detail: json!({ "locked": key, "lockout_secs": d.as_secs() }),
            });
        }
    }

    fn ip_key(ctx: &RequestContext) -> String {
        format!("ip:{}", ctx.client_ip)
    }

    fn ip_locked(&self, ctx: &RequestContext) -> Option<Verdict> {
        self.brute_force.as_ref()?;
        let key = Self::ip_key(ctx);
        let left = self.state.lockouts.locked(&key, Instant::now())?;
        Some(self.locked_out(&key, left))
    }

    fn login_applies(&self, req: &RequestHead, ctx: &RequestContext) -> bool {
        self.login.as_ref().is_some_and(|l| {
            l.methods.contains(&req.method) && l.template.matches(&ctx.path).is_some()
        })
    }

    /// After a provider answered: record the outcome, authorize, forward.
    fn settle(
        &self,
        result: Result<Identity, (AuthFailure, Option<String>)>,
        provider: &Provider,
        found: Found,
        rule: Option<(usize, Vec<(String, String)>)>,
        req: &mut RequestHead,
        ctx: &mut RequestContext,
    ) -> Verdict {
        let id = match result {
            Ok(id) => id,
            Err((f, key_id)) => {
                if f.unavailable {
                    return Verdict::Block(
                        Block::new(StatusCode::SERVICE_UNAVAILABLE, f.code, f.message)
                            .header(RETRY_AFTER, HeaderValue::from_static("5"))
                            .detail(json!({ "provider": &*provider.name })),
                    );
                }
                self.count_failure(Self::ip_key(ctx), ctx);
                if let Some(k) = key_id {
                    self.count_failure(format!("key:{k}"), ctx);
                }
                return self.unauthorized(
                    f.code,
                    f.message,
                    Some(&provider.name),
                    provider.is_bearer(),
                );
            }
        };
        if let (Some(p), Some(k)) = (
            &self.brute_force,
            id.claims.get("key_id").and_then(|v| v.as_str()),
        ) {
            let _ = p;
            let key = format!("key:{k}");
            if let Some(left) = self.state.lockouts.locked(&key, Instant::now()) {
                return self.locked_out(&key, left);
            }
        }
        // Authorization.
        match &rule {
            Some((i, params)) => {
                let r = &self.rules[*i];
                if let Err(d) = r.check_function(&id) {
                    return self.forbidden(d, &id);
                }
                if let Err(d) = r.check_owner_head(&id, params, req) {
                    return self.forbidden(d, &id);
                }
            }
            None if self.unmatched_deny => {
                return self.forbidden(
                    Denied {
                        code: "no_rule",
                        message: "no authorization rule covers this request".into(),
                        scopes: Vec::new(),
                    },
                    &id,
                )
            }
            None => {}
        }
        // Forward the identity; strip the credential if asked.
        let f = &self.forward;
        let set = |h: &mut http::HeaderMap, name: &Option<HeaderName>, v: &str| {
            if let (Some(n), Ok(v)) = (name, HeaderValue::from_str(v)) {
                h.insert(n.clone(), v);
            }
        };
        set(&mut req.headers, &f.subject, &id.subject);
        set(&mut req.headers, &f.scopes, &id.scopes.join(" "));
        set(&mut req.headers, &f.roles, &id.roles.join(" "));
        for (claim, h) in &f.claims {
            if let Some(v) = crate::rules::claim(&id, claim) {
                let s = match v.as_ref() {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if let Ok(v) = HeaderValue::from_str(&s) {
                    req.headers.insert(h.clone(), v);
                }
            }
        }
        if self.strip {
            match found {
                Found::Authorization => {
                    req.headers.remove(http::header::AUTHORIZATION);
                }
                Found::Header(h) => {
                    req.headers.remove(h);
                }
                Found::Cookie(c) => cred::remove_cookie(&mut req.headers, &c),
                Found::Query(q) => {
                    let rest = req.uri.query().and_then(|qs| cred::query_without(qs, &q));
                    let pq = match rest {
                        Some(r) => format!("{}?{r}", req.uri.path()),
                        None => req.uri.path().to_string(),
                    };
                    let mut parts = req.uri.clone().into_parts();
                    if let Ok(pq) = http::uri::PathAndQuery::try_from(pq) {
                        parts.path_and_query = Some(pq);
                        if let Ok(u) = http::Uri::from_parts(parts) {
                            req.uri = u;
                        }
                    }
                }
                Found::Cert => {}
            }
        }
        ctx.identity = Some(id);
        Verdict::Continue
    }
}

impl Guard for AuthGuard {
    fn name(&self) -> &'static str {
        "auth"
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        // Inbound copies of identity headers never reach the upstream.
        for h in self.forward.names() {
            req.headers.remove(h);
        }
        if let Some(v) = self.ip_locked(ctx) {
            return Step::Ready(v);
        }
        let login = self.login_applies(req, ctx);
        if !self.authenticate {
            if login {
                ctx.extensions.insert(Scratch {
                    login: true,
                    ..Scratch::default()
                });
            }
            return Step::Ready(Verdict::Continue);
        }
        let rule = self
            .rules
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.applies(&req.method, &ctx.path).map(|p| (i, p)));
        // Later phases need notes only for login counting and JSON ownership checks; most
        // requests need none, so nothing is allocated for them.
        let body_rule = rule
            .as_ref()
            .is_some_and(|(i, _)| self.rules[*i].needs_body());
        if login || body_rule {
            ctx.extensions.insert(Scratch {
                rule: rule.as_ref().map(|(i, _)| *i),
                login,
                username: None,
            });
        }
        let found = self
            .providers
            .iter()
            .find_map(|p| p.find(req, ctx).map(|f| (p.clone(), f)));
        let Some((provider, (secret, found))) = found else {
            let public = rule.as_ref().is_some_and(|(i, _)| self.rules[*i].public);
            let open_rule = rule.as_ref().is_none_or(|(i, _)| {
                let r = &self.rules[*i];
                r.scopes_all.is_empty()
                    && r.scopes_any.is_empty()
                    && r.roles_all.is_empty()
                    && r.roles_any.is_empty()
                    && r.subjects.is_empty()
                    && r.owner.is_empty()
            });
            if public || (self.optional && open_rule && !(rule.is_none() && self.unmatched_deny)) {
                return Step::Ready(Verdict::Continue);
            }
            return Step::Ready(self.unauthorized(
                "credentials_missing",
                "no credentials presented".into(),
                None,
                false,
            ));
        };
        if let Some(r) = provider.try_now(&secret, ctx) {
            return Step::Ready(self.settle(r, &provider, found, rule, req, ctx));
        }
        Step::Pending(Box::pin(async move {
            let r = provider.authenticate(&secret).await.map_err(|f| (f, None));
            self.settle(r, &provider, found, rule, req, ctx)
        }))
    }

    fn request_body_limit(&self, req: &RequestHead, ctx: &RequestContext) -> Option<usize> {
        let s = ctx.extensions.get::<Scratch>()?;
        let mut limit = None;
        if s.login {
            limit = self.login.as_ref().map(|l| l.max_body);
        }
        if ctx.identity.is_some()
            && s.rule.is_some_and(|i| self.rules[i].needs_body())
            && !matches!(req.method, http::Method::GET | http::Method::HEAD)
        {
            limit = Some(limit.unwrap_or(0).max(OWNER_BODY_LIMIT));
        }
        limit
    }

    fn on_request_body<'a>(
        &'a self,
        req: &'a RequestHead,
        body: &'a mut Bytes,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let Some(mut s) = ctx.extensions.get::<Scratch>().cloned() else {
            return Step::Ready(Verdict::Continue);
        };
        let bad_body = |what: String| {
            Verdict::Block(Block::new(StatusCode::BAD_REQUEST, "unreadable_body", what))
        };
        let is_json = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                v == "application/json" || v.ends_with("+json")
            });
        // Ownership checks on the JSON body.
        if let (Some(id), Some(i)) = (&ctx.identity, s.rule) {
            let r = &self.rules[i];
            if r.needs_body() && !body.is_empty() {
                if !is_json {
                    return Step::Ready(bad_body(
                        "an ownership rule reads the JSON body, but the body is not declared as JSON".into(),
                    ));
                }
                let v = match parse_json_strict(body) {
                    Ok(v) => v,
                    Err(e) => return Step::Ready(bad_body(format!("JSON body rejected: {e}"))),
                };
                if let Err(d) = r.check_owner_body(id, &v) {
                    let id = id.clone();
                    return Step::Ready(self.forbidden(d, &id));
                }
            }
        }
        // Login: find the username, refuse while it is locked out.
        if s.login {
            if let Some(l) = &self.login {
                let user = match &l.username {
                    UsernameAt::Json(p) => parse_json_strict(body)
                        .ok()
                        .and_then(|v| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string)),
                    UsernameAt::Form(f) => std::str::from_utf8(body)
                        .ok()
                        .and_then(|b| cred::query_param(Some(b), f)),
                };
                if let Some(u) = user {
                    let u: String = u.trim().to_lowercase().chars().take(256).collect();
                    let key = format!("user:{u}");
                    if self.brute_force.is_some() {
                        if let Some(left) = self.state.lockouts.locked(&key, Instant::now()) {
                            return Step::Ready(self.locked_out(&key, left));
                        }
                    }
                    s.username = Some(u);
                    ctx.extensions.insert(s);
                }
            }
        }
        Step::Ready(Verdict::Continue)
    }

    fn on_response_headers(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestContext,
    ) -> Verdict {
        let Some(l) = &self.login else {
            return Verdict::Continue;
        };
        let Some(s) = ctx.extensions.get::<Scratch>().cloned() else {
            return Verdict::Continue;
        };
        if !s.login || ctx.deciding_guard.is_some() {
            return Verdict::Continue; // the gateway answered, not the login endpoint
        }
        let status = resp.status.as_u16();
        if l.failure_status.contains(&status) {
            self.count_failure(Self::ip_key(ctx), ctx);
            if let Some(u) = &s.username {
                self.count_failure(format!("user:{u}"), ctx);
            }
            ctx.event(SecurityEvent {
                guard: "auth",
                rule: "login_failed".into(),
                message: "login endpoint answered a failure".into(),
                action: Action::Logged,
                status: Some(status),
                detail: json!({ "username": s.username }),
            });
        } else if resp.status.is_success() {
            if let Some(u) = &s.username {
                self.state.lockouts.success(&format!("user:{u}"));
            }
        }
        Verdict::Continue
    }
}
