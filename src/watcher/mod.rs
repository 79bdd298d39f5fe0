//! The watcher: one thread per process that owns connections. Each tick it refreshes the
//! coarse clock, observes every tracked slot (`observe`), asks the verdict and answers the
//! operator (`judge`), acts on stalled connections (`act`), and publishes what it saw
//! (`publish`, `report`). It is the only place that judges, acts and logs. It runs in a fd
//! table of its own and reaches the program's connections through copies (`reach`).
//!
//! Started lazily by the first listening TCP socket or tracked connection (through
//! `runtime::start_watcher`, wired by `lib.rs`) and in a forked child that inherited
//! connections, with every signal blocked so no host signal handler ever runs on it. Its
//! start line, and the stop line at exit (`stop`), bracket the process's guarded life.

mod act;
mod http;
mod judge;
mod observe;
mod pressure;
pub mod publish;
mod reach;
mod report;
mod sleep;
mod stop;
pub use stop::at_exit as write_stop_line;

use crate::abi::{route, sys};
use crate::runtime::log::log_line;
use crate::runtime::{alloc, clock, config, log, pid};
use crate::table::stats;
use observe::{distinct_connections, Observation, Watch};
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
    if sys::spawn_quiet_thread(watcher_main) {
        // Counted as ours only once glibc counted it (`route`: meanwhile glibc's wrappers).
        route::our_thread_started();
    } else {
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
    // Counted out before glibc counts the thread out, after our last code (`route`).
    route::our_thread_ending();
    std::ptr::null_mut()
}

fn run() {
    // Fork waits while the watcher works (runtime::alloc): a child never inherits a lock the
    // watcher held inside an allocator that does not take care of fork itself.
    let busy = alloc::Busy::new();
    let policy = config::policy();
    // First, before the watcher opens anything: its own fd table (see `reach`).
    let fd_table = reach::leave_program_table();
    log_line!(
        Info,
        "event=start version={} {} {fd_table} {} {}",
        env!("CARGO_PKG_VERSION"),
        policy.describe(),
        route::describe(),
        observe::layout()
    );
    stop::started(clock::monotonic_ms());
    let missing = crate::abi::real::missing();
    if !missing.is_empty() {
        log_line!(
            Debug,
            "event=unresolved functions=\"{}\"",
            missing.join(",")
        );
    }
    publish::open();
    let tick_ms = policy.tick_ms.max(1);
    let shortest = shortest_timer_ms(policy);
    // A forked connection process (its hooks read the exact clock) sleeps longer: nothing
    // there needs a tick but its deadlines, and a process per connection multiplies every
    // wake-up (`sleep`).
    // With STALLGUARD_PER_SOURCE the places of processes that died are given back by a
    // watcher's sweep every quarter second (a fork-per-connection parent sweeps for its own
    // children): such a watcher dozes no longer.
    let cap = if clock::is_exact() {
        LAZY_WAKE_MS
    } else {
        crate::table::holders::sweep_period_ms().map_or(DOZE_MS, |ms| ms.min(DOZE_MS))
    };
    let longest = sleep::longest_sleep(cap, shortest, tick_ms);
    let cycle_ms = sleep::sweep_cycle_ms(shortest, longest, tick_ms);
    let mut watch = Watch::default();
    let mut seen: Vec<Observation> = Vec::new();
    let mut all: Vec<Observation> = Vec::new();
    let mut scratch: Vec<u64> = Vec::new();
    let mut reports = report::Reports::default();
    let mut pressure = pressure::Pressure::default();
    let mut full_at = 0;
    // Until when the last doze was planned (0: the last sleep was no doze): woken before it,
    // someone wants the watcher, maybe a reader opening the live view.
    let mut dozed_until = 0;
    // At start, every slot once (a forked child's inherited connections asked for no
    // attention in this process): judged and queued for their deadlines.
    let (start, _) = clock::watcher_refresh();
    watch.observe_all(start, &mut all);
    judge::judge_and_act(start, &mut all, &mut watch.memory);
    watch.schedule(&all, start, tick_ms);
    all = Vec::new();
    sys::release_free_memory();
    drop(busy);
    loop {
        let busy = alloc::Busy::new();
        if WATCHER_PID.load(Acquire) != pid::pid() {
            return;
        }
        let (now, quiet) = clock::watcher_refresh();
        clock::awake();
        pid::refresh_sigpipe_disposition();
        log::maintain(now);
        if !clock::is_exact() {
            publish::clean_up(now); // a forked connection process leaves it to its parent
        }
        reach::tick();
        // What is due: deadlines that came, new connections, the sweep's share.
        watch.observe_due(now, cycle_ms, &mut seen);
        judge::judge_and_act(now, &mut seen, &mut watch.memory);
        watch.schedule(&seen, now, tick_ms);
        // Issue 12: strict deadlines on ports whose clients queue (watcher/pressure.rs). The
        // due connections are not all of them: while a port with pressure on has clients
        // waiting, every slot this tick (the full pass), reused below for the display.
        // Everything, only when someone looks (a reader of the live view, a report or the
        // metrics file due, the operator's request) and at most once a second.
        let second = now.saturating_sub(full_at) >= FULL_PASS_EVERY_MS;
        if second {
            crate::abi::args::refresh_poll_limit(); // the program may have changed it
        }
        let request = publish::request_pending();
        // Whether a reader looks: one stat a second at most, or after a doze cut short
        // (`stallguard` wakes the watcher when it opens the live view: it gets fresh records
        // at once); also used before a doze.
        let woken = now < dozed_until;
        let reader = (second || woken) && publish::reader_attached();
        let display = request || (second && reports.wants_full(now)) || reader;
        let have_all = pressure.wants_all(now, &seen, display);
        if have_all {
            watch.observe_all(now, &mut all);
            pressure.tick(now, &mut all, &mut watch.memory);
        } else {
            pressure.quiet();
        }
        crate::table::holders::sweep(now);
        if seen.capacity() > 4 * seen.len() + 1024 {
            seen = Vec::new(); // a burst of due connections is not kept for ever
        }
        if display {
            full_at = now;
            // Display only: judging is the due pass's (and the sweep's) job.
            if !have_all {
                watch.observe_all(now, &mut all);
            }
            judge::answer_operator(now, &mut all, &mut watch.memory);
            let (tracked, waiting) = distinct_connections(&all, &mut scratch);
            stats::publish_tick(tracked, waiting);
            publish::tick(now, &all);
            reports.tick(now, &all);
            watch.compact();
            all = Vec::new(); // a copy of every connection is kept only while it is used
            sys::release_free_memory();
        } else {
            if second {
                full_at = now;
                if let Some((tracked, waiting)) = watch.swept.take() {
                    stats::publish_tick(tracked, waiting);
                }
                reports.tick(now, &[]);
                watch.compact();
            }
            publish::tick_counters();
            if have_all {
                all.clear(); // kept allocated while the pressure pass needs it each tick
            } else if all.capacity() > 0 {
                all = Vec::new();
                sys::release_free_memory();
            }
        }
        // Sleep until the earliest deadline: at most one tick while anything needs the
        // watcher every tick (the hooks' coarse clock, reap requests, `top`, pressure), else
        // dozing until something wakes it (`sleep`).
        // A forked connection process keeps its lazy pace whatever pressure wants (as
        // before: its parent accepts, and a process per connection multiplies wake-ups).
        let pressure_ticks = pressure.needs_ticks() && !clock::is_exact();
        let mut situation = sleep::Situation {
            now,
            next_due: watch.next_due(),
            tick: tick_ms,
            longest,
            may_doze: !display
                && !pressure_ticks
                && !publish::request_pending()
                && publish::can_doze(),
            quiet,
        };
        let (mut until, mut mode) = sleep::plan(&situation);
        // Asked only before a doze (one stat, unless asked above): the reader's command
        // also wakes a doze.
        if mode == sleep::Mode::Doze
            && (reader || (!second && !woken && publish::reader_attached()))
        {
            situation.may_doze = false;
            (until, mode) = sleep::plan(&situation);
        }
        let woke = clock::monotonic_ms();
        let ms = until.saturating_sub(woke).max(1);
        drop(busy);
        dozed_until = 0;
        match mode {
            sleep::Mode::Tick => publish::sleep_unless_request(ms),
            sleep::Mode::Probe => {
                clock::stop_publishing(false);
                publish::sleep_unless_request(ms);
            }
            sleep::Mode::Doze => {
                dozed_until = until;
                let expected = clock::stop_publishing(true);
                // A slot that asked for attention during this tick (before the doze word
                // was set, so it woke nobody) is looked at first.
                if !crate::table::attention_pending() {
                    publish::doze(expected, ms, tick_ms);
                }
            }
        }
    }
}

