//! Which way the real functions of the cancellable rows go (the `sys(..)` column of
//! `interpose.rs`): straight to the kernel (`syscall`), or through glibc's wrapper.
//!
//! Why: once a process has a second thread (our watcher is one), every cancellable glibc
//! wrapper (`read`, `write`, `recv*`, `send*`, `accept*`, `connect`, `close`, `poll`) turns
//! asynchronous cancellation on and off around its system call (two atomic compare-and-swaps,
//! ~45 instructions), so that a `pthread_cancel` from another thread can end a call blocked in
//! the kernel (glibc 2.36 `nptl/pthread_cancel.c`: another thread's cancel signals its target
//! only while the target is in asynchronous mode, which only the wrapper turns on). Nothing
//! else in those wrappers differs from the system call itself (`SYSCALL_CANCEL`). A thread can
//! only be cancelled by another thread: while the calling thread is the only one besides ours
//! (which cancel nobody), no one can, and the real functions make the system call themselves.
//! A single-threaded nginx worker, apache prefork child or fork-per-connection child then
//! pays for our watcher no more than it would without it.
//!
//! # Who is counted: glibc's own count
//!
//! Hooks on `pthread_create` cannot see every thread: glibc starts threads for itself through
//! its internal `__pthread_create` (`timer_create`/`mq_notify` with `SIGEV_THREAD`, POSIX AIO,
//! `getaddrinfo_a`), an `RTLD_DEEPBIND` plugin binds to libc's `pthread_create` first, and a
//! fork child handler registered before ours may start one before our handler runs (so
//! `pthread_create` and `thrd_create` are not hooked at all). All of
//! them go through `__pthread_create_2_1`, which keeps `__nptl_nthreads` (glibc 2.36, a
//! `GLIBC_PRIVATE` symbol libthread_db reads, `nptl/Versions:388`):
//! * raised before the clone (`nptl/pthread_create.c:762`: "We must do it before creating the
//!   thread"), lowered again if the clone failed (`:864`);
//! * lowered by an ending thread after its last user code: after its start routine, its
//!   `thread_local` and key destructors (`:492`); by the main thread in `pthread_exit`
//!   (`sysdeps/nptl/libc_start_call_main.h:68`);
//! * set to 1 in a fork child (`sysdeps/nptl/fork.h:41`, `fork_system_setup_after_fork`),
//!   which `posix/fork.c:85` runs before any `pthread_atfork` child handler (`:109`) when the
//!   parent had threads (else it is 1 already); `_Fork` and `vfork` leave the parent's count,
//!   ours included, which errs toward glibc's wrappers.
//!
//! The calls are direct while `count - ours <= 1` (`direct`), `ours` being our own live
//! threads (the watcher). Every race errs toward glibc's wrapper:
//! * a new thread is counted before it exists, by the thread creating it; while the count
//!   says the caller is alone, only the caller can create one, and it reads its own write.
//!   A stale value is no danger either: all changes are read-modify-writes of one location,
//!   so every value read is the true total at some point of its history, never older than
//!   the caller's own last change; a total of one (plus ours) at a point means any thread
//!   alive later was created after it, by the caller;
//! * an ending thread leaves the count only after its last user code: a stale (higher) count
//!   means glibc's wrapper, never the other way;
//! * ours: +1 only after the real `pthread_create` returned 0 (glibc counted the thread
//!   before), −1 at the end of the watcher's start routine (before glibc's decrement);
//! * fork: our prepare handler holds the direct way off (`HOLD`) in the parent until our
//!   parent handler, and in the child until our child handler, which sets `ours` to 0 (our
//!   watcher is not copied): a child handler registered before ours that starts a thread is
//!   counted, by glibc, from its creation;
//! * if `__nptl_nthreads` cannot be found (another libc, a future glibc), never direct.
//!
//! # Facts (each learned before it can matter), which decide whether the count is read at all
//! * `SINGLE`: the guard started (its constructor succeeded) and found the process with one
//!   thread (a raw `clone` thread is not in glibc's count), or this is a fork child;
//! * `CANCEL`: the program called `pthread_cancel` (our hook, before the real call): glibc's
//!   way for good, in this process and its children. A self-cancel in a single-threaded
//!   process must be acted on at the next cancellation point, which only glibc's wrapper does;
//!   and a cancel requested by a thread that has ended since is still pending;
//! * `FOREIGN`: a cancellable row's next definition (`RTLD_NEXT`) is not in libc: another
//!   interposer after us (proxychains, torsocks, socket_wrapper, VMA) that the system call
//!   would skip (`next_is_libc`);
//! * `OFF`: `STALLGUARD_DIRECT_SYSCALLS=off`;
//! * `UNCOUNTED`: glibc's count was not found.
//!
//! What is not seen: a thread started with a raw `clone` after start that cancels (with
//! glibc's `pthread_cancel`) a thread blocked in one of these calls; a signal handler that
//! creates a thread (not async-signal-safe) between the decision and the system call; a
//! cancel requested without our `pthread_cancel` export (an `RTLD_DEEPBIND` object's call)
//! by a thread that ended before its target's next call: that call goes direct and does not
//! act on the pending cancel (while the canceller lives, the count keeps glibc's way, so a
//! call blocked then is cancelled). Tools that catch system calls only inside libc's code
//! (syscall user dispatch with a libc-only region, syscall_intercept-style patching) do not
//! see the direct ones: `STALLGUARD_DIRECT_SYSCALLS=off`.

