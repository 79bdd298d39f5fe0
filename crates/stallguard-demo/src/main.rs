//! `make demo`: the classic fixed-pool server (target/c-examples/pool_server, 8 workers, no
//! timeouts) under a bounded slow-client attack, first without the guard, then with it.
//! Every 200 ms a legitimate client asks for a page (1 s deadline); every 100 ms the demo
//! counts the busy workers (threads not parked in accept(), read from /proc). It prints a
//! per-second table and writes an SVG chart.
//!
//! usage: stallguard-demo REPO_DIR OUT.svg [SECONDS_PER_RUN]

use plotters::prelude::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKERS: usize = 8;
/// The attack: waves of this many silent clients, from ATTACK_START every WAVE_EVERY seconds,
/// for ATTACK_SECS (bounded in count and time).
const ATTACKERS: usize = 8;
const ATTACK_START: f64 = 3.0;
const WAVE_EVERY: f64 = 5.0;
const ATTACK_SECS: f64 = 12.0;

struct Sample {
    t: f64,
    served: bool,
}

struct Run {
    served_per_sec: Vec<u32>,
    busy: Vec<(f64, usize)>,
    reaps: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: stallguard-demo REPO_DIR OUT.svg [SECONDS_PER_RUN]");
        std::process::exit(2);
    }
    let repo = PathBuf::from(&args[1]);
    let out = PathBuf::from(&args[2]);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let shim = repo.join("target/release/libstallguard.so");
    let log = std::env::temp_dir().join(format!("stallguard-demo-{}.log", std::process::id()));

    println!(
        "== pool_server, {WORKERS} workers; waves of {ATTACKERS} silent clients every {WAVE_EVERY}s from t={ATTACK_START}s for {ATTACK_SECS}s; a legit request every 200 ms"
    );
    let unguarded = run(&repo, None, secs);
    let guarded = run(&repo, Some((&shim, &log)), secs);
    println!(
        "{:>4}  {:>22}  {:>22}",
        "t(s)", "served/s unguarded", "served/s guarded"
    );
    for s in 0..secs as usize {
        println!(
            "{s:>4}  {:>22}  {:>22}",
            unguarded.served_per_sec.get(s).copied().unwrap_or(0),
            guarded.served_per_sec.get(s).copied().unwrap_or(0)
        );
    }
    println!(
        "connections reaped: unguarded {}, guarded {}",
        unguarded.reaps, guarded.reaps
    );
    if let Err(e) = chart(&out, secs, &unguarded, &guarded) {
        eprintln!("stallguard-demo: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("chart: {}", out.display());
    let _ = std::fs::remove_file(&log);
}

fn run(repo: &Path, guard: Option<(&Path, &Path)>, secs: u64) -> Run {
    let mut cmd = Command::new(repo.join("target/c-examples/pool_server"));
    cmd.args(["0", "--threads", &WORKERS.to_string()])
        .stdout(Stdio::piped());
    if let Some((shim, log)) = guard {
        let _ = std::fs::remove_file(log);
        cmd.env("LD_PRELOAD", shim)
            .env("STALLGUARD_FIRST_BYTE", "2s")
            .env("STALLGUARD_LOG_FILE", log);
    }
    let mut server = ServerGuard(cmd.spawn().expect("start pool_server"));
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .trim_start_matches("port=")
        .parse()
        .expect("port line");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = server.0.id();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let stop = Arc::new(AtomicBool::new(false));

    let attack = {
        let stop = stop.clone();
        std::thread::spawn(move || attack(addr, start, stop))
    };
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let prober = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = start.elapsed().as_secs_f64();
                let served = probe(addr);
                samples.lock().unwrap().push(Sample { t, served });
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let mut busy = Vec::new();
    while Instant::now() < end {
        busy.push((start.elapsed().as_secs_f64(), busy_workers(pid)));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    attack.join().unwrap();
    prober.join().unwrap();
    let mut served_per_sec = vec![0u32; secs as usize];
    for s in samples.lock().unwrap().iter().filter(|s| s.served) {
        if let Some(slot) = served_per_sec.get_mut(s.t as usize) {
            *slot += 1;
        }
    }
    let reaps = guard
        .and_then(|(_, log)| std::fs::read_to_string(log).ok())
        .map_or(0, |l| {
            l.lines().filter(|l| l.contains("event=reap ")).count()
        });
    Run {
        served_per_sec,
        busy,
        reaps,
    }
}

/// Waves of ATTACKERS silent clients, at ATTACK_START and every WAVE_EVERY seconds until
/// ATTACK_START + ATTACK_SECS; every connection is held until the attack ends (or the server
/// cuts it).
fn attack(addr: SocketAddr, start: Instant, stop: Arc<AtomicBool>) {
    let mut held: Vec<TcpStream> = Vec::new();
    let mut next_wave = ATTACK_START;
    while start.elapsed().as_secs_f64() < ATTACK_START + ATTACK_SECS
        && !stop.load(Ordering::Relaxed)
    {
        if start.elapsed().as_secs_f64() >= next_wave {
            held.extend((0..ATTACKERS).filter_map(|_| TcpStream::connect(addr).ok()));
            next_wave += WAVE_EVERY;
        }
        held.retain(|s| !closed(s));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).ok();
    let r = (&*s).read(&mut [0u8; 64]);
    s.set_nonblocking(false).ok();
    !matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn probe(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .ok();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.ends_with(b"ok\n") {
            return true;
        }
    }
    false
}

/// Workers not parked in accept(): the threads of the server whose current system call is
/// not accept (43) or accept4 (288), minus the main thread.
fn busy_workers(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut busy = 0;
    for t in tasks.flatten() {
        if t.file_name().to_string_lossy() == pid.to_string() {
            continue; // the main thread only waits for the workers
        }
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "stallguard" {
            continue; // the guard's watcher
        }
        let sc = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
        let nr = sc.split_whitespace().next().unwrap_or("");
        if nr != "43" && nr != "288" && nr != "running" {
            busy += 1;
        }
    }
    busy.min(WORKERS)
}

fn chart(
    out: &Path,
    secs: u64,
    unguarded: &Run,
    guarded: &Run,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(out, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(280);
    let max_served = 5u32;
    for (area, title, run) in [
        (&top, "without the guard", unguarded),
        (
            &bottom,
            "with LD_PRELOAD=libstallguard.so (FIRST_BYTE=2s)",
            guarded,
        ),
    ] {
        let mut c = ChartBuilder::on(area)
            .caption(
                format!("pool_server, {WORKERS} workers, waves of {ATTACKERS} silent clients from t={ATTACK_START}s: {title}"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .right_y_label_area_size(40)
            .build_cartesian_2d(0f64..secs as f64, 0f64..(WORKERS as f64))?
            .set_secondary_coord(0f64..secs as f64, 0f64..max_served as f64 + 0.5);
        c.configure_mesh()
            .x_desc("seconds")
            .y_desc("busy workers")
            .draw()?;
        c.configure_secondary_axes()
            .y_desc("legit served / s")
            .draw()?;
        c.draw_series(
            AreaSeries::new(
                run.busy.iter().map(|(t, b)| (*t, *b as f64)),
                0.0,
                RED.mix(0.25),
            )
            .border_style(RED),
        )?
        .label("busy workers")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], RED.mix(0.4).filled()));
        c.draw_secondary_series(LineSeries::new(
            run.served_per_sec
                .iter()
                .enumerate()
                .map(|(s, n)| (s as f64 + 0.5, f64::from(*n))),
            BLUE.stroke_width(3),
        ))?
        .label("legit requests served per second")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE.stroke_width(3)));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Stops the server by PID whatever happens.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
