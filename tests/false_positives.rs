//! What must NOT be cut: normal traffic, a slow but steady uploader, a long poll, time spent
//! queued inside an eager-accept server; and monitor mode, which reports but never acts.

use stallguard_testkit::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Every timer at 1 s except the request range, so anything mis-charged shows up quickly.
const TIGHT: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "1s"),
    ("STALLGUARD_REQUEST", "1-6,minrate=100"),
    ("STALLGUARD_IDLE", "1s"),
    ("STALLGUARD_WRITE_STALL", "1s"),
    ("STALLGUARD_TICK", "100ms"),
];

#[test]
fn normal_traffic_is_never_reaped() {
    for server in [
        "pool_server",
        "prefork_server",
        "epoll_server",
        "eager_server",
    ] {
        let srv = Proc::start(server, &[], Some(TIGHT));
        let mut served = 0;
        for i in 0..150 {
            let path = if i % 50 == 0 { "/big" } else { "/" };
            let body = request(srv.addr(), path, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{server}: request {i} failed: {e}"));
            assert!(!body.is_empty());
            served += 1;
        }
        // Keep-alive: several requests on one connection, quickly.
        let mut s = TcpStream::connect(srv.addr()).unwrap();
        for _ in 0..20 {
            write!(s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            assert_eq!(
                read_response(&mut s, Instant::now() + Duration::from_secs(3)).as_deref(),
                Ok("ok\n")
            );
            served += 1;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(served, 170);
        assert_eq!(
            srv.events("reap").len(),
            0,
            "{server}: legit traffic reaped\n{}",
            srv.log_text()
        );
    }
}

#[test]
fn steady_uploader_at_twice_min_rate_outlives_the_base_timeout() {
    // minrate=100 B/s; the client sends 200 B/s for 3 s, three times the 1 s base timeout.
    // It keeps to a schedule (20 B due every 100 ms; a late wake-up sends what is due), so the
    // rate holds on a loaded machine. Its own longest silence is measured: a run in which the
    // client itself stopped for about the idle timer (a loaded CI machine can deschedule it)
    // did not test a steady uploader, and is run again; a cut in any other run fails.
    const ATTEMPTS: usize = 3;
    let idle = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let srv = Proc::start("pool_server", &[], Some(TIGHT));
        let body_len = 600;
        let step = Duration::from_millis(100);
        let mut s = TcpStream::connect(srv.addr()).unwrap();
        let mut last_call = Instant::now();
        write!(
            s,
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {body_len}\r\n\r\n"
        )
        .unwrap();
        let start = Instant::now();
        let mut sent = 0;
        let mut longest = Duration::ZERO;
        let mut cut = None;
        for k in 1..=body_len / 20 {
            let due = start + step * k as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let should = (20 * (start.elapsed().as_millis() / 100) as usize).min(body_len);
            if should <= sent {
                continue;
            }
            let call = Instant::now();
            let r = s.write_all(&vec![b'u'; should - sent]);
            // The server's silence between two of our sends is at most this.
            longest = longest.max(last_call.elapsed());
            last_call = call;
            if let Err(e) = r {
                cut = Some(e);
                break;
            }
            sent = should;
        }
        if longest >= idle.saturating_sub(step) {
            eprintln!(
                "attempt {attempt}: the client itself was silent {longest:?} (idle {idle:?}): \
                 not a steady uploader, run again"
            );
            continue;
        }
        assert!(cut.is_none(), "upload cut: {cut:?}\n{}", srv.log_text());
        let reply = read_response(&mut s, Instant::now() + Duration::from_secs(3));
        assert_eq!(reply.as_deref(), Ok("ok 600\n"), "{}", srv.log_text());
        assert_eq!(srv.events("reap").len(), 0, "{}", srv.log_text());
        return;
    }
    panic!("the client could not keep its pace in {ATTEMPTS} attempts (machine too loaded)");
}

#[test]
fn long_poll_held_longer_than_every_timer_is_not_cut() {
    for server in ["pool_server", "prefork_server", "eager_server"] {
        let srv = Proc::start(server, &["--longpoll", "3000"], Some(TIGHT));
        let started = Instant::now();
        let body = request(srv.addr(), "/longpoll", Duration::from_secs(8));
        assert_eq!(
            body.as_deref(),
            Ok("longpoll done\n"),
            "{server}\n{}",
            srv.log_text()
        );
        assert!(started.elapsed() >= Duration::from_millis(2900));
        assert_eq!(srv.events("reap").len(), 0, "{server}\n{}", srv.log_text());
    }
}

#[test]
fn time_queued_in_an_eager_accept_server_is_not_charged() {
    // One worker, held 3 s by a long poll; a second client connects and sends at once, then
    // waits in the server's user-space queue three times longer than FIRST_BYTE.
    let srv = Proc::start(
        "eager_server",
        &["--workers", "1", "--longpoll", "3000"],
        Some(TIGHT),
    );
    let addr = srv.addr();
    // The holder says at once that it has nothing more to send (half-close), so the worker
    // closes after answering it. Otherwise, on a loaded machine, a holder thread slow to
    // close its keep-alive connection is on its turn (idle) while the second client queues,
    // and pressure may free the worker from it: right, but not what this test is about.
    let holder = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        write!(s, "GET /longpoll HTTP/1.1\r\nHost: t\r\n\r\n").map_err(|e| e.to_string())?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        read_response(&mut s, Instant::now() + Duration::from_secs(8))
    });
    std::thread::sleep(Duration::from_millis(200));
    let queued = request(srv.addr(), "/", Duration::from_secs(8));
    assert_eq!(queued.as_deref(), Ok("ok\n"), "{}", srv.log_text());
    assert_eq!(holder.join().unwrap().as_deref(), Ok("longpoll done\n"));
    assert_eq!(srv.events("reap").len(), 0, "{}", srv.log_text());
}

