//! The lines that bracket a guarded process's life (issue 15): `event=start` as soon as it
//! listens (and the live view from then on), not at its first client and not in a process
//! that never serves; `event=stop` with its totals when it exits cleanly.

use stallguard_testkit::cli::{stallguard, text};
use stallguard_testkit::*;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server that listens and gets no connection is visibly guarded within a second: its start
/// line is logged, and `stallguard top` and `status` read its live view.
#[test]
fn a_listening_server_logs_its_start_and_is_visible_before_any_connection() {
    let started = Instant::now();
    let srv = Proc::start("pool_server", &["--threads", "2"], Some(FAST));
    let start = srv.wait_events("start", 1, Duration::from_secs(3));
    assert_eq!(start.len(), 1, "{}", srv.log_text());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "start line after {:?}",
        started.elapsed()
    );
    assert_eq!(start[0]["first_byte"], "1s");
    let pid = srv.pid().to_string();
    // The segment is created right after the start line.
    let end = Instant::now() + Duration::from_secs(2);
    let mut top = stallguard(&["top", "--once", &pid]);
    while !top.status.success() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        top = stallguard(&["top", "--once", &pid]);
    }
    assert!(
        top.status.success(),
        "top: {}{}",
        text(&top.stdout),
        text(&top.stderr)
    );
    let status = stallguard(&["status", &pid]);
    assert!(
        text(&status.stdout).contains("watcher started"),
        "{}",
        text(&status.stdout)
    );
    assert!(srv.events("reap").is_empty());
}

/// A preloaded program that neither listens nor owns a connection (a shell, a helper) logs
/// nothing and runs no watcher.
#[test]
fn a_process_that_never_listens_logs_no_start_line() {
    let log = scratch("sleeper.log");
    let mut cmd = Command::new("sleep");
    cmd.arg("1.2").stdin(Stdio::null());
    guard(&mut cmd, &log, FAST);
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let threads = thread_names(child.id());
    assert!(
        !threads.iter().any(|t| t == "stallguard"),
        "watcher in a process that never listened: {threads:?}"
    );
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("event="), "{text}");
}

/// SIGTERM makes pool_server return from main: the guard's last line is `event=stop` with
/// the process's totals (one silent client reaped for first_byte, one request served).
#[test]
fn a_clean_exit_ends_the_log_with_a_stop_line_and_its_totals() {
    let mut srv = Proc::start("pool_server", &["--threads", "2"], Some(FAST));
    let mut silent = TcpStream::connect(srv.addr()).unwrap();
    assert!(wait_cut(&mut silent, Duration::from_secs(4)));
    assert_eq!(
        request(srv.addr(), "/", Duration::from_secs(3)).as_deref(),
        Ok("ok\n")
    );
    assert_eq!(srv.wait_events("reap", 1, Duration::from_secs(2)).len(), 1);
    std::thread::sleep(Duration::from_millis(1200));
    kill_pid(srv.pid(), libc::SIGTERM);
    let status = srv.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}");
    let log = srv.log_text();
    let last = log.lines().last().map(logfmt).unwrap_or_default();
    assert_eq!(last.get("event").map(String::as_str), Some("stop"), "{log}");
    assert_eq!(last["tracked_total"], "2", "{log}");
    assert_eq!(last["reaped_total"], "1", "{log}");
    assert_eq!(last["reaped"], "first_byte:1", "{log}");
    assert_eq!(last["would_reap_total"], "0", "{log}");
    assert_eq!(last["would_reap"], "none", "{log}");
    let lifetime = seconds_ms(&last["lifetime"]);
    assert!((2_000..30_000).contains(&lifetime), "{log}");
    assert_eq!(events_in(&log, "stop").len(), 1, "{log}");
    assert_eq!(
        last["pid"],
        events_in(&log, "start")[0]["pid"],
        "the process that started: {log}"
    );
}

/// A program whose exit handler, registered before it listened, still serves (reads a
/// connection until it ends): what the guard does then is logged and counted, and the stop
/// line is still the last line. (The stop line was an `atexit` handler registered at listen,
/// so it ran first: the reap that followed was done without a line and not counted.)
#[test]
fn what_the_guard_does_during_the_programs_exit_handlers_is_logged_before_the_stop_line() {
    let dir = scratch("exit-drain");
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("exit_drain");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/exit_drain.c");
    let out = Command::new("gcc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
        .expect("run gcc");
    assert!(out.status.success(), "build: {out:?}");
    let port = free_port();
    let log = dir.join("guard.log");
    let mut cmd = Command::new(&program);
    cmd.arg(port.to_string()).stdout(Stdio::piped());
    guard(&mut cmd, &log, FAST);
    let mut child = cmd.spawn().expect("start exit_drain");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Cut by the first-byte timer while the program's exit handler waits on it.
    assert!(wait_cut(&mut silent, Duration::from_secs(5)));
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "exit_drain did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(events_in(&text, "reap").len(), 1, "the reap line: {text}");
    let last = text.lines().last().map(logfmt).unwrap_or_default();
    assert_eq!(
        last.get("event").map(String::as_str),
        Some("stop"),
        "{text}"
    );
    assert_eq!(last["reaped_total"], "1", "{text}");
    assert_eq!(last["reaped"], "first_byte:1", "{text}");
}
