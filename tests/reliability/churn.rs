//! Item 1: fd-reuse churn with checksummed exchanges.
//!
//! `echo_server` (a blocking thread pool, SIGPIPE at its default action) accepts and closes
//! connections as fast as the clients go, ending each one through a different hooked close
//! path, while the guard reaps deliberately stalled clients on 10 ms ticks with 100-200 ms
//! timers. The fd numbers of reaped connections are taken over at once by healthy ones (and by
//! pipes inside the server).
//!
//! Healthy clients (from 127.0.0.1) POST random bodies to /echo and compare every byte that
//! comes back. Attackers come from their own address per kind, so the guard log's `peer` tells
//! which attack a reap was: 127.0.0.2 silent (first_byte), .3 headers without their end
//! (request), .4 a body that stops short (request), .5 asks for /big and never reads
//! (write_stall, the server's write then fails with EPIPE: SIGPIPE would kill it).
//!
//! Fails on: any healthy exchange cut, short, corrupted or late, unless the client itself was
//! provably late (it spent longer than the shortest timer between two of its own reads: a
//! legitimate stall under load, counted and reported, never silently); any reap of a
//! 127.0.0.1 peer not matched by such an excused client; any reap with the wrong reason for its
//! attacker's kind; any attacker not cut; `reap_failed`/`stale` lines; the server dying.

use stallguard_testkit::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const POLICY: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "100ms"),
    ("STALLGUARD_REQUEST", "200ms"),
    // The body stage of HTTP/1 requests (BodyShort) has its own timer (issue 11).
    ("STALLGUARD_BODY", "200ms"),
    ("STALLGUARD_IDLE", "200ms"),
    ("STALLGUARD_WRITE_STALL", "200ms"),
    ("STALLGUARD_TICK", "10ms"),
    ("STALLGUARD_LOG", "debug"),
    // The kernel backstop (TCP_USER_TIMEOUT = write stall) would race the watcher for the
    // never-reading clients and end them without an RST the attacker could see.
    ("STALLGUARD_BACKSTOPS", "off"),
];
/// The shortest timer: a healthy client whose own gap reached this may legitimately be cut.
const SHORTEST_TIMER: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attack {
    Silent,
    HeadersNoEnd,
    BodyShort,
    NeverReads,
}

impl Attack {
    pub const ALL: [Attack; 4] = [
        Attack::Silent,
        Attack::HeadersNoEnd,
        Attack::BodyShort,
        Attack::NeverReads,
    ];
    pub fn source(self) -> [u8; 4] {
        match self {
            Attack::Silent => [127, 0, 0, 2],
            Attack::HeadersNoEnd => [127, 0, 0, 3],
            Attack::BodyShort => [127, 0, 0, 4],
            Attack::NeverReads => [127, 0, 0, 5],
        }
    }
    pub fn reason(self) -> &'static str {
        match self {
            Attack::Silent => "first_byte",
            Attack::HeadersNoEnd | Attack::BodyShort => "request",
            Attack::NeverReads => "write_stall",
        }
    }
    pub fn from_ip(ip: &str) -> Option<Attack> {
        Attack::ALL
            .into_iter()
            .find(|a| ip == format!("127.0.0.{}", a.source()[3]))
    }
}

#[derive(Default, Debug)]
pub struct Counts {
    pub cycles: AtomicU64,
    pub exchanges: AtomicU64,
    pub bytes: AtomicU64,
    /// Healthy exchanges that failed while the client had not been late: wrong cuts.
    pub wrong: AtomicU64,
    /// Healthy exchanges that failed after the client itself stalled past a timer.
    pub excused: AtomicU64,
    pub attacks: AtomicU64,
    pub attacks_cut: AtomicU64,
    pub attacks_not_cut: AtomicU64,
}

/// What went wrong, for the failure message (first few only).
pub type Failures = Arc<Mutex<Vec<String>>>;

pub fn note(failures: &Failures, what: String) {
    let mut f = failures.lock().unwrap();
    if f.len() < 20 {
        f.push(what);
    }
}

/// Picks a body length: mostly small, sometimes a few pages, rarely 64-256 KiB.
fn body_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=49 => rng.below(513) as usize,
        50..=79 => 512 + rng.below(8 * 1024) as usize,
        80..=98 => 8 * 1024 + rng.below(56 * 1024) as usize,
        _ => 64 * 1024 + rng.below(192 * 1024) as usize,
    }
}