#[test]
fn monitor_mode_logs_what_it_would_reap_and_touches_nothing() {
    let mut policy = FAST.to_vec();
    policy.push(("STALLGUARD_ACTION", "log"));
    let srv = Proc::start("pool_server", &["--threads", "2"], Some(&policy));
    let attackers = Attackers::launch(srv.addr(), Attack::Silent, 2);
    let would = srv.wait_events("would_reap", 2, Duration::from_secs(4));
    assert_eq!(would.len(), 2, "{}", srv.log_text());
    assert!(would
        .iter()
        .all(|w| w["reason"] == "first_byte" && w["action"] == "log"));
    // Still drained: nothing was shut down.
    assert!(request(srv.addr(), "/", Duration::from_secs(2)).is_err());
    assert_eq!(srv.events("reap").len(), 0);
    // Reported once per connection, not every tick.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(srv.events("would_reap").len(), 2);
    assert_eq!(attackers.stop(), 0, "monitor mode cut a connection");
}

#[test]
fn ipv6_connections_are_guarded() {
    let srv = Proc::start("pool_server", &["--threads", "1", "--ipv6"], Some(FAST));
    let addr: std::net::SocketAddr = format!("[::1]:{}", srv.port).parse().unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    let reaps = srv.wait_events("reap", 1, Duration::from_secs(4));
    assert_eq!(reaps.len(), 1, "{}", srv.log_text());
    assert!(reaps[0]["peer"].starts_with("[::1]:"), "{:?}", reaps[0]);
    assert_eq!(
        read_within(&mut silent, Duration::from_secs(2)).unwrap(),
        0,
        "the silent client sees EOF"
    );
    assert_eq!(
        request(addr, "/", Duration::from_secs(3)).as_deref(),
        Ok("ok\n")
    );
}

#[test]
fn start_line_states_the_effective_policy() {
    let srv = Proc::start("pool_server", &[], Some(FAST));
    request(srv.addr(), "/", Duration::from_secs(3)).unwrap();
    let start = srv.wait_events("start", 1, Duration::from_secs(2));
    assert_eq!(start.len(), 1, "{}", srv.log_text());
    let s = &start[0];
    assert_eq!(s["first_byte"], "1s");
    assert_eq!(s["request"], "2s-4s,minrate=100");
    assert_eq!(s["idle"], "3s");
    assert_eq!(s["write_stall"], "1s,minrate=240");
    assert_eq!(s["pressure"], "off");
    assert_eq!(s["pressure_grace"], "2s");
    assert_eq!(s["action"], "shutdown");
    assert_eq!(s["tick"], "100ms");
    assert_eq!(s["prog"], "stallguard");
}

/// An event loop too busy to read (tests/servers/busy_loop.py): it registered every connection
/// for reading and reads none. A client whose request, or whose FIN, waits unread in the kernel
/// is not the one stalling: it is never reaped, nor logged as reaped. A silent client that stays
/// is (first byte), which shows the loop's connections were judged.
#[test]
fn a_client_whose_bytes_or_close_the_server_has_not_read_is_not_reaped() {
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/servers/busy_loop.py");
    let log = scratch("busy_loop.log");
    let _ = std::fs::remove_file(&log);
    let mut env = guarded_env(&log);
    env.extend(TIGHT.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let srv = Proc::spawn(
        std::path::Path::new(python),
        &[script.to_str().unwrap(), "30"],
        &env,
        true,
        &log,
    );
    let port_of = |s: &TcpStream| s.local_addr().unwrap().port();
    // Sent a complete request, waits for the answer.
    let mut asked = TcpStream::connect(srv.addr()).unwrap();
    asked
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // Closed before saying anything (its FIN is all the server has to read).
    let left = TcpStream::connect(srv.addr()).unwrap();
    let left_port = port_of(&left);
    // Sent its request, then closed.
    let mut asked_and_left = TcpStream::connect(srv.addr()).unwrap();
    asked_and_left
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let asked_and_left_port = port_of(&asked_and_left);
    // Silent, and stays: the client's turn.
    let mut silent = silent_client(srv.addr());
    std::thread::sleep(Duration::from_millis(300)); // accepted and registered
    drop(left);
    drop(asked_and_left);
    assert!(
        wait_cut(&mut silent, Duration::from_secs(10)),
        "the silent client was not cut: the loop's connections were not judged\n{}",
        tail(&srv.log_text(), 20)
    );
    // Three more seconds: every other connection is past each of its 1 s timers.
    std::thread::sleep(Duration::from_secs(3));
    let reaps = srv.events("reap");
    let silent_port = port_of(&silent);
    let ports: Vec<String> = reaps.iter().map(|r| r["peer"].clone()).collect();
    assert_eq!(
        reaps.len(),
        1,
        "only the silent client is reaped (silent :{silent_port}, left :{left_port}, asked and left :{asked_and_left_port}); reaped: {ports:?}\n{}",
        tail(&srv.log_text(), 20)
    );
    assert_eq!(reaps[0]["reason"], "first_byte");
    assert!(reaps[0]["peer"].ends_with(&format!(":{silent_port}")));
    // The client that asked is still connected and was never cut.
    assert!(!peer_closed(&asked), "the client that asked was cut");
}
