//! Issue 11: event-loop servers under the guard, with the HTTP/1 lens.
//!
//! Real processes on real sockets: Node.js `http`, a Python `asyncio` server, the JDK's
//! `com.sun.net.httpserver` with a fixed pool (eager accept, `EPOLL_CTL_DEL`, queue), and nginx
//! `proxy_pass` to a slow backend (tests/servers/). Two tests, each running every server and
//! every scenario at once in threads (they mostly wait on timers), about 95 s of wall time:
//!
//! * with the library **defaults** (only `STALLGUARD_LOG_FILE` set), 40 s and 90 s long polls
//!   complete and nothing is reaped; on the JDK a complete request queued for 40 s behind the
//!   only worker is served;
//! * with short timers, slowloris, a slow body and a silent connect are still reaped on each
//!   server, keep-alive between requests is judged by idle, a long poll longer than every
//!   timer still completes, and `STALLGUARD_LENS=off` gives back the old behaviour.
//!
//! Processes, clients and log parsing come from `stallguard-testkit`; what is particular to
//! these servers (how each starts, nginx's configuration) is local to this file.

use stallguard_testkit::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The short timers of the attack test (issue 11).
const SHORT: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "3s"),
    ("STALLGUARD_REQUEST", "5-10,minrate=500"),
    ("STALLGUARD_BODY", "5,minrate=500"),
    ("STALLGUARD_IDLE", "10s"),
    ("STALLGUARD_TICK", "100ms"),
];

fn servers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/servers")
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Node,
    Asyncio,
    Jdk,
    Nginx,
}

const ALL: [Kind; 4] = [Kind::Node, Kind::Asyncio, Kind::Jdk, Kind::Nginx];

/// A server process (and, for nginx, its unguarded backend), stopped by pid when dropped
/// (nginx's worker first: `Proc::owned` kills the tree).
struct Srv {
    kind: Kind,
    _proc: Proc,
    port: u16,
    log: PathBuf,
    _backend: Option<Box<Srv>>,
}