/// One healthy connection: 1-3 checksummed exchanges, the last one half-closed.
/// Returns Err((what, client_was_late)).
pub fn healthy_connection(
    addr: SocketAddr,
    rng: &mut Rng,
    counts: &Counts,
    body: &mut Vec<u8>,
    shortest_timer: Duration,
) -> Result<(), (String, bool)> {
    // Client-side time: from a read's return to the next read call (writes included), and the
    // connect. If the longest such span reaches the shortest timer, the client stalled.
    let mut segment_start = Instant::now();
    let mut longest = Duration::ZERO;
    // Time inside read() is the server's, unless this thread sat runnable but unscheduled
    // there (a loaded machine: the data had come, the server's write stalled on our full
    // window): the run-queue wait over the connection bounds that from above.
    let queued_before = runqueue_wait();
    let late = |longest: Duration| {
        let threshold = shortest_timer.saturating_sub(Duration::from_millis(5));
        longest >= threshold || runqueue_wait().saturating_sub(queued_before) >= threshold
    };
    let mut s =
        connect_tcp([127, 0, 0, 1], addr, None).map_err(|e| (format!("connect: {e}"), false))?;
    s.set_nodelay(true).unwrap();
    let n = 1 + rng.below(3);
    let mut inbuf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    for i in 0..n {
        let len = body_len(rng);
        body.resize(len, 0);
        rng.fill(body);
        let mut req =
            format!("POST /echo HTTP/1.1\r\nHost: churn\r\nContent-Length: {len}\r\n\r\n")
                .into_bytes();
        req.extend_from_slice(body);
        if let Err(e) = s.write_all(&req) {
            longest = longest.max(segment_start.elapsed());
            return Err((format!("send {i}/{n} ({len} B): {e}"), late(longest)));
        }
        if i + 1 == n {
            let _ = s.shutdown(Shutdown::Write);
        }
        // Read the response; time spent inside read() is the server's, between reads ours.
        let deadline = Instant::now() + Duration::from_secs(10);
        let want_total;
        loop {
            if let Some(h) = find(&inbuf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&inbuf[..h]).to_string();
                let cl: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| (format!("bad head {head:?}"), late(longest)))?;
                if inbuf.len() >= h + 4 + cl {
                    want_total = (h, cl);
                    break;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err((
                    format!("exchange {i}/{n} ({len} B) timed out"),
                    late(longest),
                ));
            }
            s.set_read_timeout(Some(left)).unwrap();
            longest = longest.max(segment_start.elapsed());
            let r = s.read(&mut chunk);
            segment_start = Instant::now();
            match r {
                Ok(0) => {
                    return Err((
                        format!(
                            "exchange {i}/{n} ({len} B): closed after {} bytes",
                            inbuf.len()
                        ),
                        late(longest),
                    ))
                }
                Ok(k) => inbuf.extend_from_slice(&chunk[..k]),
                // A signal, not the peer: read on.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err((
                        format!(
                            "exchange {i}/{n} ({len} B): {e} after {} bytes",
                            inbuf.len()
                        ),
                        late(longest),
                    ))
                }
            }
        }
        let (h, cl) = want_total;
        let got = &inbuf[h + 4..h + 4 + cl];
        if got != &body[..] {
            // Corruption is never excused.
            return Err((
                format!(
                    "exchange {i}/{n}: echoed {} bytes fnv {:x}, sent {len} fnv {:x}",
                    got.len(),
                    fnv1a(got),
                    fnv1a(body)
                ),
                false,
            ));
        }
        inbuf.drain(..h + 4 + cl);
        counts.exchanges.fetch_add(1, Relaxed);
        counts.bytes.fetch_add(len as u64, Relaxed);
    }
    if !inbuf.is_empty() {
        return Err((
            format!("{} unexpected bytes after the last response", inbuf.len()),
            false,
        ));
    }
    Ok(())
}

