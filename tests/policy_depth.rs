//! Policy beyond the four timers: per-port rules, exempt peers, a lifetime cap, RST as the
//! action, and the per-source cap that keeps workers free under a sustained attack.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn with(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> =
        FAST.iter().map(|(k, v)| (*k, v.to_string())).collect();
    v.extend(extra.iter().cloned());
    v
}

fn start(port: u16, server: &str, args: &[&str], vars: &[(&'static str, String)]) -> Server {
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_on(port, server, args, Some(&refs))
}

/// Seconds until the guard cuts a silent connection (None: not within `within`).
fn silent_cut_after(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    conn.set_read_timeout(Some(within)).unwrap();
    match conn.read(&mut [0u8; 8]) {
        Ok(0) => Some(started.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(started.elapsed()),
        _ => None,
    }
}

#[test]
fn a_port_can_be_left_alone_or_given_its_own_timers() {
    let port = free_port();
    let srv = start(
        port,
        "pool_server",
        &[],
        &with(&[("STALLGUARD_PORTS", format!("{port}:off"))]),
    );
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    assert_eq!(
        silent_cut_after(&mut c, Duration::from_millis(2500)),
        None,
        "{}",
        srv.log_text()
    );
    drop(srv);

    let port = free_port();
    let srv = start(
        port,
        "pool_server",
        &[],
        &with(&[("STALLGUARD_PORTS", format!("{port}:first_byte=2500ms"))]),
    );
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    let cut = silent_cut_after(&mut c, Duration::from_secs(5)).expect("the port's own timer");
    assert!(
        cut >= Duration::from_millis(2500),
        "cut after {cut:?}: the global 1 s timer was used"
    );
    let start_line = &srv.wait_events("start", 1, Duration::from_secs(1))[0];
    assert!(
        start_line[&format!("port{port}")].contains("first_byte=2.5s"),
        "{start_line:?}"
    );
}

#[test]
fn exempt_peers_are_never_touched() {
    let srv = start(
        0,
        "pool_server",
        &[],
        &with(&[("STALLGUARD_EXEMPT", "127.0.0.2/32".into())]),
    );
    let mut trusted = connect_from([127, 0, 0, 2], srv.addr()).unwrap();
    let mut other = connect_from([127, 0, 0, 3], srv.addr()).unwrap();
    assert!(
        silent_cut_after(&mut other, Duration::from_secs(3)).is_some(),
        "{}",
        srv.log_text()
    );
    assert_eq!(
        silent_cut_after(&mut trusted, Duration::from_millis(1500)),
        None
    );
    assert!(srv
        .events("reap")
        .iter()
        .all(|r| r["peer"].starts_with("127.0.0.3:")));
}

#[test]
fn lifetime_caps_a_busy_connection() {
    let srv = start(
        0,
        "pool_server",
        &[],
        &with(&[("STALLGUARD_LIFETIME", "2s".into())]),
    );
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    let started = Instant::now();
    let mut served = 0;
    loop {
        if write!(s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
            break;
        }
        if read_response(&mut s, Instant::now() + Duration::from_secs(2)).is_err() {
            break;
        }
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(6), "never cut");
    }
    assert!(served >= 10, "busy for {served} requests only");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let reaps = srv.events("reap");
    assert_eq!(reaps.len(), 1, "{}", srv.log_text());
    assert_eq!(reaps[0]["reason"], "lifetime");
}

#[test]
fn action_rst_resets_instead_of_a_graceful_close() {
    for (action, expect_reset) in [("rst", true), ("shutdown", false)] {
        let srv = start(
            0,
            "pool_server",
            &[],
            &with(&[("STALLGUARD_ACTION", action.into())]),
        );
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        assert!(silent_cut_after(&mut c, Duration::from_secs(3)).is_some());
        std::thread::sleep(Duration::from_millis(300)); // the server closes its side
        let state = tcp_state(&c);
        if expect_reset {
            assert_eq!(
                state, 7,
                "ACTION=rst: the client should see an RST (TCP_CLOSE)"
            );
        } else {
            assert_eq!(state, 8, "ACTION=shutdown: a graceful FIN (CLOSE_WAIT)");
        }
        assert_eq!(srv.events("reap")[0]["action"], action);
    }
}

/// Runs a sustained slowloris from 127.0.0.1 (new slow connections every 100 ms) while a
/// legitimate client on 127.0.0.2 probes every 100 ms; returns the share of probes served.
fn served_under_sustained_attack(per_source: Option<u32>, secs: u64) -> (f64, Server) {
    let mut vars = vec![
        ("STALLGUARD_FIRST_BYTE", "2s".to_string()),
        ("STALLGUARD_REQUEST", "2-4,minrate=100".to_string()),
        ("STALLGUARD_TICK", "100ms".to_string()),
    ];
    if let Some(n) = per_source {
        vars.push(("STALLGUARD_PER_SOURCE", n.to_string()));
    }
    let srv = start(0, "pool_server", &["--threads", "8"], &vars);
    let addr = srv.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = connect_from([127, 0, 0, 1], addr) {
                    let _ = s.write_all(b"GET / HTTP/1.1\r\n");
                    held.push(s);
                }
                for s in held.iter_mut() {
                    let _ = s.write_all(b"X");
                }
                held.retain(|s| tcp_state(s) == 1);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let end = Instant::now() + Duration::from_secs(secs);
    std::thread::sleep(Duration::from_secs(2)); // let the attack build up
    let (mut served, mut probes) = (0, 0);
    while Instant::now() < end {
        probes += 1;
        if request_from([127, 0, 0, 2], addr, "/", Duration::from_secs(2)).is_ok() {
            served += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    (served as f64 / probes as f64, srv)
}

#[test]
fn per_source_cap_keeps_workers_free_under_a_sustained_attack() {
    let secs = std::env::var("STALLGUARD_SUSTAINED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let (without, _) = served_under_sustained_attack(None, secs);
    let (with_cap, srv) = served_under_sustained_attack(Some(4), secs);
    eprintln!("sustained slowloris for {secs}s: legit served {:.1}% without the cap, {:.1}% with STALLGUARD_PER_SOURCE=4", without * 100.0, with_cap * 100.0);
    assert!(
        without < 0.9,
        "the attack should deny service without the cap ({without})"
    );
    assert!(
        with_cap >= 0.99,
        "with the cap: {with_cap}\n{}",
        srv.log_text()
    );
    let over = srv.events("over_cap");
    assert!(
        !over.is_empty(),
        "rejections must be logged\n{}",
        srv.log_text()
    );
    // Rate-limited: at most about one line a second.
    assert!(
        over.len() as u64 <= secs + 2,
        "{} over_cap lines in {secs}s",
        over.len()
    );
}

#[test]
fn per_source_cap_is_shared_by_all_prefork_children() {
    let srv = start(
        0,
        "prefork_server",
        &["--procs", "6"],
        &with(&[("STALLGUARD_PER_SOURCE", "3".into())]),
    );
    let conns: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(srv.addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = conns.iter().filter(|c| tcp_state(c) == 1).count();
    assert_eq!(
        open, 3,
        "6 children, one shared cap of 3: {open} connections stayed open"
    );
    drop(conns);
    // Places are given back when connections close: a new client is admitted again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        request(srv.addr(), "/", Duration::from_secs(3)).as_deref(),
        Ok("ok\n")
    );
}
