//! The shared tables, written by the hooks and read by the watcher, atomics only:
//! * `slot`: one slot per fd (the connection's facts and its ownership protocol), `flags`;
//! * `sources`: connections per client address (STALLGUARD_PER_SOURCE), shared across fork;
//! * `holders`: which processes still hold a counted connection (its place is given back by
//!   the last one);
//! * `stats`: this process's counters;
//! * `lines`: the latest request line of each HTTP connection (a side table, for display);
//! * `owners`: after the program split its fd table, which thread tracked each connection.
//! * `listeners`: the listening sockets, whose accept queues the watcher reads (pressure).
//! * `polls`: which poll/select call last had each connection in its read set, per thread, so
//!   that the same thread's next call without it ends the server's wait.
//! * `per_fd`: the lazily mapped one-cell-per-fd side table `lines` and `polls` keep theirs in.
//!
//! The fd table is one anonymous `MAP_NORESERVE` mapping sized for `MAX_FDS` descriptors. The
//! kernel backs a page only when a slot on it is written (accept), so resident memory follows
//! the fds in use, not `RLIMIT_NOFILE`; reading a never-written slot maps the shared zero page.
//! A hook on an untracked fd costs a bounds check, one load of the slot state and a branch.

mod flags;
pub mod holders;
pub mod lines;
pub mod listeners;
pub mod owners;
mod per_fd;
pub mod polls;
mod slot;
pub mod sources;
pub mod stats;

pub use crate::abi::socket::Identity;
pub use flags::Flags;
pub use slot::{phase, Slot, TRACKED};
#[allow(unused_imports)] // the table's model test (tests/reliability) names every phase
pub use slot::{ACTING, FREE};

use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

/// Descriptors at or above this are never tracked (fs.nr_open defaults to 2^20).
pub const MAX_FDS: usize = 1 << 20;

/// The table, read by every hook: alone on its cache lines (128 bytes: the line and the one
/// the adjacent-line prefetcher pairs with it), so that the counters below, written as
/// connections come and go, never take it away from the other cores' caches.
#[repr(align(128))]
struct ReadMostly(AtomicPtr<Slot>);

static BASE: ReadMostly = ReadMostly(AtomicPtr::new(std::ptr::null_mut()));
/// One past the highest fd ever tracked in this process: the watcher scans `0..HIGH_WATER`.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

/// Reserves the table. Called once by the constructor; without it nothing is ever tracked.
pub fn init() -> bool {
    if !BASE.0.load(Acquire).is_null() {
        return true;
    }
    match crate::abi::sys::map_anonymous(MAX_FDS * std::mem::size_of::<Slot>(), false) {
        Some(p) => {
            BASE.0.store(p.cast(), Release);
            true
        }
        None => false,
    }
}

/// The slot of `fd` whatever its state, if the table exists and fd is in range.
#[inline(always)]
pub fn slot(fd: libc::c_int) -> Option<&'static Slot> {
    let base = BASE.0.load(Acquire);
    if (fd as u32 as usize) >= MAX_FDS || base.is_null() {
        return None;
    }
    // SAFETY: `base` is a live mapping of MAX_FDS slots (never unmapped), fd < MAX_FDS, and a
    // zeroed slot is a valid Slot (all atomics).
    Some(unsafe { &*base.add(fd as usize) })
}

/// The slot of `fd` if it is a tracked connection: the hooks' fast path.
#[inline(always)]
pub fn tracked(fd: libc::c_int) -> Option<&'static Slot> {
    match slot(fd) {
        Some(s) if s.is_tracked() => Some(s),
        _ => None,
    }
}

pub fn high_water() -> usize {
    HIGH_WATER.load(Acquire)
}

/// `fd` is now tracked: the watcher must scan up to it.
fn raise_high_water(fd: libc::c_int) {
    // Most new connections reuse a number below the mark: a load, not a locked write.
    if HIGH_WATER.load(Relaxed) <= fd as usize {
        HIGH_WATER.fetch_max(fd as usize + 1, AcqRel);
    }
}

/// Tracked connections the server has waited on at least once (`first_wait_at` set). Only
/// those can be on the client's turn, which pressure needs as much as waiting clients: while
/// there are none, the watcher reads no listener and makes no full pass for pressure (issue
/// 13). Raised once per connection just before its `first_wait_at` is stored (a branch taken
/// once per connection, never on the common read path), lowered when its slot stops tracking
/// it. A race between two threads starting the first wait at once may count a connection
/// twice: the count errs only upward (more work, never a missed pressure).
static ENGAGED: AtomicIsize = AtomicIsize::new(0);

/// Whether some tracked connection may be on the client's turn (see `ENGAGED`).
pub fn engaged() -> bool {
    ENGAGED.load(Acquire) > 0
}

/// `delta` connections more (or fewer) have been waited on (see `ENGAGED`).
fn engage(delta: isize) {
    ENGAGED.fetch_add(delta, AcqRel);
}

/// One bit per fd: "watcher, look at this slot at your next tick". Raised where a slot gets
/// facts the watcher cannot infer from its own schedule: a new connection (`Slot::track`)
/// and a program-set deadline. Never on the read/write path (the watcher's bounded sweep
/// finds a client's turn starting long before its timer can run out).
static ATTENTION: [AtomicU64; MAX_FDS / 64] = [const { AtomicU64::new(0) }; MAX_FDS / 64];
static ATTENTION_ANY: AtomicBool = AtomicBool::new(false);

/// Asks the watcher to look at `fd` at its next tick (one locked OR: accept-rate paths only).
pub fn call_attention(fd: libc::c_int) {
    let fd = fd as u32 as usize;
    if fd < MAX_FDS {
        ATTENTION[fd / 64].fetch_or(1 << (fd % 64), Release);
        // SeqCst, as the watcher's doze word and its look at this flag (`attention_pending`):
        // either this wakes a doze, or the watcher sees the flag before it dozes.
        ATTENTION_ANY.store(true, SeqCst);
        // A dozing watcher looks now (a program's deadline may be near).
        crate::runtime::clock::wake_watcher();
    }
}

/// Whether some slot asked for attention since the watcher last took the requests.
pub fn attention_pending() -> bool {
    ATTENTION_ANY.load(SeqCst)
}

/// The watcher: calls `each` with every fd that asked for attention since the last call
/// (below `high`), clearing the requests.
pub fn take_attention(high: usize, mut each: impl FnMut(libc::c_int)) {
    if !ATTENTION_ANY.swap(false, AcqRel) {
        return;
    }
    for (w, word) in ATTENTION.iter().enumerate().take(high.div_ceil(64)) {
        if word.load(Relaxed) == 0 {
            continue;
        }
        let mut bits = word.swap(0, AcqRel);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            each((w * 64 + b) as libc::c_int);
        }
    }
}
