//! Where no connection stalls, a program behaves exactly as without the shim: same output,
//! same exit status, nothing extra on stderr.

use stallguard_testkit::*;
use std::process::{Command, Output};

/// The default timers (these programs never stall a connection), with a fast watcher so it
/// runs many times during each program.
const POLICY: &[(&str, &str)] = &[("STALLGUARD_TICK", "10ms")];

fn run(name: &str, args: &[&str], preload: bool) -> Output {
    let mut cmd = Command::new(harness(name));
    cmd.args(args);
    if preload {
        guard(&mut cmd, &scratch("transparency.log"), POLICY);
    }
    cmd.output().unwrap_or_else(|e| panic!("run {name}: {e}"))
}

fn same_with_and_without(name: &str, args: &[&str]) -> String {
    let plain = run(name, args, false);
    let guarded = run(name, args, true);
    let text = String::from_utf8_lossy(&plain.stdout).to_string();
    assert_eq!(
        plain.status.code(),
        Some(0),
        "{name} fails on its own:\n{text}{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&guarded.stdout),
        text,
        "{name}: output differs under the shim; stderr: {}",
        String::from_utf8_lossy(&guarded.stderr)
    );
    assert_eq!(
        guarded.status.code(),
        plain.status.code(),
        "{name}: exit status differs"
    );
    assert_eq!(
        String::from_utf8_lossy(&guarded.stderr),
        String::from_utf8_lossy(&plain.stderr),
        "{name}: stderr differs"
    );
    text
}

#[test]
fn file_and_pipe_io_is_unchanged() {
    let out = same_with_and_without("fileio_check", &[]);
    assert!(out.contains("fileio_check: ok"), "{out}");
}

/// errno exactly as libc sets it, SIGPIPE exactly as the kernel raises it (default action,
/// handler, MSG_NOSIGNAL, blocked), every real call made once (exact bytes both ways, peek,
/// zero-length), dup/close aliasing, readiness through poll/select/epoll: 72 checks on
/// accepted (tracked) connections, compared line by line with a run without the shim.
#[test]
fn hooked_calls_are_transparent_on_tracked_connections() {
    let out = same_with_and_without("hook_check", &[]);
    assert!(out.contains("hook_check: ok"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

/// Signal handlers that write to, dup and close tracked sockets at 5 kHz while four threads
/// ping-pong over tracked sockets: no deadlock (a watchdog exits 3), no lost or doubled byte.
#[test]
fn hooks_called_from_signal_handlers_never_deadlock() {
    let out = same_with_and_without("signal_stress", &["3"]);
    assert_eq!(out.trim(), "signal_stress: ok");
}
