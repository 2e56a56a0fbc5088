//! The request path: hardening checks, routing, the guard phases, the upstream call, and the
//! log phase. Nothing here knows what any guard protects against.

use crate::body::{InBody, ReqBody, RespBody};
use crate::guard::{Answer, Block, ConnInfo, Guard, Mode, RequestContext, Step, Verdict};
use crate::h1scan::Violation;
use crate::server::ConnActivity;
use crate::snapshot::{Route, RouteMatch, Snapshot};
use crate::tunnel::UpgradeSlot;
use crate::upstream::{InFlight, Proxied, UpstreamError};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use rampart_telemetry::log::{now_rfc3339, AccessRecord, EventRecord};
use rampart_telemetry::metrics::{GuardAction, Name, RouteStatus, UpstreamError as UpErrLabel};
use rampart_telemetry::{Action, LogSink, Metrics, SecurityEvent};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A guard's verdict for a phase: at once when ready, otherwise awaited. A macro, not an
/// `async fn` on `Step`: such a future, holding the verdict, would be moved around in the
/// request's future on every guard call.
macro_rules! settle {
    ($step:expr) => {
        match $step {
            Step::Ready(v) => v,
            Step::Pending(f) => f.await,
        }
    };
}

/// State shared by every connection: the current snapshot and the telemetry sinks.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub log: LogSink,
    ids: RequestIds,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>, log: LogSink) -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            log,
            ids: RequestIds::new(),
        }
    }
}

/// Request ids: 16 hex digits, unique per process, unpredictable across restarts.
struct RequestIds {
    seed: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        RequestIds {
            seed: u64::from_le_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }
    fn next(&self) -> String {
        // splitmix64 of seed + counter: distinct for every counter value.
        let mut z = self.seed.wrapping_add(
            self.counter
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Sixteen hex digits, without the formatting machinery.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 16];
        for (i, d) in id.iter_mut().enumerate() {
            *d = HEX[(z >> ((15 - i) * 4)) as usize & 0xf];
        }
        // Hex digits only: always UTF-8.
        String::from_utf8_lossy(&id).into_owned()
    }
}

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let b = v.as_bytes();
    if !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    {
        std::str::from_utf8(b).ok().map(str::to_string)
    } else {
        None
    }
}

/// Whether `n` is hop-by-hop (RFC 9110 7.6.1, plus `proxy-connection` and
/// `proxy-authorization`, meant for this hop). A string match: comparing `HeaderName`s one by
/// one costs more than the rest of the header edits.
pub(crate) fn is_hop_by_hop(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
    )
}

// Names built once: a `&str` key is parsed and matched against the standard names on every use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Common case: none present; one pass over the names instead of a lookup per name.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive` (the usual value) is removed with the fixed names below.
        .filter(|n| !n.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    // The fixed names that are present (usually one or two), not a removal per name.
    while let Some(n) = h.keys().find(|n| is_hop_by_hop(n)).cloned() {
        h.remove(&n);
    }
}

/// The target the upstream gets when it is not the client's: the normalized path (its route
/// prefix stripped when configured) and the client's query.
fn upstream_target(
    ctx: &mut RequestContext,
    route: &Route,
    uri: &http::Uri,
    metrics: &Metrics,
) -> Result<PathAndQuery, Answer> {
    let mut upstream_path = if route.strip_prefix {
        let rest = &ctx.path[route.prefix_len.min(ctx.path.len())..];
        if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        }
    } else {
        ctx.path.clone()
    };
    if let Some(q) = uri.query() {
        upstream_path.push('?');
        upstream_path.push_str(q);
    }
    PathAndQuery::try_from(upstream_path).map_err(|_| {
        core_refusal(
            ctx,
            metrics,
            StatusCode::BAD_REQUEST,
            "bad_target",
            "request target cannot be forwarded".into(),
        )
    })
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most untrusted address of X-Forwarded-For or, when a trusted proxy sent none, of the
/// `for=` parameters of `Forwarded` (RFC 7239). A hop that is not an address (`unknown`, an
/// obfuscated `_name`, garbage) ends the walk at the last address seen.
fn client_ip(snap: &Snapshot, peer: IpAddr, headers: &HeaderMap, peer_trusted: bool) -> IpAddr {
    if !peer_trusted {
        return peer;
    }
    let xff = headers.get_all(&X_FORWARDED_FOR);
    if xff.iter().next().is_some() {
        let hops = xff
            .iter()
            .rev()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.rsplit(','))
            .map(|item| item.trim().parse::<IpAddr>().ok());
        return right_most_untrusted(snap, peer, hops);
    }
    let hops = headers
        .get_all(header::FORWARDED)
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| split_quoted(v, b',').into_iter().rev())
        .map(forwarded_for);
    right_most_untrusted(snap, peer, hops)
}

