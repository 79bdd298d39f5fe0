//! The read and write paths of a tracked connection (the hooks call these only when the fd
//! is tracked; the untracked path is a tail call to libc).
//!
//! Reads: entering the call means the server waits on the client; the result says whether
//! the client delivered.
//!
//! Writes and SIGPIPE: once the watcher shut a connection down, the server's next write would
//! raise SIGPIPE and kill a server that leaves it at its default (exit 141). So on a tracked
//! socket the write is made with MSG_NOSIGNAL (write → send, writev → sendmsg: identical on a
//! connected TCP socket), and SIGPIPE is raised by hand only when the *peer* closed — exactly
//! what the kernel would have done. sendfile has no flags argument: SIGPIPE is blocked around
//! it and a signal caused by our own shutdown is consumed.

use super::lens;
use crate::abi::args::ReadBuf;
use crate::abi::errno::{errno, ErrnoGuard};
use crate::abi::sys;
use crate::runtime::pid;
use crate::table::{polls, Flags, Slot};
use libc::{c_int, ssize_t};
use std::sync::atomic::Ordering::Relaxed;

/// A read-family call made by `call` on `fd`, with the caller's `flags` (MSG_PEEK reads
/// nothing); `buf` is where the bytes land, fed to the HTTP/1 lens when it follows the
/// connection.
///
/// # Safety
/// `buf` describes the buffers `call` passes to the real function (its C contract).
#[inline(always)]
pub unsafe fn reading(
    slot: &Slot,
    fd: c_int,
    flags: c_int,
    buf: ReadBuf,
    call: impl FnOnce() -> ssize_t,
) -> ssize_t {
    let token = slot.state.load(Relaxed);
    slot.mark_reading(|| polls::wait_ended(fd));
    let r = call();
    if slot.same_generation(token) {
        let peek = flags & libc::MSG_PEEK != 0;
        slot.record_read(r, peek);
        if r > 0 && !peek && slot.has_flag(Flags::LENS) {
            let _errno = ErrnoGuard::new();
            // SAFETY: the call just filled `buf` with `r` bytes.
            unsafe { lens::after_read(fd, slot, buf, r as usize) };
        }
    }
    r
}

/// A write-family call of `len` bytes made by `call`, which makes the real call once with
/// MSG_NOSIGNAL. `caller_nosignal`: the program asked for MSG_NOSIGNAL itself.
#[inline(always)]
pub fn writing(
    slot: &Slot,
    len: usize,
    caller_nosignal: bool,
    call: impl FnOnce() -> ssize_t,
) -> ssize_t {
    let token = slot.state.load(Relaxed);
    slot.write_begin();
    let r = call();
    if slot.same_generation(token) {
        slot.record_write(r, len);
        if r > 0 && slot.has_flag(Flags::LENS) {
            lens::after_write(slot); // the answer started
        }
    }
    if r < 0 && errno() == libc::EPIPE && !caller_nosignal && !slot.has_flag(Flags::REAPED) {
        let _errno = ErrnoGuard::new();
        sys::raise_sigpipe(pid::pid());
    }
    r
}

/// write/writev on a tracked fd: `as_socket` makes the call as send/sendmsg with
/// MSG_NOSIGNAL; if the fd turns out not to be a socket (replaced behind our back), it is
/// untracked and `plain` makes the program's own call instead, exactly as it asked.
#[inline(always)]
pub fn writing_plain(
    slot: &Slot,
    len: usize,
    as_socket: impl FnOnce() -> ssize_t,
    plain: impl FnOnce() -> ssize_t,
) -> ssize_t {
    let r = writing(slot, len, false, as_socket);
    if r < 0 && errno() == libc::ENOTSOCK {
        slot.untrack();
        return plain();
    }
    r
}

/// send/sendto/sendmsg with the caller's `flags`: `call(flags)` makes the real call with
/// the flags it is given (the caller's, plus MSG_NOSIGNAL).
#[inline(always)]
pub fn sending(
    slot: &Slot,
    len: usize,
    flags: c_int,
    call: impl FnOnce(c_int) -> ssize_t,
) -> ssize_t {
    let own = flags & libc::MSG_NOSIGNAL != 0;
    writing(slot, len, own, || call(flags | libc::MSG_NOSIGNAL))
}

/// Runs a write that cannot take MSG_NOSIGNAL (sendfile) with SIGPIPE blocked; if the shim
/// shut the socket down, a pending SIGPIPE is ours and is consumed, otherwise it is delivered
/// when the mask is restored, as it would have been.
#[inline(always)]
pub fn without_our_sigpipe(slot: &Slot, n: usize, call: impl FnOnce() -> ssize_t) -> ssize_t {
    if pid::sigpipe_ignored() {
        // The program ignores SIGPIPE (most servers do): nothing to protect it from, and the
        // two sigprocmask calls would be most of this hook's cost.
        return writing(slot, n, true, call);
    }
    // Even a sendfile that returns a short count may have raised SIGPIPE on the way (splice
    // sends in pieces), so any SIGPIPE after our own shutdown is ours.
    sys::with_sigpipe_blocked(
        || writing(slot, n, true, call),
        || slot.has_flag(Flags::REAPED),
    )
}

/// The server's own shutdown: after SHUT_WR it no longer tries to write.
#[inline(always)]
pub fn shutting_down(slot: &Slot, how: c_int) {
    if how != libc::SHUT_RD {
        slot.end_write();
    }
}
