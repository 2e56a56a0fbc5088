//! `rate_limit`: GCRA limits per key (client IP, route, method, a header, the authenticated
//! subject, or a combination), answered with 429, `Retry-After` and the IETF `RateLimit` /
//! `RateLimit-Policy` headers. State lives in memory or in Redis (shared by every instance);
//! when Redis cannot answer in time the limiter fails open to memory or closed with 503.
//!
//! Each configured limit is one guard, so each has its own `block`/`monitor` mode. Global limits
//! and a route's own limits all apply; all must pass.

pub mod autoban;
pub mod bans;
pub mod concurrency;
pub mod gcra;
pub mod quota;
pub mod redis_store;

pub use bans::{BanGuard, Bans, BansAdmin};

use gcra::{Decision, MemoryStore, Params};
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use rampart_config::{
    ConfigError, LoadedConfig, Mode, OnStoreFailure, RateLimit, Spanned, StoreKind,
};
use rampart_core::guard::{Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::upstream::now_ms;
use rampart_core::Block;
use rampart_telemetry::metrics::{Counter, LimitResult, Name};
use rampart_telemetry::{Action, Metrics, SecurityEvent};
use redis_store::RedisStore;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Refusals per (limit, client) toward `ban_after`: (count, window start ms).
type Strikes = Arc<Mutex<std::collections::HashMap<(Arc<str>, IpAddr), (u32, u64)>>>;

/// Count one strike for `(name, ip)` in a window of `period_ms`; true (and the count starts
/// over) when it reaches `after`.
pub(crate) fn strike(
    strikes: &Strikes,
    name: &Arc<str>,
    ip: IpAddr,
    after: u32,
    period_ms: u64,
) -> bool {
    let now = now_ms();
    let Ok(mut m) = strikes.lock() else {
        return false;
    };
    if m.len() > 100_000 {
        m.retain(|_, (_, start)| now.saturating_sub(*start) < period_ms);
    }
    let e = m.entry((name.clone(), ip)).or_insert((0, now));
    if now.saturating_sub(e.1) >= period_ms {
        *e = (0, now);
    }
    e.0 += 1;
    if e.0 >= after {
        m.remove(&(name.clone(), ip));
        true
    } else {
        false
    }
}

/// Ban `ip` here at once, and in the shared store (if any) in the background.
pub(crate) fn ban_now(bans: &Bans, ip: IpAddr, ban_ms: u64) {
    bans.ban_local(ip, ban_ms);
    let bans = bans.clone();
    tokio::spawn(async move {
        if let Err(e) = bans.ban_shared(ip, ban_ms).await {
            tracing::warn!(ip = %ip, error = %e, "could not record ban in the shared store");
        }
    });
}

/// State that outlives config reloads: counters must not reset when the config changes.
pub struct State {
    memory: Arc<MemoryStore>,
    redis: Mutex<Option<Arc<RedisStore>>>,
    metrics: Arc<Metrics>,
    /// The temporary ban list (its admin endpoint is [`State::admin`]).
    pub bans: Bans,
    /// Refusals per (limit, client) toward `ban_after`: (count, window start ms).
    strikes: Strikes,
    in_flight: concurrency::InFlightCounts,
    quotas: Arc<quota::QuotaStore>,
}

impl State {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(State {
            memory: Arc::new(MemoryStore::new()),
            redis: Mutex::new(None),
            metrics,
            bans: Bans::default(),
            strikes: Arc::default(),
            in_flight: Arc::default(),
            quotas: Arc::default(),
        })
    }

    /// The `/bans` admin endpoint.
    pub fn admin(&self) -> Arc<dyn rampart_core::admin::AdminExtension> {
        Arc::new(BansAdmin {
            bans: self.bans.clone(),
        })
    }

    fn redis(&self, url: &str, timeout: std::time::Duration) -> Result<Arc<RedisStore>, String> {
        let mut g = self
            .redis
            .lock()
            .map_err(|_| "rate-limit state poisoned".to_string())?;
        if let Some(r) = g.as_ref() {
            if r.url() == url {
                return Ok(r.clone());
            }
        }
        let r = Arc::new(RedisStore::new(url, timeout)?);
        *g = Some(r.clone());
        Ok(r)
    }
}

