//! include/stallguard.h: a program rebuilt against the optional cooperation API runs the same
//! without the library (every call fails with ENOSYS) and, with it, can exempt a connection,
//! give one its own deadline, and read the guard's counters.

use stallguard_testkit::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const TIGHT: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "1s"),
    ("STALLGUARD_IDLE", "1s"),
    ("STALLGUARD_TICK", "100ms"),
];

/// GET /exempt, then the client waits 2 s (its turn, twice the idle timer) before "go".
fn exempt_exchange(srv: &Proc) -> Result<String, String> {
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    write!(s, "GET /exempt HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = s.write_all(b"go");
    read_response(&mut s, Instant::now() + Duration::from_secs(3))
}

#[test]
fn without_the_library_the_api_answers_enosys_and_the_server_works() {
    let srv = Proc::start("coop_server", &[], None);
    assert_eq!(
        request(srv.addr(), "/counters", Duration::from_secs(3)).as_deref(),
        Ok("unavailable ENOSYS\n")
    );
    assert_eq!(exempt_exchange(&srv).as_deref(), Ok("exempt -1 go\n"));
    let started = Instant::now();
    assert_eq!(
        request(srv.addr(), "/deadline", Duration::from_secs(5)).as_deref(),
        Ok("thought\n")
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[test]
fn an_exempt_connection_outlives_every_timer() {
    let srv = Proc::start("coop_server", &[], Some(TIGHT));
    assert_eq!(
        exempt_exchange(&srv).as_deref(),
        Ok("exempt 0 go\n"),
        "{}",
        srv.log_text()
    );
    assert!(srv.events("reap").is_empty(), "{}", srv.log_text());
}

#[test]
fn a_connection_is_cut_at_the_programs_own_deadline() {
    let srv = Proc::start("coop_server", &[], Some(TIGHT));
    let started = Instant::now();
    let r = request(srv.addr(), "/deadline", Duration::from_secs(5));
    assert!(r.is_err(), "answered despite its 1 s deadline: {r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let reaps = srv.wait_events("reap", 1, Duration::from_secs(2));
    assert_eq!(reaps[0]["reason"], "deadline", "{}", srv.log_text());
}

#[test]
fn counters_are_readable_by_the_program() {
    let srv = Proc::start("coop_server", &[], Some(TIGHT));
    let _silent = TcpStream::connect(srv.addr()).unwrap();
    srv.wait_events("reap", 1, Duration::from_secs(3));
    let body = request(srv.addr(), "/counters", Duration::from_secs(3)).unwrap();
    assert!(body.starts_with("tracked="), "{body}");
    assert!(body.contains("reaped=1"), "{body}");
}
