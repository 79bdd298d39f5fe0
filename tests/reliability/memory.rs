//! Item 5: memory errors and undefined behaviour with the shim inside real processes.
//!
//! Sanitizers: the C harnesses (tests/c/) and example servers (c-examples/) are rebuilt with
//! `-fsanitize=address,undefined -fno-sanitize-recover=all` into target/c-examples-asan/ and
//! run under the shim. ASan insists on being first in the library list; two ways work and both
//! are used here:
//!   * `LD_PRELOAD=$(gcc -print-file-name=libasan.so):/path/libstallguard.so` (ASan first: its
//!     interceptors call on into the shim's hooks through dlsym(RTLD_NEXT));
//!   * `LD_PRELOAD=/path/libstallguard.so ASAN_OPTIONS=verify_asan_link_order=0` (the shim
//!     first: its hooks call on into ASan's interceptors).
//!
//! With `LD_PRELOAD=libstallguard.so` alone an ASan binary aborts at start ("ASan runtime does
//! not come first in initial library list").
//!
//! Valgrind: memcheck of the (normal) echo_server with the shim preloaded, healthy traffic and
//! every kind of reap; every error whose stack involves the shim fails the test.

use super::churn;
use stallguard_testkit::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const ASAN_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-D_FORTIFY_SOURCE=0",
    "-Wall",
    "-pthread",
];

