//! Harness for the `stallguard` command's tests: start C example servers through
//! `stallguard run` (the built libstallguard.so preloaded), talk to them over loopback, run
//! the command's other subcommands against them. Adapted from the workspace's
//! tests/common/mod.rs (another crate's tests cannot import it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The command under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stallguard"))
}

/// The library (`make` builds it; STALLGUARD_SO overrides).
pub fn shim() -> PathBuf {
    let p = std::env::var_os("STALLGUARD_SO")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/libstallguard.so"));
    assert!(p.exists(), "{} missing: run `make` first", p.display());
    p.canonicalize().unwrap()
}

pub fn example(name: &str) -> PathBuf {
    let p = repo().join("target/c-examples").join(name);
    assert!(p.exists(), "{} missing: run `make` first", p.display());
    p.canonicalize().unwrap()
}

/// A unique scratch path for this test process.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = repo().join("target/test-scratch");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "cli-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ))
}

/// `stallguard ARGS` to completion, with STALLGUARD_LIB pointing at the built library.
pub fn stallguard(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("STALLGUARD_LIB", shim())
        .stdin(Stdio::null())
        .output()
        .expect("run stallguard")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A C example server started with `stallguard run FLAGS -- SERVER 0 ARGS`.
pub struct Guarded {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

/// Long timers: nothing is reaped unless a test asks for it.
pub const PATIENT: &[&str] = &[
    "--first-byte",
    "120s",
    "--idle",
    "120s",
    "--request",
    "120s",
    "--write-stall",
    "120s",
];

impl Guarded {
    pub fn start(name: &str, server_args: &[&str], flags: &[&str]) -> Guarded {
        let log = scratch(&format!("{name}.log"));
        let log_text = log.to_str().unwrap().to_string();
        let mut args: Vec<String> = vec!["run".into(), "--log-file".into(), log_text];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.push(example(name).to_str().unwrap().into());
        args.push("0".into());
        args.extend(server_args.iter().map(|s| s.to_string()));
        let mut child = Command::new(bin())
            .args(&args)
            .env("STALLGUARD_LIB", shim())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn stallguard run");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read port line");
        let port = line
            .trim()
            .strip_prefix("port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name} printed {line:?} instead of port=N"));
        Guarded { child, port, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn events(&self, event: &str) -> Vec<HashMap<String, String>> {
        self.log_text()
            .lines()
            .map(logfmt)
            .filter(|m| m.get("event").map(String::as_str) == Some(event))
            .collect()
    }

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
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// `stallguard top --once --json PID`, parsed.
pub fn top_json(pid: u32) -> Result<serde_json::Value, String> {
    let out = stallguard(&["top", "--once", "--json", "--tree", &pid.to_string()]);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out.stdout)))
}

/// Polls `top` until a connection from `client_port` shows up satisfying `pred`.
pub fn wait_connection(
    pid: u32,
    client_port: u16,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + within;
    let mut last;
    loop {
        match top_json(pid) {
            Ok(doc) => {
                let found = doc["connections"].as_array().and_then(|cs| {
                    cs.iter()
                        .find(|c| {
                            c["peer"]
                                .as_str()
                                .is_some_and(|p| p.ends_with(&format!(":{client_port}")))
                                && pred(c)
                        })
                        .cloned()
                });
                if let Some(c) = found {
                    return c;
                }
                last = doc.to_string();
            }
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < end,
            "no matching connection from :{client_port} in pid {pid} within {within:?}; last: {last}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A client that connects and says nothing.
pub fn silent_client(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
}

/// Waits for the server to cut `s` (EOF or reset) within `within`; false on a timeout.
pub fn sees_eof(s: &mut TcpStream, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut b = [0u8; 4096];
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

/// One request over a fresh connection: the status line and the body (read by
/// Content-Length when there is one, else to EOF).
pub fn http_get(addr: SocketAddr, path: &str, method: &str) -> Result<(String, String), String> {
    use std::io::Write;
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
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
