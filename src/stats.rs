//! Live counters of this process's guard, written by the watcher.

use stallguard_policy::Reason;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static TRACKED: AtomicU64 = AtomicU64::new(0);
static WAITING: AtomicU64 = AtomicU64::new(0);
static REAPED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static WOULD_REAP: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

pub fn publish_tick(tracked: u64, waiting: u64) {
    TRACKED.store(tracked, Relaxed);
    WAITING.store(waiting, Relaxed);
}

pub fn count_reap(reason: Reason, acted: bool) {
    let counters = if acted { &REAPED } else { &WOULD_REAP };
    counters[reason.index()].fetch_add(1, Relaxed);
}

pub fn reaped(reason: Reason) -> u64 {
    REAPED[reason.index()].load(Relaxed)
}

pub fn tracked() -> u64 {
    TRACKED.load(Relaxed)
}

pub fn waiting() -> u64 {
    WAITING.load(Relaxed)
}
