//! Shared harness for the integration tests: start a real C example server with or without
//! the built libstallguard.so preloaded, attack it over loopback, read its log.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The library under test (`make` builds it; STALLGUARD_SO overrides).
pub fn shim() -> PathBuf {
    let p = std::env::var_os("STALLGUARD_SO")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/libstallguard.so"));
    assert!(p.exists(), "{} missing: run `make` first", p.display());
    p
}

pub fn example(name: &str) -> PathBuf {
    let p = repo().join("target/c-examples").join(name);
    assert!(p.exists(), "{} missing: run `make` first", p.display());
    p
}

/// A unique scratch file path for this test process.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = repo().join("target/test-scratch");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ))
}

/// The policy most tests use: short timers so a test takes seconds.
pub const FAST: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "1s"),
    ("STALLGUARD_REQUEST", "2-4,minrate=100"),
    ("STALLGUARD_IDLE", "3s"),
    ("STALLGUARD_WRITE_STALL", "1s"),
    ("STALLGUARD_TICK", "100ms"),
];

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub guarded: bool,
}

impl Server {
    /// Starts `name args…`; `policy` is None for an unguarded run.
    pub fn start(name: &str, args: &[&str], policy: Option<&[(&str, &str)]>) -> Server {
        Server::start_on(0, name, args, policy)
    }

    /// Like `start`, on a given port (0: any free port).
    pub fn start_on(
        port: u16,
        name: &str,
        args: &[&str],
        policy: Option<&[(&str, &str)]>,
    ) -> Server {
        let log = scratch(&format!("{name}.log"));
        let mut cmd = Command::new(example(name));
        cmd.arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        guard_env(&mut cmd, policy, &log);
        let mut child = cmd.spawn().expect("spawn server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read port line");
        let port = line
            .trim()
            .strip_prefix("port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name} printed {line:?} instead of port=N"));
        Server {
            child,
            port,
            log,
            guarded: policy.is_some(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Parsed `event=…` lines of the log.
    pub fn events(&self, event: &str) -> Vec<HashMap<String, String>> {
        self.log_text()
            .lines()
            .map(logfmt)
            .filter(|m| m.get("event").map(String::as_str) == Some(event))
            .collect()
    }

    /// Waits until the log holds at least `n` lines of `event`, up to `within`.
    pub fn wait_events(
        &self,
        event: &str,
        n: usize,
        within: Duration,
    ) -> Vec<HashMap<String, String>> {
        let end = Instant::now() + within;
        loop {
            let e = self.events(event);
            if e.len() >= n || Instant::now() > end {
                return e;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Preloads the library with `policy` (and its log in `log`) into `cmd`, or leaves it
/// unguarded (None). Only the policy a test gives: a STALLGUARD_* knob of the test run itself
/// (or of the operator's shell) would be an unknown variable to the guard, which refuses to
/// start.
pub fn guard_env(cmd: &mut Command, policy: Option<&[(&str, &str)]>, log: &std::path::Path) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STALLGUARD_") {
            cmd.env_remove(&k);
        }
    }
    if let Some(vars) = policy {
        cmd.env("LD_PRELOAD", shim())
            .env("STALLGUARD_LOG_FILE", log);
        for (k, v) in vars {
            cmd.env(k, v);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_gracefully(&mut self.child, Duration::from_secs(3));
    }
}

/// SIGTERM to `child` (by its pid), SIGKILL if it is still there after `grace`.
pub fn stop_gracefully(child: &mut Child, grace: Duration) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Splits a logfmt line into its key=value pairs (quoted values keep their spaces).
pub fn logfmt(line: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = match rest.split_once('=') {
            Some(kv) => kv,
            None => break,
        };
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        map.insert(key.trim().to_string(), value.to_string());
        rest = next.trim_start();
    }
    map
}

/// `1.103s` → milliseconds.
pub fn seconds_ms(text: &str) -> u64 {
    let secs: f64 = text.trim_end_matches('s').parse().expect("seconds");
    (secs * 1000.0).round() as u64
}

// ---------------------------------------------------------------- clients

/// A legitimate request: sends it and reads one whole response within `within`.
/// Returns the body, or an error if the server did not answer in time.
pub fn request(addr: SocketAddr, path: &str, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    let mut s = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("connect: {e}"))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    read_response(&mut s, deadline)
}

/// Like `request`, from the local address `from`.
pub fn request_from(
    from: [u8; 4],
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + within;
    let mut s = connect_from(from, addr).map_err(|e| format!("connect: {e}"))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    read_response(&mut s, deadline)
}

/// Reads one `Content-Length` response (any header case) from `s` before `deadline`.
pub fn read_response(s: &mut TcpStream, deadline: Instant) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {} bytes", buf.len()));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e} after {} bytes", buf.len())),
        }
        if let Some(head_end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no Content-Length")?;
            if buf.len() >= head_end + 4 + len {
                return Ok(
                    String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string(),
                );
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The four stalls of the seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    /// (a) connect and say nothing.
    Silent,
    /// (b) a header byte every 500 ms, forever (bounded by the attacker's lifetime).
    Drip,
    /// (c) headers without their end.
    HeadersNoEnd,
    /// (d) asks for a large response and never reads it.
    NeverReads,
}

impl Attack {
    pub const ALL: [Attack; 4] = [
        Attack::Silent,
        Attack::Drip,
        Attack::HeadersNoEnd,
        Attack::NeverReads,
    ];

    /// The reap reason the FAST policy must log for this attack.
    pub fn reason(self) -> &'static str {
        match self {
            Attack::Silent => "first_byte",
            Attack::Drip | Attack::HeadersNoEnd => "request",
            Attack::NeverReads => "write_stall",
        }
    }

    /// The FAST policy timer this attack runs into, in ms.
    pub fn timer_ms(self) -> u64 {
        match self {
            Attack::Silent | Attack::NeverReads => 1000,
            Attack::Drip | Attack::HeadersNoEnd => 2000,
        }
    }
}

