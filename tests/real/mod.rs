//! Harness for `tests/real_servers.rs`: real Debian servers (civetweb, mini_httpd, stunnel4,
//! xinetd + micro-httpd) started from private configs on loopback, slowhttptest and legitimate
//! clients against them, process and socket sampling, the guard log, and the matrix runner that
//! runs every cell in parallel and prints the server × attack table.
//!
//! Every process started here is owned by a [`Proc`], whose `Drop` kills its descendants and
//! then itself by PID, so nothing outlives a failed assertion. Nothing touches system service
//! configuration or starts a system service.
#![allow(dead_code)]

use stallguard_testkit::{
    descendants, events_in, free_port, peer_closed, process_table, repo, scrub_env, shim, tail,
    Event, Proc,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ policy and parameters

/// The guard policy of every guarded run: tight enough that each attack is reaped well within
/// it. The legitimate cells pass with these same values (see the false-positive cells in
/// real_servers.rs for why each one stays clear of every timer). Fixed timers only: these
/// cells check which timer cuts each attack (pressure has tests/pressure.rs).
pub const POLICY: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "5s"),
    ("STALLGUARD_REQUEST", "5-10,minrate=200"),
    // The body stage of HTTP/1 requests the lens follows has its own timer (issue 11).
    ("STALLGUARD_BODY", "5-10,minrate=200"),
    ("STALLGUARD_IDLE", "10s"),
    ("STALLGUARD_WRITE_STALL", "5s"),
    ("STALLGUARD_TICK", "100ms"),
    ("STALLGUARD_PRESSURE", "off"),
];

/// A legitimate probe every 500 ms, each given 3 s to be served.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// What the docroot's index.html holds: a probe is served only if it gets this body.
pub const PROBE_BODY: &str = "stallguard-probe-ok";
/// The slow-read target (far more than the kernel's socket buffers hold) and the file the
/// legitimate slow download fetches.
pub const BIG_BYTES: u64 = 64 << 20;
pub const MID_BYTES: u64 = 8 << 20;

/// Seconds an attack lasts (slowhttptest `-l`); STALLGUARD_REAL_SECONDS overrides (≥ 20).
pub fn attack_secs() -> u64 {
    env_num("STALLGUARD_REAL_SECONDS", 60).max(20)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Unguarded,
    Guarded,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Unguarded => "unguarded",
            Mode::Guarded => "guarded",
        }
    }
    pub fn guarded(self) -> bool {
        self == Mode::Guarded
    }
}

// ------------------------------------------------------------------ tools and files

/// The Debian binaries the cells drive (scripts/install-real-deps.sh installs them).
pub const CIVETWEB: &str = "/usr/bin/civetweb";
pub const MINI_HTTPD: &str = "/usr/sbin/mini_httpd";
pub const STUNNEL: &str = "/usr/bin/stunnel4";
pub const XINETD: &str = "/usr/sbin/xinetd";
pub const MICRO_HTTPD: &str = "/usr/sbin/micro-httpd";
pub const SLOWHTTPTEST: &str = "/usr/bin/slowhttptest";
pub const CURL: &str = "/usr/bin/curl";
pub const OPENSSL: &str = "/usr/bin/openssl";

pub fn require_tools() {
    let missing: Vec<&str> = [
        CIVETWEB,
        MINI_HTTPD,
        STUNNEL,
        XINETD,
        MICRO_HTTPD,
        SLOWHTTPTEST,
        CURL,
        OPENSSL,
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: run `bash scripts/install-real-deps.sh` as root (or `make real-deps`)"
    );
}

pub fn work_root() -> PathBuf {
    repo().join("target/real-work")
}

pub fn evidence_root() -> PathBuf {
    repo().join("target/real-evidence")
}

fn templates() -> PathBuf {
    repo().join("tests/real")
}

/// The shared, read-only docroot: index.html (the probe's page), big.bin (64 MiB), mid.bin
/// (8 MiB), echo.cgi, and uploads/ where the CGI records what it read.
pub fn docroot() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work_root().join("docroot");
        std::fs::create_dir_all(dir.join("uploads")).unwrap();
        std::fs::write(dir.join("index.html"), format!("{PROBE_BODY}\n")).unwrap();
        for (name, len) in [("big.bin", BIG_BYTES), ("mid.bin", MID_BYTES)] {
            let path = dir.join(name);
            if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(len) {
                let line: Vec<u8> = (0..64u8)
                    .map(|i| if i == 63 { b'\n' } else { b'a' + i % 26 })
                    .collect();
                let block = line.repeat(1 << 14); // 1 MiB
                let mut f = std::fs::File::create(&path).unwrap();
                for _ in 0..len / block.len() as u64 {
                    f.write_all(&block).unwrap();
                }
            }
        }
        let cgi = dir.join("echo.cgi");
        std::fs::copy(templates().join("echo.cgi"), &cgi).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
}

