//! `ratelimit.auto_bans`: ban client addresses that other guards keep blocking. Runs in the log
//! phase, when the deciding guard of the request is known: `after` blocks by one of the listed
//! guards (optionally only those whose security event names one of `rules`) from one address
//! within `within` put that address on the ban list for `ban_for`. Counts are per instance;
//! the ban itself is shared through Redis when the rate-limit store is Redis.

use crate::{ban_now, strike, Bans, Strikes};
use rampart_config::Mode;
use rampart_core::guard::{Guard, RequestContext};
use rampart_telemetry::{Action, SecurityEvent};
use std::sync::Arc;

pub struct AutoBanGuard {
    pub(crate) name: Arc<str>,
    /// The key in the strike table (`auto:NAME`, apart from rate-limit names).
    pub(crate) key: Arc<str>,
    pub(crate) guards: Vec<String>,
    pub(crate) rules: Vec<String>,
    pub(crate) after: u32,
    pub(crate) within_ms: u64,
    pub(crate) ban_ms: u64,
    pub(crate) bans: Bans,
    pub(crate) strikes: Strikes,
}

impl AutoBanGuard {
    /// Does this finished request count as a strike?
    fn counts(&self, ctx: &RequestContext) -> bool {
        if ctx.verdict != "blocked" {
            return false;
        }
        let Some(by) = ctx.deciding_guard else {
            return false;
        };
        if !self.guards.iter().any(|g| g == by) {
            return false;
        }
        self.rules.is_empty()
            || ctx
                .events
                .iter()
                .any(|e| e.guard == by && self.rules.contains(&e.rule))
    }
}

impl Guard for AutoBanGuard {
    fn name(&self) -> &'static str {
        "auto_ban"
    }
    fn mode(&self) -> Mode {
        Mode::Block
    }
    fn on_log(&self, ctx: &mut RequestContext, _status: u16) {
        if !self.counts(ctx) {
            return;
        }
        let ip = ctx.client_ip;
        if !strike(&self.strikes, &self.key, ip, self.after, self.within_ms) {
            return;
        }
        ban_now(&self.bans, ip, self.ban_ms);
        ctx.event(SecurityEvent {
            guard: "auto_ban",
            rule: format!("ban:{}", self.name),
            message: format!(
                "{ip} banned for {}s after {} blocks by {} (`{}`)",
                self.ban_ms / 1000,
                self.after,
                self.guards.join("/"),
                self.name
            ),
            action: Action::Logged,
            status: None,
            detail: serde_json::json!({ "ip": ip.to_string(), "ban_s": self.ban_ms / 1000 }),
        });
    }
}
