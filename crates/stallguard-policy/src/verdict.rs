//! The verdict: a pure function of what the hooks recorded about one connection, the policy
//! and the time. Everything that decides whether a connection is stalled lives here.
//!
//! The rule that keeps legitimate clients alive: a timer runs only on the client's turn, i.e.
//! while the server waits on the client (a read blocked or answered EAGAIN, the fd in a
//! poll/select/epoll read set) or while the server's write cannot move bytes. When the server
//! has the turn (it read a request and is thinking), nothing is charged.

use crate::timers::{RequestPolicy, Timers};
pub use stallguard_lens::Stage;
use stallguard_lens::StageTimer;

/// What is known about one connection. Times are milliseconds on one monotonic clock;
/// 0 means "never" / "not now".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// When the connection was accepted (or adopted). 0: unknown (lifetime not judged).
    pub accepted_at: u64,
    /// An outbound connect() in progress since. 0: not connecting.
    pub connecting_since: u64,
    /// The program's own deadline for the connection (stallguard_set_deadline). 0: none.
    pub own_deadline: u64,
    /// When the server first waited on this client. 0: still queued inside the server.
    pub first_wait_at: u64,
    /// Start of the server's current wait on the client. 0: the server is not waiting.
    pub waiting_since: u64,
    /// Last time bytes came in.
    pub last_in: u64,
    /// Last time bytes went out (seen by a hook, or acked per the kernel's TCP_INFO).
    pub last_out: u64,
    pub bytes_in: u64,
    /// First byte of the request in progress. 0: no request open (none yet, or answered).
    pub request_start: u64,
    /// Bytes received since `request_start`.
    pub request_bytes: u64,
    /// Since when the server has been trying to write (blocked, short or EAGAIN). 0: not.
    pub write_pending_since: u64,
    /// Where an HTTP/1 exchange stands, per the lens. `None`: no lens (not HTTP/1, lens
    /// off, or no byte read yet): the turn is told by the server's calls alone.
    pub framing: Option<Framing>,
    /// The watcher's sliding window over the response in progress: how long it covers (ms;
    /// 0: no window, the rate is not judged) and the bytes the peer acknowledged in it.
    pub out_window_ms: u64,
    pub out_window_bytes: u64,
}

/// What the lens knows about an HTTP/1 connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// The lens's stage; `Detect` and `Off` mean the lens does not know (today's rules).
    pub stage: Stage,
    /// When the stage started: the request's first byte (headers), the body's start (body).
    pub since: u64,
    /// Bytes read in the stage so far (MinRate extends the deadline by these).
    pub bytes: u64,
    /// Requests completed on the connection.
    pub requests: u32,
}

impl Framing {
    /// The stage shown to the operator: an answered connection whose server waits for the
    /// next request is `idle`.
    pub fn shown_stage(&self, waiting: bool) -> Stage {
        match self.stage {
            Stage::Response if waiting => Stage::Idle,
            s => s,
        }
    }
}

/// The reasons, written once: the enum, `Reason::ALL`, the names and the indexes all come
/// from this list (`stallguard_shm` sizes its counters by `ALL.len()`), so a new reason gets
/// its counter slot and its name by being added here, or does not compile.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            pub const ALL: [Reason; [$($name),*].len()] = [$(Reason::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$variant => $name, )*
                }
            }
        }
    };
}

reasons! {
    FirstByte = "first_byte",
    Request = "request",
    Idle = "idle",
    WriteStall = "write_stall",
    Lifetime = "lifetime",
    Connect = "connect",
    /// An operator asked for it (`stallguard reap`); never a verdict of `judge`.
    Manual = "manual",
    /// The program's own deadline (stallguard_set_deadline) passed.
    Deadline = "deadline",
    /// Clients queued for a worker while this one, on its turn, progressed below its minimum
    /// rate over the pressure grace (`crate::pressure`); never a verdict of `judge`.
    Pressure = "pressure",
}

impl Reason {
    /// Its place in `ALL` (and in every per-reason counter array).
    pub const fn index(self) -> usize {
        self as usize
    }
}