/// A self-signed certificate for stunnel (made once per test run).
pub fn tls_cert() -> &'static (PathBuf, PathBuf) {
    static CERT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = work_root().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = scrub_env(Command::new(OPENSSL).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ]))
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
        assert!(out.status.success(), "openssl req failed: {out:?}");
        (cert, key)
    })
}

/// `tests/real/NAME` with every `@KEY@` replaced; an unreplaced placeholder is a bug.
pub fn render(name: &str, vars: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(templates().join(name))
        .unwrap_or_else(|e| panic!("template tests/real/{name}: {e}"));
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    let left: Vec<&str> = text
        .split('@')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(left.is_empty(), "{name}: unreplaced {left:?}");
    text
}

/// The user the servers run as (they all want one when started as root).
pub fn user_name() -> String {
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        assert!(!pw.is_null(), "no passwd entry for euid");
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

// ------------------------------------------------------------------ jobs

/// One run of one cell in one mode: its private work directory (configs, pid files) and its
/// evidence directory (slowhttptest CSV/HTML/output, the guard log, server logs, samples).
pub struct Job {
    pub server: &'static str,
    pub attack: &'static str,
    pub mode: Mode,
    pub slug: String,
    pub work: PathBuf,
    pub evidence: PathBuf,
    /// Policy added for this job only (e.g. STALLGUARD_PER_SOURCE), over POLICY.
    pub extra_env: Vec<(String, String)>,
}

pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

impl Job {
    pub fn new(server: &'static str, attack: &'static str, mode: Mode) -> Job {
        let slug = format!("{}-{}-{}", slug(server), slug(attack), mode.label());
        let work = work_root().join(&slug);
        let evidence = evidence_root().join(&slug);
        for d in [&work, &evidence] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
        }
        Job {
            server,
            attack,
            mode,
            slug,
            work,
            evidence,
            extra_env: Vec::new(),
        }
    }

    pub fn id(&self) -> String {
        format!("{} / {} / {}", self.server, self.attack, self.mode.label())
    }

    pub fn guard_log(&self) -> PathBuf {
        self.evidence.join("guard.log")
    }

    /// The guard's environment for this job (None when unguarded).
    pub fn guard_env(&self) -> Option<Vec<(String, String)>> {
        if !self.mode.guarded() {
            return None;
        }
        let mut env = vec![
            ("LD_PRELOAD".to_string(), shim().display().to_string()),
            (
                "STALLGUARD_LOG_FILE".to_string(),
                self.guard_log().display().to_string(),
            ),
        ];
        env.extend(POLICY.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env.extend(self.extra_env.iter().cloned());
        // For experiments: STALLGUARD_REAL_EXTRA="STALLGUARD_X=v STALLGUARD_Y=w" adds to (or
        // overrides) the policy of every guarded run.
        for kv in std::env::var("STALLGUARD_REAL_EXTRA")
            .unwrap_or_default()
            .split_whitespace()
        {
            if let Some((k, v)) = kv.split_once('=') {
                env.retain(|(e, _)| e != k);
                env.push((k.to_string(), v.to_string()));
            }
        }
        Some(env)
    }

    pub fn file(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.evidence.join(name)).unwrap()
    }

    /// The variables every web server's config template takes (PORT, DOCROOT, WORK), then
    /// `more`.
    pub fn site_vars<const N: usize>(
        &self,
        port: u16,
        more: [(&'static str, String); N],
    ) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("PORT", port.to_string()),
            ("DOCROOT", docroot().display().to_string()),
            ("WORK", self.work.display().to_string()),
        ];
        vars.extend(more);
        vars
    }

    /// Renders the template tests/real/`template` with `vars` into `file` in this job's work
    /// directory; returns its path.
    pub fn config(&self, file: &str, template: &str, vars: &[(&str, String)]) -> PathBuf {
        let path = self.work.join(file);
        std::fs::write(&path, render(template, vars)).unwrap();
        path
    }
}

// ------------------------------------------------------------------ processes

/// Server-side TCP connections on `port` that the server still holds (ESTABLISHED or
/// CLOSE_WAIT), accepted or still in the listen backlog, from /proc/net/tcp.
pub fn held_connections(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
                && (f[3] == "01" || f[3] == "08")
        })
        .count()
}

fn listening(port: u16) -> bool {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[3] == "0A" && f[1] == format!("0100007F:{port:04X}")
    })
}

// ------------------------------------------------------------------ servers

/// A running server: its process, the port it listens on, and the guard log of this job.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    pub name: &'static str,
    pub guard_log: Option<PathBuf>,
    pub stderr: PathBuf,
}

