//! Whether a freshly accepted connection is tracked, left alone, or refused at the door.
//! Decided once, at accept, so a port that is `off` or an exempt peer costs nothing later.

use crate::config;
use crate::sources::{self, source_key};
use crate::table::Identity;

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
