//! The typed config model. Every struct rejects unknown keys. `docs/CONFIG.md` documents each key.

use crate::units::{ByteSize, Duration};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    pub listeners: Vec<Spanned<Listener>>,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub upstreams: Vec<Spanned<Upstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// Global guard settings; routes may override each one.
    #[serde(default)]
    pub guards: Guards,
    /// Where rate-limit state lives.
    #[serde(default)]
    pub ratelimit: RateLimitStore,
    /// Identity providers (referenced by name from `auth` blocks) and brute-force lockout.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// The country database `geo` blocks look client addresses up in.
    #[serde(default)]
    pub geoip: GeoIp,
}

/// `geoip:`: a MaxMind-format (`.mmdb`) country or city database, such as GeoLite2-Country.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GeoIp {
    pub database: Option<Spanned<String>>,
}

/// `geo:`: allow or deny clients by the country of their address (after trusted proxies).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Geo {
    pub mode: Mode,
    /// ISO 3166 alpha-2 codes; if non-empty, only clients from these countries pass.
    pub allow_countries: Vec<Spanned<String>>,
    /// Clients from these countries are refused (deny wins over allow).
    pub deny_countries: Vec<Spanned<String>>,
    /// Clients whose country is unknown (private addresses, not in the database).
    pub unknown: GeoUnknown,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GeoUnknown {
    /// Let them through unless `allow_countries` is set.
    #[default]
    Default,
    Allow,
    Deny,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Tokio worker threads; 0 = one per core; 1 = a single-threaded runtime.
    pub worker_threads: usize,
    /// Open client connections beyond this are closed right after accept.
    pub max_connections: usize,
    /// CIDRs whose X-Forwarded-*/Forwarded/X-Request-Id headers are trusted.
    pub trusted_proxies: Vec<Spanned<String>>,
    pub request_id_header: Spanned<String>,
    pub timeouts: Timeouts,
    pub path: PathPolicy,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Watch the config file and reload on change (SIGHUP always reloads).
    pub watch_config: bool,
    /// Largest request head (request line + headers) the HTTP parser buffers.
    pub max_request_head_bytes: ByteSize,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            worker_threads: 0,
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            request_id_header: Spanned::new(
                "x-request-id".into(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
            timeouts: Timeouts::default(),
            path: PathPolicy::default(),
            shutdown_timeout: Duration::secs(30),
            watch_config: true,
            max_request_head_bytes: ByteSize(64 * 1024),
            h2_max_concurrent_streams: 128,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A client must send the full request head within this time (slowloris).
    pub header_read: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle: Duration,
    /// An idle HTTP/1.1 keep-alive connection gives its HTTP buffers back after this (it stays
    /// open; the next request builds them again).
    pub idle_release: Duration,
    /// From the request head to the response head.
    pub request: Duration,
    /// An upgraded connection (WebSocket) with no bytes in either direction for this long is
    /// closed.
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::secs(10),
            idle: Duration::secs(60),
            idle_release: Duration::secs(1),
            request: Duration::secs(60),
            tunnel_idle: Duration::secs(300),
        }
    }
}