impl Server {
    pub fn pid(&self) -> i32 {
        self.proc.pid() as i32
    }

    /// Starts `cmd(port)` and waits until it listens on 127.0.0.1:port (another free port and
    /// another try if something else took the port first).
    pub fn start(job: &Job, name: &'static str, mut cmd: impl FnMut(u16) -> Command) -> Server {
        let mut errors = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let stderr = job.evidence.join(format!("{name}.out"));
            let out = std::fs::File::create(&stderr).unwrap();
            let mut c = cmd(port);
            c.stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            let mut proc = Proc::owned(name, &mut c);
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end && !listening(port) && proc.exited().is_none() {
                thread::sleep(Duration::from_millis(25));
            }
            if listening(port) && proc.exited().is_none() {
                return Server {
                    proc,
                    port,
                    name,
                    guard_log: job.mode.guarded().then(|| job.guard_log()),
                    stderr,
                };
            }
            let _ = writeln!(
                errors,
                "attempt {attempt} on port {port}: {:?}\n{}",
                proc.exited(),
                tail(&std::fs::read_to_string(&stderr).unwrap_or_default(), 10)
            );
        }
        panic!("{}: {name} did not start:\n{errors}", job.id());
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

fn with_guard(job: &Job, cmd: &mut Command) {
    if let Some(env) = job.guard_env() {
        cmd.envs(env);
    }
}

/// civetweb, 8 worker threads, CGI; the guard preloaded when `guard` and the job is guarded.
pub fn civetweb(job: &Job, name: &'static str, guard: bool) -> Server {
    Server::start(job, name, |port| {
        let conf = job.config(
            &format!("{name}.conf"),
            "civetweb.conf.in",
            &job.site_vars(port, []),
        );
        let mut cmd = Command::new(CIVETWEB);
        cmd.arg(&conf).current_dir(&job.work);
        if guard {
            with_guard(job, &mut cmd);
        }
        cmd
    })
}

/// civetweb as stunnel's backend: never guarded (the guard goes into stunnel).
pub fn civetweb_backend(job: &Job) -> Server {
    civetweb(job, "civetweb-backend", false)
}

/// mini_httpd: fork per connection, no cap; CGI through two interposer processes.
pub fn mini_httpd(job: &Job) -> Server {
    Server::start(job, "mini_httpd", |port| {
        let conf = job.config(
            "mini_httpd.conf",
            "mini_httpd.conf.in",
            &job.site_vars(port, [("USER", user_name())]),
        );
        let mut cmd = Command::new(MINI_HTTPD);
        cmd.arg("-C").arg(&conf).current_dir(&job.work);
        with_guard(job, &mut cmd);
        cmd
    })
}

/// stunnel4 (TLS, thread per connection) in front of `backend`; the guard goes into stunnel.
pub fn stunnel(job: &Job, backend: &Server) -> Server {
    let (cert, key) = tls_cert();
    Server::start(job, "stunnel4", |port| {
        let conf = job.config(
            "stunnel.conf",
            "stunnel.conf.in",
            &[
                ("PORT", port.to_string()),
                ("BACKEND_PORT", backend.port.to_string()),
                ("CERT", cert.display().to_string()),
                ("KEY", key.display().to_string()),
            ],
        );
        let mut cmd = Command::new(STUNNEL);
        cmd.arg(&conf).current_dir(&job.work);
        with_guard(job, &mut cmd);
        cmd
    })
}

/// xinetd in the foreground with a private config; micro-httpd per connection on fds 0/1/2.
/// xinetd itself is never guarded: its service gets the guard through the `env` attribute.
pub fn xinetd_micro_httpd(job: &Job) -> Server {
    Server::start(job, "xinetd", |port| {
        let env = job
            .guard_env()
            .map(|vars| {
                let list: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("env         = {}", list.join(" "))
            })
            .unwrap_or_default();
        let conf = job.config(
            "xinetd.conf",
            "xinetd.conf.in",
            &job.site_vars(
                port,
                [
                    ("USER", user_name()),
                    ("MICRO_HTTPD", MICRO_HTTPD.to_string()),
                    ("ENV", env),
                ],
            ),
        );
        let mut cmd = Command::new(XINETD);
        cmd.arg("-dontfork")
            .arg("-f")
            .arg(&conf)
            .arg("-filelog")
            .arg(job.evidence.join("xinetd.log"))
            .arg("-pidfile")
            .arg(job.work.join("xinetd.pid"))
            .current_dir(&job.work);
        cmd
    })
}

// ------------------------------------------------------------------ legitimate clients

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scheme {
    Http,
    Https,
}

/// One legitimate request for index.html: Ok when the whole page came back within `within`.
pub fn probe_once(scheme: Scheme, port: u16, within: Duration) -> Result<(), String> {
    match scheme {
        Scheme::Http => http_get(port, "/index.html", within).and_then(|(status, body)| {
            if status == 200 && body.contains(PROBE_BODY) {
                Ok(())
            } else {
                Err(format!("status {status}, {} body bytes", body.len()))
            }
        }),
        Scheme::Https => curl_probe(port, within),
    }
}

/// A plain HTTP/1.0 GET with a deadline; returns (status, body).
pub fn http_get(port: u16, path: &str, within: Duration) -> Result<(u16, String), String> {
    let deadline = Instant::now() + within;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(within)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no full answer in {within:?} ({} bytes)",
                buf.len()
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e} after {} bytes", buf.len())),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {:?}", tail(&text, 3)))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `curl -k` for https://127.0.0.1:port/index.html, bounded by `within` (and killed by PID if
/// it overruns).
fn curl_probe(port: u16, within: Duration) -> Result<(), String> {
    let out = std::env::temp_dir().join(format!(
        "sg-probe-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    let mut cmd = Command::new(CURL);
    cmd.args(["-k", "-s", "-S", "-m"])
        .arg(format!("{}", within.as_secs_f64()))
        .arg("-o")
        .arg(&out)
        .arg(format!("https://127.0.0.1:{port}/index.html"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut p = Proc::owned("curl", &mut cmd);
    let st = p.wait_exit(within + Duration::from_secs(1));
    let body = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    match st {
        Some(st) if st.success() && body.contains(PROBE_BODY) => Ok(()),
        Some(st) => Err(format!("curl {st}, {} body bytes", body.len())),
        None => Err("curl overran its own timeout".into()),
    }
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// When it started, from the start of the attack.
    pub at_ms: u64,
    pub ok: bool,
    pub ms: u64,
    pub err: String,
}

/// A legitimate client probing side by side with the attack: one request every 500 ms, each
/// in its own thread so a hanging one does not delay the schedule.
pub struct Prober {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Probe>>>,
    handle: Option<JoinHandle<()>>,
}

/// How long after its probe ends a fork server's child serving it may still be seen alive
/// (it exits after its answer; on a loaded machine, not at once).
const PROBE_CHILD_LINGER: Duration = Duration::from_secs(1);

impl Prober {
    /// `live` counts the probes in flight or ended less than `PROBE_CHILD_LINGER` ago: the
    /// fork server's processes a sample may see on their account.
    pub fn start(scheme: Scheme, port: u16, t0: Instant, live: Arc<AtomicUsize>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let (stop2, results2) = (stop.clone(), results.clone());
        let handle = thread::spawn(move || {
            let mut workers = Vec::new();
            let mut next = t0;
            while !stop2.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < next {
                    thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += PROBE_EVERY;
                let (results, live) = (results2.clone(), live.clone());
                live.fetch_add(1, Ordering::SeqCst);
                workers.push(thread::spawn(move || {
                    let started = Instant::now();
                    let r = probe_once(scheme, port, PROBE_TIMEOUT);
                    results.lock().unwrap().push(Probe {
                        at_ms: started.duration_since(t0).as_millis() as u64,
                        ok: r.is_ok(),
                        ms: started.elapsed().as_millis() as u64,
                        err: r.err().unwrap_or_default(),
                    });
                    thread::sleep(PROBE_CHILD_LINGER);
                    live.fetch_sub(1, Ordering::SeqCst);
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Prober {
            stop,
            results,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut v = self.results.lock().unwrap().clone();
        v.sort_by_key(|p| p.at_ms);
        v
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// (served, total) among probes started in [from_s, to_s).
pub fn served(probes: &[Probe], from_s: f64, to_s: f64) -> (usize, usize) {
    let window: Vec<&Probe> = probes
        .iter()
        .filter(|p| (p.at_ms as f64) >= from_s * 1000.0 && (p.at_ms as f64) < to_s * 1000.0)
        .collect();
    (window.iter().filter(|p| p.ok).count(), window.len())
}

// ------------------------------------------------------------------ sampling

#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub at_ms: u64,
    /// Server-side connections still held on the port.
    pub held: usize,
    /// Live descendants of the server's root process.
    pub procs: usize,
    /// Probes live while the sample was taken (see `Prober::start`): a fork server's
    /// processes serving the legitimate client, not the attack.
    pub probes: usize,
}

impl Sample {
    /// Descendants beyond those the probes may account for.
    pub fn procs_beyond_probes(&self) -> usize {
        self.procs.saturating_sub(self.probes)
    }
}

/// Every descendant a [`Sampler`] saw: pid → comm.
pub type Seen = HashMap<i32, String>;

/// Samples, every 500 ms, what the server holds: connections on its port and (fork servers)
/// its descendant processes; remembers every descendant seen (pid → comm) so reap lines can be
/// matched to the process that logged them.
///
/// A full sample reads every process and /proc/net/tcp (thousands of lines once the attacks
/// have run): on a loaded machine one takes seconds, and a short-lived child (a CGI's
/// grandchild that reads a slow body, then is reaped) could fall between two. So a second
/// thread walks only the server's tree (`/proc/PID/task/TID/children`) every 50 ms for the
/// pid → comm record.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(Vec<Sample>, Seen)>>,
    walker: Option<JoinHandle<Seen>>,
}

/// `root`'s live descendants with their comm, from the kernel's children lists.
fn tree_of(root: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue; // gone
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
                out.push((c, comm.trim().to_string()));
                queue.push_back(c);
            }
        }
    }
    out
}

impl Sampler {
    /// `probes`: the prober's count of live probes (see `Prober::start`).
    pub fn start(port: u16, root: i32, t0: Instant, probes: Arc<AtomicUsize>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = thread::spawn(move || {
            let mut samples = Vec::new();
            let mut seen = HashMap::new();
            while !stop2.load(Ordering::SeqCst) {
                // A scan of /proc takes a while on a loaded machine: a probe live at either
                // end of it may have been seen.
                let live_before = probes.load(Ordering::SeqCst);
                let table = process_table();
                let tree = descendants(&table, root);
                for pid in &tree {
                    seen.insert(*pid, table[pid].1.clone());
                }
                samples.push(Sample {
                    at_ms: t0.elapsed().as_millis() as u64,
                    held: held_connections(port),
                    procs: tree.len(),
                    probes: live_before.max(probes.load(Ordering::SeqCst)),
                });
                thread::sleep(Duration::from_millis(500));
            }
            (samples, seen)
        });
        let stop3 = stop.clone();
        let walker = thread::spawn(move || {
            let mut seen = HashMap::new();
            while !stop3.load(Ordering::SeqCst) {
                // The latest comm wins: a child seen before its exec is seen after it too.
                seen.extend(tree_of(root));
                thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        Sampler {
            stop,
            handle: Some(handle),
            walker: Some(walker),
        }
    }

    pub fn stop(mut self) -> (Vec<Sample>, Seen) {
        self.stop.store(true, Ordering::SeqCst);
        let (samples, mut seen) = self.handle.take().unwrap().join().unwrap();
        for (pid, comm) in self.walker.take().unwrap().join().unwrap() {
            // The two disagree only across an exec (xinetd's child seen before it became
            // micro-httpd): keep the name after the exec.
            let e = seen.entry(pid).or_insert_with(|| comm.clone());
            if *e != comm && e == "xinetd" {
                *e = comm;
            }
        }
        (samples, seen)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(w) = self.walker.take() {
            let _ = w.join();
        }
    }
}

/// Samples taken in [from_s, to_s).
pub fn window(samples: &[Sample], from_s: f64, to_s: f64) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| (s.at_ms as f64) >= from_s * 1000.0 && (s.at_ms as f64) < to_s * 1000.0)
        .cloned()
        .collect()
}

/// The sample nearest to `at_s`.
pub fn at(samples: &[Sample], at_s: f64) -> Option<Sample> {
    samples
        .iter()
        .min_by_key(|s| (s.at_ms as i64 - (at_s * 1000.0) as i64).abs())
        .cloned()
}

/// Descendant count of `root` once it has settled (the lowest of a few samples): the baseline a
/// fork server returns to.
pub fn settled_procs(root: i32) -> usize {
    (0..5)
        .map(|_| {
            thread::sleep(Duration::from_millis(100));
            descendants(&process_table(), root).len()
        })
        .min()
        .unwrap()
}

// ------------------------------------------------------------------ attacks

/// slowhttptest, with its CSV/HTML (`-g -o`) and its output kept in the job's evidence dir.
pub struct Slowhttptest {
    proc: Proc,
    prefix: PathBuf,
    out: PathBuf,
}

#[derive(Default, Clone, Debug)]
pub struct SlowReport {
    /// "Hit test time limit", "No open connections left", …
    pub exit: String,
    pub ended_s: Option<u64>,
    /// (second, closed, pending, connected, service available) rows of its CSV.
    pub csv: Vec<[u64; 5]>,
    pub summary: String,
}

impl SlowReport {
    pub fn short(&self) -> String {
        let what = match self.exit.as_str() {
            "Hit test time limit" => "time limit",
            "No open connections left" => "all closed",
            "" => "no exit line",
            other => other,
        };
        match self.ended_s {
            Some(s) => format!("{what}@{s}s"),
            None => what.to_string(),
        }
    }
}

impl Slowhttptest {
    pub fn start(job: &Job, args: &[String]) -> Slowhttptest {
        let prefix = job.evidence.join("slowhttptest");
        let out = job.evidence.join("slowhttptest.out");
        let f = std::fs::File::create(&out).unwrap();
        let mut cmd = Command::new(SLOWHTTPTEST);
        cmd.args(args)
            .arg("-g")
            .arg("-o")
            .arg(&prefix)
            .current_dir(&job.work)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        std::fs::write(
            job.evidence.join("slowhttptest.cmd"),
            format!(
                "{SLOWHTTPTEST} {} -g -o {}\n",
                args.join(" "),
                prefix.display()
            ),
        )
        .unwrap();
        Slowhttptest {
            proc: Proc::owned("slowhttptest", &mut cmd),
            prefix,
            out,
        }
    }

    /// Waits for it to end by itself (it stops at `-l`), killing it after `within`.
    pub fn finish(mut self, within: Duration) -> SlowReport {
        let _ = self.proc.wait_exit(within);
        drop(self.proc);
        let text = strip_ansi(&std::fs::read_to_string(&self.out).unwrap_or_default());
        let exit = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Exit status:"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let ended_s = text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Test ended on ")
                .and_then(|r| r.split("th second").next())
                .and_then(|n| n.trim().parse().ok())
        });
        let csv_text =
            std::fs::read_to_string(self.prefix.with_extension("csv")).unwrap_or_default();
        let csv = csv_text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let v: Vec<u64> = l.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                (v.len() == 5).then(|| [v[0], v[1], v[2], v[3], v[4]])
            })
            .collect();
        let summary = format!(
            "slowhttptest ({}): exit={exit:?} ended={ended_s:?}s\n{}\ncsv tail (Seconds,Closed,Pending,Connected,Service Available):\n{}",
            self.out.display(),
            tail(&text, 12),
            tail(&csv_text, 6)
        );
        SlowReport {
            exit,
            ended_s,
            csv,
            summary,
        }
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Clients that complete TCP and never send a byte (for TLS: never start the handshake).
/// `cut()` tells how many the server has closed or reset.
pub struct SilentClients {
    streams: Vec<TcpStream>,
}

impl SilentClients {
    pub fn connect(port: u16, count: usize) -> SilentClients {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let streams = (0..count)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok())
            .collect();
        SilentClients { streams }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn cut(&self) -> usize {
        self.streams.iter().filter(|s| peer_closed(s)).count()
    }
}

// ------------------------------------------------------------------ the guard log

pub fn events(log: &Path, event: &str) -> Vec<Event> {
    events_in(&std::fs::read_to_string(log).unwrap_or_default(), event)
}

/// "request=24 write_stall=1"
pub fn reason_counts(reaps: &[Event]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reaps {
        *counts
            .entry(r.get("reason").map(String::as_str).unwrap_or("?"))
            .or_default() += 1;
    }
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ------------------------------------------------------------------ outcomes and the matrix

/// What one job measured, and which of its checks failed.
#[derive(Default)]
pub struct Outcome {
    pub id: String,
    pub server: &'static str,
    pub attack: &'static str,
    pub mode: Option<Mode>,
    pub legit: bool,
    /// Legitimate probes served in the second half of the attack.
    pub served: Option<(usize, usize)>,
    /// Reap lines of the guard log (guarded runs).
    pub reaps: Option<Vec<Event>>,
    /// Connections the server still held, and its descendant processes above the baseline, at
    /// three quarters of the attack.
    pub held: Option<usize>,
    pub procs: Option<usize>,
    /// slowhttptest's end (or the transfer's summary for a legitimate cell).
    pub note: String,
    pub failures: Vec<String>,
    /// Guard log tail, slowhttptest summary, server output: attached to every failure.
    pub context: String,
    pub secs: f64,
}

impl Outcome {
    pub fn new(job: &Job) -> Outcome {
        Outcome {
            id: job.id(),
            server: job.server,
            attack: job.attack,
            mode: Some(job.mode),
            ..Outcome::default()
        }
    }

    /// Records a failed check (the job goes on, so the table is complete).
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    /// The evidence attached to every failure message of this job.
    pub fn attach(&mut self, job: &Job, servers: &[&Server], slow: Option<&SlowReport>) {
        let mut c = String::new();
        let log = std::fs::read_to_string(job.guard_log()).unwrap_or_default();
        // Every process of an inetd service logs a start line: leave them out of the tail.
        let starts = log.lines().filter(|l| l.contains(" event=start ")).count();
        let rest: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains(" event=start "))
            .collect();
        let _ = writeln!(
            c,
            "--- guard log {} ({} lines; {starts} start lines left out; last 15 others):\n{}",
            job.guard_log().display(),
            log.lines().count(),
            if job.mode.guarded() {
                tail(&rest.join("\n"), 15)
            } else {
                "(unguarded run: no guard)".into()
            }
        );
        match slow {
            Some(s) => {
                let _ = writeln!(c, "--- {}", s.summary);
            }
            None => {
                let _ = writeln!(c, "--- (no slowhttptest in this cell)");
            }
        }
        for s in servers {
            let out = std::fs::read_to_string(&s.stderr).unwrap_or_default();
            let _ = writeln!(
                c,
                "--- {} pid {} port {} output ({}):\n{}",
                s.name,
                s.pid(),
                s.port,
                s.stderr.display(),
                tail(&out, 5)
            );
        }
        let _ = writeln!(c, "--- evidence: {}", job.evidence.display());
        self.context = c;
    }
}

/// A cell of the matrix: a server, what is done to it, and the function that does it in a mode.
pub struct Cell {
    pub server: &'static str,
    pub attack: &'static str,
    /// Legitimate-traffic cells run guarded only; attack cells run in both modes.
    pub legit: bool,
    /// Its guarded run is queued last and runs with no other job beside it (see the cell).
    pub alone: bool,
    pub run: fn(&Job) -> Outcome,
}

impl Cell {
    pub fn modes(&self) -> &'static [Mode] {
        if self.legit {
            &[Mode::Guarded]
        } else {
            &[Mode::Unguarded, Mode::Guarded]
        }
    }
}

fn selected(cell: &Cell) -> bool {
    let Ok(filter) = std::env::var("STALLGUARD_REAL_CELLS") else {
        return true;
    };
    let name = format!("{}-{}", slug(cell.server), slug(cell.attack));
    filter
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .any(|f| name.contains(&slug(f)))
}

/// Runs every (selected) cell in every mode, STALLGUARD_REAL_JOBS (default 6) at a time, prints
/// the table (to stdout with STALLGUARD_MATRIX=1, else stderr; always to
/// target/real-evidence/matrix.txt), then fails listing every failed check of every job.
pub fn run_matrix(cells: &[Cell]) {
    require_tools();
    let _lock = exclusive_run_lock();
    let _ = shim();
    docroot();
    tls_cert();
    let started = Instant::now();
    let mut queue: VecDeque<(usize, Mode)> = VecDeque::new();
    let alone = |i: usize, m: Mode| cells[i].alone && m == Mode::Guarded;
    // Attack cells first (they are the long ones), both modes of a cell side by side; the runs
    // that must be alone last.
    for legit in [false, true] {
        for (i, c) in cells.iter().enumerate() {
            if c.legit == legit && selected(c) {
                for &m in c.modes() {
                    if !alone(i, m) {
                        queue.push_back((i, m));
                    }
                }
            }
        }
    }
    for (i, c) in cells.iter().enumerate() {
        if selected(c) && c.modes().contains(&Mode::Guarded) && alone(i, Mode::Guarded) {
            queue.push_back((i, Mode::Guarded));
        }
    }
    let exclusive = std::sync::RwLock::new(());
    assert!(!queue.is_empty(), "STALLGUARD_REAL_CELLS selected no cell");
    let total = queue.len();
    let jobs = (env_num("STALLGUARD_REAL_JOBS", 6) as usize).clamp(1, 32);
    eprintln!(
        "[real] {total} runs of {} s attacks, {jobs} at a time; evidence in {}",
        attack_secs(),
        evidence_root().display()
    );
    let queue = Mutex::new(queue);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some((i, mode)) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let cell = &cells[i];
                // Read side for ordinary runs, write side for a run that must be alone.
                let (_shared, _alone) = if alone(i, mode) {
                    (
                        None,
                        Some(exclusive.write().unwrap_or_else(|e| e.into_inner())),
                    )
                } else {
                    (
                        Some(exclusive.read().unwrap_or_else(|e| e.into_inner())),
                        None,
                    )
                };
                let t = Instant::now();
                let job = Job::new(cell.server, cell.attack, mode);
                let id = job.id();
                let mut o = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (cell.run)(&job)
                })) {
                    Ok(o) => o,
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into());
                        let mut o = Outcome::new(&job);
                        o.legit = cell.legit;
                        o.failures.push(format!("the cell panicked: {msg}"));
                        o.attach(&job, &[], None);
                        o
                    }
                };
                o.legit = cell.legit;
                o.secs = t.elapsed().as_secs_f64();
                let mut r = results.lock().unwrap();
                eprintln!(
                    "[real] {:>2}/{total} {id}: {} ({:.0} s){}",
                    r.len() + 1,
                    if o.failures.is_empty() {
                        "ok"
                    } else {
                        "FAILED"
                    },
                    o.secs,
                    o.failures
                        .iter()
                        .map(|f| format!("\n[real]        {f}"))
                        .collect::<String>()
                );
                r.push((i, o));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, o)| (*i, o.mode));
    let table = render_table(cells, &results, started.elapsed());
    let _ = std::fs::create_dir_all(evidence_root());
    std::fs::write(evidence_root().join("matrix.txt"), &table).unwrap();
    if std::env::var("STALLGUARD_MATRIX").is_ok_and(|v| v == "1") {
        println!("\n{table}");
    } else {
        eprintln!("\n{table}");
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, o)| !o.failures.is_empty())
        .map(|(_, o)| {
            format!(
                "=== {} FAILED:\n  - {}\n{}",
                o.id,
                o.failures.join("\n  - "),
                o.context
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} real-server runs failed:\n\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}

/// Two runs at once (say `make test` in one shell and `make matrix` in another) would share
/// target/real-work and target/real-evidence: the second waits for the first.
fn exclusive_run_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(evidence_root()).unwrap();
    let path = evidence_root().join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "[real] another real-server run holds {}: waiting for it",
            path.display()
        );
        assert_eq!(
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) },
            0,
            "flock"
        );
    }
    f
}

