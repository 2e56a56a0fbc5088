//! The typed security event that guards emit.

use serde::Serialize;

/// What was done about what a guard saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The request was refused.
    Blocked,
    /// The guard is in monitor mode: it would have refused, the request went on.
    Monitored,
    /// Recorded for information only.
    Logged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Blocked => "blocked",
            Action::Monitored => "monitored",
            Action::Logged => "logged",
        }
    }
}

/// One security-relevant observation, tied to a request.
#[derive(Clone, Debug, Serialize)]
pub struct SecurityEvent {
    /// The guard that saw it (`limits`, `ip_filter`, ...).
    pub guard: &'static str,
    /// A short machine-readable reason or rule id (`body_too_large`, `942100`, ...).
    pub rule: String,
    /// A human-readable sentence.
    pub message: String,
    pub action: Action,
    /// The status the client got (or would have got in monitor mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Extra structured detail (matched fragment, score, ...); never raw secrets.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}
