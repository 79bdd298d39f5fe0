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

/// The live-view segment of `pid`, mapped read-write (the mailbox is in it).
fn map_segment(pid: u32) -> &'static stallguard_shm::Header {
    let path = std::ffi::CString::new(stallguard_shm::path_for(pid)).unwrap();
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0, "no segment for {pid}");
    // SAFETY: a shared mapping of the whole segment (its size is fixed by the layout); the
    // mapping outlives the fd, and is left mapped for the rest of the test process.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            stallguard_shm::SEGMENT_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the segment starts with its Header, page-aligned, shared atomics only.
    unsafe { &*p.cast::<stallguard_shm::Header>() }
}

/// Issue 15: a REQUEST_STUCK in the mailbox (posted as an older `stallguard reap --stuck` did)
/// spares a connection the program exempted, as the command's own definition of stuck does:
/// of two connections stuck on the client's turn for over 10 s, only the other one is cut.
#[test]
fn a_stuck_request_spares_the_connections_the_program_exempted() {
    let vars = [
        ("STALLGUARD_FIRST_BYTE", "60s"),
        ("STALLGUARD_IDLE", "60s"),
        // The poll of /exempt is the client's turn by its calls (the lens would call a
        // complete request the server's turn, and spare it for that reason alone).
        ("STALLGUARD_LENS", "off"),
        ("STALLGUARD_TICK", "100ms"),
    ];
    let srv = Proc::start("coop_server", &[], Some(&vars));
    let mut exempt = TcpStream::connect(srv.addr()).unwrap();
    write!(exempt, "GET /exempt?ms=30000 HTTP/1.1\r\n\r\n").unwrap();
    let mut silent = TcpStream::connect(srv.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(11_000));
    let h = map_segment(srv.pid());
    let ticket = h
        .mailbox
        .post(
            stallguard_shm::REQUEST_STUCK,
            -1,
            stallguard_shm::monotonic_ms(),
        )
        .expect("posted");
    let end = Instant::now() + Duration::from_secs(3);
    let answer = loop {
        match h.mailbox.answer_of(ticket) {
            stallguard_shm::Answer::Pending if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20))
            }
            a => break a,
        }
    };
    assert_eq!(
        answer,
        stallguard_shm::Answer::Reaped(1),
        "{}",
        srv.log_text()
    );
    assert!(wait_cut(&mut silent, Duration::from_secs(2)));
    let reaps = srv.wait_events("reap", 1, Duration::from_secs(2));
    assert_eq!(reaps.len(), 1, "{}", srv.log_text());
    assert_eq!(reaps[0]["reason"], "manual");
    assert_eq!(
        reaps[0]["peer"],
        silent.local_addr().unwrap().to_string(),
        "{}",
        srv.log_text()
    );
    // The exempt one is still served.
    exempt.write_all(b"go").unwrap();
    assert_eq!(
        read_response(&mut exempt, Instant::now() + Duration::from_secs(3)).as_deref(),
        Ok("exempt 0 go\n")
    );
}