// Every reason sits at its own index in ALL.
const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!(Reason::ALL[i].index() == i);
        i += 1;
    }
};

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        assert_eq!(Reason::ALL.len(), Reason::Pressure.index() + 1);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Stalled for `reason`; the timer that expired had run `waited_ms`.
    Stalled {
        reason: Reason,
        waited_ms: u64,
    },
}

impl Reason {
    /// A reason that charges the client (the server waits on it): first byte, request
    /// (header or body stage) and idle.
    pub fn is_client_turn(self) -> bool {
        matches!(self, Reason::FirstByte | Reason::Request | Reason::Idle)
    }
}

/// What the kernel holds that the server has not read yet, for a connection about to be cut
/// on the client's turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unread {
    /// Bytes in the receive queue.
    pub bytes: u64,
    /// The client closed its side (a FIN the server has not read: TCP `CLOSE_WAIT`).
    pub peer_closed: bool,
}

/// Never blame the client for what the server has not read: a client-turn verdict is set
/// aside while the kernel's receive queue holds bytes (the server has the turn; it
/// deregistered the fd, or queues the connection for a busy worker), or the client's FIN: a
/// client that closed owes nothing more, and the server's next read returns end of file, so
/// a cut would only be a reap line blaming a client that left.
pub fn spared_by_unread(reason: Reason, unread: Unread) -> bool {
    reason.is_client_turn() && (unread.bytes > 0 || unread.peer_closed)
}

#[cfg(test)]
mod unread_tests {
    use super::*;

    #[test]
    fn unread_bytes_spare_only_client_turn_reasons() {
        let bytes = |bytes| Unread {
            bytes,
            peer_closed: false,
        };
        let closed = Unread {
            bytes: 0,
            peer_closed: true,
        };
        for r in [Reason::FirstByte, Reason::Request, Reason::Idle] {
            assert!(spared_by_unread(r, bytes(1)), "{r:?}");
            assert!(spared_by_unread(r, closed), "{r:?}: the client left");
            assert!(!spared_by_unread(r, Unread::default()), "{r:?}");
        }
        for r in [
            Reason::WriteStall,
            Reason::Lifetime,
            Reason::Connect,
            Reason::Manual,
            Reason::Deadline,
        ] {
            assert!(!spared_by_unread(r, bytes(4096)), "{r:?}");
            assert!(!spared_by_unread(r, closed), "{r:?}");
        }
    }
}

/// Judges one connection at `now`.
pub fn judge(f: &Facts, policy: &Timers, now: u64) -> Verdict {
    // The first expired timer in priority order wins.
    let verdict = running(f, policy)
        .into_iter()
        .filter(Running::runs)
        .find(|t| now >= t.at)
        .map_or(Verdict::Healthy, |t| Verdict::Stalled {
            reason: t.reason,
            waited_ms: if t.from == 0 {
                0
            } else {
                now.saturating_sub(t.from)
            },
        });
    if verdict == Verdict::Healthy && f.write_pending_since != 0 && write_rate_below(f, policy) {
        return Verdict::Stalled {
            reason: Reason::WriteStall,
            waited_ms: f.out_window_ms,
        };
    }
    verdict
}

/// The response minimum rate (`STALLGUARD_WRITE_STALL=T,minrate=R`): the watcher's window
/// over the response covers at least `T` and the peer acknowledged fewer than `R` bytes a
/// second in it.
pub fn write_rate_below(f: &Facts, policy: &Timers) -> bool {
    policy.write_min_rate > 0
        && policy.write_stall_ms > 0
        && f.out_window_ms >= policy.write_stall_ms
        && f.out_window_bytes.saturating_mul(1000)
            < policy.write_min_rate.saturating_mul(f.out_window_ms)
}

/// Bytes per second measured over the response window (for the reap line).
pub fn out_rate(f: &Facts) -> u64 {
    f.out_window_bytes
        .saturating_mul(1000)
        .checked_div(f.out_window_ms)
        .unwrap_or(0)
}

/// When the earliest running timer expires (absolute ms), or `None` when no timer runs (the
/// server has the turn, or the relevant timers are off). The same rules as [`judge`], solved
/// for time: `judge` reports a stall exactly from this instant on (a unit test checks it).
pub fn deadline(f: &Facts, policy: &Timers) -> Option<u64> {
    running(f, policy)
        .into_iter()
        .filter(Running::runs)
        .map(|t| t.at)
        .min()
}

