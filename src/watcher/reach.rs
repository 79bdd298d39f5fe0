//! How the watcher reaches the program's sockets.
//!
//! At its start the watcher leaves the program's fd table: `unshare(CLONE_FILES)` gives it a
//! private copy, and it closes every copy in it at once except its log descriptor. A
//! single-threaded program's table is then no longer shared (its fd syscalls take the
//! kernel's single-owner fast path again), and nothing the watcher opens (live-view segment,
//! log file reopened) ever takes one of the program's fd numbers, nor can the program close
//! them.
//!
//! To look at or act on a connection, the watcher takes a copy of it with
//! `pidfd_getfd(pidfd_open(getpid()), fd)` (allowed inside a thread group), checks that the
//! copy's SO_COOKIE is the connection's, uses the copy and closes it. After the program split
//! its own table (`track::split`), the thread that tracked the connection is asked first
//! (`pidfd_open(tid, PIDFD_THREAD)`, Linux 6.9+). A copy whose cookie differs is never used:
//! the number names another file in that table.
//!
//! Without `pidfd_open`/`pidfd_getfd` (Linux < 5.6), or when a seccomp filter applies (a filter
//! may kill the process on a system call it does not know, and a probe is such a call), the
//! watcher stays in the program's table and works on the numbers directly, as before; the start
//! line says which (`fd_table=own` or `fd_table=shared why=…`). A filter installed after it
//! left makes it stop taking copies (said once, `event=unguarded what=all`).

use crate::abi::{socket, sys};
use crate::runtime::log::{self, log_line};
use crate::runtime::pid;
use crate::table::owners;
use stallguard_policy::KernelSample;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::*};

/// The watcher's pidfd of its own process, in its own table (-1: it shares the program's).
static PIDFD: AtomicI32 = AtomicI32::new(-1);
/// The kernel names single threads with pidfds (PIDFD_THREAD).
static THREAD_PIDFDS: AtomicBool = AtomicBool::new(false);
/// After the main thread exited (`pthread_exit` in main: `pidfd_getfd` through the process
/// then fails with ESRCH), the program thread a copy was last taken through.
static STAND_IN: AtomicI32 = AtomicI32::new(0);
/// The watcher has left the program's table (even if it then failed to get PIDFD).
static LEFT: AtomicBool = AtomicBool::new(false);
/// The one "not guarded" line for connections in a split table was written.
static SAID_UNGUARDED: AtomicBool = AtomicBool::new(false);

/// Leaves the program's fd table (watcher start, before it opens anything). Returns the
/// start line's `fd_table=…` field.
pub fn leave_program_table() -> String {
    if sys::seccomp_filtered() {
        return "fd_table=shared why=\"a seccomp filter applies: no new system call is risked (pidfd_getfd)\"".to_string();
    }
    if let Err(errno) = sys::pidfd_calls_available() {
        return format!(
            "fd_table=shared why=\"pidfd_getfd unavailable: {}\"",
            std::io::Error::from_raw_os_error(errno)
        );
    }
    let keep = log::program_fd();
    if let Err(errno) = sys::unshare_files() {
        return format!(
            "fd_table=shared why=\"unshare: {}\"",
            std::io::Error::from_raw_os_error(errno)
        );
    }
    // Our private copy: close every copy but the log's, without any hook (the program's
    // slots for these numbers stay tracked: its own table is untouched).
    LEFT.store(true, Release);
    if keep >= 0 {
        if keep > 0 {
            sys::close_range_raw(0, keep as u32 - 1);
        }
        sys::close_range_raw(keep as u32 + 1, u32::MAX);
    } else {
        sys::close_range_raw(0, u32::MAX);
    }
    log::adopt_own_copy(keep);
    match sys::pidfd_open(pid::pid(), 0) {
        Ok(fd) => {
            sys::occupy_std_fds(fd);
            PIDFD.store(fd, Release);
        }
        Err(errno) => {
            // Cannot happen after the probe; the numbers in our table name nothing now.
            return format!(
                "fd_table=own why=\"pidfd_open: {}: connections are not guarded\"",
                std::io::Error::from_raw_os_error(errno)
            );
        }
    }
    if let Ok(fd) = sys::pidfd_open(pid::pid(), sys::PIDFD_THREAD) {
        THREAD_PIDFDS.store(true, Release);
        sys::close_own(fd);
    }
    "fd_table=own".to_string()
}

