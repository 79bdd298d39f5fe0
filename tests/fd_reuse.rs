//! fd numbers are reused at once: while the watcher reaps stalled connections every few
//! hundred milliseconds, thousands of short healthy connections take over the same numbers.
//! Not one of them may be cut, and every reap must be of a stalled connection.
//!
//! Under load (CI runs the integration tests in parallel on 2 cores) a client thread can
//! itself sit unscheduled past these short timers: between its connect and its request, or
//! between its request and its close. The server then really sees a silent client, and the
//! policy says to cut it. So each healthy client keeps its own timeline, and each reap line is
//! matched to the connection it names (peer port and time): a reap of a healthy connection is
//! accepted only for a silence that client measured at least as long as the timer the reap
//! names (its measure is an upper bound of the silence the server saw), or after the client
//! had closed (nothing left to cut). Anything else fails, as does any other healthy request
//! that is not answered in full.

use stallguard_testkit::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FIRST_BYTE_MS: u64 = 200;
const IDLE_MS: u64 = 300;
/// The run lasts at least this (dozens of reap rounds)…
const AT_LEAST: Duration = Duration::from_secs(6);
/// …and goes on, up to this, until it has served `MIN_SERVED` healthy requests and seen
/// `MIN_REAPS` reaps (a loaded machine runs fewer in 6 s; the meaning is the same).
const AT_MOST: Duration = Duration::from_secs(60);
const MIN_SERVED: usize = 2000;
const MIN_REAPS: usize = 20;
/// Log timestamps have millisecond resolution; the two clocks are read at different moments.
const CLOCK_SLACK_MS: i64 = 5;

/// Connections by local port (ports are reused: several each).
type ByPort<T> = Arc<Mutex<HashMap<u16, Vec<T>>>>;

/// One healthy connection, in ms since the test's start: connect begun, request write begun
/// and returned, and closed (or found cut). The server's first-byte silence is at most
/// `sent - connect`; its silence after its answer (which follows the request) at most
/// `end - writing`.
#[derive(Clone, Copy, Debug)]
struct Healthy {
    connect: i64,
    writing: i64,
    sent: i64,
    end: i64,
}

impl Healthy {
    /// Whether the client itself was silent at least as long as the timer the reap `r` names.
    /// (Its longest silence, before or after its request: a reap that races the request's
    /// arrival can name the idle timer for a client silent since its connect.)
    fn silent_for(&self, r: &Event) -> bool {
        let before_request = self.sent - self.connect;
        let after_request = self.end - self.writing;
        let silence = before_request.max(after_request) + CLOCK_SLACK_MS;
        match r["reason"].as_str() {
            "first_byte" => silence >= FIRST_BYTE_MS as i64,
            "idle" | "request" => silence >= IDLE_MS as i64,
            _ => false,
        }
    }
}

/// Milliseconds since the epoch of a log line's `ts=2026-12-01T15:35:22.138Z`, as an offset
/// from `start` (the wall time of the test's start, ms since the epoch).
fn offset_of(ts: &str, start: i64) -> i64 {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').expect("ts");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days since the epoch (civil calendar, Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let at = ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms.parse::<i64>().unwrap();
    at - start
}

