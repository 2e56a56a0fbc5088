//! The `waf` guard: runs a [`Transaction`] through CRS's phases as the request moves through
//! the proxy (1: request headers, 2: request body, 3: response headers, 4: response body,
//! 5: logging), and turns matched rules into security events.

use crate::engine::{Matched, Transaction};
use crate::rules::RuleSet;
use bytes::Bytes;
use http::StatusCode;
use rampart_core::guard::{Block, Guard, Mode, RequestContext, RequestHead, Step, Verdict};
use rampart_telemetry::{Action, SecurityEvent};
use std::sync::Arc;

/// Guard settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub max_body: usize,
    pub max_response: usize,
    pub skip_typed_inputs: bool,
}

pub struct WafGuard {
    pub rules: Arc<RuleSet>,
    pub s: Settings,
}

/// The transaction between phases, kept in the request context.
#[derive(Clone)]
struct Slot(Box<Transaction>, usize, bool);

fn version(v: http::Version) -> &'static [u8] {
    match v {
        http::Version::HTTP_09 => b"HTTP/0.9",
        http::Version::HTTP_10 => b"HTTP/1.0",
        http::Version::HTTP_2 => b"HTTP/2.0",
        http::Version::HTTP_3 => b"HTTP/3.0",
        _ => b"HTTP/1.1",
    }
}

/// Names that suggest a secret: their values never reach the log.
fn sensitive(var: &str) -> bool {
    let l = var.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "token",
        "secret",
        "authorization",
        "api_key",
        "apikey",
        "session",
        "cookie",
    ]
    .iter()
    .any(|k| l.contains(k))
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// One matched rule as a security event.
pub fn event(m: &Matched) -> SecurityEvent {
    let secret = sensitive(&m.var);
    let value = if secret {
        "***".to_string()
    } else {
        truncate(&String::from_utf8_lossy(&m.value), 120)
    };
    let data = if secret {
        "***".to_string()
    } else {
        truncate(&m.data, 200)
    };
    SecurityEvent {
        guard: "waf",
        rule: m.id.to_string(),
        message: m.msg.clone(),
        action: Action::Logged,
        status: None,
        detail: serde_json::json!({
            "phase": m.phase,
            "variable": m.var,
            "matched": value,
            "data": data,
            "severity": m.severity.map(severity_name),
            "tags": m.tags.iter().filter(|t| !t.starts_with("OWASP_CRS") && !t.starts_with("capec")).collect::<Vec<_>>(),
        }),
    }
}

pub fn severity_name(s: u8) -> &'static str {
    match s {
        0 => "EMERGENCY",
        1 => "ALERT",
        2 => "CRITICAL",
        3 => "ERROR",
        4 => "WARNING",
        5 => "NOTICE",
        6 => "INFO",
        _ => "DEBUG",
    }
}

impl WafGuard {
    fn take(ctx: &mut RequestContext) -> Option<Slot> {
        ctx.extensions.remove::<Slot>()
    }

    /// Record new matches; turn a new interruption into a block.
    fn finish(&self, mut slot: Slot, ctx: &mut RequestContext) -> Verdict {
        let tx = &slot.0;
        let stop = tx.interruption.as_ref().map(|i| i.id);
        for m in &tx.matched[slot.1..] {
            if Some(m.id) != stop && m.log {
                ctx.event(event(m));
            }
        }
        slot.1 = tx.matched.len();
        let mut verdict = Verdict::Continue;
        if let (Some(i), false) = (&tx.interruption, slot.2) {
            slot.2 = true;
            let ids: Vec<String> = tx.matched.iter().map(|m| m.id.to_string()).collect();
            let score = |k: &str| tx.data.tx_get(k).map(crate::operator::atoi);
            let status = StatusCode::from_u16(i.status).unwrap_or(StatusCode::FORBIDDEN);
            let message = if i.msg.is_empty() {
                format!("WAF rule {} denied the request", i.id)
            } else {
                i.msg.clone()
            };
            ctx.tags.push("waf".into());
            verdict = Verdict::Block(Block::new(status, i.id.to_string(), message).detail(
                serde_json::json!({
                    "rules": ids,
                    "inbound_anomaly_score": score("blocking_inbound_anomaly_score"),
                    "outbound_anomaly_score": score("blocking_outbound_anomaly_score"),
                }),
            ));
        }
        ctx.extensions.insert(slot);
        verdict
    }