/// Walk forwarding hops from the nearest: the first address that is not a trusted proxy, or
/// the last address seen when a hop is not an address or the hops run out.
fn right_most_untrusted(
    snap: &Snapshot,
    peer: IpAddr,
    hops: impl Iterator<Item = Option<IpAddr>>,
) -> IpAddr {
    let mut ip = peer;
    for hop in hops {
        let Some(a) = hop else { return ip };
        ip = a;
        if !snap.is_trusted(a) {
            return a;
        }
    }
    ip
}

/// Split at `sep` outside double quotes.
fn split_quoted(s: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The address in a `Forwarded` element's `for=` parameter: `192.0.2.60`, `"192.0.2.60:4711"`,
/// `"[2001:db8::1]"`, `"[2001:db8::1]:4711"`. None for `unknown`, obfuscated names, or no `for`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = split_quoted(element, b';').into_iter().find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let v = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if let Some(rest) = v.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(a) = v.parse::<std::net::Ipv4Addr>() {
        return Some(IpAddr::V4(a));
    }
    let (addr, port) = v.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port, or an obfuscated port (`_abc`), as RFC 7239 allows.
fn valid_port(p: &str) -> bool {
    p.parse::<u16>().is_ok()
        || p.strip_prefix('_').is_some_and(|o| {
            !o.is_empty()
                && o.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

fn problem(status: StatusCode, title: &str, request_id: &str) -> Answer {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "request_id": request_id,
    });
    Answer {
        status,
        headers: vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        body: Bytes::from(body.to_string()),
    }
}

fn block_answer(b: Block, request_id: &str) -> Answer {
    let title = b
        .title
        .or(b.status.canonical_reason())
        .unwrap_or("Request refused");
    let mut a = problem(b.status, title, request_id);
    if let Some(extra) = b.public {
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": b.status.as_u16(),
            "request_id": request_id,
        });
        if let Some(m) = body.as_object_mut() {
            for (k, v) in extra {
                m.entry(k).or_insert(v);
            }
        }
        a.body = Bytes::from(body.to_string());
    }
    a.headers.extend(b.headers);
    a
}

/// What a guard's verdict means for the request, after its mode is applied.
enum Outcome {
    Next,
    Stop(Answer),
}

fn apply(
    guard: &dyn Guard,
    verdict: Verdict,
    ctx: &mut RequestContext,
    metrics: &Metrics,
) -> Outcome {
    match verdict {
        Verdict::Continue => Outcome::Next,
        Verdict::Respond(a) => {
            ctx.deciding_guard = Some(guard.name());
            ctx.verdict = "answered";
            metrics
                .guard_decisions
                .get_or_create(&GuardAction {
                    guard: guard.name(),
                    action: "answered",
                })
                .inc();
            Outcome::Stop(a)
        }
        Verdict::Block(b) => {
            let monitor = guard.mode() == Mode::Monitor;
            let action = if monitor {
                Action::Monitored
            } else {
                Action::Blocked
            };
            metrics
                .guard_decisions
                .get_or_create(&GuardAction {
                    guard: guard.name(),
                    action: action.as_str(),
                })
                .inc();
            ctx.event(SecurityEvent {
                guard: guard.name(),
                rule: b.rule.clone(),
                message: b.message.clone(),
                action,
                status: Some(b.status.as_u16()),
                detail: b.detail.clone(),
            });
            if monitor {
                if ctx.verdict == "allowed" {
                    ctx.verdict = "monitored";
                }
                Outcome::Next
            } else {
                ctx.deciding_guard = Some(guard.name());
                ctx.verdict = "blocked";
                let id = ctx.request_id.clone();
                Outcome::Stop(block_answer(b, &id))
            }
        }
    }
}

/// A refusal by the core itself (protocol hardening, routing, upstream failure).
fn core_refusal(
    ctx: &mut RequestContext,
    metrics: &Metrics,
    status: StatusCode,
    rule: &'static str,
    message: String,
) -> Answer {
    ctx.deciding_guard = Some("core");
    ctx.verdict = if status.is_server_error() {
        "error"
    } else {
        "blocked"
    };
    if status.is_client_error() && status != StatusCode::NOT_FOUND {
        ctx.event(SecurityEvent {
            guard: "core",
            rule: rule.to_string(),
            message,
            action: Action::Blocked,
            status: Some(status.as_u16()),
            detail: serde_json::Value::Null,
        });
        metrics.reject(rule);
    }
    let id = ctx.request_id.clone();
    problem(status, status.canonical_reason().unwrap_or("Error"), &id)
}

