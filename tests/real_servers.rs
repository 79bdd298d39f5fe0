//! Real Debian servers attacked by a real tool (issue #3). Each cell starts an unmodified
//! server from a private config on a free loopback port, attacks it with slowhttptest (or
//! clients that never start a TLS handshake) while a legitimate client probes every 500 ms, and
//! runs once without the guard (the attack must deny service, or hold the server's processes)
//! and once with libstallguard.so preloaded (the stalled connections are reaped, the probes of
//! the second half are served). The legitimate cells (slow but steady download and upload) run
//! guarded only and must see zero reaps.
//!
//! One test runs every cell, STALLGUARD_REAL_JOBS (default 6) at a time, and prints the
//! server × attack table (`make matrix`: STALLGUARD_MATRIX=1 prints it on stdout). Only some
//! cells: STALLGUARD_REAL_CELLS=civetweb-slowloris,stunnel (substrings of server-attack).
//! Evidence (slowhttptest CSV/HTML/output, guard logs, probe and process samples) goes to
//! target/real-evidence/<server>-<attack>-<mode>/; configs to target/real-work/.
//!
//! The servers need `scripts/install-real-deps.sh` (root, Debian 12); the test fails, never
//! skips, when they are missing.
//!
//! What each server needs from the shim:
//! * civetweb (a pool of 8 threads; a master thread accepts eagerly into a queue): the accept,
//!   recv, poll, send and sendfile64 hooks; the first-byte clock starting when a worker first
//!   waits, not at accept; for slow read, progress inside a blocking sendfile64 read from
//!   TCP_INFO bytes_acked.
//! * mini_httpd (fork per connection, no cap; alarm() timeouts of its own, 60 s to read and
//!   300 s to write, not configurable): tracking inherited by forked children and a watcher
//!   in each; for a CGI POST the body is read by a forked grandchild (the input interposer).
//! * stunnel4 (a thread per connection; OpenSSL read()/write() on non-blocking sockets + poll):
//!   EAGAIN and poll waits; its own connect() to the backend is never tracked.
//! * micro-httpd under xinetd (inetd service: the connection on fds 0-2, all I/O through
//!   stdio, which no hook sees): adoption of the inherited socket at load time, judged by the
//!   kernel's TCP_INFO counters (log lines say view=kernel).

#[path = "real/mod.rs"]
mod real;

use real::*;
use stallguard_testkit::Proc;
use std::thread;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ servers and attacks

#[derive(Clone, Copy, Debug, PartialEq)]
enum Srv {
    /// civetweb, 8 worker threads.
    Civetweb,
    /// mini_httpd, a process per connection, no cap.
    MiniHttpd,
    /// stunnel4 (guarded) in front of an unguarded civetweb with 8 worker threads.
    Stunnel,
    /// xinetd (never guarded) starting micro-httpd (guarded through xinetd's `env`).
    XinetdMicro,
}

