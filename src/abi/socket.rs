//! What the shim asks the kernel about a socket: is it a TCP connection and whose, its
//! identity (SO_COOKIE), its progress counters (TCP_INFO, SIOCINQ/SIOCOUTQ), and the options
//! it sets. Plain syscalls, none of them hooked; errno is the caller's to save
//! ([`super::errno::ErrnoGuard`]).

use libc::{c_int, socklen_t};
use stallguard_policy::KernelSample;

/// Who a connection is, as captured at accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub cookie: u64,
    pub family: u16,
    pub peer_ip: [u8; 16],
    pub peer_port: u16,
    pub local_port: u16,
}

/// A value that can be passed to getsockopt/setsockopt as it is in memory.
///
/// # Safety
/// Every bit pattern of the type's size must be a valid value (plain C data).
pub unsafe trait SockOpt: Copy {}
// SAFETY: integers and these C structs of integers accept every bit pattern.
unsafe impl SockOpt for c_int {}
// SAFETY: as above.
unsafe impl SockOpt for libc::c_uint {}
// SAFETY: as above.
unsafe impl SockOpt for u64 {}
// SAFETY: as above.
unsafe impl SockOpt for libc::timeval {}
// SAFETY: as above.
unsafe impl SockOpt for libc::linger {}
// SAFETY: as above.
unsafe impl SockOpt for libc::tcp_info {}

/// getsockopt into a `T`, with the length the kernel wrote; None if the call failed.
pub fn getsockopt<T: SockOpt>(fd: c_int, level: c_int, name: c_int) -> Option<(T, usize)> {
    // SAFETY: T accepts every bit pattern (SockOpt), so all-zero is a valid T.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as socklen_t;
    // SAFETY: `v` is valid for writes of `len` bytes; the kernel writes at most `len`.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut T).cast(), &mut len) };
    (rc == 0).then_some((v, len as usize))
}

/// setsockopt of a `T` (the result is ignored: options are best-effort backstops).
pub fn setsockopt<T: SockOpt>(fd: c_int, level: c_int, name: c_int, value: &T) {
    // SAFETY: `value` is valid for reads of size_of::<T>() bytes.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as socklen_t,
        )
    };
}

/// An integer socket option, or None if the fd is not a socket (or has no such option).
pub fn sockopt_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    getsockopt::<c_int>(fd, level, name).map(|(v, _)| v)
}

/// Whether `fd` is a TCP socket.
pub fn is_tcp(fd: c_int) -> bool {
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
}

/// Identity of a connected TCP socket (IPv4 or IPv6), or None for anything else: listeners,
/// Unix sockets, UDP, files.
pub fn identify_tcp(fd: c_int) -> Option<Identity> {
    if !is_tcp(fd) {
        return None;
    }
    let local = sockaddr(fd, libc::getsockname)?;
    let peer = sockaddr(fd, libc::getpeername)?; // fails with ENOTCONN on a listener
    let mut id = Identity {
        cookie: socket_cookie(fd).unwrap_or(0),
        family: local.ss_family,
        ..Identity::default()
    };
    match c_int::from(local.ss_family) {
        libc::AF_INET => {
            let (l, p) = (as_in(&local), as_in(&peer));
            id.local_port = u16::from_be(l.sin_port);
            id.peer_port = u16::from_be(p.sin_port);
            id.peer_ip[..4].copy_from_slice(&p.sin_addr.s_addr.to_ne_bytes());
        }
        libc::AF_INET6 => {
            let (l, p) = (as_in6(&local), as_in6(&peer));
            id.local_port = u16::from_be(l.sin6_port);
            id.peer_port = u16::from_be(p.sin6_port);
            id.peer_ip = p.sin6_addr.s6_addr;
        }
        _ => return None,
    }
    Some(id)
}

/// What every connection a listening socket accepts inherits from it, read once per
/// listener (accept then needs no getsockname, and no option reads): its kind, family and
/// port, and which of the backstop options the program already set on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    /// A TCP listener (IPv4 or IPv6): its connections are identified from accept's address.
    pub tcp: bool,
    /// A Unix-domain stream listener (tracked only with STALLGUARD_UNIX=on).
    pub unix_stream: bool,
    pub family: u16,
    pub local_port: u16,
    /// The listener has its own TCP_USER_TIMEOUT (every connection inherits it: ours would
    /// not be set).
    pub user_timeout: bool,
    pub keepalive: bool,
    pub rcvtimeo: bool,
    pub sndtimeo: bool,
}

