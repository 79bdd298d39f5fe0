//! A segment written by the test itself (no shim involved), hung on a live process, and that
//! process. Shared by the tests that play the library's side of the segment.
#![allow(dead_code)]

use stallguard_shm::{Header, Record, CAPACITY, MAGIC, SEGMENT_BYTES, VERSION};
use stallguard_testkit::Proc;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A fake segment for `pid`, removed when dropped.
pub struct Fake {
    pub path: PathBuf,
    pub h: *mut Header,
}

unsafe impl Send for Fake {}
unsafe impl Sync for Fake {}

impl Fake {
    pub fn create(pid: u32) -> Fake {
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

    pub fn header(&self) -> &Header {
        unsafe { &*self.h }
    }

    pub fn set_policy(&self, policy: &str) {
        let p = unsafe { &mut (*self.h).policy };
        p.fill(0);
        p[..policy.len()].copy_from_slice(policy.as_bytes());
    }

    pub fn set_records(&self, recs: &[Record]) {
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
pub fn sleeper() -> Proc {
    let mut cmd = Command::new("sleep");
    cmd.arg("60");
    Proc::launch("sleep", cmd, PathBuf::new(), false)
}

/// A connection from 10.0.0.9:(40000 + fd) to local port 8080.
pub fn rec(fd: i32, flags: u32, waiting_ms: u64) -> Record {
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

/// A fake watcher: answers every mailbox request with 1 reaped until `stop`; returns the
/// requests it saw as (ticket, kind, fd).
pub fn watcher(fake: Arc<Fake>, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(u64, u32, i32)>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mailbox = &fake.header().mailbox;
            while let stallguard_shm::Take::Request(r) = mailbox.peek() {
                seen.push((r.ticket, r.kind, r.fd));
                mailbox.answer(r.ticket, 1);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    })
}
