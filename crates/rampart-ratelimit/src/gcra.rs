//! GCRA (the generic cell rate algorithm) and its in-memory store.
//!
//! A limit of `rate` requests per `period` with bursts of `burst` is an emission interval
//! `T = period / rate` and a tolerance `tau = T * (burst - 1)`. The only state per key is the
//! theoretical arrival time (TAT). A request at `now` is allowed when
//! `max(TAT, now) + T - now <= tau + T`, and then TAT becomes `max(TAT, now) + T`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

/// One limit's parameters, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Emission interval (ms per request), at least 1 µs expressed in ms as f64.
    pub interval_ms: f64,
    /// Burst tolerance (ms).
    pub tau_ms: f64,
    /// `burst` as a count, for the RateLimit header.
    pub burst: u64,
}

impl Params {
    pub fn new(rate: u64, period_ms: u64, burst: u64) -> Self {
        let interval_ms = period_ms as f64 / rate.max(1) as f64;
        Params {
            interval_ms,
            tau_ms: interval_ms * (burst.max(1) - 1) as f64,
            burst: burst.max(1),
        }
    }
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still allowed right now (after this one, if allowed).
    pub remaining: u64,
    /// Milliseconds until the next request would be allowed (0 when allowed).
    pub retry_after_ms: u64,
    /// Milliseconds until the key is back to its full burst.
    pub reset_ms: u64,
}

/// GCRA on a TAT value. Returns the decision and the new TAT (unchanged when refused).
pub fn decide(tat: f64, now: f64, p: &Params) -> (Decision, f64) {
    let base = tat.max(now);
    let new_tat = base + p.interval_ms;
    let allow_at = new_tat - p.tau_ms - p.interval_ms;
    if now + 1e-9 < allow_at {
        let d = Decision {
            allowed: false,
            remaining: 0,
            retry_after_ms: (allow_at - now).ceil() as u64,
            reset_ms: (base - now).ceil().max(0.0) as u64,
        };
        return (d, tat);
    }
    let used = new_tat - now; // in ms of "debt", at most tau + T
    let remaining = ((p.tau_ms + p.interval_ms - used) / p.interval_ms)
        .floor()
        .max(0.0) as u64;
    (
        Decision {
            allowed: true,
            remaining,
            retry_after_ms: 0,
            reset_ms: used.ceil() as u64,
        },
        new_tat,
    )
}

const SHARDS: usize = 32;

/// Per-key TATs in memory, sharded to keep lock hold times short. Expired keys are swept as
/// the map grows, so memory stays bounded by the number of keys active within their period.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Keys are stored as their 64-bit keyed hash (SipHash with a per-process random key): a
/// collision needs 2^64 work without the key, and the map keeps no attacker-chosen strings.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap = HashMap<u64, f64, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct Shard {
    tats: IdMap,
    /// Size at which the next sweep of expired entries runs.
    sweep_at: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        tats: IdMap::default(),
                        sweep_at: 1024,
                    })
                })
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Check and (if allowed) count one request for `key` at `now_ms`.
    pub fn check(&self, key: &str, now_ms: f64, p: &Params) -> Decision {
        let h = self.hasher.hash_one(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut s = match shard.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let tat = s.tats.get(&h).copied().unwrap_or(now_ms);
        let (d, new_tat) = decide(tat, now_ms, p);
        if d.allowed {
            s.tats.insert(h, new_tat);
            if s.tats.len() >= s.sweep_at {
                // A TAT in the past means the key is back to full burst: forget it.
                s.tats.retain(|_, t| *t > now_ms);
                s.sweep_at = (s.tats.len() * 2).max(1024);
            }
        }
        d
    }

    /// Keys currently tracked (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.tats.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        // 10 per second, bursts of 5.
        let p = Params::new(10, 1000, 5);
        let s = MemoryStore::new();
        let t0 = 1_000_000.0;
        for i in 0..5 {
            let d = s.check("k", t0, &p);
            assert!(d.allowed, "burst request {i}");
            assert_eq!(d.remaining, 4 - i);
        }
        let d = s.check("k", t0, &p);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 100);
        // After one interval exactly one more is allowed.
        assert!(s.check("k", t0 + 100.0, &p).allowed);
        assert!(!s.check("k", t0 + 100.0, &p).allowed);
        // After a long pause the full burst is back.
        for _ in 0..5 {
            assert!(s.check("k", t0 + 10_000.0, &p).allowed);
        }
        // Keys are independent.
        assert!(s.check("other", t0, &p).allowed);
    }

    #[test]
    fn sustained_rate_is_exact_over_time() {
        let p = Params::new(100, 60_000, 1);
        let s = MemoryStore::new();
        let mut allowed = 0;
        // One attempt per 100 ms for 60 s: 600 attempts, 100 allowed.
        for i in 0..600 {
            if s.check("k", 5_000_000.0 + i as f64 * 100.0, &p).allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 100);
    }

    #[test]
    fn expired_keys_are_swept() {
        let p = Params::new(1, 1000, 1);
        let s = MemoryStore::new();
        for i in 0..40_000 {
            s.check(&format!("k{i}"), 0.0, &p);
        }
        assert_eq!(s.len(), 40_000);
        // Much later, new keys trigger sweeps of the expired ones.
        for i in 0..40_000 {
            s.check(&format!("n{i}"), 1_000_000.0, &p);
        }
        assert!(s.len() < 60_000, "{}", s.len());
    }
}
