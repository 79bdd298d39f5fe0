//! What the watcher does to a stalled connection: shut it down (or, in monitor mode, only say
//! so), log one line, count it. It acts through a descriptor of its own that names exactly
//! that connection (`reach`).

use super::reach::{self, Reached};
use crate::abi::socket;
use crate::runtime::config;
use crate::runtime::log::log_line;
use crate::table::{stats, Flags, Identity, Slot};
use stallguard_policy::verdict::{out_rate, write_rate_below};
use stallguard_policy::{Action, Facts, Reason};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Acts on the connection judged stalled in state `judged`.
/// `kernel_view`: judged by the kernel's counters (an adopted stdio connection).
pub fn reap(
    fd: i32,
    slot: &Slot,
    judged: u32,
    reason: Reason,
    waited_ms: u64,
    facts: &Facts,
    kernel_view: bool,
) {
    // A response cut for its minimum rate says the rate it measured.
    let note = (reason == Reason::WriteStall && write_rate_below(facts, &timers_of(slot)))
        .then(|| ("rate", out_rate(facts)));
    let why = Why {
        reason,
        waited_ms,
        note,
    };
    reap_why(fd, slot, judged, why, facts, kernel_view);
}

/// The write-stall timers of a connection's port (for the rate note).
fn timers_of(slot: &Slot) -> stallguard_policy::Timers {
    config::policy()
        .timers_for_port(slot.identity().local_port)
        .copied()
        .unwrap_or_default()
}

/// Why a connection is reaped: the reason, how long its timer ran, and an optional extra
/// logfmt pair for the reap line (`queue=12` for pressure, `rate=16` for a slow response).
pub struct Why {
    pub reason: Reason,
    pub waited_ms: u64,
    pub note: Option<(&'static str, u64)>,
}

/// [`reap`] with an explicit [`Why`].
pub fn reap_why(fd: i32, slot: &Slot, judged: u32, why: Why, facts: &Facts, kernel_view: bool) {
    let Why {
        reason,
        waited_ms,
        note,
    } = why;
    let id = slot.identity();
    let bytes_out = slot.bytes_out();
    let line = |event: &str, action: &str| {
        log_line!(
            Info,
            "event={event} fd={fd} peer={} port={} reason={} waited={} bytes_in={} bytes_out={} view={} action={action}{}{}",
            Peer(&id),
            id.local_port,
            reason.as_str(),
            Seconds(waited_ms),
            facts.bytes_in,
            bytes_out,
            if kernel_view { "kernel" } else { "hooks" },
            super::http::HttpFields::of(fd, facts),
            Note(note),
        )
    };
    // An operator's request is carried out even in monitor mode.
    if config::policy().action == Action::Log && reason != Reason::Manual {
        stats::count_reap(reason, false);
        line("would_reap", "log");
        return;
    }
    if !slot.begin_act(judged) {
        return; // closed or re-tracked since we judged it: nothing to do
    }
    // Held (ACTING): the fd cannot be closed and reused while we act. Through a descriptor
    // that names exactly this connection (see `reach`):
    let acted = reach::with_connection(fd, id.cookie, |sock| {
        slot.set_flag(Flags::REAPED);
        // Log before acting: the shutdown wakes the worker, and a process that exits right
        // away (fork-per-connection, inetd) would otherwise take the unwritten line with it.
        stats::count_reap(reason, true);
        // A write-stall reap always resets: the FIN would queue behind data the client never
        // reads, and the orphan would pin the send buffer in FIN-WAIT-1.
        let reset = config::policy().action == Action::Rst || reason == Reason::WriteStall;
        line("reap", if reset { "rst" } else { "shutdown" });
        if reset {
            socket::reset_on_close(sock); // the server's coming close() sends an RST
        }
        socket::shutdown_both(sock)
    });
    slot.end_act(judged);
    match acted {
        Reached::Yes(Ok(())) => {}
        Reached::Yes(Err(err)) => log_line!(
            Warn,
            "event=reap_failed fd={fd} peer={} reason={} error=\"{err}\"",
            Peer(&id),
            reason.as_str()
        ),
        Reached::Gone | Reached::Unreachable => not_reached(fd, slot, &acted),
    }
}

/// Sets the kernel backstops (keepalive, TCP_USER_TIMEOUT) on a connection seen for the first
/// time (`Flags::BACKSTOPS_DUE`), holding it like a reap (through a descriptor that names
/// exactly this connection, see `reach`). Connections that end within a tick never pay for
/// them.
pub fn arm_backstops(fd: i32, slot: &Slot, judged: u32) {
    if !slot.begin_act(judged) {
        return;
    }
    let id = slot.identity();
    let done = reach::with_connection(fd, id.cookie, |sock| set_due_backstops(sock, slot, &id));
    slot.clear_flag(Flags::BACKSTOPS_DUE);
    slot.end_act(judged);
    match done {
        Reached::Yes(()) => {}
        Reached::Gone | Reached::Unreachable => not_reached(fd, slot, &done),
    }
}

/// The watcher's first look at a connection with backstops due (`Flags::BACKSTOPS_DUE`),
/// through `sock`, a copy of it (`watcher::reach`): sets each, only where the socket still
/// has the kernel's default — a value its listener passed on, or the program set since
/// accept, wins (the program's own later setsockopt replaces ours, as it always did).
fn set_due_backstops(sock: libc::c_int, slot: &Slot, id: &Identity) {
    if slot.has_flag(Flags::USER_TIMEOUT_DUE) {
        if let Some(timers) = config::policy().timers_for_port(id.local_port) {
            socket::apply_user_timeout_if_unset(sock, timers.write_stall_ms);
        }
    }
    if slot.has_flag(Flags::KEEPALIVE_DUE) {
        socket::apply_keepalive(sock);
    }
}

/// The connection could not be reached: its number now names another socket (closed through a
/// path no hook sees), or no descriptor of it is reachable from here. Either way the slot no
/// longer describes a connection the watcher can act on.
fn not_reached<T>(fd: i32, slot: &Slot, how: &Reached<T>) {
    slot.untrack();
    if matches!(how, Reached::Gone) {
        log_line!(
            Debug,
            "event=stale fd={fd} msg=\"fd no longer names the tracked connection\""
        );
    } else {
        reach::unreachable(fd);
    }
}

/// `127.0.0.1:5555` or `[::1]:5555`.
pub struct Peer<'a>(pub &'a Identity);

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.0;
        if id.family == libc::AF_UNIX as u16 {
            write!(f, "unix")
        } else if id.family == libc::AF_INET as u16 {
            let ip = Ipv4Addr::new(id.peer_ip[0], id.peer_ip[1], id.peer_ip[2], id.peer_ip[3]);
            write!(f, "{ip}:{}", id.peer_port)
        } else {
            write!(f, "[{}]:{}", Ipv6Addr::from(id.peer_ip), id.peer_port)
        }
    }
}

/// ` key=value`, or nothing.
struct Note(Option<(&'static str, u64)>);

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((key, value)) => write!(f, " {key}={value}"),
            None => Ok(()),
        }
    }
}

/// Milliseconds as seconds with millisecond precision: `1.103s`.
pub struct Seconds(pub u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}
