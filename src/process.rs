//! Per-process state: our pid (cached: glibc no longer caches getpid), whether the guard is
//! on, and what a forked child must fix up before it can guard its own connections.

use crate::table;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::*};

static PID: AtomicI32 = AtomicI32::new(0);
static ENABLED: AtomicBool = AtomicBool::new(false);
static OUTBOUND: AtomicBool = AtomicBool::new(false);
static SIGPIPE_IGNORED: AtomicBool = AtomicBool::new(false);

pub fn pid() -> i32 {
    PID.load(Relaxed)
}

pub fn refresh_pid() {
    PID.store(unsafe { libc::getpid() }, Relaxed);
}

/// True once the constructor accepted the policy: only then are connections tracked.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

pub fn enable() {
    OUTBOUND.store(crate::config::policy().outbound.is_some(), Release);
    ENABLED.store(true, Release);
}

/// True when STALLGUARD_OUTBOUND is set: only then does the connect hook do anything.
#[inline(always)]
pub fn outbound_enabled() -> bool {
    OUTBOUND.load(Relaxed)
}

/// Registers the fork handler (once, from the constructor).
pub fn install_fork_handler() {
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
}

/// Runs in the child right after fork(). The parent's watcher thread and every call that was
/// in flight in another thread do not exist here: release slots the watcher held, forget the
/// parent's in-flight waits (this process judges only what its own hooks see), and start a
/// watcher of our own if we inherited connections (fork-per-connection servers: the parent
/// accepts, the child serves).
extern "C" fn after_fork_in_child() {
    refresh_pid();
    crate::clock::refresh();
    crate::log::reset_after_fork();
    crate::watcher::forget_parent_watcher();
    crate::publish::forget_after_fork();
    let mut inherited = 0;
    for fd in 0..table::high_water() {
        if let Some(s) = table::tracked(fd as i32) {
            s.release_orphaned_act();
            s.forget_inflight();
            inherited += 1;
        }
    }
    if inherited > 0 && enabled() {
        crate::watcher::ensure_running();
    }
}

/// Whether SIGPIPE is ignored, as last looked up (constructor, then every watcher tick). A
/// program that switches SIGPIPE back to its default action is noticed within one tick.
#[inline(always)]
pub fn sigpipe_ignored() -> bool {
    SIGPIPE_IGNORED.load(Relaxed)
}

/// Looks the disposition up again (one rt_sigaction query, no change).
pub fn refresh_sigpipe_disposition() {
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    let ignored = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) } == 0
        && current.sa_sigaction == libc::SIG_IGN;
    SIGPIPE_IGNORED.store(ignored, Relaxed);
}
