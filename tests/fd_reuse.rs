//! fd numbers are reused at once: while the watcher reaps stalled connections every few
//! hundred milliseconds, thousands of short healthy connections take over the same numbers.
//! Not one of them may be cut, and every reap must be of a stalled connection.

use stallguard_testkit::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn churn_never_cuts_a_healthy_connection() {
    let policy = [
        ("STALLGUARD_FIRST_BYTE", "200ms"),
        ("STALLGUARD_REQUEST", "300ms"),
        ("STALLGUARD_IDLE", "300ms"),
        ("STALLGUARD_WRITE_STALL", "300ms"),
        ("STALLGUARD_TICK", "10ms"),
    ];
    let srv = Proc::start("pool_server", &["--threads", "12"], Some(&policy));
    let addr = srv.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let stalled_cut = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let (stop, stalled_cut) = (stop.clone(), stalled_cut.clone());
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    continue;
                };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // Silent until the guard cuts us.
                if let Ok(0) = std::io::Read::read(&mut s, &mut [0u8; 8]) {
                    stalled_cut.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Long enough for dozens of reap rounds; bounded in time and count.
    let deadline = Instant::now() + Duration::from_secs(6);
    let per_thread = 50_000;
    let mut healthy = Vec::new();
    for t in 0..4 {
        healthy.push(std::thread::spawn(move || {
            let mut done = 0;
            for i in 0..per_thread {
                if Instant::now() > deadline {
                    break;
                }
                let body = format!("{t}-{i}-{}", "x".repeat(i % 97));
                let mut s = TcpStream::connect(addr).expect("connect");
                write!(
                    s,
                    "POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let reply = read_response(&mut s, Instant::now() + Duration::from_secs(5));
                assert_eq!(
                    reply,
                    Ok(format!("ok {}\n", body.len())),
                    "healthy request {t}/{i} was cut or corrupted"
                );
                done += 1;
            }
            done
        }));
    }
    let served: usize = healthy
        .into_iter()
        .map(|h| h.join().expect("a healthy connection failed"))
        .sum();
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let reaps = srv.events("reap");
    eprintln!(
        "served {served} healthy requests; {} stalled connections reaped",
        reaps.len()
    );
    assert!(served >= 2000, "too few healthy requests ran: {served}");
    assert!(
        reaps.len() >= 20,
        "too few reaps to exercise reuse: {}",
        reaps.len()
    );
    for r in &reaps {
        assert_eq!(
            r["reason"], "first_byte",
            "a non-stalled connection was reaped: {r:?}"
        );
        assert_eq!(r["bytes_in"], "0", "{r:?}");
    }
}
