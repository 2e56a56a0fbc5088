//! Failed-authentication counters with lockout and exponential backoff.
//!
//! Keys are strings such as `ip:203.0.113.7`, `key:rk_ab12cd34ef` or `user:alice`. After
//! `max_failures` failures within `window`, the key is locked for `lockout`; each further lockout
//! of the same key doubles that, up to `max_lockout`. A success clears the failure count (the
//! lockout history decays after `max_lockout` without failures). State lives in memory, per
//! instance, and survives config reloads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    pub max_lockout: Duration,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    lockouts: u32,
    last_failure: Instant,
}

/// Entries kept at most; beyond it, idle entries are dropped first.
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
pub struct Lockouts {
    map: Mutex<HashMap<String, Entry>>,
}

impl Lockouts {
    /// Time left on a lockout of `key`, if locked.
    pub fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let until = map.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Count a failure; returns the lockout duration when this failure starts one.
    pub fn fail(&self, key: &str, p: &Policy, now: Instant) -> Option<Duration> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            let horizon = p.window.max(p.max_lockout);
            map.retain(|_, e| {
                now.duration_since(e.last_failure) < horizon
                    || e.locked_until.is_some_and(|t| t > now)
            });
            if map.len() >= MAX_ENTRIES {
                return None; // under a flood of distinct keys: the IP key still counts
            }
        }
        let e = map.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            window_start: now,
            locked_until: None,
            lockouts: 0,
            last_failure: now,
        });
        if now.duration_since(e.last_failure) >= p.max_lockout.max(p.window) {
            e.lockouts = 0; // quiet long enough: forget earlier lockouts
        }
        if now.duration_since(e.window_start) >= p.window {
            e.failures = 0;
            e.window_start = now;
        }
        e.last_failure = now;
        if e.locked_until.is_some_and(|t| t > now) {
            return None;
        }
        e.failures += 1;
        if e.failures >= p.max_failures {
            let factor = 1u32.checked_shl(e.lockouts.min(30)).unwrap_or(u32::MAX);
            let d = p.lockout.saturating_mul(factor).min(p.max_lockout);
            e.locked_until = Some(now + d);
            e.lockouts = e.lockouts.saturating_add(1);
            e.failures = 0;
            e.window_start = now;
            return Some(d);
        }
        None
    }

    /// A success: the failure count starts over.
    pub fn success(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(key) {
            e.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_backs_off() {
        let l = Lockouts::default();
        let p = Policy {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(25),
        };
        let t0 = Instant::now();
        assert_eq!(l.fail("ip:a", &p, t0), None);
        assert_eq!(l.fail("ip:a", &p, t0), None);
        assert_eq!(l.fail("ip:a", &p, t0), Some(Duration::from_secs(10)));
        assert!(l.locked("ip:a", t0).is_some());
        assert!(l.locked("ip:b", t0).is_none());
        let t1 = t0 + Duration::from_secs(11);
        assert!(l.locked("ip:a", t1).is_none());
        l.fail("ip:a", &p, t1);
        l.fail("ip:a", &p, t1);
        assert_eq!(l.fail("ip:a", &p, t1), Some(Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(21);
        l.fail("ip:a", &p, t2);
        l.fail("ip:a", &p, t2);
        assert_eq!(
            l.fail("ip:a", &p, t2),
            Some(Duration::from_secs(25)),
            "capped"
        );
        // A success resets the count.
        let t3 = t2 + Duration::from_secs(26);
        l.fail("ip:a", &p, t3);
        l.success("ip:a");
        l.fail("ip:a", &p, t3);
        assert_eq!(l.fail("ip:a", &p, t3), None);
    }
}
