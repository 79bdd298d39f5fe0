//! The reader against segments this test writes itself (no shim involved): the mailbox
//! protocol, a watcher that never answers, stale and foreign segments, record decoding.

mod fake;

use fake::{now_ms, rec, sleeper, Fake};
use stallguard_shm::{
    FLAG_KERNEL_VIEW, FLAG_UNIX, MAGIC, REQUEST_FD, TURN_CLIENT, TURN_WRITING, VERSION,
};
use stallguard_testkit::cli::*;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn the_mailbox_protocol() {
    let owner = sleeper();
    let fake = std::sync::Arc::new(Fake::create(owner.pid()));
    // Two stuck connections (client's turn ≥ 10 s), one fresh.
    fake.set_records(&[
        rec(11, TURN_CLIENT, 12_000),
        rec(12, TURN_WRITING, 30_000),
        rec(13, TURN_CLIENT, 500),
    ]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = fake::watcher(fake.clone(), stop.clone());
    let pid = owner.pid().to_string();
    let out = stallguard(&["reap", &pid, "--fd", "7"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("pid {pid}: reaped fd 7"));
    let out = stallguard(&["reap", &pid, "--stuck"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("pid {pid}: reaped 2 connections")
    );
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    // --stuck asks for each stuck connection by fd, longest wait first in table order.
    assert_eq!(
        seen,
        vec![(0, REQUEST_FD, 7), (1, REQUEST_FD, 11), (2, REQUEST_FD, 12)]
    );
}

#[test]
fn no_answer_within_3s_is_exit_1() {
    let owner = sleeper();
    let _fake = Fake::create(owner.pid());
    let t = Instant::now();
    let out = stallguard(&["reap", &owner.pid().to_string(), "--fd", "4"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no answer within 3 s"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn records_decode_and_sort() {
    let owner = sleeper();
    let fake = Fake::create(owner.pid());
    let mut v6 = rec(9, TURN_WRITING, 300);
    v6.family = libc::AF_INET6 as u16;
    v6.peer_ip = "2001:db8::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    v6.time_left_ms = 1234;
    fake.set_records(&[
        rec(5, 0, 0),
        rec(6, TURN_CLIENT, 9000),
        v6,
        rec(7, TURN_CLIENT | FLAG_KERNEL_VIEW, 50),
        rec(8, FLAG_UNIX, 10),
    ]);
    fake.header().tracked.store(5, Ordering::Relaxed);
    fake.header().reaped[6].store(3, Ordering::Relaxed);
    let doc = top_json(owner.pid()).unwrap();
    let conns = doc["connections"].as_array().unwrap();
    let fds: Vec<i64> = conns.iter().map(|c| c["fd"].as_i64().unwrap()).collect();
    assert_eq!(fds, vec![6, 9, 7, 8, 5]);
    assert_eq!(conns[0]["turn"], "client");
    assert_eq!(conns[0]["peer"], "10.0.0.9:40006");
    assert_eq!(conns[0]["time_left_ms"], serde_json::Value::Null);
    assert_eq!(conns[1]["turn"], "writing");
    assert_eq!(conns[1]["peer"], "[2001:db8::1]:40009");
    assert_eq!(conns[1]["time_left_ms"], 1234);
    assert_eq!(conns[2]["view"], "kernel");
    assert_eq!(conns[3]["peer"], "unix");
    assert_eq!(conns[4]["turn"], "server");
    assert_eq!(conns[0]["reaped"], false);
    assert_eq!(conns[0]["would_reap"], false);
    assert_eq!(doc["counters"]["tracked"], 5);
    assert_eq!(doc["counters"]["reaped"]["manual"], 3);
    assert_eq!(doc["processes"][0]["policy"], "first_byte=20s fake=yes");

    let out = stallguard(&["metrics", &owner.pid().to_string()]);
    let m = text(&out.stdout);
    assert!(
        m.contains(&format!(
            "stallguard_reaped_total{{pid=\"{}\",comm=\"sleep\",reason=\"manual\"}} 3\n",
            owner.pid()
        )),
        "{m}"
    );
}

#[test]
fn stale_segments_are_ignored_and_removed_when_ours() {
    // A dead process.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let fake = Fake::create(gone.id());
    let out = stallguard(&["top", "--once", &gone.id().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // Any guarded process starting meanwhile (other tests run in parallel) also removes stale
    // segments of dead pids: either way the segment is gone and the pid is reported dead.
    assert!(
        !err.contains("stale segment") || err.contains("removed"),
        "{err}"
    );
    assert!(err.contains(&format!("no process {}", gone.id())), "{err}");
    assert!(!fake.path.exists());

    // A live process that started after the segment's last publish: a reused pid.
    let owner = sleeper();
    let fake = Fake::create(owner.pid());
    fake.header()
        .updated_unix_ms
        .store(now_ms() - 3_600_000, Ordering::Relaxed);
    let out = stallguard(&["top", "--once", &owner.pid().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stale segment"),
        "{}",
        text(&out.stderr)
    );
    assert!(!fake.path.exists());
}

#[test]
fn foreign_or_broken_segments_are_ignored() {
    let owner = sleeper();
    let fake = Fake::create(owner.pid());
    unsafe { (*fake.h).magic = *b"NOTMAGIC" };
    let out = stallguard(&["top", "--once", &owner.pid().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad magic"), "{err}");
    assert!(err.contains("has no stallguard segment"), "{err}");
    assert!(
        fake.path.exists(),
        "a broken segment of a live process is not ours to delete"
    );

    // Another layout version.
    unsafe {
        (*fake.h).magic = MAGIC;
        (*fake.h).version = VERSION + 1;
    }
    let out = stallguard(&["top", "--once", &owner.pid().to_string()]);
    assert!(
        text(&out.stderr).contains("layout version"),
        "{}",
        text(&out.stderr)
    );
}
