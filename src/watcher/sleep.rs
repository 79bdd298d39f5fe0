//! How long the watcher sleeps after a tick (issue 13: a watcher that costs nothing).
//!
//! A wake-up costs about 45 µs of CPU on a small VM whatever the tick does (a bare thread
//! that only sleeps 100 ms in a loop costs the same), so an idle watcher's cost is its
//! number of wake-ups. It sleeps until the earliest deadline, at most a tick, while anything
//! needs it every tick: the hooks' coarse clock (`clock`), a reader of the live view, the
//! pressure watch while connections are waited on (clients queueing for a worker are seen
//! only in the listeners' accept queues, read each tick). Otherwise it *dozes*: it sleeps
//! until the earliest deadline, at most [`Mode::Doze`]'s cap, with the coarse clock
//! unpublished; the first hook that needs the time publishes it and wakes the watcher, and
//! so do a slot asking for attention (a new connection, a program's deadline), a reap
//! request and a reader opening the live view.
//!
//! A tick after which the hooks took the clock is followed by a *probe*: one tick-long sleep
//! with the clock unpublished. A hook that stamps something during it publishes the clock
//! (no wake-up: the watcher comes within the tick anyway); only a probe nobody interrupted
//! leads to a doze. So a busy process pays one exact clock read per tick and no system call
//! in its hooks, and an idle one wakes once per doze.

/// What the watcher does until its next tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sleep at most a tick; the coarse clock stays published.
    Tick,
    /// Sleep at most a tick with the clock unpublished (see the module doc).
    Probe,
    /// Sleep past the tick, to be woken by whoever needs the watcher sooner.
    Doze,
}

/// What the sleep is decided from.
#[derive(Clone, Copy, Debug)]
pub struct Situation {
    /// The exact time at the start of the tick.
    pub now: u64,
    /// The earliest queued deadline.
    pub next_due: Option<u64>,
    pub tick: u64,
    /// The longest doze ([`longest_sleep`]).
    pub longest: u64,
    /// Nothing needs the watcher every tick (see the module doc).
    pub may_doze: bool,
    /// No hook took the clock since the watcher last stopped publishing it (always true
    /// where the hooks read the exact clock).
    pub quiet: bool,
}

/// When to wake up (ms, monotonic) and how to sleep until then.
pub fn plan(s: &Situation) -> (u64, Mode) {
    let tick_end = s.now + s.tick;
    let due = s.next_due.unwrap_or(u64::MAX);
    if !s.may_doze || s.longest <= s.tick || due <= tick_end {
        return (due.min(tick_end), Mode::Tick);
    }
    if !s.quiet {
        return (tick_end, Mode::Probe);
    }
    (due.min(s.now + s.longest), Mode::Doze)
}

/// The longest sleep: `cap`, but at most half the shortest timer (the other half is the
/// sweep's cycle, [`sweep_cycle_ms`]), never less than a tick.
pub fn longest_sleep(cap: u64, shortest_timer: u64, tick: u64) -> u64 {
    cap.min(shortest_timer / 2).max(tick)
}

/// The sweep's cycle: every slot is re-read within it (`observe::sweep_share`), and a slot
/// is re-read at most a cycle plus the longest sleep after its last read, which is the
/// shortest timer: a client's turn that began unseen is found before that timer can run
/// out. Never shorter than a tick.
pub fn sweep_cycle_ms(shortest_timer: u64, longest: u64, tick: u64) -> u64 {
    shortest_timer.saturating_sub(longest).max(tick)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(now: u64) -> Situation {
        Situation {
            now,
            next_due: None,
            tick: 100,
            longest: 1000,
            may_doze: true,
            quiet: true,
        }
    }

    #[test]
    fn an_idle_watcher_dozes_until_the_earliest_deadline_at_most_its_cap() {
        assert_eq!(plan(&idle(5000)), (6000, Mode::Doze));
        let due = Situation {
            next_due: Some(5400),
            ..idle(5000)
        };
        assert_eq!(plan(&due), (5400, Mode::Doze));
    }

    #[test]
    fn a_deadline_within_the_tick_or_anyone_looking_keeps_the_tick() {
        let due = Situation {
            next_due: Some(5050),
            ..idle(5000)
        };
        assert_eq!(plan(&due), (5050, Mode::Tick));
        let watched = Situation {
            may_doze: false,
            ..idle(5000)
        };
        assert_eq!(plan(&watched), (5100, Mode::Tick));
        let past = Situation {
            next_due: Some(10),
            ..idle(5000)
        };
        assert_eq!(plan(&past).1, Mode::Tick, "an overdue deadline: at once");
    }

    #[test]
    fn after_the_hooks_took_the_clock_a_tick_long_probe_comes_first() {
        let busy = Situation {
            quiet: false,
            ..idle(5000)
        };
        assert_eq!(plan(&busy), (5100, Mode::Probe));
    }

    #[test]
    fn a_cap_no_longer_than_the_tick_never_dozes() {
        let short = Situation {
            longest: 100,
            ..idle(5000)
        };
        assert_eq!(plan(&short), (5100, Mode::Tick));
    }

    #[test]
    fn doze_and_sweep_share_the_shortest_timer() {
        // Defaults (20 s request timer): a second's doze, a 19 s sweep cycle.
        assert_eq!(longest_sleep(1000, 20_000, 100), 1000);
        assert_eq!(sweep_cycle_ms(20_000, 1000, 100), 19_000);
        // A 1 s timer: half of it each, so a slot is re-read within the timer.
        let longest = longest_sleep(1000, 1000, 100);
        assert_eq!(longest, 500);
        assert!(sweep_cycle_ms(1000, longest, 100) + longest <= 1000);
        // No timer at all: the cap, and a sweep that never has to hurry.
        assert_eq!(longest_sleep(10_000, u64::MAX, 100), 10_000);
        assert_eq!(longest_sleep(1000, 150, 100), 100, "never below a tick");
    }
}
