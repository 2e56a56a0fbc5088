//! Upstreams: a keep-alive connection pool per target, round-robin, passive health checks,
//! a cap on in-flight requests, and a retry when a request was never sent (connect failure, or
//! a pooled connection that closed under us).
//!
//! The pool is Rampart's own. Plain-TCP HTTP/1.1 targets use Rampart's own client
//! ([`crate::h1client`]): the request's task writes the request and reads the response on the
//! pooled socket. TLS targets, HTTP/2 and upgrades use hyper's connection API: a connection is
//! checked out, the request is offered with `try_send_request` (which hands the request back if
//! it was not written). Either way a connection returns to the pool only once the response body
//! has been read to the end.

use crate::body::{BodyError, ReqBody, UpBody};
use crate::clock::coarse_ms;
use crate::h1client;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the process started (a cheap monotonic clock for atomics).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The clock readings an upstream call starts from.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Taken just before the call: the response timeout counts from here.
    pub started: Instant,
    /// The request's own deadline (`timeouts.request`).
    pub deadline: tokio::time::Instant,
}

/// One upstream exchange in flight (see [`Upstream::send`]).
pub type Sending<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Proxied, UpstreamError>> + Send + 'a>,
>;

/// Idle HTTP/1.1 connections of one target.
struct Idle {
    conns: Mutex<Vec<(http1::SendRequest<ReqBody>, u64)>>,
    max: usize,
}

struct Target {
    authority: Authority,
    /// TLS to this target: the connector and the name to verify.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// `host:port` to connect to.
    connect_to: String,
    label: Arc<str>,
    fails: AtomicU32,
    ejected_until: AtomicU64,
    idle: Arc<Idle>,
    /// Idle connections of Rampart's own HTTP/1.1 client (plain TCP only).
    lean: Arc<h1client::Pool>,
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
}

pub struct Upstream {
    pub name: Arc<str>,
    targets: Vec<Target>,
    next: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout_ms: u64,
    fail_threshold: u32,
    eject_for: Duration,
    http2: bool,
    /// Every target is plain-TCP HTTP/1.1: requests go through Rampart's own client.
    lean: bool,
    /// When a failure was last logged (ms), to log at most one per second.
    last_failure_log: AtomicU64,
}

/// Why a request could not be proxied.
#[derive(Debug)]
pub enum UpstreamError {
    /// Connection refused or reset before the request was sent: 502.
    Connect(String),
    /// Connect or response timeout: 504.
    Timeout,
    /// The request's own deadline (`timeouts.request`) passed first: 504.
    RequestTimeout,
    /// Every target is ejected: 503 with Retry-After (seconds).
    AllDown(u64),
    /// Too many requests in flight to this upstream: 503.
    Overloaded,
    /// The client's body went over the limit while streaming: 413.
    BodyTooLarge(u64),
    /// The client's body failed (malformed chunking, reset): 400.
    ClientBody(String),
    /// The upstream broke the protocol or closed early: 502.
    Protocol(String),
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::RequestTimeout => "request_timeout",
            UpstreamError::AllDown(_) => "unavailable",
            UpstreamError::Overloaded => "overloaded",
            UpstreamError::BodyTooLarge(_) => "body_too_large",
            UpstreamError::ClientBody(_) => "client_body",
            UpstreamError::Protocol(_) => "protocol",
        }
    }
}

/// Held while a request is in flight to an upstream; returns the connection to the pool when
/// the response completed.
pub struct InFlight {
    count: Arc<AtomicUsize>,
    conn: Option<(http1::SendRequest<ReqBody>, Arc<Idle>)>,
}

impl InFlight {
    /// The connection was taken over (an upgrade): it never returns to the pool.
    pub fn detach(&mut self) {
        self.conn = None;
    }

