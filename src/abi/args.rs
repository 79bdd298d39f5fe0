//! Readers of the C arguments a hook receives: raw pointers the program passed, turned into
//! plain Rust values for `track`. Each function's contract is the C function's: the pointer
//! is either null or valid for the call the program is making.

use super::socket::Identity;
use libc::{c_int, epoll_event, fd_set, iovec, msghdr, nfds_t, pollfd, sockaddr, socklen_t};

/// accept/accept4: makes the real call until it returns a connection `admitted` lets
/// through (a refused one was closed, and the program never sees it). `admitted` gets the
/// peer address from the call itself: when the caller passes no buffer, the call gets ours
/// (the kernel fills it; the caller's `len` is left alone, as the kernel would); when the
/// caller's buffer was too small, `admitted` gets None and asks the kernel.
///
/// # Safety
/// `addr` and `len` are null or valid for reads and writes (the accept contract).
#[inline(always)]
pub unsafe fn accepting(
    addr: *mut sockaddr,
    len: *mut socklen_t,
    mut call: impl FnMut(*mut sockaddr, *mut socklen_t) -> c_int,
    admitted: impl Fn(c_int, Option<&libc::sockaddr_storage>) -> bool,
) -> c_int {
    // SAFETY: the caller's contract (null or valid).
    let len_in = unsafe { len.as_ref() }.copied().unwrap_or(0);
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut ours: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let full = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    loop {
        let mut our_len = full;
        let conn = if addr.is_null() {
            call(
                (&mut ours as *mut libc::sockaddr_storage).cast(),
                &mut our_len,
            )
        } else {
            call(addr, len)
        };
        if conn < 0 {
            return conn;
        }
        let peer = if addr.is_null() {
            (our_len <= full).then_some(&ours)
        } else {
            // SAFETY: as above; after a successful call the kernel wrote `*len` (the full
            // size of the address) and min(*len, len_in) bytes of it into `addr`.
            match unsafe { len.as_ref() } {
                Some(&got) if got <= len_in && got <= full => {
                    // SAFETY: `addr` holds `got` bytes the kernel wrote; `ours` has room.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            addr.cast::<u8>(),
                            (&mut ours as *mut libc::sockaddr_storage).cast::<u8>(),
                            got as usize,
                        )
                    };
                    Some(&ours)
                }
                _ => None, // truncated (or no length): the caller's buffer is not enough
            }
        };
        if admitted(conn, peer) {
            return conn;
        }
        // SAFETY: as above; in/out argument: the retry needs the caller's buffer size again.
        if let Some(len) = unsafe { len.as_mut() } {
            *len = len_in;
        }
    }
}

/// The total length of an iovec array.
///
/// # Safety
/// `iov` is null or points at `cnt` iovecs.
pub unsafe fn iov_len(iov: *const iovec, cnt: c_int) -> usize {
    if iov.is_null() || cnt <= 0 {
        return 0;
    }
    // SAFETY: the caller's contract.
    let iovs = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
    iovs.iter()
        .fold(0usize, |sum, v| sum.saturating_add(v.iov_len))
}

/// The message writev(iov, cnt) sends, for sendmsg (identical on a connected TCP socket).
pub fn msghdr_of(iov: *const iovec, cnt: c_int) -> msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid (empty) message.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov as *mut iovec;
    msg.msg_iovlen = cnt.max(0) as usize;
    msg
}

/// The payload length of a sendmsg message.
///
/// # Safety
/// `msg` is null or a valid msghdr whose iovecs are valid.
pub unsafe fn msg_len(msg: *const msghdr) -> usize {
    // SAFETY: the caller's contract.
    match unsafe { msg.as_ref() } {
        // SAFETY: the caller's contract covers the message's iovecs.
        Some(m) => unsafe { iov_len(m.msg_iov, m.msg_iovlen as c_int) },
        None => 0,
    }
}

/// The pollfd array of a poll call (None when null, or when `n` is more than the kernel
/// takes: it fails such a call with EINVAL without reading the array, so the hook must not
/// read it either — the program may have passed a count its array does not have).
///
/// # Safety
/// `fds` is null, or points at `n` pollfds that outlive the returned slice's use whenever
/// `n` is within the kernel's limit.
#[inline(always)]
pub unsafe fn pollfds<'a>(fds: *const pollfd, n: nfds_t) -> Option<&'a [pollfd]> {
    if fds.is_null() || !poll_count_allowed(n) {
        return None;
    }
    // SAFETY: the caller's contract, for a count the kernel accepts.
    Some(unsafe { std::slice::from_raw_parts(fds, n as usize) })
}

