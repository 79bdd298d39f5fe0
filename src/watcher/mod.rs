//! The watcher: one thread per process that owns connections. Each tick it refreshes the
//! coarse clock, observes every tracked slot (`observe`), asks the verdict and answers the
//! operator (`judge`), acts on stalled connections (`act`), and publishes what it saw
//! (`publish`, `report`). It is the only place that judges, acts and logs. It runs in a fd
//! table of its own and reaches the program's connections through copies (`reach`).
//!
//! Started lazily by the first tracked connection (through `runtime::start_watcher`, wired
//! by `lib.rs`) and in a forked child that inherited connections, with every signal blocked
//! so no host signal handler ever runs on it.

mod act;
mod http;
mod judge;
mod observe;
mod pressure;
pub mod publish;
mod reach;
mod report;

use crate::abi::sys;
use crate::runtime::log::log_line;
use crate::runtime::{clock, config, log, pid};
use crate::table::stats;
use observe::{distinct_connections, observe_all, Memory, Observation};
use std::sync::atomic::{AtomicI32, Ordering::*};

/// The pid whose watcher is running (0: none). A forked child sees its parent's pid here
/// until its fork handler clears it.
static WATCHER_PID: AtomicI32 = AtomicI32::new(0);

/// Starts the watcher for this process unless it is running.
pub fn ensure_running() {
    let me = pid::pid();
    let current = WATCHER_PID.load(Acquire);
    if current == me
        || WATCHER_PID
            .compare_exchange(current, me, AcqRel, Acquire)
            .is_err()
    {
        return;
    }
    if !sys::spawn_quiet_thread(watcher_main) {
        WATCHER_PID.store(0, Release);
    }
}

/// In a forked child: the parent's watcher thread was not copied, nor its live view.
pub fn forget_parent_watcher() {
    WATCHER_PID.store(0, Release);
    reach::forget_after_fork();
    publish::forget_after_fork();
}

extern "C" fn watcher_main(_: *mut libc::c_void) -> *mut libc::c_void {
    sys::name_this_thread(c"stallguard");
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
    // First, before the watcher opens anything: its own fd table (see `reach`).
    let fd_table = reach::leave_program_table();
    log_line!(
        Info,
        "event=start version={} {} {fd_table}",
        env!("CARGO_PKG_VERSION"),
        policy.describe()
    );
    let missing = crate::abi::real::missing();
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
    let mut pressure = pressure::Pressure::default();
    loop {
        if WATCHER_PID.load(Acquire) != pid::pid() {
            return;
        }
        let now = clock::refresh();
        pid::refresh_sigpipe_disposition();
        log::reopen_if_closed();
        reach::tick();
        observe_all(now, &mut memory, &mut seen);
        judge::judge_and_act(now, &mut seen, &mut memory);
        // Issue 12: strict deadlines on ports whose clients queue (watcher/pressure.rs).
        pressure.tick(now, &mut seen, &mut memory);
        judge::answer_operator(now, &mut seen, &mut memory);
        let (tracked, waiting) = distinct_connections(&seen, &mut scratch);
        stats::publish_tick(tracked, waiting);
        crate::table::holders::sweep(now);
        publish::tick(now, &seen);
        reports.tick(now, &seen);
        sys::sleep_ms(policy.tick_ms);
    }
}