fn violation_answer(ctx: &mut RequestContext, metrics: &Metrics, v: Violation) -> Answer {
    let status = StatusCode::from_u16(v.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut a = core_refusal(ctx, metrics, status, v.rule, v.message.to_string());
    a.headers
        .push((header::CONNECTION, HeaderValue::from_static("close")));
    a
}

/// Per-request facts the log phase needs besides the context.
struct Done {
    /// The request id as a header value, made once for the upstream and the client.
    rid_value: Option<HeaderValue>,
    shared: Arc<Shared>,
    snap: Arc<Snapshot>,
    route_idx: Option<usize>,
    ctx: RequestContext,
    start: Instant,
    /// When the upstream's response head arrived (set by `forward`).
    head_ready: Option<Instant>,
    upstream_ms: Option<f64>,
    upstream: Option<Arc<str>>,
    bytes_in: Arc<AtomicU64>,
    status: u16,
    protocol: &'static str,
    activity: Arc<ConnActivity>,
}

impl Done {
    fn finish(mut self: Box<Self>, bytes_out: u64, complete: bool) {
        self.activity.request_done();
        let snap = self.snap.clone();
        let guards = guard_chain(&snap, self.route_idx);
        for g in guards {
            g.on_log(&mut self.ctx, self.status);
        }
        let m = &self.shared.metrics;
        let count = || {
            let route_label = self.ctx.route.clone().unwrap_or_else(|| Arc::from("-"));
            m.requests
                .get_or_create(&RouteStatus {
                    route: Name(route_label),
                    status: self.status,
                })
                .clone()
        };
        let cached = self
            .route_idx
            .and_then(|i| snap.routes.get(i))
            .and_then(|r| r.status_counters.get(self.status, count));
        match cached {
            Some(c) => c.inc(),
            None => count().inc(),
        };
        let log = &self.shared.log;
        if !log.enabled() {
            return;
        }
        let ts = now_rfc3339();
        let client_ip = self.ctx.client_ip.to_string();
        let method = self.ctx.method.as_str();
        for e in &self.ctx.events {
            log.write(&EventRecord {
                kind: "security_event",
                ts: ts.clone(),
                request_id: &self.ctx.request_id,
                client_ip: client_ip.clone(),
                route: self.ctx.route.as_deref(),
                method,
                path: &self.ctx.path,
                event: e,
            });
        }
        log.write(&AccessRecord {
            kind: "access",
            ts,
            request_id: &self.ctx.request_id,
            client_ip,
            method,
            path: &self.ctx.path,
            route: self.ctx.route.as_deref(),
            status: self.status,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            duration_ms: self.start.elapsed().as_secs_f64() * 1000.0,
            upstream_ms: self.upstream_ms,
            upstream: self.upstream.as_deref(),
            verdict: if complete || self.ctx.verdict != "allowed" {
                self.ctx.verdict
            } else {
                "aborted"
            },
            guard: self.ctx.deciding_guard,
            protocol: self.protocol,
            subject: self.ctx.identity.as_ref().map(|i| i.subject.as_str()),
            operation: self.ctx.operation.as_deref(),
            auth: self.ctx.identity.as_ref().map(|i| i.method),
        });
    }
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        _ => "other",
    }
}

