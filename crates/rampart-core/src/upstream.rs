//! Upstreams: a keep-alive connection pool per target, round-robin, passive health checks,
//! a cap on in-flight requests and one retry of idempotent requests on connect failure.

use crate::body::{BodyError, ReqBody};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the process started (a cheap monotonic clock for atomics).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

struct Target {
    authority: Authority,
    fails: AtomicU32,
    ejected_until: AtomicU64,
}

pub struct Upstream {
    pub name: Arc<str>,
    targets: Vec<Target>,
    next: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    client: Client<HttpConnector, ReqBody>,
    response_timeout: Duration,
    fail_threshold: u32,
    eject_for: Duration,
}

/// Why a request could not be proxied.
#[derive(Debug)]
pub enum UpstreamError {
    /// Connection refused or reset before the request was sent: 502.
    Connect(String),
    /// Connect or response timeout: 504.
    Timeout,
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
            UpstreamError::AllDown(_) => "unavailable",
            UpstreamError::Overloaded => "overloaded",
            UpstreamError::BodyTooLarge(_) => "body_too_large",
            UpstreamError::ClientBody(_) => "client_body",
            UpstreamError::Protocol(_) => "protocol",
        }
    }
}

/// Held while a request is in flight to an upstream.
pub struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the upstream answered, and which target answered.
pub struct Proxied {
    pub response: Response<Incoming>,
    pub target: Arc<str>,
    pub in_flight: InFlight,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
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

impl Upstream {
    pub fn new(cfg: &rampart_config::Upstream) -> Result<Self, String> {
        let mut targets = Vec::new();
        for t in &cfg.targets {
            let rest = t.value.trim_start_matches("http://").trim_end_matches('/');
            let authority: Authority = rest
                .parse()
                .map_err(|e| format!("invalid upstream target `{}`: {e}", t.value))?;
            if authority.port_u16().is_none() && !rest.contains(':') {
                // Default port 80 is implied by the scheme; keep as is.
            }
            targets.push(Target {
                authority,
                fails: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout.0));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout.0)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_target)
            .retry_canceled_requests(true)
            .set_host(false)
            .http2_only(cfg.http2);
        let client = b.build(connector);
        Ok(Upstream {
            name: Arc::from(cfg.name.value.as_str()),
            targets,
            next: AtomicUsize::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: cfg.max_in_flight,
            client,
            response_timeout: cfg.response_timeout.0,
            fail_threshold: cfg.health.failures.max(1),
            eject_for: cfg.health.eject_for.0,
        })
    }

    /// Pick the next healthy target, skipping `skip`.
    fn pick(&self, skip: Option<usize>) -> Result<usize, UpstreamError> {
        let n = self.targets.len();
        let now = now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let idx = (start + i) % n;
            if Some(idx) == skip {
                continue;
            }
            if self.targets[idx].ejected_until.load(Ordering::Relaxed) <= now {
                return Ok(idx);
            }
        }
        if skip.is_some() && n > 1 {
            return Err(UpstreamError::AllDown(1));
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
                now_ms() + self.eject_for.as_millis() as u64,
                Ordering::Relaxed,
            );
            t.fails.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.name, target = %t.authority, "target ejected after connect failures");
        }
    }

    fn succeeded(&self, idx: usize) {
        let t = &self.targets[idx];
        if t.fails.load(Ordering::Relaxed) != 0 {
            t.fails.store(0, Ordering::Relaxed);
        }
    }

    /// Send a request to one of the targets. `path` is the normalized path and query.
    pub async fn send(
        &self,
        method: Method,
        path: PathAndQuery,
        headers: HeaderMap,
        body: ReqBody,
    ) -> Result<Proxied, UpstreamError> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(UpstreamError::Overloaded);
        }
        let in_flight = InFlight(self.in_flight.clone());
        let retry = if is_idempotent(&method) {
            body.replayable().map(|b| (b, headers.clone()))
        } else {
            None
        };
        let idx = self.pick(None)?;
        match self.attempt(idx, &method, &path, headers, body).await {
            Ok(response) => Ok(Proxied {
                response,
                target: Arc::from(self.targets[idx].authority.as_str()),
                in_flight,
            }),
            Err(AttemptError::Connect(e)) => {
                let Some((body, headers)) = retry else {
                    return Err(e);
                };
                // Another target; with a single target, that one once more (the pooled
                // connection may have raced an upstream restart).
                let idx2 = match self.pick(Some(idx)) {
                    Ok(i) => i,
                    Err(_) if self.targets.len() == 1 => idx,
                    Err(_) => return Err(e),
                };
                match self.attempt(idx2, &method, &path, headers, body).await {
                    Ok(response) => Ok(Proxied {
                        response,
                        target: Arc::from(self.targets[idx2].authority.as_str()),
                        in_flight,
                    }),
                    Err(AttemptError::Connect(e)) | Err(AttemptError::Other(e)) => Err(e),
                }
            }
            Err(AttemptError::Other(e)) => Err(e),
        }
    }

    async fn attempt(
        &self,
        idx: usize,
        method: &Method,
        path: &PathAndQuery,
        headers: HeaderMap,
        body: ReqBody,
    ) -> Result<Response<Incoming>, AttemptError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.targets[idx].authority.clone())
            .path_and_query(path.clone())
            .build()
            .map_err(|e| AttemptError::Other(UpstreamError::Protocol(e.to_string())))?;
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(AttemptError::Other(UpstreamError::Timeout)),
            Ok(Ok(resp)) => {
                self.succeeded(idx);
                Ok(resp)
            }
            Ok(Err(e)) => {
                if let Some(b) = find_cause::<BodyError>(&e) {
                    return Err(AttemptError::Other(match b {
                        BodyError::TooLarge(n) => UpstreamError::BodyTooLarge(*n),
                        BodyError::Hyper(h) => UpstreamError::ClientBody(h.to_string()),
                    }));
                }
                if e.is_connect() {
                    self.failed(idx);
                    let timed_out = find_cause::<std::io::Error>(&e)
                        .map(|io| io.kind() == std::io::ErrorKind::TimedOut)
                        .unwrap_or(false);
                    if timed_out {
                        return Err(AttemptError::Other(UpstreamError::Timeout));
                    }
                    return Err(AttemptError::Connect(UpstreamError::Connect(
                        find_cause::<std::io::Error>(&e)
                            .map(|io| io.to_string())
                            .unwrap_or_else(|| e.to_string()),
                    )));
                }
                Err(AttemptError::Other(UpstreamError::Protocol(
                    find_cause::<hyper::Error>(&e)
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| e.to_string()),
                )))
            }
        }
    }
}

enum AttemptError {
    Connect(UpstreamError),
    Other(UpstreamError),
}