/// What to do with risky path encodings.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EncodedSlash {
    /// 400 Bad Request.
    #[default]
    Reject,
    /// Keep `%2F` encoded: it is part of a segment, not a separator.
    Keep,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backslash {
    #[default]
    Reject,
    /// Treat `\` (and `%5C`) as `/`.
    Slash,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PathPolicy {
    pub encoded_slash: EncodedSlash,
    pub backslash: Backslash,
    /// `%00` in a path: rejected unless this is true.
    pub allow_encoded_nul: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    pub address: Spanned<String>,
    #[serde(default)]
    pub tls: Option<Spanned<Tls>>,
    /// Accept HTTP/2 with prior knowledge on a plaintext listener.
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// One or more certificates; the one whose names match the SNI is used, else the first.
    pub certificates: Vec<Spanned<CertPair>>,
    /// "1.3" (default) or "1.2" (allows 1.2 and 1.3).
    #[serde(default)]
    pub min_version: Option<Spanned<String>>,
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Offer HTTP/2 via ALPN (default true).
    #[serde(default = "yes")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    Required,
    Optional,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM bundle of CAs that client certificates must chain to.
    pub ca: Spanned<String>,
    pub mode: ClientAuthMode,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`); `off` disables it.
    pub address: Spanned<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: Spanned::new(
                "127.0.0.1:9901".into(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Access log and security events: `stdout`, `stderr`, `off`, or a file path.
    pub access: String,
    /// Operational log level (error, warn, info, debug, trace); written to stderr.
    pub level: Spanned<String>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            access: "stdout".into(),
            level: Spanned::new(
                "info".into(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: Spanned<String>,
    /// `http://host:port` or `https://host:port` URLs; requests are spread round-robin.
    pub targets: Vec<Spanned<String>>,
    #[serde(default = "d_connect")]
    pub connect_timeout: Duration,
    /// Time to wait for the upstream's response head.
    #[serde(default = "d_response")]
    pub response_timeout: Duration,
    /// Concurrent requests to this upstream; beyond it clients get 503 with Retry-After.
    #[serde(default = "d_inflight")]
    pub max_in_flight: usize,
    /// Idle keep-alive connections kept per target.
    #[serde(default = "d_idle_per_target")]
    pub pool_max_idle_per_target: usize,
    #[serde(default = "d_pool_idle")]
    pub pool_idle_timeout: Duration,
    /// A target that refuses `failures` connections in a row is skipped for `eject_for`.
    #[serde(default)]
    pub health: PassiveHealth,
    /// Speak HTTP/2 to the targets (prior knowledge on http://, ALPN on https://).
    #[serde(default)]
    pub http2: bool,
    /// TLS to `https://` targets.
    #[serde(default)]
    pub tls: Option<Spanned<UpstreamTls>>,
    /// The API this upstream serves: every route to it enforces this spec unless the route
    /// has an `openapi` block of its own.
    #[serde(default)]
    pub openapi: Option<Spanned<OpenApi>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM bundle of the CAs the targets' certificates must chain to.
    pub ca: Spanned<String>,
    /// Name to verify in the targets' certificates (and send as SNI); default: the target host.
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
}

fn d_connect() -> Duration {
    Duration::secs(3)
}
fn d_response() -> Duration {
    Duration::secs(30)
}
fn d_inflight() -> usize {
    10_000
}
fn d_idle_per_target() -> usize {
    256
}
fn d_pool_idle() -> Duration {
    Duration::secs(60)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    pub failures: u32,
    pub eject_for: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            failures: 1,
            eject_for: Duration::secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Spanned<String>,
    /// Host to match (exact, or `*.example.com`); absent = any host.
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    pub path_prefix: Spanned<String>,
    /// Methods this route accepts; absent = all.
    #[serde(default)]
    pub methods: Option<Vec<Spanned<String>>>,
    pub upstream: Spanned<String>,
    /// Remove the matched prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Pass WebSocket upgrades through (HTTP/1.1 `Upgrade: websocket`): after the upstream
    /// answers 101 the connection becomes a byte tunnel. Off: the upgrade headers are removed
    /// like any hop-by-hop header.
    #[serde(default)]
    pub websocket: bool,
    /// Overrides of the global guard settings for this route. Each replaces the global block of
    /// the same name (the IP filter is the exception: the global list and the route's list both apply).
    #[serde(default)]
    pub limits: Option<Spanned<Limits>>,
    #[serde(default)]
    pub cors: Option<Spanned<Cors>>,
    #[serde(default)]
    pub security_headers: Option<Spanned<SecurityHeaders>>,
    #[serde(default)]
    pub ip_filter: Option<Spanned<IpFilter>>,
    #[serde(default)]
    pub rate_limits: Option<Spanned<Vec<Spanned<RateLimit>>>>,
    #[serde(default)]
    pub concurrency_limits: Option<Spanned<Vec<Spanned<ConcurrencyLimit>>>>,
    #[serde(default)]
    pub quotas: Option<Spanned<Vec<Spanned<Quota>>>>,
    #[serde(default)]
    pub auth: Option<Spanned<Auth>>,
    /// A login endpoint whose failed answers count toward brute-force lockout.
    #[serde(default)]
    pub login: Option<Spanned<Login>>,
    /// The WAF for this route (overrides `guards.waf`).
    #[serde(default)]
    pub waf: Option<Spanned<Waf>>,
    /// Country allow/deny lists for this route (overrides `guards.geo`).
    #[serde(default)]
    pub geo: Option<Spanned<Geo>>,
    /// Enforce an OpenAPI spec on this route (overrides the upstream's `openapi`).
    #[serde(default)]
    pub openapi: Option<Spanned<OpenApi>>,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Guards {
    #[serde(default)]
    pub limits: Option<Spanned<Limits>>,
    #[serde(default)]
    pub cors: Option<Spanned<Cors>>,
    #[serde(default)]
    pub security_headers: Option<Spanned<SecurityHeaders>>,
    #[serde(default)]
    pub ip_filter: Option<Spanned<IpFilter>>,
    #[serde(default)]
    pub rate_limits: Option<Spanned<Vec<Spanned<RateLimit>>>>,
    #[serde(default)]
    pub concurrency_limits: Option<Spanned<Vec<Spanned<ConcurrencyLimit>>>>,
    #[serde(default)]
    pub quotas: Option<Spanned<Vec<Spanned<Quota>>>>,
    #[serde(default)]
    pub auth: Option<Spanned<Auth>>,
    /// The WAF (OWASP CRS) for every route that does not set its own `waf`.
    #[serde(default)]
    pub waf: Option<Spanned<Waf>>,
    /// Country allow/deny lists for every route that does not set its own `geo`.
    #[serde(default)]
    pub geo: Option<Spanned<Geo>>,
}

/// The WAF: a SecLang rule engine running the OWASP Core Rule Set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waf {
    /// `false` turns the WAF off for a route when it is on globally.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// The CRS directory (holding `rules/*.conf`), relative to the config file.
    pub crs: Option<Spanned<String>>,
    /// The CRS setup file; default: `crs-setup.conf` or `crs-setup.conf.example` in `crs`.
    #[serde(default)]
    pub setup: Option<Spanned<String>>,
    /// Blocking paranoia level, 1 (fewest false positives) to 4.
    #[serde(default = "d_paranoia")]
    pub paranoia_level: Spanned<u8>,
    /// Rules of levels above `paranoia_level` up to this one log but do not count to blocking.
    #[serde(default)]
    pub detection_paranoia_level: Option<Spanned<u8>>,
    #[serde(default)]
    pub anomaly_thresholds: AnomalyThresholds,
    /// `block` answers 403 when CRS's anomaly score reaches the threshold; `monitor` logs.
    #[serde(default)]
    pub mode: Mode,
    /// SecLang files loaded after the setup file and before CRS's rules (CRS settings such as
    /// `setvar:tx.max_file_size`, and CRS's REQUEST-900-style exclusions).
    #[serde(default)]
    pub before_rules: Vec<Spanned<String>>,
    /// More SecLang files, loaded after CRS (relative to the config file).
    #[serde(default)]
    pub extra_rules: Vec<Spanned<String>>,
    /// Narrow false-positive fixes: a rule (or id range), optionally only for one target.
    #[serde(default)]
    pub exclusions: Vec<Spanned<WafExclusion>>,
    /// Largest request body the WAF inspects (larger bodies get 413).
    #[serde(default = "d_waf_body")]
    pub max_body_bytes: ByteSize,
    /// Inspect response bodies (CRS data-leakage rules) of these MIME types.
    #[serde(default)]
    pub inspect_responses: bool,
    #[serde(default = "d_waf_mime")]
    pub response_mime_types: Vec<String>,
    /// Largest response body inspected (larger ones get 502 when `inspect_responses`).
    #[serde(default = "d_waf_response")]
    pub max_response_bytes: ByteSize,
    /// Skip request inputs another guard (OpenAPI) validated against a strict type.
    #[serde(default = "d_true")]
    pub skip_typed_inputs: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyThresholds {
    pub inbound: u32,
    pub outbound: u32,
}

impl Default for AnomalyThresholds {
    fn default() -> Self {
        AnomalyThresholds {
            inbound: 5,
            outbound: 4,
        }
    }
}

/// One WAF exclusion: `rule: 942100` (or `942100-942999`), optionally `target: ARGS:q`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafExclusion {
    pub rule: Spanned<String>,
    #[serde(default)]
    pub target: Option<Spanned<String>>,
}

fn d_paranoia() -> Spanned<u8> {
    Spanned::new(
        1u8,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}
fn d_true() -> bool {
    true
}
fn d_waf_body() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn d_waf_response() -> ByteSize {
    ByteSize(512 * 1024)
}
fn d_waf_mime() -> Vec<String> {
    ["text/plain", "text/html", "text/xml", "application/json"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `block` enforces; `monitor` logs what would have been done and lets the request through.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Block,
    Monitor,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub mode: Mode,
    /// 431 above this many bytes of header names and values.
    pub max_header_bytes: ByteSize,
    /// 414 above this many bytes of request target.
    pub max_uri_length: ByteSize,
    /// 413 above this many body bytes (checked on Content-Length and while streaming).
    pub max_body_bytes: ByteSize,
    /// 405 for any other method.
    pub allowed_methods: Vec<Spanned<String>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            mode: Mode::Block,
            max_header_bytes: ByteSize(16 * 1024),
            max_uri_length: ByteSize(8 * 1024),
            max_body_bytes: ByteSize(10 * 1024 * 1024),
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .iter()
                .map(|m| {
                    Spanned::new(
                        m.to_string(),
                        serde_saphyr::Location::UNKNOWN,
                        serde_saphyr::Location::UNKNOWN,
                    )
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    #[serde(default)]
    pub mode: Mode,
    /// Exact origins (`https://app.example.com`) or `*`.
    pub allow_origins: Vec<Spanned<String>>,
    #[serde(default = "cors_methods")]
    pub allow_methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_headers: Vec<Spanned<String>>,
    #[serde(default)]
    pub expose_headers: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "cors_max_age")]
    pub max_age: Duration,
}

fn cors_methods() -> Vec<Spanned<String>> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|m| {
            Spanned::new(
                m.to_string(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            )
        })
        .collect()
}
fn cors_max_age() -> Duration {
    Duration::secs(600)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeaders {
    /// Strict-Transport-Security max-age, sent on TLS listeners only; 0 disables.
    pub hsts_max_age: Duration,
    pub hsts_include_subdomains: bool,
    /// X-Content-Type-Options: nosniff.
    pub nosniff: bool,
    /// Cache-Control: no-store unless the upstream set Cache-Control.
    pub no_store: bool,
    /// Response headers removed from upstream responses.
    pub strip: Vec<String>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        SecurityHeaders {
            hsts_max_age: Duration::secs(31_536_000),
            hsts_include_subdomains: true,
            nosniff: true,
            no_store: true,
            strip: vec![
                "server".into(),
                "x-powered-by".into(),
                "x-aspnet-version".into(),
                "x-aspnetmvc-version".into(),
            ],
        }
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IpFilter {
    pub mode: Mode,
    /// If non-empty, only these CIDRs may connect.
    pub allow: Vec<Spanned<String>>,
    /// These CIDRs are refused (deny wins over allow).
    pub deny: Vec<Spanned<String>>,
}

/// `memory` (one instance) or `redis` (shared by every instance pointing at it).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

/// What to do when Redis cannot answer in time.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreFailure {
    /// Fall back to this instance's in-memory limiter (and count the failure).
    #[default]
    FailOpen,
    /// Answer 503 with Retry-After.
    FailClosed,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitStore {
    pub store: StoreKind,
    /// `redis://host:port[/db]`.
    pub redis_url: Option<Spanned<String>>,
    /// Longest a request waits for Redis.
    pub redis_timeout: Duration,
    pub on_failure: OnStoreFailure,
    /// Enforce the temporary ban list (also on when any limit has `ban_after`).
    pub bans: bool,
    /// With `store: memory`, where quota counters are saved so a restart does not reset them.
    pub quota_file: Option<Spanned<String>>,
    /// Ban client addresses that other guards keep blocking (WAF blocks, login lockouts).
    pub auto_bans: Vec<Spanned<AutoBan>>,
}

/// `after` blocks decided by one of `guards` (and, if given, with one of `rules`) from one
/// client address within `within` ban that address for `ban_for`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoBan {
    pub name: Spanned<String>,
    /// Guard names whose blocks count: `waf`, `auth`, `openapi`, `limits`, ...
    pub guards: Vec<Spanned<String>>,
    /// Only blocks whose security event has one of these rules (`949110`, `locked_out`).
    #[serde(default)]
    pub rules: Vec<String>,
    pub after: Spanned<u32>,
    pub within: Duration,
    #[serde(default = "d_ban_for")]
    pub ban_for: Duration,
}

impl Default for RateLimitStore {
    fn default() -> Self {
        RateLimitStore {
            store: StoreKind::Memory,
            redis_url: None,
            redis_timeout: Duration::millis(50),
            on_failure: OnStoreFailure::FailOpen,
            bans: false,
            quota_file: None,
            auto_bans: Vec::new(),
        }
    }
}

/// One limit: `rate` requests per `period` per key, with bursts up to `burst` (GCRA).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub name: Spanned<String>,
    /// Parts of the key: `client_ip`, `route`, `method`, `header:NAME`, `subject`.
    pub key: Vec<Spanned<String>>,
    pub rate: Spanned<u64>,
    pub period: Duration,
    /// Requests allowed at once (default: `rate`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// IPv6 clients are grouped by this prefix length.
    #[serde(default = "d_v6_prefix")]
    pub ipv6_prefix: u8,
    #[serde(default)]
    pub mode: Mode,
    /// Ban the client address after this many refusals by this limit within its period.
    #[serde(default)]
    pub ban_after: Option<u32>,
    /// How long such a ban lasts.
    #[serde(default = "d_ban_for")]
    pub ban_for: Duration,
    /// When to send the `RateLimit` / `RateLimit-Policy` headers.
    #[serde(default)]
    pub headers: RateLimitHeaders,
}

/// `always`: every answer on a limited route says what is left; `on_refusal`: only 429s do
/// (saves encoding two headers per response).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitHeaders {
    #[default]
    Always,
    OnRefusal,
}

fn d_ban_for() -> Duration {
    Duration::secs(600)
}

fn d_v6_prefix() -> u8 {
    64
}

/// At most `max` requests in flight at once per key (until their response ends).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    pub name: Spanned<String>,
    /// Same key parts as rate limits, except `json:`.
    pub key: Vec<Spanned<String>>,
    pub max: Spanned<u64>,
    #[serde(default = "d_v6_prefix")]
    pub ipv6_prefix: u8,
    #[serde(default)]
    pub mode: Mode,
}

