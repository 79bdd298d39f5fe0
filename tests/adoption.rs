//! inetd-style services: the test plays inetd (accepts, hands the connection over as fds
//! 0/1/2) and `stdio_service` does all its I/O through stdio, which no hook sees. The shim
//! adopts the socket at start and judges it by the kernel's counters.

use stallguard_testkit::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Connects a client, accepts it, and starts the service on the accepted socket as inetd does.
fn inetd(args: &[&str], extra: &[(&str, &str)]) -> (TcpStream, Proc) {
    inetd_with_log(args, extra, true)
}

fn inetd_with_log(args: &[&str], extra: &[(&str, &str)], log_file: bool) -> (TcpStream, Proc) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let fd = OwnedFd::from(conn);
    let log = scratch("adopt.log");
    let mut cmd = Command::new(example("stdio_service"));
    cmd.args(args)
        .stdin(Stdio::from(fd.try_clone().unwrap()))
        .stdout(Stdio::from(fd.try_clone().unwrap()))
        .stderr(Stdio::from(fd));
    guard(&mut cmd, &log, FAST).envs(extra.iter().copied());
    if !log_file {
        cmd.env_remove("STALLGUARD_LOG_FILE");
    }
    (client, Proc::launch("stdio_service", cmd, log, false))
}

fn assert_clean_exit(st: Option<ExitStatus>, svc: &Proc) {
    use std::os::unix::process::ExitStatusExt;
    let st = st.unwrap_or_else(|| panic!("the service is still running\n{}", svc.log_text()));
    assert_eq!(
        st.signal(),
        None,
        "the service died of a signal (SIGPIPE?): {st:?}"
    );
}

/// The service ended on its own with status 0 and the guard reaped nothing.
fn assert_served_without_reaps(svc: &mut Proc) {
    assert_eq!(
        svc.wait_exit(Duration::from_secs(3)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(svc.events("reap").is_empty(), "{}", svc.log_text());
}

#[test]
fn silent_client_of_an_inetd_service_is_reaped_by_kernel_counters() {
    // From before the service starts: its guard's timer starts at its first sample, which
    // a loaded test thread may take after (the watcher acts at the deadline, not on a tick).
    let started = Instant::now();
    let (mut client, mut svc) = inetd(&[], &[]);
    assert_eq!(
        read_within(&mut client, Duration::from_secs(5)).unwrap(),
        0,
        "expected the guard's EOF"
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_clean_exit(svc.wait_exit(Duration::from_secs(3)), &svc);
    let reaps = svc.events("reap");
    assert_eq!(reaps.len(), 1, "{}", svc.log_text());
    assert_eq!(reaps[0]["reason"], "first_byte");
    assert_eq!(reaps[0]["view"], "kernel");
    assert_eq!(reaps[0]["fd"], "0");
}

#[test]
fn slowloris_through_stdio_is_reaped_by_the_request_deadline() {
    let (mut client, mut svc) = inetd(&[], &[]);
    client.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    let started = Instant::now();
    let mut cut = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        if client.write_all(b"X-a: b\r\n").is_err() {
            cut = true;
            break;
        }
    }
    assert!(
        cut || svc.wait_exit(Duration::from_secs(1)).is_some(),
        "{}",
        svc.log_text()
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_clean_exit(svc.wait_exit(Duration::from_secs(3)), &svc);
    let reaps = svc.events("reap");
    assert_eq!(reaps.len(), 1, "{}", svc.log_text());
    assert_eq!(reaps[0]["reason"], "request", "{:?}", reaps[0]);
}

#[test]
fn client_that_never_reads_is_a_write_stall_and_the_service_ends() {
    use std::os::unix::process::ExitStatusExt;
    let (mut client, mut svc) = inetd(&["--big", "33554432"], &[]);
    client.write_all(b"GET /big HTTP/1.0\r\n\r\n").unwrap();
    // Its stdio writes cannot get MSG_NOSIGNAL: the one-connection service ends exactly as when
    // its client goes away (SIGPIPE at its default action, or an exit if it handles EPIPE).
    // What must not happen is a service left running after its connection was reaped.
    let st = svc
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("still running\n{}", svc.log_text()));
    assert!(st.signal().is_none_or(|s| s == libc::SIGPIPE), "{st:?}");
    let reaps = svc.events("reap");
    assert_eq!(reaps.len(), 1, "{}", svc.log_text());
    assert_eq!(reaps[0]["reason"], "write_stall", "{:?}", reaps[0]);
}

#[test]
fn slow_but_steady_download_through_stdio_is_not_cut() {
    // 4 MiB at ~800 kB/s: about 5 s, five times the 1 s write-stall timer.
    let (mut client, mut svc) = inetd(&[], &[]);
    client.write_all(b"GET /big HTTP/1.0\r\n\r\n").unwrap();
    let mut got = 0usize;
    let mut buf = [0u8; 16384];
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("download cut after {got} bytes: {e}\n{}", svc.log_text()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(got > 4 << 20, "short download: {got}\n{}", svc.log_text());
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the download was not slow"
    );
    assert_served_without_reaps(&mut svc);
}

#[test]
fn adoption_can_be_turned_off() {
    let (mut client, mut svc) = inetd(&[], &[("STALLGUARD_ADOPT", "off")]);
    assert!(
        read_within(&mut client, Duration::from_millis(2500)).is_err(),
        "cut although adoption is off"
    );
    assert!(svc.wait_exit(Duration::from_millis(10)).is_none());
    assert!(svc.events("reap").is_empty());
}

#[test]
fn a_normal_request_is_served_with_zero_reaps() {
    let (mut client, mut svc) = inetd(&[], &[]);
    client
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let reply = read_response(&mut client, Instant::now() + Duration::from_secs(3));
    assert_eq!(reply.as_deref(), Ok("ok\n"));
    assert_served_without_reaps(&mut svc);
}

/// stderr is the client's socket here: the guard must not write its log lines into it.
#[test]
fn log_lines_never_go_into_the_clients_socket() {
    let (mut client, mut svc) = inetd_with_log(&[], &[], false);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = Vec::new();
    client.read_to_end(&mut received).unwrap();
    assert!(
        received.is_empty(),
        "the client received {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_clean_exit(svc.wait_exit(Duration::from_secs(3)), &svc);
}
