//! The guard contract: the only way a protection plugs into the proxy.
//!
//! A request passes through phases in order: connection, request headers, request body,
//! response headers, response body, log. A guard implements the phases it cares about (every
//! method has a do-nothing default), returns a [`Verdict`], and records what it saw in the
//! [`RequestContext`]. The core applies the guard's [`Mode`]: in `monitor` a block is logged as a
//! security event and the request continues.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use rampart_telemetry::SecurityEvent;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

pub use rampart_config::Mode;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The request phases, in the order the core runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connection,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    Log,
}

/// What a guard decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the next guard.
    Continue,
    /// Answer the request now with this response (not a block: e.g. a CORS preflight).
    Respond(Answer),
    /// Refuse the request (in monitor mode: log and continue).
    Block(Block),
}

/// A response a guard produces itself.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// A refusal. The core turns it into an RFC 9457 problem+json response carrying the request id,
/// and into a [`SecurityEvent`].
#[derive(Debug)]
pub struct Block {
    pub status: StatusCode,
    /// Machine-readable reason or rule id, e.g. `body_too_large`.
    pub rule: String,
    /// A sentence for the log (not sent to the client).
    pub message: String,
    /// A short title for the client; defaults to the status' reason phrase.
    pub title: Option<&'static str>,
    /// Extra response headers (e.g. `Allow`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Structured detail for the security event.
    pub detail: serde_json::Value,
    /// Extra members for the client's problem+json body (e.g. `errors` naming the failing
    /// fields). The guard promises they hold nothing the client did not already know: no raw
    /// input, no secrets.
    pub public: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Block {
    pub fn new(status: StatusCode, rule: impl Into<String>, message: impl Into<String>) -> Self {
        Block {
            status,
            rule: rule.into(),
            message: message.into(),
            title: None,
            headers: Vec::new(),
            detail: serde_json::Value::Null,
            public: None,
        }
    }
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
    /// Add a member to the client's problem+json body (see [`Block::public`]).
    pub fn public(mut self, key: &str, value: serde_json::Value) -> Self {
        self.public
            .get_or_insert_with(serde_json::Map::new)
            .insert(key.to_string(), value);
        self
    }
    pub fn title(mut self, title: &'static str) -> Self {
        self.title = Some(title);
        self
    }
}

/// A guard's answer for a phase: ready now, or after some async work (a key fetch, a Redis call).
pub enum Step<'a> {
    Ready(Verdict),
    Pending(BoxFuture<'a, Verdict>),
}

impl From<Verdict> for Step<'_> {
    fn from(v: Verdict) -> Self {
        Step::Ready(v)
    }
}

/// The verified identity of a TLS client certificate.
#[derive(Clone, Debug, Default)]
pub struct ClientCert {
    /// Subject distinguished name, RFC 4514 style.
    pub subject: String,
    /// Subject alternative names (DNS names, URIs, emails, IPs) as strings.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint_sha256: String,
}

/// What the core knows about a TLS session.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    pub sni: Option<String>,
    pub version: &'static str,
    pub alpn: Option<String>,
    /// Present when the client presented a certificate that verified against the listener's CA.
    pub client_cert: Option<ClientCert>,
}

/// A client connection, as the connection phase sees it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Arc<str>,
    pub tls: Option<Arc<TlsInfo>>,
    /// The peer's IP address as a header value (what X-Forwarded-For gets), formatted once
    /// per connection rather than per request.
    pub peer_header: http::HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, listener: Arc<str>) -> ConnInfo {
        ConnInfo {
            peer,
            local,
            listener,
            tls: None,
            peer_header: http::HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
        }
    }
}

/// Everything known about one request, shared by the core and the guards.
pub struct RequestContext {
    pub request_id: String,
    /// The client's address: the peer, or from X-Forwarded-For when the peer is a trusted proxy.
    pub client_ip: IpAddr,
    pub conn: Arc<ConnInfo>,
    pub method: Method,
    /// The normalized path the route matched.
    pub path: String,
    /// The matched route's name.
    pub route: Option<Arc<str>>,
    /// The API operation the request was matched to (an OpenAPI `operationId`), when known.
    pub operation: Option<Arc<str>>,
    /// Largest request body the core lets through (a guard such as `limits` sets it).
    pub max_request_body: Option<u64>,
    /// The authenticated identity, when an identity guard set one.
    pub identity: Option<Identity>,
    /// Free-form tags guards attach (shown in logs).
    pub tags: Vec<String>,
    /// Security events guards recorded.
    pub events: Vec<SecurityEvent>,
    /// The guard that decided the response, if any.
    pub deciding_guard: Option<&'static str>,
    /// `allowed`, `blocked`, `answered`, `monitored`, `error`.
    pub verdict: &'static str,
    /// Inputs a validating guard found strictly typed, for content inspectors to skip.
    pub typed_inputs: Option<Arc<TypedInputs>>,
    /// Typed storage for guards to pass data between phases.
    pub extensions: http::Extensions,
}