#[derive(Clone)]
pub(crate) enum KeyPart {
    ClientIp,
    Route,
    Method,
    /// The API operation (OpenAPI `operationId`); requests no spec matched share `-`.
    Operation,
    Header(HeaderName),
    Subject,
    /// The id (public prefix) of the API key the caller authenticated with.
    ApiKey,
    /// A field of a JSON request body (`json:username`, `json:user.email`).
    Json(Vec<String>),
}

/// Largest body a JSON-keyed limit reads.
const JSON_KEY_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
enum Store {
    Memory,
    Redis(Arc<RedisStore>, OnStoreFailure),
}

/// One limit, as a guard.
pub struct RateLimitGuard {
    name: Arc<str>,
    /// Decision counters, resolved once: allowed, limited, store_error.
    counters: [Counter; 3],
    parts: Vec<KeyPart>,
    params: Params,
    v6_prefix: u8,
    mode: Mode,
    policy: HeaderValue,
    store: Store,
    memory: Arc<MemoryStore>,
    metrics: Arc<Metrics>,
    /// `(ban_after, ban_for_ms, period_ms)` when refusals lead to a ban.
    ban: Option<(u32, u64, u64)>,
    bans: Bans,
    strikes: Strikes,
    /// `RateLimit` headers on every answer (`headers: always`), or only on 429s.
    headers_always: bool,
}

/// The tightest limit seen for this request, for the response headers.
#[derive(Clone)]
struct Tightest {
    name: Arc<str>,
    remaining: u64,
    reset_s: u64,
    policy: HeaderValue,
}

/// The key of a request for a limit named `name`, or `None` when a part is absent (no such
/// header, field or identity): the limit then does not apply.
pub(crate) fn build_key(
    name: &str,
    parts: &[KeyPart],
    v6_prefix: u8,
    req: &RequestHead,
    ctx: &RequestContext,
    body: Option<&serde_json::Value>,
) -> Option<String> {
    let mut k = String::with_capacity(64);
    k.push_str("rampart:rl:");
    k.push_str(name);
    for p in parts {
        k.push('|');
        match p {
            KeyPart::ClientIp => push_ip(&mut k, ctx.client_ip, v6_prefix),
            KeyPart::Route => k.push_str(ctx.route.as_deref().unwrap_or("-")),
            KeyPart::Method => k.push_str(req.method.as_str()),
            KeyPart::Operation => k.push_str(ctx.operation.as_deref().unwrap_or("-")),
            KeyPart::Header(h) => {
                let v = req.headers.get(h)?;
                k.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            KeyPart::Subject => k.push_str(&ctx.identity.as_ref()?.subject),
            KeyPart::ApiKey => k.push_str(ctx.identity.as_ref()?.claims.get("key_id")?.as_str()?),
            KeyPart::Json(path) => {
                let mut v = body?;
                for seg in path {
                    v = v.get(seg)?;
                }
                match v {
                    serde_json::Value::String(s) => k.push_str(&s.to_lowercase()),
                    serde_json::Value::Number(n) => k.push_str(&n.to_string()),
                    _ => return None,
                }
            }
        }
    }
    Some(k)
}

/// Compile key parts from config.
fn compile_parts(lc: &LoadedConfig, keys: &[Spanned<String>]) -> Result<Vec<KeyPart>, ConfigError> {
    let mut parts = Vec::new();
    for k in keys {
        parts.push(match k.value.split_once(':') {
            Some(("header", h)) => KeyPart::Header(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| lc.error_at(k, format!("invalid header name `{h}`")))?,
            ),
            Some(("json", path)) if !path.is_empty() => {
                KeyPart::Json(path.split('.').map(str::to_string).collect())
            }
            _ => match k.value.as_str() {
                "client_ip" => KeyPart::ClientIp,
                "route" => KeyPart::Route,
                "method" => KeyPart::Method,
                "operation" => KeyPart::Operation,
                "subject" => KeyPart::Subject,
                "api_key" => KeyPart::ApiKey,
                other => return Err(lc.error_at(k, format!("unknown key part `{other}`"))),
            },
        });
    }
    Ok(parts)
}

/// The client address as a key part; IPv6 grouped by its prefix.
fn push_ip(k: &mut String, ip: IpAddr, v6_prefix: u8) {
    use std::fmt::Write;
    let _ = match ip {
        IpAddr::V4(v4) => write!(k, "{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => write!(k, "{v4}"),
            None => match ipnet::Ipv6Net::new(v6, v6_prefix) {
                Ok(n) => write!(k, "{}", n.trunc()),
                Err(_) => write!(k, "{v6}"),
            },
        },
    };
}

