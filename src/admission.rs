//! Whether a freshly accepted connection is tracked, left alone, or refused at the door.
//! Decided once, at accept, so a port that is `off` or an exempt peer costs nothing later.

use crate::sources::{self, source_key};
use crate::table::Identity;
use crate::{config, socket};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not ours to judge: `STALLGUARD_PORTS=<port>:off` or an `STALLGUARD_EXEMPT` peer.
    Ignore,
    /// Track it; `counted`: it holds one of its source's `STALLGUARD_PER_SOURCE` places.
    Track { counted: bool },
    /// Over its source's cap: close it at once with an RST.
    Reject,
}

pub fn decide(id: &Identity) -> Admission {
    let policy = config::policy();
    if id.family == libc::AF_UNIX as u16 {
        return Admission::Track { counted: false }; // no source address to cap
    }
    if policy.timers_for_port(id.local_port).is_none()
        || policy.is_exempt(&id.peer_ip, id.family == libc::AF_INET as u16)
    {
        return Admission::Ignore;
    }
    if policy.per_source == 0 {
        return Admission::Track { counted: false };
    }
    if sources::acquire(source_key(id), policy.per_source) {
        Admission::Track { counted: true }
    } else {
        Admission::Reject
    }
}

/// Sets the kernel backstops the policy asks for on a newly tracked connection.
pub fn arm_backstops(fd: i32, id: &Identity) {
    let policy = config::policy();
    let Some(timers) = policy.timers_for_port(id.local_port) else {
        return;
    };
    if policy.backstops && id.family != libc::AF_UNIX as u16 {
        socket::apply_backstops(fd, timers.write_stall_ms);
    }
    if policy.socket_timeouts {
        socket::apply_socket_timeouts(
            fd,
            timers.idle_ms.max(timers.first_byte_ms),
            timers.write_stall_ms,
        );
    }
}

/// TCP_DEFER_ACCEPT on a listener whose port is in STALLGUARD_DEFER_ACCEPT.
pub fn arm_listener(fd: i32) {
    let policy = config::policy();
    if policy.defer_accept.is_empty()
        || socket::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL) != Some(libc::IPPROTO_TCP)
    {
        return;
    }
    if let Some(port) = socket::local_port(fd) {
        if policy.defer_accept.contains(&port) {
            let secs = policy.timers.first_byte_ms.div_ceil(1000).clamp(1, 3600) as i32;
            socket::set_defer_accept(fd, secs);
        }
    }
}