/// Entry point for every request on every connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    violation: Option<Violation>,
    upgrade: Option<Arc<UpgradeSlot>>,
    activity: Arc<ConnActivity>,
    req: Request<InBody>,
) -> Result<Response<RespBody>, Infallible> {
    activity.request_started();
    let start = Instant::now();
    let snap = shared.snapshot.load_full();
    let (mut parts, body) = req.into_parts();
    let peer_ip = conn.peer.ip();
    let peer_trusted = snap.is_trusted(peer_ip);
    let request_id = peer_trusted
        .then(|| {
            parts
                .headers
                .get(&snap.request_id_header)
                .and_then(valid_request_id)
        })
        .flatten()
        .unwrap_or_else(|| shared.ids.next());
    let client = client_ip(&snap, peer_ip, &parts.headers, peer_trusted);
    let bytes_in = Arc::new(AtomicU64::new(0));
    let rid_value = HeaderValue::from_str(&request_id).ok();
    // Boxed: it moves through the answer paths into the response body's log callback, a
    // pointer instead of a copy of the whole request context at each step. The context is
    // built in the box's expression: a named local would keep its room in this future.
    let mut done = Box::new(Done {
        rid_value,
        shared: shared.clone(),
        snap: snap.clone(),
        route_idx: None,
        ctx: RequestContext::new(request_id, client, conn.clone(), parts.method.clone()),
        start,
        head_ready: None,
        upstream_ms: None,
        upstream: None,
        bytes_in: bytes_in.clone(),
        status: 0,
        protocol: protocol_name(parts.version),
        activity,
    });
    let metrics = &shared.metrics;

    // 1. Protocol hardening: the raw-head scan, then request-target and path checks.
    // Until the path is normalized, refusals log the raw one (set only on those paths, so an
    // accepted request allocates its path once).
    if let Some(v) = violation {
        done.ctx.path = parts.uri.path().to_string();
        let a = violation_answer(&mut done.ctx, metrics, v);
        return Ok(finish_answer(done, a));
    }
    let host = match request_host(&parts) {
        Ok(h) => h,
        Err((rule, msg)) => {
            done.ctx.path = parts.uri.path().to_string();
            let mut a = core_refusal(
                &mut done.ctx,
                metrics,
                StatusCode::BAD_REQUEST,
                rule,
                msg.into(),
            );
            a.headers
                .push((header::CONNECTION, HeaderValue::from_static("close")));
            return Ok(finish_answer(done, a));
        }
    };
    let path = match crate::path::normalize(parts.uri.path(), &snap.path_policy) {
        Ok(p) => p,
        Err(e) => {
            done.ctx.path = parts.uri.path().to_string();
            let a = core_refusal(
                &mut done.ctx,
                metrics,
                StatusCode::BAD_REQUEST,
                e.rule(),
                e.reason().into(),
            );
            return Ok(finish_answer(done, a));
        }
    };
    done.ctx.path = path;

    // 2. Routing.
    let route_idx = match snap.route(&host, &done.ctx.path, &parts.method) {
        RouteMatch::Found(r) => snap.routes.iter().position(|x| std::ptr::eq(x, r)),
        RouteMatch::MethodNotAllowed(allowed) => {
            let mut a = core_refusal(
                &mut done.ctx,
                metrics,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_routed",
                format!("no route accepts {}", parts.method),
            );
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&allow) {
                a.headers.push((header::ALLOW, v));
            }
            return Ok(finish_answer(done, a));
        }
        RouteMatch::NotFound => None,
    };
    let Some(route_idx) = route_idx else {
        let a = core_refusal(
            &mut done.ctx,
            metrics,
            StatusCode::NOT_FOUND,
            "no_route",
            "no route matches".into(),
        );
        return Ok(finish_answer(done, a));
    };
    done.route_idx = Some(route_idx);
    let route = &snap.routes[route_idx];
    done.ctx.route = Some(route.name.clone());
    // A WebSocket handshake on a route that passes them (HTTP/1.1 connections only).
    let websocket = upgrade.filter(|_| {
        route.websocket
            && crate::tunnel::websocket_request(&parts.method, parts.version, &parts.headers)
    });

    // 3. Guards and the upstream call, within the request timeout: `forward` keeps to the
    // deadline (one timer at a time, the earlier of it and the upstream response timeout).
    let deadline = crate::clock::deadline(start, snap.request_timeout);
    let result = forward(
        route,
        &mut done,
        &mut parts,
        body,
        host,
        websocket.is_some(),
        deadline,
    )
    .await;
    // The upstream's response head is when the request's own work ended; a request that
    // never reached the upstream reads the clock here.
    let elapsed = (done.head_ready.unwrap_or_else(Instant::now) - start).as_secs_f64();
    route.duration.observe(elapsed);
    let finish = match result {
        Ok((proxied, body_phase)) => finish_upstream(done, proxied, body_phase, websocket),
        Err(a) => Finish::Now(finish_answer(done, a)),
    };
    Ok(match finish {
        Finish::Now(r) => r,
        Finish::Inspect(f) => f.await,
    })
}

/// The Host the request is for (lower case, no port); checks absolute-form targets.
fn request_host(parts: &http::request::Parts) -> Result<String, (&'static str, &'static str)> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let header_host = hosts.next().and_then(|h| h.to_str().ok());
    let duplicate = hosts.next().is_some();
    let host: &str = match (parts.version, parts.uri.authority(), header_host) {
        (Version::HTTP_2, Some(a), _) => a.host(),
        (Version::HTTP_2, None, Some(h)) => h,
        (_, Some(a), Some(h)) => {
            // Absolute-form: the target's authority must be the Host.
            if !a.as_str().eq_ignore_ascii_case(h) {
                return Err((
                    "absolute_form_host_mismatch",
                    "absolute-form target names a different host than the Host header",
                ));
            }
            a.host()
        }
        (_, Some(_), None) => return Err(("missing_host", "request has no Host header")),
        (_, None, Some(h)) => h,
        (Version::HTTP_10, None, None) => "",
        (_, None, None) => return Err(("missing_host", "request has no Host header")),
    };
    if duplicate {
        return Err(("duplicate_host", "more than one Host header"));
    }
    let host = match host.rfind(':') {
        Some(i) if !host.ends_with(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &host[..i]
        }
        _ => host,
    };
    // One allocation: the lower-cased copy.
    Ok(host.to_ascii_lowercase())
}

fn run_response_guards(
    guards: &[Arc<dyn Guard>],
    resp: &mut http::response::Parts,
    ctx: &mut RequestContext,
    metrics: &Metrics,
) -> Option<Answer> {
    for g in guards {
        let v = g.on_response_headers(resp, ctx);
        if let Outcome::Stop(a) = apply(g.as_ref(), v, ctx, metrics) {
            return Some(a);
        }
    }
    None
}

fn answer_parts(a: Answer) -> (http::response::Parts, Bytes) {
    let mut r = Response::new(());
    *r.status_mut() = a.status;
    for (k, v) in a.headers {
        r.headers_mut().append(k, v);
    }
    let (p, _) = r.into_parts();
    (p, a.body)
}