/// Builds `name` with the sanitizers (if its sources are newer than the binary): a test
/// harness from tests/c/ (with its harness.h), or an example server from c-examples/ (with its
/// common.c).
pub fn asan_build(name: &str) -> PathBuf {
    let harness_src = repo().join("tests/c");
    let (sources, headers) = if harness_src.join(format!("{name}.c")).exists() {
        (
            vec![harness_src.join(format!("{name}.c"))],
            vec![harness_src.join("harness.h")],
        )
    } else {
        let src = repo().join("c-examples");
        (
            vec![src.join(format!("{name}.c")), src.join("common.c")],
            vec![src.join("common.h")],
        )
    };
    let out_dir = repo().join("target/c-examples-asan");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let newest = sources
        .iter()
        .chain(&headers)
        .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
        .max();
    let built = out.metadata().and_then(|m| m.modified()).ok();
    if built.is_none() || newest > built {
        let o = Command::new("gcc")
            .args(ASAN_FLAGS)
            .arg("-o")
            .arg(&out)
            .args(&sources)
            .output()
            .expect("run gcc");
        assert!(
            o.status.success(),
            "sanitizer build of {name} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    out
}

pub fn libasan() -> String {
    let o = Command::new("gcc")
        .arg("-print-file-name=libasan.so")
        .output()
        .expect("gcc -print-file-name");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Sanitizer or memcheck complaints in a text.
pub fn sanitizer_findings(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.contains("AddressSanitizer")
                || l.contains("LeakSanitizer")
                || l.contains("runtime error:")
                || l.contains("ASan runtime does not come first")
        })
        .map(str::to_string)
        .take(40)
        .collect()
}

pub struct CheckRun {
    pub name: String,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub log: String,
}

/// Runs a sanitizer-built check program under the shim with `order` ("asan_first" or
/// "verify0") and `policy`.
pub fn run_check(bin: &Path, args: &[&str], order: &str, policy: &[(&str, &str)]) -> CheckRun {
    let log = scratch("asan.guard.log");
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(std::process::Stdio::null());
    scrub_env(&mut cmd);
    let so = shim().to_string_lossy().into_owned();
    match order {
        "asan_first" => cmd.env("LD_PRELOAD", format!("{}:{so}", libasan())),
        _ => cmd
            .env("LD_PRELOAD", &so)
            .env("ASAN_OPTIONS", "verify_asan_link_order=0"),
    };
    cmd.env("STALLGUARD_LOG_FILE", &log);
    for (k, v) in policy {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sanitizer build");
    CheckRun {
        name: format!("{} ({order})", bin.file_name().unwrap().to_string_lossy()),
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

/// The sanitizer churn: echo_server (ASan+UBSan) under the shim, ASan first in LD_PRELOAD.
pub fn asan_churn(cycles: u64, secs: u64) -> churn::ChurnResult {
    let bin = asan_build("echo_server");
    churn::run_with(
        &bin,
        &[("LD_PRELOAD".into(), libasan())],
        cycles,
        Duration::from_secs(secs),
        3,
    )
}

// ------------------------------------------------------------------ valgrind

pub struct Memcheck {
    pub errors: usize,
    pub shim_errors: Vec<String>,
    pub other_errors: Vec<String>,
    pub summary: String,
    pub reaps: usize,
    pub served: usize,
    pub log_text: String,
}

pub fn valgrind_path() -> Option<PathBuf> {
    ["/usr/bin/valgrind", "/usr/local/bin/valgrind"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// memcheck of the normal echo_server with the shim preloaded, healthy traffic and reaps of
/// every kind.
pub fn memcheck(valgrind: &Path, healthy: usize) -> Memcheck {
    let vlog = scratch("memcheck.txt");
    let glog = scratch("memcheck.guard.log");
    let mut env = guarded_env(&glog);
    // Under memcheck everything runs ~30x slower: timers to match.
    for (k, v) in [
        ("STALLGUARD_FIRST_BYTE", "600ms"),
        ("STALLGUARD_REQUEST", "1s"),
        ("STALLGUARD_IDLE", "2s"),
        ("STALLGUARD_WRITE_STALL", "1s"),
        ("STALLGUARD_TICK", "50ms"),
        ("STALLGUARD_BACKSTOPS", "off"),
    ] {
        env.push((k.into(), v.into()));
    }
    env.push(("ECHO_PIPE_EVERY".into(), "2".into()));
    let log_arg = format!("--log-file={}", vlog.display());
    let server = example("echo_server");
    let server_s = server.to_string_lossy().into_owned();
    let args = [
        "--tool=memcheck",
        "--error-exitcode=99",
        "--leak-check=no",
        "--num-callers=30",
        "--trace-children=no",
        log_arg.as_str(),
        server_s.as_str(),
        "0",
        "--threads",
        "6",
        "--big",
        "8388608",
    ];
    let mut srv = Proc::spawn(valgrind, &args, &env, true, &glog);
    let addr = srv.addr();
    let mut served = 0;
    let mut rng = Rng::new(7);
    // Healthy checksummed exchanges.
    for i in 0..healthy {
        let len = if i % 10 == 0 {
            40_000
        } else {
            rng.below(3000) as usize
        };
        let mut body = vec![0u8; len];
        rng.fill(&mut body);
        let Ok(mut s) = connect_tcp([127, 0, 0, 1], addr, None) else {
            continue;
        };
        let mut req = format!("POST /echo HTTP/1.1\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        req.extend_from_slice(&body);
        if !send(&mut s, &req) {
            continue;
        }
        let mut buf = Vec::new();
        if read_body(&mut s, Instant::now() + Duration::from_secs(20), &mut buf).as_deref()
            == Ok(&body[..])
        {
            served += 1;
        }
    }
    // One of each attack, all at once, and wait for their reaps.
    let mut attackers = Vec::new();
    for kind in churn::Attack::ALL {
        attackers.push(std::thread::spawn(move || {
            let rcv = (kind == churn::Attack::NeverReads).then_some(4096);
            let Ok(mut s) = connect_tcp(kind.source(), addr, rcv) else {
                return;
            };
            let _ = match kind {
                churn::Attack::Silent => true,
                churn::Attack::HeadersNoEnd => send(&mut s, b"POST /echo HTTP/1.1\r\nX: y"),
                churn::Attack::BodyShort => send(
                    &mut s,
                    b"POST /echo HTTP/1.1\r\nContent-Length: 900\r\n\r\nabc",
                ),
                churn::Attack::NeverReads => send(&mut s, b"GET /big HTTP/1.1\r\n\r\n"),
            };
            // Hold the connection until the server cuts it (or 30 s).
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if kind == churn::Attack::NeverReads {
                    if tcp_state(&s) != 1 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                } else if wait_cut(&mut s, Duration::from_millis(200)) {
                    break;
                }
            }
        }));
    }
    for a in attackers {
        let _ = a.join();
    }
    std::thread::sleep(Duration::from_millis(500));
    // Stop it: valgrind writes its summary on SIGTERM.
    kill_pid(srv.pid(), libc::SIGTERM);
    let end = Instant::now() + Duration::from_secs(30);
    while srv.exited().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&vlog).unwrap_or_default();
    let log_text = srv.log_text();
    drop(srv);
    // Split the memcheck log into error records (blocks starting at a line that is not a
    // stack frame, up to the blank line).
    let mut records: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let body = line.split_once("== ").map(|(_, b)| b).unwrap_or("");
        if body.trim().is_empty() {
            if !cur.is_empty() {
                records.push(std::mem::take(&mut cur));
            }
            continue;
        }
        cur.push_str(body);
        cur.push('\n');
    }
    if !cur.is_empty() {
        records.push(cur);
    }
    let errors: Vec<String> = records
        .into_iter()
        .filter(|r| {
            let first = r.lines().next().unwrap_or("");
            r.contains("   at 0x")
                && !first.starts_with("HEAP SUMMARY")
                && !first.starts_with("Memcheck,")
                && !first.starts_with("Process terminating with default action of signal 15")
                && !first.contains("Warning: set address range perms")
        })
        .collect();
    let (shim_errors, other_errors): (Vec<String>, Vec<String>) = errors
        .into_iter()
        .partition(|r| r.contains("libstallguard") || r.contains("stallguard::"));
    let summary = text
        .lines()
        .rfind(|l| l.contains("ERROR SUMMARY"))
        .unwrap_or("(no ERROR SUMMARY: valgrind did not finish)")
        .to_string();
    let errors_n = summary
        .split("ERROR SUMMARY: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    Memcheck {
        errors: errors_n,
        shim_errors,
        other_errors,
        summary,
        reaps: events_in(&log_text, "reap").len(),
        served,
        log_text,
    }
}
