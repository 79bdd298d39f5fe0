//! Pressure-aware deadlines: generous while the pool has room, strict the moment clients
//! queue for a worker. Pure decisions; the watcher (`src/watcher/pressure.rs`) feeds them the
//! listeners' accept queues and the connections' kernel counters.
//!
//! * A port is **under pressure** when clients wait for a worker — connections in its
//!   listeners' accept queues, or accepted but not yet read by the server for longer than
//!   [`QUEUED_AFTER_MS`] (eager-accept servers queue them in user space) — while connections
//!   on the client's turn hold workers.
//! * Under pressure, a connection on the client's turn that made no progress, or progress
//!   below its minimum rate (the request `minrate` while it sends, the response `minrate`
//!   while it reads), over the last grace is reaped: longest-stalled first, at most as many
//!   per tick as clients wait (plus [`MARGIN`]).
//!
//! Progress is proven two ways, each conservative (they may only over-estimate progress):
//! * the kernel's own history of the connection ([`KernelProgress`], TCP_INFO), which covers
//!   the time it spent in the accept queue, before any hook saw it;
//! * the watcher's sliding [`Window`] of byte counters, once it spans the grace.

/// A connection accepted but not yet read for this long counts as a client queued inside the
/// server (eager accept).
pub const QUEUED_AFTER_MS: u64 = 250;

/// Reaps allowed per tick beyond the number of waiting clients.
pub const MARGIN: u64 = 2;

/// What the kernel knows about one connection (TCP_INFO), in ms and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelProgress {
    /// Since the last data segment came in (`tcpi_last_data_recv`; since the connection was
    /// established when none came).
    pub idle_in_ms: u64,
    /// Since the last ACK came in (`tcpi_last_ack_recv`): no ACK, no acknowledged progress.
    pub idle_ack_ms: u64,
    /// A lower bound of the connection's age.
    pub age_ms: u64,
    /// `tcpi_bytes_received`.
    pub total_in: u64,
    /// `tcpi_bytes_acked`.
    pub total_acked: u64,
}

/// The minimum rates a client on its turn must keep up, in bytes per second (0: any byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    /// While it sends (the request `minrate`).
    pub request: u64,
    /// While it reads (the response `minrate`).
    pub response: u64,
}

/// Progress over a span: how long (ms), bytes received, bytes the peer acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub ms: u64,
    pub bytes_in: u64,
    pub acked: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mark {
    at: u64,
    bytes_in: u64,
    acked: u64,
}

/// The watcher's sliding window over one connection's counters: two marks, the older one
/// between one and two graces old once the window is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    old: Option<Mark>,
    new: Option<Mark>,
}

impl Window {
    /// Records the counters at `now`.
    pub fn observe(&mut self, now: u64, bytes_in: u64, acked: u64, grace_ms: u64) {
        let mark = Mark {
            at: now,
            bytes_in,
            acked,
        };
        match self.new {
            None => {
                self.old = Some(mark);
                self.new = Some(mark);
            }
            Some(new) if now.saturating_sub(new.at) >= grace_ms => {
                self.old = Some(new);
                self.new = Some(mark);
            }
            Some(_) => {}
        }
    }

    /// Forgets marks taken before `at` (the start of the client's current turn): progress
    /// measured across the server's turn (a long poll, then a short answer) says nothing about
    /// the client's pace on its own turn, and would read as a trickle.
    pub fn forget_before(&mut self, at: u64) {
        if self.old.is_some_and(|m| m.at < at) {
            *self = Window::default();
        }
    }

    /// Progress from the older mark to the counters at `now`.
    pub fn span(&self, now: u64, bytes_in: u64, acked: u64) -> Option<Span> {
        let old = self.old?;
        Some(Span {
            ms: now.saturating_sub(old.at),
            bytes_in: bytes_in.saturating_sub(old.bytes_in),
            acked: acked.saturating_sub(old.acked),
        })
    }
}

/// `bytes` over `ms` is progress at `rate` or better (rate 0: any byte is progress).
fn meets(bytes: u64, rate: u64, ms: u64) -> bool {
    bytes > 0 && bytes.saturating_mul(1000) >= rate.saturating_mul(ms)
}