/// A calendar window for quotas (UTC).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuotaWindow {
    Day,
    Month,
}

/// At most `limit` requests per key per calendar day or month (UTC).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub name: Spanned<String>,
    /// Same key parts as rate limits.
    pub key: Vec<Spanned<String>>,
    pub limit: Spanned<u64>,
    pub per: QuotaWindow,
    #[serde(default = "d_v6_prefix")]
    pub ipv6_prefix: u8,
    #[serde(default)]
    pub mode: Mode,
}

/// `identity:`: the providers routes authenticate with, and brute-force lockout settings.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub providers: Vec<Spanned<Provider>>,
    #[serde(default)]
    pub brute_force: BruteForce,
}

/// One identity provider: exactly one of `jwt`, `introspection`, `api_key`, `mtls`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: Spanned<String>,
    #[serde(default)]
    pub jwt: Option<Spanned<JwtProvider>>,
    #[serde(default)]
    pub introspection: Option<Spanned<IntrospectionProvider>>,
    #[serde(default)]
    pub api_key: Option<Spanned<ApiKeyProvider>>,
    #[serde(default)]
    pub mtls: Option<Spanned<MtlsProvider>>,
}

/// Where a bearer token is read from. The `Authorization: Bearer` header always works unless
/// `header: false`; a cookie and a query parameter are opt-in.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSource {
    pub header: bool,
    pub cookie: Option<Spanned<String>>,
    pub query: Option<Spanned<String>>,
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource {
            header: true,
            cookie: None,
            query: None,
        }
    }
}