/// How long this thread has waited on a run queue, runnable but not running
/// (`/proc/thread-self/schedstat`, second field, ns); zero if unreadable.
fn runqueue_wait() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// One attack; true when the server cut the connection within `within`.
pub fn attack_once(addr: SocketAddr, kind: Attack, within: Duration) -> Option<bool> {
    let rcvbuf = (kind == Attack::NeverReads).then_some(4096);
    let mut s = connect_tcp(kind.source(), addr, rcvbuf).ok()?;
    match kind {
        Attack::Silent => {}
        Attack::HeadersNoEnd => {
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaa")
                .ok()?;
        }
        Attack::BodyShort => {
            s.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 100000\r\n\r\n0123456789")
                .ok()?;
        }
        Attack::NeverReads => {
            s.write_all(b"GET /big HTTP/1.1\r\nHost: slow\r\n\r\n")
                .ok()?;
            // Never read: watch the TCP state until the server resets its side.
            let end = Instant::now() + within;
            while Instant::now() < end {
                if tcp_state(&s) != 1 {
                    return Some(true);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            return Some(false);
        }
    }
    Some(wait_cut(&mut s, within))
}

pub struct ChurnResult {
    pub cycles: u64,
    pub exchanges: u64,
    pub bytes: u64,
    pub wrong: u64,
    pub excused: u64,
    pub attacks: u64,
    pub attacks_cut: u64,
    pub attacks_not_cut: u64,
    pub reaps_by_kind: HashMap<String, usize>,
    pub healthy_reaps: usize,
    pub wrong_reasons: Vec<String>,
    pub bad_events: Vec<String>,
    pub elapsed: Duration,
    pub server_status: Option<std::process::ExitStatus>,
    pub server_stderr: String,
    pub failures: Vec<String>,
}

/// Runs the churn until `target` healthy connections completed or `max` elapsed.
pub fn run(target: u64, max: Duration, healthy_threads: usize) -> ChurnResult {
    run_with(&example("echo_server"), &[], target, max, healthy_threads)
}

/// Like `run`, with another build of echo_server and extra environment (a variable named
/// `LD_PRELOAD` here is put in front of the shim, e.g. a sanitizer runtime).
pub fn run_with(
    server: &std::path::Path,
    extra_env: &[(String, String)],
    target: u64,
    max: Duration,
    healthy_threads: usize,
) -> ChurnResult {
    let log = scratch("churn.guard.log");
    let mut env = guarded_env(&log);
    env.extend(POLICY.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.push(("ECHO_PIPE_EVERY".into(), "4".into()));
    for (k, v) in extra_env {
        if k == "LD_PRELOAD" {
            env[0].1 = format!("{v}:{}", env[0].1);
        } else {
            env.push((k.clone(), v.clone()));
        }
    }
    let mut srv = Proc::spawn(
        server,
        &["0", "--threads", "16", "--big", "4194304"],
        &env,
        true,
        &log,
    );
    let addr = srv.addr();
    let counts = Arc::new(Counts::default());
    let failures: Failures = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + max;

    let mut attackers = Vec::new();
    for kind in Attack::ALL.into_iter().chain(Attack::ALL) {
        let (counts, failures, stop) = (counts.clone(), failures.clone(), stop.clone());
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                counts.attacks.fetch_add(1, Relaxed);
                match attack_once(addr, kind, Duration::from_secs(5)) {
                    Some(true) => {
                        counts.attacks_cut.fetch_add(1, Relaxed);
                    }
                    Some(false) => {
                        counts.attacks_not_cut.fetch_add(1, Relaxed);
                        note(&failures, format!("{kind:?} attacker not cut within 5 s"));
                    }
                    None => {
                        // Could not even connect / send: the server is gone or refusing.
                        counts.attacks.fetch_sub(1, Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }));
    }

    let mut healthy = Vec::new();
    for t in 0..healthy_threads {
        let (counts, failures, stop) = (counts.clone(), failures.clone(), stop.clone());
        healthy.push(std::thread::spawn(move || {
            let mut rng = Rng::new(0x5eed + t as u64);
            let mut body = Vec::new();
            while !stop.load(Relaxed)
                && counts.cycles.load(Relaxed) < target
                && Instant::now() < deadline
            {
                match healthy_connection(addr, &mut rng, &counts, &mut body, SHORTEST_TIMER) {
                    Ok(()) => {}
                    Err((what, true)) => {
                        counts.excused.fetch_add(1, Relaxed);
                        note(&failures, format!("(excused: client late) {what}"));
                    }
                    Err((what, false)) => {
                        counts.wrong.fetch_add(1, Relaxed);
                        note(&failures, format!("WRONG CUT: {what}"));
                        if what.starts_with("connect") {
                            stop.store(true, Relaxed); // the server is gone: stop early
                        }
                    }
                }
                counts.cycles.fetch_add(1, Relaxed);
            }
        }));
    }
    for h in healthy {
        h.join().expect("healthy client thread panicked");
    }
    let elapsed = start.elapsed();
    stop.store(true, Relaxed);
    for a in attackers {
        a.join().expect("attacker thread panicked");
    }
    // Let the last reap lines land.
    std::thread::sleep(Duration::from_millis(300));
    let server_status = srv.exited();
    let text = srv.log_text();
    let mut reaps_by_kind: HashMap<String, usize> = HashMap::new();
    let mut healthy_reaps = 0;
    let mut wrong_reasons = Vec::new();
    for r in events_in(&text, "reap") {
        let peer = r.get("peer").cloned().unwrap_or_default();
        let ip = peer.rsplit_once(':').map(|(ip, _)| ip).unwrap_or("");
        match Attack::from_ip(ip) {
            Some(kind) => {
                *reaps_by_kind.entry(format!("{kind:?}")).or_default() += 1;
                if r.get("reason").map(String::as_str) != Some(kind.reason()) {
                    wrong_reasons.push(format!("{kind:?} reaped as {:?}", r.get("reason")));
                }
            }
            None => {
                healthy_reaps += 1;
                if wrong_reasons.len() < 20 {
                    wrong_reasons.push(format!("healthy peer reaped: {r:?}"));
                }
            }
        }
    }
    let bad_events = text
        .lines()
        .filter(|l| {
            l.contains("event=reap_failed")
                || l.contains("event=stale")
                || l.contains("event=watcher_failed")
                || l.contains("level=error")
        })
        .take(20)
        .map(str::to_string)
        .collect();
    let server_stderr = srv.stderr_text();
    let failures = failures.lock().unwrap().clone();
    let c = &counts;
    ChurnResult {
        cycles: c.cycles.load(Relaxed),
        exchanges: c.exchanges.load(Relaxed),
        bytes: c.bytes.load(Relaxed),
        wrong: c.wrong.load(Relaxed),
        excused: c.excused.load(Relaxed),
        attacks: c.attacks.load(Relaxed),
        attacks_cut: c.attacks_cut.load(Relaxed),
        attacks_not_cut: c.attacks_not_cut.load(Relaxed),
        reaps_by_kind,
        healthy_reaps,
        wrong_reasons,
        bad_events,
        elapsed,
        server_status,
        server_stderr,
        failures,
    }
}

pub fn check(r: &ChurnResult, min_cycles: u64, min_reaps_per_kind: usize) {
    eprintln!(
        "churn: {} healthy connections ({} checksummed exchanges, {:.1} MB echoed) in {:.1} s = {:.0}/s; \
         wrong cuts {}, excused (client late) {}; attacks {} cut {} not cut {}; reaps by kind {:?}; \
         healthy peers in reap lines {}",
        r.cycles,
        r.exchanges,
        r.bytes as f64 / 1e6,
        r.elapsed.as_secs_f64(),
        r.cycles as f64 / r.elapsed.as_secs_f64(),
        r.wrong,
        r.excused,
        r.attacks,
        r.attacks_cut,
        r.attacks_not_cut,
        r.reaps_by_kind,
        r.healthy_reaps
    );
    assert_run_clean(
        r.server_status,
        &r.server_stderr,
        &r.failures,
        r.wrong,
        "healthy connections were cut or corrupted",
    );
    assert!(
        r.healthy_reaps as u64 <= r.excused,
        "reap lines name healthy peers beyond the excused late clients: {:?}",
        r.wrong_reasons
    );
    assert!(
        r.wrong_reasons
            .iter()
            .all(|w| w.starts_with("healthy peer")),
        "reaps with the wrong reason: {:?}",
        r.wrong_reasons
    );
    assert!(r.bad_events.is_empty(), "guard log: {:#?}", r.bad_events);
    assert_eq!(r.attacks_not_cut, 0, "stalled clients were not reaped");
    // Excused failures are legitimate stalls of our own client under load; many of them would
    // mean the run did not test what it claims.
    assert!(
        r.excused * 1000 <= r.cycles.max(1),
        "too many late clients ({}) for a meaningful run",
        r.excused
    );
    assert!(
        r.cycles >= min_cycles,
        "only {} healthy connections ran (wanted {min_cycles})",
        r.cycles
    );
    for kind in Attack::ALL {
        let n = r
            .reaps_by_kind
            .get(&format!("{kind:?}"))
            .copied()
            .unwrap_or(0);
        assert!(
            n >= min_reaps_per_kind,
            "too few {kind:?} reaps to exercise reuse: {n}"
        );
    }
}