impl RateLimitGuard {
    fn needs_body(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, KeyPart::Json(_)))
    }

    /// The key for this request, or `None` when a part is absent (e.g. the header is missing,
    /// no identity, no such JSON field): the limit then does not apply.
    fn key(
        &self,
        req: &RequestHead,
        ctx: &RequestContext,
        body: Option<&serde_json::Value>,
    ) -> Option<String> {
        build_key(&self.name, &self.parts, self.v6_prefix, req, ctx, body)
    }

    fn count(&self, result: &'static str) {
        match result {
            "allowed" => self.counters[0].inc(),
            "limited" => self.counters[1].inc(),
            _ => self.counters[2].inc(),
        };
    }

    /// Count a refusal toward `ban_after`; at the threshold, ban the client.
    fn strike(&self, ctx: &mut RequestContext) {
        let Some((after, ban_ms, period_ms)) = self.ban else {
            return;
        };
        let ip = ctx.client_ip;
        let reached = strike(&self.strikes, &self.name, ip, after, period_ms);
        if reached {
            ban_now(&self.bans, ip, ban_ms);
            ctx.event(SecurityEvent {
                guard: "rate_limit",
                rule: format!("ban:{}", self.name),
                message: format!(
                    "{ip} banned for {}s after {after} refusals by `{}`",
                    ban_ms / 1000,
                    self.name
                ),
                action: Action::Logged,
                status: None,
                detail: serde_json::json!({ "ip": ip.to_string(), "ban_s": ban_ms / 1000 }),
            });
        }
    }

    fn verdict(&self, d: Decision, ctx: &mut RequestContext) -> Verdict {
        if d.allowed {
            self.count("allowed");
            if !self.headers_always {
                return Verdict::Continue;
            }
            let reset_s = d.reset_ms.div_ceil(1000);
            let tighter = match ctx.extensions.get::<Tightest>() {
                Some(t) => d.remaining < t.remaining,
                None => true,
            };
            if tighter {
                ctx.extensions.insert(Tightest {
                    name: self.name.clone(),
                    remaining: d.remaining,
                    reset_s,
                    policy: self.policy.clone(),
                });
            }
            return Verdict::Continue;
        }
        self.count("limited");
        if self.mode == Mode::Block {
            self.strike(ctx);
        }
        let retry_s = d.retry_after_ms.div_ceil(1000).max(1);
        let rl = format!("\"{}\";r=0;t={retry_s}", self.name);
        Verdict::Block(
            Block::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("rate_limit:{}", self.name),
                format!("rate limit `{}` exceeded; retry in {retry_s}s", self.name),
            )
            .header(http::header::RETRY_AFTER, HeaderValue::from(retry_s))
            .header(
                HeaderName::from_static("ratelimit-policy"),
                self.policy.clone(),
            )
            .header(
                HeaderName::from_static("ratelimit"),
                HeaderValue::from_str(&rl).unwrap_or(HeaderValue::from_static("")),
            )
            .detail(
                serde_json::json!({ "limit": &*self.name, "retry_after_ms": d.retry_after_ms }),
            ),
        )
    }
}

impl Guard for RateLimitGuard {
    fn name(&self) -> &'static str {
        "rate_limit"
    }
    fn mode(&self) -> Mode {
        self.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        if self.needs_body() {
            return Verdict::Continue.into();
        }
        match self.key(req, ctx, None) {
            Some(key) => self.check(key, ctx),
            None => Verdict::Continue.into(),
        }
    }

    fn request_body_limit(&self, _req: &RequestHead, _ctx: &RequestContext) -> Option<usize> {
        self.needs_body().then_some(JSON_KEY_BODY_LIMIT)
    }

    fn on_request_body<'a>(
        &'a self,
        req: &'a RequestHead,
        body: &'a mut bytes::Bytes,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        if !self.needs_body() {
            return Verdict::Continue.into();
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Verdict::Continue.into();
        };
        match self.key(req, ctx, Some(&json)) {
            Some(key) => self.check(key, ctx),
            None => Verdict::Continue.into(),
        }
    }

    fn on_response_headers(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestContext,
    ) -> Verdict {
        self.response_headers(resp, ctx)
    }
}

