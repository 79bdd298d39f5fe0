//! Facts for a connection whose I/O no hook sees (an inetd service reading its socket through
//! stdio), rebuilt tick by tick from the kernel's own counters: TCP_INFO `bytes_received` and
//! `bytes_acked`, and the socket's receive and send queue lengths (SIOCINQ / SIOCOUTQ).
//!
//! The reading of the queues:
//! * data in the receive queue → the server has not read what the client sent: the server's
//!   turn, nothing is charged;
//! * data in the send queue → the server is writing; it stalls only while `bytes_acked` does
//!   not move, so a slow but steady download is never cut;
//! * both queues empty → the server consumed everything and answered everything: it waits on
//!   the client (the kernel cannot tell a server that is thinking: see the README).

use crate::verdict::Facts;

/// One observation of the kernel's counters for a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSample {
    pub bytes_received: u64,
    pub bytes_acked: u64,
    /// Bytes received but not yet read by the program.
    pub inq: u64,
    /// Bytes written by the program but not yet acknowledged by the peer.
    pub outq: u64,
}

/// What the watcher remembers between samples of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTrack {
    last: KernelSample,
    in_moved_at: u64,
    out_moved_at: u64,
    first_wait_at: u64,
    waiting_since: u64,
    request_start: u64,
    /// `bytes_received` just before the current request's first byte.
    request_base: u64,
    outq_since: u64,
}

impl KernelTrack {
    /// Starts tracking from the first sample, taken at `now`. Bytes that already arrived and
    /// were not answered yet open a request phase now (the connection was handed over).
    pub fn new(first: KernelSample, now: u64) -> KernelTrack {
        let mut t = KernelTrack {
            last: first,
            in_moved_at: if first.bytes_received > 0 { now } else { 0 },
            ..KernelTrack::default()
        };
        if first.bytes_received > 0 && first.bytes_acked == 0 {
            t.request_start = now;
        }
        t.update_queues(first, now);
        t
    }

    /// Folds in a new sample and returns the facts for the verdict.
    pub fn observe(&mut self, s: KernelSample, now: u64) -> Facts {
        if s.bytes_received > self.last.bytes_received {
            self.in_moved_at = now;
            if self.request_start == 0 {
                self.request_start = now;
                self.request_base = self.last.bytes_received;
            }
        }
        if s.bytes_acked > self.last.bytes_acked {
            self.out_moved_at = now;
            self.request_start = 0; // the server answered
        }
        self.last = s;
        self.update_queues(s, now);
        self.facts()
    }

    fn update_queues(&mut self, s: KernelSample, now: u64) {
        self.outq_since = match (s.outq > 0, self.outq_since) {
            (false, _) => 0,
            (true, 0) => now,
            (true, since) => since,
        };
        let waiting = s.inq == 0 && s.outq == 0;
        self.waiting_since = match (waiting, self.waiting_since) {
            (false, _) => 0,
            (true, 0) => now,
            (true, since) => since,
        };
        if waiting && self.first_wait_at == 0 {
            self.first_wait_at = now;
        }
    }