/// The connection progressed at its minimum rate (either direction) over `span`.
fn progressed(span: Span, rates: Rates) -> bool {
    meets(span.bytes_in, rates.request, span.ms) || meets(span.acked, rates.response, span.ms)
}

/// Whether a connection on the client's turn is proven to have progressed below its minimum
/// rates over the last `grace_ms`: by the kernel's history, or by the watcher's window once it
/// spans the grace. `false` whenever the evidence does not prove it.
pub fn below_rate(k: &KernelProgress, window: Option<Span>, rates: Rates, grace_ms: u64) -> bool {
    if k.age_ms >= grace_ms {
        // Upper bounds of the bytes moved within the last grace.
        let last_grace = Span {
            ms: grace_ms,
            bytes_in: if k.idle_in_ms >= grace_ms {
                0
            } else {
                k.total_in
            },
            acked: if k.idle_ack_ms >= grace_ms {
                0
            } else {
                k.total_acked
            },
        };
        if !progressed(last_grace, rates) {
            return true;
        }
    }
    window.is_some_and(|w| w.ms >= grace_ms && !progressed(w, rates))
}

/// The kernel's history limited to the client's current turn, which began `turn_ms` ago
/// (`None`: the client has had the turn since the connection opened). Before its turn the
/// client had nothing to send or read: a keep-alive client silent through the server's 3 s
/// long poll is not "silent for 3 s" the moment the answer ends. Silence measured by the
/// kernel that reaches back past the turn's start counts only from that start.
pub fn within_turn(k: KernelProgress, turn_ms: Option<u64>) -> KernelProgress {
    match turn_ms {
        None => k,
        Some(t) => KernelProgress {
            idle_in_ms: k.idle_in_ms.min(t),
            idle_ack_ms: k.idle_ack_ms.min(t),
            age_ms: k.age_ms.min(t),
            ..k
        },
    }
}

/// How long the client's current turn has lasted when it began with the server's last answer
/// (`last_out`, ms; 0: nothing went out yet), as [`within_turn`] takes it. `None` while the
/// server still writes (a reader is judged over its whole response) or before any answer (the
/// client has had the turn since it connected).
pub fn turn_after_answer(last_out: u64, write_pending_since: u64, now: u64) -> Option<u64> {
    (write_pending_since == 0 && last_out != 0).then(|| now.saturating_sub(last_out))
}

/// For "longest-stalled first": how long the connection has shown no progress at all, or (when
/// it trickles) its age.
pub fn stalled_for(k: &KernelProgress) -> u64 {
    k.idle_in_ms.min(k.idle_ack_ms).max(k.age_ms)
}

/// One port's state this tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortLoad {
    pub port: u16,
    /// Connections in its listeners' accept queues.
    pub accept_queue: u64,
    /// Connections accepted but not read by the server for [`QUEUED_AFTER_MS`].
    pub queued_inside: u64,
    /// Connections on the client's turn (they hold workers).
    pub holders: u64,
}

impl PortLoad {
    /// Clients waiting for a worker.
    pub fn waiting(&self) -> u64 {
        self.accept_queue.saturating_add(self.queued_inside)
    }

    pub fn under_pressure(&self) -> bool {
        self.waiting() > 0 && self.holders > 0
    }

    /// How many connections may be reaped for pressure on this port this tick.
    pub fn budget(&self) -> u64 {
        if self.under_pressure() {
            self.waiting().saturating_add(MARGIN)
        } else {
            0
        }
    }
}

/// Clients waiting only for an instant (an event loop between two wake-ups) is no pressure:
/// a port is under pressure once clients have been waiting for [`QUEUED_AFTER_MS`] without a
/// break. `waiting_since`: when this run of ticks with waiting clients began (0: none now).
pub fn sustained(waiting_since: u64, now: u64) -> bool {
    waiting_since != 0 && now.saturating_sub(waiting_since) >= QUEUED_AFTER_MS
}

