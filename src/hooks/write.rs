//! write, writev, send, sendto, sendmsg, sendfile, sendfile64.
//!
//! SIGPIPE: once the watcher shut a connection down, the server's next write would raise
//! SIGPIPE and kill a server that leaves it at its default (exit 141). So on a tracked socket
//! the write is made with MSG_NOSIGNAL (write → send, writev → sendmsg: identical on a
//! connected TCP socket), and SIGPIPE is raised by hand only when the *peer* closed — exactly
//! what the kernel would have done. sendfile has no flags argument: SIGPIPE is blocked around
//! it and a signal caused by our own shutdown is consumed.

use super::{errno, set_errno};
use crate::real;
use crate::table::{self, Slot, FLAG_REAPED};
use libc::{c_int, c_void, iovec, msghdr, off_t, size_t, sockaddr, socklen_t, ssize_t};
use std::sync::atomic::Ordering::Relaxed;

/// Records a write-family call of `len` bytes around `call`, which makes the real call once
/// with MSG_NOSIGNAL. `caller_nosignal`: the program asked for MSG_NOSIGNAL itself.
/// Inlined into each out-of-line `*_tracked` function, so the real call is made from there
/// with the arguments still in registers.
#[inline(always)]
unsafe fn writing(
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
        if r > 0 && slot.has_flag(crate::table::FLAG_LENS) {
            crate::lens::after_write(slot); // the answer started (stallguard-lens)
        }
    }
    if r < 0 && errno() == libc::EPIPE && !caller_nosignal && !slot.has_flag(FLAG_REAPED) {
        raise_sigpipe();
    }
    r
}

/// Delivers SIGPIPE to the calling thread, as the kernel does for a write to a closed peer.
unsafe fn raise_sigpipe() {
    let saved = errno();
    libc::syscall(
        libc::SYS_tgkill,
        crate::process::pid(),
        libc::gettid(),
        libc::SIGPIPE,
    );
    set_errno(saved);
}

fn iov_len(iov: *const iovec, cnt: c_int) -> usize {
    if iov.is_null() || cnt <= 0 {
        return 0;
    }
    let iovs = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
    iovs.iter()
        .fold(0usize, |sum, v| sum.saturating_add(v.iov_len))
}

// Each hook: on an untracked fd, a tail call to libc; on a tracked connection, an
// out-of-line function (so the untracked path needs no stack frame). The slot goes last so
// the arguments stay in the registers they arrived in.

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    match table::tracked(fd) {
        None => real::write(fd, buf, n),
        Some(slot) => write_tracked(fd, buf, n, slot),
    }
}

#[inline(never)]
unsafe fn write_tracked(fd: c_int, buf: *const c_void, n: size_t, slot: &Slot) -> ssize_t {
    let r = writing(slot, n, false, move || {
        real::send(fd, buf, n, libc::MSG_NOSIGNAL)
    });
    if r < 0 && errno() == libc::ENOTSOCK {
        // Not a socket after all (replaced behind our back): behave exactly like write.
        slot.untrack();
        return real::write(fd, buf, n);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    match table::tracked(fd) {
        None => real::writev(fd, iov, cnt),
        Some(slot) => writev_tracked(fd, iov, cnt, slot),
    }
}

#[inline(never)]
unsafe fn writev_tracked(fd: c_int, iov: *const iovec, cnt: c_int, slot: &Slot) -> ssize_t {
    let mut msg: msghdr = std::mem::zeroed();
    msg.msg_iov = iov as *mut iovec;
    msg.msg_iovlen = cnt.max(0) as usize;
    let r = writing(slot, iov_len(iov, cnt), false, move || {
        real::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
    });
    if r < 0 && errno() == libc::ENOTSOCK {
        slot.untrack();
        return real::writev(fd, iov, cnt);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    match table::tracked(fd) {
        None => real::send(fd, buf, n, flags),
        Some(slot) => send_tracked(fd, buf, n, flags, slot),
    }
}

#[inline(never)]
unsafe fn send_tracked(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    slot: &Slot,
) -> ssize_t {
    let own = flags & libc::MSG_NOSIGNAL != 0;
    writing(slot, n, own, move || {
        real::send(fd, buf, n, flags | libc::MSG_NOSIGNAL)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    match table::tracked(fd) {
        None => real::sendto(fd, buf, n, flags, addr, len),
        Some(slot) => sendto_tracked(fd, buf, n, flags, addr, len, slot),
    }
}

#[inline(never)]
unsafe fn sendto_tracked(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    slot: &Slot,
) -> ssize_t {
    let own = flags & libc::MSG_NOSIGNAL != 0;
    writing(slot, n, own, move || {
        real::sendto(fd, buf, n, flags | libc::MSG_NOSIGNAL, addr, len)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    match table::tracked(fd) {
        None => real::sendmsg(fd, msg, flags),
        Some(slot) => sendmsg_tracked(fd, msg, flags, slot),
    }
}

#[inline(never)]
unsafe fn sendmsg_tracked(fd: c_int, msg: *const msghdr, flags: c_int, slot: &Slot) -> ssize_t {
    let len = if msg.is_null() {
        0
    } else {
        iov_len((*msg).msg_iov, (*msg).msg_iovlen as c_int)
    };
    let own = flags & libc::MSG_NOSIGNAL != 0;
    writing(slot, len, own, move || {
        real::sendmsg(fd, msg, flags | libc::MSG_NOSIGNAL)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t {
    match table::tracked(out) {
        None => real::sendfile(out, inp, off, n),
        Some(slot) => without_our_sigpipe(slot, n, move || real::sendfile(out, inp, off, n)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendfile64(out: c_int, inp: c_int, off: *mut i64, n: size_t) -> ssize_t {
    match table::tracked(out) {
        None => real::sendfile64(out, inp, off, n),
        Some(slot) => without_our_sigpipe(slot, n, move || real::sendfile64(out, inp, off, n)),
    }
}

/// Runs a write that cannot take MSG_NOSIGNAL with SIGPIPE blocked; if the shim shut the
/// socket down, a pending SIGPIPE is ours and is consumed, otherwise it is delivered when the
/// mask is restored, as it would have been.
#[inline(never)]
unsafe fn without_our_sigpipe(slot: &Slot, n: usize, call: impl FnOnce() -> ssize_t) -> ssize_t {
    if crate::process::sigpipe_ignored() {
        // The program ignores SIGPIPE (most servers do): nothing to protect it from, and the
        // two sigprocmask calls would be most of this hook's cost.
        return writing(slot, n, true, call);
    }
    let mut pipe_only: libc::sigset_t = std::mem::zeroed();
    let mut old: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut pipe_only);
    libc::sigaddset(&mut pipe_only, libc::SIGPIPE);
    libc::pthread_sigmask(libc::SIG_BLOCK, &pipe_only, &mut old);
    let r = writing(slot, n, true, call);
    let saved = errno();
    if libc::sigismember(&old, libc::SIGPIPE) == 0 {
        // Even a sendfile that returns a short count may have raised SIGPIPE on the way
        // (splice sends in pieces), so any SIGPIPE after our own shutdown is ours.
        if slot.has_flag(FLAG_REAPED) {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&pipe_only, std::ptr::null_mut(), &zero);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    set_errno(saved);
    r
}
