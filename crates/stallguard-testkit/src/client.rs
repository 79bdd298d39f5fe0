//! Loopback clients: connections from a chosen source address, requests, responses read by
//! `Content-Length`, and what the client side sees of a cut.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A TCP connection from local address `from` (127.0.0.x: another "client host") to `to`, with
/// an optional small receive buffer (a client that never reads fills it quickly).
pub fn connect_tcp(
    from: [u8; 4],
    to: SocketAddr,
    rcvbuf: Option<i32>,
) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(v4) = to else {
        panic!("IPv4 only")
    };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns (the TcpStream closes it on
    // every path); the sockaddr and option pointers point at live locals of the sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(size) = rcvbuf {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
        if from != [127, 0, 0, 1] {
            let local = sin(from, 0);
            if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let remote = sin(v4.ip().octets(), v4.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// A client that connects and says nothing.
pub fn silent_client(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
}

/// A loopback port that was free a moment ago and that no one in this test process was given
/// before (for policies and configs that must name the port).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A legitimate request: sends it and reads one whole response within `within`.
/// Returns the body, or an error if the server did not answer in time.
pub fn request(addr: SocketAddr, path: &str, within: Duration) -> Result<String, String> {
    request_from([127, 0, 0, 1], addr, path, within)
}

/// Like `request`, from the local address `from`.
pub fn request_from(
    from: [u8; 4],
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + within;
    let mut s = if from == [127, 0, 0, 1] {
        TcpStream::connect_timeout(&addr, within)
    } else {
        connect_tcp(from, addr, None)
    }
    .map_err(|e| format!("connect: {e}"))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    read_response(&mut s, deadline)
}

/// Reads one `Content-Length` response (any header case) from `s` before `deadline`; returns
/// its body.
pub fn read_response(s: &mut TcpStream, deadline: Instant) -> Result<String, String> {
    read_body(s, deadline, &mut Vec::new()).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads one `Content-Length` response (head + body bytes) before `deadline`. `buf` carries
/// bytes read past the previous response (pipelining) and keeps those past this one. Returns
/// the body.
pub fn read_body(
    s: &mut TcpStream,
    deadline: Instant,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(head_end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
            if buf.len() >= head_end + 4 + len {
                let body = buf[head_end + 4..head_end + 4 + len].to_vec();
                buf.drain(..head_end + 4 + len);
                return Ok(body);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {} bytes", buf.len()));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A signal (a SIGSTOP/SIGCONT, a profiler) interrupts a read with a timeout even
            // under SA_RESTART: not the peer's doing, read on.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e} after {} bytes", buf.len())),
        }
    }
}

/// Where `needle` first starts in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request over a fresh connection: the status line and the body (read by
/// Content-Length when there is one, else to EOF).
pub fn http_get(addr: SocketAddr, path: &str, method: &str) -> Result<(String, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    return Ok((head.lines().next().unwrap_or("").to_string(), body));
                }
            }
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            let text = String::from_utf8_lossy(&buf).to_string();
            let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
            return Ok((
                head.lines().next().unwrap_or("").to_string(),
                body.to_string(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One read within `within` (into a small buffer): Ok(0) is the server's EOF, an error its
/// reset or the timeout.
pub fn read_within(s: &mut TcpStream, within: Duration) -> std::io::Result<usize> {
    s.set_read_timeout(Some(within)).unwrap();
    s.read(&mut [0u8; 64])
}

/// Sends all of `data`; false on any error.
pub fn send(s: &mut TcpStream, data: &[u8]) -> bool {
    s.write_all(data).is_ok()
}

/// Waits up to `within` for the server to end the connection (EOF or error, reading and
/// dropping whatever arrives before); true if it did.
pub fn wait_cut(s: &mut TcpStream, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut b = [0u8; 65536];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Non-blocking check for EOF or reset from the server (reads and drops what is queued).
pub fn peer_closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = (&*s).read(&mut [0u8; 4096]);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// getsockopt(fd, level, name) read as a `T`, or None if the kernel refused. `T` must be
/// plain C data (an integer, `timeval`, `tcp_info`: all-zero bytes are a valid value).
pub fn getsockopt<T: Copy>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<T> {
    let mut v = MaybeUninit::<T>::zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`, which is that large.
    let rc = unsafe { libc::getsockopt(fd, level, name, v.as_mut_ptr().cast(), &mut len) };
    // SAFETY: `v` was zeroed, and all-zero bytes are a valid `T` (plain C data, see above).
    (rc == 0).then(|| unsafe { v.assume_init() })
}

/// The client side's TCP state from TCP_INFO (1 established, 7 closed by RST, 8 close-wait
/// after a FIN), or None if the kernel would not say. Reads nothing.
pub fn tcp_info_state(s: &TcpStream) -> Option<u8> {
    getsockopt::<libc::tcp_info>(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO)
        .map(|info| info.tcpi_state)
}

/// The client side's TCP state (1 established, 7 closed by RST, 8 close-wait after a FIN).
pub fn tcp_state(s: &TcpStream) -> u8 {
    tcp_info_state(s).unwrap_or(0)
}

/// Has the server shut its side down? Anything but ESTABLISHED says so, without reading
/// (a client that never reads must not start now).
pub fn peer_reset(s: &TcpStream) -> bool {
    tcp_info_state(s) != Some(1)
}