/// Which claims carry the subject, scopes and roles.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    pub subject: String,
    /// A space-separated string or an array (`scope`; `scp` is read as well).
    pub scopes: String,
    /// An array or a space-separated string.
    pub roles: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            subject: "sub".into(),
            scopes: "scope".into(),
            roles: "roles".into(),
        }
    }
}

/// JWT validation. Keys come from exactly one of `jwks_url`, `jwks_file`, `public_key_file`
/// (PEM) or `hmac_secret`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// Accepted `alg` values, e.g. `[ES256, RS256]`. HS* only with `hmac_secret`.
    pub algorithms: Vec<Spanned<String>>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<Spanned<String>>,
    /// Accepted `aud` values (one must match).
    #[serde(default)]
    pub audiences: Vec<Spanned<String>>,
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    #[serde(default)]
    pub jwks_file: Option<Spanned<String>>,
    #[serde(default)]
    pub public_key_file: Option<Spanned<String>>,
    #[serde(default)]
    pub hmac_secret: Option<Spanned<String>>,
    /// CA bundle (PEM) for an https `jwks_url`; default: the system bundle.
    #[serde(default)]
    pub jwks_ca: Option<Spanned<String>>,
    #[serde(default = "d_fetch_timeout")]
    pub jwks_timeout: Duration,
    #[serde(default = "d_jwks_max_bytes")]
    pub jwks_max_bytes: ByteSize,
    /// Cache lifetime when the JWKS response has no `max-age`.
    #[serde(default = "d_jwks_max_age")]
    pub jwks_max_age: Duration,
    /// A token with an unknown `kid` triggers a refetch at most this often.
    #[serde(default = "d_jwks_refetch")]
    pub jwks_refetch_interval: Duration,
    /// Clock skew allowed on `exp`/`nbf`.
    #[serde(default = "d_leeway")]
    pub leeway: Duration,
    /// Claims that must be present (`exp` is always required).
    #[serde(default)]
    pub required_claims: Vec<Spanned<String>>,
    #[serde(default = "d_max_token")]
    pub max_token_bytes: ByteSize,
    #[serde(default)]
    pub token: TokenSource,
    #[serde(default)]
    pub claims: ClaimNames,
}