impl Listener {
    /// Asks the kernel (4-7 getsockopt/getsockname). None if `fd` is not a socket.
    pub fn read(fd: c_int) -> Option<Listener> {
        let protocol = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
        let mut l = Listener::default();
        if protocol == libc::IPPROTO_TCP {
            let local = sockaddr(fd, libc::getsockname)?;
            l.family = local.ss_family;
            l.local_port = match c_int::from(local.ss_family) {
                libc::AF_INET => u16::from_be(as_in(&local).sin_port),
                libc::AF_INET6 => u16::from_be(as_in6(&local).sin6_port),
                _ => return Some(Listener::default()),
            };
            l.tcp = true;
            l.user_timeout =
                sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT).unwrap_or(0) != 0;
        } else if sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Some(libc::AF_UNIX)
            && sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        {
            l.unix_stream = true;
            l.family = libc::AF_UNIX as u16;
        } else {
            return Some(l); // neither: nothing it accepts is tracked
        }
        l.keepalive = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE).unwrap_or(0) != 0;
        let timeo_set = |name| {
            getsockopt::<libc::timeval>(fd, libc::SOL_SOCKET, name)
                .is_some_and(|(tv, _)| tv.tv_sec != 0 || tv.tv_usec != 0)
        };
        l.rcvtimeo = timeo_set(libc::SO_RCVTIMEO);
        l.sndtimeo = timeo_set(libc::SO_SNDTIMEO);
        Some(l)
    }

    /// The listener packed into one word (for the table's listener cache).
    pub fn to_word(self) -> u64 {
        u64::from(self.family)
            | u64::from(self.local_port) << 16
            | u64::from(self.tcp) << 32
            | u64::from(self.unix_stream) << 33
            | u64::from(self.user_timeout) << 34
            | u64::from(self.keepalive) << 35
            | u64::from(self.rcvtimeo) << 36
            | u64::from(self.sndtimeo) << 37
    }

    pub fn from_word(w: u64) -> Listener {
        let bit = |n: u32| w >> n & 1 != 0;
        Listener {
            family: w as u16,
            local_port: (w >> 16) as u16,
            tcp: bit(32),
            unix_stream: bit(33),
            user_timeout: bit(34),
            keepalive: bit(35),
            rcvtimeo: bit(36),
            sndtimeo: bit(37),
        }
    }

    /// The identity of a connection accepted from this TCP listener, from the peer address
    /// accept returned and the connection's cookie (one getsockopt). None if the address is
    /// not of the listener's family (then ask the kernel: [`identify_tcp`]).
    pub fn identify(&self, fd: c_int, peer: &libc::sockaddr_storage) -> Option<Identity> {
        if !self.tcp || peer.ss_family != self.family {
            return None;
        }
        let mut id = Identity {
            family: self.family,
            local_port: self.local_port,
            ..Identity::default()
        };
        match c_int::from(peer.ss_family) {
            libc::AF_INET => {
                let p = as_in(peer);
                id.peer_port = u16::from_be(p.sin_port);
                id.peer_ip[..4].copy_from_slice(&p.sin_addr.s_addr.to_ne_bytes());
            }
            libc::AF_INET6 => {
                let p = as_in6(peer);
                id.peer_port = u16::from_be(p.sin6_port);
                id.peer_ip = p.sin6_addr.s6_addr;
            }
            _ => return None,
        }
        id.cookie = socket_cookie(fd).unwrap_or(0);
        Some(id)
    }
}

fn as_in(s: &libc::sockaddr_storage) -> &libc::sockaddr_in {
    // SAFETY: sockaddr_storage is large and aligned enough for every sockaddr type, and
    // sockaddr_in accepts every bit pattern.
    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() }
}

fn as_in6(s: &libc::sockaddr_storage) -> &libc::sockaddr_in6 {
    // SAFETY: as in `as_in`.
    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() }
}

/// Identity of a connected Unix-domain stream socket (STALLGUARD_UNIX=on), or None.
pub fn identify_unix(fd: c_int) -> Option<Identity> {
    if sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? != libc::AF_UNIX
        || sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM
    {
        return None;
    }
    Some(unix_identity(fd))
}

/// Identity of a socket known to be a Unix-domain stream connection (its cookie).
pub fn unix_identity(fd: c_int) -> Identity {
    Identity {
        cookie: socket_cookie(fd).unwrap_or(0),
        family: libc::AF_UNIX as u16,
        ..Identity::default()
    }
}