/// One timer that runs on a connection: it expires at `at`; the wait it reports started at
/// `from` (0: not known, reported as 0). Plain integers, every field always set (no `Option`
/// with uninitialised payload bytes for valgrind to see compared).
#[derive(Clone, Copy)]
struct Running {
    reason: Reason,
    from: u64,
    at: u64,
}

impl Running {
    /// A timer that does not run.
    const NONE: Running = Running {
        reason: Reason::Manual,
        from: 0,
        at: u64::MAX,
    };

    fn runs(&self) -> bool {
        self.at != u64::MAX
    }
}

/// Every timer that runs on this connection now, in the order `judge` checks them.
fn running(f: &Facts, policy: &Timers) -> [Running; 7] {
    let timer = |reason, from: u64, at: u64| Running { reason, from, at };
    let rate_timer = |reason, r: Option<RequestPolicy>, start: u64, bytes: u64| match r {
        Some(r) if start != 0 => {
            let stage = StageTimer {
                timeout_ms: r.timeout_ms,
                max_ms: r.max_ms,
                min_rate: r.min_rate,
            };
            timer(reason, start, stage.deadline(start, bytes))
        }
        _ => Running::NONE,
    };
    let mut t = [Running::NONE; 7];
    // The program's own deadline binds whoever has the turn: it asked for it.
    if f.own_deadline != 0 {
        t[0] = timer(Reason::Deadline, f.accepted_at, f.own_deadline);
    }
    if f.connecting_since != 0 && policy.connect_ms > 0 {
        let at = f.connecting_since.saturating_add(policy.connect_ms);
        t[1] = timer(Reason::Connect, f.connecting_since, at);
    }
    // Defence in depth: the one timer that runs whoever has the turn.
    if policy.lifetime_ms > 0 && f.accepted_at != 0 {
        let at = f.accepted_at.saturating_add(policy.lifetime_ms);
        t[2] = timer(Reason::Lifetime, f.accepted_at, at);
    }
    if f.write_pending_since != 0 && policy.write_stall_ms > 0 {
        let from = f.write_pending_since.max(f.last_out);
        t[3] = timer(
            Reason::WriteStall,
            from,
            from.saturating_add(policy.write_stall_ms),
        );
    }
    let waiting = f.waiting_since != 0;
    match f.framing.filter(|fr| fr.stage.is_framed()) {
        // The request is complete: the server has the turn until its answer starts,
        // whatever epoll or EAGAIN say.
        Some(fr) if fr.stage == Stage::Server => return t,
        // The request is incomplete: the client's turn, per stage, read set or not.
        Some(fr) if fr.stage == Stage::Headers => {
            t[5] = rate_timer(Reason::Request, policy.request, fr.since, fr.bytes);
        }
        Some(fr) if fr.stage == Stage::Body => {
            t[5] = rate_timer(Reason::Request, policy.body, fr.since, fr.bytes);
        }
        // Answered (keep-alive) or tunnelled: idle and write stall only.
        Some(_) => {}
        // No lens: today's request timer, while the server waits.
        None if waiting => {
            t[5] = rate_timer(
                Reason::Request,
                policy.request,
                f.request_start,
                f.request_bytes,
            );
        }
        None => {}
    }
    if !waiting {
        return t; // the server has the turn
    }
    if f.bytes_in == 0 && policy.first_byte_ms > 0 && f.first_wait_at != 0 {
        let at = f.first_wait_at.saturating_add(policy.first_byte_ms);
        t[4] = timer(Reason::FirstByte, f.first_wait_at, at);
    }
    if policy.idle_ms > 0 {
        let from = f.waiting_since.max(f.last_in).max(f.last_out);
        t[6] = timer(Reason::Idle, from, from.saturating_add(policy.idle_ms));
    }
    t
}

