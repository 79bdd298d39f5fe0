//! The `event=stop` summary line, written when a process that logged a start line exits
//! (`exit()`, or returning from main): connections tracked, reaped and would-be-reaped by
//! reason, refusals, and how long the guard ran.
//!
//! It is the library's destructor (`.fini_array`, wired in `lib.rs`), not an `atexit`
//! handler: the dynamic loader runs destructors after every exit handler the program
//! registered, so a program whose exit handlers still serve (drain connections, join workers)
//! has those reaps logged and counted before the stop line (an `atexit` handler registered
//! at listen ran before the program's earlier ones, and what the watcher did then went
//! unsaid: the stop line is the last line).
//!
//! It runs in the thread that calls exit, while the watcher may still be running: it reads
//! atomics only, formats into a stack buffer and writes with raw calls (`Line::emit_last`),
//! so it takes no lock the watcher could hold and allocates nothing. A process that ends
//! with `_exit` (a forked child, exec failure paths) or is killed runs no destructor: it
//! writes no stop line. A forked child runs the destructor too: it says nothing in a process
//! that did not log a start line itself.

use super::act::Seconds;
use crate::abi::sys;
use crate::runtime::clock;
use crate::runtime::log::{self, Line};
use crate::table::stats;
use stallguard_policy::LogLevel;
use stallguard_shm::{REASONS, REASON_NAMES};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::*};

/// The process that logged the start line (0: none), and when (monotonic ms).
static STARTED_PID: AtomicI32 = AtomicI32::new(0);
static STARTED_AT: AtomicU64 = AtomicU64::new(0);

/// This process logged its start line at `now`: it will log a stop line at exit.
pub fn started(now: u64) {
    STARTED_AT.store(now, Relaxed);
    STARTED_PID.store(sys::getpid(), Release);
}

/// The library's destructor: the stop line of a process that logged its start line.
pub extern "C" fn at_exit() {
    if STARTED_PID.load(Acquire) != sys::getpid() || !log::enabled(LogLevel::Info) {
        return;
    }
    // A panic must never cross into the host's exit path.
    let _ = std::panic::catch_unwind(|| {
        let c = stats::counters();
        let mut line = Line::new(LogLevel::Info);
        let _ = write!(
            line,
            " event=stop tracked_total={} reaped_total={} reaped={} would_reap_total={} would_reap={} rejected_over_cap={} lifetime={}",
            stats::tracked_total(),
            c.reaped.iter().sum::<u64>(),
            ByReason(&c.reaped),
            c.would_reap.iter().sum::<u64>(),
            ByReason(&c.would_reap),
            c.rejected_over_cap,
            Seconds(clock::monotonic_ms().saturating_sub(STARTED_AT.load(Relaxed))),
        );
        line.emit_last();
    });
}

/// Per-reason counts as `first_byte:2,idle:1` (reasons with a count only), or `none`.
pub struct ByReason<'a>(pub &'a [u64; REASONS]);

impl fmt::Display for ByReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for (n, name) in self.0.iter().zip(REASON_NAMES) {
            if *n > 0 {
                write!(f, "{}{name}:{n}", if any { "," } else { "" })?;
                any = true;
            }
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stallguard_policy::Reason;

    #[test]
    fn counts_by_reason_list_the_reasons_that_happened() {
        let mut c = [0u64; REASONS];
        assert_eq!(ByReason(&c).to_string(), "none");
        c[Reason::Idle.index()] = 1;
        c[Reason::FirstByte.index()] = 2;
        assert_eq!(ByReason(&c).to_string(), "first_byte:2,idle:1");
    }
}