fn d_fetch_timeout() -> Duration {
    Duration::secs(2)
}
fn d_jwks_max_bytes() -> ByteSize {
    ByteSize(256 * 1024)
}
fn d_jwks_max_age() -> Duration {
    Duration::secs(300)
}
fn d_jwks_refetch() -> Duration {
    Duration::secs(30)
}
fn d_leeway() -> Duration {
    Duration::secs(30)
}
fn d_max_token() -> ByteSize {
    ByteSize(8 * 1024)
}

/// OAuth 2.0 token introspection (RFC 7662) with client credentials (HTTP Basic).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionProvider {
    pub url: Spanned<String>,
    pub client_id: Spanned<String>,
    pub client_secret: Spanned<String>,
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    #[serde(default = "d_fetch_timeout")]
    pub timeout: Duration,
    /// Longest time an answer is cached (never beyond the token's `exp`).
    #[serde(default = "d_introspection_cache")]
    pub cache_ttl: Duration,
    /// Required `iss` in the answer, when set.
    #[serde(default)]
    pub issuer: Option<Spanned<String>>,
    #[serde(default)]
    pub audiences: Vec<Spanned<String>>,
    #[serde(default = "d_max_token")]
    pub max_token_bytes: ByteSize,
    #[serde(default)]
    pub token: TokenSource,
    #[serde(default)]
    pub claims: ClaimNames,
}