    /// The response body was read to its end: the connection may be reused.
    pub fn completed(&mut self) {
        if let Some((sender, idle)) = self.conn.take() {
            if !sender.is_closed() {
                if let Ok(mut v) = idle.conns.lock() {
                    if v.len() < idle.max {
                        v.push((sender, coarse_ms()));
                    }
                }
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        // A connection still held here had its response abandoned: dropping it closes it.
    }
}

/// What the upstream answered, and which target answered.
pub struct Proxied {
    pub response: Response<UpBody>,
    pub target: Arc<str>,
    pub in_flight: InFlight,
}

fn find_cause<'a, T: std::error::Error + 'static>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    loop {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        e = e.source()?;
    }
}

enum Conn {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

enum ConnectError {
    Refused(String),
    Timeout,
}

impl Upstream {
    pub fn new(
        lc: &rampart_config::LoadedConfig,
        cfg: &rampart_config::Upstream,
    ) -> Result<Self, rampart_config::ConfigError> {
        let connector = match &cfg.tls {
            Some(t) => Some(crate::tls::upstream_connector(lc, t, cfg.http2)?),
            None => None,
        };
        let mut targets = Vec::new();
        for t in &cfg.targets {
            let https = t.value.starts_with("https://");
            let rest = t
                .value
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let authority: Authority = rest.parse().map_err(|e| {
                lc.error_at(t, format!("invalid upstream target `{}`: {e}", t.value))
            })?;
            let connect_to = match authority.port_u16() {
                Some(_) => authority.as_str().to_string(),
                None => format!("{}:{}", authority.host(), if https { 443 } else { 80 }),
            };
            let tls = match (&connector, https) {
                (Some((c, name)), true) => {
                    let name =
                        match name {
                            Some(n) => n.clone(),
                            None => rustls::pki_types::ServerName::try_from(
                                authority.host().to_string(),
                            )
                            .map_err(|e| {
                                lc.error_at(t, format!("target host is not a valid TLS name: {e}"))
                            })?,
                        };
                    Some((c.clone(), name))
                }
                _ => None,
            };
            targets.push(Target {
                tls,
                label: Arc::from(authority.as_str()),
                authority,
                connect_to,
                fails: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                idle: Arc::new(Idle {
                    conns: Mutex::new(Vec::new()),
                    max: cfg.pool_max_idle_per_target,
                }),
                lean: Arc::new(h1client::Pool::new(
                    cfg.pool_max_idle_per_target,
                    cfg.pool_idle_timeout.0.as_millis() as u64,
                )),
                h2: Mutex::new(None),
            });
        }
        let lean = !cfg.http2 && targets.iter().all(|t| t.tls.is_none());
        Ok(Upstream {
            lean,
            name: Arc::from(cfg.name.value.as_str()),
            targets,
            next: AtomicUsize::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: cfg.max_in_flight,
            connect_timeout: cfg.connect_timeout.0,
            response_timeout: cfg.response_timeout.0,
            idle_timeout_ms: cfg.pool_idle_timeout.0.as_millis() as u64,
            fail_threshold: cfg.health.failures.max(1),
            eject_for: cfg.health.eject_for.0,
            http2: cfg.http2,
            last_failure_log: AtomicU64::new(0),
        })
    }

