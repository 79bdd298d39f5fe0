//! One slot of atomics per file descriptor, and its ownership protocol.
//!
//! Ownership protocol (why a slot cannot be acted on after its fd was reused):
//! * `state` = generation << 2 | phase, phase ∈ {FREE, TRACKED, ACTING}.
//! * accept/dup publish TRACKED with a new generation (Release), after filling the identity.
//! * close (and every implicit close) moves TRACKED → FREE with a new generation *before* the
//!   real close, waiting while the watcher holds ACTING.
//! * the watcher moves TRACKED → ACTING by CAS on the exact state it judged, re-checks the
//!   socket cookie, acts, and moves back. So while it acts, the fd cannot be closed and reused.
//!
//! Facts are written by the hooks with relaxed load/store pairs, not read-modify-writes: one
//! thread at a time does I/O on a connection in practice, and a lost update only blurs a byte
//! count or a timestamp, never the ownership protocol above.

use super::{holders, raise_high_water, sources, Flags, Identity};
use crate::abi::errno::errno_is_retry;
use crate::abi::sys::yield_now;
use crate::runtime::clock::now_ms;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

pub const FREE: u32 = 0;
pub const TRACKED: u32 = 1;
pub const ACTING: u32 = 2;
const PHASE: u32 = 3;
const GENERATION_STEP: u32 = 4;

#[repr(C, align(64))]
pub struct Slot {
    // First cache line: everything the read path touches.
    pub state: AtomicU32,
    pub flags: AtomicU32,
    pub waiting_since: AtomicU64,
    pub first_wait_at: AtomicU64,
    pub last_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub request_start: AtomicU64,
    pub request_bytes: AtomicU64,
    pub last_out: AtomicU64,
    // Second cache line: the write path and the identity (written at accept only).
    pub write_pending_since: AtomicU64,
    pub bytes_out: AtomicU64,
    pub cookie: AtomicU64,
    pub peer_ip_hi: AtomicU64,
    pub peer_ip_lo: AtomicU64,
    /// peer port << 32 | local port << 16 | address family.
    pub ports_family: AtomicU64,
    pub accepted_at: AtomicU64,
    /// An outbound connect() in progress since (0: not connecting).
    pub connecting_since: AtomicU64,
    // Third cache line: the cooperation API and the HTTP/1 lens (only HTTP connections).
    /// The program's own deadline for this connection (0: none).
    pub own_deadline: AtomicU64,
    /// With `Flags::COUNTED`: the connection's hold in `holders` (0: counted the old way,
    /// its place given back when this fd closes).
    pub hold: AtomicU32,
    /// The lens's state (`stallguard_lens::Lens::to_words`).
    pub lens: [AtomicU64; 4],
    /// When the lens's current stage started, and the bytes read in it (MinRate).
    pub stage_since: AtomicU64,
    pub stage_bytes: AtomicU64,
}

pub fn phase(state: u32) -> u32 {
    state & PHASE
}

fn next_generation(state: u32, phase: u32) -> u32 {
    ((state & !PHASE).wrapping_add(GENERATION_STEP)) | phase
}

impl Slot {
    /// Starts tracking a new connection on this fd.
    pub fn track(&self, fd: libc::c_int, id: &Identity, now: u64) {
        let old = self.wait_not_acting();
        if phase(old) != FREE {
            self.give_back_source(); // the old one was closed where no hook saw it
            self.disengage();
        }
        self.flags.store(0, Relaxed); // a new connection: no flag of the old one applies
        self.hold.store(0, Relaxed);
        for f in [
            &self.waiting_since,
            &self.first_wait_at,
            &self.last_in,
            &self.bytes_in,
            &self.request_start,
            &self.request_bytes,
            &self.last_out,
            &self.write_pending_since,
            &self.bytes_out,
            &self.connecting_since,
            &self.own_deadline,
            &self.stage_since,
            &self.stage_bytes,
        ] {
            f.store(0, Relaxed);
        }
        // A zero lens is a fresh one, fed only once the accept path sets Flags::LENS (outbound,
        // adopted and alias connections never are: today's rules).
        for w in &self.lens {
            w.store(0, Relaxed);
        }
        self.set_identity(id);
        self.accepted_at.store(now, Relaxed);
        super::owners::note(fd);
        self.state.store(next_generation(old, TRACKED), Release);
        raise_high_water(fd);
        super::call_attention(fd);
    }