fn d_introspection_cache() -> Duration {
    Duration::secs(60)
}

/// API keys stored hashed (HMAC-SHA-256 with `hash_secret`) in an SQLite file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyProvider {
    /// The SQLite file (created if missing).
    pub store: Spanned<String>,
    /// Secret for the keyed hash; at least 32 characters. Use `${ENV}`.
    pub hash_secret: Spanned<String>,
    /// Header carrying the key (`Authorization: ApiKey <key>` is read as well).
    #[serde(default = "d_api_key_header")]
    pub header: Spanned<String>,
    /// Opt-in query parameter carrying the key.
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    /// How often the gateway rereads the store (keys made by the CLI show up within this).
    #[serde(default = "d_key_refresh")]
    pub refresh: Duration,
    /// How long a rotated key keeps working.
    #[serde(default = "d_rotation_grace")]
    pub rotation_grace: Duration,
}

fn d_api_key_header() -> Spanned<String> {
    Spanned::new(
        "x-api-key".into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}
fn d_key_refresh() -> Duration {
    Duration::secs(5)
}
fn d_rotation_grace() -> Duration {
    Duration::secs(86_400)
}

/// Which part of a verified client certificate becomes the subject.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CertSubject {
    #[default]
    Cn,
    Subject,
    SanDns,
    SanUri,
    SanEmail,
    Fingerprint,
}

