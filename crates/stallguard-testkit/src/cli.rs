//! The `stallguard` command in tests: run it to completion, start a server through
//! `stallguard run`, read `top --json`.

use crate::paths::{cli_bin, example, scratch, shim};
use crate::proc::Proc;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

/// `stallguard ARGS` to completion, with STALLGUARD_LIB pointing at the built library.
pub fn stallguard(args: &[&str]) -> Output {
    Command::new(cli_bin())
        .args(args)
        .env("STALLGUARD_LIB", shim())
        .stdin(Stdio::null())
        .output()
        .expect("run stallguard")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The C example `name` started with `stallguard run --log-file LOG FLAGS -- SERVER 0 ARGS`.
pub fn stallguard_run(name: &str, server_args: &[&str], flags: &[&str]) -> Proc {
    let log = scratch(&format!("{name}.log"));
    let mut cmd = Command::new(cli_bin());
    cmd.arg("run")
        .arg("--log-file")
        .arg(&log)
        .args(flags)
        .arg("--")
        .arg(example(name))
        .arg("0")
        .args(server_args)
        .env("STALLGUARD_LIB", shim())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let mut proc = Proc::launch(name, cmd, log, true);
    proc.guarded = true;
    proc
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
