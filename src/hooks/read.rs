//! read, readv, recv, recvfrom, recvmsg and the _FORTIFY_SOURCE variants. Entering the call
//! means the server waits on the client; the result says whether the client delivered.

use crate::lens::Buf;
use crate::real;
use crate::table;
use libc::{c_int, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// Records a read-family call around `call` (which makes the real call exactly once). The
/// untracked path is inlined into the hook and ends in a tail call to libc; the tracked one
/// is out of line so it does not give every hook a stack frame.
/// `$buf` says where the bytes land, for the HTTP/1 lens. The closure hands the fd and the
/// buffer back with the result, so the untracked path captures exactly what it did before
/// the lens (no stack frame, a tail call).
macro_rules! reading {
    ($fd:expr, $flags:expr, $buf:expr, $real:expr) => {
        match table::tracked($fd) {
            None => $real,
            Some(slot) => reading_tracked(slot, $flags, move || ($real, $fd, $buf)),
        }
    };
}

#[inline(never)]
unsafe fn reading_tracked(
    slot: &table::Slot,
    flags: c_int,
    call: impl FnOnce() -> (ssize_t, c_int, Buf),
) -> ssize_t {
    let token = slot.state.load(std::sync::atomic::Ordering::Relaxed);
    slot.mark_waiting();
    let (r, fd, buf) = call();
    if slot.same_generation(token) {
        let peek = flags & libc::MSG_PEEK != 0;
        slot.record_read(r, peek);
        if r > 0 && !peek && slot.has_flag(table::FLAG_LENS) {
            let saved = super::errno();
            crate::lens::after_read(fd, slot, buf, r as usize);
            super::set_errno(saved);
        }
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    reading!(fd, 0, Buf::Flat(buf.cast()), real::read(fd, buf, n))
}

#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    reading!(
        fd,
        0,
        Buf::Flat(buf.cast()),
        real::__read_chk(fd, buf, n, buflen)
    )
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    reading!(fd, 0, Buf::Iov(iov, cnt), real::readv(fd, iov, cnt))
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    reading!(
        fd,
        flags,
        Buf::Flat(buf.cast()),
        real::recv(fd, buf, n, flags)
    )
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    reading!(
        fd,
        flags,
        Buf::Flat(buf.cast()),
        real::__recv_chk(fd, buf, n, buflen, flags)
    )
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    reading!(
        fd,
        flags,
        Buf::Flat(buf.cast()),
        real::recvfrom(fd, buf, n, flags, addr, len)
    )
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    reading!(
        fd,
        flags,
        Buf::Flat(buf.cast()),
        real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len)
    )
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    reading!(fd, flags, Buf::Msg(msg), real::recvmsg(fd, msg, flags))
}