impl RateLimitGuard {
    fn check<'a>(&'a self, key: String, ctx: &'a mut RequestContext) -> Step<'a> {
        match &self.store {
            Store::Memory => {
                let d = self.memory.check(&key, now_ms() as f64, &self.params);
                self.verdict(d, ctx).into()
            }
            Store::Redis(redis, on_failure) => {
                let on_failure = *on_failure;
                Step::Pending(Box::pin(async move {
                    match redis.check(&key, &self.params).await {
                        Ok(d) => self.verdict(d, ctx),
                        Err(e) => {
                            self.metrics.ratelimit_store_errors.inc();
                            self.count("store_error");
                            let fail_open = on_failure == OnStoreFailure::FailOpen;
                            ctx.event(SecurityEvent {
                                guard: "rate_limit",
                                rule: "store_unavailable".into(),
                                message: format!(
                                    "rate-limit store unavailable ({e}); {}",
                                    if fail_open {
                                        "limiting locally"
                                    } else {
                                        "refusing"
                                    }
                                ),
                                action: if fail_open {
                                    Action::Logged
                                } else {
                                    Action::Blocked
                                },
                                status: (!fail_open).then_some(503),
                                detail: serde_json::json!({ "limit": &*self.name }),
                            });
                            if fail_open {
                                let d = self.memory.check(&key, now_ms() as f64, &self.params);
                                self.verdict(d, ctx)
                            } else {
                                Verdict::Block(
                                    Block::new(StatusCode::SERVICE_UNAVAILABLE, "ratelimit_store_unavailable", "rate-limit store unavailable and on_failure is fail_closed")
                                        .header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
                                )
                            }
                        }
                    }
                }))
            }
        }
    }

    fn response_headers(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestContext,
    ) -> Verdict {
        if resp.headers.contains_key("ratelimit") {
            return Verdict::Continue;
        }
        if let Some(t) = ctx.extensions.get::<Tightest>() {
            let v = format!("\"{}\";r={};t={}", t.name, t.remaining, t.reset_s);
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers.insert(HeaderName::from_static("ratelimit"), v);
                resp.headers.insert(
                    HeaderName::from_static("ratelimit-policy"),
                    t.policy.clone(),
                );
            }
        }
        Verdict::Continue
    }
}

fn compile(
    lc: &LoadedConfig,
    l: &Spanned<RateLimit>,
    store: &Store,
    state: &State,
) -> Result<RateLimitGuard, ConfigError> {
    let l = &l.value;
    let parts = compile_parts(lc, &l.key)?;
    let rate = l.rate.value;
    let burst = l.burst.unwrap_or(rate);
    let period_ms = l.period.0.as_millis() as u64;
    let policy = format!(
        "\"{}\";q={};w={}",
        l.name.value,
        burst,
        period_ms.div_ceil(1000).max(1)
    );
    Ok(RateLimitGuard {
        headers_always: l.headers == rampart_config::RateLimitHeaders::Always,
        name: Arc::from(l.name.value.as_str()),
        counters: ["allowed", "limited", "store_error"].map(|result| {
            state
                .metrics
                .ratelimit_decisions
                .get_or_create(&LimitResult {
                    limit: Name::from(l.name.value.as_str()),
                    result,
                })
                .clone()
        }),
        parts,
        params: Params::new(rate, period_ms, burst),
        v6_prefix: l.ipv6_prefix,
        mode: l.mode,
        policy: HeaderValue::from_str(&policy)
            .map_err(|_| lc.error_at(&l.name, "limit name must be printable ASCII"))?,
        store: store.clone(),
        memory: state.memory.clone(),
        metrics: state.metrics.clone(),
        ban: l
            .ban_after
            .map(|n| (n.max(1), l.ban_for.0.as_millis() as u64, period_ms)),
        bans: state.bans.clone(),
        strikes: state.strikes.clone(),
    })
}

