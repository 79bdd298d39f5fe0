//! accept, accept4: start tracking TCP connections (IPv4 and IPv6). Everything else a listener
//! can return (Unix sockets, SCTP…) is left alone, and the listener itself is never touched.
//! A connection over its source's cap (STALLGUARD_PER_SOURCE) is reset at once and the call
//! waits for the next one, so the program never sees it.

use super::{errno, set_errno};
use crate::admission::{decide, Admission};
use crate::table::{self, FLAG_COUNTED};
use crate::{clock, process, real, socket, stats, watcher};
use libc::{c_int, sockaddr, socklen_t};

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    accepting(len, || real::accept(fd, addr, len))
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    accepting(len, || real::accept4(fd, addr, len, flags))
}

/// listen: STALLGUARD_DEFER_ACCEPT ports get TCP_DEFER_ACCEPT (the one option ever set on a
/// listener, and only when the operator names its port).
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let r = real::listen(fd, backlog);
    if r == 0 && process::enabled() {
        let saved = errno();
        crate::admission::arm_listener(fd);
        set_errno(saved);
    }
    r
}

#[inline(always)]
unsafe fn accepting(len: *mut socklen_t, mut call: impl FnMut() -> c_int) -> c_int {
    let len_in = if len.is_null() { 0 } else { *len };
    loop {
        let conn = call();
        if conn < 0 || !process::enabled() || admitted(conn) {
            return conn;
        }
        if !len.is_null() {
            *len = len_in; // in/out argument: the retry needs the caller's buffer size again
        }
    }
}

/// Tracks `fd` if it is a TCP connection we guard; false if it was refused (and closed).
unsafe fn admitted(fd: c_int) -> bool {
    let saved = errno();
    let id = socket::identify_tcp(fd).or_else(|| {
        crate::config::policy()
            .unix
            .then(|| socket::identify_unix(fd))
            .flatten()
    });
    let (Some(id), Some(slot)) = (id, table::slot(fd)) else {
        set_errno(saved);
        return true;
    };
    let admitted = match decide(&id) {
        Admission::Ignore => true,
        Admission::Track { counted } => {
            slot.track(fd, &id, clock::refresh());
            crate::lens::arm(slot, id.local_port);
            if counted {
                slot.set_flag(FLAG_COUNTED);
            }
            crate::admission::arm_backstops(fd, &id);
            watcher::ensure_running();
            true
        }
        Admission::Reject => {
            stats::count_rejected(&id);
            socket::reset_on_close(fd);
            real::close(fd);
            false
        }
    };
    set_errno(saved);
    admitted
}
