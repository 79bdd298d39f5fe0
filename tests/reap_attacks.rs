//! The seed's four stalls against every pool-style example server: unguarded, a legitimate
//! request is not served while the pool is full; guarded, the stalled connections are reaped
//! within their timer plus a tick, with the right reason, the server survives (SIGPIPE left at
//! its default) and the legitimate request is served.

use stallguard_testkit::*;
use std::time::{Duration, Instant};

const POOL: usize = 2;

fn server_args(server: &str) -> Vec<&'static str> {
    match server {
        "pool_server" => vec!["--threads", "2"],
        "prefork_server" => vec!["--procs", "2"],
        "eager_server" => vec!["--workers", "2"],
        "forking_server" => vec!["--max", "2"],
        _ => vec![],
    }
}

fn drained_without_guard(server: &str, attack: Attack) {
    let srv = Proc::start(server, &server_args(server), None);
    request(srv.addr(), "/", Duration::from_secs(3)).expect("served before the attack");
    let attackers = Attackers::launch(srv.addr(), attack, POOL);
    let probe = request(srv.addr(), "/", Duration::from_secs(3));
    assert!(
        probe.is_err(),
        "{server}/{attack:?}: the pool should be drained, but got {probe:?}"
    );
    assert_eq!(
        attackers.stop(),
        0,
        "nothing may cut the attackers without the guard"
    );
}

fn rescued_by_guard(server: &str, attack: Attack) {
    let mut srv = Proc::start(server, &server_args(server), Some(FAST));
    request(srv.addr(), "/", Duration::from_secs(3)).expect("served before the attack");
    let attackers = Attackers::launch(srv.addr(), attack, POOL);
    let started = Instant::now();
    let body = request(
        srv.addr(),
        "/",
        Duration::from_millis(attack.timer_ms() + 5000),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{server}/{attack:?}: legit request not served: {e}\n{}",
            srv.log_text()
        )
    });
    assert_eq!(body, "ok\n");
    let served_after = started.elapsed();
    let reaps = srv.wait_events("reap", POOL, Duration::from_secs(5));
    assert!(
        reaps.len() >= POOL,
        "{server}/{attack:?}: {} reaps\n{}",
        reaps.len(),
        srv.log_text()
    );
    for r in &reaps {
        assert_eq!(r["reason"], attack.reason(), "{server}/{attack:?}: {r:?}");
        let waited = seconds_ms(&r["waited"]);
        // Timer + earned extension (request: ≤ 0.4 s here) + one tick + a noisy-machine margin.
        assert!(
            waited >= attack.timer_ms() && waited <= attack.timer_ms() + 1000,
            "{server}/{attack:?}: waited {waited} ms for a {} ms timer",
            attack.timer_ms()
        );
        for key in ["pid", "fd", "peer", "port", "bytes_in", "bytes_out", "ts"] {
            assert!(r.contains_key(key), "reap line lacks {key}: {r:?}");
        }
        assert_eq!(r["port"], srv.port.to_string());
        assert!(r["peer"].starts_with("127.0.0.1:"), "{r:?}");
        eprintln!(
            "{server}/{attack:?}: reap waited={} (timer {} ms)",
            r["waited"],
            attack.timer_ms()
        );
    }
    eprintln!("{server}/{attack:?}: legit served after {served_after:?}");
    assert_eq!(
        attackers.stop_after_cut(POOL, Duration::from_secs(3)),
        POOL,
        "{server}/{attack:?}: every attacker must see its connection cut"
    );
    assert!(
        srv.is_alive(),
        "{server}/{attack:?}: the server died (SIGPIPE?)"
    );
    request(srv.addr(), "/", Duration::from_secs(3)).expect("still serving after the reaps");
}

