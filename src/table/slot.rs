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
//!
//! Compact (issue 13: two cache lines, 128 bytes, was three): times are the low 32 bits of
//! the ms clock the hooks read ([`Stamp`], expanded against the watcher's clock by
//! [`expand`]: exact for times less than 24.8 days from now; an older one reads as a later
//! time, so a timer can only run late, never early) and byte counts are 32-bit (the
//! request and stage counts, which rate timers read, saturate, and a saturated count reads
//! as "more than any rate needs"; the totals, shown in log lines only, count modulo 4 GiB).

use super::{holders, polls, raise_high_water, sources, Flags, Identity};
use crate::abi::errno::errno_is_retry;
use crate::abi::sys::yield_now;
use crate::runtime::clock::now_ms;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

/// A time in a slot: the low 32 bits of `clock::now_ms()` (0: never). Storing it costs the
/// hooks nothing more than the 64-bit time did (the same load, a 32-bit store).
#[inline(always)]
fn stamp(ms: u64) -> u32 {
    ms as u32
}

/// The stamp of now, widened for `polls`' pure functions (they keep it within 32 bits).
fn now_stamp() -> u64 {
    u64::from(stamp(now_ms()))
}

/// The full time of a [`Stamp`] read at `now` (same clock): the time within 2^31 ms (24.8
/// days) of `now` with those low bits. A stamp older than that reads as up to 24.8 days in
/// the future of its true time, never earlier: every timer measured from it runs late, never
/// early. 0 stays 0 ("never"); a stamp that happened to be 0 (once in 49.7 days) read as
/// never, which also only delays a timer.
pub fn expand(t: u32, now: u64) -> u64 {
    if t == 0 {
        return 0;
    }
    let d = i64::from(t.wrapping_sub(now as u32) as i32);
    (now as i64).saturating_add(d).max(1) as u64
}

/// A 32-bit count of bytes that rate timers read: saturates (reads as `u64::MAX`, more than
/// any minimum rate asks, in [`widen`]), never wraps to a small count. `n` is what one read
/// returned: Linux moves at most 0x7ffff000 bytes per call (MAX_RW_COUNT), so it fits.
#[inline(always)]
fn add_saturating(counter: &AtomicU32, n: u64) {
    counter.store(counter.load(Relaxed).saturating_add(n as u32), Relaxed);
}

/// A saturating count, widened: `u32::MAX` means "at least 4 GiB", as many as any rate needs.
fn widen(n: u32) -> u64 {
    if n == u32::MAX {
        u64::MAX
    } else {
        u64::from(n)
    }
}

pub const FREE: u32 = 0;
pub const TRACKED: u32 = 1;
pub const ACTING: u32 = 2;
const PHASE: u32 = 3;
const GENERATION_STEP: u32 = 4;

type Stamp = AtomicU32;

#[repr(C, align(64))]
pub struct Slot {
    // First cache line: the facts, everything the read and write paths touch.
    pub state: AtomicU32,
    pub flags: AtomicU32,
    waiting_since: Stamp,
    first_wait_at: Stamp,
    last_in: Stamp,
    /// Bytes read, modulo 2^32 (log lines; "none yet" is `last_in` == 0).
    bytes_in: AtomicU32,
    request_start: Stamp,
    /// Saturating (the request timer's MinRate).
    request_bytes: AtomicU32,
    last_out: Stamp,
    write_pending_since: Stamp,
    /// Bytes written, modulo 2^32 (log lines and the live view only).
    bytes_out: AtomicU32,
    /// When the lens's current stage started, and the bytes read in it (saturating: MinRate).
    stage_since: Stamp,
    stage_bytes: AtomicU32,
    accepted_at: Stamp,
    /// An outbound connect() in progress since (0: not connecting).
    connecting_since: Stamp,
    /// The program's own deadline for this connection (0: none).
    own_deadline: Stamp,
    // Second cache line: the identity (written at accept only) and the HTTP/1 lens.
    cookie: AtomicU64,
    peer_ip_hi: AtomicU64,
    peer_ip_lo: AtomicU64,
    /// peer port << 16 | local port (the address family is in `flags`' top bits).
    ports: AtomicU32,
    /// With `Flags::COUNTED`: the connection's hold in `holders` (0: counted the old way,
    /// its place given back when this fd closes).
    hold: AtomicU32,
    /// The lens's state (`stallguard_lens::Lens::to_words`).
    lens: [AtomicU64; 4],
}