    fn skip_typed(&self, tx: &mut Transaction, ctx: &RequestContext) {
        if !self.s.skip_typed_inputs {
            return;
        }
        let Some(t) = ctx.typed_inputs.as_deref() else {
            return;
        };
        let before = tx.data.args_get.len() + tx.data.args_post.len();
        tx.data
            .args_get
            .retain(|(k, _)| !t.query.iter().any(|q| q.as_bytes() == k.as_slice()));
        if !t.body.is_empty() && tx.data.processor == Some("JSON") {
            let names: Vec<Vec<u8>> = t.body.iter().map(|p| pointer_to_name(p)).collect();
            tx.data
                .args_post
                .retain(|(k, _)| !names.iter().any(|n| name_matches(n, k)));
        }
        if tx.data.args_get.len() + tx.data.args_post.len() != before {
            // Arguments went away: what was transformed and scanned is recomputed.
            tx.invalidate_cache();
        }
    }
}

/// `/items/*/qty` → `json.items.*.qty`.
fn pointer_to_name(p: &str) -> Vec<u8> {
    let mut out = b"json".to_vec();
    for seg in p.split('/').skip(1) {
        out.push(b'.');
        out.extend_from_slice(seg.replace("~1", "/").replace("~0", "~").as_bytes());
    }
    out
}

fn name_matches(pattern: &[u8], name: &[u8]) -> bool {
    let p: Vec<&[u8]> = pattern.split(|&c| c == b'.').collect();
    let n: Vec<&[u8]> = name.split(|&c| c == b'.').collect();
    p.len() == n.len()
        && p.iter()
            .zip(&n)
            .all(|(a, b)| *a == b"*" && b.iter().all(u8::is_ascii_digit) || a == b)
}

impl Guard for WafGuard {
    fn name(&self) -> &'static str {
        "waf"
    }

    fn mode(&self) -> Mode {
        self.s.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let mut tx = Transaction::new(self.rules.clone());
        let target = req
            .uri
            .path_and_query()
            .map(|p| p.as_str().as_bytes().to_vec())
            .unwrap_or_else(|| req.uri.to_string().into_bytes());
        tx.request_head(
            req.method.as_str().as_bytes(),
            &target,
            version(req.version),
            req.headers
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
            std::net::SocketAddr::new(ctx.client_ip, ctx.conn.peer.port()),
            ctx.conn.local,
            &ctx.request_id,
        );
        self.skip_typed(&mut tx, ctx);
        tx.phase(1);
        let body_phase_here = !tx.wants_request_body();
        if body_phase_here {
            tx.phase(2);
        }
        self.finish(Slot(Box::new(tx), 0, false), ctx).into()
    }

    fn request_body_limit(&self, _req: &RequestHead, ctx: &RequestContext) -> Option<usize> {
        let slot = ctx.extensions.get::<Slot>()?;
        slot.0.wants_request_body().then_some(self.s.max_body)
    }

    fn on_request_body<'a>(
        &'a self,
        _req: &'a RequestHead,
        body: &'a mut Bytes,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let Some(mut slot) = Self::take(ctx) else {
            return Verdict::Continue.into();
        };
        slot.0.request_body(body);
        self.skip_typed(&mut slot.0, ctx);
        slot.0.phase(2);
        self.finish(slot, ctx).into()
    }

    fn on_response_headers(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestContext,
    ) -> Verdict {
        let Some(mut slot) = Self::take(ctx) else {
            return Verdict::Continue;
        };
        // Phase 2 always runs before the response (a request whose body nobody read).
        slot.0.phase(2);
        slot.0.response_head(
            resp.status.as_u16(),
            version(resp.version),
            resp.headers
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
        );
        slot.0.phase(3);
        if !slot.0.wants_response_body() {
            slot.0.phase(4);
            slot.0.phase(5);
        }
        self.finish(slot, ctx)
    }

    fn response_body_limit(
        &self,
        _resp: &http::response::Parts,
        ctx: &RequestContext,
    ) -> Option<usize> {
        let slot = ctx.extensions.get::<Slot>()?;
        slot.0.wants_response_body().then_some(self.s.max_response)
    }

    fn on_response_body(
        &self,
        _resp: &mut http::response::Parts,
        body: &mut Bytes,
        ctx: &mut RequestContext,
    ) -> Verdict {
        let Some(mut slot) = Self::take(ctx) else {
            return Verdict::Continue;
        };
        slot.0.response_body(body);
        slot.0.phase(4);
        slot.0.phase(5);
        self.finish(slot, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_names() {
        assert!(name_matches(
            &pointer_to_name("/items/*/qty"),
            b"json.items.3.qty"
        ));
        assert!(!name_matches(
            &pointer_to_name("/items/*/qty"),
            b"json.items.x.qty"
        ));
        assert!(name_matches(&pointer_to_name("/id"), b"json.id"));
    }
}
