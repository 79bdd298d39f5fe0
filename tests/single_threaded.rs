//! A program with no thread of its own: the hooks make its cancellable calls (read, write,
//! recv*, send*, accept*, connect, close, poll) as system calls themselves instead of through
//! glibc's multi-threaded wrappers (src/abi/route.rs), with the same results, errno and
//! signal behaviour; once it has a thread, glibc's wrappers again, so `pthread_cancel` of a
//! thread blocked in a call still works.

use stallguard_testkit::*;
use std::process::{Command, Output};
use std::time::Duration;

const POLICY: &[(&str, &str)] = &[("STALLGUARD_TICK", "10ms")];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check(guarded: bool) -> (Output, String) {
    let log = scratch("single_threaded.log");
    let mut cmd = Command::new(harness("single_thread_check"));
    if guarded {
        guard(&mut cmd, &log, POLICY);
    } else {
        scrub_env(&mut cmd);
    }
    let out = cmd.output().expect("single_thread_check runs");
    (out, std::fs::read_to_string(&log).unwrap_or_default())
}

/// The lines of a child forked from a parent with threads: without the shim glibc 2.36 keeps
/// its multi-threaded wrappers there, under it the calls are direct again (checked apart).
fn without_fork_child(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with("fork_child:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Results and errno of every cancellable call on pipes and (tracked) sockets, EINTR without
/// SA_RESTART, restart with it, a self-cancel acted on at the next read, then with threads a
/// cancelled reader: the same as without the shim, line by line. The handler's view of the
/// blocked call (`async=`: glibc's wrapper switched asynchronous cancellation on) proves the
/// direct way was taken where no thread of the program's exists: in the single-threaded
/// steps, and in a child forked from a parent with threads.
#[test]
fn a_single_threaded_program_gets_system_calls_with_glibc_s_results() {
    let (plain, _) = check(false);
    let (guarded, log) = check(true);
    let (plain_out, guarded_out) = (text(&plain.stdout), text(&guarded.stdout));
    assert!(
        plain.status.success() && plain_out.contains("single_thread_check: ok"),
        "fails on its own:\n{plain_out}{}",
        text(&plain.stderr)
    );
    assert!(
        guarded.status.success(),
        "under the shim:\n{guarded_out}{}\n{log}",
        text(&guarded.stderr)
    );
    assert_eq!(
        without_fork_child(&guarded_out),
        without_fork_child(&plain_out),
        "output differs under the shim; log:\n{log}"
    );
    assert_eq!(text(&guarded.stderr), text(&plain.stderr));

    // Single-threaded steps: the blocked calls never ran in glibc's cancellation mode.
    let restart = guarded_out
        .lines()
        .find(|l| l.starts_with("restart:"))
        .unwrap();
    assert_eq!(restart.matches("async=0").count(), 8, "{restart}");
    // With threads: glibc's wrappers, exactly as without the shim.
    let threaded = guarded_out
        .lines()
        .find(|l| l.starts_with("threads restart:"))
        .unwrap();
    assert_eq!(threaded.matches("async=1").count(), 8, "{threaded}");
    // A child forked from the parent with threads: direct again.
    let child = guarded_out
        .lines()
        .find(|l| l.starts_with("fork_child:"))
        .unwrap();
    assert_eq!(child, "fork_child: read=1/async=0 recv=1/async=0");

    // The start lines say so: the parent (started single-threaded), the fork child, and the
    // child forked after a thread was cancelled (glibc's wrappers for good).
    let starts: Vec<String> = events_in(&log, "start")
        .iter()
        .map(|e| e["syscalls"].clone())
        .collect();
    assert_eq!(starts, ["direct", "direct", "glibc"], "{log}");
}

/// The start line's `syscalls=` field: `direct` for a server with no thread of its own,
/// `glibc` for one that started a thread before it listened.
#[test]
fn the_start_line_says_which_way_the_calls_go() {
    let serve = |threads: bool| {
        let log = scratch("single_threaded_py.log");
        let script = format!(
            "import socket, threading, time\n\
             if {threads}:\n    threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n\
             s = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n\
             c = socket.create_connection(s.getsockname())\na, _ = s.accept()\n\
             c.sendall(b'x')\nassert a.recv(1) == b'x'\ntime.sleep(0.5)\n",
            threads = if threads { "True" } else { "False" }
        );
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &script]);
        guard(&mut cmd, &log, POLICY);
        let out = cmd.output().expect("python3 runs");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let end = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let starts = events_in(&text, "start");
            if let Some(s) = starts.first() {
                return s["syscalls"].clone();
            }
            assert!(std::time::Instant::now() < end, "no start line: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(serve(false), "direct");
    assert_eq!(serve(true), "glibc");
}
