//! connect: with STALLGUARD_OUTBOUND set, TCP connections the program opens itself are
//! tracked too, so a legacy client stuck on a stalled upstream (a connect that never
//! completes, a server that accepts and never answers) gets an error instead of hanging.
//! Without it this hook costs one load and a branch.

use super::{errno, set_errno};
use crate::table::{self, Identity, Slot, FLAG_OUTBOUND};
use crate::{clock, config, process, real, watcher};
use libc::{c_int, sockaddr, socklen_t};
use std::sync::atomic::Ordering::Relaxed;

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !process::outbound_enabled() {
        return real::connect(fd, addr, len);
    }
    let slot = begin(fd, addr, len);
    let r = real::connect(fd, addr, len);
    if let Some(slot) = slot {
        let e = errno();
        if r == 0 {
            slot.connecting_since.store(0, Relaxed);
        } else if e != libc::EINPROGRESS && e != libc::EINTR {
            slot.untrack(); // failed at once: nothing to guard
        }
        // EINPROGRESS / EINTR: still connecting; the watcher sees it complete (TCP_INFO).
        set_errno(e);
    }
    r
}

/// Tracks a TCP stream socket about to connect to an IPv4/IPv6 address.
unsafe fn begin(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Option<&'static Slot> {
    if addr.is_null() || config::policy().outbound.is_none() {
        return None;
    }
    let saved = errno();
    let tcp = crate::socket::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        == Some(libc::IPPROTO_TCP);
    let id = if tcp { peer_of(addr, len) } else { None };
    let slot = id.and_then(|id| {
        let slot = table::slot(fd)?;
        let now = clock::refresh();
        slot.track(fd, &id, now);
        slot.set_flag(FLAG_OUTBOUND);
        slot.connecting_since.store(now, Relaxed);
        watcher::ensure_running();
        Some(slot)
    });
    set_errno(saved);
    slot
}

/// The destination as an identity (its port stands in the peer port; cookie and local port
/// are known only after the connection exists).
unsafe fn peer_of(addr: *const sockaddr, len: socklen_t) -> Option<Identity> {
    let mut id = Identity {
        family: (*addr).sa_family,
        ..Identity::default()
    };
    match c_int::from((*addr).sa_family) {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            let a = &*(addr as *const libc::sockaddr_in);
            id.peer_port = u16::from_be(a.sin_port);
            id.peer_ip[..4].copy_from_slice(&a.sin_addr.s_addr.to_ne_bytes());
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let a = &*(addr as *const libc::sockaddr_in6);
            id.peer_port = u16::from_be(a.sin6_port);
            id.peer_ip = a.sin6_addr.s6_addr;
        }
        _ => return None,
    }
    Some(id)
}