/// A verified client certificate (from a listener with `client_auth`) as identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsProvider {
    #[serde(default)]
    pub subject_from: CertSubject,
    /// Roles and scopes granted to given subjects.
    #[serde(default)]
    pub grants: Vec<Spanned<MtlsGrant>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsGrant {
    pub subject: Spanned<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Failed-authentication counting and lockout with exponential backoff.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForce {
    pub enabled: bool,
    /// Failures within `window` (per client IP, per API key id, per login username) before lockout.
    pub max_failures: u32,
    pub window: Duration,
    /// First lockout; each further lockout of the same key doubles it, up to `max_lockout`.
    pub lockout: Duration,
    pub max_lockout: Duration,
}

impl Default for BruteForce {
    fn default() -> Self {
        BruteForce {
            enabled: true,
            max_failures: 10,
            window: Duration::secs(600),
            lockout: Duration::secs(60),
            max_lockout: Duration::secs(3600),
        }
    }
}

/// Authentication and authorization for a route (or, under `guards:`, for every route).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub mode: Mode,
    /// Providers tried in order; the first that finds credentials decides.
    pub providers: Vec<Spanned<String>>,
    /// Requests without any credentials pass anonymously (bad credentials still get 401).
    #[serde(default)]
    pub optional: bool,
    /// Remove the credential (token or key) before the request goes upstream.
    #[serde(default)]
    pub strip_credentials: bool,
    /// Headers that carry the identity upstream. Inbound copies are always removed first.
    #[serde(default)]
    pub forward: ForwardIdentity,
    /// Authorization rules; the first whose methods and path match applies.
    #[serde(default)]
    pub rules: Vec<Spanned<AuthRule>>,
    /// Requests no rule matches: `allow` (any authenticated caller) or `deny` (403).
    #[serde(default)]
    pub unmatched: Unmatched,
    #[serde(default = "d_realm")]
    pub realm: String,
}

