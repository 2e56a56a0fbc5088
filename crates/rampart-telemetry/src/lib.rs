//! Visibility for Rampart: the JSON access log and security events ([`log`]), and Prometheus
//! metrics ([`metrics`]). Nothing here blocks the request path: log lines go through a bounded
//! channel to a writer thread, metrics are atomics.

pub mod event;
pub mod log;
pub mod metrics;

pub use event::{Action, SecurityEvent};
pub use log::{AccessRecord, LogSink};
pub use metrics::Metrics;