/// Milliseconds left before the earliest running timer expires (0 if already expired);
/// `None` when no timer runs. For live views.
///
/// The hooks stamp events with the coarse clock, which publishes the *end* of the current
/// tick: a stamp can lie up to one tick after the exact `now` the watcher reads. Such a stamp
/// is taken as `now` here, so a timer never shows more time left than its own length (a 2 m
/// timer that just started reads 2 m, not 2 m + a tick). The verdict itself needs no such
/// care: a future stamp only delays a cut, never hastens it.
pub fn time_left_ms(f: &Facts, policy: &Timers, now: u64) -> Option<u64> {
    deadline(&f.stamped_no_later_than(now), policy).map(|d| d.saturating_sub(now))
}

impl Facts {
    /// These facts with every event stamp later than `now` moved back to `now` (0, "never",
    /// stays 0; `own_deadline` is a deadline the program set, not a stamp, and is kept).
    pub fn stamped_no_later_than(&self, now: u64) -> Facts {
        let at_most_now = |t: u64| t.min(now);
        Facts {
            accepted_at: at_most_now(self.accepted_at),
            connecting_since: at_most_now(self.connecting_since),
            first_wait_at: at_most_now(self.first_wait_at),
            waiting_since: at_most_now(self.waiting_since),
            last_in: at_most_now(self.last_in),
            last_out: at_most_now(self.last_out),
            request_start: at_most_now(self.request_start),
            write_pending_since: at_most_now(self.write_pending_since),
            ..*self
        }
    }
}

/// Since when it has been the client's turn (the server waits on it, or its HTTP request is
/// incomplete); `None` on the server's turn.
pub fn client_turn_since(f: &Facts) -> Option<u64> {
    match f.framing {
        Some(fr) if fr.stage == Stage::Server => None,
        Some(fr) if fr.stage.is_client_turn() && fr.since != 0 => Some(fr.since),
        _ => (f.waiting_since != 0).then_some(f.waiting_since),
    }
}

/// How long the current turn has lasted: the client's (the server waits on it) or the
/// server's pending write; `None` when the server has the turn.
pub fn turn_ms(f: &Facts, now: u64) -> Option<u64> {
    let start = match (client_turn_since(f).unwrap_or(0), f.write_pending_since) {
        (0, 0) => return None,
        (0, w) => w,
        (r, 0) => r,
        (r, w) => r.min(w),
    };
    Some(now.saturating_sub(start))
}

/// A connection is "stuck" (for reports and `stallguard reap --stuck`) when its current turn
/// has lasted at least this long.
pub const STUCK_AFTER_MS: u64 = 10_000;