    /// Makes this fd an alias (dup) of the connection tracked in `src`.
    pub fn track_alias_of(&self, fd: libc::c_int, src: &Slot) {
        let now = now_ms();
        self.track(
            fd,
            &src.identity(),
            src.accepted_at.load(Relaxed).max(1).min(now),
        );
        for (to, from) in [
            (&self.first_wait_at, &src.first_wait_at),
            (&self.last_in, &src.last_in),
            (&self.bytes_in, &src.bytes_in),
            (&self.last_out, &src.last_out),
            (&self.bytes_out, &src.bytes_out),
        ] {
            to.store(from.load(Relaxed), Relaxed);
        }
        if self.first_wait_at.load(Relaxed) != 0 {
            super::engage(1); // lowered again when this copy's slot stops tracking it
        }
        self.set_flag(Flags::ALIAS);
        // A copy keeps the connection's place held in this process until the last fd closes.
        let hold = src.hold.load(Acquire);
        if hold != 0 && src.has_flag(Flags::COUNTED) {
            holders::share(hold);
            self.hold_place(hold);
        }
    }

    /// Stops tracking (the fd is being closed). Waits while the watcher acts on it, so the
    /// number cannot be reused under the watcher's feet.
    pub fn untrack(&self) {
        loop {
            let st = self.state.load(Acquire);
            match st & PHASE {
                FREE => return,
                ACTING => yield_now(),
                _ => {
                    if self
                        .state
                        .compare_exchange(st, next_generation(st, FREE), AcqRel, Acquire)
                        .is_ok()
                    {
                        self.give_back_source();
                        self.disengage();
                        return;
                    }
                }
            }
        }
    }

    /// The connection this slot tracked is gone: it no longer counts as waited on.
    fn disengage(&self) {
        // Acquire pairs with mark_waiting's Release: a first_wait_at seen here was counted.
        if self.first_wait_at.load(Acquire) != 0 {
            super::engage(-1);
        }
    }

    /// This fd holds its connection's per-source place through the hold `hold` (0: counted
    /// the old way, directly).
    pub fn hold_place(&self, hold: u32) {
        self.hold.store(hold, Release);
        self.set_flag(Flags::COUNTED);
    }

    /// Lets go of the per-source place this fd held, if any (exactly once): through its hold
    /// (given back when the last fd of the last process closes), or directly.
    fn give_back_source(&self) {
        let counted = Flags::COUNTED.bits();
        if self.flags.fetch_and(!counted, AcqRel) & counted != 0 {
            match self.hold.swap(0, AcqRel) {
                0 => sources::release(sources::source_key(&self.identity())),
                hold => holders::let_go(hold),
            }
        }
    }

    fn wait_not_acting(&self) -> u32 {
        loop {
            let st = self.state.load(Acquire);
            if st & PHASE != ACTING {
                return st;
            }
            yield_now();
        }
    }

    /// The watcher takes the slot to act on it, only if it is still exactly `judged`.
    pub fn begin_act(&self, judged: u32) -> bool {
        phase(judged) == TRACKED
            && self
                .state
                .compare_exchange(judged, (judged & !PHASE) | ACTING, AcqRel, Acquire)
                .is_ok()
    }

    pub fn end_act(&self, judged: u32) {
        self.state.store(judged, Release);
    }

    /// Resets an ACTING slot to TRACKED: used in a forked child, where the watcher thread that
    /// held it does not exist.
    pub fn release_orphaned_act(&self) {
        let st = self.state.load(Acquire);
        if st & PHASE == ACTING {
            self.state.store((st & !PHASE) | TRACKED, Release);
        }
    }

    fn set_identity(&self, id: &Identity) {
        self.cookie.store(id.cookie, Relaxed);
        let (hi, lo) = id.peer_ip.split_at(8);
        self.peer_ip_hi.store(
            u64::from_be_bytes(hi.try_into().unwrap_or_default()),
            Relaxed,
        );
        self.peer_ip_lo.store(
            u64::from_be_bytes(lo.try_into().unwrap_or_default()),
            Relaxed,
        );
        self.ports_family.store(
            (u64::from(id.peer_port) << 32)
                | (u64::from(id.local_port) << 16)
                | u64::from(id.family),
            Relaxed,
        );
    }

    pub fn identity(&self) -> Identity {
        let pf = self.ports_family.load(Relaxed);
        let mut peer_ip = [0u8; 16];
        peer_ip[..8].copy_from_slice(&self.peer_ip_hi.load(Relaxed).to_be_bytes());
        peer_ip[8..].copy_from_slice(&self.peer_ip_lo.load(Relaxed).to_be_bytes());
        Identity {
            cookie: self.cookie.load(Relaxed),
            family: pf as u16,
            peer_ip,
            peer_port: (pf >> 32) as u16,
            local_port: (pf >> 16) as u16,
        }
    }

    /// True if the slot still tracks the connection whose state was `token` (the fd was not
    /// closed and reused during a call).
    #[inline(always)]
    pub fn same_generation(&self, token: u32) -> bool {
        (self.state.load(Relaxed) ^ token) & !PHASE == 0
    }