/// The guards a request runs through: its route's chain, or the chain for unrouted requests.
fn guard_chain(snap: &Snapshot, route_idx: Option<usize>) -> &[Arc<dyn Guard>] {
    match route_idx {
        Some(i) => &snap.routes[i].guards,
        None => &snap.unrouted_guards,
    }
}

/// Send a response the gateway produced (block, preflight, error).
fn finish_answer(mut done: Box<Done>, a: Answer) -> Response<RespBody> {
    let (mut parts, body) = answer_parts(a);
    let snap = done.snap.clone();
    let guards = guard_chain(&snap, done.route_idx);
    let metrics = done.shared.metrics.clone();
    // Response guards still run (security headers, CORS); a block here cannot replace a block.
    let _ = run_response_guards(guards, &mut parts, &mut done.ctx, &metrics);
    seal(done, parts, RespBody::full(body))
}

fn seal(
    mut done: Box<Done>,
    mut parts: http::response::Parts,
    body: RespBody,
) -> Response<RespBody> {
    if let Some(v) = done.rid_value.clone() {
        parts.headers.insert(done.snap.request_id_header.clone(), v);
    }
    done.status = parts.status.as_u16();
    let body = body.on_done(Box::new(move |sent, complete| done.finish(sent, complete)));
    Response::from_parts(parts, body)
}

/// What `forward` hands back for the response phases.
struct BodyPhase;

/// The request-header and request-body phases: the guards' verdicts, and the body the
/// upstream gets (buffered when a guard asked to see it, else streamed).
async fn request_phases(
    route: &Route,
    ctx: &mut RequestContext,
    parts: &mut http::request::Parts,
    mut body: InBody,
    metrics: &Metrics,
    bytes_in: &Arc<AtomicU64>,
) -> Result<ReqBody, Answer> {
    // Request-header phase.
    for g in &route.guards {
        let v = settle!(g.on_request_headers(parts, ctx));
        if let Outcome::Stop(a) = apply(g.as_ref(), v, ctx, metrics) {
            return Err(a);
        }
    }

    // Request-body phase: buffer only if a guard asks to see the body.
    let inspect = route
        .guards
        .iter()
        .filter_map(|g| g.request_body_limit(parts, ctx))
        .max();
    let no_body = body.is_end_stream();
    let req_body = if no_body {
        // Guards that asked for the body still get their body phase, with an empty body.
        if inspect.is_some() {
            let mut empty = Bytes::new();
            for g in &route.guards {
                if g.request_body_limit(parts, ctx).is_none() {
                    continue;
                }
                let v = settle!(g.on_request_body(parts, &mut empty, ctx));
                if let Outcome::Stop(a) = apply(g.as_ref(), v, ctx, metrics) {
                    return Err(a);
                }
            }
        }
        ReqBody::Empty
    } else if let Some(inspect) = inspect {
        let limit = ctx
            .max_request_body
            .map(|m| m.min(inspect as u64))
            .unwrap_or(inspect as u64);
        // The length the client declared (Content-Length), when it did.
        let declared = body.size_hint().exact();
        let collected = http_body_util::Limited::new(body, limit as usize)
            .collect()
            .await;
        let bytes = match collected {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return Err(core_refusal(
                        ctx,
                        metrics,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("request body exceeds {limit} bytes"),
                    ));
                }
                return Err(core_refusal(
                    ctx,
                    metrics,
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("request body could not be read: {e}"),
                ));
            }
        };
        bytes_in.store(bytes.len() as u64, Ordering::Relaxed);
        let mut bytes = bytes;
        for g in &route.guards {
            let v = settle!(g.on_request_body(parts, &mut bytes, ctx));
            if let Outcome::Stop(a) = apply(g.as_ref(), v, ctx, metrics) {
                return Err(a);
            }
        }
        // The upstream gets the buffered body with its length: a chunked body, or one a guard
        // rewrote, gets a new Content-Length; one that arrived with its length keeps it.
        if declared != Some(bytes.len() as u64) {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        ReqBody::Full(Some(bytes))
    } else {
        // Streaming. A chunked body's first frame is read before the upstream is contacted,
        // so a malformed chunk never reaches it.
        let mut first = None;
        if body.size_hint().exact().is_none() {
            match body.frame().await {
                None => {}
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                        if let Some(l) = ctx.max_request_body {
                            if d.len() as u64 > l {
                                return Err(core_refusal(
                                    ctx,
                                    metrics,
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                    "body_too_large",
                                    format!("request body exceeds {l} bytes"),
                                ));
                            }
                        }
                    }
                    first = Some(f);
                }
                Some(Err(e)) => {
                    let mut a = core_refusal(
                        ctx,
                        metrics,
                        StatusCode::BAD_REQUEST,
                        "bad_chunk",
                        format!("malformed request body: {e}"),
                    );
                    a.headers
                        .push((header::CONNECTION, HeaderValue::from_static("close")));
                    return Err(a);
                }
            }
        }
        ReqBody::Stream {
            first,
            inner: body,
            seen: bytes_in.clone(),
            limit: ctx.max_request_body,
        }
    };

    Ok(req_body)
}

