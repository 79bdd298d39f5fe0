//! Item 8: resource bounds under a sustained mix of legitimate traffic and attacks.
//!
//! echo_server (pool of 16, SIGPIPE at its default action) with the shim and the default kernel
//! backstops; 4 legitimate clients doing checksummed exchanges back to back, and attackers of
//! every kind (silent, headers without their end, a body that stops short, a client that never
//! reads an 8 MiB response, plus connect-and-reset floods) for the whole run. The server's
//! VmRSS and open-fd count are sampled every few seconds. Fails on: any legitimate exchange
//! cut or corrupted (unless the client itself stalled past the shortest timer), the server
//! dying, fds not back to the idle count once the traffic stops (a leak), RSS growing between
//! the end of the warm-up and the end of the run beyond noise.

use super::churn::{self, Attack, Counts};
use stallguard_testkit::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const POLICY: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "500ms"),
    ("STALLGUARD_REQUEST", "1-2,minrate=1000"),
    ("STALLGUARD_IDLE", "1s"),
    ("STALLGUARD_WRITE_STALL", "1s"),
    ("STALLGUARD_TICK", "50ms"),
];
const SHORTEST_TIMER: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Report {
    pub secs: f64,
    /// (seconds since start, VmRSS KiB, open fds)
    pub samples: Vec<(f64, u64, usize)>,
    pub idle_fds_before: usize,
    pub idle_fds_after: usize,
    pub rss_after_warmup: u64,
    pub rss_last: u64,
    pub rss_max: u64,
    pub fds_max: usize,
    pub legit_connections: u64,
    pub legit_exchanges: u64,
    pub legit_wrong: u64,
    pub legit_excused: u64,
    pub attacks: u64,
    pub attacks_cut: u64,
    pub floods: u64,
    pub reaps: usize,
    pub server_status: Option<std::process::ExitStatus>,
    pub server_stderr: String,
    pub failures: Vec<String>,
}

fn flood_once(addr: SocketAddr) -> bool {
    // Connect from a fourth attacker address and reset at once (SO_LINGER 0).
    let Ok(s) = connect_tcp([127, 0, 0, 6], addr, None) else {
        return false;
    };
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    true
}

