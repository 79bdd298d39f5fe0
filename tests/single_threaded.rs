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

/// Runs `cmd` to its end, or kills it (by its PID) after `within`: a hang fails the test
/// instead of hanging it (the programs bound their own waits with `alarm` too).
fn run_within(cmd: &mut Command, within: Duration) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let end = std::time::Instant::now() + within;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// `program args` without the shim, then under it (with `extra` preloaded after it, if any):
/// both outputs and the guard log.
fn plain_and_guarded(program: &str, args: &[&str], extra: Option<&str>) -> [(Output, String); 2] {
    [false, true].map(|guarded| {
        let log = scratch(&format!("{program}.log"));
        let mut cmd = Command::new(harness(program));
        cmd.args(args);
        if guarded {
            guard(&mut cmd, &log, POLICY);
            if let Some(lib) = extra {
                cmd.env("LD_PRELOAD", format!("{} {lib}", shim().display()));
            }
        } else {
            scrub_env(&mut cmd);
            if let Some(lib) = extra {
                cmd.env("LD_PRELOAD", lib);
            }
        }
        let out = run_within(&mut cmd, Duration::from_secs(20));
        (out, std::fs::read_to_string(&log).unwrap_or_default())
    })
}

/// The same successful output with and without the shim, `expected` on stdout: the guard
/// log, or what went wrong.
fn run_same(
    program: &str,
    args: &[&str],
    extra: Option<&str>,
    expected: &str,
) -> Result<String, String> {
    let [(plain, _), (guarded, log)] = plain_and_guarded(program, args, extra);
    for (out, how) in [(&plain, "without the shim"), (&guarded, "under the shim")] {
        if !out.status.success() || text(&out.stdout) != expected {
            return Err(format!(
                "{program} {args:?} {how}: {:?}\n{}{}\n{log}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
    }
    assert_eq!(text(&guarded.stderr), text(&plain.stderr));
    Ok(log)
}

fn same_success(program: &str, args: &[&str], extra: Option<&str>, expected: &str) -> String {
    run_same(program, args, extra, expected).unwrap_or_else(|why| panic!("{why}"))
}

/// glibc starts threads for itself (not through pthread_create's PLT entry, so no hook sees
/// them): `timer_create` and `mq_notify` with SIGEV_THREAD, POSIX AIO, `getaddrinfo_a`. The
/// callback, on such a thread, cancels the main thread blocked in read on a tracked socket:
/// cancelled at once, as without the shim (glibc's count of its threads sends the read
/// through its wrapper). Before: the read never woke (SIGALRM after 5 s).
#[test]
fn a_cancel_from_a_thread_glibc_started_for_itself_acts_at_once() {
    // Every way is run, then the failures reported together.
    let failed: Vec<String> = ["timer", "mq", "aio", "gai"]
        .iter()
        .filter_map(|mode| {
            let expected = format!("unseen_cancel {mode}: cancelled\n");
            run_same("unseen_cancel", &[mode], None, &expected).err()
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A plugin opened with RTLD_DEEPBIND binds pthread_create and pthread_cancel to libc before
/// the shim: its thread cancels the main thread blocked in read, as without the shim. Before:
/// the read returned when the plugin wrote a byte, and the next one hung.
#[test]
fn a_cancel_from_a_deepbind_plugin_s_thread_acts_at_once() {
    let plugin = harness("libdeepbind_plugin.so");
    same_success(
        "unseen_cancel",
        &["deepbind", plugin.to_str().unwrap()],
        None,
        "unseen_cancel deepbind: cancelled\n",
    );
}

/// A library linked into the program registers a fork child handler before the shim's and
/// restarts its worker thread in the child; the worker cancels the child's main thread,
/// blocked in read on an inherited tracked connection: cancelled, as without the shim.
/// Before: the shim's child handler, running after, went direct with the worker alive.
#[test]
fn a_thread_a_fork_handler_started_before_ours_can_cancel_the_child() {
    same_success(
        "atfork_restart_main",
        &[],
        None,
        "atfork_restart: child cancelled\n",
    );
}

/// Another interposer preloaded after the shim (proxychains, torsocks, socket_wrapper) is
/// where the shim's real functions lead: it still sees every connect, read and write (the
/// redirected connect succeeds), and the start line says `syscalls=glibc`. Before: the
/// system calls skipped it (connection refused on the unredirected port).
#[test]
fn a_second_interposer_after_the_guard_sees_every_call() {
    let plugin = harness("libredirect_plugin.so");
    let log = same_success(
        "redirect_main",
        &[],
        Some(plugin.to_str().unwrap()),
        "redirect: connect to :9 -> connected\nredirect: plugin saw read=2 write=2\n",
    );
    let starts: Vec<String> = events_in(&log, "start")
        .iter()
        .map(|e| e["syscalls"].clone())
        .collect();
    assert_eq!(starts, ["glibc"], "{log}");
}

/// `STALLGUARD_DIRECT_SYSCALLS=off`: glibc's wrappers throughout (the blocked calls run in
/// glibc's cancellation mode, as in any process with a second thread), and the start line
/// says so.
#[test]
fn direct_system_calls_can_be_turned_off() {
    let log = scratch("single_threaded_off.log");
    let mut cmd = Command::new(harness("single_thread_check"));
    guard(&mut cmd, &log, POLICY).env("STALLGUARD_DIRECT_SYSCALLS", "off");
    let out = run_within(&mut cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{stdout}{}\n{log}", text(&out.stderr));
    for step in ["restart:", "fork_child:"] {
        let line = stdout.lines().find(|l| l.starts_with(step)).unwrap();
        assert!(!line.contains("async=0"), "{line}");
    }
    let starts: Vec<String> = events_in(&log, "start")
        .iter()
        .map(|e| e["syscalls"].clone())
        .collect();
    assert_eq!(starts, ["off", "off", "off"], "{log}");
}

/// Which object made a plain single-threaded program's `read` system call (a seccomp filter
/// traps it; the SIGSYS handler's `si_call_addr`, named by dladdr): the guard itself when it
/// runs; glibc, as without the library, when the guard started UNGUARDED (a bad value with
/// `STALLGUARD_ON_ERROR=warn`: a guard that does not run changes nothing) and with
/// `STALLGUARD_DIRECT_SYSCALLS=off`. Before: the direct way was chosen before the
/// configuration was read, and stayed on when it was refused.
#[test]
fn the_guard_makes_system_calls_itself_only_when_it_runs_and_may() {
    let site = |env: &[(&str, &str)], guarded: bool| {
        let log = scratch("syscall_site.log");
        let mut cmd = Command::new(harness("syscall_site"));
        if guarded {
            guard(&mut cmd, &log, env);
        } else {
            scrub_env(&mut cmd);
        }
        let out = run_within(&mut cmd, Duration::from_secs(20));
        assert!(out.status.success(), "{env:?}: {out:?}");
        text(&out.stdout)
    };
    let from = |who: &str| format!("syscall_site: read from {who}\n");
    assert_eq!(site(&[], false), from("libc"));
    assert_eq!(site(&[], true), from("guard"));
    let unguarded = [
        ("STALLGUARD_IDLE", "bogus"),
        ("STALLGUARD_ON_ERROR", "warn"),
    ];
    assert_eq!(site(&unguarded, true), from("libc"), "running UNGUARDED");
    let off = [("STALLGUARD_DIRECT_SYSCALLS", "off")];
    assert_eq!(site(&off, true), from("libc"), "switched off");
}