/// Attackers run in threads until stopped (or 30 s, whichever first); each records whether the
/// server cut its connection.
pub struct Attackers {
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Attackers {
    pub fn launch(addr: SocketAddr, attack: Attack, count: usize) -> Attackers {
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for _ in 0..count {
            let (stop, cut) = (stop.clone(), cut.clone());
            threads.push(thread::spawn(move || {
                if attack_once(addr, attack, &stop) {
                    cut.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        // Let every attacker connect and be picked up by a worker before anyone probes.
        thread::sleep(Duration::from_millis(300));
        Attackers { stop, cut, threads }
    }

    /// How many attackers' connections the server has cut so far.
    pub fn cut(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }

    /// Waits until `n` attackers were cut (or `within` passed), then stops them all.
    pub fn stop_after_cut(self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.cut() < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        self.stop()
    }

    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        self.cut.load(Ordering::SeqCst)
    }
}

/// One attacker; returns true when the server cut the connection (EOF, reset, or EPIPE).
fn attack_once(addr: SocketAddr, attack: Attack, stop: &AtomicBool) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    let s = match attack {
        Attack::NeverReads => connect_with_small_rcvbuf(addr),
        _ => TcpStream::connect(addr).ok(),
    };
    let Some(mut s) = s else { return false };
    let header = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Pad: ";
    match attack {
        Attack::Silent | Attack::Drip => {}
        Attack::HeadersNoEnd => {
            if s.write_all(header).is_err() {
                return true;
            }
        }
        Attack::NeverReads => {
            if s.write_all(b"GET /big HTTP/1.1\r\nHost: slow\r\n\r\n")
                .is_err()
            {
                return true;
            }
        }
    }
    let mut sent = 0usize;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        if attack == Attack::Drip {
            let byte = header[sent % header.len()];
            if s.write_all(&[byte]).is_err() {
                return true;
            }
            sent += 1;
        }
        if attack != Attack::NeverReads && peer_closed(&s) {
            return true;
        }
        if attack == Attack::NeverReads && peer_reset(&s) {
            return true;
        }
        thread::sleep(Duration::from_millis(if attack == Attack::Drip {
            500
        } else {
            50
        }));
    }
    let _ = s.shutdown(Shutdown::Both);
    false
}

/// Non-blocking check for EOF or reset from the server, without consuming data we care about.
pub fn peer_closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 4096];
    let r = (&*s).read(&mut b);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// For the never-reading client: has the server shut its side down? TCP_INFO state tells
/// without reading (reading would defeat the attack).
fn peer_reset(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // Anything but ESTABLISHED (1) means the server closed or reset its side.
    rc != 0 || info.tcpi_state != 1
}

/// A loopback port that was free a moment ago (for policies that must name the port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to `addr` from the local address `from` (e.g. 127.0.0.2: another "client host").
pub fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
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
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let stream = TcpStream::from_raw_fd(fd); // closes fd on every error path
        let local = sin(from, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sin(v4.ip().octets(), v4.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// The client side's TCP state (1 established, 7 closed by RST, 8 close-wait after a FIN).
pub fn tcp_state(s: &TcpStream) -> u8 {
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    info.tcpi_state
}

fn connect_with_small_rcvbuf(addr: SocketAddr) -> Option<TcpStream> {
    use std::os::fd::FromRawFd;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let small: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let SocketAddr::V4(v4) = addr else {
            return None;
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        if libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            libc::close(fd);
            return None;
        }
        Some(TcpStream::from_raw_fd(fd))
    }
}
