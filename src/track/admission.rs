//! Whether a freshly accepted connection is tracked, left alone, or refused at the door.
//! Decided once, at accept, so a port that is `off` or an exempt peer costs nothing later.
//! Everything a listener can return besides TCP (Unix sockets unless STALLGUARD_UNIX, SCTP…)
//! is left alone, and the listener itself is never touched. A connection over its source's
//! cap (STALLGUARD_PER_SOURCE) is reset at once and the hook waits for the next one, so the
//! program never sees it.

use crate::abi::errno::ErrnoGuard;
use crate::abi::{real, socket};
use crate::runtime::{clock, config, start_watcher};
use crate::table::holders;
use crate::table::sources::{self, source_key};
use crate::table::{self, listeners, stats, Identity};

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

/// After accept returned `fd`: tracks it if it is a connection we guard. False if it was
/// refused (and closed): the hook then waits for the next one.
pub fn admitted(fd: libc::c_int) -> bool {
    if !config::enabled() {
        return true;
    }
    let _errno = ErrnoGuard::new();
    let id = socket::identify_tcp(fd).or_else(|| {
        config::policy()
            .unix
            .then(|| socket::identify_unix(fd))
            .flatten()
    });
    let (Some(id), Some(slot)) = (id, table::slot(fd)) else {
        return true;
    };
    match decide(&id) {
        Admission::Ignore => true,
        Admission::Track { counted } => {
            slot.track(fd, &id, clock::refresh());
            super::lens::arm(slot, id.local_port);
            if counted {
                // Held until the last process holding it lets go (fork-per-connection).
                slot.hold_place(holders::adopt(source_key(&id)));
            }
            arm_backstops(fd, &id);
            start_watcher();
            true
        }
        Admission::Reject => {
            stats::count_rejected(&id);
            socket::reset_on_close(fd);
            // SAFETY: closing the connection accept just returned, which the program never saw.
            unsafe { real::close(fd) };
            false
        }
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

/// After listen returned `r`: the listener is remembered (its accept queue tells the watcher
/// when clients wait for a worker: pressure), and STALLGUARD_DEFER_ACCEPT ports get
/// TCP_DEFER_ACCEPT (the one option ever set on a listener, and only when the operator names
/// its port). Returns `r`.
pub fn listened(r: libc::c_int, fd: libc::c_int) -> libc::c_int {
    if r == 0 && config::enabled() {
        let _errno = ErrnoGuard::new();
        if socket::is_tcp(fd) {
            listeners::note(fd);
        }
        arm_listener(fd);
    }
    r
}

/// After accept on `listener` returned `conn`: when we track it, remember the listener too,
/// for programs that inherited it instead of calling listen (socket activation, exec'd
/// workers). Returns `conn`.
pub fn from_listener(listener: libc::c_int, conn: libc::c_int) -> libc::c_int {
    if conn >= 0 && table::tracked(conn).is_some() {
        listeners::note(listener);
    }
    conn
}

/// TCP_DEFER_ACCEPT on a listener whose port is in STALLGUARD_DEFER_ACCEPT.
fn arm_listener(fd: i32) {
    let policy = config::policy();
    if policy.defer_accept.is_empty() || !socket::is_tcp(fd) {
        return;
    }
    if let Some(port) = socket::local_port(fd) {
        if policy.defer_accept.contains(&port) {
            let secs = policy.timers.first_byte_ms.div_ceil(1000).clamp(1, 3600) as i32;
            socket::set_defer_accept(fd, secs);
        }
    }
}