pub fn is_stuck(f: &Facts, now: u64) -> bool {
    turn_ms(f, now).is_some_and(|t| t >= STUCK_AFTER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timers::RequestPolicy;

    fn policy() -> Timers {
        Timers {
            first_byte_ms: 2_000,
            request: Some(RequestPolicy {
                timeout_ms: 5_000,
                max_ms: 10_000,
                min_rate: 100,
            }),
            idle_ms: 7_000,
            write_stall_ms: 3_000,
            ..Timers::default()
        }
    }

    const T0: u64 = 1_000_000;

    /// Issue 14 item 5: a wait stamped by the coarse clock (end of the current tick, here
    /// 100 ms ahead of the watcher's exact time) must not show more time left than the timer.
    #[test]
    fn time_left_never_exceeds_the_timer_for_end_of_tick_stamps() {
        let tick = 100;
        let p = Timers {
            first_byte_ms: 120_000,
            idle_ms: 120_000,
            request: None,
            ..policy()
        };
        let f = Facts {
            accepted_at: T0 + tick,
            first_wait_at: T0 + tick,
            waiting_since: T0 + tick,
            ..Facts::default()
        };
        assert_eq!(time_left_ms(&f, &p, T0), Some(120_000));
        assert_eq!(time_left_ms(&f, &p, T0 + 50), Some(120_000));
        assert_eq!(time_left_ms(&f, &p, T0 + tick + 1_000), Some(119_000));
        // A write pending since the end of the tick, and a request begun then.
        let w = Facts {
            write_pending_since: T0 + tick,
            last_out: T0 + tick,
            ..Facts::default()
        };
        assert_eq!(time_left_ms(&w, &policy(), T0), Some(3_000));
        let r = Facts {
            waiting_since: T0 + tick,
            request_start: T0 + tick,
            bytes_in: 1,
            ..Facts::default()
        };
        assert_eq!(time_left_ms(&r, &policy(), T0), Some(5_000));
        // A deadline the program set itself is not a stamp: kept as it is.
        let own = Facts {
            own_deadline: T0 + 9_000,
            ..Facts::default()
        };
        assert_eq!(time_left_ms(&own, &p, T0), Some(9_000));
    }

    #[test]
    fn queued_connection_is_never_charged() {
        // Accepted long ago but no worker has read it yet: first_wait_at and waiting are 0.
        let f = Facts::default();
        assert_eq!(judge(&f, &policy(), T0 + 3_600_000), Verdict::Healthy);
    }

    #[test]
    fn silent_client_is_cut_at_first_byte_deadline_from_first_wait() {
        let f = Facts {
            first_wait_at: T0,
            waiting_since: T0,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &policy(), T0 + 1_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &policy(), T0 + 2_000),
            Verdict::Stalled {
                reason: Reason::FirstByte,
                waited_ms: 2_000
            }
        );
    }

    #[test]
    fn first_byte_off_falls_back_to_idle() {
        let p = Timers {
            first_byte_ms: 0,
            ..policy()
        };
        let f = Facts {
            first_wait_at: T0,
            waiting_since: T0,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &p, T0 + 6_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &p, T0 + 7_000),
            Verdict::Stalled {
                reason: Reason::Idle,
                waited_ms: 7_000
            }
        );
    }

    #[test]
    fn slowloris_is_cut_by_the_request_deadline_despite_byte_progress() {
        // One byte per second: never idle, but the request deadline only grows by 10ms a byte.
        let now = T0 + 5_100;
        let f = Facts {
            first_wait_at: T0,
            waiting_since: now - 100,
            last_in: now - 100,
            bytes_in: 5,
            request_start: T0,
            request_bytes: 5,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &policy(), now - 100), Verdict::Healthy);
        assert_eq!(
            judge(&f, &policy(), now),
            Verdict::Stalled {
                reason: Reason::Request,
                waited_ms: 5_100
            }
        );
    }

    #[test]
    fn client_at_twice_min_rate_is_not_cut_before_max() {
        // 200 B/s for 8 s: allowance 5 s + 1600/100 s = 21 s, capped at 10 s.
        let now = T0 + 8_000;
        let f = Facts {
            first_wait_at: T0,
            waiting_since: now,
            last_in: now,
            bytes_in: 1_600,
            request_start: T0,
            request_bytes: 1_600,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &policy(), now), Verdict::Healthy);
        assert_eq!(
            judge(&f, &policy(), T0 + 10_000),
            Verdict::Stalled {
                reason: Reason::Request,
                waited_ms: 10_000
            }
        );
    }

    #[test]
    fn server_thinking_is_never_charged() {
        // Long poll: the request was read long ago, the server holds it without reading.
        let f = Facts {
            first_wait_at: T0,
            waiting_since: 0,
            last_in: T0,
            bytes_in: 80,
            request_start: T0,
            request_bytes: 80,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &policy(), T0 + 600_000), Verdict::Healthy);
        assert_eq!(time_left_ms(&f, &policy(), T0), None);
    }

    #[test]
    fn keep_alive_wait_is_cut_by_idle_counted_from_the_last_byte() {
        let f = Facts {
            first_wait_at: T0,
            waiting_since: T0 + 50,
            last_in: T0,
            last_out: T0 + 1_000,
            bytes_in: 80,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &policy(), T0 + 7_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &policy(), T0 + 8_000),
            Verdict::Stalled {
                reason: Reason::Idle,
                waited_ms: 7_000
            }
        );
        assert_eq!(time_left_ms(&f, &policy(), T0 + 1_000), Some(7_000));
    }

    #[test]
    fn write_stall_counts_from_the_last_progress() {
        let f = Facts {
            write_pending_since: T0,
            last_out: T0 + 1_000,
            bytes_in: 10,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &policy(), T0 + 3_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &policy(), T0 + 4_000),
            Verdict::Stalled {
                reason: Reason::WriteStall,
                waited_ms: 3_000
            }
        );
        let off = Timers {
            write_stall_ms: 0,
            ..policy()
        };
        assert_eq!(judge(&f, &off, T0 + 400_000), Verdict::Healthy);
    }

    #[test]
    fn disabled_timers_never_fire() {
        let p = Timers {
            first_byte_ms: 0,
            request: None,
            idle_ms: 0,
            write_stall_ms: 0,
            ..policy()
        };
        let f = Facts {
            first_wait_at: T0,
            waiting_since: T0,
            request_start: T0,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &p, T0 + 10_000_000), Verdict::Healthy);
        assert_eq!(time_left_ms(&f, &p, T0), None);
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let f = Facts {
            first_wait_at: T0,
            waiting_since: T0,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &policy(), T0 - 500), Verdict::Healthy);
    }
}

