//! Which way the real functions of the cancellable rows go (the `sys(..)` column of
//! `interpose.rs`): straight to the kernel (`syscall`), or through glibc's wrapper.
//!
//! Why: once a process has a second thread (our watcher is one), every cancellable glibc
//! wrapper (`read`, `write`, `recv*`, `send*`, `accept*`, `connect`, `close`, `poll`) turns
//! asynchronous cancellation on and off around its system call (two atomic compare-and-swaps,
//! ~45 instructions), so that a `pthread_cancel` from another thread can end a call blocked in
//! the kernel. Nothing else in those wrappers differs from the system call itself (glibc 2.36,
//! `SYSCALL_CANCEL`). A thread can only be cancelled by a thread of the program: when the
//! program has no thread of its own besides the one calling (only ours, which cancels
//! nobody), no one can, and the real functions make the system call themselves. A
//! single-threaded nginx worker, apache prefork child or fork-per-connection child then pays
//! for our watcher no more than it would without it.
//!
//! The facts, each set before the event it names can have any effect:
//! * `SINGLE`: the process was seen with one thread: at start (`at_start`, before our watcher
//!   exists), and in a forked child (only the forking thread is copied);
//! * `THREADS`: the program created a thread (`pthread_create`, `thrd_create`: the hooks set it
//!   before the real call, so the new thread, and every thread it creates, sees it: thread
//!   creation orders memory; our watcher is created through the real function, unseen);
//! * `CANCEL`: the program called `pthread_cancel` (belt and braces: glibc's way for good, in
//!   this process and its children; a self-cancel in a single-threaded process must be acted on
//!   at the next cancellation point, which only glibc's wrapper does).
//!
//! What is not seen: a thread started with a raw `clone`, or by glibc for itself
//! (`timer_create`/`mq_notify` with `SIGEV_THREAD`, POSIX AIO), that then cancels a thread
//! blocked in one of these calls: the cancel is acted on when that call returns, not at once.
//! And a signal handler cancelling its own thread while it is blocked in such a call.

use super::syscall;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::*};

/// The process was seen with a single thread (at start, or as a forked child).
const SINGLE: u8 = 1;
/// The program created a thread since.
const THREADS: u8 = 2;
/// The program asked for a cancellation, ever (kept across fork).
const CANCEL: u8 = 4;

/// The decision, from the facts: the system call directly, or glibc's wrapper.
pub fn direct_given(facts: u8, instruction_available: bool) -> bool {
    instruction_available && facts & SINGLE != 0 && facts & (THREADS | CANCEL) == 0
}

static FACTS: AtomicU8 = AtomicU8::new(0);

/// The flag every call of a cancellable row reads: alone on its cache lines (128 bytes: the
/// line and the one the adjacent-line prefetcher pairs with it), so that no write to other
/// data ever takes the line away from a reader's cache. Written only when the facts change.
#[repr(align(128))]
struct ReadMostly(AtomicBool);

static DIRECT: ReadMostly = ReadMostly(AtomicBool::new(false));

/// Whether the real functions make the system call themselves: one load. Relaxed is enough:
/// it is written by the program's only thread (or the constructor, or a fork child's handler,
/// before our watcher exists), which then reads its own write; a thread the program creates
/// afterwards is ordered after the write by thread creation itself. Our watcher may read a
/// value a moment old: both ways are right for it, since nothing cancels it.
#[inline(always)]
pub fn direct() -> bool {
    DIRECT.0.load(Relaxed)
}

/// Records `fact` and decides again.
fn learn(fact: u8) {
    let facts = FACTS.fetch_or(fact, AcqRel) | fact;
    DIRECT
        .0
        .store(direct_given(facts, syscall::AVAILABLE), Release);
}

/// The constructor, before anything in this library can start a thread: whether the program
/// has a single thread now (`sys::single_threaded_now`).
pub fn at_start(single: bool) {
    learn(if single { SINGLE } else { 0 });
}

/// The program is about to create a thread (the hook, before the real call).
#[inline(always)]
pub fn thread_created() {
    if FACTS.load(Relaxed) & THREADS == 0 {
        learn(THREADS);
    }
}

/// The program is about to cancel a thread (the hook, before the real call).
pub fn cancel_requested() {
    learn(CANCEL);
}

/// In a forked child: only the forking thread was copied.
pub fn after_fork_in_child() {
    FACTS.fetch_and(!THREADS, AcqRel);
    learn(SINGLE);
}

/// The start line's field.
pub fn describe() -> &'static str {
    if direct() {
        "syscalls=direct"
    } else {
        "syscalls=glibc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_only_while_no_program_thread_can_cancel() {
        assert!(direct_given(SINGLE, true));
        // Not known to be single-threaded (start not seen, or threads were there).
        assert!(!direct_given(0, true));
        // A thread of the program's, or any cancel request.
        assert!(!direct_given(SINGLE | THREADS, true));
        assert!(!direct_given(SINGLE | CANCEL, true));
        // No instruction on this architecture.
        assert!(!direct_given(SINGLE, false));
    }

    #[test]
    fn a_fork_child_is_single_again_unless_something_was_cancelled() {
        let child = |parent: u8| (parent & !THREADS) | SINGLE;
        assert!(direct_given(child(SINGLE | THREADS), true));
        assert!(direct_given(child(THREADS), true));
        assert!(!direct_given(child(SINGLE | THREADS | CANCEL), true));
    }
}