/// The soft RLIMIT_NOFILE as last read (0: not yet): by the constructor, then by the watcher
/// once a second (`refresh_poll_limit`). Never read on the program's own path: a system call
/// there could be one a seccomp filter forbids.
static NOFILE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether poll takes `n` entries: the kernel refuses more than the soft RLIMIT_NOFILE
/// (EINVAL). A count above the limit last read is not read: if the program raised its limit
/// within the last second, that call's read set is not marked (its waits are seen from its
/// next call on), which can only delay a cut, never hasten one.
#[inline(always)]
fn poll_count_allowed(n: nfds_t) -> bool {
    n <= NOFILE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads the soft RLIMIT_NOFILE again (the constructor, and the watcher once a second).
pub fn refresh_poll_limit() {
    NOFILE.store(
        crate::abi::sys::nofile_limit(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Calls `each` with every fd below `n` set in `set` (none when null).
///
/// # Safety
/// `set` is null or a valid fd_set.
pub unsafe fn each_in_set(n: c_int, set: *const fd_set, mut each: impl FnMut(c_int)) {
    if set.is_null() {
        return;
    }
    for fd in 0..n.clamp(0, libc::FD_SETSIZE as c_int) {
        // SAFETY: `set` is a valid fd_set and fd < FD_SETSIZE.
        if unsafe { libc::FD_ISSET(fd, set) } {
            each(fd);
        }
    }
}

/// The events of an epoll_ctl argument (0 when null).
///
/// # Safety
/// `ev` is null or valid for reads.
pub unsafe fn epoll_events(ev: *const epoll_event) -> u32 {
    if ev.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract; the struct is packed on x86-64, hence unaligned.
    unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*ev).events)) }
}

/// The fd of a stdio stream (None when null).
///
/// # Safety
/// `stream` is null or a valid FILE.
pub unsafe fn fileno(stream: *mut libc::FILE) -> Option<c_int> {
    // SAFETY: the caller's contract.
    (!stream.is_null()).then(|| unsafe { libc::fileno(stream) })
}

/// The destination of a connect as an identity (its port stands in the peer port; cookie
/// and local port are known only after the connection exists). None for anything but a
/// complete IPv4/IPv6 address.
///
/// # Safety
/// `addr` is null or valid for `len` bytes.
pub unsafe fn destination(addr: *const sockaddr, len: socklen_t) -> Option<Identity> {
    // SAFETY: the caller's contract (a sockaddr starts with its family).
    let family = unsafe { addr.as_ref() }?.sa_family;
    let mut id = Identity {
        family,
        ..Identity::default()
    };
    match c_int::from(family) {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: family and length say it is a sockaddr_in.
            let a = unsafe { &*(addr as *const libc::sockaddr_in) };
            id.peer_port = u16::from_be(a.sin_port);
            id.peer_ip[..4].copy_from_slice(&a.sin_addr.s_addr.to_ne_bytes());
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: family and length say it is a sockaddr_in6.
            let a = unsafe { &*(addr as *const libc::sockaddr_in6) };
            id.peer_port = u16::from_be(a.sin6_port);
            id.peer_ip = a.sin6_addr.s6_addr;
        }
        _ => return None,
    }
    Some(id)
}

/// The bytes an OpenSSL call moved, from its result `r` (`SSL_read`, `SSL_peek`, `SSL_write`:
/// > 0 is a count, <= 0 a failure or a retry).
pub fn tls_count(r: c_int) -> usize {
    r.max(0) as usize
}

/// The bytes an OpenSSL `_ex` call moved: `*moved` when it returned 1 (success).
///
/// # Safety
/// `moved` is null or the count pointer the program passed to the call.
pub unsafe fn tls_count_ex(r: c_int, moved: *const libc::size_t) -> usize {
    if r != 1 || moved.is_null() {
        return 0;
    }
    // SAFETY: OpenSSL wrote the count there on success; the caller's contract.
    unsafe { moved.read() }
}

/// Where a read-family call put the bytes it returned, for the HTTP/1 lens: one buffer
/// (read, recv, recvfrom), an iovec array (readv) or a msghdr's (recvmsg).
#[derive(Clone, Copy)]
#[repr(C, u8)]
pub enum ReadBuf {
    Flat(*const u8),
    Iov(*const iovec, c_int),
    Msg(*const msghdr),
}

impl ReadBuf {
    /// Calls `f` with each filled part of the buffers, `r` bytes in all, in order.
    ///
    /// # Safety
    /// The buffers are those a read-family call just filled with `r` bytes (its C contract:
    /// each pointer null or valid for its length).
    pub unsafe fn each_chunk(self, r: usize, mut f: impl FnMut(&[u8])) {
        let (iov, cnt) = match self {
            ReadBuf::Flat(p) => {
                if !p.is_null() {
                    // SAFETY: the call wrote `r` bytes at `p`.
                    f(unsafe { std::slice::from_raw_parts(p, r) });
                }
                return;
            }
            ReadBuf::Iov(iov, cnt) => (iov, cnt.max(0) as usize),
            // SAFETY: a non-null msghdr the call just used.
            ReadBuf::Msg(msg) => match unsafe { msg.as_ref() } {
                Some(m) => (m.msg_iov.cast_const(), m.msg_iovlen),
                None => return,
            },
        };
        if iov.is_null() {
            return;
        }
        let mut left = r;
        // SAFETY: `cnt` iovecs at `iov`, as the call was given.
        for v in unsafe { std::slice::from_raw_parts(iov, cnt) } {
            if left == 0 {
                break;
            }
            let n = v.iov_len.min(left);
            if n > 0 && !v.iov_base.is_null() {
                // SAFETY: the call filled the iovecs in order: the first `n` bytes of this one.
                f(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, n) });
            }
            left -= n;
        }
    }
}
