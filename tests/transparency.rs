//! Where no connection stalls, a program behaves exactly as without the shim: same output,
//! same exit status, nothing extra on stderr.

mod common;
use common::*;
use std::process::{Command, Output};

fn run(name: &str, args: &[&str], preload: bool) -> Output {
    let mut cmd = Command::new(example(name));
    cmd.args(args);
    if preload {
        cmd.env("LD_PRELOAD", shim())
            .env("STALLGUARD_FIRST_BYTE", "1s")
            .env("STALLGUARD_IDLE", "1s")
            .env("STALLGUARD_TICK", "10ms");
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
