//! Whether a freshly accepted connection is tracked, left alone, or refused at the door.
//! Decided once, at accept, so a port that is `off` or an exempt peer costs nothing later.
//! Everything a listener can return besides TCP (Unix sockets unless STALLGUARD_UNIX, SCTP…)
//! is left alone, and the listener itself is never touched. A connection over its source's
//! cap (STALLGUARD_PER_SOURCE) is reset at once and the hook waits for the next one, so the
//! program never sees it.

use crate::abi::errno::ErrnoGuard;
use crate::abi::socket::Listener;
use crate::abi::{real, socket};
use crate::runtime::{clock, config, start_watcher};
use crate::table::holders;
use crate::table::sources::{self, source_key};
use crate::table::{self, listeners, stats, Flags, Identity, Slot};

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

/// After accept on `listener` returned `fd` (`peer`: the address accept returned, when
/// complete): tracks it if it is a connection we guard. False if it was refused (and
/// closed): the hook then waits for the next one.
///
/// Syscalls per tracked connection: SO_COOKIE (the watcher checks every copy it takes of
/// the connection against it, so it must be read here, while the number surely names this
/// socket). The peer address comes from accept itself, the port, family and inherited options
/// from the listener (read once per listener); the backstops are set later by the watcher.
pub fn admitted(
    listener: libc::c_int,
    fd: libc::c_int,
    peer: Option<&libc::sockaddr_storage>,
) -> bool {
    if !config::enabled() {
        return true;
    }
    let _errno = ErrnoGuard::new();
    let from = listener_facts(listener);
    let id = match from {
        Some(l) if l.tcp => peer
            .and_then(|p| l.identify(fd, p))
            .or_else(|| socket::identify_tcp(fd)),
        Some(l) if l.unix_stream => config::policy().unix.then(|| socket::unix_identity(fd)),
        Some(_) => None,
        None => socket::identify_tcp(fd).or_else(|| {
            config::policy()
                .unix
                .then(|| socket::identify_unix(fd))
                .flatten()
        }),
    };
    let (Some(id), Some(slot)) = (id, table::slot(fd)) else {
        return true;
    };
    match decide(&id) {
        Admission::Ignore => true,
        Admission::Track { counted } => {
            slot.track(fd, &id, clock::refresh());
            stats::count_tracked();
            super::lens::arm(slot, id.local_port);
            if counted {
                // Held until the last process holding it lets go (fork-per-connection).
                slot.hold_place(holders::adopt(source_key(&id)));
            }
            arm_backstops(fd, slot, &id, from.as_ref());
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

/// What the connections of `listener` inherit, from the cache in its slot (asked of the
/// kernel on its first accept). None if it cannot be known (then each connection is asked).
fn listener_facts(listener: libc::c_int) -> Option<Listener> {
    let slot = table::slot(listener)?;
    if let Some(word) = slot.cached_listener() {
        return Some(Listener::from_word(word));
    }
    let l = Listener::read(listener)?;
    slot.cache_listener(l.to_word());
    if l.tcp {
        // Inherited listeners (socket activation, exec'd workers) never called listen here:
        // remembered for the pressure pass's accept-queue reads, once per listening fd.
        listeners::note(listener);
    }
    Some(l)
}

/// The kernel backstops a newly tracked TCP connection still needs, given what it inherits
/// from its listener (`from`, when known: an option the listener has, every connection has).
/// Neither is set at accept: the watcher sets them at its first look (`Flags::BACKSTOPS_DUE`),
/// off the program's path, so a connection that ends within a tick (one request per
/// connection) costs no syscall for them; a write stalled long enough for TCP_USER_TIMEOUT
/// (twice the write-stall timer) to matter has long been looked at.
pub fn backstops_due(from: Option<&Listener>) -> Flags {
    let mut due = Flags::NONE;
    if !from.is_some_and(|l| l.user_timeout) {
        due = due | Flags::USER_TIMEOUT_DUE;
    }
    if !from.is_some_and(|l| l.keepalive) {
        due = due | Flags::KEEPALIVE_DUE;
    }
    due
}

/// Marks the kernel backstops the policy asks for on a newly tracked connection (those it
/// does not inherit from its listener, `from`) for the watcher's first look, and sets the
/// socket timeouts (STALLGUARD_SOCKET_TIMEOUTS, which bound the program's own blocking calls:
/// they cannot wait).
pub fn arm_backstops(fd: i32, slot: &Slot, id: &Identity, from: Option<&Listener>) {
    let policy = config::policy();
    let Some(timers) = policy.timers_for_port(id.local_port) else {
        return;
    };
    if policy.backstops && id.family != libc::AF_UNIX as u16 {
        let due = backstops_due(from);
        if due != Flags::NONE {
            slot.set_flag(due);
        }
    }
    if policy.socket_timeouts {
        socket::apply_socket_timeouts(
            fd,
            timers.idle_ms.max(timers.first_byte_ms),
            timers.write_stall_ms,
            from.map(|l| [l.rcvtimeo, l.sndtimeo]),
        );
    }
}

/// After listen returned `r`: the listener is remembered (its accept queue tells the watcher
/// when clients wait for a worker: pressure), and STALLGUARD_DEFER_ACCEPT ports get
/// TCP_DEFER_ACCEPT (the one option ever set on a listener, and only when the operator names
/// its port). A process that listens on TCP is a server: its watcher starts now, so its start
/// line and live view appear when it starts serving, not at its first client (a short-lived
/// helper that never listens gets neither). Returns `r`.
pub fn listened(r: libc::c_int, fd: libc::c_int) -> libc::c_int {
    if r == 0 && config::enabled() {
        let _errno = ErrnoGuard::new();
        if let Some(slot) = table::slot(fd) {
            slot.forget_listener(); // a new listener on this number: read it again
        }
        if socket::is_tcp(fd) {
            listeners::note(fd); // issue 12: its accept queue is read by the pressure pass
            start_watcher();
        }
        arm_listener(fd);
    }
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backstops_due_are_those_the_listener_does_not_pass_on() {
        let plain = Listener {
            tcp: true,
            ..Listener::default()
        };
        let with = |user_timeout, keepalive| Listener {
            user_timeout,
            keepalive,
            ..plain
        };
        assert_eq!(
            backstops_due(None),
            Flags::BACKSTOPS_DUE,
            "unknown: the first look asks"
        );
        assert_eq!(backstops_due(Some(&plain)), Flags::BACKSTOPS_DUE);
        assert_eq!(
            backstops_due(Some(&with(true, false))),
            Flags::KEEPALIVE_DUE
        );
        assert_eq!(
            backstops_due(Some(&with(false, true))),
            Flags::USER_TIMEOUT_DUE
        );
        assert_eq!(backstops_due(Some(&with(true, true))), Flags::NONE);
    }
}
