//! The watcher: one thread per process that owns connections. Each tick it refreshes the
//! coarse clock, observes every tracked slot, asks the verdict, hands stalled connections to
//! [`crate::action`], answers the operator's requests, and publishes what it saw. It is the
//! only place that judges, acts and logs.
//!
//! Started lazily by the first tracked accept (and in a forked child that inherited
//! connections), with every signal blocked so no host signal handler ever runs on it.

use crate::observe::{distinct_connections, observe_all, Memory, Observation};
use crate::{action, clock, config, log::log_line, process, publish, report, stats};
use stallguard_policy::{is_stuck, judge, spared_by_unread, turn_ms, Reason, Verdict};
use std::sync::atomic::{AtomicI32, Ordering::*};

/// The pid whose watcher is running (0: none). A forked child sees its parent's pid here
/// until its fork handler clears it.
static WATCHER_PID: AtomicI32 = AtomicI32::new(0);

/// Starts the watcher for this process unless it is running.
pub fn ensure_running() {
    let me = process::pid();
    let current = WATCHER_PID.load(Acquire);
    if current == me
        || WATCHER_PID
            .compare_exchange(current, me, AcqRel, Acquire)
            .is_err()
    {
        return;
    }
    if !spawn() {
        WATCHER_PID.store(0, Release);
    }
}

/// In a forked child: the parent's watcher thread was not copied.
pub fn forget_parent_watcher() {
    WATCHER_PID.store(0, Release);
}

fn spawn() -> bool {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, 256 * 1024);
        let mut tid: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut tid, &attr, watcher_main, std::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        rc == 0
    }
}

extern "C" fn watcher_main(_: *mut libc::c_void) -> *mut libc::c_void {
    // Named from inside with prctl: pthread_setname_np on another thread opens
    // /proc/self/task/TID/comm, briefly taking the program's lowest free fd number.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"stallguard".as_ptr()) };
    if std::panic::catch_unwind(run).is_err() {
        log_line!(
            Error,
            "event=watcher_failed msg=\"internal error: this process is no longer guarded\""
        );
    }
    std::ptr::null_mut()
}

fn run() {
    let policy = config::policy();
    log_line!(
        Info,
        "event=start version={} {}",
        env!("CARGO_PKG_VERSION"),
        policy.describe()
    );
    let missing = crate::real::missing();
    if !missing.is_empty() {
        log_line!(
            Debug,
            "event=unresolved functions=\"{}\"",
            missing.join(",")
        );
    }
    publish::open();
    let mut memory: Vec<Memory> = Vec::new();
    let mut seen: Vec<Observation> = Vec::new();
    let mut scratch: Vec<u64> = Vec::new();
    let mut reports = report::Reports::default();
    loop {
        if WATCHER_PID.load(Acquire) != process::pid() {
            return;
        }
        let now = clock::refresh();
        process::refresh_sigpipe_disposition();
        crate::log::reopen_if_closed();
        observe_all(now, &mut memory, &mut seen);
        judge_and_act(now, &mut seen, &mut memory);
        answer_operator(now, &mut seen, &mut memory);
        let (tracked, waiting) = distinct_connections(&seen, &mut scratch);
        stats::publish_tick(tracked, waiting);
        publish::tick(now, &seen);
        reports.tick(now, &seen);
        sleep_ms(policy.tick_ms);
    }
}

fn judge_and_act(now: u64, seen: &mut [Observation], memory: &mut [Memory]) {
    for o in seen.iter_mut().filter(|o| !o.done && !o.exempt) {
        let Some(timers) = o.timers else { continue };
        if let Verdict::Stalled { reason, waited_ms } = judge(&o.facts, &timers, now) {
            // Unread bytes in the kernel: the server has the turn, whatever its calls say.
            if reason.is_client_turn()
                && spared_by_unread(reason, crate::socket::unread_bytes(o.fd).unwrap_or(0))
            {
                continue;
            }
            reap(o, reason, waited_ms, memory);
        }
    }
}

fn reap(o: &mut Observation, reason: Reason, waited_ms: u64, memory: &mut [Memory]) {
    if let Some(slot) = crate::table::slot(o.fd) {
        action::reap(
            o.fd,
            slot,
            o.state,
            reason,
            waited_ms,
            &o.facts,
            o.kernel_view,
        );
        o.done = true;
        if let Some(m) = memory.get_mut(o.fd as usize) {
            m.done = true;
        }
    }
}

/// `stallguard reap PID --fd N | --stuck`: carried out here, by the process's own watcher.
fn answer_operator(now: u64, seen: &mut [Observation], memory: &mut [Memory]) {
    let Some(request) = publish::take_request() else {
        return;
    };
    let mut reaped = 0;
    for o in seen.iter_mut().filter(|o| !o.done) {
        let wanted = match request.fd {
            Some(fd) => o.fd == fd,
            None => is_stuck(&o.facts, now),
        };
        if wanted {
            reap(
                o,
                Reason::Manual,
                turn_ms(&o.facts, now).unwrap_or(0),
                memory,
            );
            reaped += 1;
        }
    }
    publish::answer(request.seq, reaped);
}

fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut()) };
}
