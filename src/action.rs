//! What the watcher does to a stalled connection: shut it down (or, in monitor mode, only say
//! so), log one line, count it. Also the kernel queries the watcher makes on a connection.

use crate::log::log_line;
use crate::table::{Identity, Slot, FLAG_REAPED};
use crate::{config, real, stats};
use stallguard_policy::{Action, Facts, Reason};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Acts on the connection judged stalled in state `judged`.
pub fn reap(fd: i32, slot: &Slot, judged: u32, reason: Reason, waited_ms: u64, facts: &Facts) {
    let id = slot.identity();
    let bytes_out = slot.bytes_out.load(std::sync::atomic::Ordering::Relaxed);
    let line = |event: &str, action: &str| {
        log_line!(
            Info,
            "event={event} fd={fd} peer={} port={} reason={} waited={} bytes_in={} bytes_out={} action={action}",
            Peer(&id),
            id.local_port,
            reason.as_str(),
            Seconds(waited_ms),
            facts.bytes_in,
            bytes_out,
        )
    };
    if config::policy().action == Action::Log {
        stats::count_reap(reason, false);
        line("would_reap", "log");
        return;
    }
    // Hold the slot so the fd cannot be closed and reused while we act on it.
    if !slot.begin_act(judged) {
        return; // closed or re-tracked since we judged it: nothing to do
    }
    if id.cookie != 0 && socket_cookie(fd) != Some(id.cookie) {
        // The number now names another socket (closed through a path no hook sees).
        slot.end_act(judged);
        slot.untrack();
        log_line!(
            Debug,
            "event=stale fd={fd} msg=\"fd no longer names the tracked connection\""
        );
        return;
    }
    slot.set_flag(FLAG_REAPED);
    // Log before acting: the shutdown wakes the worker, and a process that exits right away
    // (fork-per-connection, inetd) would otherwise take the unwritten line with it.
    stats::count_reap(reason, true);
    line("reap", "shutdown");
    if reason == Reason::WriteStall {
        // The FIN would queue behind data the client never reads: make the server's coming
        // close() send an RST instead, freeing the pinned send buffer at once.
        reset_on_close(fd);
    }
    let rc = unsafe { real::shutdown(fd, libc::SHUT_RDWR) };
    slot.end_act(judged);
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        log_line!(
            Warn,
            "event=reap_failed fd={fd} peer={} reason={} error=\"{err}\"",
            Peer(&id),
            reason.as_str()
        );
    }
}

/// SO_LINGER {1, 0}: close() aborts the connection with an RST.
fn reset_on_close(fd: i32) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// The kernel's identity of the socket behind `fd` (SO_COOKIE, Linux 4.14+).
pub fn socket_cookie(fd: i32) -> Option<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

/// `tcpi_bytes_acked` from TCP_INFO: progress of data the peer really took, even inside a
/// blocking write the hooks cannot see. None on kernels whose tcp_info lacks the field.
pub fn tcp_bytes_acked(fd: i32) -> Option<u64> {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let needed =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
    (rc == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
}

/// `127.0.0.1:5555` or `[::1]:5555`.
pub struct Peer<'a>(pub &'a Identity);

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.0;
        if id.family == libc::AF_INET as u16 {
            let ip = Ipv4Addr::new(id.peer_ip[0], id.peer_ip[1], id.peer_ip[2], id.peer_ip[3]);
            write!(f, "{ip}:{}", id.peer_port)
        } else {
            write!(f, "[{}]:{}", Ipv6Addr::from(id.peer_ip), id.peer_port)
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