#[cfg(test)]
mod write_rate_tests {
    use super::*;

    fn slow_reader(window_ms: u64, bytes: u64) -> Facts {
        Facts {
            write_pending_since: 1_000,
            last_out: 50_000,
            bytes_in: 80,
            out_window_ms: window_ms,
            out_window_bytes: bytes,
            ..Facts::default()
        }
    }

    #[test]
    fn a_response_slower_than_its_minimum_rate_is_a_write_stall() {
        let t = Timers {
            write_stall_ms: 10_000,
            ..Timers::default()
        };
        // 32 bytes every 2 s = 16 B/s over a full window: cut, with the rate measured.
        let f = slow_reader(10_000, 160);
        assert_eq!(
            judge(&f, &t, 50_100),
            Verdict::Stalled {
                reason: Reason::WriteStall,
                waited_ms: 10_000
            }
        );
        assert_eq!(out_rate(&f), 16);
        // The window does not yet cover the timer: not judged.
        assert_eq!(judge(&slow_reader(9_999, 0), &t, 50_100), Verdict::Healthy);
        // At the minimum rate exactly, or faster: never cut.
        assert_eq!(
            judge(&slow_reader(10_000, 2_400), &t, 50_100),
            Verdict::Healthy
        );
        assert_eq!(
            judge(&slow_reader(10_000, 20 << 20), &t, 50_100),
            Verdict::Healthy
        );
        // minrate=0: only "no byte moved" counts.
        let no_rate = Timers {
            write_min_rate: 0,
            ..t
        };
        assert_eq!(judge(&f, &no_rate, 50_100), Verdict::Healthy);
    }
}

#[cfg(test)]
mod lifetime_tests {
    use super::*;

    #[test]
    fn lifetime_caps_even_a_busy_connection_and_is_off_by_default() {
        let f = Facts {
            accepted_at: 1_000,
            last_in: 50_000,
            bytes_in: 10,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &Timers::default(), 10_000_000), Verdict::Healthy);
        let capped = Timers {
            lifetime_ms: 30_000,
            ..Timers::default()
        };
        assert_eq!(judge(&f, &capped, 30_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &capped, 31_000),
            Verdict::Stalled {
                reason: Reason::Lifetime,
                waited_ms: 30_000
            }
        );
    }
}

#[cfg(test)]
mod connect_tests {
    use super::*;