    /// Whether the slot tracks a connection (TRACKED or ACTING).
    #[inline(always)]
    pub fn is_tracked(&self) -> bool {
        self.state.load(Relaxed) & PHASE != FREE
    }

    pub fn has_flag(&self, flag: Flags) -> bool {
        Flags::from_bits(self.flags.load(Relaxed)).intersects(flag)
    }

    /// Only the hooks of one connection and the watcher set flags; a plain store would lose a
    /// concurrent flag, so this one (rare) path uses fetch_or.
    pub fn set_flag(&self, flag: Flags) {
        self.flags.fetch_or(flag.bits(), Relaxed);
    }

    pub fn clear_flag(&self, flag: Flags) {
        self.flags.fetch_and(!flag.bits(), Relaxed);
    }

    // ---- a listening socket's slot: never tracked, it caches its listener's facts ----

    /// The facts cached for the listening socket on this fd (a packed
    /// `abi::socket::Listener`), if any. Kept in the `cookie` word of a slot that tracks
    /// nothing, valid while `Flags::LISTENER` is set: `track` (the number became a
    /// connection), `listen` and every dup onto the number clear it.
    #[inline]
    pub fn cached_listener(&self) -> Option<u64> {
        let valid = self.flags.load(Acquire) & Flags::LISTENER.bits() != 0;
        (valid && !self.is_tracked()).then(|| self.cookie.load(Relaxed))
    }

    /// Caches a listener's facts (once per listener: a locked instruction here is fine).
    pub fn cache_listener(&self, word: u64) {
        if self.is_tracked() {
            return;
        }
        self.cookie.store(word, Relaxed);
        self.flags.fetch_or(Flags::LISTENER.bits(), Release);
    }

    /// The fd number may now name another socket: forget what was cached for it.
    pub fn forget_listener(&self) {
        if self.flags.load(Relaxed) & Flags::LISTENER.bits() != 0 {
            self.clear_flag(Flags::LISTENER);
        }
    }

    // ---- facts recorded by the hooks: plain loads and stores, no clock read ----

    /// The server waits on the client (read entered, EAGAIN, poll/select/epoll read interest).
    #[inline(always)]
    pub fn mark_waiting(&self) {
        if self.waiting_since.load(Relaxed) == 0 {
            let now = now_ms();
            self.waiting_since.store(now, Relaxed);
            if now != 0 && self.first_wait_at.load(Relaxed) == 0 {
                // Once per connection: counted before it becomes visible (see `ENGAGED`).
                super::engage(1);
                self.first_wait_at.store(now, Release);
            }
        }
    }

    /// The server stopped waiting on the client (it removed its read interest).
    #[inline(always)]
    pub fn end_wait(&self) {
        self.waiting_since.store(0, Relaxed);
    }

    /// Records the result of a read-family call; `errno_now` is read only when `r < 0`.
    #[inline(always)]
    pub fn record_read(&self, r: isize, peek: bool) {
        if r > 0 {
            self.waiting_since.store(0, Relaxed);
            if peek {
                return;
            }
            let now = now_ms();
            self.last_in.store(now, Relaxed);
            add(&self.bytes_in, r as u64);
            if self.request_start.load(Relaxed) == 0 {
                self.request_start.store(now, Relaxed);
                self.request_bytes.store(r as u64, Relaxed);
            } else {
                add(&self.request_bytes, r as u64);
            }
        } else if r == 0 || !errno_is_retry() {
            // EOF or a hard error: the server will close; it is no longer waiting.
            self.waiting_since.store(0, Relaxed);
        }
        // EAGAIN / EINTR: the server still waits on the client (sticky until data arrives).
    }

    /// The server starts a write of `len` bytes.
    #[inline(always)]
    pub fn write_begin(&self) {
        if self.write_pending_since.load(Relaxed) == 0 {
            self.write_pending_since.store(now_ms(), Relaxed);
        }
    }

    /// Records the result of a write-family call that tried to move `len` bytes.
    #[inline(always)]
    pub fn record_write(&self, r: isize, len: usize) {
        if r > 0 {
            let now = now_ms();
            self.last_out.store(now, Relaxed);
            add(&self.bytes_out, r as u64);
            // The server answered: the request phase is over.
            self.request_start.store(0, Relaxed);
            if r as usize >= len {
                self.write_pending_since.store(0, Relaxed);
            } else {
                self.write_pending_since.store(now, Relaxed);
            }
        } else if r == 0 || !errno_is_retry() {
            self.write_pending_since.store(0, Relaxed);
        }
    }