pub fn run(duration: Duration, sample_every: Duration) -> Report {
    let log = scratch("resources.guard.log");
    let mut env = guarded_env(&log);
    env.extend(POLICY.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.push(("ECHO_PIPE_EVERY".into(), "8".into()));
    let mut srv = Proc::spawn(
        &example("echo_server"),
        &["0", "--threads", "16", "--big", "8388608"],
        &env,
        true,
        &log,
    );
    let addr = srv.addr();
    let pid = srv.pid();
    std::thread::sleep(Duration::from_millis(200));
    let idle_fds_before = rss_and_fds(pid).map(|s| s.1).unwrap_or(0);
    let counts = Arc::new(Counts::default());
    let failures: churn::Failures = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let floods = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut threads = Vec::new();
    for t in 0..4 {
        let (counts, failures, stop) = (counts.clone(), failures.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(0xfeed + t);
            let mut body = Vec::new();
            while !stop.load(Relaxed) {
                match churn::healthy_connection(addr, &mut rng, &counts, &mut body, SHORTEST_TIMER)
                {
                    Ok(()) => {}
                    Err((what, true)) => {
                        counts.excused.fetch_add(1, Relaxed);
                        churn::note(&failures, format!("(excused: client late) {what}"));
                    }
                    Err((what, false)) => {
                        counts.wrong.fetch_add(1, Relaxed);
                        churn::note(&failures, format!("LEGIT FAILURE: {what}"));
                    }
                }
                counts.cycles.fetch_add(1, Relaxed);
                // A human-ish pace: the point is duration, not rate.
                std::thread::sleep(Duration::from_millis(rng.below(20)));
            }
        }));
    }
    for kind in Attack::ALL
        .into_iter()
        .chain([Attack::Silent, Attack::NeverReads])
    {
        let (counts, stop) = (counts.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                counts.attacks.fetch_add(1, Relaxed);
                if churn::attack_once(addr, kind, Duration::from_secs(4)) == Some(true) {
                    counts.attacks_cut.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    {
        let (floods, stop) = (floods.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                if flood_once(addr) {
                    floods.fetch_add(1, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                if let Some((rss, fds)) = rss_and_fds(pid) {
                    samples
                        .lock()
                        .unwrap()
                        .push((start.elapsed().as_secs_f64(), rss, fds));
                }
                let until = Instant::now() + sample_every;
                while Instant::now() < until && !stop.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };
    while start.elapsed() < duration && srv.exited().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = sampler.join();
    let secs = start.elapsed().as_secs_f64();
    // Traffic is over: every connection must be gone from the server within a few timers.
    let mut idle_fds_after = usize::MAX;
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        idle_fds_after = rss_and_fds(pid).map(|s| s.1).unwrap_or(usize::MAX);
        if idle_fds_after <= idle_fds_before {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let final_sample = rss_and_fds(pid);
    let mut samples = samples.lock().unwrap().clone();
    if let Some((rss, fds)) = final_sample {
        samples.push((start.elapsed().as_secs_f64(), rss, fds));
    }
    let warm = samples
        .iter()
        .find(|s| s.0 >= secs.min(20.0) / 4.0)
        .or(samples.first())
        .map(|s| s.1)
        .unwrap_or(0);
    let failures = failures.lock().unwrap().clone();
    let reaps = events_in(&srv.log_text(), "reap").len();
    let c = &counts;
    Report {
        secs,
        idle_fds_before,
        idle_fds_after,
        rss_after_warmup: warm,
        rss_last: samples.last().map(|s| s.1).unwrap_or(0),
        rss_max: samples.iter().map(|s| s.1).max().unwrap_or(0),
        fds_max: samples.iter().map(|s| s.2).max().unwrap_or(0),
        samples,
        legit_connections: c.cycles.load(Relaxed),
        legit_exchanges: c.exchanges.load(Relaxed),
        legit_wrong: c.wrong.load(Relaxed),
        legit_excused: c.excused.load(Relaxed),
        attacks: c.attacks.load(Relaxed),
        attacks_cut: c.attacks_cut.load(Relaxed),
        floods: floods.load(Relaxed),
        reaps,
        server_status: srv.exited(),
        server_stderr: srv.stderr_text(),
        failures,
    }
}

pub fn check(r: &Report) {
    let first = r.samples.first().copied().unwrap_or_default();
    eprintln!(
        "resources: {:.0} s, {} legit connections ({} exchanges), {} legit failures, {} excused (client late); \
         {} attacks ({} seen cut), {} connect+reset floods, {} reaps logged; \
         VmRSS KiB first {} / after warm-up {} / last {} / max {}; fds first {} / last {} / max {}; \
         idle fds before {} after {}",
        r.secs,
        r.legit_connections,
        r.legit_exchanges,
        r.legit_wrong,
        r.legit_excused,
        r.attacks,
        r.attacks_cut,
        r.floods,
        r.reaps,
        first.1,
        r.rss_after_warmup,
        r.rss_last,
        r.rss_max,
        first.2,
        r.samples.last().map(|s| s.2).unwrap_or(0),
        r.fds_max,
        r.idle_fds_before,
        r.idle_fds_after
    );
    eprintln!("  samples (s, VmRSS KiB, fds): {:?}", r.samples);
    assert_run_clean(
        r.server_status,
        &r.server_stderr,
        &r.failures,
        r.legit_wrong,
        "legitimate exchanges failed",
    );
    assert!(
        r.legit_excused * 200 <= r.legit_connections.max(1),
        "too many late clients"
    );
    assert!(r.legit_connections >= 100, "too little legit traffic");
    assert!(r.reaps >= 20, "too few reaps: {}", r.reaps);
    assert!(
        r.idle_fds_after <= r.idle_fds_before,
        "fds leaked: {} open when idle before, {} after",
        r.idle_fds_before,
        r.idle_fds_after
    );
    // RSS: flat after warm-up, within noise (allocator arenas, socket buffers come and go).
    assert!(
        r.rss_last <= r.rss_after_warmup + r.rss_after_warmup / 4 + 4096,
        "VmRSS grew from {} KiB after warm-up to {} KiB",
        r.rss_after_warmup,
        r.rss_last
    );
    assert!(
        r.fds_max <= r.idle_fds_before + 80,
        "fd count peaked at {}",
        r.fds_max
    );
}
