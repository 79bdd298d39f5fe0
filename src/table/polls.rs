//! Which poll/select call last had each connection in its read set, so that the same thread's
//! next call *without* it ends the server's wait on the client (issue 11, item 5): a server
//! that polled fd X, read a request from it, then stopped including X in its poll sets (it
//! queued X for a worker) no longer waits on X's client, exactly as `EPOLL_CTL_DEL` says for
//! an event loop.
//!
//! * Pollers: a small global table of records keyed by a hash of the calling thread
//!   (`pthread_self`: no TLS, no allocation), each with a generation the owning thread bumps
//!   once per poll/select call. A record belongs for good to the first thread that claims it;
//!   a thread that finds its few records taken by others gets none, and its marks say
//!   `STICKY` (today's rule: the wait lasts until data arrives). So a collision can only keep
//!   a wait alive, never end one early.
//! * Marks: one word per fd (a side table, mapped like `lines` when first written):
//!   (poller, generation of the call that last had the fd in its read set). The wait counts
//!   as ended once that poller's generation moved past it and the fd was not marked again.
//!   An fd polled by two threads at once gets `STICKY` until its wait starts afresh.
//! * Waits: `Slot::waiting_since` keeps its low bit for how the wait is known. Odd: a
//!   *provisional* wait (a poll mark, an EAGAIN, epoll interest): the next poll call without
//!   the fd ends it. Even: a read is in progress on the fd (a worker blocked in `read` after
//!   the poller let the fd go): a poll call elsewhere never ends that. Shifting a timestamp
//!   by 1 ms is below the clock's tick.
//!
//! Cost: per call, a thread-pointer load, a multiply and two loads and a store (only once a
//! connection was ever tracked); per tracked fd in a read set, one load and (when it changed)
//! one store of its mark.

use super::per_fd::PerFd;
use crate::abi::sys;
use std::sync::atomic::{AtomicU64, Ordering::*};

const POLLERS: usize = 1024;
/// Records a thread may try: its own hash and the next ones.
const PROBES: usize = 4;
const GEN_BITS: u32 = 52;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

/// A mark that names no single poller: the wait is not ended by any poll call (today's rule).
pub const STICKY: u64 = u64::MAX;

/// One thread's record, alone on its cache line (each is written by its thread on every call).
#[repr(align(64))]
struct Poller {
    /// `pthread_self` of the thread that claimed it (0: free).
    owner: AtomicU64,
    /// The generation of the thread's latest finished marking (bumped once per call).
    generation: AtomicU64,
}

static POLLER: [Poller; POLLERS] = [const {
    Poller {
        owner: AtomicU64::new(0),
        generation: AtomicU64::new(0),
    }
}; POLLERS];

/// Each fd's mark (`per_fd`: mapped when the first mark is written).
static MARKS: PerFd<AtomicU64> = PerFd::new();

/// One poll/select call: the poller it counts for (1-based; 0: none, marks are `STICKY`) and
/// the generation its marks carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    poller: usize,
    generation: u64,
}

impl Call {
    pub const NONE: Call = Call {
        poller: 0,
        generation: 0,
    };
}

// ---- pure decisions (unit-tested below) ----

fn pack(call: Call) -> u64 {
    ((call.poller as u64) << GEN_BITS) | (call.generation & GEN_MASK)
}

/// The poller (1-based) and generation a mark names; None for no mark or `STICKY`.
fn unpack(mark: u64) -> Option<(usize, u64)> {
    let poller = (mark >> GEN_BITS) as usize;
    (mark != STICKY && (1..=POLLERS).contains(&poller)).then_some((poller, mark & GEN_MASK))
}

/// Whether a poller now at generation `current` made a call after the one that made
/// `marked` (52-bit generations compared modulo: no wrap in practice, and a wrap can only
/// read as "not moved", keeping the wait).
pub fn moved_past(marked: u64, current: u64) -> bool {
    let ahead = current.wrapping_sub(marked) & GEN_MASK;
    ahead != 0 && ahead < 1 << (GEN_BITS - 1)
}

