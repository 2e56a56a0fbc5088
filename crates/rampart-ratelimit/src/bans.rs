//! Temporary bans: client addresses refused for a while. Fed by rate limits (`ban_after`
//! refusals within a limit's period ban the address for `ban_for`), by operators through the
//! admin API (`/bans`) and `rampart bans`, and open to any guard through [`Bans::ban`].
//! Kept in memory, or in Redis (shared by every instance) when the rate-limit store is Redis.

use crate::redis_store::RedisStore;
use http::{HeaderValue, StatusCode};
use rampart_config::Mode;
use rampart_core::admin::{AdminExtension, AdminRequest};
use rampart_core::guard::{BoxFuture, Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::upstream::now_ms;
use rampart_core::Block;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The ban list. Cheap to clone.
#[derive(Clone, Default)]
pub struct Bans {
    memory: Arc<Mutex<HashMap<IpAddr, u64>>>,
    redis: Arc<Mutex<Option<Arc<RedisStore>>>>,
    enabled: Arc<std::sync::atomic::AtomicBool>,
}

fn redis_key(ip: &IpAddr) -> String {
    format!("rampart:ban:{ip}")
}

impl Bans {
    pub(crate) fn configure(&self, redis: Option<Arc<RedisStore>>, enabled: bool) {
        if let Ok(mut g) = self.redis.lock() {
            *g = redis;
        }
        self.enabled
            .store(enabled, std::sync::atomic::Ordering::Relaxed);
    }

    fn redis(&self) -> Option<Arc<RedisStore>> {
        self.redis.lock().ok().and_then(|g| g.clone())
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ban `ip` for `ttl_ms`. With Redis the ban is shared; it is also kept locally so this
    /// instance enforces it even if Redis goes away.
    pub async fn ban(&self, ip: IpAddr, ttl_ms: u64) -> Result<(), String> {
        self.ban_local(ip, ttl_ms);
        self.ban_shared(ip, ttl_ms).await
    }

    /// Ban in this instance's memory, at once.
    pub fn ban_local(&self, ip: IpAddr, ttl_ms: u64) {
        if let Ok(mut m) = self.memory.lock() {
            m.insert(ip, now_ms() + ttl_ms);
        }
    }

    /// Record the ban in the shared store, if there is one.
    pub async fn ban_shared(&self, ip: IpAddr, ttl_ms: u64) -> Result<(), String> {
        if let Some(r) = self.redis() {
            r.set_px(&redis_key(&ip), ttl_ms).await?;
        }
        Ok(())
    }

    pub async fn unban(&self, ip: IpAddr) -> Result<bool, String> {
        let local = self
            .memory
            .lock()
            .map(|mut m| m.remove(&ip).is_some())
            .unwrap_or(false);
        let shared = match self.redis() {
            Some(r) => r.del(&redis_key(&ip)).await?,
            None => false,
        };
        Ok(local || shared)
    }

    /// Milliseconds left on a ban of `ip` in this instance's memory.
    fn local_remaining(&self, ip: IpAddr) -> Option<u64> {
        let now = now_ms();
        let mut m = self.memory.lock().ok()?;
        if m.is_empty() {
            return None;
        }
        match m.get(&ip) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                m.remove(&ip);
                None
            }
            None => None,
        }
    }

    /// Milliseconds left on a ban of `ip`, if banned (here or in the shared store).
    pub async fn remaining(&self, ip: IpAddr) -> Result<Option<u64>, String> {
        if let Some(ms) = self.local_remaining(ip) {
            return Ok(Some(ms));
        }
        match self.redis() {
            Some(r) => r.pttl(&redis_key(&ip)).await,
            None => Ok(None),
        }
    }

    /// Current bans with milliseconds left.
    pub async fn list(&self) -> Result<Vec<(String, u64)>, String> {
        let now = now_ms();
        let mut out: HashMap<String, u64> = self
            .memory
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, &u)| u > now)
                    .map(|(ip, &u)| (ip.to_string(), u - now))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(r) = self.redis() {
            for (k, ttl) in r.scan_ttl("rampart:ban:*").await? {
                if let Some(ip) = k.strip_prefix("rampart:ban:") {
                    out.insert(ip.to_string(), ttl);
                }
            }
        }
        let mut v: Vec<_> = out.into_iter().collect();
        v.sort();
        Ok(v)
    }
}

fn banned(ip: IpAddr, ms: u64) -> Verdict {
    let secs = ms.div_ceil(1000).max(1);
    Verdict::Block(
        Block::new(
            StatusCode::FORBIDDEN,
            "banned",
            format!("client {ip} is banned for {secs}s more"),
        )
        .header(http::header::RETRY_AFTER, HeaderValue::from(secs))
        .detail(serde_json::json!({ "ip": ip.to_string(), "remaining_s": secs })),
    )
}

