//! The compiled, immutable runtime form of a config. A reload builds a new [`Snapshot`] and
//! swaps it in atomically; requests in flight keep the one they started with.

use crate::guard::Guard;
use crate::upstream::Upstream;
use http::{HeaderName, Method};
use ipnet::IpNet;
use rampart_config::validate::parse_cidr;
use rampart_config::{ConfigError, ConfigErrors, LoadedConfig, PathPolicy};
use std::sync::Arc;
use std::time::Duration;

/// The guards the binary wires in, compiled from the same config.
pub struct BuiltGuards {
    /// Run once per connection (e.g. the global IP filter).
    pub connection: Vec<Arc<dyn Guard>>,
    /// One chain per config route, in config order.
    pub routes: Vec<Vec<Arc<dyn Guard>>>,
    /// The chain for requests that match no route (they get 404, but response guards such as
    /// security headers still run).
    pub unrouted: Vec<Arc<dyn Guard>>,
}

/// Builds the guards for a config. Provided by the binary so the core stays free of security
/// logic.
pub type GuardBuilder =
    dyn Fn(&LoadedConfig) -> Result<BuiltGuards, Vec<ConfigError>> + Send + Sync;

pub struct Route {
    pub name: Arc<str>,
    host: Option<HostMatch>,
    prefix: String,
    methods: Option<Vec<Method>>,
    pub upstream: Arc<Upstream>,
    pub strip_prefix: bool,
    /// Pass WebSocket upgrades through (see [`crate::tunnel`]).
    pub websocket: bool,
    pub guards: Vec<Arc<dyn Guard>>,
    /// Length of the prefix without a trailing slash (for `strip_prefix`).
    pub prefix_len: usize,
    /// Request and upstream latency histograms of this route.
    pub duration: rampart_telemetry::metrics::Histogram,
    pub upstream_duration: rampart_telemetry::metrics::Histogram,
    /// This route's `requests` counters for the common statuses, taken from the family on
    /// first use: counting a request is then one atomic add, not a labelled map lookup.
    pub status_counters: StatusCounters,
}

/// Cached handles of one route's `rampart_requests_total{route, status}` counters for the
/// statuses most requests end with. The handles share their counts with the family's
/// entries (a reload's new snapshot fills its own cache from the same family).
#[derive(Default)]
pub struct StatusCounters {
    slots: [std::sync::OnceLock<rampart_telemetry::metrics::Counter>; CACHED_STATUSES.len()],
}

/// The statuses [`StatusCounters`] keeps a handle for.
const CACHED_STATUSES: [u16; 12] = [200, 201, 204, 304, 400, 401, 403, 404, 429, 502, 503, 504];

impl StatusCounters {
    /// The cached counter of `status`, made by `make` the first time; `None` for a status
    /// with no slot.
    pub fn get(
        &self,
        status: u16,
        make: impl FnOnce() -> rampart_telemetry::metrics::Counter,
    ) -> Option<&rampart_telemetry::metrics::Counter> {
        let i = CACHED_STATUSES.iter().position(|&s| s == status)?;
        Some(self.slots[i].get_or_init(make))
    }
}

enum HostMatch {
    Exact(String),
    Suffix(String),
}