/// The mark `call` leaves on an fd in its read set, whose mark was `old` (`old_ended`: its
/// poller moved past it). `fresh_wait`: no wait was running (the client's last bytes were
/// read), so whoever marked before does not matter.
pub fn next_mark(old: u64, old_ended: bool, fresh_wait: bool, call: Call) -> u64 {
    if call.poller == 0 {
        return STICKY; // no record for this thread: no call of it can end the wait
    }
    let mine = pack(call);
    if fresh_wait || old == 0 || old_ended {
        return mine;
    }
    match unpack(old) {
        Some((poller, _)) if poller == call.poller => mine,
        // Another thread polls it too, or it is already shared: no single thread's next call
        // can say the server stopped waiting.
        _ => STICKY,
    }
}

/// A provisional wait started at `now` (odd): a poll mark, an EAGAIN, epoll interest.
pub const fn provisional(now: u64) -> u64 {
    now | 1
}

/// A wait in a read call started at `now` (even, never 0).
pub fn definite(now: u64) -> u64 {
    if now & !1 == 0 {
        2
    } else {
        now & !1
    }
}

pub const fn is_provisional(waiting_since: u64) -> bool {
    waiting_since & 1 == 1
}

/// The wait as the watcher judges it: a provisional wait whose poller moved on without the
/// fd (`poll_ended`) is over; a read in progress is not, whatever the pollers did.
pub fn seen_wait(waiting_since: u64, poll_ended: impl FnOnce() -> bool) -> u64 {
    if is_provisional(waiting_since) && poll_ended() {
        0
    } else {
        waiting_since
    }
}

/// The wait once a read (`definite`) or a poll mark enters at `now`, the wait being
/// `waiting_since` (not 0) and `ended` whether the fd's poll wait had ended. A wait that had
/// ended starts again now: the time the fd spent queued inside the server is never charged.
pub fn resumed(waiting_since: u64, ended: bool, now: u64, reading: bool) -> u64 {
    let since = if is_provisional(waiting_since) && ended {
        now
    } else {
        waiting_since
    };
    if reading {
        definite(since)
    } else if is_provisional(waiting_since) {
        provisional(since)
    } else {
        waiting_since // a read is in progress: it keeps its own wait
    }
}

// ---- the tables ----

/// This thread's record for a new call (`Call::NONE` before any connection is tracked, or
/// when the thread's records are all taken by other threads).
#[inline]
pub fn begin_call() -> Call {
    if super::high_water() == 0 {
        return Call::NONE; // no connection ever tracked: nothing to mark
    }
    claim()
}

#[inline(never)] // once per call, out of the poll export's loop
fn claim() -> Call {
    let me = sys::thread_self();
    let home = (me.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - POLLERS.trailing_zeros())) as usize;
    for i in 0..PROBES {
        let index = (home + i) % POLLERS;
        let p = &POLLER[index];
        let owner = p.owner.load(Relaxed);
        let mine = owner == me
            || (owner == 0 && p.owner.compare_exchange(0, me, Relaxed, Relaxed).is_ok());
        if mine {
            // Only the owner writes its generation: a plain load and store.
            let generation = p.generation.load(Relaxed).wrapping_add(1) & GEN_MASK;
            return Call {
                poller: index + 1,
                generation,
            };
        }
    }
    Call::NONE
}

/// The call marked its fds: publish its generation (after the marks, so a watcher that sees
/// the new generation also sees the fds it kept).
#[inline]
pub fn end_call(call: Call) {
    if call.poller != 0 {
        POLLER[call.poller - 1]
            .generation
            .store(call.generation, Release);
    }
}

fn mark_ended(mark: u64) -> bool {
    unpack(mark).is_some_and(|(poller, marked)| {
        moved_past(marked, POLLER[poller - 1].generation.load(Acquire))
    })
}

/// `fd` (a tracked connection) is in the read set of `call`. `fresh_wait`: no wait was
/// running. Returns whether its previous poll wait had ended (then its wait starts again).
#[inline(never)] // tracked fds only: the loop over untracked ones stays small
pub fn mark(fd: libc::c_int, call: Call, fresh_wait: bool) -> bool {
    let Some(cell) = MARKS.get_or_map(fd) else {
        return false;
    };
    let old = cell.load(Relaxed);
    let ended = mark_ended(old);
    let new = next_mark(old, ended, fresh_wait, call);
    if new != old {
        cell.store(new, Relaxed);
    }
    ended
}