/// The rate-limit guards of each route (global limits first, then the route's own), in config
/// route order.
pub fn build(
    lc: &LoadedConfig,
    state: &Arc<State>,
) -> Result<Vec<Vec<Arc<dyn Guard>>>, Vec<ConfigError>> {
    let c = &lc.config;
    let mut errors = Vec::new();
    let store = match (c.ratelimit.store, &c.ratelimit.redis_url) {
        (StoreKind::Redis, Some(url)) => match state.redis(&url.value, c.ratelimit.redis_timeout.0)
        {
            Ok(r) => Store::Redis(r, c.ratelimit.on_failure),
            Err(m) => {
                errors.push(lc.error_at(url, m));
                Store::Memory
            }
        },
        _ => Store::Memory,
    };
    // Bans: on when configured, or when any limit bans; shared through Redis with that store.
    let any_ban = c
        .guards
        .rate_limits
        .iter()
        .chain(c.routes.iter().filter_map(|r| r.value.rate_limits.as_ref()))
        .any(|ls| ls.value.iter().any(|l| l.value.ban_after.is_some()));
    let bans_on = c.ratelimit.bans || any_ban || !c.ratelimit.auto_bans.is_empty();
    state.bans.configure(
        match &store {
            Store::Redis(r, _) => Some(r.clone()),
            Store::Memory => None,
        },
        bans_on,
    );
    let mut global: Vec<Arc<dyn Guard>> = Vec::new();
    if bans_on {
        global.push(Arc::new(BanGuard {
            bans: state.bans.clone(),
        }));
    }
    for b in &c.ratelimit.auto_bans {
        let b = &b.value;
        global.push(Arc::new(autoban::AutoBanGuard {
            name: Arc::from(b.name.value.as_str()),
            key: Arc::from(format!("auto:{}", b.name.value)),
            guards: b.guards.iter().map(|g| g.value.clone()).collect(),
            rules: b.rules.clone(),
            after: b.after.value.max(1),
            within_ms: b.within.0.as_millis() as u64,
            ban_ms: b.ban_for.0.as_millis() as u64,
            bans: state.bans.clone(),
            strikes: state.strikes.clone(),
        }));
    }
    if let Some(ls) = &c.guards.rate_limits {
        for l in &ls.value {
            match compile(lc, l, &store, state) {
                Ok(g) => global.push(Arc::new(g)),
                Err(e) => errors.push(e),
            }
        }
    }
    let concurrency = |ls: &Option<Spanned<Vec<Spanned<rampart_config::ConcurrencyLimit>>>>,
                       out: &mut Vec<Arc<dyn Guard>>,
                       errors: &mut Vec<ConfigError>| {
        let Some(ls) = ls else { return };
        for l in &ls.value {
            let l = &l.value;
            match compile_parts(lc, &l.key) {
                Ok(parts) => out.push(Arc::new(concurrency::ConcurrencyGuard {
                    name: Arc::from(l.name.value.as_str()),
                    parts,
                    v6_prefix: l.ipv6_prefix,
                    max: l.max.value,
                    mode: l.mode,
                    counts: state.in_flight.clone(),
                })),
                Err(e) => errors.push(e),
            }
        }
    };
    concurrency(&c.guards.concurrency_limits, &mut global, &mut errors);
    if let Some(f) = &c.ratelimit.quota_file {
        if let Err(m) = state.quotas.configure(Some(lc.resolve_path(&f.value))) {
            errors.push(lc.error_at(f, m));
        }
    }
    let quotas = |ls: &Option<Spanned<Vec<Spanned<rampart_config::Quota>>>>,
                  out: &mut Vec<Arc<dyn Guard>>,
                  errors: &mut Vec<ConfigError>| {
        let Some(ls) = ls else { return };
        for l in &ls.value {
            let l = &l.value;
            match compile_parts(lc, &l.key) {
                Ok(parts) => out.push(Arc::new(quota::QuotaGuard {
                    name: Arc::from(l.name.value.as_str()),
                    parts,
                    v6_prefix: l.ipv6_prefix,
                    limit: l.limit.value,
                    per: l.per,
                    mode: l.mode,
                    backend: match &store {
                        Store::Redis(r, f) => {
                            quota::Backend::Redis(r.clone(), *f, state.quotas.clone())
                        }
                        Store::Memory => quota::Backend::Memory(state.quotas.clone()),
                    },
                })),
                Err(e) => errors.push(e),
            }
        }
    };
    quotas(&c.guards.quotas, &mut global, &mut errors);
    let mut routes = Vec::new();
    for r in &c.routes {
        let mut chain = global.clone();
        concurrency(&r.value.concurrency_limits, &mut chain, &mut errors);
        quotas(&r.value.quotas, &mut chain, &mut errors);
        if let Some(ls) = &r.value.rate_limits {
            for l in &ls.value {
                match compile(lc, l, &store, state) {
                    Ok(g) => chain.push(Arc::new(g)),
                    Err(e) => errors.push(e),
                }
            }
        }
        routes.push(chain);
    }
    if errors.is_empty() {
        Ok(routes)
    } else {
        Err(errors)
    }
}
