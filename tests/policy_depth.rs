//! Policy beyond the four timers: per-port rules, exempt peers, a lifetime cap, RST as the
//! action, and the per-source cap that keeps workers free under a sustained attack.

use stallguard_testkit::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn with(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> =
        FAST.iter().map(|(k, v)| (*k, v.to_string())).collect();
    v.extend(extra.iter().cloned());
    v
}

fn start(port: u16, server: &str, args: &[&str], vars: &[(&'static str, String)]) -> Proc {
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Proc::start_on(port, server, args, Some(&refs))
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

/// pool_server under the FAST policy and one more variable.
fn pool_with(var: &'static str, value: String) -> Proc {
    start(0, "pool_server", &[], &with(&[(var, value)]))
}

/// pool_server on a free port whose STALLGUARD_PORTS rule `rule(port)` gives.
fn pool_with_port_rule(rule: impl Fn(u16) -> String) -> (u16, Proc) {
    let port = free_port();
    let srv = start(
        port,
        "pool_server",
        &[],
        &with(&[("STALLGUARD_PORTS", rule(port))]),
    );
    (port, srv)
}

#[test]
fn a_port_can_be_left_alone_or_given_its_own_timers() {
    let (_, srv) = pool_with_port_rule(|port| format!("{port}:off"));
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    assert_eq!(
        silent_cut_after(&mut c, Duration::from_millis(2500)),
        None,
        "{}",
        srv.log_text()
    );
    drop(srv);

    let (port, srv) = pool_with_port_rule(|port| format!("{port}:first_byte=2500ms"));
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
    let srv = pool_with("STALLGUARD_EXEMPT", "127.0.0.2/32".into());
    let mut trusted = connect_tcp([127, 0, 0, 2], srv.addr(), None).unwrap();
    let mut other = connect_tcp([127, 0, 0, 3], srv.addr(), None).unwrap();
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
    let srv = pool_with("STALLGUARD_LIFETIME", "2s".into());
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
        let srv = pool_with("STALLGUARD_ACTION", action.into());
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
fn served_under_sustained_attack(per_source: Option<u32>, secs: u64) -> (f64, Proc) {
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
    let attacker = Slowloris::start(addr, b"GET / HTTP/1.1\r\n", b"X");
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
    attacker.stop();
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

/// Issue 14 item 4: a fork-per-connection server's parent closes its copy right after fork,
/// which used to give the connection's place back while the child still served it: the cap
/// did not cap. Under a sustained slowloris from 127.0.0.1 (timers far away, so only the cap
/// can hold it back), forking_server never serves more than the cap of the attacker's
/// connections at once, 127.0.0.2 keeps being served, and once the attacker leaves (the
/// children `_exit`, which no hook sees) its address is admitted again.
#[test]
fn per_source_cap_holds_for_a_fork_per_connection_server() {
    const CAP: usize = 3;
    let vars: Vec<(&'static str, String)> = vec![
        ("STALLGUARD_FIRST_BYTE", "60s".into()),
        ("STALLGUARD_REQUEST", "60-120,minrate=1".into()),
        ("STALLGUARD_IDLE", "60s".into()),
        ("STALLGUARD_TICK", "100ms".into()),
        ("STALLGUARD_PER_SOURCE", CAP.to_string()),
    ];
    let srv = start(0, "forking_server", &["--max", "64"], &vars);
    let addr = srv.addr();
    let attacker = Slowloris::start(addr, b"GET / HTTP/1.1\r\n", b"X");
    let end = Instant::now() + Duration::from_secs(6);
    let (mut most, mut served, mut probes) = (0, 0, 0);
    while Instant::now() < end {
        probes += 1;
        if request_from([127, 0, 0, 2], addr, "/", Duration::from_secs(2)).is_ok() {
            served += 1;
        }
        // One child per connection being served (not the probes' zombies, which the server
        // waits for only when it next returns from accept).
        let serving = children_of(srv.pid()).into_iter().filter(|c| pid_alive(*c));
        most = most.max(serving.count());
        std::thread::sleep(Duration::from_millis(200));
    }
    attacker.stop();
    assert!(
        most <= CAP + 1,
        "{most} children at once with STALLGUARD_PER_SOURCE={CAP}\n{}",
        srv.log_text()
    );
    assert_eq!(served, probes, "{}", srv.log_text());
    assert!(!srv.events("over_cap").is_empty(), "{}", srv.log_text());
    // The attacker's children end with _exit (no hook runs): the liveness sweep frees their
    // places, and 127.0.0.1 is served again.
    let again = Instant::now() + Duration::from_secs(5);
    while request_from([127, 0, 0, 1], addr, "/", Duration::from_secs(2)).is_err() {
        assert!(
            Instant::now() < again,
            "127.0.0.1 still refused after the attack\n{}",
            srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------ kernel backstops

/// The server's sockets, duplicated into this process with pidfd_getfd (same user), as
/// (is_listener, fd).
fn server_sockets(pid: u32) -> Vec<(bool, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let pidfd =
        unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as libc::c_int;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let n: libc::c_int = entry.file_name().to_string_lossy().parse().unwrap();
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, n, 0) } as libc::c_int;
        if fd >= 0 {
            let listener = sockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == 1;
            out.push((listener, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }));
        }
    }
    unsafe { libc::close(pidfd) };
    out
}

fn sockopt(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    getsockopt(fd, level, name).unwrap_or(0)
}

fn timeo_ms(fd: libc::c_int, name: libc::c_int) -> i64 {
    getsockopt::<libc::timeval>(fd, libc::SOL_SOCKET, name)
        .map_or(0, |tv| tv.tv_sec * 1000 + tv.tv_usec / 1000)
}

/// (TCP_USER_TIMEOUT, SO_KEEPALIVE, SO_RCVTIMEO ms, SO_SNDTIMEO ms).
type Options = (i32, i32, i64, i64);

/// The options of the server's accepted connection, and of its listener.
fn options_of(vars: &[(&'static str, String)]) -> (Options, Options) {
    use std::os::fd::AsRawFd;
    let srv = start(0, "pool_server", &["--threads", "1"], vars);
    let _conn = TcpStream::connect(srv.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let socks = server_sockets(srv.child.id());
    let read = |fd: libc::c_int| {
        (
            sockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
            sockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            timeo_ms(fd, libc::SO_RCVTIMEO),
            timeo_ms(fd, libc::SO_SNDTIMEO),
        )
    };
    let conn = socks
        .iter()
        .find(|(l, _)| !l)
        .expect("accepted socket")
        .1
        .as_raw_fd();
    let listener = socks
        .iter()
        .find(|(l, _)| *l)
        .expect("listener")
        .1
        .as_raw_fd();
    (read(conn), read(listener))
}

#[test]
fn kernel_backstops_are_set_on_connections_and_never_on_listeners() {
    let (conn, listener) = options_of(&with(&[]));
    assert_eq!(
        conn,
        (2000, 1, 0, 0),
        "TCP_USER_TIMEOUT = 2 x WRITE_STALL, keepalive on, no socket timeouts"
    );
    assert_eq!(listener, (0, 0, 0, 0), "the listener is never touched");

    let (conn, _) = options_of(&with(&[("STALLGUARD_BACKSTOPS", "off".into())]));
    assert_eq!(conn, (0, 0, 0, 0));

    let (conn, listener) = options_of(&with(&[("STALLGUARD_SOCKET_TIMEOUTS", "on".into())]));
    assert_eq!(
        conn,
        (2000, 1, 3000, 1000),
        "SO_RCVTIMEO = max(IDLE, FIRST_BYTE), SO_SNDTIMEO = WRITE_STALL"
    );
    assert_eq!(listener, (0, 0, 0, 0));
}

#[test]
fn defer_accept_keeps_silent_connects_away_from_the_workers() {
    let port = free_port();
    let vars = with(&[
        ("STALLGUARD_DEFER_ACCEPT", port.to_string()),
        ("STALLGUARD_FIRST_BYTE", "8s".into()),
    ]);
    let srv = start(port, "pool_server", &["--threads", "1"], &vars);
    let _silent = TcpStream::connect(srv.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The single worker is not parked on the silent client: a real request is served at once.
    let started = Instant::now();
    assert_eq!(
        request(srv.addr(), "/", Duration::from_secs(3)).as_deref(),
        Ok("ok\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(3), // without it: parked until FIRST_BYTE (8 s)
        "{:?}",
        started.elapsed()
    );
    let listener = server_sockets(srv.child.id())
        .into_iter()
        .find(|(l, _)| *l)
        .expect("the server's listening socket")
        .1;
    use std::os::fd::AsRawFd;
    assert!(
        sockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT
        ) > 0
    );
}

#[test]
fn unix_stream_connections_are_guarded_only_when_asked() {
    use std::os::unix::net::UnixStream;
    for (unix, expect_cut) in [("on", true), ("off", false)] {
        let path = scratch("unix.sock");
        let path_s = path.to_string_lossy().to_string();
        let srv = start(
            0,
            "pool_server",
            &["--unix", &path_s],
            &with(&[("STALLGUARD_UNIX", unix.into())]),
        );
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(2500)))
            .unwrap();
        let cut = matches!(c.read(&mut [0u8; 8]), Ok(0));
        assert_eq!(
            cut,
            expect_cut,
            "STALLGUARD_UNIX={unix}\n{}",
            srv.log_text()
        );
        if expect_cut {
            assert_eq!(srv.events("reap")[0]["peer"], "unix");
        }
    }
}

// ------------------------------------------------------------------ outbound guard

fn run_client(port: u16, outbound: Option<&str>, within: Duration) -> Option<(String, Duration)> {
    let mut cmd = std::process::Command::new(example("outbound_client"));
    cmd.arg(port.to_string())
        .stdout(std::process::Stdio::piped());
    if let Some(o) = outbound {
        cmd.env("LD_PRELOAD", shim())
            .env("STALLGUARD_OUTBOUND", o)
            .env("STALLGUARD_LOG_FILE", scratch("outbound.log"));
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    while started.elapsed() < within {
        if child.try_wait().unwrap().is_some() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return Some((out, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn outbound_guard_releases_a_client_stuck_on_a_silent_upstream() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        let held: Vec<TcpStream> = upstream.incoming().take(2).flatten().collect();
        std::thread::sleep(Duration::from_secs(4));
        drop(held);
    });
    assert!(
        run_client(port, None, Duration::from_millis(2500)).is_none(),
        "hangs without the guard"
    );
    let (out, took) =
        run_client(port, Some("connect=2s,idle=1s"), Duration::from_secs(4)).expect("released");
    assert_eq!(out, "connect: ok\nread: eof after 0 bytes\n");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    holder.join().unwrap();
}

#[test]
fn outbound_guard_aborts_a_connect_that_never_completes() {
    // A listener with a full backlog: the kernel drops new SYNs, so connect() hangs.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    unsafe {
        libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), len);
        libc::listen(fd, 0);
    }
    let mut bound: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut blen = len;
    unsafe { libc::getsockname(fd, (&mut bound as *mut libc::sockaddr_in).cast(), &mut blen) };
    let port = u16::from_be(bound.sin_port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _fill: Vec<_> = (0..3)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();

    let (out, took) =
        run_client(port, Some("connect=1s"), Duration::from_secs(4)).expect("connect aborted");
    assert!(
        out.starts_with("connect: ") && !out.starts_with("connect: ok"),
        "{out}"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    unsafe { libc::close(fd) };
}
