//! Cheap clocks for bookkeeping on the request path.
//!
//! A precise clock read (`Instant::now`) is a TSC read plus a conversion; a request used to
//! take a dozen of them. Values compared against timeouts of a second or more (connection
//! idleness, pooled connections' age, ejection windows, the `Date` header's second) come from
//! the kernel's coarse clocks instead, which the vDSO answers with a load. Latency
//! measurements keep using `Instant`.

fn read(clock: libc::clockid_t, fallback: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        // Not expected on Linux (coarse clocks exist since 2.6.32): the precise clock of the
        // same epoch.
        // SAFETY: as above.
        unsafe { libc::clock_gettime(fallback, &mut ts) };
    }
    ts
}

/// Milliseconds on the kernel's coarse monotonic clock (since boot, never 0). It advances
/// once per scheduler tick (1 to 10 ms). Each value is compared only with values of this
/// clock, never with `upstream::now_ms`.
pub fn coarse_ms() -> u64 {
    let ts = read(libc::CLOCK_MONOTONIC_COARSE, libc::CLOCK_MONOTONIC);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000 + 1
}

/// Seconds since the Unix epoch on the kernel's coarse real-time clock.
pub fn coarse_unix_secs() -> u64 {
    read(libc::CLOCK_REALTIME_COARSE, libc::CLOCK_REALTIME)
        .tv_sec
        .max(0) as u64
}

/// `from + d` as a tokio deadline: a timeout that reuses a clock reading the caller already
/// has (`tokio::time::timeout` reads the clock again). Durations are capped at a year.
pub fn deadline(from: std::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);
    tokio::time::Instant::from_std(from.checked_add(d.min(YEAR)).unwrap_or(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_agree_with_the_precise_ones() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The coarse clock lags by at most a tick.
        assert!(coarse_unix_secs().abs_diff(secs) <= 1);
        let a = coarse_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = coarse_ms();
        assert!(a > 0 && b > a, "{a} {b}");
    }
}
