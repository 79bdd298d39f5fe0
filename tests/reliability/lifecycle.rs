//! Item 3: process and thread life. `lifecycle_check` runs prefork, daemon(), system(),
//! popen(), a fork storm, an exec chain, exiting threads and pthread_cancel of threads blocked
//! in hooked calls, checks itself in every process, then (with --hold) keeps its processes
//! alive so this test reads /proc on its own: one `stallguard` thread in each process that owns
//! connections, none in the others, at most one anywhere in the process tree.

use stallguard_testkit::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const POLICY: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "300ms"),
    ("STALLGUARD_TICK", "20ms"),
];

pub struct Outcome {
    pub lines: Vec<String>,
    pub status: Option<std::process::ExitStatus>,
    /// pid → (role, expected watchers, watchers seen in /proc)
    pub held: Vec<(u32, String, usize, usize)>,
    /// Every process of the tree at hold time: pid → watcher threads.
    pub tree: HashMap<u32, usize>,
    pub log: String,
}

fn descendants(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let kids = children_of(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

pub fn run(guarded: bool) -> Outcome {
    let log = scratch("lifecycle.guard.log");
    let mut cmd = Command::new(harness("lifecycle_check"));
    cmd.arg("--hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    scrub_env(&mut cmd);
    if guarded {
        guard(&mut cmd, &log, POLICY);
    }
    let mut child = cmd.spawn().expect("spawn lifecycle_check");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut held = Vec::new();
    let mut tree = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(170);
    let mut released = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left.max(Duration::from_millis(1))) else {
            break; // EOF or the deadline
        };
        if line == "hold: ready" {
            // Read /proc ourselves while everything is held.
            for (p, role, expect) in held_list(&lines) {
                held.push((p, role, expect, watcher_threads(p)));
            }
            for p in descendants(pid) {
                tree.insert(p, watcher_threads(p));
            }
            let _ = stdin.write_all(b"go\n");
            released = true;
        }
        lines.push(line);
    }
    if !released {
        let _ = stdin.write_all(b"go\n");
    }
    drop(stdin);
    let end = Instant::now() + Duration::from_secs(10);
    let mut status = None;
    while Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            status = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if status.is_none() {
        // Stop what we started, by pid (its children die with it: PDEATHSIG).
        kill_pid(pid, libc::SIGKILL);
    }
    let _ = child.wait();
    Outcome {
        lines,
        status,
        held,
        tree,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

fn held_list(lines: &[String]) -> Vec<(u32, String, usize)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("hold "))
        .map(logfmt)
        .filter_map(|m| {
            Some((
                m.get("pid")?.parse().ok()?,
                m.get("role")?.clone(),
                m.get("watchers")?.parse().ok()?,
            ))
        })
        .collect()
}

pub fn check(o: &Outcome, guarded: bool) {
    let text = o.lines.join("\n");
    eprintln!("lifecycle_check (guarded={guarded}):\n{text}");
    eprintln!("  /proc at hold: {:?}", o.held);
    eprintln!(
        "  process tree at hold (pid → stallguard threads): {:?}",
        o.tree
    );
    assert!(
        o.status.is_some_and(|s| s.success()),
        "lifecycle_check did not finish cleanly: {:?}\n{text}",
        o.status
    );
    assert!(text.contains("lifecycle_check: ok"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(
        text.contains(&format!("lifecycle: mode guarded={}", u8::from(guarded))),
        "{text}"
    );
    for name in [
        "no_connection",
        "prefork",
        "first_accept",
        "threads",
        "cancel",
        "fork_storm",
        "system",
        "popen",
        "exec_chain",
        "daemon",
    ] {
        assert!(
            text.contains(&format!("lifecycle: {name} ok")),
            "scenario {name} missing or failed:\n{text}"
        );
    }
    // Our own look at /proc, independent of the program's.
    let roles: Vec<&str> = o.held.iter().map(|h| h.1.as_str()).collect();
    for role in [
        "main",
        "child_with_connection",
        "child_no_connection",
        "exec_shell_no_connection",
        "daemon",
    ] {
        assert!(
            roles.contains(&role),
            "no held process {role}: {:?}",
            o.held
        );
    }
    for (pid, role, expect, seen) in &o.held {
        let want = if guarded { *expect } else { 0 };
        assert_eq!(
            *seen, want,
            "{role} (pid {pid}) has {seen} stallguard threads, expected {want}"
        );
    }
    assert!(o.tree.len() >= 5, "process tree too small: {:?}", o.tree);
    for (pid, n) in &o.tree {
        assert!(*n <= 1, "pid {pid} has {n} watcher threads (leak)");
        if !guarded {
            assert_eq!(*n, 0, "unguarded pid {pid} has a watcher");
        }
    }
    if guarded {
        assert!(
            o.log.contains("event=reap"),
            "no reap logged by the guarded run"
        );
        for bad in ["event=reap_failed", "event=watcher_failed", "level=error"] {
            assert!(!o.log.contains(bad), "guard log has {bad}:\n{}", o.log);
        }
    }
}