#[test]
fn churn_never_cuts_a_healthy_connection() {
    let fb = format!("{FIRST_BYTE_MS}ms");
    let idle = format!("{IDLE_MS}ms");
    let policy = [
        ("STALLGUARD_FIRST_BYTE", fb.as_str()),
        ("STALLGUARD_REQUEST", "300ms"),
        ("STALLGUARD_IDLE", idle.as_str()),
        ("STALLGUARD_WRITE_STALL", "300ms"),
        ("STALLGUARD_TICK", "10ms"),
    ];
    let srv = Proc::start("pool_server", &["--threads", "12"], Some(&policy));
    let addr = srv.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let stalled_cut = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    // Every healthy connection, by local port (ports are reused: several each).
    let healthy_conns: ByPort<Healthy> = Arc::default();
    let start = Instant::now();
    let start_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Every stalled connection's (connect begun, cut seen), by local port: a port freed by a
    // cut is often taken by a healthy client within the millisecond the reap is logged in.
    let stalled_conns: ByPort<(i64, i64)> = Arc::default();
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let (stop, stalled_cut, stalled_conns) =
            (stop.clone(), stalled_cut.clone(), stalled_conns.clone());
        attackers.push(std::thread::spawn(move || {
            let since = |at: Instant| (at - start).as_millis() as i64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let Ok(mut s) = TcpStream::connect(addr) else {
                    continue;
                };
                let port = s.local_addr().unwrap().port();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // Silent until the guard cuts us.
                if let Ok(0) = std::io::Read::read(&mut s, &mut [0u8; 8]) {
                    stalled_cut.fetch_add(1, Ordering::Relaxed);
                }
                let life = (since(t0), since(Instant::now()));
                stalled_conns
                    .lock()
                    .unwrap()
                    .entry(port)
                    .or_default()
                    .push(life);
            }
        }));
    }
    let mut healthy = Vec::new();
    for t in 0..4 {
        let (stop, served, healthy_conns) = (stop.clone(), served.clone(), healthy_conns.clone());
        healthy.push(std::thread::spawn(move || {
            let since = |at: Instant| (at - start).as_millis() as i64;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = format!("{t}-{i}-{}", "x".repeat(i % 97));
                let request = format!(
                    "POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let t0 = Instant::now();
                let mut s = TcpStream::connect(addr).expect("connect");
                let port = s.local_addr().unwrap().port();
                let writing = Instant::now();
                s.write_all(request.as_bytes()).unwrap();
                let sent = Instant::now();
                let reply = read_response(&mut s, Instant::now() + Duration::from_secs(5));
                drop(s);
                let conn = Healthy {
                    connect: since(t0),
                    writing: since(writing),
                    sent: since(sent),
                    end: since(Instant::now()),
                };
                healthy_conns
                    .lock()
                    .unwrap()
                    .entry(port)
                    .or_default()
                    .push(conn);
                let own_silence = conn.sent - conn.connect >= FIRST_BYTE_MS as i64
                    || conn.end - conn.writing >= IDLE_MS as i64;
                if reply.is_err() && own_silence {
                    continue; // silent past a timer itself: the reap is checked below
                }
                assert_eq!(
                    reply,
                    Ok(format!("ok {}\n", body.len())),
                    "healthy request {t}/{i} (port {port}, {conn:?}) was cut or corrupted"
                );
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let elapsed = start.elapsed();
        let enough =
            served.load(Ordering::Relaxed) >= MIN_SERVED && srv.events("reap").len() >= MIN_REAPS;
        if elapsed > AT_MOST || (elapsed > AT_LEAST && enough) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in healthy {
        h.join().expect("a healthy connection failed");
    }
    for a in attackers {
        a.join().unwrap();
    }
    let served = served.load(Ordering::Relaxed);
    let reaps = srv.events("reap");
    let healthy_conns = healthy_conns.lock().unwrap();
    let stalled_conns = stalled_conns.lock().unwrap();
    let mut stalled_reaps = 0;
    let mut own_silences = 0;
    for r in &reaps {
        let port: u16 = r["peer"].rsplit(':').next().unwrap().parse().unwrap();
        let at = offset_of(&r["ts"], start_wall);
        let attacker = r["reason"] == "first_byte" && r["bytes_in"] == "0";
        let stalled_then = stalled_conns.get(&port).is_some_and(|lives| {
            lives
                .iter()
                .any(|&(from, to)| from <= at + CLOCK_SLACK_MS && at <= to + CLOCK_SLACK_MS)
        });
        if attacker && stalled_then {
            stalled_reaps += 1;
            continue;
        }
        // The healthy connection on that port at that time, if it was one.
        let conn = healthy_conns.get(&port).and_then(|conns| {
            conns
                .iter()
                .filter(|c| c.connect <= at + CLOCK_SLACK_MS)
                .max_by_key(|c| c.connect)
        });
        match conn {
            // Reaped while its client was still there: only for the client's own silence.
            Some(c) if at <= c.end + CLOCK_SLACK_MS => {
                assert!(
                    c.silent_for(r),
                    "a healthy connection was reaped at {at} ms: {r:?}; its client: {c:?}"
                );
                own_silences += 1;
            }
            // After its client closed (the server had not read the EOF yet): nothing was cut.
            Some(c) if !attacker && r["bytes_in"] != "0" => {
                assert_eq!(r["reason"], "idle", "{r:?}; its client: {c:?}");
                own_silences += 1;
            }
            _ => panic!("a connection neither stalled nor healthy was reaped: {r:?}"),
        }
    }
    eprintln!(
        "served {served} healthy requests in {:?}; {stalled_reaps} stalled connections reaped; \
         {own_silences} healthy clients reaped after silences of their own past a timer",
        start.elapsed(),
    );
    assert!(
        served >= MIN_SERVED,
        "too few healthy requests ran: {served}"
    );
    assert!(
        stalled_reaps >= MIN_REAPS,
        "too few reaps of the stalled connections to exercise reuse: {stalled_reaps}"
    );
}
