//! The one process type of the tests: a program started by a test (a C example under the
//! guard or without it, `stallguard run`, an inetd-style service, a real server), with the
//! port it printed, its guard log and its stderr. Dropping it stops it by PID (SIGTERM, then
//! SIGKILL), and first its descendants when it owns a process tree.

use crate::logfmt::{events_in, Event};
use crate::paths::{example, scratch, shim};
use crate::procfs::{descendants, kill_pid, process_table};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The policy most tests use: short timers so a test takes seconds.
pub const FAST: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", "1s"),
    ("STALLGUARD_REQUEST", "2-4,minrate=100"),
    ("STALLGUARD_IDLE", "3s"),
    ("STALLGUARD_WRITE_STALL", "1s"),
    ("STALLGUARD_TICK", "100ms"),
];

/// Removes inherited `STALLGUARD_*` variables and `LD_PRELOAD` from a child's environment,
/// except those `cmd` sets itself: a test's own knobs (STALLGUARD_REAL_*, ...) are unknown
/// variables to the guard, which refuses to start (exit 2) in a preloaded child, and the
/// policy of the test run's own environment must not leak into a test's server.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    let set: Vec<std::ffi::OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    for (k, _) in std::env::vars_os() {
        let ours = k.to_string_lossy().starts_with("STALLGUARD_") || k == "LD_PRELOAD";
        if ours && !set.contains(&k) {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The policy-free part of a guarded environment: LD_PRELOAD and the log file.
pub fn guarded_env(log: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), shim().to_string_lossy().into_owned()),
        (
            "STALLGUARD_LOG_FILE".into(),
            log.to_string_lossy().into_owned(),
        ),
    ]
}

/// Makes `cmd` a guarded run: inherited STALLGUARD_* scrubbed, LD_PRELOAD and the log file
/// set, then the `policy` variables.
pub fn guard<'a>(cmd: &'a mut Command, log: &Path, policy: &[(&str, &str)]) -> &'a mut Command {
    scrub_env(cmd)
        .envs(guarded_env(log))
        .envs(policy.iter().copied())
}

/// A process a test started.
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// The port it printed (`port=N` on its first stdout line), or 0.
    pub port: u16,
    /// Its guard log (may never be written: unguarded, or no log file asked for).
    pub log: PathBuf,
    /// Where its stderr went, when a file.
    pub stderr: Option<PathBuf>,
    pub guarded: bool,
    /// Drop kills its descendants first (deepest first), by PID.
    tree: bool,
}

impl Proc {
    /// Starts `cmd` (inherited STALLGUARD_* scrubbed); with `port_line`, reads its first stdout
    /// line, which must be `port=N`. The caller sets stdin/stderr; `log` is the guard log the
    /// caller pointed it at (if any).
    pub fn launch(name: &str, cmd: Command, log: PathBuf, port_line: bool) -> Proc {
        Proc::launch_to(name, cmd, log, port_line, None)
    }

    fn launch_to(
        name: &str,
        mut cmd: Command,
        log: PathBuf,
        port_line: bool,
        stderr: Option<PathBuf>,
    ) -> Proc {
        scrub_env(&mut cmd);
        let guarded = cmd
            .get_envs()
            .any(|(k, v)| k == "LD_PRELOAD" && v.is_some());
        if port_line {
            cmd.stdout(Stdio::piped());
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut proc = Proc {
            child,
            name: name.to_string(),
            port: 0,
            log,
            stderr,
            guarded,
            tree: false,
        };
        if port_line {
            proc.read_port_line();
        }
        proc
    }

    /// Starts the C example `name PORT args…` (PORT 0: any free port); `policy` is None for an
    /// unguarded run, else the STALLGUARD_* variables beside LD_PRELOAD and the log file.
    pub fn start(name: &str, args: &[&str], policy: Option<&[(&str, &str)]>) -> Proc {
        Proc::start_on(0, name, args, policy)
    }

    /// Like `start`, on a given port (0: any free port).
    pub fn start_on(port: u16, name: &str, args: &[&str], policy: Option<&[(&str, &str)]>) -> Proc {
        let log = scratch(&format!("{name}.log"));
        let mut cmd = Command::new(example(name));
        cmd.arg(port.to_string())
            .args(args)
            .stderr(Stdio::inherit());
        if let Some(vars) = policy {
            guard(&mut cmd, &log, vars);
        }
        Proc::launch(name, cmd, log, true)
    }

    /// Starts `program args…` with `env` (whose guard log is `log`), stdin from /dev/null and
    /// stderr into a scratch file; with `port_line` waits for the `port=N` line.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        port_line: bool,
        log: &Path,
    ) -> Proc {
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        let stderr = scratch(&format!("{name}.stderr"));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .envs(env.iter().map(|(k, v)| (k, v)));
        Proc::launch_to(&name, cmd, log.to_path_buf(), port_line, Some(stderr))
    }

    /// A process that owns a tree (a real server with workers, inetd, a CGI): started with
    /// PR_SET_PDEATHSIG so the kernel kills it if the test process dies, and Drop kills its
    /// descendants (deepest first) before it.
    pub fn owned(name: &str, cmd: &mut Command) -> Proc {
        scrub_env(cmd);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl,
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
            port: 0,
            log: PathBuf::new(),
            stderr: None,
            guarded: false,
            tree: true,
        }
    }

    fn read_port_line(&mut self) {
        let mut line = String::new();
        BufReader::new(self.child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read port line");
        self.port = line
            .trim()
            .strip_prefix("port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} printed {line:?} instead of port=N; stderr: {}",
                    self.name,
                    self.stderr_text()
                )
            });
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Parsed `event=…` lines of the guard log.
    pub fn events(&self, event: &str) -> Vec<Event> {
        events_in(&self.log_text(), event)
    }

    /// Waits until the log holds at least `n` lines of `event`, up to `within`.
    pub fn wait_events(&self, event: &str, n: usize, within: Duration) -> Vec<Event> {
        let end = Instant::now() + within;
        loop {
            let e = self.events(event);
            if e.len() >= n || Instant::now() > end {
                return e;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// None while running; the exit status once it ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_alive(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Waits up to `within` for it to end.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let root = self.pid();
        if self.tree {
            for _ in 0..2 {
                let mut tree = descendants(&process_table(), root as i32);
                tree.reverse(); // deepest first, so parents can still reap them
                for pid in tree {
                    kill_pid(pid as u32, libc::SIGKILL);
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        kill_pid(root, libc::SIGTERM);
        if self.wait_exit(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// After a run against a server: lists `failures` on stderr, then asserts that the server
/// still runs (`exited` is None; SIGPIPE would be signal 13), said nothing on its stderr, and
/// that no client exchange failed (`wrong` of them did: `what`).
pub fn assert_run_clean(
    exited: Option<ExitStatus>,
    stderr: &str,
    failures: &[String],
    wrong: u64,
    what: &str,
) {
    for f in failures {
        eprintln!("  {f}");
    }
    assert!(
        exited.is_none(),
        "the server died: {exited:?} (SIGPIPE is signal 13); stderr: {stderr}"
    );
    assert_eq!(stderr.trim(), "", "the server complained on stderr");
    assert_eq!(wrong, 0, "{what}: {failures:?}");
}
