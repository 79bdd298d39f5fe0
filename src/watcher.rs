//! The watcher: one thread per process that owns connections. Each tick it refreshes the
//! coarse clock, snapshots every tracked slot, asks the verdict, and hands stalled
//! connections to [`crate::action`]. It is the only place that judges, acts and logs.
//!
//! Started lazily by the first tracked accept (and in a forked child that inherited
//! connections), with every signal blocked so no host signal handler ever runs on it.

use crate::table::{self, phase, FLAG_KERNEL_VIEW, FLAG_OUTBOUND, FLAG_REAPED, TRACKED};
use crate::{action, clock, config, log::log_line, process, stats};
use stallguard_policy::{judge, KernelTrack, Verdict};
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
        if rc == 0 {
            libc::pthread_setname_np(tid, c"stallguard".as_ptr());
        }
        rc == 0
    }
}

extern "C" fn watcher_main(_: *mut libc::c_void) -> *mut libc::c_void {
    if std::panic::catch_unwind(run).is_err() {
        log_line!(
            Error,
            "event=watcher_failed msg=\"internal error: this process is no longer guarded\""
        );
    }
    std::ptr::null_mut()
}

/// What the watcher remembers about a slot between ticks (its own memory, never shared).
#[derive(Clone, Copy, Default)]
struct Memory {
    /// The slot state this memory belongs to; a new generation resets it.
    state: u32,
    /// Already reaped or reported: never judged again.
    done: bool,
    /// Kernel counter of bytes the peer acknowledged, last seen.
    acked: Option<u64>,
    /// When that counter last moved: progress inside a blocking write the hooks cannot see.
    acked_moved_at: u64,
    /// Kernel-counter history, for adopted connections whose I/O no hook sees.
    kernel: Option<KernelTrack>,
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
    let mut memory: Vec<Memory> = Vec::new();
    let mut rejections = RejectionLog::default();
    let mut last_stats = clock::now_ms();
    loop {
        if WATCHER_PID.load(Acquire) != process::pid() {
            return;
        }
        let now = clock::refresh();
        crate::log::reopen_if_closed();
        tick(now, &mut memory);
        rejections.log_if_due(now);
        if now.saturating_sub(last_stats) >= STATS_EVERY_MS {
            last_stats = now;
            log_stats();
        }
        sleep_ms(policy.tick_ms);
    }
}

fn tick(now: u64, memory: &mut Vec<Memory>) {
    let policy = config::policy();
    let high = table::high_water();
    if memory.len() < high {
        memory.resize(high, Memory::default());
    }
    let mut tracked = 0;
    let mut waiting = 0;
    for (fd, mem) in memory.iter_mut().enumerate().take(high) {
        let Some(slot) = table::slot(fd as i32) else {
            break;
        };
        let state = slot.state.load(Acquire);
        if phase(state) != TRACKED {
            continue;
        }
        tracked += 1;
        if mem.state != state {
            *mem = Memory {
                state,
                ..Memory::default()
            };
        }
        if mem.done || slot.has_flag(FLAG_REAPED) {
            continue;
        }
        let mut facts = slot.facts();
        let kernel_view = slot.has_flag(FLAG_KERNEL_VIEW) && facts.first_wait_at == 0;
        if kernel_view {
            // No hook has seen this program read: judge by the kernel's counters.
            let Some(sample) = crate::socket::kernel_sample(fd as i32) else {
                continue;
            };
            facts = mem
                .kernel
                .get_or_insert_with(|| KernelTrack::new(sample, now))
                .observe(sample, now);
        }
        if facts.waiting_since != 0 {
            waiting += 1;
        }
        if facts.write_pending_since != 0 && !kernel_view {
            if let Some(acked) = crate::socket::tcp_bytes_acked(fd as i32) {
                if mem.acked.is_some_and(|seen| seen != acked) {
                    mem.acked_moved_at = now;
                }
                mem.acked = Some(acked);
            }
            facts.last_out = facts.last_out.max(mem.acked_moved_at);
        }
        let outbound = slot.has_flag(FLAG_OUTBOUND);
        if outbound && facts.connecting_since != 0 && crate::socket::is_established(fd as i32) {
            // A non-blocking connect completed (the program learns it from poll + SO_ERROR,
            // which no hook records).
            slot.connecting_since
                .store(0, std::sync::atomic::Ordering::Relaxed);
            facts.connecting_since = 0;
        }
        let outbound_timers;
        let timers = if outbound {
            let Some(o) = policy.outbound else { continue };
            outbound_timers = o.timers();
            &outbound_timers
        } else {
            let Some(t) = policy.timers_for_port(slot.identity().local_port) else {
                continue;
            };
            t
        };
        facts.accepted_at = slot.accepted_at.load(std::sync::atomic::Ordering::Relaxed); // kernel view too
        if let Verdict::Stalled { reason, waited_ms } = judge(&facts, timers, now) {
            action::reap(
                fd as i32,
                slot,
                state,
                reason,
                waited_ms,
                &facts,
                kernel_view,
            );
            mem.done = true;
        }
    }
    stats::publish_tick(tracked, waiting);
}

const STATS_EVERY_MS: u64 = 10_000;

/// Connections refused for their source's cap are logged at most once a second, as a count:
/// an attack opening thousands of connections cannot flood the log.
#[derive(Default)]
struct RejectionLog {
    logged: u64,
    at: u64,
}

impl RejectionLog {
    fn log_if_due(&mut self, now: u64) {
        let total = stats::rejected();
        if total == self.logged || now.saturating_sub(self.at) < 1000 {
            return;
        }
        let peer = stats::last_rejected_peer();
        log_line!(
            Warn,
            "event=over_cap rejected={} total={total} last_peer={} limit={} action=rst",
            total - self.logged,
            crate::action::Peer(&peer),
            config::policy().per_source,
        );
        self.logged = total;
        self.at = now;
    }
}

fn log_stats() {
    use stallguard_policy::Reason;
    log_line!(
        Debug,
        "event=stats tracked={} waiting={} reaped_first_byte={} reaped_request={} reaped_idle={} reaped_write_stall={} reaped_lifetime={} rejected_over_cap={}",
        stats::tracked(),
        stats::waiting(),
        stats::reaped(Reason::FirstByte),
        stats::reaped(Reason::Request),
        stats::reaped(Reason::Idle),
        stats::reaped(Reason::WriteStall),
        stats::reaped(Reason::Lifetime),
        stats::rejected(),
    );
}

fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut()) };
}