/// Kernel backstops for a tracked connection, each only where the socket still has the
/// kernel's default (a value the program — or its listener, which accepted sockets inherit
/// from — chose wins; and a program's own later setsockopt simply replaces ours):
/// [`apply_user_timeout_if_unset`] and [`apply_keepalive`], by the watcher at its first look.
///
/// TCP_USER_TIMEOUT = twice the write-stall timer: ends a write stalled on a zero window,
/// and a dead peer holding unacknowledged data, instead of the kernel's 13-30 minutes. Twice,
/// so it stays a backstop: the watcher (timer + one tick) always acts first and logs why;
/// equal timers would let the kernel abort the connection silently a few ms earlier. Set by
/// the watcher at its first look, only if the socket has none (inherited from its listener,
/// or the program's own): one getsockopt, and one setsockopt when unset.
pub fn apply_user_timeout_if_unset(fd: c_int, write_stall_ms: u64) {
    if write_stall_ms > 0 && sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) == Some(0) {
        let ms = write_stall_ms.saturating_mul(2).min(i32::MAX as u64) as libc::c_uint;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, &ms);
    }
}

/// TCP keepalive (60 s idle, probes 10 s apart, 3 probes), unless the socket has keepalive
/// on already: finds peers that vanished silently while the server has the turn. Set after
/// accept (by the watcher, off the program's path): a connection that ends within a tick
/// never pays for it, and a peer vanishing takes a minute to notice anyway.
pub fn apply_keepalive(fd: c_int) {
    if sockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE) == Some(0) {
        for (name, value) in [
            (libc::TCP_KEEPIDLE, 60),
            (libc::TCP_KEEPINTVL, 10),
            (libc::TCP_KEEPCNT, 3),
        ] {
            setsockopt(fd, libc::IPPROTO_TCP, name, &(value as c_int));
        }
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, &(1 as c_int));
    }
}

/// STALLGUARD_SOCKET_TIMEOUTS=on: SO_RCVTIMEO = `recv_ms`, SO_SNDTIMEO = `send_ms`, each only
/// if unset. A per-call backstop (it restarts on every call), not the mechanism. `inherited`:
/// whether each is already set, when known from the listener (else asked here).
pub fn apply_socket_timeouts(fd: c_int, recv_ms: u64, send_ms: u64, inherited: Option<[bool; 2]>) {
    for (i, (name, ms)) in [(libc::SO_RCVTIMEO, recv_ms), (libc::SO_SNDTIMEO, send_ms)]
        .into_iter()
        .enumerate()
    {
        let unset = match inherited {
            Some(set) => !set[i],
            None => getsockopt::<libc::timeval>(fd, libc::SOL_SOCKET, name)
                .is_some_and(|(tv, _)| tv.tv_sec == 0 && tv.tv_usec == 0),
        };
        if ms > 0 && unset {
            let tv = libc::timeval {
                tv_sec: (ms / 1000) as libc::time_t,
                tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
            };
            setsockopt(fd, libc::SOL_SOCKET, name, &tv);
        }
    }
}

/// TCP_DEFER_ACCEPT on a listener: a connection reaches accept() only once it has sent data
/// (or after `secs`), so silent connects never occupy a worker.
pub fn set_defer_accept(fd: c_int, secs: c_int) {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, &secs);
}

/// The local port of a bound socket.
pub fn local_port(fd: c_int) -> Option<u16> {
    let addr = sockaddr(fd, libc::getsockname)?;
    match c_int::from(addr.ss_family) {
        libc::AF_INET => Some(u16::from_be(as_in(&addr).sin_port)),
        libc::AF_INET6 => Some(u16::from_be(as_in6(&addr).sin6_port)),
        _ => None,
    }
}

type NameFn = unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut socklen_t) -> c_int;

