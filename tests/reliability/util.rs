//! Helpers shared by the reliability tests: scale (CI or soak), a serialising lock for the
//! timing-sensitive tests, a small PRNG, loopback clients bound to a chosen source address,
//! and /proc sampling.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `RELIABILITY_SOAK=1` (set by `make soak`) selects the long forms.
pub fn soak() -> bool {
    std::env::var("RELIABILITY_SOAK").is_ok_and(|v| v == "1")
}

/// A number from the environment, or `ci` / `soak` by scale.
pub fn knob(name: &str, ci: u64, soak_value: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if soak() { soak_value } else { ci })
}

/// Tests whose assertions involve 10-100 ms timers take this lock so they never run together
/// on the 2-core machine (each of them loads both cores).
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*: fast, deterministic per seed, good enough for payloads and choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// FNV-1a 64.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A TCP connection from local address `from` (127.0.0.x) to `to`, with an optional small
/// receive buffer (a client that never reads fills it quickly).
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

/// Reads one `Content-Length` response (head + body bytes) before `deadline`. `carry` holds
/// bytes read past the previous response. Returns the body.
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
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
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
            Err(e) => return Err(format!("read: {e} after {} bytes", buf.len())),
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Waits up to `within` for the server to end the connection (EOF or error); true if it did.
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

/// Sends all of `data`; false on any error.
pub fn send(s: &mut TcpStream, data: &[u8]) -> bool {
    s.write_all(data).is_ok()
}

/// `VmRSS` in KiB and the number of open fds of `pid`.
pub fn rss_and_fds(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// Names of the threads of `pid` (from /proc/PID/task/*/comm).
pub fn thread_names(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// How many threads of `pid` are named `stallguard` (the watcher).
pub fn watcher_threads(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|n| *n == "stallguard")
        .count()
}

/// Children (direct) of `pid`, from /proc/*/stat.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.filter_map(|e| e.ok()) {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if parent_of(child) == Some(pid) {
            out.push(child);
        }
    }
    out
}

pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …: comm may contain spaces; split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID: look at the state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.get(s.rfind(')')? + 2..).map(|r| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// Kills one process we started, by pid.
pub fn kill_pid(pid: u32, sig: i32) {
    unsafe { libc::kill(pid as i32, sig) };
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Lines of `text` whose logfmt `event` is `event`.
pub fn events_in(text: &str, event: &str) -> Vec<std::collections::HashMap<String, String>> {
    text.lines()
        .map(crate::common::logfmt)
        .filter(|m| m.get("event").map(String::as_str) == Some(event))
        .collect()
}

/// Removes inherited `STALLGUARD_*` variables from a child's environment: the test's own
/// `STALLGUARD_SO` (tests/common's override of the library path) is an unknown variable to the
/// shim, which would refuse to start (exit 2) in every preloaded child.
pub fn scrub_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STALLGUARD_") {
            cmd.env_remove(k);
        }
    }
}

/// A C example (or any program) started by a test, with its stderr in a file and the guard
/// log in another. Dropping it stops it (by pid: SIGTERM, then SIGKILL).
pub struct Proc {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::path::PathBuf,
    pub stderr: std::path::PathBuf,
}

/// The policy-free part of a guarded environment: LD_PRELOAD and the log file.
pub fn guarded_env(log: &Path) -> Vec<(String, String)> {
    vec![
        (
            "LD_PRELOAD".into(),
            crate::common::shim().to_string_lossy().into_owned(),
        ),
        (
            "STALLGUARD_LOG_FILE".into(),
            log.to_string_lossy().into_owned(),
        ),
    ]
}

impl Proc {
    /// Starts `program args…` with `env` (whose guard log is `log`); when `port_line` it waits for
    /// the `port=N` line.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        port_line: bool,
        log: &Path,
    ) -> Proc {
        use std::io::BufRead;
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        let log = log.to_path_buf();
        let stderr = crate::common::scratch(&format!("{name}.stderr"));
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        scrub_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let mut port = 0;
        if port_line {
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .expect("read port line");
            port = line
                .trim()
                .strip_prefix("port=")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "{name} printed {line:?} instead of port=N; stderr: {}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    )
                });
        }
        Proc {
            child,
            port,
            log,
            stderr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// None while running; the exit status once it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        kill_pid(pid, libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