async fn forward(
    route: &Route,
    done: &mut Done,
    parts: &mut http::request::Parts,
    body: InBody,
    host: String,
    websocket: bool,
    deadline: tokio::time::Instant,
) -> Result<(Proxied, BodyPhase), Answer> {
    let metrics = done.shared.metrics.clone();
    let snap = done.snap.clone();
    let rid_value = done.rid_value.clone();
    let ctx = &mut done.ctx;

    // The request's phases before the upstream, within the request's deadline (a timer is
    // armed only if one of them has to wait: a guard's lookup, a body still arriving).
    let phases = request_phases(route, ctx, parts, body, &metrics, &done.bytes_in);
    let req_body = match tokio::time::timeout_at(deadline, phases).await {
        Ok(r) => r?,
        Err(_) => return Err(request_timeout(route, ctx, &metrics)),
    };

    // Headers for the upstream.
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    if websocket {
        crate::tunnel::restore_upgrade(&mut headers);
    }
    let peer = ctx.conn.peer.ip();
    let peer_s = ctx.conn.peer_header.to_str().unwrap_or_default();
    let trusted = snap.is_trusted(peer);
    let proto = if ctx.is_tls() { "https" } else { "http" };
    let prev_xff = if trusted {
        headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok())
    } else {
        None
    };
    let xff = match prev_xff {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {peer_s}")).ok(),
        None => Some(ctx.conn.peer_header.clone()),
    };
    // The Host the client asked for: its Host header, else the request target's authority,
    // else the routed host.
    let host_header = headers.get(header::HOST);
    let had_host = host_header.is_some();
    let host_value = match host_header.filter(|h| h.to_str().is_ok()) {
        Some(h) => Some(h.clone()),
        None => {
            HeaderValue::from_str(&parts.uri.authority().map(|a| a.to_string()).unwrap_or(host))
                .ok()
        }
    };
    let host_str = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    // Forwarded (RFC 7239): `for=ip;proto=..;host="..."`, the IPv6 form quoted and bracketed.
    let mut element = String::with_capacity(32 + peer_s.len() + host_str.len());
    element.push_str("for=");
    if peer.is_ipv6() {
        element.push_str("\"[");
        element.push_str(peer_s);
        element.push_str("]\"");
    } else {
        element.push_str(peer_s);
    }
    element.push_str(";proto=");
    element.push_str(proto);
    element.push_str(";host=\"");
    // A quoted-string holds no `"` or `\\` unescaped: those are left out (a valid Host has none).
    if host_str.bytes().any(|b| b == b'"' || b == b'\\') {
        element.extend(host_str.chars().filter(|c| !matches!(c, '"' | '\\')));
    } else {
        element.push_str(host_str);
    }
    element.push('"');
    let prev_forwarded = if trusted {
        headers.get(header::FORWARDED).and_then(|v| v.to_str().ok())
    } else {
        None
    };
    let forwarded = match prev_forwarded {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        if let Some(v) = &host_value {
            headers.insert(X_FORWARDED_HOST, v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
    if !had_host {
        if let Some(v) = host_value {
            headers.insert(header::HOST, v);
        }
    }
    if let Some(v) = rid_value {
        headers.insert(snap.request_id_header.clone(), v);
    }

    // The path the upstream sees: the normalized one. Usually that is the path the client
    // sent, and its target is passed on as it is (not built and parsed again).
    let same_target = !route.strip_prefix && parts.uri.path() == ctx.path;
    let pq = match parts.uri.path_and_query() {
        Some(pq) if same_target => pq.clone(),
        _ => upstream_target(ctx, route, &parts.uri, &metrics)?,
    };

    let t0 = Instant::now();
    let sent = route
        .upstream
        .send(
            parts.method.clone(),
            pq,
            headers,
            req_body,
            websocket,
            crate::upstream::Timing {
                started: t0,
                deadline,
            },
        )
        .await;
    let t1 = Instant::now();
    done.head_ready = Some(t1);
    let up_secs = (t1 - t0).as_secs_f64();
    done.upstream_ms = Some(up_secs * 1000.0);
    let ctx = &mut done.ctx;
    route.upstream_duration.observe(up_secs);
    match sent {
        Ok(p) => {
            done.upstream = Some(p.target.clone());
            Ok((p, BodyPhase))
        }
        Err(UpstreamError::RequestTimeout) => Err(request_timeout(route, ctx, &metrics)),
        Err(e) => {
            metrics
                .upstream_errors
                .get_or_create(&UpErrLabel {
                    upstream: Name(route.upstream.name.clone()),
                    kind: e.kind(),
                })
                .inc();
            // Client-side failures are the client's; the rest is logged at most once a second
            // per upstream (an outage must not turn into a log flood; the metric counts all).
            if !matches!(
                e,
                UpstreamError::BodyTooLarge(_) | UpstreamError::ClientBody(_)
            ) && route.upstream.should_log_failure()
            {
                tracing::warn!(upstream = %route.upstream.name, request_id = %ctx.request_id, error = ?e, "upstream request failed (further failures this second are only counted)");
            }
            Err(upstream_failure(e, ctx, &metrics))
        }
    }
}

/// The request's deadline (`timeouts.request`) passed before the upstream's response head.
fn request_timeout(route: &Route, ctx: &mut RequestContext, metrics: &Metrics) -> Answer {
    metrics
        .upstream_errors
        .get_or_create(&UpErrLabel {
            upstream: Name(route.upstream.name.clone()),
            kind: "request_timeout",
        })
        .inc();
    core_refusal(
        ctx,
        metrics,
        StatusCode::GATEWAY_TIMEOUT,
        "request_timeout",
        "request did not complete within the request timeout".into(),
    )
}

/// The answer for a failed upstream call. Failures on the client's side (its body) are
/// refusals with a security event; the rest are gateway errors.
fn upstream_failure(e: UpstreamError, ctx: &mut RequestContext, metrics: &Metrics) -> Answer {
    let close = (header::CONNECTION, HeaderValue::from_static("close"));
    let (status, retry_after) = match e {
        UpstreamError::BodyTooLarge(n) => {
            // The rest of the body was not read: the connection cannot be reused.
            let mut a = core_refusal(
                ctx,
                metrics,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body exceeds {n} bytes"),
            );
            a.headers.push(close);
            return a;
        }
        UpstreamError::ClientBody(m) => {
            let mut a = core_refusal(
                ctx,
                metrics,
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("request body failed: {m}"),
            );
            a.headers.push(close);
            return a;
        }
        UpstreamError::Connect(_) | UpstreamError::Protocol(_) => (StatusCode::BAD_GATEWAY, None),
        UpstreamError::Timeout | UpstreamError::RequestTimeout => {
            (StatusCode::GATEWAY_TIMEOUT, None)
        }
        UpstreamError::AllDown(secs) => (StatusCode::SERVICE_UNAVAILABLE, Some(secs)),
        UpstreamError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
    };
    ctx.verdict = "error";
    ctx.deciding_guard = Some("core");
    let mut a = problem(
        status,
        status.canonical_reason().unwrap_or("Error"),
        &ctx.request_id,
    );
    if let Some(secs) = retry_after {
        a.headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    a
}

/// The response for the client: ready now, or after a response guard has seen the body.
// The common variant stays unboxed: it is a return value, and boxing it would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Finish {
    Now(Response<RespBody>),
    /// Boxed: buffering a body is the uncommon path, and its state would otherwise make every
    /// request's future larger.
    Inspect(std::pin::Pin<Box<dyn std::future::Future<Output = Response<RespBody>> + Send>>),
}

fn finish_upstream(
    mut done: Box<Done>,
    proxied: Proxied,
    _phase: BodyPhase,
    upgrade: Option<Arc<UpgradeSlot>>,
) -> Finish {
    let Proxied {
        response,
        target: _,
        in_flight,
    } = proxied;
    let (mut parts, body) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Finish::Now(switch_protocols(done, parts, in_flight, upgrade));
    }
    strip_hop_by_hop(&mut parts.headers);
    let snap = done.snap.clone();
    let metrics = done.shared.metrics.clone();
    let guards = guard_chain(&snap, done.route_idx);
    if let Some(a) = run_response_guards(guards, &mut parts, &mut done.ctx, &metrics) {
        drop(in_flight);
        return Finish::Now(finish_answer(done, a));
    }
    let inspect = guards
        .iter()
        .filter_map(|g| g.response_body_limit(&parts, &done.ctx))
        .max();
    let Some(limit) = inspect else {
        let body = RespBody::upstream(body).hold(in_flight);
        return Finish::Now(seal(done, parts, body));
    };
    Finish::Inspect(Box::pin(inspect_response_body(
        done, parts, body, limit, in_flight,
    )))
}

/// A response guard asked for the body: buffer it within the limit, run the body phase.
async fn inspect_response_body(
    mut done: Box<Done>,
    mut parts: http::response::Parts,
    body: crate::body::UpBody,
    limit: usize,
    in_flight: InFlight,
) -> Response<RespBody> {
    let snap = done.snap.clone();
    let metrics = done.shared.metrics.clone();
    let guards = guard_chain(&snap, done.route_idx);
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            let a = core_refusal(
                &mut done.ctx,
                &metrics,
                StatusCode::BAD_GATEWAY,
                "response_too_large",
                format!("upstream response larger than the {limit}-byte inspection limit"),
            );
            return finish_answer(done, a);
        }
    };
    let mut in_flight = in_flight;
    in_flight.completed();
    drop(in_flight);
    let mut bytes = bytes;
    for g in guards {
        let v = g.on_response_body(&mut parts, &mut bytes, &mut done.ctx);
        if let Outcome::Stop(a) = apply(g.as_ref(), v, &mut done.ctx, &metrics) {
            return finish_answer(done, a);
        }
    }
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    seal(done, parts, RespBody::full(bytes))
}

