//! Per-process facts every stage reads: our pid (cached: glibc no longer caches getpid) and
//! whether the program ignores SIGPIPE.

use crate::abi::sys;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::*};

static PID: AtomicI32 = AtomicI32::new(0);
static SIGPIPE_IGNORED: AtomicBool = AtomicBool::new(false);

pub fn pid() -> i32 {
    PID.load(Relaxed)
}

/// Reads the pid again (constructor, and a forked child).
pub fn refresh_pid() {
    PID.store(sys::getpid(), Relaxed);
}

/// Whether SIGPIPE is ignored, as last looked up (constructor, then every watcher tick). A
/// program that switches SIGPIPE back to its default action is noticed within one tick.
#[inline(always)]
pub fn sigpipe_ignored() -> bool {
    SIGPIPE_IGNORED.load(Relaxed)
}

/// Looks the disposition up again (one rt_sigaction query, no change).
pub fn refresh_sigpipe_disposition() {
    SIGPIPE_IGNORED.store(sys::sigpipe_is_ignored(), Relaxed);
}