    #[test]
    fn a_hanging_outbound_connect_is_cut_at_its_deadline() {
        let t = Timers {
            connect_ms: 2_000,
            ..Timers::default()
        };
        let f = Facts {
            connecting_since: 10_000,
            ..Facts::default()
        };
        assert_eq!(judge(&f, &t, 11_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &t, 12_000),
            Verdict::Stalled {
                reason: Reason::Connect,
                waited_ms: 2_000
            }
        );
        assert_eq!(
            judge(&f, &Timers::default(), 99_000),
            Verdict::Healthy,
            "off for accepted connections"
        );
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use crate::timers::RequestPolicy;

    const T0: u64 = 1_000_000;

    fn timers() -> Timers {
        Timers {
            first_byte_ms: 2_000,
            request: Some(RequestPolicy {
                timeout_ms: 5_000,
                max_ms: 9_000,
                min_rate: 100,
            }),
            idle_ms: 7_000,
            write_stall_ms: 3_000,
            lifetime_ms: 50_000,
            connect_ms: 0,
            ..Timers::default()
        }
    }

    /// `deadline` must agree with `judge` on a spread of situations.
    #[test]
    fn deadline_is_where_judge_turns() {
        let timers = timers();
        let t0 = T0;
        let cases = [
            Facts {
                accepted_at: t0,
                first_wait_at: t0,
                waiting_since: t0,
                ..Facts::default()
            },
            Facts {
                accepted_at: t0,
                first_wait_at: t0,
                waiting_since: t0 + 900,
                last_in: t0 + 800,
                bytes_in: 120,
                request_start: t0,
                request_bytes: 120,
                ..Facts::default()
            },
            Facts {
                accepted_at: t0,
                first_wait_at: t0,
                waiting_since: t0 + 10,
                last_in: t0,
                last_out: t0 + 2_000,
                bytes_in: 80,
                ..Facts::default()
            },
            Facts {
                accepted_at: t0,
                write_pending_since: t0 + 100,
                last_out: t0 + 400,
                bytes_in: 80,
                ..Facts::default()
            },
            Facts {
                accepted_at: t0,
                bytes_in: 80,
                ..Facts::default()
            },
        ];
        for f in cases {
            let d = deadline(&f, &timers).expect("some timer runs");
            assert_eq!(judge(&f, &timers, d - 1), Verdict::Healthy, "{f:?}");
            assert_ne!(judge(&f, &timers, d), Verdict::Healthy, "{f:?}");
        }
    }

    /// On the server's turn no timer runs (but the lifetime) and nothing is stuck.
    #[test]
    fn a_thinking_server_has_no_deadline_and_is_not_stuck() {
        let (timers, t0) = (timers(), T0);
        let thinking = Facts {
            first_wait_at: t0,
            last_in: t0,
            bytes_in: 80,
            request_start: t0,
            request_bytes: 80,
            ..Facts::default()
        };
        assert_eq!(
            deadline(
                &thinking,
                &Timers {
                    lifetime_ms: 0,
                    ..timers
                }
            ),
            None
        );
        assert_eq!(turn_ms(&thinking, t0 + 5), None);
        assert!(!is_stuck(&thinking, t0 + 60_000));
        let waiting = Facts {
            waiting_since: t0,
            ..Facts::default()
        };
        assert!(is_stuck(&waiting, t0 + STUCK_AFTER_MS));
        assert!(!is_stuck(&waiting, t0 + STUCK_AFTER_MS - 1));
    }
}

#[cfg(test)]
mod own_deadline_tests {
    use super::*;

    #[test]
    fn the_programs_own_deadline_binds_even_on_the_servers_turn() {
        let f = Facts {
            accepted_at: 1_000,
            own_deadline: 5_000,
            bytes_in: 80,
            ..Facts::default()
        };
        let t = Timers::default();
        assert_eq!(judge(&f, &t, 4_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &t, 5_000),
            Verdict::Stalled {
                reason: Reason::Deadline,
                waited_ms: 4_000
            }
        );
        assert_eq!(deadline(&f, &t), Some(5_000));
    }
}

#[cfg(test)]
mod framing_tests {
    use super::*;
    use crate::timers::RequestPolicy;

    const T0: u64 = 1_000_000;

    fn timers() -> Timers {
        Timers {
            first_byte_ms: 3_000,
            request: Some(RequestPolicy {
                timeout_ms: 5_000,
                max_ms: 10_000,
                min_rate: 500,
            }),
            body: Some(RequestPolicy {
                timeout_ms: 5_000,
                max_ms: 60_000,
                min_rate: 500,
            }),
            idle_ms: 10_000,
            write_stall_ms: 3_000,
            ..Timers::default()
        }
    }

    /// An event loop: read until EAGAIN, the fd kept in the epoll read set (waiting).
    fn event_loop(stage: Stage, since: u64, bytes: u64) -> Facts {
        Facts {
            accepted_at: T0,
            first_wait_at: T0,
            waiting_since: T0,
            last_in: since,
            bytes_in: 91,
            request_start: T0,
            request_bytes: 91,
            framing: Some(Framing {
                stage,
                since,
                bytes,
                requests: 0,
            }),
            ..Facts::default()
        }
    }

