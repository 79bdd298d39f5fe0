//! What the shim asks the kernel about a socket: is it a TCP connection and whose, its
//! identity (SO_COOKIE), its progress counters (TCP_INFO, SIOCINQ/SIOCOUTQ). Plain syscalls,
//! none of them hooked; each leaves errno as it found it only if the caller saves it.

use crate::table::Identity;
use libc::{c_int, socklen_t};
use stallguard_policy::KernelSample;

/// Identity of a connected TCP socket (IPv4 or IPv6), or None for anything else: listeners,
/// Unix sockets, UDP, files.
pub fn identify_tcp(fd: c_int) -> Option<Identity> {
    let mut proto: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut proto as *mut c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || proto != libc::IPPROTO_TCP {
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
            let l = unsafe { &*(&local as *const _ as *const libc::sockaddr_in) };
            let p = unsafe { &*(&peer as *const _ as *const libc::sockaddr_in) };
            id.local_port = u16::from_be(l.sin_port);
            id.peer_port = u16::from_be(p.sin_port);
            id.peer_ip[..4].copy_from_slice(&p.sin_addr.s_addr.to_ne_bytes());
        }
        libc::AF_INET6 => {
            let l = unsafe { &*(&local as *const _ as *const libc::sockaddr_in6) };
            let p = unsafe { &*(&peer as *const _ as *const libc::sockaddr_in6) };
            id.local_port = u16::from_be(l.sin6_port);
            id.peer_port = u16::from_be(p.sin6_port);
            id.peer_ip = p.sin6_addr.s6_addr;
        }
        _ => return None,
    }
    Some(id)
}

type NameFn = unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut socklen_t) -> c_int;

fn sockaddr(fd: c_int, get: NameFn) -> Option<libc::sockaddr_storage> {
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
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
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as socklen_t;
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

fn tcp_info(fd: c_int) -> Option<libc::tcp_info> {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // Older kernels return a shorter struct: the fields we read must be inside it.
    let needed =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received) + std::mem::size_of::<u64>();
    (rc == 0 && len as usize >= needed).then_some(info)
}

/// `tcpi_bytes_acked`: progress of data the peer really took, even inside a blocking write
/// the hooks cannot see.
pub fn tcp_bytes_acked(fd: c_int) -> Option<u64> {
    tcp_info(fd).map(|i| i.tcpi_bytes_acked)
}

/// The kernel's counters for a connection whose I/O no hook sees.
pub fn kernel_sample(fd: c_int) -> Option<KernelSample> {
    let info = tcp_info(fd)?;
    let queue = |request| {
        let mut n: c_int = 0;
        (unsafe { libc::ioctl(fd, request, &mut n) } == 0).then_some(n.max(0) as u64)
    };
    Some(KernelSample {
        bytes_received: info.tcpi_bytes_received,
        bytes_acked: info.tcpi_bytes_acked,
        inq: queue(libc::FIONREAD)?,
        outq: queue(libc::TIOCOUTQ)?,
    })
}

/// SO_LINGER {1, 0}: the program's coming close() aborts the connection with an RST.
pub fn reset_on_close(fd: c_int) {
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
            std::mem::size_of::<libc::linger>() as socklen_t,
        )
    };
}
