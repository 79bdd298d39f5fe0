//! The library's own allocations (the watcher's tables and buffers) are never in flight
//! across a fork.
//!
//! Why: the watcher thread makes a single-threaded program multi-threaded, and a forked child
//! keeps only the forking thread. glibc's malloc is fork-safe (it takes its arena locks around
//! fork), but not every allocator a program runs with is: AddressSanitizer's in GCC 12 has no
//! fork handling at all, and neither have some custom allocators. If the watcher is inside
//! such an allocator when the program forks, the child inherits the allocator's lock held by
//! a thread it does not have, and its first `malloc` (an `opendir`, a `printf`) waits forever:
//! the guard would have hung the program's child.
//!
//! So every allocation of this library passes a gate: the `fork()` prepare handler closes it
//! and waits (briefly: an allocation is short) until no allocation of ours is in flight; the
//! parent and child handlers open it again. The program's own allocations do not pass here.
//! Cost: two uncontended atomic operations per allocation, in the watcher only (the hooks'
//! paths do not allocate).

use crate::abi::sys;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};

/// Allocations of this library in flight (any thread).
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
/// Set from the prepare handler until the fork returns: no allocation may start.
static FORKING: AtomicBool = AtomicBool::new(false);

pub struct ForkSafe;

/// The thread inside a [`Busy`] section (0: none): its allocations are already counted.
static BUSY_THREAD: AtomicUsize = AtomicUsize::new(0);

/// The watcher's work between two sleeps, as one allocation in flight: besides its own
/// allocations, the libc calls it makes may allocate too (`opendir`, `malloc_trim`), which
/// no global allocator sees. So fork() waits for the watcher to be asleep, and the watcher
/// starts no work while a fork is being prepared. One thread at a time (the watcher).
pub struct Busy(());

impl Busy {
    pub fn new() -> Busy {
        enter();
        BUSY_THREAD.store(sys::thread_self() as usize, Release);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY_THREAD.store(0, Release);
        leave();
    }
}

/// An allocation's entry: not counted again inside the thread's own [`Busy`] section (false).
fn enter_allocation() -> bool {
    let busy = BUSY_THREAD.load(Acquire);
    if busy != 0 && busy == sys::thread_self() as usize {
        return false;
    }
    enter();
    true
}

/// Enters the gate: waits while a fork is being prepared.
fn enter() {
    loop {
        while FORKING.load(Acquire) {
            sys::yield_now();
        }
        IN_FLIGHT.fetch_add(1, AcqRel);
        if !FORKING.load(Acquire) {
            return;
        }
        // A fork started between the check and the count: step back and let it pass.
        IN_FLIGHT.fetch_sub(1, AcqRel);
    }
}

fn leave() {
    IN_FLIGHT.fetch_sub(1, Release);
}

/// How long the prepare handler waits for allocations in flight (ms). An allocation takes
/// microseconds; the bound is for a fork from a signal handler that interrupted one of our
/// own allocations on the same thread, which would otherwise wait on itself. Past it the fork
/// goes ahead as it would without the gate.
const WAIT_MS: u64 = 100;

pub extern "C" fn before_fork() {
    FORKING.store(true, SeqCst);
    let until = crate::runtime::clock::monotonic_ms() + WAIT_MS;
    while IN_FLIGHT.load(SeqCst) != 0 && crate::runtime::clock::monotonic_ms() < until {
        sys::yield_now();
    }
}

/// In the parent after fork, and in the child (which has no other thread: nothing in flight).
pub extern "C" fn after_fork() {
    FORKING.store(false, SeqCst);
}

pub extern "C" fn after_fork_in_child() {
    IN_FLIGHT.store(0, SeqCst);
    BUSY_THREAD.store(0, SeqCst); // the watcher thread was not copied
    FORKING.store(false, SeqCst);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees (alignment, size, ownership) are passed through; the gate around it
// only delays the call.
unsafe impl GlobalAlloc for ForkSafe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let counted = enter_allocation();
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if counted {
            leave();
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let counted = enter_allocation();
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if counted {
            leave();
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let counted = enter_allocation();
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) };
        if counted {
            leave();
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let counted = enter_allocation();
        // SAFETY: the caller's contract for `realloc`, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if counted {
            leave();
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The prepare handler returns only once our allocation in flight has ended, and no
    /// allocation starts while it is closed. (This test binary allocates through the gate: it
    /// is the crate's global allocator.)
    #[test]
    fn fork_waits_for_an_allocation_in_flight() {
        let waited_ms = Arc::new(AtomicU64::new(u64::MAX));
        let started = Arc::new(AtomicBool::new(false));
        let (w, st) = (Arc::clone(&waited_ms), Arc::clone(&started));
        enter(); // an allocation of ours is in flight on this thread
        let forker = std::thread::spawn(move || {
            let t0 = Instant::now();
            st.store(true, SeqCst);
            before_fork();
            w.store(t0.elapsed().as_millis() as u64, SeqCst);
            after_fork();
        });
        while !started.load(SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(40));
        leave();
        forker.join().unwrap();
        // It could return only once the allocation ended (40 ms after it started waiting,
        // or later under load) or at its bound: never sooner.
        let waited = waited_ms.load(SeqCst);
        assert!(
            waited >= 39,
            "the fork went ahead after {waited} ms, mid-allocation"
        );
        assert!(!FORKING.load(SeqCst), "the gate is open again");
        let v: Vec<u8> = Vec::with_capacity(64); // and allocations pass
        assert_eq!(v.capacity(), 64);
    }
}