/// The address family, coded in the top two bits of `Slot::flags` (`Flags::FAMILY_MASK`): the
/// families a connection is identified with (an identity without one reads back as 0).
const FAMILIES: [u16; 4] = [
    0,
    libc::AF_INET as u16,
    libc::AF_INET6 as u16,
    libc::AF_UNIX as u16,
];
const FAMILY_SHIFT: u32 = Flags::FAMILY_MASK.bits().trailing_zeros();

fn family_code(family: u16) -> u32 {
    FAMILIES
        .iter()
        .position(|&f| f == family && f != 0)
        .unwrap_or(0) as u32
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
        self.accepted_at.store(stamp(now), Relaxed);
        super::owners::note(fd);
        polls::forget(fd);
        self.state.store(next_generation(old, TRACKED), Release);
        raise_high_water(fd);
        super::call_attention(fd);
    }

    /// Makes this fd an alias (dup) of the connection tracked in `src`.
    pub fn track_alias_of(&self, fd: libc::c_int, src: &Slot) {
        let now = now_ms();
        let accepted_at = expand(src.accepted_at.load(Relaxed), now);
        self.track(fd, &src.identity(), accepted_at.max(1).min(now));
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
        self.ports.store(
            (u32::from(id.peer_port) << 16) | u32::from(id.local_port),
            Relaxed,
        );
        // A new identity holds no place yet (`hold_place` comes after).
        // `track` cleared the flags just before: the family's bits are set on zeros.
        self.flags
            .fetch_or(family_code(id.family) << FAMILY_SHIFT, Relaxed);
    }

    pub fn identity(&self) -> Identity {
        let ports = self.ports.load(Relaxed);
        let mut peer_ip = [0u8; 16];
        peer_ip[..8].copy_from_slice(&self.peer_ip_hi.load(Relaxed).to_be_bytes());
        peer_ip[8..].copy_from_slice(&self.peer_ip_lo.load(Relaxed).to_be_bytes());
        Identity {
            cookie: self.cookie.load(Relaxed),
            family: FAMILIES
                [((self.flags.load(Relaxed) & Flags::FAMILY_MASK.bits()) >> FAMILY_SHIFT) as usize],
            peer_ip,
            peer_port: (ports >> 16) as u16,
            local_port: ports as u16,
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

    /// A read entered: the server waits on the client in this call (a definite wait, see
    /// `polls`). `poll_ended`: whether the fd's poll wait had ended (asked only when a
    /// provisional wait is running: a poll/select server's path).
    #[inline(always)]
    pub fn mark_reading(&self, poll_ended: impl FnOnce() -> bool) {
        let w = u64::from(self.waiting_since.load(Relaxed));
        if w == 0 {
            self.start_wait(polls::definite(now_stamp()));
        } else if polls::is_provisional(w) {
            self.resume_wait(w, poll_ended(), true);
        }
    }

    /// The fd is in a poll/select read set (`poll_ended`: its previous poll wait had ended,
    /// see `polls::mark`) or an epoll read set: a provisional wait, which the poller's next
    /// call without the fd ends.
    #[inline(always)]
    pub fn mark_polled(&self, poll_ended: bool) {
        let w = u64::from(self.waiting_since.load(Relaxed));
        if w == 0 {
            self.start_wait(polls::provisional(now_stamp()));
        } else if poll_ended {
            self.resume_wait(w, true, false);
        }
    }

    /// Whether the server waits on the client (in any way) as the hooks last recorded.
    #[inline(always)]
    pub fn is_waiting(&self) -> bool {
        self.waiting_since.load(Relaxed) != 0
    }

    /// `since`: a stamp with the wait's kind in its low bit (`polls`), so it fits 32 bits.
    fn start_wait(&self, since: u64) {
        let since = since as u32;
        self.waiting_since.store(since, Relaxed);
        if self.first_wait_at.load(Relaxed) == 0 {
            // Once per connection: counted before it becomes visible (see `ENGAGED`). A
            // stamp of 0 (once in 49.7 days) counts it again at its next wait: the count
            // errs upward only.
            super::engage(1);
            self.first_wait_at.store(since, Release);
        }
    }

    #[cold]
    fn resume_wait(&self, w: u64, poll_ended: bool, reading: bool) {
        // Stamps in, stamps out: `resumed` returns `w` or the stamp of now, kind bit set.
        let resumed = polls::resumed(w, poll_ended, now_stamp(), reading);
        if resumed != w {
            self.waiting_since.store(resumed as u32, Relaxed);
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
            let now = stamp(now_ms());
            self.last_in.store(now, Relaxed);
            // Release, after `last_in`: whoever sees these bytes sees their time (`facts`).
            add_wrapping_release(&self.bytes_in, r as u64);
            if self.request_start.load(Relaxed) == 0 {
                self.request_start.store(now, Relaxed);
                self.request_bytes.store(0, Relaxed);
            }
            add_saturating(&self.request_bytes, r as u64);
        } else if r == 0 || !errno_is_retry() {
            // EOF or a hard error: the server will close; it is no longer waiting.
            self.waiting_since.store(0, Relaxed);
        } else {
            // EAGAIN / EINTR: the server still waits on the client (sticky until data
            // arrives), but no longer inside this call: a provisional wait, which the
            // poller's next call without the fd ends (`polls`).
            let w = u64::from(self.waiting_since.load(Relaxed));
            if w != 0 && !polls::is_provisional(w) {
                self.waiting_since
                    .store(polls::provisional(w) as u32, Relaxed);
            }
        }
    }

    /// The server starts a write of `len` bytes.
    #[inline(always)]
    pub fn write_begin(&self) {
        if self.write_pending_since.load(Relaxed) == 0 {
            self.write_pending_since.store(stamp(now_ms()), Relaxed);
        }
    }

    /// Records the result of a write-family call that tried to move `len` bytes.
    #[inline(always)]
    pub fn record_write(&self, r: isize, len: usize) {
        if r > 0 {
            let now = stamp(now_ms());
            self.last_out.store(now, Relaxed);
            add_wrapping(&self.bytes_out, r as u64);
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

    /// The facts the verdict needs, as of now (`fd`: this slot's, for its poll mark).
    pub fn facts(&self, fd: libc::c_int) -> stallguard_policy::Facts {
        // The clock the stamps were taken with (the hooks' coarse one, or the exact one).
        let now = now_ms();
        let time = |t: &Stamp| expand(t.load(Relaxed), now);
        // A poll/select server that left the fd out of its next call stopped waiting on it.
        let w = polls::seen_wait(u64::from(self.waiting_since.load(Relaxed)), || {
            polls::wait_ended(fd)
        });
        let mut waiting_since = expand(w as u32, now);
        // Bytes before their time (Acquire, pairing with `record_read`'s Release): a read that
        // lands while we look is seen either not at all (the wait above was real: a cut is due
        // to the client) or with its fresh `last_in`. Never bytes with a stale time, which would
        // judge that wait, already over, as `idle` instead of its `first_byte`.
        let bytes_in_mod32 = self.bytes_in.load(Acquire);
        let last_in = time(&self.last_in);
        let last_out = time(&self.last_out);
        let first_wait_at = time(&self.first_wait_at);
        if waiting_since == 0 && self.has_flag(Flags::EPOLL_IN) {
            // An event loop with the fd in its read set waits on the client between events.
            waiting_since = first_wait_at.max(last_in).max(last_out);
        }
        // Only its zero-ness decides (the first-byte timer): a total that wrapped to 0 after
        // bytes were read is not "nothing read".
        let bytes_in = match bytes_in_mod32 {
            0 if last_in != 0 => 1 << 32,
            n => u64::from(n),
        };
        stallguard_policy::Facts {
            accepted_at: time(&self.accepted_at),
            connecting_since: time(&self.connecting_since),
            own_deadline: time(&self.own_deadline),
            first_wait_at,
            waiting_since,
            last_in,
            last_out,
            bytes_in,
            request_start: time(&self.request_start),
            request_bytes: widen(self.request_bytes.load(Relaxed)),
            write_pending_since: time(&self.write_pending_since),
            framing: self.framing(now),
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
    pub fn stage_started(&self, since: u64) {
        self.stage_since.store(stamp(since), Relaxed);
        self.stage_bytes.store(0, Relaxed);
    }

    /// The lens's header stage runs from the request's first byte, with the bytes read since
    /// (as STALLGUARD_REQUEST always did). False if no request has started.
    pub fn stage_from_request(&self) -> bool {
        let start = self.request_start.load(Relaxed);
        if start == 0 {
            return false;
        }
        self.stage_since.store(start, Relaxed);
        self.stage_bytes
            .store(self.request_bytes.load(Relaxed), Relaxed);
        true
    }

    /// `n` more bytes read in the current stage.
    pub fn stage_read(&self, n: u64) {
        add_saturating(&self.stage_bytes, n);
    }

    /// What the verdict needs, when the lens knows the framing (`now`: the stamps' clock).
    fn framing(&self, now: u64) -> Option<stallguard_policy::Framing> {
        let lens = self.lens_state();
        let stage = lens.stage();
        stage.is_framed().then(|| stallguard_policy::Framing {
            stage,
            since: expand(self.stage_since.load(Relaxed), now),
            bytes: widen(self.stage_bytes.load(Relaxed)),
            requests: lens.requests(),
        })
    }

    // ---- the few facts other modules set or read directly ----

    /// A write is pending (the watcher then follows the kernel's acknowledged bytes).
    pub fn write_pending(&self) -> bool {
        self.write_pending_since.load(Relaxed) != 0
    }

    /// The server's own shutdown: after SHUT_WR it no longer tries to write.
    pub fn end_write(&self) {
        self.write_pending_since.store(0, Relaxed);
    }

    /// An outbound connect() started at `now`.
    pub fn connect_started(&self, now: u64) {
        self.connecting_since.store(stamp(now), Relaxed);
    }

    /// The outbound connect() completed.
    pub fn connected(&self) {
        self.connecting_since.store(0, Relaxed);
    }

    /// The program's own deadline (`at`: absolute ms of `clock::monotonic_ms`, 0: none),
    /// `now` being that clock now. A deadline further than a stamp can say (24.8 days) is
    /// not kept: it would read as past, and a deadline must never fire early.
    pub fn set_own_deadline(&self, at: u64, now: u64) {
        let keep = at != 0 && at.saturating_sub(now) < 1 << 31;
        self.own_deadline
            .store(if keep { stamp(at) } else { 0 }, Relaxed);
    }

    /// Bytes written, modulo 2^32 (display).
    pub fn bytes_out(&self) -> u64 {
        u64::from(self.bytes_out.load(Relaxed))
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

/// A 32-bit total (display only): wraps.
#[inline(always)]
fn add_wrapping(counter: &AtomicU32, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n as u32), Relaxed);
}

/// As [`add_wrapping`], publishing the stores before it (a plain store on x86-64).
fn add_wrapping_release(counter: &AtomicU32, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n as u32), Release);
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
    fn slot_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 128);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn stamps_expand_exactly_within_24_days_and_late_beyond() {
        let day = 86_400_000u64;
        for now in [
            5_000u64,
            3 * day,
            (1 << 32) + 17,
            (7 << 32) - 3,
            (1 << 40) + 5,
        ] {
            for age in [0u64, 1, 100, 20 * day, (1 << 31) - 1] {
                if age < now {
                    let t = now - age;
                    assert_eq!(expand(stamp(t), now), t, "now {now} age {age}");
                }
            }
            // Up to a tick in the future (the coarse clock is the end of the tick).
            assert_eq!(expand(stamp(now + 100), now), now + 100);
            // Older than 2^31 ms: read as later than it was, never earlier.
            for age in [(1u64 << 31) + 1, 30 * day, 49 * day, 60 * day] {
                if age < now {
                    let t = now - age;
                    assert!(expand(stamp(t), now) > t, "now {now} age {age}");
                }
            }
        }
        assert_eq!(expand(0, 1 << 40), 0, "never stays never");
        // A time whose low 32 bits are 0 (once in 49.7 days) reads as never: a timer that
        // does not run, never one that runs early.
        assert_eq!(expand(stamp(7 << 32), (7 << 32) + 5), 0);
    }

    #[test]
    fn rate_counts_saturate_and_totals_wrap() {
        let s = fresh_slot();
        s.track(MAX_FDS as i32 - 1, &Identity::default(), 10);
        s.record_read(0x7fff_f000, false);
        s.record_read(0x7fff_f000, false);
        s.record_read(0x7fff_f000, false);
        let f = s.facts(MAX_FDS as i32 - 1);
        assert_eq!(
            f.request_bytes,
            u64::MAX,
            "saturated: more than any rate needs"
        );
        assert_ne!(f.bytes_in, 0, "bytes were read");
        s.untrack();
    }

    #[test]
    fn bytes_read_are_never_seen_without_their_time() {
        // The hooks and the watcher race on every slot. A watcher that saw a read's bytes but
        // not its `last_in` judged the wait the read just ended as idle since it began, and a
        // reap landing as the first byte arrived was logged `idle`, not `first_byte`.
        const FD: i32 = MAX_FDS as i32 - 2;
        const ROUNDS: u32 = 20_000;
        assert!(init());
        let s = slot(FD).unwrap();
        let armed = AtomicU32::new(0);
        let done = AtomicU32::new(0);
        let mut torn = 0u32;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for round in 1..=ROUNDS {
                    while armed.load(Acquire) != round {
                        std::hint::spin_loop();
                    }
                    s.record_read(1, false);
                    done.store(round, Release);
                }
            });
            for round in 1..=ROUNDS {
                s.track(FD, &Identity::default(), 10);
                s.mark_reading(|| false);
                armed.store(round, Release);
                loop {
                    let f = s.facts(FD);
                    if f.bytes_in != 0 {
                        torn += u32::from(f.last_in == 0);
                        break;
                    }
                }
                while done.load(Acquire) != round {
                    std::hint::spin_loop();
                }
            }
        });
        s.untrack();
        assert_eq!(torn, 0, "rounds where bytes were seen without their time");
    }

    #[test]
    fn identity_packs_ports_and_family_exactly() {
        let s = fresh_slot();
        for family in [libc::AF_INET, libc::AF_INET6, libc::AF_UNIX] {
            let id = Identity {
                cookie: u64::MAX - 1,
                family: family as u16,
                peer_ip: [7; 16],
                peer_port: 65535,
                local_port: 1,
            };
            s.track(MAX_FDS as i32 - 1, &id, 10);
            s.set_flag(Flags::COUNTED | Flags::LENS);
            s.clear_flag(Flags::LENS);
            assert_eq!(s.identity(), id, "flags set and cleared keep the family");
            s.untrack();
        }
    }

    #[test]
    fn far_own_deadlines_are_not_kept() {
        let s = fresh_slot();
        s.track(MAX_FDS as i32 - 1, &Identity::default(), 10);
        s.set_own_deadline(1_000 + 5_000, 1_000);
        assert_eq!(s.facts(MAX_FDS as i32 - 1).own_deadline, 6_000);
        s.set_own_deadline(1_000 + (1 << 31), 1_000);
        assert_eq!(s.facts(MAX_FDS as i32 - 1).own_deadline, 0);
        s.untrack();
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
