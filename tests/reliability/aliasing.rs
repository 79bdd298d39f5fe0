//! Item 4: aliasing and close paths. `alias_check` releases a stalled tracked connection
//! through every close path and lets a healthy object (connection, pipe, outbound connection,
//! file) take its number at once; copies made with dup/dup2/dup3/F_DUPFD* must stay guarded.
//! This test matches the program's report with the guard log: which fd and peer each reap
//! names.

use stallguard_testkit::*;
use std::collections::{HashMap, HashSet};
use std::process::Command;

pub const POLICY: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "200ms"),
    ("STALLGUARD_TICK", "10ms"),
    ("STALLGUARD_LOG", "debug"),
];

pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
    pub log: String,
}

pub fn run(args: &[&str], guarded: bool) -> Outcome {
    run_with(args, guarded.then_some(POLICY))
}

/// `alias_check ARGS`, guarded with `policy` (None: without the library).
pub fn run_with(args: &[&str], policy: Option<&[(&str, &str)]>) -> Outcome {
    let log = scratch("alias.guard.log");
    let mut cmd = Command::new(harness("alias_check"));
    cmd.args(args);
    scrub_env(&mut cmd);
    if let Some(policy) = policy {
        guard(&mut cmd, &log, policy);
    }
    let out = cmd.output().expect("run alias_check");
    Outcome {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ok: out.status.success(),
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

impl Outcome {
    /// The program said ok (with what it printed and the guard log otherwise).
    pub fn assert_ok(&self) {
        assert!(
            self.ok,
            "{}{}\nguard log:\n{}",
            self.stdout, self.stderr, self.log
        );
    }
}

fn port_of_peer(peer: &str) -> u16 {
    peer.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0)
}

/// The logfmt lines of `stdout` that start with `tag`, parsed.
fn tagged(stdout: &str, tag: &str) -> Vec<Event> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(tag))
        .map(logfmt)
        .collect()
}

pub fn check(o: &Outcome, guarded: bool) {
    eprintln!("alias_check (guarded={guarded}):\n{}", o.stdout);
    assert!(o.ok, "alias_check failed:\n{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("alias_check: ok"), "{}", o.stdout);
    let rounds = tagged(&o.stdout, "release ");
    let aliases = tagged(&o.stdout, "alias ");
    assert_eq!(rounds.len(), 21, "release rounds: {}", o.stdout);
    assert_eq!(aliases.len(), 7, "alias rounds: {}", o.stdout);
    for r in &rounds {
        assert_eq!(r["reused"], "1", "number not reused as planned: {r:?}");
        assert_eq!(
            r["r_ok"], "1",
            "the object on a reused number was disturbed: {r:?}"
        );
        assert_eq!(r["s_cut"], u8::from(guarded).to_string(), "{r:?}");
    }
    if !guarded {
        return;
    }
    let reaps = events_in(&o.log, "reap");
    let reaped: HashSet<(String, u16)> = reaps
        .iter()
        .map(|r| (r["fd"].clone(), port_of_peer(&r["peer"])))
        .collect();
    let reaped_ports: HashSet<u16> = reaped.iter().map(|(_, p)| *p).collect();
    let mut stale_allowed = HashSet::new();
    for r in &rounds {
        let s_port: u16 = r["s_peer"].parse().unwrap();
        assert!(
            reaped.contains(&(r["s_fd"].clone(), s_port)),
            "stalled connection fd={} peer port {s_port} not reaped (or logged under another fd): {r:?}\nlog:\n{}",
            r["s_fd"],
            o.log
        );
        let a_port: u16 = r["a_peer"].parse().unwrap();
        let late: u64 = r["late_ms"].parse().unwrap();
        if late < 150 {
            assert!(
                !reaped_ports.contains(&a_port),
                "a connection the program had closed was reaped: {r:?}"
            );
        }
        let r_port: u16 = r["r_peer"].parse().unwrap();
        if r_port != 0 {
            assert!(
                !reaped_ports.contains(&r_port),
                "the healthy connection on the reused number was reaped: {r:?}"
            );
        }
        if r["path"] == "raw_close" {
            // No hook saw that close: the watcher finds a different object (or none) under
            // the number and must refuse to act (SO_COOKIE), which it logs at debug.
            stale_allowed.insert(r["n"].clone());
        }
    }
    for a in &aliases {
        assert_eq!(
            a["cut"], "1",
            "stalled aliased connection not reaped: {a:?}"
        );
        let a_port: u16 = a["a_peer"].parse().unwrap();
        assert!(
            reaped.contains(&(a["fd"].clone(), a_port)),
            "alias {} : no reap fd={} peer port {a_port}:\n{}",
            a["op"],
            a["fd"],
            o.log
        );
        let b_port: u16 = a["b_peer"].parse().unwrap();
        if b_port != 0 {
            assert!(
                !reaped_ports.contains(&b_port),
                "the connection replaced by dup2/dup3 was reaped: {a:?}"
            );
        }
    }
    // Exactly the stalled connections were reaped: one per round and alias.
    assert_eq!(
        reaps.len(),
        rounds.len() + aliases.len(),
        "unexpected reaps:\n{}",
        o.log
    );
    let stale: Vec<String> = events_in(&o.log, "stale")
        .into_iter()
        .map(|m| m["fd"].clone())
        .collect();
    for fd in &stale {
        assert!(
            stale_allowed.contains(fd),
            "stale tracking of fd {fd} after a hooked close path (a missed close):\n{}",
            o.log
        );
    }
    // The raw closes whose number went to something no hook re-tracks (pipe, outbound, file)
    // must have been caught by the cookie check.
    let raw_untracked: Vec<&HashMap<String, String>> = rounds
        .iter()
        .filter(|r| r["path"] == "raw_close" && r["reuse"] != "conn")
        .collect();
    for r in raw_untracked {
        assert!(
            stale.contains(&r["n"]),
            "raw close of fd {} went unnoticed: {r:?}",
            r["n"]
        );
    }
    for bad in ["event=reap_failed", "event=watcher_failed", "level=error"] {
        assert!(!o.log.contains(bad), "guard log has {bad}:\n{}", o.log);
    }
}
