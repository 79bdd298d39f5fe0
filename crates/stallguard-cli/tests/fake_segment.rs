//! The reader against segments this test writes itself (no shim involved): the mailbox
//! protocol, a watcher that never answers, stale and foreign segments, record decoding.

use stallguard_shm::{
    Header, Record, CAPACITY, FLAG_KERNEL_VIEW, FLAG_UNIX, MAGIC, REQUEST_FD, REQUEST_STUCK,
    SEGMENT_BYTES, TURN_CLIENT, TURN_WRITING, VERSION,
};
use stallguard_testkit::cli::*;
use stallguard_testkit::Proc;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A fake segment for `pid`, removed when dropped.
struct Fake {
    path: PathBuf,
    h: *mut Header,
}

unsafe impl Send for Fake {}
unsafe impl Sync for Fake {}

impl Fake {
    fn create(pid: u32) -> Fake {
        let path = PathBuf::from(stallguard_shm::path_for(pid));
        let _ = std::fs::remove_file(&path);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.set_len(SEGMENT_BYTES as u64).unwrap();
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SEGMENT_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let h = p as *mut Header;
        unsafe {
            (*h).magic = MAGIC;
            (*h).version = VERSION;
            (*h).record_size = std::mem::size_of::<Record>() as u32;
            (*h).pid = pid;
            (*h).capacity = CAPACITY as u32;
            (*h).tick_ms.store(100, Ordering::Relaxed);
            (*h).started_unix_ms.store(now_ms(), Ordering::Relaxed);
            (*h).updated_unix_ms.store(now_ms(), Ordering::Relaxed);
            let policy = b"first_byte=20s fake=yes";
            (&mut (*h).policy)[..policy.len()].copy_from_slice(policy);
        }
        Fake { path, h }
    }

    fn header(&self) -> &Header {
        unsafe { &*self.h }
    }

    fn set_records(&self, recs: &[Record]) {
        let h = self.header();
        let seq = h.seq.load(Ordering::Relaxed);
        h.seq.store(seq | 1, Ordering::Release);
        let base = unsafe { stallguard_shm::records(self.h) as *mut Record };
        for (i, r) in recs.iter().enumerate() {
            unsafe { base.add(i).write(*r) };
        }
        h.count.store(recs.len() as u32, Ordering::Release);
        h.seq.store((seq | 1) + 1, Ordering::Release);
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.h.cast(), SEGMENT_BYTES) };
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A live, unguarded process to hang a fake segment on.
fn sleeper() -> Proc {
    let mut cmd = Command::new("sleep");
    cmd.arg("60");
    Proc::launch("sleep", cmd, PathBuf::new(), false)
}

fn rec(fd: i32, flags: u32, waiting_ms: u64) -> Record {
    Record {
        fd,
        flags,
        family: libc::AF_INET as u16,
        local_port: 8080,
        peer_port: 40000 + fd as u16,
        peer_ip: [10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        waiting_ms,
        bytes_in: 17,
        bytes_out: 3,
        time_left_ms: u64::MAX,
        age_ms: 5000,
        ..Record::default()
    }
}

#[test]
fn the_mailbox_protocol() {
    let owner = sleeper();
    let fake = std::sync::Arc::new(Fake::create(owner.pid()));
    // A fake watcher: answers each request with fd + 1 "reaped" (2 for stuck).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (fake, stop) = (fake.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let h = fake.header();
                let seq = h.request_seq.load(Ordering::Acquire);
                if seq != h.answer_seq.load(Ordering::Acquire) {
                    let kind = h.request_kind.load(Ordering::Acquire);
                    let fd = h.request_fd.load(Ordering::Acquire);
                    seen.push((seq, kind, fd));
                    let n = if kind == REQUEST_FD { 1 } else { 2 };
                    h.answer_reaped.store(n, Ordering::Relaxed);
                    h.answer_seq.store(seq, Ordering::Release);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
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
    assert_eq!(seen, vec![(1, REQUEST_FD, 7), (2, REQUEST_STUCK, -1)]);
}

#[test]
fn no_answer_within_3s_is_exit_1() {
    let owner = sleeper();
    let _fake = Fake::create(owner.pid());
    let t = Instant::now();
    let out = stallguard(&["reap", &owner.pid().to_string(), "--stuck"]);
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
    assert_eq!(doc["counters"]["tracked"], 5);
    assert_eq!(doc["counters"]["reaped"]["manual"], 3);
    assert_eq!(doc["processes"][0]["policy"], "first_byte=20s fake=yes");

    let out = stallguard(&["metrics", &owner.pid().to_string()]);
    let m = text(&out.stdout);
    assert!(
        m.contains(&format!(
            "stallguard_reaped_total{{pid=\"{}\",reason=\"manual\"}} 3\n",
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