macro_rules! matrix {
    ($($name:ident: $server:literal, $attack:ident;)*) => {
        mod unguarded {
            use super::*;
            $( #[test] fn $name() { drained_without_guard($server, Attack::$attack) } )*
        }
        mod guarded {
            use super::*;
            $( #[test] fn $name() { rescued_by_guard($server, Attack::$attack) } )*
        }
    };
}

matrix! {
    pool_silent: "pool_server", Silent;
    pool_drip: "pool_server", Drip;
    pool_headers_without_end: "pool_server", HeadersNoEnd;
    pool_never_reads: "pool_server", NeverReads;
    prefork_silent: "prefork_server", Silent;
    prefork_drip: "prefork_server", Drip;
    prefork_headers_without_end: "prefork_server", HeadersNoEnd;
    prefork_never_reads: "prefork_server", NeverReads;
    eager_silent: "eager_server", Silent;
    eager_drip: "eager_server", Drip;
    eager_headers_without_end: "eager_server", HeadersNoEnd;
    eager_never_reads: "eager_server", NeverReads;
    forking_silent: "forking_server", Silent;
    forking_drip: "forking_server", Drip;
    forking_headers_without_end: "forking_server", HeadersNoEnd;
    forking_never_reads: "forking_server", NeverReads;
}

/// A single-threaded event loop is not drained by slow clients, but it still holds their
/// sockets forever: guarded, the epoll server's stalled connections are reaped too.
mod epoll {
    use super::*;

    fn reaped(attack: Attack) {
        let srv = Proc::start("epoll_server", &[], Some(FAST));
        let attackers = Attackers::launch(srv.addr(), attack, 3);
        assert_eq!(
            request(srv.addr(), "/", Duration::from_secs(3)).as_deref(),
            Ok("ok\n")
        );
        let reaps = srv.wait_events("reap", 3, Duration::from_millis(attack.timer_ms() + 4000));
        assert_eq!(reaps.len(), 3, "{attack:?}\n{}", srv.log_text());
        assert!(
            reaps.iter().all(|r| r["reason"] == attack.reason()),
            "{reaps:?}"
        );
        assert_eq!(
            attackers.stop_after_cut(3, Duration::from_secs(3)),
            3,
            "{attack:?}"
        );
    }

    #[test]
    fn silent() {
        reaped(Attack::Silent)
    }
    #[test]
    fn drip() {
        reaped(Attack::Drip)
    }
    #[test]
    fn headers_without_end() {
        reaped(Attack::HeadersNoEnd)
    }
    #[test]
    fn never_reads() {
        reaped(Attack::NeverReads)
    }

    #[test]
    fn unguarded_keeps_stalled_sockets_forever() {
        let srv = Proc::start("epoll_server", &[], None);
        let attackers = Attackers::launch(srv.addr(), Attack::Silent, 3);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(attackers.stop(), 0);
    }
}

/// Issue 13: with nothing due and nobody looking, the watcher dozes (here half the 1 s
/// first-byte timer at a time, instead of ten wake-ups a second), and a client that arrives
/// while it dozes is still cut no earlier than its timer and at most a tick after: the
/// accept wakes it.
#[test]
fn an_idle_watcher_dozes_and_still_cuts_on_time() {
    let srv = Proc::start("pool_server", &["--threads", "4"], Some(FAST));
    request(srv.addr(), "/", Duration::from_secs(3)).expect("served");
    std::thread::sleep(Duration::from_millis(1500));
    let before = watcher_sleeps(srv.pid()).expect("a watcher thread");
    std::thread::sleep(Duration::from_secs(3));
    let slept = watcher_sleeps(srv.pid()).unwrap() - before;
    // Ticking: 30. Dozing: 6, a few more for scheduling noise.
    assert!(slept <= 12, "{slept} wake-ups in 3 s of idleness");
    let mut latencies = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1200)); // a doze or two: nothing is due
        latencies.push(silent_client_cut_after_ms(&srv));
    }
    eprintln!("{slept} wake-ups in 3 idle seconds; reap latency after a doze: {latencies:?} ms");
    assert_first_byte_timer_plus_a_tick(&latencies);
}

/// A silent client's connect-to-EOF time in ms, as the client sees it (FAST: FIRST_BYTE=1s).
fn silent_client_cut_after_ms(srv: &Proc) -> u64 {
    use std::io::Read;
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        s.read(&mut [0u8; 8]).unwrap(),
        0,
        "expected the guard's EOF"
    );
    started.elapsed().as_millis() as u64
}

/// Each cut came no earlier than the 1 s first-byte timer, and within a tick (100 ms) plus
/// scheduling noise after it.
fn assert_first_byte_timer_plus_a_tick(latencies: &[u64]) {
    for &ms in latencies {
        assert!(ms >= 1000, "cut before its timer ran out: {ms} ms");
        assert!(ms <= 1000 + 100 + 400, "cut too late: {ms} ms");
    }
}

/// Seen from the client: a silent connection is cut no earlier than FIRST_BYTE after it was
/// picked up, and within one tick (plus scheduling noise) after that.
#[test]
fn reap_latency_is_the_timer_plus_at_most_a_tick() {
    let srv = Proc::start("pool_server", &["--threads", "4"], Some(FAST));
    let latencies: Vec<u64> = (0..5).map(|_| silent_client_cut_after_ms(&srv)).collect();
    eprintln!("client-side reap latency for FIRST_BYTE=1s, TICK=100ms: {latencies:?} ms");
    assert_first_byte_timer_plus_a_tick(&latencies);
}
