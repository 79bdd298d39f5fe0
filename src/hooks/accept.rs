//! accept, accept4: start tracking TCP connections (IPv4 and IPv6). Everything else a listener
//! can return (Unix sockets, SCTP…) is left alone, and the listener itself is never touched.

use super::{errno, set_errno};
use crate::table;
use crate::{clock, process, real, watcher};
use libc::{c_int, sockaddr, socklen_t};

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let conn = real::accept(fd, addr, len);
    if conn >= 0 && process::enabled() {
        track_accepted(conn);
    }
    conn
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let conn = real::accept4(fd, addr, len, flags);
    if conn >= 0 && process::enabled() {
        track_accepted(conn);
    }
    conn
}

unsafe fn track_accepted(fd: c_int) {
    let saved = errno();
    if let (Some(id), Some(slot)) = (crate::socket::identify_tcp(fd), table::slot(fd)) {
        slot.track(fd, &id, clock::refresh());
        watcher::ensure_running();
    }
    set_errno(saved);
}