/// `bans`: refuses banned client addresses (403 with Retry-After).
pub struct BanGuard {
    pub(crate) bans: Bans,
}

impl Guard for BanGuard {
    fn name(&self) -> &'static str {
        "bans"
    }
    fn mode(&self) -> Mode {
        Mode::Block
    }
    fn on_request_headers<'a>(
        &'a self,
        _req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let ip = ctx.client_ip;
        if let Some(ms) = self.bans.local_remaining(ip) {
            return banned(ip, ms).into();
        }
        let Some(redis) = self.bans.redis() else {
            return Verdict::Continue.into();
        };
        Step::Pending(Box::pin(async move {
            match redis.pttl(&redis_key(&ip)).await {
                Ok(Some(ms)) => banned(ip, ms),
                // No ban, or the shared list is unreachable (local bans were checked).
                _ => Verdict::Continue,
            }
        }))
    }
}

/// `/bans` on the admin listener: `GET` lists, `POST {"ip": "...", "ttl": "10m"}` bans,
/// `DELETE ?ip=...` lifts a ban. Changes are accepted only from loopback peers.
pub struct BansAdmin {
    pub bans: Bans,
}

fn json_err(status: StatusCode, msg: &str) -> (StatusCode, String) {
    (status, serde_json::json!({ "error": msg }).to_string())
}

impl AdminExtension for BansAdmin {
    fn paths(&self) -> &[&'static str] {
        &["/bans"]
    }

    fn handle<'a>(&'a self, req: AdminRequest<'a>) -> BoxFuture<'a, (StatusCode, String)> {
        Box::pin(async move {
            if *req.method != http::Method::GET && !req.peer.ip().is_loopback() {
                return json_err(
                    StatusCode::FORBIDDEN,
                    "ban changes are accepted from loopback only",
                );
            }
            if !self.bans.enabled() {
                return json_err(
                    StatusCode::CONFLICT,
                    "bans are not enabled (set ratelimit.bans: true or a limit's ban_after)",
                );
            }
            match *req.method {
                http::Method::GET => match self.bans.list().await {
                    Ok(v) => (
                        StatusCode::OK,
                        serde_json::json!({ "bans": v.iter().map(|(ip, ms)| serde_json::json!({"ip": ip, "remaining_s": ms.div_ceil(1000)})).collect::<Vec<_>>() }).to_string(),
                    ),
                    Err(e) => json_err(StatusCode::SERVICE_UNAVAILABLE, &e),
                },
                http::Method::POST => {
                    let v: serde_json::Value = match serde_json::from_slice(req.body) {
                        Ok(v) => v,
                        Err(e) => return json_err(StatusCode::BAD_REQUEST, &format!("body must be JSON: {e}")),
                    };
                    let Some(ip) = v.get("ip").and_then(|i| i.as_str()).and_then(|i| i.parse::<IpAddr>().ok()) else {
                        return json_err(StatusCode::BAD_REQUEST, "`ip` must be an IP address");
                    };
                    let ttl = v.get("ttl").and_then(|t| t.as_str()).unwrap_or("10m");
                    let ttl = match rampart_config::units::parse_duration(ttl) {
                        Ok(d) if !d.is_zero() => d,
                        _ => return json_err(StatusCode::BAD_REQUEST, "`ttl` must be a duration such as 30s or 10m"),
                    };
                    match self.bans.ban(ip, ttl.as_millis() as u64).await {
                        Ok(()) => (StatusCode::CREATED, serde_json::json!({ "banned": ip.to_string(), "ttl_s": ttl.as_secs() }).to_string()),
                        Err(e) => json_err(StatusCode::SERVICE_UNAVAILABLE, &e),
                    }
                }
                http::Method::DELETE => {
                    let ip = req
                        .query
                        .unwrap_or("")
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("ip="))
                        .and_then(|i| i.parse::<IpAddr>().ok());
                    let Some(ip) = ip else {
                        return json_err(StatusCode::BAD_REQUEST, "use DELETE /bans?ip=ADDRESS");
                    };
                    match self.bans.unban(ip).await {
                        Ok(true) => (StatusCode::OK, serde_json::json!({ "unbanned": ip.to_string() }).to_string()),
                        Ok(false) => json_err(StatusCode::NOT_FOUND, "not banned"),
                        Err(e) => json_err(StatusCode::SERVICE_UNAVAILABLE, &e),
                    }
                }
                _ => json_err(StatusCode::METHOD_NOT_ALLOWED, "GET, POST or DELETE"),
            }
        })
    }
}