    /// True at most once a second: whether to log this failure.
    pub fn should_log_failure(&self) -> bool {
        let now = coarse_ms();
        let last = self.last_failure_log.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_failure_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Pick the next healthy target, skipping `skip`.
    fn pick(&self, skip: Option<usize>) -> Result<usize, UpstreamError> {
        let n = self.targets.len();
        let now = coarse_ms();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        for i in 0..n {
            let idx = (start + i) % n;
            if Some(idx) == skip {
                continue;
            }
            if self.targets[idx].ejected_until.load(Ordering::Relaxed) <= now {
                return Ok(idx);
            }
        }
        let soonest = self
            .targets
            .iter()
            .map(|t| t.ejected_until.load(Ordering::Relaxed))
            .min()
            .unwrap_or(now);
        Err(UpstreamError::AllDown(
            soonest.saturating_sub(now).div_ceil(1000).max(1),
        ))
    }

    fn failed(&self, idx: usize) {
        let t = &self.targets[idx];
        let f = t.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if f >= self.fail_threshold {
            t.ejected_until.store(
                coarse_ms() + self.eject_for.as_millis() as u64,
                Ordering::Relaxed,
            );
            t.fails.store(0, Ordering::Relaxed);
            if self.should_log_failure() {
                tracing::warn!(upstream = %self.name, target = %t.authority, "target ejected after connect failures");
            }
        }
    }

    fn succeeded(&self, idx: usize) {
        let t = &self.targets[idx];
        if t.fails.load(Ordering::Relaxed) != 0 {
            t.fails.store(0, Ordering::Relaxed);
        }
    }

    /// A pooled connection, if a live one is idle.
    fn pooled(&self, idx: usize) -> Option<Conn> {
        let t = &self.targets[idx];
        if self.http2 {
            let g = t.h2.lock().ok()?;
            return g
                .as_ref()
                .filter(|s| !s.is_closed())
                .map(|s| Conn::H2(s.clone()));
        }
        let now = coarse_ms();
        let mut v = t.idle.conns.lock().ok()?;
        while let Some((s, since)) = v.pop() {
            if !s.is_closed() && now.saturating_sub(since) < self.idle_timeout_ms {
                return Some(Conn::H1(s));
            }
        }
        None
    }

    async fn connect_tcp(&self, idx: usize) -> Result<tokio::net::TcpStream, ConnectError> {
        let t = &self.targets[idx];
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(t.connect_to.as_str()),
        )
        .await
        {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Refused(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn connect(&self, idx: usize) -> Result<Conn, ConnectError> {
        let t = &self.targets[idx];
        let tcp = self.connect_tcp(idx).await?;
        match &t.tls {
            None => self.handshake(t, TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = match tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                {
                    Err(_) => return Err(ConnectError::Timeout),
                    Ok(Err(e)) => return Err(ConnectError::Refused(format!("TLS: {e}"))),
                    Ok(Ok(s)) => s,
                };
                self.handshake(t, TokioIo::new(tls)).await
            }
        }
    }

    async fn handshake<I>(&self, t: &Target, io: I) -> Result<Conn, ConnectError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        if self.http2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| ConnectError::Refused(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if let Ok(mut g) = t.h2.lock() {
                *g = Some(sender.clone());
            }
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| ConnectError::Refused(e.to_string()))?;
            // With upgrades: a 101 hands the connection to a WebSocket tunnel.
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            Ok(Conn::H1(sender))
        }
    }

    /// A fresh connection to target `idx` failed: count it, and name the target to try next
    /// (the request was never sent, so any method may go to another target, once).
    fn after_connect_failure(
        &self,
        idx: usize,
        e: ConnectError,
        failures: &mut u32,
    ) -> Result<usize, UpstreamError> {
        self.failed(idx);
        *failures += 1;
        let err = match e {
            ConnectError::Timeout => UpstreamError::Timeout,
            ConnectError::Refused(m) => UpstreamError::Connect(m),
        };
        if *failures >= 2 {
            return Err(err);
        }
        self.pick(Some(idx)).map_err(|_| err)
    }

    /// Send a request to one of the targets. `path` is the normalized path and query;
    /// `upgrade` is true for a WebSocket handshake (the connection may become a tunnel);
    /// `started` is the caller's clock reading taken just before, reused for the response
    /// timeout; nothing here outlasts `deadline`, the request's own (then the error is
    /// [`UpstreamError::RequestTimeout`]). One timer at a time is armed: the earlier of the two
    /// deadlines.
    ///
    /// The exchange comes boxed: its state (about 2 KiB) is written once, on the heap,
    /// instead of being copied into every future that awaits it on its way up.
    pub fn send(
        &self,
        method: Method,
        path: PathAndQuery,
        headers: HeaderMap,
        body: ReqBody,
        upgrade: bool,
        timing: Timing,
    ) -> Sending<'_> {
        let deadline = timing.deadline;
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(UpstreamError::Overloaded)));
        }
        let in_flight = InFlight {
            count: self.in_flight.clone(),
            conn: None,
        };
        if self.lean && !upgrade {
            Box::pin(self.send_lean(method, path, headers, body, in_flight, timing))
        } else {
            let hyper = self.send_hyper(method, path, headers, body, in_flight);
            Box::pin(async move {
                match tokio::time::timeout_at(deadline, hyper).await {
                    Ok(r) => r,
                    Err(_) => Err(UpstreamError::RequestTimeout),
                }
            })
        }
    }

    /// Through Rampart's own HTTP/1.1 client. A pooled connection that fails before any byte
    /// of a response arrived is retried on another connection when the body can be sent again
    /// and either the method is idempotent or no byte of the request was written.
    async fn send_lean(
        &self,
        method: Method,
        path: PathAndQuery,
        headers: HeaderMap,
        mut body: ReqBody,
        in_flight: InFlight,
        timing: Timing,
    ) -> Result<Proxied, UpstreamError> {
        let Timing { started, deadline } = timing;
        // The request's fields go back to the pool when the exchange is over.
        let headers = crate::hmap::Recycled(headers);
        // The first exchange on a pooled connection times its response from `started` (the
        // caller's clock reading, taken just before); later ones from their own start.
        let mut started = Some(started);
        let idempotent = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::PUT
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
        );
        let mut idx = self.pick(None)?;
        let mut connect_failures = 0;
        loop {
            let t = &self.targets[idx];
            let (conn, fresh) = match t.lean.take(coarse_ms()) {
                Some(c) => (c, false),
                None => match tokio::time::timeout_at(deadline, Box::pin(self.connect_tcp(idx)))
                    .await
                    .map_err(|_| UpstreamError::RequestTimeout)?
                {
                    Ok(tcp) => (h1client::Conn::new(tcp), true),
                    Err(e) => {
                        idx = self.after_connect_failure(idx, e, &mut connect_failures)?;
                        continue;
                    }
                },
            };
            let again = if fresh { None } else { body.replayable() };
            let exchange = h1client::send(conn, &method, &path, &headers, body, t.lean.clone());
            let from = match started.take() {
                Some(s) if !fresh => s,
                _ => Instant::now(),
            };
            let response_deadline = crate::clock::deadline(from, self.response_timeout);
            let request_first = deadline < response_deadline;
            let at = if request_first {
                deadline
            } else {
                response_deadline
            };
            match tokio::time::timeout_at(at, exchange).await {
                Err(_) if request_first => return Err(UpstreamError::RequestTimeout),
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Ok((parts, b))) => {
                    self.succeeded(idx);
                    return Ok(Proxied {
                        response: Response::from_parts(parts, UpBody::Lean(b)),
                        target: t.label.clone(),
                        in_flight,
                    });
                }
                Ok(Err(h1client::SendError::NoResponse { error, written })) => match again {
                    Some(b) if idempotent || !written => body = b,
                    _ => return Err(UpstreamError::Protocol(error)),
                },
                Ok(Err(h1client::SendError::Body(e))) => return Err(body_error(&e)),
                Ok(Err(h1client::SendError::Protocol(m))) => {
                    return Err(UpstreamError::Protocol(m))
                }
            }
        }
    }

    /// Through hyper's client (TLS targets, HTTP/2, upgrades).
    async fn send_hyper(
        &self,
        method: Method,
        path: PathAndQuery,
        headers: HeaderMap,
        body: ReqBody,
        mut in_flight: InFlight,
    ) -> Result<Proxied, UpstreamError> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;

        let mut idx = self.pick(None)?;
        // Attempts: pooled connections that turn out closed do not count; a fresh connection
        // failing to connect moves on to another target once.
        let mut connect_failures = 0;
        let mut fresh_sends = 0;
        loop {
            let (conn, fresh) = match self.pooled(idx) {
                Some(c) => (c, false),
                // Boxed: connecting (with its TLS handshake) is a 6 KiB future, and it would
                // make every request's future that large (moved, copied) for a rare path.
                None => match Box::pin(self.connect(idx)).await {
                    Ok(c) => (c, true),
                    Err(e) => {
                        idx = self.after_connect_failure(idx, e, &mut connect_failures)?;
                        continue;
                    }
                },
            };
            if fresh {
                fresh_sends += 1;
            }
            if matches!(&conn, Conn::H2(_)) {
                *req.uri_mut() = self.absolute_uri(idx, req.uri());
            }
            let result = match conn {
                Conn::H1(mut s) => {
                    let fut = s.try_send_request(req);
                    match tokio::time::timeout(self.response_timeout, fut).await {
                        Err(_) => return Err(UpstreamError::Timeout),
                        Ok(Ok(resp)) => {
                            in_flight.conn = Some((s, self.targets[idx].idle.clone()));
                            Ok(resp)
                        }
                        Ok(Err(e)) => Err(e),
                    }
                }
                Conn::H2(mut s) => {
                    let fut = s.try_send_request(req);
                    match tokio::time::timeout(self.response_timeout, fut).await {
                        Err(_) => return Err(UpstreamError::Timeout),
                        Ok(Ok(resp)) => Ok(resp),
                        Ok(Err(e)) => Err(e),
                    }
                }
            };
            match result {
                Ok(response) => {
                    self.succeeded(idx);
                    return Ok(Proxied {
                        response: response.map(UpBody::Hyper),
                        target: self.targets[idx].label.clone(),
                        in_flight,
                    });
                }
                Err(mut e) => {
                    if let Some(r) = e.take_message() {
                        // Not written: the connection closed before we used it. Try again on a
                        // fresh one (bounded: a fresh connection failing this way twice stops).
                        if fresh_sends >= 2 {
                            return Err(UpstreamError::Protocol(e.into_error().to_string()));
                        }
                        req = r;
                        continue;
                    }
                    return Err(classify(e.into_error()));
                }
            }
        }
    }

    fn absolute_uri(&self, idx: usize, uri: &Uri) -> Uri {
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(if self.targets[idx].tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = Some(self.targets[idx].authority.clone());
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

fn classify(e: hyper::Error) -> UpstreamError {
    if let Some(b) = find_cause::<BodyError>(&e) {
        return body_error(b);
    }
    UpstreamError::Protocol(e.to_string())
}

/// The client's body failed while it was being sent upstream.
fn body_error(b: &BodyError) -> UpstreamError {
    match b {
        BodyError::TooLarge(n) => UpstreamError::BodyTooLarge(*n),
        BodyError::Hyper(h) => UpstreamError::ClientBody(h.to_string()),
        BodyError::Other(m) => UpstreamError::ClientBody(m.clone()),
    }
}