    pub fn facts(&self) -> Facts {
        Facts {
            accepted_at: 0,
            connecting_since: 0,
            own_deadline: 0,
            first_wait_at: self.first_wait_at,
            waiting_since: self.waiting_since,
            last_in: self.in_moved_at,
            last_out: self.out_moved_at,
            bytes_in: self.last.bytes_received,
            request_start: self.request_start,
            request_bytes: if self.request_start == 0 {
                0
            } else {
                self.last.bytes_received.saturating_sub(self.request_base)
            },
            write_pending_since: self.outq_since,
            framing: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timers::{RequestPolicy, Timers};
    use crate::verdict::{judge, Reason, Verdict};

    fn policy() -> Timers {
        Timers {
            first_byte_ms: 5_000,
            request: Some(RequestPolicy {
                timeout_ms: 5_000,
                max_ms: 10_000,
                min_rate: 200,
            }),
            idle_ms: 10_000,
            write_stall_ms: 5_000,
            ..Timers::default()
        }
    }

    fn sample(received: u64, acked: u64, inq: u64, outq: u64) -> KernelSample {
        KernelSample {
            bytes_received: received,
            bytes_acked: acked,
            inq,
            outq,
        }
    }

    /// Monotonic times are never 0 (0 means "never"): tests count from here.
    const BASE: u64 = 1_000_000;

    fn start(first: KernelSample) -> KernelTrack {
        KernelTrack::new(first, BASE)
    }

    /// Feeds one sample per 100 ms tick from `from` to `to` (relative to BASE) and returns the
    /// first verdict that is not healthy, with its relative time.
    fn run(
        t: &mut KernelTrack,
        from: u64,
        to: u64,
        mut sample_at: impl FnMut(u64) -> KernelSample,
    ) -> Option<(u64, Verdict)> {
        let mut rel = from;
        while rel <= to {
            let f = t.observe(sample_at(rel), BASE + rel);
            let v = judge(&f, &policy(), BASE + rel);
            if v != Verdict::Healthy {
                return Some((rel, v));
            }
            rel += 100;
        }
        None
    }

    #[test]
    fn silent_client_handed_over_by_inetd_is_cut_at_first_byte() {
        let mut t = start(sample(0, 0, 0, 0));
        let (at, v) = run(&mut t, 100, 20_000, |_| sample(0, 0, 0, 0)).unwrap();
        assert_eq!(at, 5_000);
        assert!(matches!(
            v,
            Verdict::Stalled {
                reason: Reason::FirstByte,
                ..
            }
        ));
    }

    #[test]
    fn slowloris_read_through_stdio_is_cut_by_the_request_deadline() {
        // A header line of 30 bytes every 2 s; the program reads it at once (queues empty).
        let mut t = start(sample(30, 0, 0, 0));
        let (at, v) = run(&mut t, 100, 30_000, |now| {
            sample(30 + 30 * (now / 2000), 0, 0, 0)
        })
        .unwrap();
        assert!(
            matches!(
                v,
                Verdict::Stalled {
                    reason: Reason::Request,
                    ..
                }
            ),
            "{v:?}"
        );
        // 5 s + a few bytes' worth of extension (30 B / 200 B/s = 150 ms each).
        assert!((5_000..6_500).contains(&at), "{at}");
    }

    #[test]
    fn unread_data_is_the_servers_turn() {
        let mut t = start(sample(500, 0, 500, 0));
        assert_eq!(run(&mut t, 100, 60_000, |_| sample(500, 0, 500, 0)), None);
    }

    #[test]
    fn slow_but_steady_download_is_never_cut() {
        // 64 MiB response, the client takes 1 kB per tick: the send queue is never empty.
        let mut t = start(sample(80, 0, 0, 0));
        assert_eq!(
            run(&mut t, 100, 120_000, |now| sample(
                80,
                1 + now * 10,
                0,
                4_000_000
            )),
            None
        );
    }

    #[test]
    fn a_client_that_stops_reading_is_a_write_stall() {
        let mut t = start(sample(80, 0, 0, 0));
        let acked = |now: u64| 1 + now.min(3_000) * 10; // reads for 3 s, then nothing
        let (at, v) = run(&mut t, 100, 30_000, |now| {
            sample(80, acked(now), 0, 4_000_000)
        })
        .unwrap();
        assert!(
            matches!(
                v,
                Verdict::Stalled {
                    reason: Reason::WriteStall,
                    ..
                }
            ),
            "{v:?}"
        );
        assert_eq!(at, 8_000);
    }

    #[test]
    fn answered_request_then_silence_is_idle() {
        let mut t = start(sample(80, 0, 0, 0));
        // Answer at 1 s (acked moves), then the client keeps the connection open silently.
        let (at, v) = run(&mut t, 100, 30_000, |now| {
            sample(80, if now >= 1_000 { 200 } else { 0 }, 0, 0)
        })
        .unwrap();
        assert!(
            matches!(
                v,
                Verdict::Stalled {
                    reason: Reason::Idle,
                    ..
                }
            ),
            "{v:?}"
        );
        assert_eq!(at, 11_000);
    }
}