fn sockaddr(fd: c_int, get: NameFn) -> Option<libc::sockaddr_storage> {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: getsockname/getpeername write at most `len` bytes into `addr`.
    let rc = unsafe {
        get(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(addr)
}

/// The kernel's identity of the socket behind `fd` (SO_COOKIE, Linux 4.14+).
pub fn socket_cookie(fd: c_int) -> Option<u64> {
    getsockopt::<u64>(fd, libc::SOL_SOCKET, libc::SO_COOKIE)
        .and_then(|(cookie, len)| (len == std::mem::size_of::<u64>()).then_some(cookie))
}

fn tcp_info(fd: c_int) -> Option<libc::tcp_info> {
    let (info, len) = getsockopt::<libc::tcp_info>(fd, libc::IPPROTO_TCP, libc::TCP_INFO)?;
    // Older kernels return a shorter struct: the fields we read must be inside it.
    let needed =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received) + std::mem::size_of::<u64>();
    (len >= needed).then_some(info)
}

/// Whether the TCP connection is established (an outbound connect completed).
pub fn is_established(fd: c_int) -> bool {
    const TCP_ESTABLISHED: u8 = 1; // include/net/tcp_states.h
    tcp_info(fd).is_some_and(|i| i.tcpi_state == TCP_ESTABLISHED)
}

/// `tcpi_bytes_acked`: progress of data the peer really took, even inside a blocking write
/// the hooks cannot see.
pub fn tcp_bytes_acked(fd: c_int) -> Option<u64> {
    tcp_info(fd).map(|i| i.tcpi_bytes_acked)
}

/// A listening TCP socket's accept queue: connections waiting for `accept`
/// (`tcpi_unacked` on a LISTEN socket; `tcpi_sacked` is the backlog) and its local port.
/// None when `fd` is not (or no longer) a listening TCP socket.
pub fn listener_queue(fd: c_int) -> Option<(u64, u16)> {
    const TCP_LISTEN: u8 = 10; // include/net/tcp_states.h
    let info = tcp_info(fd)?;
    if info.tcpi_state != TCP_LISTEN {
        return None;
    }
    Some((u64::from(info.tcpi_unacked), local_port(fd)?))
}

/// What the kernel knows of a connection's progress, covering the time it spent in the
/// accept queue before any hook saw it: since the last data and the last ACK came in, a lower
/// bound of its age (`tcpi_last_data_sent` counts from the connection's creation until the
/// first byte is sent), and the byte totals.
pub fn tcp_progress(fd: c_int) -> Option<stallguard_policy::pressure::KernelProgress> {
    let info = tcp_info(fd)?;
    let (idle_in, idle_ack) = (
        u64::from(info.tcpi_last_data_recv),
        u64::from(info.tcpi_last_ack_recv),
    );
    let age = if info.tcpi_bytes_acked == 0 && info.tcpi_unacked == 0 {
        u64::from(info.tcpi_last_data_sent) // nothing sent yet: since creation
    } else {
        0
    };
    Some(stallguard_policy::pressure::KernelProgress {
        idle_in_ms: idle_in,
        idle_ack_ms: idle_ack,
        age_ms: age.max(idle_in),
        total_in: info.tcpi_bytes_received,
        total_acked: info.tcpi_bytes_acked,
    })
}

/// The kernel's counters for a connection whose I/O no hook sees.
pub fn kernel_sample(fd: c_int) -> Option<KernelSample> {
    let info = tcp_info(fd)?;
    Some(KernelSample {
        bytes_received: info.tcpi_bytes_received,
        bytes_acked: info.tcpi_bytes_acked,
        inq: queue(fd, libc::FIONREAD)?,
        outq: queue(fd, libc::TIOCOUTQ)?,
    })
}

/// shutdown(SHUT_RDWR) through the real function: wakes every thread blocked on the socket.
pub fn shutdown_both(fd: c_int) -> std::io::Result<()> {
    // SAFETY: shutdown takes integers only and touches no memory.
    let rc = unsafe { super::real::shutdown(fd, libc::SHUT_RDWR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bytes in the kernel's receive queue that the program has not read yet (SIOCINQ, which is
/// FIONREAD on a socket). `None` if the fd is not a socket any more.
pub fn unread_bytes(fd: c_int) -> Option<u64> {
    queue(fd, libc::FIONREAD)
}

/// [`unread_bytes`], and whether the client's FIN is among what the program has not read
/// (TCP `CLOSE_WAIT`; a Unix socket tells no such state: never). `None` if the fd is not a
/// socket any more.
pub fn unread(fd: c_int) -> Option<stallguard_policy::Unread> {
    const TCP_CLOSE_WAIT: u8 = 8; // include/net/tcp_states.h
    Some(stallguard_policy::Unread {
        bytes: unread_bytes(fd)?,
        peer_closed: tcp_info(fd).is_some_and(|i| i.tcpi_state == TCP_CLOSE_WAIT),
    })
}

/// A queue length ioctl (FIONREAD, TIOCOUTQ) on a socket.
fn queue(fd: c_int, request: libc::c_ulong) -> Option<u64> {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD/TIOCOUTQ write one int into `n`.
    (unsafe { libc::ioctl(fd, request, &mut n) } == 0).then_some(n.max(0) as u64)
}

/// SO_LINGER {1, 0}: the program's coming close() aborts the connection with an RST.
pub fn reset_on_close(fd: c_int) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger);
}