impl Srv {
    /// Starts `kind` guarded with `policy` (plus STALLGUARD_LOG_FILE), or unguarded (None).
    /// `workers`: the JDK's pool size.
    fn start(kind: Kind, policy: Option<&[(&str, &str)]>, workers: u32) -> Srv {
        let log = scratch(&format!("{kind:?}.log"));
        let port = free_port();
        let dir = servers_dir();
        let mut backend = None;
        let mut cmd = match kind {
            Kind::Node => {
                let mut c = Command::new("node");
                c.arg(dir.join("longpoll_node.js")).arg(port.to_string());
                c
            }
            Kind::Asyncio => {
                let mut c = Command::new(python());
                c.arg(dir.join("longpoll_asyncio.py")).arg(port.to_string());
                c
            }
            Kind::Jdk => {
                let mut c = Command::new("java");
                c.args([
                    "-XX:TieredStopAtLevel=1",
                    "-XX:+UseSerialGC",
                    "-Xshare:auto",
                ])
                .arg(dir.join("QueueServer.java"))
                .arg(port.to_string())
                .arg(workers.to_string());
                c
            }
            Kind::Nginx => {
                let b = Srv::start(Kind::Asyncio, None, 0);
                let conf = nginx_proxy_conf(&NginxProxy {
                    dir: "nginx",
                    port,
                    backend: b.port,
                    tls: None,
                    stream_bodies: false,
                });
                backend = Some(Box::new(b));
                let mut c = Command::new("/usr/sbin/nginx");
                c.arg("-p")
                    .arg(conf.parent().unwrap())
                    .arg("-c")
                    .arg(&conf)
                    .args(["-g", "daemon off;"]);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(vars) = policy {
            guard(&mut cmd, &log, vars);
        }
        let mut proc = Proc::owned(&format!("{kind:?}"), &mut cmd);
        let stdout = proc.child.stdout.take().unwrap();
        let srv = Srv {
            kind,
            _proc: proc,
            port,
            log,
            _backend: backend,
        };
        if kind == Kind::Nginx {
            srv.wait_listening(Duration::from_secs(20));
        } else {
            // "listening PORT" once the server accepts (the JVM compiles the source first).
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            let line = rx
                .recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|_| panic!("{kind:?} did not start"));
            assert_eq!(line.trim(), format!("listening {port}"), "{kind:?}");
        }
        srv
    }

    fn wait_listening(&self, within: Duration) {
        let end = Instant::now() + within;
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < end, "{:?} never listened", self.kind);
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn events(&self, event: &str) -> Vec<Event> {
        events_in(&self.log_text(), event)
    }

    /// The reap line of the connection whose client port is `client_port`, waiting up to
    /// `within` for it.
    fn reap_of(&self, client_port: u16, within: Duration) -> Option<Event> {
        // 127.0.0.1:PORT, or [::ffff:127.0.0.1]:PORT on a dual-stack listener (the JDK).
        let suffix = format!("127.0.0.1:{client_port}");
        let suffix6 = format!("127.0.0.1]:{client_port}");
        let end = Instant::now() + within;
        loop {
            let found = self.events("reap").into_iter().find(|e| {
                e.get("peer")
                    .is_some_and(|p| p.ends_with(&suffix) || p.ends_with(&suffix6))
            });
            if found.is_some() || Instant::now() > end {
                return found;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// ------------------------------------------------------------------ clients

/// GET `path` on a new connection; the body and how long it took.
fn get(addr: SocketAddr, path: &str, within: Duration) -> Result<(String, Duration), String> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").map_err(|e| e.to_string())?;
    let body = read_response(&mut s, t0 + within)?;
    Ok((body, t0.elapsed()))
}

/// An attack on a new connection: `opening` at once, then `drip` one byte a second (if
/// any), until the server cuts it or `bound` passes. Returns the client port and when the
/// cut was seen (None: never).
fn attack(
    addr: SocketAddr,
    opening: &[u8],
    drip: &[u8],
    bound: Duration,
) -> (u16, Option<Duration>) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    let port = s.local_addr().unwrap().port();
    if !opening.is_empty() && s.write_all(opening).is_err() {
        return (port, Some(t0.elapsed()));
    }
    let mut i = 0;
    let mut next_drip = t0 + Duration::from_secs(1);
    while t0.elapsed() < bound {
        if peer_closed(&s) {
            return (port, Some(t0.elapsed()));
        }
        if !drip.is_empty() && Instant::now() >= next_drip {
            if s.write_all(&drip[i % drip.len()..i % drip.len() + 1])
                .is_err()
            {
                return (port, Some(t0.elapsed()));
            }
            i += 1;
            next_drip += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = s.shutdown(Shutdown::Both);
    (port, None)
}

/// One request answered, then silence: cut by idle. Returns the client port and the time
/// from the answer to the cut.
fn keep_alive_then_silent(addr: SocketAddr, bound: Duration) -> (u16, Option<Duration>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let port = s.local_addr().unwrap().port();
    write!(s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_response(&mut s, Instant::now() + Duration::from_secs(10)).expect("first answer");
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if peer_closed(&s) {
            return (port, Some(t0.elapsed()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    (port, None)
}

// ------------------------------------------------------------------ the tests

/// Runs `f` for every server at once; panics with every failure found.
fn each_server(f: fn(Kind) -> Vec<String>) {
    let handles: Vec<_> = ALL
        .iter()
        .map(|&k| (k, thread::spawn(move || f(k))))
        .collect();
    let mut failures = Vec::new();
    for (k, h) in handles {
        match h.join() {
            Ok(f) => failures.extend(f),
            Err(_) => failures.push(format!("{k:?}: the scenario panicked")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn long_polls_complete_with_the_library_defaults() {
    each_server(defaults_on);
}

fn defaults_on(kind: Kind) -> Vec<String> {
    // Only the log file: the library's own defaults (first byte 20 s, request 20-40 s, ...).
    let srv = Srv::start(kind, Some(&[]), 1);
    let addr = srv.addr();
    let mut fails = Vec::new();
    type Poll = thread::JoinHandle<Result<(String, Duration), String>>;
    let jobs: Vec<(&str, u64, Poll)> = if kind == Kind::Jdk {
        // One worker: B is complete and queued (deregistered, unread) for 40 s behind A.
        let a = thread::spawn(move || get(addr, "/wait?ms=40000", Duration::from_secs(120)));
        thread::sleep(Duration::from_millis(500));
        let b = thread::spawn(move || get(addr, "/wait?ms=50000", Duration::from_secs(150)));
        vec![("40s", 40_000, a), ("queued 40s + 50s", 90_000, b)]
    } else {
        // Through nginx: its backend answers after 45 s (and 90 s).
        let (first, first_ms) = match kind {
            Kind::Nginx => ("/wait?ms=45000", 45_000),
            _ => ("/wait?ms=40000", 40_000),
        };
        let a = thread::spawn(move || get(addr, first, Duration::from_secs(120)));
        let b = thread::spawn(move || get(addr, "/wait?ms=90000", Duration::from_secs(150)));
        vec![("first", first_ms, a), ("90s", 90_000, b)]
    };
    for (name, ms, job) in jobs {
        match job.join().unwrap() {
            Ok((body, took)) => {
                eprintln!("{kind:?} defaults: {name} long poll answered after {took:?}: {body:?}");
                if !body.starts_with("waited") || took < Duration::from_millis(ms - 1000) {
                    fails.push(format!(
                        "{kind:?}: {name}: unexpected {body:?} after {took:?}"
                    ));
                }
            }
            Err(e) => fails.push(format!("{kind:?}: {name} long poll failed: {e}")),
        }
    }
    let reaps = srv.events("reap");
    if !reaps.is_empty() {
        fails.push(format!(
            "{kind:?}: reaped with defaults:\n{}",
            srv.log_text()
        ));
    }
    fails
}

#[test]
fn attacks_are_still_reaped_with_short_timers() {
    each_server(attacks_on);
}

/// What one scenario expects: the reap reason, the stage (None: no HTTP stage on the line),
/// and the window the cut must fall in.
struct Expect {
    name: &'static str,
    reason: &'static str,
    stage: Option<&'static str>,
    min: Duration,
    max: Duration,
}

fn attacks_on(kind: Kind) -> Vec<String> {
    let srv = Srv::start(kind, Some(SHORT), 4);
    let addr = srv.addr();
    let secs = Duration::from_secs;
    let bound = secs(25);
    type Job = thread::JoinHandle<(u16, Option<Duration>)>;
    let jobs: Vec<(Expect, Job)> = vec![
        (
            Expect {
                name: "slowloris",
                reason: "request",
                stage: Some("headers"),
                min: secs(5),
                max: secs(8),
            },
            thread::spawn(move || {
                attack(addr, b"GET / HTTP/1.1\r\nHost: t\r\n", b"X-a: b\r\n", bound)
            }),
        ),
        (
            Expect {
                name: "slow body",
                reason: "request",
                stage: Some("body"),
                min: secs(5),
                max: secs(8),
            },
            thread::spawn(move || {
                attack(
                    addr,
                    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n",
                    b"b",
                    bound,
                )
            }),
        ),
        (
            Expect {
                name: "silent connect",
                reason: "first_byte",
                stage: None,
                min: secs(3),
                max: secs(6),
            },
            thread::spawn(move || attack(addr, b"", b"", bound)),
        ),
        (
            Expect {
                name: "keep-alive then silent",
                reason: "idle",
                stage: Some("idle"),
                min: secs(9),
                max: secs(13),
            },
            thread::spawn(move || keep_alive_then_silent(addr, bound)),
        ),
    ];
    // Meanwhile a legitimate long poll longer than every timer completes.
    let poll = thread::spawn(move || get(addr, "/wait?ms=12000", secs(40)));
    let mut fails = Vec::new();
    for (want, job) in jobs {
        let (port, cut_after) = job.join().unwrap();
        let line = srv.reap_of(port, secs(2));
        eprintln!(
            "{kind:?} short timers: {}: cut after {cut_after:?}, log: {line:?}",
            want.name
        );
        let Some(after) = cut_after else {
            fails.push(format!("{kind:?}: {} was never cut", want.name));
            continue;
        };
        if after < want.min || after > want.max {
            fails.push(format!(
                "{kind:?}: {} cut after {after:?}, expected {:?}..{:?}",
                want.name, want.min, want.max
            ));
        }
        let Some(line) = line else {
            fails.push(format!(
                "{kind:?}: {}: no reap line\n{}",
                want.name,
                srv.log_text()
            ));
            continue;
        };
        if line.get("reason").map(String::as_str) != Some(want.reason)
            || line.get("stage").map(String::as_str) != want.stage
        {
            fails.push(format!("{kind:?}: {}: unexpected {line:?}", want.name));
        }
    }
    match poll.join().unwrap() {
        Ok((body, took)) if body.starts_with("waited 12000") => {
            eprintln!("{kind:?} short timers: 12 s long poll answered after {took:?}")
        }
        other => fails.push(format!(
            "{kind:?}: 12 s long poll: {other:?}\n{}",
            srv.log_text()
        )),
    }
    fails
}

#[test]
fn lens_off_gives_back_the_call_pattern_rules() {
    // STALLGUARD_LENS=off: an event loop's long poll is cut by the request timer, as before
    // the lens (the reason the lens exists), and the line carries no stage.
    let mut policy = SHORT.to_vec();
    policy.push(("STALLGUARD_LENS", "off"));
    let srv = Srv::start(Kind::Node, Some(&policy), 0);
    let r = get(srv.addr(), "/wait?ms=12000", Duration::from_secs(20));
    assert!(r.is_err(), "{r:?}");
    let reap = srv.events("reap");
    assert_eq!(reap.len(), 1, "{}", srv.log_text());
    assert_eq!(reap[0]["reason"], "request");
    assert!(!reap[0].contains_key("stage"), "{:?}", reap[0]);
}