/// Whether the watcher has a table of its own.
pub fn own_table() -> bool {
    PIDFD.load(Acquire) >= 0
}

/// In a forked child: the parent watcher's table was not copied; these numbers are the
/// program's here (never closed).
pub fn forget_after_fork() {
    PIDFD.store(-1, Release);
    LEFT.store(false, Release);
    STAND_IN.store(0, Release);
    SAID_UNGUARDED.store(false, Release);
}

/// How a connection was reached.
pub enum Reached<R> {
    /// Through a descriptor naming exactly that connection: `f`'s result.
    Yes(R),
    /// No table the watcher can reach has it under that number any more (closed where no
    /// hook saw it): stale.
    Gone,
    /// It may live in a split table the watcher cannot reach: not guarded.
    Unreachable,
}

/// Runs `f` on a descriptor of the watcher's that names the connection tracked on `fd` (socket
/// cookie `cookie`; 0: unknown, not checked), then lets that descriptor go.
pub fn with_connection<R>(fd: i32, cookie: u64, f: impl FnOnce(i32) -> R) -> Reached<R> {
    let pidfd = PIDFD.load(Acquire);
    if pidfd < 0 && LEFT.load(Acquire) {
        return Reached::Unreachable; // left, but no pidfd (cannot happen after the probe)
    }
    if pidfd < 0 {
        // Shared table: the number itself.
        return if is_it(fd, cookie) {
            Reached::Yes(f(fd))
        } else if owners::split_seen() {
            Reached::Unreachable
        } else {
            Reached::Gone
        };
    }
    if sys::seccomp_filtered() {
        // Installed after we left the table: a pidfd call could kill the process.
        say_unguarded(
            "all",
            "a seccomp filter was installed after the watcher started: it takes no copy of a connection (a filtered system call could end the process), so connections are not acted on",
        );
        return Reached::Unreachable;
    }
    let mut look = Look {
        fd,
        cookie,
        f: Some(f),
    };
    let threads = THREAD_PIDFDS.load(Acquire);
    // After a split, the thread that tracked it first (its table may be a private one).
    if let Some(tid) = owners::owner(fd).filter(|&tid| threads && tid != pid::pid()) {
        if let Ok(Some(r)) = look.through_thread(tid) {
            return Reached::Yes(r);
        }
    }
    match look.through(pidfd) {
        Ok(Some(r)) => return Reached::Yes(r),
        Err(libc::ESRCH) if threads => {
            // The main thread has exited (its table is gone from it, not from the process):
            // reach the table through a thread that still uses it (any candidate is safe:
            // only a copy with the right cookie is used).
            let last = STAND_IN.load(Relaxed);
            let candidates = std::iter::once(last)
                .filter(|&t| t > 0)
                .chain(other_threads().into_iter().filter(|&t| t != last));
            for tid in candidates {
                if let Ok(Some(r)) = look.through_thread(tid) {
                    STAND_IN.store(tid, Relaxed);
                    return Reached::Yes(r);
                }
            }
        }
        _ => {}
    }
    if owners::split_seen() {
        Reached::Unreachable
    } else {
        Reached::Gone
    }
}

/// Whether `sock` is the connection whose cookie is `cookie` (0: unknown, not checked).
fn is_it(sock: i32, cookie: u64) -> bool {
    cookie == 0 || socket::socket_cookie(sock) == Some(cookie)
}

/// One look at a connection: its number, its cookie, and what to do with it (taken once).
struct Look<F> {
    fd: i32,
    cookie: u64,
    f: Option<F>,
}

impl<R, F: FnOnce(i32) -> R> Look<F> {
    /// `f` on a copy of the fd taken from the table of the task behind `source`, if that
    /// copy is the connection (`Ok(None)`: another file); the copy is closed again. `Err`: no
    /// copy (pidfd_getfd's errno).
    fn through(&mut self, source: i32) -> Result<Option<R>, i32> {
        let copy = sys::pidfd_getfd(source, self.fd)?;
        let r = if is_it(copy, self.cookie) {
            self.f.take().map(|f| f(copy))
        } else {
            None
        };
        sys::close_own(copy);
        Ok(r)
    }

