//! Issue 11, item 5: a poll set without the fd ends the wait.
//!
//! A poll()/select() server (tests/servers/poll_queue.py) reads a complete request with
//! non-blocking reads drained until EAGAIN, drops the connection from its poll set and queues
//! it for its only worker, which answers after 30 s. With short timers and the HTTP lens off
//! (so only the wait rule decides), the queued request is served, not cut; a slowloris and a
//! silent connection, which stay in the poll set, are still reaped by their timers; so is a
//! slowloris the poller hands over incomplete to a thread that reads it with blocking recv()
//! (a read in progress is a wait, whatever the poller's later calls). Once with poll(), once
//! with select(), both at once.

use stallguard_testkit::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// How long the worker holds each request: longer than every client timer below.
const HOLD_S: u64 = 30;

const SHORT: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "3s"),
    ("STALLGUARD_REQUEST", "5-10,minrate=500"),
    ("STALLGUARD_IDLE", "10s"),
    ("STALLGUARD_LENS", "off"),
    ("STALLGUARD_TICK", "100ms"),
];

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn start(mode: &str) -> Proc {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/servers/poll_queue.py");
    let log = scratch(&format!("poll_wait_{mode}.log"));
    let _ = std::fs::remove_file(&log);
    let mut env = guarded_env(&log);
    env.extend(SHORT.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let hold = HOLD_S.to_string();
    Proc::spawn(
        Path::new(python()),
        &[script.to_str().unwrap(), mode, &hold],
        &env,
        true,
        &log,
    )
}

/// What one server did: the queued request's answer (or why none), and whether each attacker
/// was cut within its bound.
struct Outcome {
    queued: Result<String, String>,
    queued_took: Duration,
    slowloris_cut: bool,
    handed_slowloris_cut: bool,
    silent_cut: bool,
}

/// A slowloris: `opening`, then a header byte every second for up to 25 s, never the blank
/// line; true if the server cut it.
fn slowloris(addr: std::net::SocketAddr, opening: &'static [u8]) -> thread::JoinHandle<bool> {
    thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let _ = s.write_all(opening);
        let end = Instant::now() + Duration::from_secs(25);
        while Instant::now() < end {
            if s.write_all(b"X").is_err() || peer_closed(&s) {
                return true;
            }
            thread::sleep(Duration::from_secs(1));
        }
        false
    })
}

fn run(mode: &'static str) -> (Proc, Outcome) {
    let srv = start(mode);
    let addr = srv.addr();
    // The legitimate client: one complete request, then it waits for the answer.
    let legit = thread::spawn(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /queued HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        // The answer comes after HOLD_S; generous margin for a loaded machine (the promise
        // is "not cut", not "served on time").
        let r = read_response(&mut s, Instant::now() + Duration::from_secs(HOLD_S + 30));
        (r, t0.elapsed())
    });
    // Give the server time to read it and queue it before the attackers arrive, so the
    // worker is busy with the legitimate request.
    thread::sleep(Duration::from_millis(500));
    // A slowloris in the poll set, and one handed to the blocking reader.
    let slow = slowloris(addr, b"GET /slow HTTP/1.0\r\n");
    let handed = slowloris(addr, b"HANDOFF /slow HTTP/1.0\r\n");
    // A silent connection: never a byte (first byte 3 s).
    let silent = thread::spawn(move || {
        let mut s = silent_client(addr);
        wait_cut(&mut s, Duration::from_secs(20))
    });
    let (queued, queued_took) = legit.join().unwrap();
    let outcome = Outcome {
        queued,
        queued_took,
        slowloris_cut: slow.join().unwrap(),
        handed_slowloris_cut: handed.join().unwrap(),
        silent_cut: silent.join().unwrap(),
    };
    (srv, outcome)
}

#[test]
fn a_request_queued_out_of_the_poll_set_is_not_cut_and_attackers_still_are() {
    let runs: Vec<_> = ["poll", "select"]
        .into_iter()
        .map(|mode| (mode, thread::spawn(move || run(mode))))
        .collect();
    for (mode, h) in runs {
        let (srv, o) = h.join().unwrap();
        let reaps = srv.wait_events("reap", 3, Duration::from_secs(5));
        let log = srv.log_text();
        let body = o.queued.as_deref().unwrap_or_else(|e| {
            panic!(
                "{mode}: the queued request was not answered ({e}) after {:?}\n{}\nstderr: {}",
                o.queued_took,
                tail(&log, 20),
                srv.stderr_text()
            )
        });
        assert!(body.ends_with("queued"), "{mode}: answer {body:?}");
        assert!(
            o.queued_took >= Duration::from_secs(HOLD_S),
            "{mode}: answered after {:?}, before the worker's hold",
            o.queued_took
        );
        assert!(
            o.slowloris_cut,
            "{mode}: the slowloris was not cut\n{}",
            tail(&log, 20)
        );
        assert!(
            o.handed_slowloris_cut,
            "{mode}: the slowloris handed to the blocking reader was not cut\n{}",
            tail(&log, 20)
        );
        assert!(
            o.silent_cut,
            "{mode}: the silent connection was not cut\n{}",
            tail(&log, 20)
        );
        // Exactly the three attackers were reaped, by their own timers.
        let mut reasons: Vec<_> = reaps.iter().map(|e| e["reason"].clone()).collect();
        reasons.sort();
        assert_eq!(
            reasons,
            ["first_byte", "request", "request"],
            "{mode}: reaps\n{}",
            tail(&log, 20)
        );
    }
}