    /// The facts the verdict needs, as of now.
    pub fn facts(&self) -> stallguard_policy::Facts {
        let mut waiting_since = self.waiting_since.load(Relaxed);
        let last_in = self.last_in.load(Relaxed);
        let last_out = self.last_out.load(Relaxed);
        let first_wait_at = self.first_wait_at.load(Relaxed);
        if waiting_since == 0 && self.has_flag(Flags::EPOLL_IN) {
            // An event loop with the fd in its read set waits on the client between events.
            waiting_since = first_wait_at.max(last_in).max(last_out);
        }
        stallguard_policy::Facts {
            accepted_at: self.accepted_at.load(Relaxed),
            connecting_since: self.connecting_since.load(Relaxed),
            own_deadline: self.own_deadline.load(Relaxed),
            first_wait_at,
            waiting_since,
            last_in,
            last_out,
            bytes_in: self.bytes_in.load(Relaxed),
            request_start: self.request_start.load(Relaxed),
            request_bytes: self.request_bytes.load(Relaxed),
            write_pending_since: self.write_pending_since.load(Relaxed),
            framing: self.framing(),
            // The watcher's own window (observe) fills these.
            out_window_ms: 0,
            out_window_bytes: 0,
        }
    }

    // ---- the HTTP/1 lens (track::lens feeds it; the verdict reads its stage) ----

    /// The lens's state. The words may mix two updates when read by the watcher;
    /// `Lens::from_words` accepts any words, and the stage comes from one of them.
    pub fn lens_state(&self) -> stallguard_lens::Lens {
        stallguard_lens::Lens::from_words(std::array::from_fn(|i| self.lens[i].load(Relaxed)))
    }

    pub fn set_lens_state(&self, lens: &stallguard_lens::Lens) {
        for (cell, w) in self.lens.iter().zip(lens.to_words()) {
            cell.store(w, Relaxed);
        }
    }

    /// The lens's stage entered now (or, for a request's header stage, at `since`), with
    /// `bytes` already read in it.
    pub fn stage_started(&self, since: u64, bytes: u64) {
        self.stage_since.store(since, Relaxed);
        self.stage_bytes.store(bytes, Relaxed);
    }

    /// `n` more bytes read in the current stage.
    pub fn stage_read(&self, n: u64) {
        add(&self.stage_bytes, n);
    }

    /// What the verdict needs, when the lens knows the framing.
    pub fn framing(&self) -> Option<stallguard_policy::Framing> {
        let lens = self.lens_state();
        let stage = lens.stage();
        stage.is_framed().then(|| stallguard_policy::Framing {
            stage,
            since: self.stage_since.load(Relaxed),
            bytes: self.stage_bytes.load(Relaxed),
            requests: lens.requests(),
        })
    }

    /// In a forked child: the parent's in-flight calls do not exist here.
    pub fn forget_inflight(&self) {
        // Only the state of calls in flight is dropped: the request phase is a fact about the
        // connection (mini_httpd reads the headers, then a forked child reads the body).
        self.waiting_since.store(0, Relaxed);
        self.write_pending_since.store(0, Relaxed);
        // A connection with a hold is held by this child too (counted before the fork); one
        // counted the old way is given back by the parent when it closes its copy, not us.
        // The lens stays with the parent (a CGI child is judged by its own calls).
        self.clear_flag(Flags::EPOLL_IN | Flags::LENS);
        if self.hold.load(Acquire) == 0 {
            self.clear_flag(Flags::COUNTED);
        }
        self.set_flag(Flags::INHERITED);
        // No lens in the child: a CGI child holding the parent's connection must not run the
        // parent's header/body timers; it is judged by what its own hooks see, as before.
        for w in &self.lens {
            w.store(0, Relaxed);
        }
    }
}

#[inline(always)]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::super::{init, slot, MAX_FDS};
    use super::*;

    fn fresh_slot() -> &'static Slot {
        assert!(init());
        slot(MAX_FDS as i32 - 1).unwrap()
    }

    #[test]
    fn slot_is_three_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 192);
    }

    #[test]
    fn generations_change_on_every_track_and_untrack() {
        let s = fresh_slot();
        let id = Identity {
            cookie: 7,
            family: 2,
            peer_port: 5555,
            local_port: 80,
            ..Identity::default()
        };
        s.track(MAX_FDS as i32 - 1, &id, 10);
        let a = s.state.load(Relaxed);
        assert_eq!(phase(a), TRACKED);
        assert_eq!(s.identity(), id);
        assert!(s.begin_act(a));
        assert!(!s.begin_act(a), "ACTING cannot be taken twice");
        s.end_act(a);
        s.untrack();
        let b = s.state.load(Relaxed);
        assert_eq!(phase(b), FREE);
        assert!(!s.begin_act(a), "a stale judgement cannot act after close");
        s.track(MAX_FDS as i32 - 1, &id, 20);
        let c = s.state.load(Relaxed);
        assert_ne!(a, c, "a reused fd gets a new generation");
        assert!(!s.begin_act(a));
        s.untrack();
    }
}