use super::syscall;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering::*};

/// The guard started and the process was seen with a single thread (at start, or as a
/// forked child).
const SINGLE: u8 = 1;
/// The program asked for a cancellation, ever (kept across fork).
const CANCEL: u8 = 4;
/// A cancellable row's next definition is another interposer's, not libc's.
const FOREIGN: u8 = 8;
/// `STALLGUARD_DIRECT_SYSCALLS=off`.
const OFF: u8 = 16;
/// glibc's thread count was not found.
const UNCOUNTED: u8 = 32;

/// The decision from the facts: whether the count may be read at all (else glibc's wrapper).
pub fn direct_given(facts: u8, instruction_available: bool) -> bool {
    instruction_available
        && facts & SINGLE != 0
        && facts & (CANCEL | FOREIGN | OFF | UNCOUNTED) == 0
}

/// The decision from the count: whether the caller is the only thread besides ours. `ours`
/// is our live threads, plus `HOLD` while a fork is under way (then the difference wraps to
/// a huge number: glibc's way). A thread glibc counts cannot be fewer than ours counted.
#[inline(always)]
pub fn alone_given(count: u32, ours: u32) -> bool {
    count.wrapping_sub(ours) <= 1
}

/// Added to `ours` from our fork prepare handler to our parent / child handler.
const HOLD: u32 = 1 << 31;

/// Whether every cancellable row's next definition lies in libc, the object that defines
/// `__errno_location` (`libc_base`, `None` if unknown): `rows` are each row's resolved
/// address and the base of the object it lies in (`None`: unknown). A row not resolved
/// (address 0) skips nobody.
pub fn next_is_libc(libc_base: Option<usize>, rows: &[(usize, Option<usize>)]) -> bool {
    let Some(libc_base) = libc_base else {
        return false;
    };
    rows.iter()
        .all(|&(address, base)| address == 0 || base == Some(libc_base))
}

static FACTS: AtomicU8 = AtomicU8::new(0);

/// What every call of a cancellable row reads, alone on its cache lines (128 bytes: the line
/// and the one the adjacent-line prefetcher pairs with it), so that no write to other data
/// ever takes the line away from a reader's cache. Written only when the facts change, when
/// our watcher starts or ends, and around a fork.
#[repr(align(128))]
struct ReadMostly {
    /// glibc's `__nptl_nthreads` while the facts allow the direct way; `NEVER` otherwise
    /// (so the call reads a count either way, with no extra test).
    count: AtomicPtr<u32>,
    /// Our live threads (+ `HOLD` during a fork).
    ours: AtomicU32,
}

/// A count no process reaches: `alone_given(NEVER, ours)` is false for every `ours` (at most
/// a few threads, plus `HOLD`).
static NEVER: u32 = u32::MAX;

fn never() -> *mut u32 {
    std::ptr::addr_of!(NEVER).cast_mut()
}

static ROUTE: ReadMostly = ReadMostly {
    count: AtomicPtr::new(std::ptr::addr_of!(NEVER).cast_mut()),
    ours: AtomicU32::new(0),
};

/// glibc's count, found once by `find_count` (null: not found, then `NEVER`).
static GLIBC_COUNT: AtomicPtr<u32> = AtomicPtr::new(std::ptr::null_mut());

/// Whether the real functions make the system call themselves: the count's address, the
/// count, ours, a subtraction and a compare. Relaxed is enough for every race (see the module
/// header: each stale value means glibc's wrapper); the count is glibc's plain `unsigned
/// int`, written with atomic instructions by glibc and read here with a plain aligned load.
#[inline(always)]
pub fn direct() -> bool {
    alone_given(count_now(), ROUTE.ours.load(Relaxed))
}

/// The count the decision reads: glibc's, or `NEVER`.
#[inline(always)]
fn count_now() -> u32 {
    // SAFETY: the pointer is `NEVER` (immutable, static) or glibc's `__nptl_nthreads`, an
    // aligned `unsigned int` in libc's data, which lives as long as the process; a volatile
    // read, since glibc changes it behind the compiler's back.
    unsafe { std::ptr::read_volatile(ROUTE.count.load(Relaxed)) }
}

/// Records `fact` and decides again.
fn learn(fact: u8) {
    let facts = FACTS.fetch_or(fact, AcqRel) | fact;
    let glibc = GLIBC_COUNT.load(Relaxed);
    let count = if direct_given(facts, syscall::AVAILABLE) && !glibc.is_null() {
        glibc
    } else {
        never()
    };
    ROUTE.count.store(count, Release);
}

