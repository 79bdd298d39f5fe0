//! STALLGUARD_PER_SOURCE on a real server: civetweb (8 workers, its own timeouts far away)
//! under a sustained slowloris from 127.0.0.1 — a new slow connection every 100 ms for the whole
//! run — while a legitimate client on 127.0.0.2 probes every 200 ms. Per-connection deadlines
//! alone cannot keep the workers free (each slow connection holds one for its whole request
//! timer); the cap can. And mini_httpd (fork per connection: the parent closes its copy right
//! after fork) under the same attack: the cap counts a connection until its child lets go.

mod real;

use real::{civetweb, mini_httpd, require_tools, Job, Mode, PROBE_BODY};
use stallguard_testkit::{connect_tcp, Slowloris};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const SECONDS: u64 = 20;

/// Share of probes from 127.0.0.2 served during the last two thirds of the attack.
fn served_under_sustained_slowloris(cap: Option<u32>) -> (f64, String) {
    let label = if cap.is_some() {
        "sustained slowloris, cap"
    } else {
        "sustained slowloris, no cap"
    };
    let mut job = Job::new("civetweb", label, Mode::Guarded);
    if let Some(n) = cap {
        job.extra_env
            .push(("STALLGUARD_PER_SOURCE".into(), n.to_string()));
    }
    let server = civetweb(&job, "civetweb", true);
    let addr = server.addr();
    let attacker = Slowloris::start(addr, b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n");
    let start = Instant::now();
    let (mut served, mut probes) = (0, 0);
    while start.elapsed() < Duration::from_secs(SECONDS) {
        if start.elapsed() >= Duration::from_secs(SECONDS / 3) {
            probes += 1;
            if probe_from_other_host(addr) {
                served += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    attacker.stop();
    let log = std::fs::read_to_string(job.guard_log()).unwrap_or_default();
    (served as f64 / probes.max(1) as f64, log)
}

fn probe_from_other_host(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = connect_tcp([127, 0, 0, 2], addr, None) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    if s.write_all(b"GET /index.html HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains(PROBE_BODY)
}

#[test]
fn per_source_cap_keeps_civetweb_serving_other_clients() {
    require_tools();
    let without = std::thread::spawn(|| served_under_sustained_slowloris(None));
    let (with_cap, log) = served_under_sustained_slowloris(Some(4));
    let (without, _) = without.join().unwrap();
    eprintln!(
        "civetweb, sustained slowloris for {SECONDS}s: legit probes from another address served {:.1}% without the cap, {:.1}% with STALLGUARD_PER_SOURCE=4",
        without * 100.0,
        with_cap * 100.0
    );
    assert!(
        without < 0.5,
        "the sustained attack should deny service without the cap ({without})"
    );
    assert!(with_cap >= 0.99, "with the cap: {with_cap}\n{log}");
    assert!(log.contains("event=over_cap"), "{log}");
}

/// Children of `pid` that are not zombies (one per connection being served).
fn live_children(pid: u32) -> usize {
    let children = stallguard_testkit::children_of(pid);
    children
        .into_iter()
        .filter(|c| stallguard_testkit::pid_alive(*c))
        .count()
}

/// Issue 14 item 4: STALLGUARD_PER_SOURCE=4 on mini_httpd under a sustained slowloris from
/// 127.0.0.1 with the request timers far away (only the cap holds the attacker back): never
/// more than 4 of its connections served at once (one child each), while 127.0.0.2 is served;
/// after the attack 127.0.0.1 is admitted again.
#[test]
fn per_source_cap_holds_for_fork_per_connection_mini_httpd() {
    require_tools();
    const CAP: usize = 4;
    let mut job = Job::new("mini_httpd", "sustained slowloris, cap", Mode::Guarded);
    for (k, v) in [
        ("STALLGUARD_FIRST_BYTE", "60s"),
        ("STALLGUARD_REQUEST", "60-120,minrate=1"),
        ("STALLGUARD_IDLE", "60s"),
        ("STALLGUARD_PER_SOURCE", "4"),
    ] {
        job.extra_env.push((k.into(), v.into()));
    }
    let server = mini_httpd(&job);
    let addr = server.addr();
    let pid = server.pid() as u32;
    let attacker = Slowloris::start(addr, b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n");
    let start = Instant::now();
    let (mut most, mut served, mut probes) = (0, 0, 0);
    while start.elapsed() < Duration::from_secs(8) {
        probes += 1;
        if probe_from_other_host(addr) {
            served += 1;
        }
        most = most.max(live_children(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    attacker.stop();
    let log = || std::fs::read_to_string(job.guard_log()).unwrap_or_default();
    assert!(
        most <= CAP + 1,
        "{most} mini_httpd children at once with STALLGUARD_PER_SOURCE={CAP}\n{}",
        log()
    );
    assert!(
        served * 100 >= probes * 99,
        "{served}/{probes} probes served\n{}",
        log()
    );
    assert!(log().contains("event=over_cap"), "{}", log());
    let again = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = connect_tcp([127, 0, 0, 1], addr, None).is_ok_and(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            body.contains(PROBE_BODY)
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < again,
            "127.0.0.1 still refused after the attack\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
