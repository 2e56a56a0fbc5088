//! Prometheus metrics. Label values are `Arc<str>` so a lookup on the request path allocates nothing.

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// A shared label value (route or upstream name); cloning it is a reference-count bump.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::from(s))
    }
}

impl prometheus_client::encoding::EncodeLabelValue for Name {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: Name,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamError {
    pub upstream: Name,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardAction {
    pub guard: &'static str,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResult {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitResult {
    pub limit: Name,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectReason {
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Every metric Rampart exposes on the admin listener's `/metrics`.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteStatus, Counter>,
    pub request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub upstream_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<UpstreamError, Counter>,
    pub guard_decisions: Family<GuardAction, Counter>,
    pub open_connections: Gauge,
    pub released_connections: Gauge,
    pub open_tunnels: Gauge,
    pub refused_connections: Counter,
    pub config_reloads: Family<ReloadResult, Counter>,
    pub protocol_rejects: Family<RejectReason, Counter>,
    pub ratelimit_decisions: Family<LimitResult, Counter>,
    pub ratelimit_store_errors: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("rampart");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            request_duration.clone(),
        );
        let upstream_duration =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "upstream_duration_seconds",
            "Time waiting for the upstream's response head, by route",
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<UpstreamError, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by upstream and kind (connect, timeout, unavailable, overloaded, protocol)",
            upstream_errors.clone(),
        );
        let guard_decisions = Family::<GuardAction, Counter>::default();
        registry.register(
            "guard_decisions",
            "Guard verdicts other than continue, by guard and action",
            guard_decisions.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let released_connections = Gauge::default();
        registry.register(
            "released_connections",
            "Open HTTP/1.1 connections that hold no HTTP state: not yet sent a byte, or idle longer than timeouts.idle_release",
            released_connections.clone(),
        );
        let open_tunnels = Gauge::default();
        registry.register(
            "open_tunnels",
            "Upgraded (WebSocket) connections currently tunnelled to an upstream",
            open_tunnels.clone(),
        );
        let refused_connections = Counter::default();
        registry.register(
            "refused_connections",
            "Client connections closed at accept because max_connections was reached",
            refused_connections.clone(),
        );
        let config_reloads = Family::<ReloadResult, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, failed)",
            config_reloads.clone(),
        );
        // Present from the start so dashboards and alerts see zeros, not gaps.
        for result in ["ok", "failed"] {
            drop(config_reloads.get_or_create(&ReloadResult { result }));
        }
        let protocol_rejects = Family::<RejectReason, Counter>::default();
        registry.register(
            "protocol_rejects",
            "Requests refused by the core's protocol hardening, by reason",
            protocol_rejects.clone(),
        );
        let ratelimit_decisions = Family::<LimitResult, Counter>::default();
        registry.register(
            "ratelimit_decisions",
            "Rate-limit checks by limit and result (allowed, limited, store_error)",
            ratelimit_decisions.clone(),
        );
        let ratelimit_store_errors = Counter::default();
        registry.register(
            "ratelimit_store_errors",
            "Rate-limit checks the shared store (Redis) could not answer in time",
            ratelimit_store_errors.clone(),
        );
        Arc::new(Metrics {
            ratelimit_decisions,
            ratelimit_store_errors,
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            guard_decisions,
            open_connections,
            released_connections,
            open_tunnels,
            refused_connections,
            config_reloads,
            protocol_rejects,
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The latency histograms of one route, resolved once per config snapshot so the request
    /// path does not look them up.
    pub fn route_histograms(&self, route: &str) -> (Histogram, Histogram) {
        let label = RouteLabel {
            route: Name::from(route),
        };
        let d = self.request_duration.get_or_create(&label).clone();
        let u = self.upstream_duration.get_or_create(&label).clone();
        (d, u)
    }

    pub fn reject(&self, reason: &'static str) {
        self.protocol_rejects
            .get_or_create(&RejectReason { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn encodes_counters() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RouteStatus {
                route: Name::from("users"),
                status: 200,
            })
            .inc();
        m.reject("smuggling");
        let text = m.encode();
        assert!(
            text.contains("rampart_requests_total{route=\"users\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("rampart_protocol_rejects_total{reason=\"smuggling\"} 1"));
    }
}