/// The constructor, first: finds glibc's thread count (`dlvsym`, version `GLIBC_PRIVATE`).
pub fn find_count() {
    // SAFETY: NUL-terminated names; RTLD_DEFAULT looks in the global scope, where libc is.
    let p = unsafe {
        libc::dlvsym(
            libc::RTLD_DEFAULT,
            c"__nptl_nthreads".as_ptr(),
            c"GLIBC_PRIVATE".as_ptr(),
        )
    };
    if p.is_null() || p.align_offset(std::mem::align_of::<u32>()) != 0 {
        learn(UNCOUNTED);
    } else {
        GLIBC_COUNT.store(p.cast(), Relaxed);
    }
}

/// The constructor, once the guard is on: whether the program had a single thread when the
/// library loaded (`sys::single_threaded_now`, asked before anything here could start our
/// watcher), whether every cancellable row's next definition is libc's, and whether the
/// user allows the direct way.
pub fn at_start(single: bool, next_in_libc: bool, allowed: bool) {
    if !next_in_libc {
        learn(FOREIGN);
    }
    if !allowed {
        learn(OFF);
    }
    learn(if single { SINGLE } else { 0 });
}

/// The program is about to cancel a thread (the hook, before the real call).
pub fn cancel_requested() {
    learn(CANCEL);
}

/// Our thread was created (the real `pthread_create` returned 0).
pub fn our_thread_started() {
    ROUTE.ours.fetch_add(1, Relaxed);
}

/// Our thread runs no more of our code after this (the end of its start routine).
pub fn our_thread_ending() {
    ROUTE.ours.fetch_sub(1, Relaxed);
}

/// Our fork prepare handler: glibc's way until the parent or child handler.
pub fn before_fork() {
    ROUTE.ours.fetch_add(HOLD, Relaxed);
}

/// Our fork parent handler.
pub fn after_fork_in_parent() {
    ROUTE.ours.fetch_sub(HOLD, Relaxed);
}

/// Our fork child handler: only the forking thread was copied (none of ours); threads a
/// child handler started before this one are in glibc's count.
pub fn after_fork_in_child() {
    ROUTE.ours.store(0, Relaxed);
    learn(SINGLE);
}

/// The start line's field, written by our watcher: it counts itself as ours even before its
/// creator did.
pub fn describe() -> &'static str {
    let facts = FACTS.load(Relaxed);
    if facts & OFF != 0 {
        return "syscalls=off";
    }
    let alone = alone_given(count_now(), ROUTE.ours.load(Relaxed).max(1));
    if alone {
        "syscalls=direct"
    } else {
        "syscalls=glibc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_only_when_the_facts_allow() {
        assert!(direct_given(SINGLE, true));
        // The guard did not start, or threads were there at start.
        assert!(!direct_given(0, true));
        // A cancel request, another interposer, switched off, no count.
        for fact in [CANCEL, FOREIGN, OFF, UNCOUNTED] {
            assert!(!direct_given(SINGLE | fact, true), "{fact}");
        }
        // No instruction on this architecture.
        assert!(!direct_given(SINGLE, false));
    }

    #[test]
    fn direct_only_while_the_caller_is_the_only_thread_besides_ours() {
        // The caller alone; with our watcher.
        assert!(alone_given(1, 0));
        assert!(alone_given(2, 1));
        // Another thread: the program's, glibc's helper, a plugin's.
        assert!(!alone_given(2, 0));
        assert!(!alone_given(3, 1));
        // Our watcher created, not yet counted as ours: glibc's way meanwhile.
        assert!(!alone_given(2, 0));
        // Our watcher counted out, glibc not yet: glibc's way (3 = caller, other, ours).
        assert!(!alone_given(3, 0));
        // The main thread ended (pthread_exit): the one thread left is alone.
        assert!(alone_given(2, 1));
    }

    #[test]
    fn never_is_never_alone() {
        for ours in [0, 1, 2, HOLD, HOLD + 1] {
            assert!(!alone_given(NEVER, ours), "{ours}");
        }
    }

    #[test]
    fn a_fork_under_way_holds_the_direct_way_off() {
        for (count, ours) in [(1, 0), (2, 1), (1, 1), (0, 1)] {
            assert!(!alone_given(count, ours + HOLD), "{count} {ours}");
        }
        // A watcher starting during the fork keeps the hold.
        assert!(!alone_given(2, HOLD + 2));
    }

    #[test]
    fn only_libc_behind_every_cancellable_row() {
        let libc = Some(0x7000);
        assert!(next_is_libc(libc, &[(0x7100, libc), (0x7200, libc)]));
        // Not resolved: nothing to skip.
        assert!(next_is_libc(libc, &[(0x7100, libc), (0, None)]));
        // Another interposer's, or an object dladdr does not know.
        assert!(!next_is_libc(
            libc,
            &[(0x7100, libc), (0x9100, Some(0x9000))]
        ));
        assert!(!next_is_libc(libc, &[(0x7100, None)]));
        // libc itself unknown.
        assert!(!next_is_libc(None, &[(0x7100, libc)]));
    }
}