impl Srv {
    fn name(self) -> &'static str {
        match self {
            Srv::Civetweb => "civetweb",
            Srv::MiniHttpd => "mini_httpd",
            Srv::Stunnel => "stunnel4+civetweb",
            Srv::XinetdMicro => "xinetd+micro-httpd",
        }
    }

    /// Fork servers are not denied by slow clients (no cap): what the attack holds there is
    /// processes, and the test counts them.
    fn forks(self) -> bool {
        matches!(self, Srv::MiniHttpd | Srv::XinetdMicro)
    }

    fn scheme(self) -> Scheme {
        if self == Srv::Stunnel {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// Attack connections. Pool servers: 3× the pool of 8. The guard frees the pool in waves
    /// (each wave waits its whole timer, e.g. REQUEST T=5 s + ≈300 bytes/200 B/s ≈ 6.5 s, and
    /// the rest queue behind it in civetweb's accept queue), so 24 are drained in ≈21 s, well
    /// before the second half of the attack that the probes are judged on; 40 would take five
    /// waves (≈35 s) and overlap it. Fork servers take every connection at once: 40.
    fn conns(self) -> usize {
        if self.forks() {
            40
        } else {
            24
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Atk {
    /// slowhttptest -H: headers never finished, a header line every 10 s.
    Slowloris,
    /// slowhttptest -B: POST to the CGI (which really reads its body), a few bytes every 10 s.
    SlowBody,
    /// slowhttptest -X: asks for 64 MiB and reads 32 bytes every 5 s through a 512-1024 byte
    /// receive window, so the server's write stops moving once the socket buffers are full.
    SlowRead,
    /// TCP connections that never send a byte: for stunnel, a TLS handshake never started.
    NoHandshake,
}

impl Atk {
    fn reason(self) -> &'static str {
        match self {
            Atk::Slowloris | Atk::SlowBody => "request",
            Atk::SlowRead => "write_stall",
            Atk::NoHandshake => "first_byte",
        }
    }

    fn secs(self) -> u64 {
        match self {
            // Nothing queues behind silent TLS clients (stunnel has a thread each): half is
            // plenty to see them held unguarded and cut at FIRST_BYTE guarded.
            Atk::NoHandshake => attack_secs() / 2,
            _ => attack_secs(),
        }
    }
}

/// slowhttptest's arguments for an attack of `conns` connections opened at once (`-r` =
/// `-c`: slowhttptest opens them in the first second and never re-opens a closed one), for
/// `secs` seconds, with its own probe (`-p 3`) recorded in the CSV's "Service Available".
fn slowhttptest_args(srv: Srv, atk: Atk, port: u16, conns: usize, secs: u64) -> Vec<String> {
    let scheme = if srv.scheme() == Scheme::Https {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://127.0.0.1:{port}");
    let mut a: Vec<String> = match atk {
        Atk::Slowloris => vec!["-H", "-i", "10", "-x", "24"],
        Atk::SlowBody => vec!["-B", "-i", "10", "-x", "10", "-s", "8192"],
        Atk::SlowRead => vec![
            "-X", "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "1",
        ],
        Atk::NoHandshake => unreachable!("not a slowhttptest attack"),
    }
    .into_iter()
    .map(String::from)
    .collect();
    let path = match atk {
        Atk::SlowBody => "/echo.cgi",
        Atk::SlowRead => "/big.bin",
        _ => "/index.html",
    };
    for (k, v) in [
        ("-c", conns.to_string()),
        ("-r", conns.to_string()),
        ("-l", secs.to_string()),
        ("-p", "3".to_string()),
        ("-u", format!("{base}{path}")),
    ] {
        a.push(k.into());
        a.push(v);
    }
    a
}

/// The server of a cell in the job's mode; for stunnel also its (unguarded) civetweb backend.
fn start(job: &Job, srv: Srv) -> (Server, Option<Server>) {
    match srv {
        Srv::Civetweb => (civetweb(job, "civetweb", true), None),
        Srv::MiniHttpd => (mini_httpd(job), None),
        Srv::XinetdMicro => (xinetd_micro_httpd(job), None),
        Srv::Stunnel => {
            let backend = civetweb_backend(job);
            (stunnel(job, &backend), Some(backend))
        }
    }
}

/// The front server and the backend behind it, if any.
fn servers<'a>(front: &'a Server, backend: &'a Option<Server>) -> Vec<&'a Server> {
    std::iter::once(front).chain(backend.as_ref()).collect()
}

/// Starts the cell's servers and checks that they serve before the `what` begins; if they do
/// not, the outcome says so (with the servers' evidence) and there is nothing to run.
fn start_served(
    job: &Job,
    srv: Srv,
    o: &mut Outcome,
    what: &str,
) -> Option<(Server, Option<Server>)> {
    let (front, backend) = start(job, srv);
    if let Err(e) = warm_up(srv.scheme(), front.port) {
        o.check(false, || format!("not served before the {what}: {e}"));
        o.attach(job, &servers(&front, &backend), None);
        return None;
    }
    Some((front, backend))
}

/// A legitimate request must be served before anything else happens.
fn warm_up(scheme: Scheme, port: u16) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match probe_once(scheme, port, PROBE_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > end => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

// ------------------------------------------------------------------ an attack cell

fn attack_cell(job: &Job, srv: Srv, atk: Atk) -> Outcome {
    let mut o = Outcome::new(job);
    let secs = atk.secs();
    let conns = srv.conns();
    let Some((front, backend)) = start_served(job, srv, &mut o, "attack") else {
        return o;
    };
    let servers = servers(&front, &backend);
    let root = front.pid();
    let baseline = if srv.forks() { settled_procs(root) } else { 0 };

    let t0 = Instant::now();
    let live_probes = std::sync::Arc::default();
    let sampler = Sampler::start(front.port, root, t0, std::sync::Arc::clone(&live_probes));
    let prober = Prober::start(srv.scheme(), front.port, t0, live_probes);
    let (slow, silent) = match atk {
        Atk::NoHandshake => (None, Some(SilentClients::connect(front.port, conns))),
        _ => {
            let args = slowhttptest_args(srv, atk, front.port, conns, secs);
            (Some(Slowhttptest::start(job, &args)), None)
        }
    };
    sleep_until(t0 + Duration::from_secs(secs));
    let probes = prober.stop();
    let cut = silent.as_ref().map(SilentClients::cut);
    let silent_len = silent.as_ref().map(SilentClients::len);
    drop(silent);
    let report = slow.map(|s| s.finish(Duration::from_secs(20)));
    let (samples, seen) = sampler.stop();
    o.attach(job, &servers, report.as_ref());
    write_samples(job, &probes, &samples, baseline);

    // The second half of the attack, minus the last probe timeout (a probe started later could
    // outlive the attack).
    let (from, to) = (secs as f64 / 2.0, secs as f64 - PROBE_TIMEOUT.as_secs_f64());
    let (ok, total) = served(&probes, from, to);
    o.served = Some((ok, total));
    let late = at(&samples, secs as f64 * 0.75).unwrap_or_default();
    o.held = Some(late.held);
    let second_half = window(&samples, from, to);
    if srv.forks() {
        o.procs = Some(late.procs.saturating_sub(baseline));
    }
    o.note = match (&report, cut) {
        // How it ended, and in how many of its CSV rows of the second half its own probe
        // found the service available (no rows when every connection was cut before).
        (Some(r), _) => {
            let rows: Vec<&[u64; 5]> = r.csv.iter().filter(|row| row[0] as f64 >= from).collect();
            let up = rows.iter().filter(|row| row[4] > 0).count();
            if rows.is_empty() {
                r.short()
            } else {
                format!("{}, avail {up}/{}", r.short(), rows.len())
            }
        }
        (None, Some(c)) => format!("{c}/{} cut", silent_len.unwrap_or(0)),
        _ => String::new(),
    };
    o.check(total >= 10, || {
        format!("only {total} probes ran in the second half")
    });
    if let Some(r) = &report {
        // The attack really happened: its connections were all open at some point.
        let opened = r.csv.iter().map(|row| row[1] + row[3]).max().unwrap_or(0);
        o.check(opened as usize + 2 >= conns, || {
            format!("slowhttptest opened only {opened} of {conns} connections")
        });
    }
    if let (Some(n), Some(c)) = (silent_len, cut) {
        o.check(n == conns, || {
            format!("only {n} of {conns} silent clients connected")
        });
        if job.mode.guarded() {
            o.check(c == n, || {
                format!("{c} of {n} silent clients were cut; all must be")
            });
        } else {
            o.check(c == 0, || {
                format!("{c} of {n} silent clients were cut without the guard")
            });
        }
    }

    if !job.mode.guarded() {
        if srv.forks() {
            // Not denied (a process per connection, no cap), but every stalled connection
            // holds a process for as long as the client likes.
            let low = second_half.iter().map(|s| s.procs).min().unwrap_or(0);
            o.check(low.saturating_sub(baseline) >= conns / 2, || {
                format!(
                    "without the guard the stalled connections' processes should stay: only \
                     {low} (baseline {baseline}) in the second half"
                )
            });
        } else if atk == Atk::NoHandshake {
            o.check(late.held + 2 >= conns, || {
                format!(
                    "without the guard {conns} silent connections should be held; {} are",
                    late.held
                )
            });
        } else {
            o.check(ok * 10 <= total, || {
                format!(
                    "the attack should deny service without the guard (so this test can \
                     fail), but {ok}/{total} probes were served in the second half"
                )
            });
        }
        return o;
    }

    // Guarded.
    let reaps = events(&job.guard_log(), "reap");
    o.check(ok * 100 >= total * 95, || {
        let failed: Vec<String> = probes
            .iter()
            .filter(|p| !p.ok && p.at_ms as f64 >= from * 1000.0)
            .take(5)
            .map(|p| format!("t={:.1}s {}", p.at_ms as f64 / 1000.0, p.err))
            .collect();
        format!("only {ok}/{total} probes served in the second half (need 95%): {failed:?}")
    });
    o.check(reaps.len() + 2 >= conns, || {
        format!(
            "{} reaps in the guard log for {conns} stalled connections",
            reaps.len()
        )
    });
    for r in &reaps {
        let get = |k: &str| r.get(k).cloned().unwrap_or_default();
        o.check(get("reason") == atk.reason(), || {
            format!(
                "reap with reason {} (expected {}): {r:?}",
                get("reason"),
                atk.reason()
            )
        });
        o.check(get("peer").starts_with("127.0.0.1:"), || {
            format!("peer: {r:?}")
        });
        o.check(get("port") == front.port.to_string(), || {
            format!("port {} (server on {}): {r:?}", get("port"), front.port)
        });
        let pid: i32 = get("pid").parse().unwrap_or(0);
        let right_process = match srv {
            Srv::Civetweb | Srv::Stunnel => pid == root,
            Srv::MiniHttpd => seen.contains_key(&pid),
            Srv::XinetdMicro => seen.get(&pid).is_some_and(|c| c == "micro-httpd"),
        };
        o.check(right_process, || {
            format!(
                "reap logged by pid {pid}, not by {} (pid {root} or a child of it): {r:?}",
                srv.name()
            )
        });
    }
    if srv.forks() {
        // The legitimate probes' own processes are not the attack's: a sample may see one per
        // probe live then (on a loaded machine several overlap, and a child outlives its
        // probe a little), and one more that outlived its probe's linger.
        let high = second_half
            .iter()
            .map(Sample::procs_beyond_probes)
            .max()
            .unwrap_or(0);
        o.check(high <= baseline + 1, || {
            format!(
                "the stalled connections' processes should be gone in the second half: up to \
                 {high} beyond the probes' (baseline {baseline})"
            )
        });
    }
    o.reaps = Some(reaps);
    o
}

fn write_samples(job: &Job, probes: &[Probe], samples: &[Sample], baseline: usize) {
    use std::io::Write;
    let mut f = job.file("probes.txt");
    for p in probes {
        let _ = writeln!(
            f,
            "t={:.1}s ok={} ms={} {}",
            p.at_ms as f64 / 1000.0,
            p.ok,
            p.ms,
            p.err
        );
    }
    let mut f = job.file("samples.txt");
    let _ = writeln!(f, "baseline_procs={baseline}");
    for s in samples {
        let _ = writeln!(
            f,
            "t={:.1}s held={} procs={} probes={}",
            s.at_ms as f64 / 1000.0,
            s.held,
            s.procs,
            s.probes
        );
    }
}

// ------------------------------------------------------------------ legitimate cells

/// The slow download's steady rate, bytes per second.
const DOWNLOAD_RATE: f64 = 512.0 * 1024.0;
/// The slow upload's body, bytes.
const UPLOAD_BODY: usize = 12 * 1024;

/// A legitimate client downloads 8 MiB at a steady 512 KiB/s: 16 s, longer than every timer
/// and far below loopback speed. curl fetches (http or https alike) and this test reads curl's
/// output pipe at the steady rate, 16 KiB at a time: curl blocks on the full pipe and stops
/// reading the socket, so the server sees exactly a slow reader. (curl's own --limit-rate is
/// no such client: it let 8 MiB through in 0.03 s from mini_httpd.) The reader's window closes
/// for a few dozen ms at a time, never for seconds, so the server's bytes keep being
/// acknowledged: never a write stall (the guard charges one only when nothing is acked for
/// WRITE_STALL), and the server has the turn throughout.
fn slow_download(job: &Job, srv: Srv) -> Outcome {
    let mut o = Outcome::new(job);
    let Some((front, backend)) = start_served(job, srv, &mut o, "download") else {
        return o;
    };
    let scheme = if srv.scheme() == Scheme::Https {
        "https"
    } else {
        "http"
    };
    let mut cmd = std::process::Command::new(CURL);
    cmd.args(["-k", "-s", "-S", "-N", "--fail", "-m", "90"])
        .arg(format!("{scheme}://127.0.0.1:{}/mid.bin", front.port))
        .stdout(std::process::Stdio::piped())
        .stderr(job.file("curl.err"));
    let started = Instant::now();
    let mut curl = Proc::owned("curl", &mut cmd);
    let mut pipe = curl.child.stdout.take().unwrap();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let mut read_error = None;
    while started.elapsed() < Duration::from_secs(80) {
        // Steady: never ahead of DOWNLOAD_RATE × elapsed.
        let allowed = (started.elapsed().as_secs_f64() * DOWNLOAD_RATE) as u64 + buf.len() as u64;
        if got + buf.len() as u64 > allowed {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        match std::io::Read::read(&mut pipe, &mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    drop(pipe);
    let status = curl.wait_exit(Duration::from_secs(5));
    drop(curl);
    thread::sleep(Duration::from_millis(300)); // a reap would be logged by now
    o.attach(job, &servers(&front, &backend), None);
    o.note = format!(
        "{:.1} of {} MiB in {took:.1} s",
        got as f64 / 1048576.0,
        MID_BYTES >> 20
    );
    o.check(
        status.is_some_and(|s| s.success()) && read_error.is_none(),
        || {
            format!(
                "curl: {status:?} after {got} bytes in {took:.1} s, read error {read_error:?}, \
                 stderr {:?}",
                read(job, "curl.err")
            )
        },
    );
    o.check(got == MID_BYTES, || {
        format!("downloaded {got} bytes, expected {MID_BYTES}")
    });
    legit_no_reaps(&mut o, job, &front);
    o
}

/// A legitimate client uploads 12 KiB to the CGI at a steady 1.5 KB/s (7.5× the 200 B/s
/// minimum rate): ≈8.2 s, longer than FIRST_BYTE and the 5 s base request timeout. It is kept
/// under the request timer's 10 s MAX on purpose: MAX is a hard cap on one request whatever
/// its rate (as with Apache mod_reqtimeout), so no upload may last longer under this policy.
/// `Expect:` is cleared so curl sends the body at once instead of waiting for a 100-continue.
fn slow_upload(job: &Job, srv: Srv) -> Outcome {
    let mut o = Outcome::new(job);
    let Some((front, backend)) = start_served(job, srv, &mut o, "upload") else {
        return o;
    };
    let body = job.work.join("body.bin");
    std::fs::write(&body, "x".repeat(UPLOAD_BODY)).unwrap();
    let tag = format!("{}-{}", job.slug, std::process::id());
    let record = docroot().join("uploads").join(&tag);
    let _ = std::fs::remove_file(&record);
    let out = job.evidence.join("curl.out");
    let mut cmd = std::process::Command::new(CURL);
    cmd.args([
        "-s",
        "-S",
        "-H",
        "Expect:",
        "--limit-rate",
        "1500",
        "-m",
        "30",
    ])
    .args(["-w", "\n%{http_code} %{time_total}\n", "--data-binary"])
    .arg(format!("@{}", body.display()))
    .arg(format!("http://127.0.0.1:{}/echo.cgi?{tag}", front.port))
    .stdout(std::fs::File::create(&out).unwrap())
    .stderr(job.file("curl.err"));
    let started = Instant::now();
    let mut curl = Proc::owned("curl", &mut cmd);
    let status = curl.wait_exit(Duration::from_secs(40));
    let took = started.elapsed().as_secs_f64();
    drop(curl);
    thread::sleep(Duration::from_millis(500));
    o.attach(job, &servers(&front, &backend), None);
    let w = std::fs::read_to_string(&out).unwrap_or_default();
    let got = std::fs::read_to_string(&record).unwrap_or_default();
    let _ = std::fs::remove_file(&record);
    o.note = format!("{} KiB in {took:.1} s", UPLOAD_BODY >> 10);
    o.check(got.trim() == UPLOAD_BODY.to_string(), || {
        format!(
            "the CGI read {:?} bytes of the {UPLOAD_BODY}-byte body",
            got.trim()
        )
    });
    match srv {
        // mini_httpd 1.30 answers no POST to a CGI, guarded or not: its input interposer
        // shuts the connection's write side down once the body is in, and curl sees an empty
        // reply (exit 52). The body count the CGI recorded is what proves the upload.
        Srv::MiniHttpd => o.check(
            status.is_some_and(|s| s.success() || s.code() == Some(52)),
            || format!("curl: {status:?}, {w:?}"),
        ),
        _ => o.check(
            status.is_some_and(|s| s.success()) && w.contains(&format!("read {UPLOAD_BODY}")),
            || {
                format!(
                    "curl: {status:?}, answer {w:?}, stderr {:?}",
                    read(job, "curl.err")
                )
            },
        ),
    }
    o.check(took >= 7.0, || {
        format!("took {took:.1} s: too fast to prove anything about the timers")
    });
    legit_no_reaps(&mut o, job, &front);
    o
}

fn legit_no_reaps(o: &mut Outcome, job: &Job, front: &Server) {
    let reaps = events(&job.guard_log(), "reap");
    let would = events(&job.guard_log(), "would_reap");
    o.check(reaps.is_empty() && would.is_empty(), || {
        format!(
            "a legitimate client was reaped: {:?}",
            reaps.first().or(would.first())
        )
    });
    let log = std::fs::read_to_string(job.guard_log()).unwrap_or_default();
    o.check(log.contains("event=start"), || {
        format!("the guard never started in {} (no start line)", front.name)
    });
    o.reaps = Some(reaps);
}

fn read(job: &Job, name: &str) -> String {
    std::fs::read_to_string(job.evidence.join(name)).unwrap_or_default()
}

// ------------------------------------------------------------------ the cells

macro_rules! cells {
    ($( $kind:ident $name:ident: $srv:ident, $what:ident, $label:literal; )*) => {
        $( fn $name(job: &Job) -> Outcome { cells!(@run $kind, job, $srv, $what) } )*
        fn cells() -> Vec<Cell> {
            vec![$( Cell {
                server: Srv::$srv.name(),
                attack: $label,
                legit: cells!(@legit $kind),
                alone: ALONE.contains(&stringify!($name)),
                run: $name,
            }, )*]
        }
    };
    (@run attack, $job:ident, $srv:ident, $what:ident) => { attack_cell($job, Srv::$srv, Atk::$what) };
    (@run legit, $job:ident, $srv:ident, $what:ident) => { $what($job, Srv::$srv) };
    (@legit attack) => { false };
    (@legit legit) => { true };
}

/// Cells whose guarded run is queued last and runs with nothing beside it. micro-httpd slow
/// read: after a write-stall reap the shim sets SIGPIPE to SIG_IGN in the adopted process
/// (src/watcher/act.rs, kernel view), and micro-httpd, whose copy loop ignores write errors, then
/// reads the rest of its 64 MiB file and writes it into the dead socket 4 KiB at a time instead
/// of dying of SIGPIPE: 40 such processes keep both cores busy for minutes, which would skew
/// every cell running beside them. (The cell fails on it: the processes do not go away.)
const ALONE: &[&str] = &["micro_httpd_slow_read"];

cells! {
    attack civetweb_slowloris: Civetweb, Slowloris, "slowloris";
    attack civetweb_slow_body: Civetweb, SlowBody, "slow body";
    attack civetweb_slow_read: Civetweb, SlowRead, "slow read";
    attack mini_httpd_slowloris: MiniHttpd, Slowloris, "slowloris";
    attack mini_httpd_slow_body: MiniHttpd, SlowBody, "slow body";
    attack mini_httpd_slow_read: MiniHttpd, SlowRead, "slow read";
    attack stunnel_no_handshake: Stunnel, NoHandshake, "no TLS handshake";
    attack stunnel_tls_slowloris: Stunnel, Slowloris, "slowloris in TLS";
    attack micro_httpd_slowloris: XinetdMicro, Slowloris, "slowloris";
    attack micro_httpd_slow_read: XinetdMicro, SlowRead, "slow read";
    legit civetweb_download: Civetweb, slow_download, "legit slow download";
    legit civetweb_upload: Civetweb, slow_upload, "legit slow upload";
    legit mini_httpd_download: MiniHttpd, slow_download, "legit slow download";
    legit mini_httpd_upload: MiniHttpd, slow_upload, "legit slow upload";
    legit stunnel_download: Stunnel, slow_download, "legit slow download";
    legit micro_httpd_download: XinetdMicro, slow_download, "legit slow download";
}

/// Every cell, unguarded and guarded, in parallel on distinct ports; the table; then every
/// failed check of every run (server / attack / mode, guard log tail, slowhttptest summary).
#[test]
fn real_servers_under_slow_attacks() {
    run_matrix(&cells());
}