/// Who the caller is, once a guard authenticated them.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub subject: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// How it was established: `jwt`, `introspection`, `api_key`, `mtls`.
    pub method: &'static str,
    /// The provider's configured name.
    pub provider: String,
    /// The token's claims (JWT, introspection answer); empty for other methods.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl RequestContext {
    pub fn new(request_id: String, client_ip: IpAddr, conn: Arc<ConnInfo>, method: Method) -> Self {
        RequestContext {
            request_id,
            client_ip,
            conn,
            method,
            path: String::new(),
            route: None,
            operation: None,
            max_request_body: None,
            identity: None,
            tags: Vec::new(),
            events: Vec::new(),
            deciding_guard: None,
            verdict: "allowed",
            typed_inputs: None,
            extensions: http::Extensions::new(),
        }
    }

    /// True when the request arrived over TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.tls.is_some()
    }

    /// Record a security event.
    pub fn event(&mut self, event: SecurityEvent) {
        self.events.push(event);
    }
}

/// Inputs a guard has validated against a strict type (integer, number, boolean, enum, uuid or
/// date format, an anchored pattern). A content-inspecting guard such as a WAF may skip them:
/// they cannot carry an injection payload. Stored in [`RequestContext::typed_inputs`].
#[derive(Clone, Debug, Default)]
pub struct TypedInputs {
    /// Query parameter names.
    pub query: Vec<String>,
    /// Path parameter names.
    pub path: Vec<String>,
    /// Header names, lower case.
    pub headers: Vec<String>,
    /// Cookie names.
    pub cookies: Vec<String>,
    /// Body fields as JSON pointers; `*` stands for any array index.
    pub body: Vec<String>,
}

/// Read access to the request for guards in the response phases.
pub type RequestHead = http::request::Parts;

/// One protection. Implement the phases you need; the defaults let everything through.
pub trait Guard: Send + Sync + 'static {
    /// Short stable name used in config, logs and metrics (`limits`, `cors`, ...).
    fn name(&self) -> &'static str;

    /// `block` or `monitor`.
    fn mode(&self) -> Mode {
        Mode::Block
    }

    /// Once per client connection, before any request is read. `Block` closes the connection.
    fn on_connection(&self, _conn: &ConnInfo) -> Verdict {
        Verdict::Continue
    }

    /// The request head, after routing. Guards may edit headers that go upstream.
    fn on_request_headers<'a>(
        &'a self,
        _req: &'a mut RequestHead,
        _ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        Step::Ready(Verdict::Continue)
    }

    /// Ask to see the request body, up to this many bytes. The core then buffers the body
    /// (a larger body gets 413) and calls [`Guard::on_request_body`]; otherwise it streams.
    fn request_body_limit(&self, _req: &RequestHead, _ctx: &RequestContext) -> Option<usize> {
        None
    }

    /// The buffered request body; a guard may rewrite it (the core fixes `Content-Length`).
    /// A guard that asked for the body is called with an empty one when the request has none.
    fn on_request_body<'a>(
        &'a self,
        _req: &'a RequestHead,
        _body: &'a mut Bytes,
        _ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        Step::Ready(Verdict::Continue)
    }

    /// The upstream's response head (or a response the core produced). Guards may edit headers.
    fn on_response_headers(
        &self,
        _resp: &mut http::response::Parts,
        _ctx: &mut RequestContext,
    ) -> Verdict {
        Verdict::Continue
    }

    /// Ask to see the response body, up to this many bytes. The core buffers it; a larger body
    /// is replaced by a 502 (`response_too_large` event), so ask only when the body must be
    /// seen.
    fn response_body_limit(
        &self,
        _resp: &http::response::Parts,
        _ctx: &RequestContext,
    ) -> Option<usize> {
        None
    }

    /// The buffered response body; a guard may rewrite it.
    fn on_response_body(
        &self,
        _resp: &mut http::response::Parts,
        _body: &mut Bytes,
        _ctx: &mut RequestContext,
    ) -> Verdict {
        Verdict::Continue
    }

    /// After the response is sent (or the client went away).
    fn on_log(&self, _ctx: &mut RequestContext, _status: u16) {}
}
