//! A coarse "now" in milliseconds that the hooks read with one relaxed load.
//!
//! A clock read per hooked call would cost more than the whole hook budget, so the watcher
//! refreshes this every tick (and accept/fork refresh it when they run). What it publishes is
//! the *end* of the current tick: a timestamp a hook records is never earlier than the real
//! time of the event, so the watcher (which judges with the exact time) can only
//! underestimate how long a client stalled — a connection is never cut before its timer ran
//! out, and at most one tick after.
//!
//! 0 means "not fresh": the watcher stores it when it means to sleep longer than a tick
//! (nothing due, nobody looking: it *dozes*, see `watcher`). The first hook that needs the
//! time then reads the exact clock, publishes the end of a tick from it, and wakes the
//! watcher if it dozes ([`DOZING`]), so the clock is never older than a tick when a hook
//! reads it, and a busy process never pays more than one exact read per tick. A forked
//! connection process reads the exact clock for good ([`set_exact`]): 0 stays published.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};

/// The end of the current tick (ms, monotonic, never 0 when fresh), or 0: not fresh.
static NOW_MS: AtomicU64 = AtomicU64::new(1);
static TICK_MS: AtomicU64 = AtomicU64::new(100);
/// The hooks read the exact clock (vDSO) instead of the coarse one: in a forked child, whose
/// watcher does not wake every tick to refresh the coarse clock.
static EXACT: AtomicBool = AtomicBool::new(false);
/// 1 while the watcher sleeps longer than a tick, waiting on this word: whoever needs it
/// awake (a hook that found the clock not fresh, a slot asking for attention) sets it to 0
/// and wakes it. A futex word, hence 32 bits.
static DOZING: AtomicU32 = AtomicU32::new(0);

/// The coarse time, as last refreshed (the end of the current tick); the exact time when it
/// is not fresh (the watcher dozes, or a forked connection process, [`set_exact`]).
#[inline(always)]
pub fn now_ms() -> u64 {
    let t = NOW_MS.load(Relaxed);
    if t != 0 {
        return t;
    }
    not_fresh()
}

/// The watcher dozes or probes (or the hooks read the exact clock): the exact time, and,
/// once per doze, the coarse clock published again and the watcher woken.
#[cold]
#[inline(never)]
fn not_fresh() -> u64 {
    let now = monotonic_ms();
    if !EXACT.load(Relaxed) {
        publish(now);
    }
    exact_stamp(now)
}

/// A hook's stamp from the exact clock read at `now`: one ms later. Both it and the
/// watcher's `now` are whole ms rounded up, so an event and a judgement 999.x ms apart can
/// differ by 1000; the extra ms keeps a 1 s timer from being judged run out 999.x ms after
/// the event (measured: a silent client cut 999 ms after its connect).
fn exact_stamp(now: u64) -> u64 {
    now + 1
}

/// Publishes the end of the tick starting at `now` (a hook's refresh); the watcher is woken
/// if this ends its doze: it refreshes the clock within a tick from then on.
fn publish(now: u64) {
    if NOW_MS.fetch_max(now + TICK_MS.load(Relaxed), AcqRel) == 0 {
        wake_watcher();
    }
}

/// Wakes the watcher if it dozes (one relaxed load when it does not). Async-signal-safe.
pub fn wake_watcher() {
    if DOZING.load(SeqCst) != 0 && DOZING.swap(0, AcqRel) != 0 {
        crate::abi::sys::wake_private(&DOZING);
    }
}

/// From now on the hooks read the exact clock (see `EXACT`).
pub fn set_exact() {
    EXACT.store(true, Relaxed);
    NOW_MS.store(0, Release);
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
/// now, and returns the exact time as a hook stamps it ([`exact_stamp`]). For the hooks (accept, connect, fork): a doze this ends
/// wakes the watcher.
pub fn refresh() -> u64 {
    let now = monotonic_ms();
    if !EXACT.load(Relaxed) {
        publish(now);
    }
    exact_stamp(now)
}

/// The watcher's refresh at the start of a tick: the exact time, and whether the clock was
/// left unread since the watcher stopped publishing it ([`stop_publishing`]): no hook
/// stamped anything meanwhile.
pub fn watcher_refresh() -> (u64, bool) {
    let now = monotonic_ms();
    if EXACT.load(Relaxed) {
        return (now, true); // the hooks never need the watcher for the time
    }
    let before = NOW_MS.fetch_max(now + TICK_MS.load(Relaxed), AcqRel);
    (now, before == 0)
}

/// The watcher stops publishing the clock until its next tick: the first hook that needs it
/// reads the exact clock and publishes it (one exact read, then the coarse load again).
/// `doze`: the watcher will sleep longer than a tick, on [`doze_word`], and that hook wakes
/// it. Returns the value the watcher must wait on the word with.
pub fn stop_publishing(doze: bool) -> u32 {
    if EXACT.load(Relaxed) {
        DOZING.store(u32::from(doze), SeqCst);
        return u32::from(doze);
    }
    // DOZING before the clock: a hook that finds the clock not fresh then finds DOZING set.
    DOZING.store(u32::from(doze), SeqCst);
    NOW_MS.store(0, SeqCst);
    u32::from(doze)
}

/// The watcher is awake again: no hook needs to wake it.
pub fn awake() {
    DOZING.store(0, Relaxed);
}

/// The word the dozing watcher waits on.
pub fn doze_word() -> &'static AtomicU32 {
    &DOZING
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

    /// The doze protocol (the clock is process-wide, and other tests' slots read it too, so
    /// only what holds whoever reads it first is asserted): while the watcher does not
    /// publish, the first reader gets the exact clock, publishes the end of a tick and wakes
    /// a dozing watcher; a stamp is never earlier than the event, at most a tick later.
    #[test]
    fn a_hook_ends_a_doze_with_a_fresh_clock_and_a_wake_up() {
        set_tick_ms(100);
        let (now, _) = watcher_refresh();
        assert!(now_ms() >= now + 100, "published: the end of the tick");
        assert_eq!(stop_publishing(true), 1, "the doze word to wait on");
        let before = monotonic_ms();
        let stamp = now_ms(); // a hook, the clock not fresh (or just published again)
        assert!(stamp > before, "never earlier than the event");
        assert!(stamp <= monotonic_ms() + 100 + 1, "at most a tick later");
        assert_eq!(doze_word().load(SeqCst), 0, "the watcher was woken");
        assert_ne!(NOW_MS.load(SeqCst), 0, "published again");
        let (_, quiet) = watcher_refresh();
        assert!(!quiet, "the clock was taken: no doze yet");
        stop_publishing(false); // a probe: nobody to wake
        assert_eq!(doze_word().load(SeqCst), 0);
        assert!(now_ms() > before);
        awake();
    }
}
