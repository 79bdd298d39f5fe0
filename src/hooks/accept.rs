//! accept, accept4: start tracking TCP connections (IPv4 and IPv6). Everything else a listener
//! can return (Unix sockets, SCTP…) is left alone, and the listener itself is never touched.

use super::{errno, set_errno};
use crate::table::{self, Identity};
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
    if let (Some(id), Some(slot)) = (identify_tcp(fd), table::slot(fd)) {
        slot.track(fd, &id, clock::refresh());
        watcher::ensure_running();
    }
    set_errno(saved);
}

/// Identity of a TCP connection, or None for anything else.
pub(crate) unsafe fn identify_tcp(fd: c_int) -> Option<Identity> {
    let mut proto: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    if libc::getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_PROTOCOL,
        (&mut proto as *mut c_int).cast(),
        &mut len,
    ) != 0
        || proto != libc::IPPROTO_TCP
    {
        return None;
    }
    let mut local: libc::sockaddr_storage = std::mem::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    if libc::getsockname(
        fd,
        (&mut local as *mut libc::sockaddr_storage).cast(),
        &mut len,
    ) != 0
    {
        return None;
    }
    let mut peer: libc::sockaddr_storage = std::mem::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    if libc::getpeername(
        fd,
        (&mut peer as *mut libc::sockaddr_storage).cast(),
        &mut len,
    ) != 0
    {
        return None;
    }
    let mut id = Identity {
        cookie: crate::action::socket_cookie(fd).unwrap_or(0),
        family: local.ss_family,
        ..Identity::default()
    };
    match c_int::from(local.ss_family) {
        libc::AF_INET => {
            let l = &*(&local as *const _ as *const libc::sockaddr_in);
            let p = &*(&peer as *const _ as *const libc::sockaddr_in);
            id.local_port = u16::from_be(l.sin_port);
            id.peer_port = u16::from_be(p.sin_port);
            id.peer_ip[..4].copy_from_slice(&p.sin_addr.s_addr.to_ne_bytes());
        }
        libc::AF_INET6 => {
            let l = &*(&local as *const _ as *const libc::sockaddr_in6);
            let p = &*(&peer as *const _ as *const libc::sockaddr_in6);
            id.local_port = u16::from_be(l.sin6_port);
            id.peer_port = u16::from_be(p.sin6_port);
            id.peer_ip = p.sin6_addr.s6_addr;
        }
        _ => return None,
    }
    Some(id)
}