/// The upstream accepted a WebSocket handshake: answer the client with its 101 and leave the
/// upstream connection to the tunnel the connection driver starts once the 101 is written.
fn switch_protocols(
    mut done: Box<Done>,
    mut parts: http::response::Parts,
    mut in_flight: InFlight,
    upgrade: Option<Arc<UpgradeSlot>>,
) -> Response<RespBody> {
    // The upstream connection now belongs to the tunnel, never to the pool.
    in_flight.detach();
    drop(in_flight);
    let metrics = done.shared.metrics.clone();
    let upstream = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let (Some(slot), Some(upstream)) = (upgrade, upstream) else {
        // A 101 the client did not ask for (or the route does not pass upgrades).
        done.ctx.verdict = "error";
        done.ctx.deciding_guard = Some("core");
        let status = StatusCode::BAD_GATEWAY;
        let a = problem(status, "Bad Gateway", &done.ctx.request_id);
        return finish_answer(done, a);
    };
    strip_hop_by_hop(&mut parts.headers);
    crate::tunnel::restore_upgrade(&mut parts.headers);
    let snap = done.snap.clone();
    let guards = guard_chain(&snap, done.route_idx);
    if let Some(a) = run_response_guards(guards, &mut parts, &mut done.ctx, &metrics) {
        return finish_answer(done, a);
    }
    // A 101 has no body: length headers (a guard may add them for ordinary responses) go.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    slot.set(upstream);
    seal(done, parts, RespBody::full(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::{forwarded_for, is_hop_by_hop, split_quoted, strip_hop_by_hop, RequestIds};
    use http::{header, HeaderMap, HeaderName, HeaderValue};
    use std::net::IpAddr;

    #[test]
    fn request_ids_are_sixteen_lower_hex_digits_and_distinct() {
        let ids = RequestIds {
            seed: 0x0123_4567_89ab_cdef,
            counter: std::sync::atomic::AtomicU64::new(0),
        };
        let all: std::collections::HashSet<String> = (0..1000).map(|_| ids.next()).collect();
        assert_eq!(all.len(), 1000);
        for id in &all {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
            // The digits are the 64-bit value, most significant first.
            assert_eq!(
                format!("{:016x}", u64::from_str_radix(id, 16).unwrap()),
                *id
            );
        }
        // Leading zeros are kept: counter values whose hash is small still give 16 digits.
        assert!(all.iter().any(|id| id.starts_with('0')));
    }

    /// The names RFC 9110 7.6.1 makes hop-by-hop, and the two proxy ones meant for this hop.
    static HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ];

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Foo"),
            ("connection", "Upgrade"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("content-type", "text/plain"),
            ("x-bar", "2"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "x-bar"]);
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn hop_by_hop_match_agrees_with_the_list() {
        for n in HOP_BY_HOP.iter() {
            assert!(is_hop_by_hop(n), "{n}");
        }
        for n in [
            header::HOST,
            header::CONTENT_LENGTH,
            header::AUTHORIZATION,
            HeaderName::from_static("x-connection"),
            HeaderName::from_static("tes"),
        ] {
            assert!(!is_hop_by_hop(&n), "{n}");
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_parameters() {
        assert_eq!(forwarded_for("for=192.0.2.60"), ip("192.0.2.60"));
        assert_eq!(
            forwarded_for("proto=https;For=\"192.0.2.60:4711\";by=203.0.113.43"),
            ip("192.0.2.60")
        );
        assert_eq!(
            forwarded_for("for=\"[2001:db8:cafe::17]\""),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            forwarded_for(" for = \"[2001:db8:cafe::17]:4711\" "),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(forwarded_for("for=\"192.0.2.60:_p1\""), ip("192.0.2.60"));
        assert_eq!(forwarded_for("for=unknown"), None);
        assert_eq!(forwarded_for("for=_hidden"), None);
        assert_eq!(forwarded_for("by=192.0.2.1"), None);
        assert_eq!(forwarded_for("for=\"[2001:db8::1]x\""), None);
        assert_eq!(forwarded_for("for=192.0.2.60:99999"), None);
        assert_eq!(
            forwarded_for("for=2001:db8::1"),
            None,
            "IPv6 must be bracketed"
        );
    }

    #[test]
    fn quoted_separators_do_not_split() {
        assert_eq!(
            split_quoted("for=a;host=\"x,y\", for=b", b','),
            vec!["for=a;host=\"x,y\"", " for=b"]
        );
        assert_eq!(
            split_quoted("a=\"q\\\"\",b", b','),
            vec!["a=\"q\\\"\"", "b"]
        );
    }
}