fn d_realm() -> String {
    "rampart".into()
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    #[default]
    Allow,
    Deny,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ForwardIdentity {
    #[serde(default)]
    pub subject: Option<Spanned<String>>,
    #[serde(default)]
    pub scopes: Option<Spanned<String>>,
    #[serde(default)]
    pub roles: Option<Spanned<String>>,
    /// Claim name → header name.
    #[serde(default)]
    pub claims: Vec<Spanned<ForwardClaim>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardClaim {
    pub claim: Spanned<String>,
    pub header: Spanned<String>,
}

/// One authorization rule: which requests it covers and what they need.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRule {
    /// A path template over the full request path: literal segments, `{name}` for one segment,
    /// and a final `**` for any rest.
    pub path: Spanned<String>,
    #[serde(default)]
    pub methods: Option<Vec<Spanned<String>>>,
    /// No authentication needed (credentials, if sent, are still checked).
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub scopes_all: Vec<String>,
    #[serde(default)]
    pub scopes_any: Vec<String>,
    #[serde(default)]
    pub roles_all: Vec<String>,
    #[serde(default)]
    pub roles_any: Vec<String>,
    /// Only these subjects (e.g. mTLS identities) may call.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Object-ownership (BOLA) checks; all must hold.
    #[serde(default)]
    pub owner: Vec<Spanned<OwnerRule>>,
}

/// `from` names the object id (`path:NAME`, `query:NAME`, `header:NAME`, `json:/pointer`); the
/// caller must own it: equal to `claim`'s value, or a member of it when the claim is an array.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRule {
    pub from: Spanned<String>,
    #[serde(default = "d_owner_claim")]
    pub claim: Spanned<String>,
    /// Callers with any of these roles skip the check.
    #[serde(default)]
    pub unless_roles: Vec<String>,
}

fn d_owner_claim() -> Spanned<String> {
    Spanned::new(
        "sub".into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// A login endpoint: answers with a failure status count against the username and client IP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub path: Spanned<String>,
    #[serde(default = "d_login_methods")]
    pub methods: Vec<Spanned<String>>,
    /// Where the username is: `json:/pointer` or `form:FIELD`.
    pub username: Spanned<String>,
    #[serde(default = "d_failure_status")]
    pub failure_status: Vec<u16>,
    #[serde(default = "d_login_body")]
    pub max_body_bytes: ByteSize,
}

fn d_login_methods() -> Vec<Spanned<String>> {
    vec![Spanned::new(
        "POST".into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )]
}
fn d_failure_status() -> Vec<u16> {
    vec![401, 403]
}
fn d_login_body() -> ByteSize {
    ByteSize(16 * 1024)
}

/// The OpenAPI positive security model for a route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenApi {
    /// The spec file (OpenAPI 3.0.x or 3.1.x, YAML or JSON), relative to the config file.
    pub spec: Spanned<String>,
    /// `block` refuses invalid requests; `monitor` logs what it would have refused.
    #[serde(default)]
    pub mode: Mode,
    /// Requests for paths or methods the spec does not declare.
    #[serde(default)]
    pub unknown: Mode,
    /// Operations marked `deprecated: true` (zombie APIs).
    #[serde(default)]
    pub deprecated: DeprecatedPolicy,
    /// `readOnly` properties sent in a request body (mass assignment).
    #[serde(default)]
    pub read_only: ReadOnlyPolicy,
    /// Query parameters the operation does not declare.
    #[serde(default)]
    pub unknown_query: UnknownQuery,
    /// What to do with responses that break the spec.
    #[serde(default)]
    pub responses: ResponsePolicy,
    /// Largest request body validated (larger bodies get 413).
    #[serde(default = "d_openapi_body")]
    pub max_body_bytes: ByteSize,
    /// Largest response body inspected (larger ones get 502 unless `responses: off`).
    #[serde(default = "d_openapi_response")]
    pub max_response_bytes: ByteSize,
    /// Path prefix the spec's paths sit under, replacing the base paths of its `servers`.
    #[serde(default)]
    pub base_path: Option<Spanned<String>>,
}

fn d_openapi_body() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn d_openapi_response() -> ByteSize {
    ByteSize(4 * 1024 * 1024)
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeprecatedPolicy {
    /// Let them through silently.
    Allow,
    /// Let them through and log a `deprecated_operation` event.
    #[default]
    Report,
    /// Answer 410 Gone.
    Block,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadOnlyPolicy {
    /// 400 naming the property.
    #[default]
    Reject,
    /// Remove the property before the upstream sees the body.
    Strip,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownQuery {
    #[default]
    Allow,
    Reject,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResponsePolicy {
    /// Responses are not checked.
    Off,
    /// Violations are logged as events; the response goes out unchanged.
    #[default]
    Monitor,
    /// Violations replace the response with a 502.
    Block,
    /// Undeclared and `writeOnly` properties are removed; other violations are logged.
    Strip,
}