/// Whether an accepted connection counts as queued inside the server: never read yet, and
/// accepted at least [`QUEUED_AFTER_MS`] ago.
pub fn queued_inside(first_wait_at: u64, accepted_at: u64, now: u64) -> bool {
    first_wait_at == 0 && accepted_at != 0 && now.saturating_sub(accepted_at) >= QUEUED_AFTER_MS
}

/// Keeps the `budget` longest-stalled of `candidates` (`(stalled_for, item)`), longest first.
pub fn pick<T>(candidates: &mut Vec<(u64, T)>, budget: u64) {
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    candidates.truncate(usize::try_from(budget).unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 2_000;
    const RATES: Rates = Rates {
        request: 500,
        response: 240,
    };

    fn kernel(age: u64, idle_in: u64, total_in: u64) -> KernelProgress {
        KernelProgress {
            idle_in_ms: idle_in,
            idle_ack_ms: idle_in,
            age_ms: age,
            total_in,
            total_acked: 0,
        }
    }

    #[test]
    fn silent_connection_queued_long_enough_is_slow_at_first_sight() {
        // Connected 3 s ago (in the accept queue), nothing ever received.
        assert!(below_rate(&kernel(3_000, 3_000, 0), None, RATES, GRACE));
        // Connected just now: not proven, whatever it sent.
        assert!(!below_rate(&kernel(1_500, 1_500, 0), None, RATES, GRACE));
    }

    #[test]
    fn slowloris_below_the_request_rate_is_slow_at_first_sight() {
        // A few header bytes, the last one 300 ms ago: at most 60 bytes in 2 s < 1000.
        assert!(below_rate(&kernel(5_000, 300, 60), None, RATES, GRACE));
        // A client that sent a big request recently: not proven by the kernel.
        assert!(!below_rate(&kernel(5_000, 300, 4_000), None, RATES, GRACE));
    }

    #[test]
    fn window_proves_a_trickle_once_it_spans_the_grace() {
        let k = kernel(9_000, 100, 50_000);
        let mut w = Window::default();
        w.observe(10_000, 50_000, 0, GRACE);
        w.observe(10_100, 50_010, 0, GRACE);
        assert_eq!(
            w.span(11_000, 50_100, 0).map(|s| s.ms),
            Some(1_000),
            "not a full grace yet"
        );
        assert!(!below_rate(&k, w.span(11_000, 50_100, 0), RATES, GRACE));
        // 200 bytes in 2 s = 100 B/s < 500: slow.
        assert!(below_rate(&k, w.span(12_000, 50_200, 0), RATES, GRACE));
        // 1000 bytes in 2 s = 500 B/s: at the minimum, kept.
        assert!(!below_rate(&k, w.span(12_000, 51_000, 0), RATES, GRACE));
    }

    #[test]
    fn a_turn_that_just_began_is_not_judged_by_the_silence_before_it() {
        let rates = Rates {
            request: 500,
            response: 240,
        };
        // Silent for 3 s while the server held a long poll, then a 200-byte answer acked now.
        let k = KernelProgress {
            idle_in_ms: 3_000,
            idle_ack_ms: 0,
            age_ms: 3_100,
            total_in: 90,
            total_acked: 200,
        };
        assert!(
            below_rate(&k, None, rates, 2_000),
            "the whole history proves a trickle"
        );
        assert!(!below_rate(&within_turn(k, Some(57)), None, rates, 2_000));
        // Silent for a whole grace of its own turn: slow.
        let later = KernelProgress {
            idle_in_ms: 5_000,
            idle_ack_ms: 2_000,
            age_ms: 5_100,
            ..k
        };
        assert!(below_rate(
            &within_turn(later, Some(2_000)),
            None,
            rates,
            2_000
        ));
        assert_eq!(turn_after_answer(3_000, 0, 3_057), Some(57));
        assert_eq!(
            turn_after_answer(3_000, 3_010, 3_057),
            None,
            "still writing"
        );
        assert_eq!(turn_after_answer(0, 0, 3_057), None, "nothing answered yet");
        // Since the connection opened: the kernel's history as it is.
        assert_eq!(within_turn(k, None), k);
    }

    #[test]
    fn a_window_across_the_servers_turn_is_forgotten() {
        let mut w = Window::default();
        w.observe(1_000, 90, 0, 2_000);
        w.forget_before(500);
        assert!(
            w.span(4_000, 90, 200).is_some(),
            "marks within the turn stay"
        );
        w.forget_before(3_900); // the answer went out at 3.9 s
        assert_eq!(w.span(4_000, 90, 200), None);
        w.observe(4_000, 90, 200, 2_000);
        assert_eq!(w.span(4_000, 90, 200).map(|s| s.ms), Some(0));
    }

    #[test]
    fn window_slides() {
        let mut w = Window::default();
        for t in (0..=10_000).step_by(100) {
            w.observe(t, t, 0, GRACE);
        }
        let s = w.span(10_050, 10_050, 0).unwrap();
        assert!((GRACE..2 * GRACE).contains(&s.ms), "{s:?}");
    }

    #[test]
    fn readers_are_judged_by_acknowledged_bytes_at_the_response_rate() {
        let k = KernelProgress {
            idle_in_ms: 8_000,
            idle_ack_ms: 200,
            age_ms: 8_000,
            total_in: 40,
            total_acked: 16_000,
        };
        let slow = Span {
            ms: 2_000,
            bytes_in: 0,
            acked: 32,
        };
        let download = Span {
            ms: 2_000,
            bytes_in: 0,
            acked: 4 << 20,
        };
        assert!(
            !below_rate(&k, None, RATES, GRACE),
            "kernel totals prove nothing"
        );
        assert!(below_rate(&k, Some(slow), RATES, GRACE));
        assert!(!below_rate(&k, Some(download), RATES, GRACE));
        // 480 bytes in 2 s is exactly 240 B/s.
        assert!(!below_rate(
            &k,
            Some(Span { acked: 480, ..slow }),
            RATES,
            GRACE
        ));
    }

    #[test]
    fn uploader_at_twice_the_request_rate_is_never_slow() {
        let k = kernel(10_000, 50, 10_000);
        let w = Span {
            ms: 2_500,
            bytes_in: 2_500,
            acked: 0,
        };
        assert!(!below_rate(&k, Some(w), RATES, GRACE));
    }

    #[test]
    fn zero_rate_means_any_byte_is_progress() {
        let none = Rates::default();
        assert!(!below_rate(&kernel(5_000, 300, 1), None, none, GRACE));
        assert!(below_rate(&kernel(5_000, 5_000, 1), None, none, GRACE));
    }

    #[test]
    fn pressure_needs_waiting_clients_and_holders() {
        let load = PortLoad {
            port: 80,
            accept_queue: 3,
            queued_inside: 1,
            holders: 8,
        };
        assert!(load.under_pressure());
        assert_eq!(load.budget(), 4 + MARGIN);
        assert!(!PortLoad { holders: 0, ..load }.under_pressure());
        let idle = PortLoad {
            accept_queue: 0,
            queued_inside: 0,
            ..load
        };
        assert!(!idle.under_pressure());
        assert_eq!(idle.budget(), 0);
    }

    #[test]
    fn pressure_must_last_a_short_moment() {
        assert!(!sustained(0, 5_000));
        assert!(!sustained(5_000, 5_000 + QUEUED_AFTER_MS - 1));
        assert!(sustained(5_000, 5_000 + QUEUED_AFTER_MS));
    }

    #[test]
    fn queued_inside_after_a_short_moment() {
        assert!(!queued_inside(0, 1_000, 1_000 + QUEUED_AFTER_MS - 1));
        assert!(queued_inside(0, 1_000, 1_000 + QUEUED_AFTER_MS));
        assert!(!queued_inside(1_100, 1_000, 9_000), "read once: not queued");
        assert!(!queued_inside(0, 0, 9_000), "unknown accept time");
    }

    #[test]
    fn pick_keeps_the_longest_stalled() {
        let mut c = vec![(100, 'a'), (900, 'b'), (500, 'c'), (50, 'd')];
        pick(&mut c, 2);
        assert_eq!(c, vec![(900, 'b'), (500, 'c')]);
        assert_eq!(
            stalled_for(&kernel(7_000, 300, 60)),
            7_000,
            "a trickle: its age"
        );
    }
}