    #[test]
    fn a_complete_request_is_the_servers_turn_whatever_epoll_says() {
        let f = event_loop(Stage::Server, T0, 91);
        for now in [T0 + 5_000, T0 + 90_000, T0 + 3_600_000] {
            assert_eq!(judge(&f, &timers(), now), Verdict::Healthy);
        }
        assert_eq!(deadline(&f, &timers()), None);
        assert_eq!(turn_ms(&f, T0 + 90_000), None);
        assert!(!is_stuck(&f, T0 + 90_000));
        // The same facts without the lens: today's request timer.
        let blind = Facts { framing: None, ..f };
        assert_eq!(
            judge(&blind, &timers(), T0 + 5_182),
            Verdict::Stalled {
                reason: Reason::Request,
                waited_ms: 5_182
            },
            "5 s + 91 B at 500 B/s"
        );
        // Write stall and lifetime still run on the server's turn.
        let stuck_write = Facts {
            write_pending_since: T0,
            ..f
        };
        assert!(matches!(
            judge(&stuck_write, &timers(), T0 + 3_000),
            Verdict::Stalled {
                reason: Reason::WriteStall,
                ..
            }
        ));
    }

    #[test]
    fn an_incomplete_request_is_the_clients_turn_even_off_the_read_set() {
        // Slowloris: headers since T0, 20 bytes; the server is not in a read right now.
        let f = Facts {
            waiting_since: 0,
            ..event_loop(Stage::Headers, T0, 20)
        };
        assert_eq!(judge(&f, &timers(), T0 + 5_039), Verdict::Healthy);
        assert_eq!(
            judge(&f, &timers(), T0 + 5_040),
            Verdict::Stalled {
                reason: Reason::Request,
                waited_ms: 5_040
            }
        );
        assert_eq!(turn_ms(&f, T0 + 100), Some(100));
    }

    #[test]
    fn the_body_stage_has_its_own_timer_from_the_bodys_start() {
        let body_start = T0 + 4_000;
        let f = event_loop(Stage::Body, body_start, 0);
        // The header timer (5 s from T0) does not apply to the body.
        assert_eq!(judge(&f, &timers(), T0 + 8_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &timers(), T0 + 9_000),
            Verdict::Stalled {
                reason: Reason::Request,
                waited_ms: 5_000
            }
        );
        // 500 B/s earns a second per 500 bytes.
        let steady = event_loop(Stage::Body, body_start, 2_500);
        assert_eq!(deadline(&steady, &timers()), Some(body_start + 10_000));
        // Body timer off: only idle while waiting.
        let off = Timers {
            body: None,
            ..timers()
        };
        assert_eq!(
            deadline(&f, &off),
            Some(body_start + 10_000),
            "idle from the last byte"
        );
    }

    #[test]
    fn after_the_answer_keep_alive_is_judged_by_idle_only() {
        let f = Facts {
            last_out: T0 + 1_000,
            ..event_loop(Stage::Response, T0, 91)
        };
        assert_eq!(judge(&f, &timers(), T0 + 10_999), Verdict::Healthy);
        assert_eq!(
            judge(&f, &timers(), T0 + 11_000),
            Verdict::Stalled {
                reason: Reason::Idle,
                waited_ms: 10_000
            }
        );
        let answered = f.framing.unwrap();
        assert_eq!(answered.shown_stage(true), Stage::Idle);
        assert_eq!(answered.shown_stage(false), Stage::Response);
        let tunnel = Facts {
            framing: Some(Framing {
                stage: Stage::Tunnel,
                ..answered
            }),
            ..f
        };
        assert_eq!(deadline(&tunnel, &timers()), Some(T0 + 11_000));
    }

    #[test]
    fn deadline_agrees_with_judge_in_every_stage() {
        for stage in [
            Stage::Detect,
            Stage::Headers,
            Stage::Body,
            Stage::Response,
            Stage::Idle,
            Stage::Tunnel,
            Stage::Off,
        ] {
            for waiting in [0, T0 + 50] {
                let f = Facts {
                    waiting_since: waiting,
                    ..event_loop(stage, T0 + 10, 700)
                };
                let Some(d) = deadline(&f, &timers()) else {
                    assert!(waiting == 0 && !stage.is_client_turn());
                    continue;
                };
                assert_eq!(judge(&f, &timers(), d - 1), Verdict::Healthy, "{f:?}");
                assert_ne!(judge(&f, &timers(), d), Verdict::Healthy, "{f:?}");
            }
        }
    }
}