impl Route {
    fn host_ok(&self, host: &str) -> bool {
        match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => h.eq_ignore_ascii_case(host),
            Some(HostMatch::Suffix(s)) => {
                host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
    fn path_ok(&self, path: &str) -> bool {
        if self.prefix == "/" {
            return true;
        }
        path.starts_with(&self.prefix)
            && (self.prefix.ends_with('/')
                || path.len() == self.prefix.len()
                || path.as_bytes()[self.prefix.len()] == b'/')
    }
}

/// Result of routing a request.
pub enum RouteMatch<'a> {
    Found(&'a Route),
    /// The path matched routes, but none allows this method.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

pub struct ListenerRuntime {
    pub name: Arc<str>,
    pub address: String,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub h2c: bool,
}

pub struct Snapshot {
    pub generation: u64,
    pub routes: Vec<Route>,
    pub listeners: Vec<ListenerRuntime>,
    pub connection_guards: Vec<Arc<dyn Guard>>,
    pub unrouted_guards: Vec<Arc<dyn Guard>>,
    pub trusted_proxies: Vec<IpNet>,
    pub request_id_header: HeaderName,
    pub path_policy: PathPolicy,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub idle_release: Duration,
    pub tunnel_idle: Duration,
    pub request_timeout: Duration,
    pub max_head_bytes: usize,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    pub shutdown_timeout: Duration,
}

impl Snapshot {
    /// Compile a validated config. Errors carry config locations.
    pub fn build(
        lc: &LoadedConfig,
        guards: &GuardBuilder,
        generation: u64,
        metrics: &rampart_telemetry::Metrics,
    ) -> Result<Snapshot, ConfigErrors> {
        let c = &lc.config;
        let mut errors = Vec::new();
        let built = match guards(lc) {
            Ok(b) => Some(b),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let mut upstreams = Vec::new();
        for u in &c.upstreams {
            match Upstream::new(lc, &u.value) {
                Ok(up) => upstreams.push(Arc::new(up)),
                Err(e) => errors.push(e),
            }
        }
        let mut listeners = Vec::new();
        for (i, l) in c.listeners.iter().enumerate() {
            let tls = match &l.value.tls {
                None => None,
                Some(t) => match crate::tls::server_config(lc, t) {
                    Ok(cfg) => Some(cfg),
                    Err(e) => {
                        errors.extend(e);
                        None
                    }
                },
            };
            let name = l
                .value
                .name
                .as_ref()
                .map(|n| n.value.clone())
                .unwrap_or_else(|| format!("listener{i}"));
            listeners.push(ListenerRuntime {
                name: Arc::from(name),
                address: l.value.address.value.clone(),
                tls,
                h2c: l.value.h2c,
            });
        }
        let mut routes = Vec::new();
        if let Some(built) = &built {
            for (i, r) in c.routes.iter().enumerate() {
                let r = &r.value;
                let Some(upstream) = upstreams.iter().find(|u| *u.name == *r.upstream.value) else {
                    continue;
                };
                let host = r.host.as_ref().map(|h| match h.value.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                    None => HostMatch::Exact(h.value.to_ascii_lowercase()),
                });
                let methods = r.methods.as_ref().map(|ms| {
                    ms.iter()
                        .filter_map(|m| Method::from_bytes(m.value.as_bytes()).ok())
                        .collect::<Vec<_>>()
                });
                let prefix = r.path_prefix.value.clone();
                let (duration, upstream_duration) = metrics.route_histograms(&r.name.value);
                routes.push(Route {
                    duration,
                    upstream_duration,
                    status_counters: StatusCounters::default(),
                    name: Arc::from(r.name.value.as_str()),
                    host,
                    prefix_len: prefix.trim_end_matches('/').len(),
                    prefix,
                    methods,
                    upstream: upstream.clone(),
                    strip_prefix: r.strip_prefix,
                    websocket: r.websocket,
                    guards: built.routes.get(i).cloned().unwrap_or_default(),
                });
            }
        }
        // Most specific first: host routes before any-host, then longer prefixes.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        let mut trusted = Vec::new();
        for p in &c.server.trusted_proxies {
            match parse_cidr(&p.value) {
                Ok(n) => trusted.push(n),
                Err(m) => errors.push(lc.error_at(p, m)),
            }
        }
        let request_id_header =
            match HeaderName::from_bytes(c.server.request_id_header.value.as_bytes()) {
                Ok(h) => h,
                Err(_) => {
                    errors.push(lc.error_at(&c.server.request_id_header, "invalid header name"));
                    HeaderName::from_static("x-request-id")
                }
            };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let built = built.unwrap_or(BuiltGuards {
            connection: Vec::new(),
            routes: Vec::new(),
            unrouted: Vec::new(),
        });
        let s = &c.server;
        Ok(Snapshot {
            generation,
            routes,
            listeners,
            connection_guards: built.connection,
            unrouted_guards: built.unrouted,
            trusted_proxies: trusted,
            request_id_header,
            path_policy: s.path.clone(),
            header_read_timeout: s.timeouts.header_read.0,
            idle_timeout: s.timeouts.idle.0,
            idle_release: s.timeouts.idle_release.0,
            tunnel_idle: s.timeouts.tunnel_idle.0,
            request_timeout: s.timeouts.request.0,
            max_head_bytes: s.max_request_head_bytes.0 as usize,
            max_connections: s.max_connections,
            h2_max_concurrent_streams: s.h2_max_concurrent_streams,
            shutdown_timeout: s.shutdown_timeout.0,
        })
    }

    pub fn route(&self, host: &str, path: &str, method: &Method) -> RouteMatch<'_> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut path_matched = false;
        for r in &self.routes {
            if !r.host_ok(host) || !r.path_ok(path) {
                continue;
            }
            match &r.methods {
                None => return RouteMatch::Found(r),
                Some(ms) if ms.contains(method) => return RouteMatch::Found(r),
                Some(ms) => {
                    path_matched = true;
                    for m in ms {
                        if !allowed.contains(m) {
                            allowed.push(m.clone());
                        }
                    }
                }
            }
        }
        if path_matched {
            RouteMatch::MethodNotAllowed(allowed)
        } else {
            RouteMatch::NotFound
        }
    }

    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}