/// Longest sleep of a watcher whose hooks read the exact clock (a forked connection
/// process): a wake-up per 10 s (200 such processes: 0.1 % of a core here).
const LAZY_WAKE_MS: u64 = 10_000;

/// Longest doze of any other watcher: once a second it looks at its log file (rotation),
/// the SIGPIPE disposition and the metrics file, as before.
const DOZE_MS: u64 = 1000;

/// The full pass (every slot) runs at most this often.
const FULL_PASS_EVERY_MS: u64 = 1000;

/// The shortest timer of the policy (ms; `u64::MAX`: none): a client's turn that began
/// after the watcher last looked (the hooks only record it) must be found within it (the
/// sweep's cycle and the longest sleep share it, `sleep`).
fn shortest_timer_ms(policy: &stallguard_policy::Policy) -> u64 {
    let mut shortest = u64::MAX;
    let mut consider = |t: &stallguard_policy::Timers| {
        for ms in [
            t.first_byte_ms,
            t.request.map_or(0, |r| r.timeout_ms),
            t.body.map_or(0, |r| r.timeout_ms),
            t.idle_ms,
            t.write_stall_ms,
            t.lifetime_ms,
            t.connect_ms,
        ] {
            if ms > 0 {
                shortest = shortest.min(ms);
            }
        }
    };
    consider(&policy.timers);
    for (_, t) in policy.ports.iter() {
        if let Some(t) = t {
            consider(t);
        }
    }
    if let Some(o) = policy.outbound {
        consider(&o.timers());
    }
    shortest
}
