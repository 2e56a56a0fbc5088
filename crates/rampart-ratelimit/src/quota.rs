//! `quota`: at most `limit` requests per key per calendar day or month (UTC). Counters live in
//! Redis (shared, expiring at the window's end) or in memory, saved to `ratelimit.quota_file`
//! once a second so a restart does not reset them.

use crate::redis_store::RedisStore;
use crate::KeyPart;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use rampart_config::{Mode, OnStoreFailure, QuotaWindow};
use rampart_core::guard::{Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::Block;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day number.
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// The window containing `now_s` (UTC seconds): its id and its end (UTC seconds).
pub fn window(per: QuotaWindow, now_s: u64) -> (u64, u64) {
    let days = (now_s / 86_400) as i64;
    match per {
        QuotaWindow::Day => (days as u64, (days as u64 + 1) * 86_400),
        QuotaWindow::Month => {
            let (y, m) = civil_month(days);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1) as u64 * 86_400;
            ((y * 12 + m) as u64, end)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Quota counters in memory, optionally saved to a file.
#[derive(Default)]
pub struct QuotaStore {
    counts: Mutex<HashMap<String, (u64, u64)>>,
    file: Mutex<Option<PathBuf>>,
    dirty: AtomicBool,
    saver: OnceLock<()>,
}

impl QuotaStore {
    /// Use `path` for persistence; loads it the first time (a corrupt file is an error, not a
    /// silent reset).
    pub fn configure(&self, path: Option<PathBuf>) -> Result<(), String> {
        let Ok(mut f) = self.file.lock() else {
            return Err("quota store poisoned".into());
        };
        if *f == path {
            return Ok(());
        }
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => {
                    let saved: HashMap<String, (u64, u64)> = serde_json::from_slice(&bytes)
                        .map_err(|e| format!("quota file `{}` is not valid: {e}", p.display()))?;
                    if let Ok(mut c) = self.counts.lock() {
                        for (k, v) in saved {
                            c.entry(k).or_insert(v);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot read quota file `{}`: {e}", p.display())),
            }
        }
        *f = path;
        Ok(())
    }

    /// Count one request for `key` in window `wid`; `Some(used)` if allowed.
    fn take(&self, key: &str, wid: u64, limit: u64) -> Option<u64> {
        let mut c = self.counts.lock().ok()?;
        if c.len() > 100_000 {
            c.retain(|_, (w, _)| *w >= wid.saturating_sub(1));
        }
        let e = c.entry(key.to_string()).or_insert((wid, 0));
        if e.0 != wid {
            *e = (wid, 0);
        }
        if e.1 >= limit {
            return None;
        }
        e.1 += 1;
        self.dirty.store(true, Ordering::Relaxed);
        Some(e.1)
    }

    /// Start the once-a-second saver (needs the runtime, so it starts on first use).
    fn ensure_saver(self: &Arc<Self>) {
        if self.saver.get().is_some() {
            return;
        }
        let _ = self.saver.set(());
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(store) = me.upgrade() else { return };
                if let Err(e) = store.save() {
                    tracing::warn!(error = %e, "could not save quota counters");
                }
            }
        });
    }

    /// Write the counters if they changed (atomically: temp file, then rename).
    pub fn save(&self) -> Result<(), String> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let path = match self.file.lock().ok().and_then(|f| f.clone()) {
            Some(p) => p,
            None => return Ok(()),
        };
        let json = {
            let c = self.counts.lock().map_err(|_| "poisoned")?;
            serde_json::to_vec(&*c).map_err(|e| e.to_string())?
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

pub(crate) enum Backend {
    Memory(Arc<QuotaStore>),
    Redis(Arc<RedisStore>, OnStoreFailure, Arc<QuotaStore>),
}

pub struct QuotaGuard {
    pub(crate) name: Arc<str>,
    pub(crate) parts: Vec<KeyPart>,
    pub(crate) v6_prefix: u8,
    pub(crate) limit: u64,
    pub(crate) per: QuotaWindow,
    pub(crate) mode: Mode,
    pub(crate) backend: Backend,
}

impl QuotaGuard {
    fn over(&self, end_s: u64, now_s: u64) -> Verdict {
        let retry = end_s.saturating_sub(now_s).max(1);
        let window_s = match self.per {
            QuotaWindow::Day => 86_400,
            QuotaWindow::Month => 2_592_000,
        };
        let policy = format!("\"{}\";q={};w={window_s}", self.name, self.limit);
        let rl = format!("\"{}\";r=0;t={retry}", self.name);
        Verdict::Block(
            Block::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("quota:{}", self.name),
                format!(
                    "quota `{}` of {} per {:?} used up",
                    self.name, self.limit, self.per
                ),
            )
            .header(http::header::RETRY_AFTER, HeaderValue::from(retry))
            .header(
                HeaderName::from_static("ratelimit-policy"),
                HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
            )
            .header(
                HeaderName::from_static("ratelimit"),
                HeaderValue::from_str(&rl).unwrap_or(HeaderValue::from_static("")),
            ),
        )
    }
}

impl Guard for QuotaGuard {
    fn name(&self) -> &'static str {
        "quota"
    }
    fn mode(&self) -> Mode {
        self.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let Some(key) = crate::build_key(&self.name, &self.parts, self.v6_prefix, req, ctx, None)
        else {
            return Verdict::Continue.into();
        };
        let now_s = unix_now();
        let (wid, end_s) = window(self.per, now_s);
        let key = format!("rampart:quota:{key}:{wid}");
        match &self.backend {
            Backend::Memory(store) => {
                store.ensure_saver();
                match store.take(&key, wid, self.limit) {
                    Some(_) => Verdict::Continue.into(),
                    None => self.over(end_s, now_s).into(),
                }
            }
            Backend::Redis(redis, on_failure, local) => {
                let on_failure = *on_failure;
                Step::Pending(Box::pin(async move {
                    // Keep the key a day past the window's end.
                    match redis
                        .quota_take(&key, self.limit, (end_s + 86_400) * 1000)
                        .await
                    {
                        Ok(true) => Verdict::Continue,
                        Ok(false) => self.over(end_s, now_s),
                        Err(e) => {
                            tracing::debug!(error = %e, "quota store unavailable");
                            match on_failure {
                                OnStoreFailure::FailOpen => match local.take(&key, wid, self.limit)
                                {
                                    Some(_) => Verdict::Continue,
                                    None => self.over(end_s, now_s),
                                },
                                OnStoreFailure::FailClosed => Verdict::Block(
                                    Block::new(
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        "ratelimit_store_unavailable",
                                        "quota store unavailable and on_failure is fail_closed",
                                    )
                                    .header(
                                        http::header::RETRY_AFTER,
                                        HeaderValue::from_static("1"),
                                    ),
                                ),
                            }
                        }
                    }
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_windows() {
        // 2026-11-23T10:00:00Z
        let t = days_from_civil(2026, 11, 23) as u64 * 86_400 + 36_000;
        let (d, dend) = window(QuotaWindow::Day, t);
        assert_eq!(dend - t, 14 * 3600);
        assert_eq!(d, days_from_civil(2026, 11, 23) as u64);
        let (m, mend) = window(QuotaWindow::Month, t);
        assert_eq!(m, 2026 * 12 + 11);
        assert_eq!(mend, days_from_civil(2026, 12, 1) as u64 * 86_400);
        let dec = days_from_civil(2026, 12, 31) as u64 * 86_400;
        assert_eq!(
            window(QuotaWindow::Month, dec).1,
            days_from_civil(2027, 1, 1) as u64 * 86_400
        );
        assert_eq!(civil_month(days_from_civil(2024, 2, 29)), (2024, 2));
    }

    #[test]
    fn counters_survive_a_restart_through_the_file() {
        let path =
            std::env::temp_dir().join(format!("rampart-quota-unit-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = QuotaStore::default();
        a.configure(Some(path.clone())).unwrap();
        for _ in 0..3 {
            assert!(a.take("k", 7, 3).is_some());
        }
        assert!(a.take("k", 7, 3).is_none());
        a.save().unwrap();
        let b = QuotaStore::default();
        b.configure(Some(path.clone())).unwrap();
        assert!(
            b.take("k", 7, 3).is_none(),
            "restart does not reset the quota"
        );
        assert!(b.take("k", 8, 3).is_some(), "a new window starts fresh");
        std::fs::write(&path, b"not json").unwrap();
        assert!(QuotaStore::default().configure(Some(path.clone())).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