/// Whether the poll wait on `fd` has ended: the poller that last had it in its read set has
/// made a call without it since.
pub fn wait_ended(fd: libc::c_int) -> bool {
    let Some(cell) = MARKS.get(fd) else {
        return false;
    };
    let mark = cell.load(Acquire);
    // A poller that marks the fd again right now publishes its generation after the mark:
    // a mark read again unchanged after the generation belongs with it.
    mark_ended(mark) && cell.load(Acquire) == mark
}

/// A new connection on `fd`: no poll mark of the old one applies.
pub fn forget(fd: libc::c_int) {
    if let Some(cell) = MARKS.get(fd) {
        if cell.load(Relaxed) != 0 {
            cell.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(poller: usize, generation: u64) -> Call {
        Call { poller, generation }
    }

    #[test]
    fn a_poller_moves_past_only_forward() {
        assert!(!moved_past(5, 5), "the same call");
        assert!(moved_past(5, 6));
        assert!(
            !moved_past(6, 5),
            "the mark is ahead: that call is still marking"
        );
        // Modulo 2^52: just after a wrap the newer generation is still ahead.
        assert!(moved_past(GEN_MASK, 0));
        assert!(!moved_past(0, GEN_MASK));
    }

    #[test]
    fn marks_name_one_poller_or_none() {
        let a = call(3, 7);
        assert_eq!(unpack(pack(a)), Some((3, 7)));
        assert_eq!(unpack(0), None);
        assert_eq!(unpack(STICKY), None);
        // First mark, a fresh wait, or the old poller let it go: the new poller's mark.
        assert_eq!(next_mark(0, false, false, a), pack(a));
        assert_eq!(next_mark(pack(call(9, 1)), true, false, a), pack(a));
        assert_eq!(next_mark(STICKY, false, true, a), pack(a));
        // The same poller again: its newer mark.
        assert_eq!(next_mark(pack(call(3, 6)), false, false, a), pack(a));
        // Another thread still polls it: shared, so sticky until the wait starts afresh.
        assert_eq!(next_mark(pack(call(9, 1)), false, false, a), STICKY);
        assert_eq!(next_mark(STICKY, false, false, a), STICKY);
        // A thread without a record: sticky.
        assert_eq!(next_mark(0, false, true, Call::NONE), STICKY);
    }

    #[test]
    fn only_a_provisional_wait_is_ended_by_the_pollers() {
        let poll_wait = provisional(1000);
        let read_wait = definite(1000);
        assert!(is_provisional(poll_wait) && !is_provisional(read_wait));
        assert_eq!(seen_wait(poll_wait, || true), 0);
        assert_eq!(seen_wait(poll_wait, || false), poll_wait);
        // A worker blocked in read after the poller let the fd go still waits on the client.
        assert_eq!(seen_wait(read_wait, || panic!("not asked")), read_wait);
        assert_eq!(seen_wait(0, || panic!("not asked")), 0);
        assert_ne!(definite(1), 0, "0 means not waiting");
    }

    #[test]
    fn an_ended_wait_restarts_and_queued_time_is_not_charged() {
        let since = provisional(1000);
        // A read enters: a definite wait, from the poll mark while the poller still had it…
        assert_eq!(resumed(since, false, 9000, true), definite(1000));
        // …or from now once the poller had let it go (it sat queued inside the server).
        assert_eq!(resumed(since, true, 9000, true), definite(9000));
        // A poll mark again: provisional, restarted only if the old one had ended.
        assert_eq!(resumed(since, false, 9000, false), since);
        assert_eq!(resumed(since, true, 9000, false), provisional(9000));
        // A read in progress keeps its wait whatever a poll call does.
        assert_eq!(resumed(definite(1000), true, 9000, false), definite(1000));
    }

    #[test]
    fn a_thread_keeps_its_record_and_generations_advance() {
        // The table is global: other tests of this binary may poll too, so only this thread's
        // own record is looked at.
        let a = claim();
        assert_ne!(a, Call::NONE);
        end_call(a);
        let b = claim();
        assert_eq!(b.poller, a.poller, "the same thread finds its record again");
        assert!(moved_past(a.generation, b.generation));
        end_call(b);
        let t = std::thread::spawn(claim).join().unwrap();
        assert_ne!(
            t.poller, a.poller,
            "another live thread never shares a record"
        );
    }
}
