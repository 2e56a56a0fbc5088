//! `concurrency_limit`: at most `max` requests in flight per key; a request holds its slot until
//! its response has been sent (the log phase). Over the limit: 429 with `Retry-After: 1`.
//! Counted per instance.

use crate::KeyPart;
use http::{HeaderValue, StatusCode};
use rampart_config::Mode;
use rampart_core::guard::{Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::Block;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// In-flight counts per key, shared by every guard instance (and across reloads).
pub type InFlightCounts = Arc<Mutex<HashMap<String, u64>>>;

pub struct ConcurrencyGuard {
    pub(crate) name: Arc<str>,
    pub(crate) parts: Vec<KeyPart>,
    pub(crate) v6_prefix: u8,
    pub(crate) max: u64,
    pub(crate) mode: Mode,
    pub(crate) counts: InFlightCounts,
}

/// Marks a request that holds a slot, so the log phase releases exactly what was taken.
#[derive(Clone)]
struct Held(Vec<(Arc<str>, String)>);

impl Guard for ConcurrencyGuard {
    fn name(&self) -> &'static str {
        "concurrency_limit"
    }
    fn mode(&self) -> Mode {
        self.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let Some(mut key) =
            crate::build_key(&self.name, &self.parts, self.v6_prefix, req, ctx, None)
        else {
            return Verdict::Continue.into();
        };
        key.insert_str(0, "cc:");
        let admitted = {
            let Ok(mut m) = self.counts.lock() else {
                return Verdict::Continue.into();
            };
            let n = m.entry(key.clone()).or_insert(0);
            if *n >= self.max {
                false
            } else {
                *n += 1;
                true
            }
        };
        if !admitted {
            return Verdict::Block(
                Block::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("concurrency_limit:{}", self.name),
                    format!(
                        "more than {} requests in flight for `{}`",
                        self.max, self.name
                    ),
                )
                .header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
            )
            .into();
        }
        let mut held = ctx.extensions.remove::<Held>().unwrap_or(Held(Vec::new()));
        held.0.push((self.name.clone(), key));
        ctx.extensions.insert(held);
        Verdict::Continue.into()
    }

    fn on_log(&self, ctx: &mut RequestContext, _status: u16) {
        let Some(held) = ctx.extensions.get::<Held>() else {
            return;
        };
        let Ok(mut m) = self.counts.lock() else {
            return;
        };
        for (name, key) in &held.0 {
            if **name != *self.name {
                continue;
            }
            if let Some(n) = m.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(key);
                }
            }
        }
    }
}