fn frac(v: Option<(usize, usize)>) -> String {
    v.map(|(a, b)| format!("{a}/{b}"))
        .unwrap_or_else(|| "-".into())
}

fn opt(v: Option<usize>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
}

/// server × attack → probes served in the second half (unguarded / guarded), connections
/// reaped and their reasons (guard log), what the server still held at 3/4 of the attack.
pub fn render_table(cells: &[Cell], results: &[(usize, Outcome)], took: Duration) -> String {
    let mut rows: Vec<[String; 9]> = vec![[
        "server".into(),
        "attack".into(),
        "served 2nd half u / g".into(),
        "reaped".into(),
        "reasons".into(),
        "held@3/4 u / g".into(),
        "procs@3/4 u / g".into(),
        "slowhttptest u / g".into(),
        "result".into(),
    ]];
    for (i, cell) in cells.iter().enumerate() {
        let of = |m: Mode| results.iter().find(|(j, o)| *j == i && o.mode == Some(m));
        let (u, g) = (
            of(Mode::Unguarded).map(|r| &r.1),
            of(Mode::Guarded).map(|r| &r.1),
        );
        if u.is_none() && g.is_none() {
            continue;
        }
        let pair = |f: &dyn Fn(&Outcome) -> String| {
            if cell.legit {
                g.map(f).unwrap_or_default()
            } else {
                format!(
                    "{} / {}",
                    u.map(f).unwrap_or_else(|| "?".into()),
                    g.map(f).unwrap_or_else(|| "?".into())
                )
            }
        };
        let reaps = g.and_then(|o| o.reaps.as_ref());
        let ok = u.is_none_or(|o| o.failures.is_empty()) && g.is_none_or(|o| o.failures.is_empty());
        rows.push([
            cell.server.into(),
            cell.attack.into(),
            if cell.legit {
                "(legit client)".into()
            } else {
                pair(&|o| frac(o.served))
            },
            reaps
                .map(|r| r.len().to_string())
                .unwrap_or_else(|| "-".into()),
            reaps
                .map(|r| reason_counts(r))
                .unwrap_or_else(|| "-".into()),
            if cell.legit {
                "".into()
            } else {
                pair(&|o| opt(o.held))
            },
            if cell.legit {
                "".into()
            } else {
                pair(&|o| opt(o.procs))
            },
            pair(&|o| o.note.clone()),
            if ok { "ok".into() } else { "FAIL".into() },
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap())
        .collect();
    let mut out = format!(
        "stallguard real-server matrix ({} s attacks, policy {}; took {:.0} s)\n",
        attack_secs(),
        POLICY
            .iter()
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("STALLGUARD_")))
            .collect::<Vec<_>>()
            .join(" "),
        took.as_secs_f64()
    );
    let legend = "served: legitimate probes (one per 500 ms, 3 s each) started in the second half \
of the attack, unguarded / guarded\nreaped, reasons: reap lines in the guarded run's guard log\n\
held@3/4: server-side connections on the port at 3/4 of the attack (queued probes included)\n\
procs@3/4: the fork server's processes above its baseline at 3/4 of the attack\n\
slowhttptest: how it ended (`all closed`: every attack connection was cut) and when; avail: \
rows of its CSV in the second half where its own probe found the service available\n";
    for (n, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if n == 0 {
            let _ = writeln!(
                out,
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    out.push_str(legend);
    out
}