    /// [`Look::through`] the table of thread `tid`.
    fn through_thread(&mut self, tid: i32) -> Result<Option<R>, i32> {
        let thread = sys::pidfd_open(tid, sys::PIDFD_THREAD)?;
        let r = self.through(thread);
        sys::close_own(thread);
        r
    }
}

/// The ids of this process's threads other than the watcher (from /proc/self/task, read in
/// the watcher's own table).
fn other_threads() -> Vec<i32> {
    let me = sys::gettid();
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&tid| tid != me && tid != pid::pid())
                .collect()
        })
        .unwrap_or_default()
}

/// Says once per process that connections in a split fd table the watcher cannot reach are
/// not guarded (each tick: two loads until a split is seen).
pub fn tick() {
    if SAID_UNGUARDED.load(Relaxed) {
        return;
    }
    if LEFT.load(Acquire) && !own_table() {
        return say_unguarded(
            "all",
            "the watcher left the program's fd table but could not open a pidfd",
        );
    }
    if !owners::split_seen() {
        return;
    }
    if !own_table() {
        say_unguarded(
            "split_fd_table",
            "a thread of this program took a private fd table, which the watcher cannot reach without pidfd_getfd: connections it accepts are not guarded",
        );
    } else if !THREAD_PIDFDS.load(Acquire) {
        say_unguarded(
            "split_fd_table",
            "a thread of this program took a private fd table, which the watcher cannot reach on this kernel (no PIDFD_THREAD, Linux < 6.9): connections it accepts are not guarded",
        );
    }
}

/// A connection could not be reached in any table: said once per process.
pub fn unreachable(fd: i32) {
    say_unguarded(
        "split_fd_table",
        &format!("fd {fd} names the tracked connection in no fd table the watcher can reach (a thread of this program took a private fd table): such connections are not guarded"),
    );
}

fn say_unguarded(what: &str, msg: &str) {
    if !SAID_UNGUARDED.swap(true, AcqRel) {
        log_line!(Warn, "event=unguarded what={what} msg=\"{msg}\"");
    }
}

/// A kernel query through [`with_connection`]: None if the connection cannot be reached.
fn query<R>(fd: i32, cookie: u64, f: impl FnOnce(i32) -> Option<R>) -> Option<R> {
    match with_connection(fd, cookie, f) {
        Reached::Yes(r) => r,
        Reached::Gone | Reached::Unreachable => None,
    }
}

/// [`socket::kernel_sample`] of the connection on `fd`.
pub fn kernel_sample(fd: i32, cookie: u64) -> Option<KernelSample> {
    query(fd, cookie, socket::kernel_sample)
}

/// [`socket::tcp_bytes_acked`] of the connection on `fd`.
pub fn tcp_bytes_acked(fd: i32, cookie: u64) -> Option<u64> {
    query(fd, cookie, socket::tcp_bytes_acked)
}

/// [`socket::unread`] of the connection on `fd`.
pub fn unread(fd: i32, cookie: u64) -> Option<stallguard_policy::Unread> {
    query(fd, cookie, socket::unread)
}

/// [`socket::tcp_progress`] of the connection on `fd` (pressure).
pub fn tcp_progress(fd: i32, cookie: u64) -> Option<stallguard_policy::pressure::KernelProgress> {
    query(fd, cookie, socket::tcp_progress)
}

/// [`socket::listener_queue`] of the listening socket on `fd` (pressure; a copy of the
/// listener is only read, and closing it leaves the program's listener untouched).
pub fn listener_queue(fd: i32) -> Option<(u64, u16)> {
    query(fd, 0, socket::listener_queue)
}

/// [`socket::is_established`] of the connection on `fd`.
pub fn is_established(fd: i32, cookie: u64) -> bool {
    query(fd, cookie, |s| Some(socket::is_established(s))).unwrap_or(false)
}
