//! A coarse "now" in milliseconds that the hooks read with one relaxed load.
//!
//! A clock read per hooked call would cost more than the whole hook budget, so the watcher
//! refreshes this every tick (and accept/fork refresh it when they run). What it publishes is
//! the *end* of the current tick: a timestamp a hook records is never earlier than the real
//! time of the event, so the watcher (which judges with the exact time) can only
//! underestimate how long a client stalled — a connection is never cut before its timer ran
//! out, and at most one tick after. Never 0, because 0 means "never" in the table.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

static NOW_MS: AtomicU64 = AtomicU64::new(1);
static TICK_MS: AtomicU64 = AtomicU64::new(100);
/// The hooks read the exact clock (vDSO) instead of the coarse one: in a forked child, whose
/// watcher does not wake every tick to refresh the coarse clock.
static EXACT: AtomicBool = AtomicBool::new(false);

/// The coarse time, as last refreshed (the end of the current tick); the exact time in a
/// process whose watcher sleeps longer than a tick ([`set_exact`]).
#[inline(always)]
pub fn now_ms() -> u64 {
    if EXACT.load(Relaxed) {
        return monotonic_ms();
    }
    NOW_MS.load(Relaxed)
}

/// From now on the hooks read the exact clock (see `EXACT`).
pub fn set_exact() {
    EXACT.store(true, Relaxed);
}

/// Whether the hooks read the exact clock.
pub fn is_exact() -> bool {
    EXACT.load(Relaxed)
}

/// Sets the watcher period (from the policy) before the first refresh.
pub fn set_tick_ms(tick: u64) {
    TICK_MS.store(tick, Relaxed);
}

/// Reads CLOCK_MONOTONIC (vDSO, async-signal-safe), publishes the end of the tick starting
/// now, and returns the exact time.
pub fn refresh() -> u64 {
    let now = monotonic_ms();
    NOW_MS.fetch_max(now + TICK_MS.load(Relaxed), Relaxed);
    now
}

pub fn monotonic_ms() -> u64 {
    let (secs, nanos) = crate::abi::sys::monotonic();
    secs * 1000 + nanos / 1_000_000 + 1
}

/// Wall-clock time as (seconds, milliseconds) since the epoch, for log timestamps.
pub fn wall_clock() -> (i64, u32) {
    let (secs, nanos) = crate::abi::sys::realtime();
    (secs, (nanos / 1_000_000) as u32)
}

/// Converts days since 1970-01-01 to (year, month, day) (Howard Hinnant's civil_from_days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    }
}
