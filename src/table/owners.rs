//! Which thread's fd table a connection lives in, once the program has split its fd table
//! (`unshare(CLONE_FILES)`, `close_range(.., CLOSE_RANGE_UNSHARE)`: see `track::split`).
//!
//! Until a split, every program thread shares one table and nothing is recorded here (the
//! watcher reaches that table through the process). After one, each newly tracked connection
//! records the id of the thread that tracked it, so the watcher can reach the table that
//! thread uses (`pidfd_open(tid, PIDFD_THREAD)` + `pidfd_getfd`). The record is a hint, never
//! trusted: the watcher acts only on a copy whose SO_COOKIE is the connection's.
//!
//! One entry per fd number, like the slots: an `AtomicI32` array in a lazily created
//! `MAP_NORESERVE` mapping (4 MiB of address space, a page backed only where written).

use super::MAX_FDS;
use crate::abi::sys;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering::*};

static SPLIT: AtomicBool = AtomicBool::new(false);
static OWNERS: AtomicPtr<AtomicI32> = AtomicPtr::new(std::ptr::null_mut());
const BYTES: usize = MAX_FDS * std::mem::size_of::<AtomicI32>();

/// A thread of this process now has a private fd table (its own hook, after the real call).
/// Creates the owner array on first use (one mmap; no allocator, no lock).
pub fn table_split() {
    if OWNERS.load(Acquire).is_null() {
        if let Some(p) = sys::map_anonymous(BYTES, false) {
            let p = p.cast::<AtomicI32>();
            if OWNERS
                .compare_exchange(std::ptr::null_mut(), p, AcqRel, Acquire)
                .is_err()
            {
                // SAFETY: our own fresh mapping, lost the race, never published.
                unsafe { sys::unmap(p.cast(), BYTES) };
            }
        }
    }
    SPLIT.store(true, Release);
}

/// Whether any thread of this process has split its fd table (since start or fork).
#[inline(always)]
pub fn split_seen() -> bool {
    SPLIT.load(Relaxed)
}

fn entry(fd: libc::c_int) -> Option<&'static AtomicI32> {
    let base = OWNERS.load(Acquire);
    if base.is_null() || fd as u32 as usize >= MAX_FDS {
        return None;
    }
    // SAFETY: `base` is a live mapping of MAX_FDS entries (never unmapped once published),
    // fd < MAX_FDS, and zeroed memory is a valid AtomicI32.
    Some(unsafe { &*base.add(fd as usize) })
}

/// `fd` is being tracked by the calling thread: after a split, remember which thread.
#[inline(always)]
pub fn note(fd: libc::c_int) {
    if split_seen() {
        if let Some(e) = entry(fd) {
            e.store(sys::gettid(), Relaxed);
        }
    }
}

/// The thread that tracked the connection on `fd`, if recorded after a split.
pub fn owner(fd: libc::c_int) -> Option<i32> {
    entry(fd).map(|e| e.load(Relaxed)).filter(|&tid| tid > 0)
}

/// In a forked child (single-threaded, one table: the forking thread's): the parent's thread
/// ids mean nothing here.
pub fn forget_after_fork() {
    SPLIT.store(false, Relaxed);
    let base = OWNERS.load(Acquire);
    if !base.is_null() {
        // SAFETY: our mapping; the child has one thread, which is running this handler.
        unsafe { sys::zero_pages(base.cast(), BYTES) };
    }
}
