//! What a new operator tripped over (issue 15): an ancestor pid standing for every guarded
//! descendant, `run --check` passing a log file the library cannot open, a fresh server that
//! looks unguarded, monitor mode shown as reaped, two definitions of `reap --stuck`, `top` at
//! 80 columns, and `metrics` losing a restarted server. Self-contained: fake segments from
//! `fake/`, servers started here with the library preloaded directly.

mod fake;

use fake::{rec, sleeper, Fake};
use stallguard_shm::{
    FLAG_EXEMPT, FLAG_REAPED, FLAG_WOULD_REAP, REQUEST_FD, TURN_CLIENT, TURN_WRITING,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn library() -> PathBuf {
    let p = repo().join("target/release/libstallguard.so");
    assert!(p.exists(), "{} missing: run `make` first", p.display());
    p.canonicalize().unwrap()
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = repo()
        .join("target/test-scratch")
        .join(format!("operator-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `stallguard ARGS` at 80 columns: (exit status, stdout, stderr).
fn sg(args: &[&str]) -> (i32, String, String) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_stallguard"))
        .args(args)
        .env("STALLGUARD_LIB", library())
        .env("COLUMNS", "80")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
                == Some(pid)
        })
        .collect();
    out.sort_unstable();
    out
}

/// A shell with two sleeping children, all ended when dropped (by pid).
struct Family {
    parent: Child,
    kids: Vec<u32>,
}

impl Family {
    fn start() -> Family {
        let parent = Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60 & wait"])
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let mut kids = children(parent.id());
        while kids.len() < 2 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
            kids = children(parent.id());
        }
        assert_eq!(kids.len(), 2, "{kids:?}");
        Family { parent, kids }
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        for k in &self.kids {
            unsafe { libc::kill(*k as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.parent.kill();
        let _ = self.parent.wait();
    }
}

#[test]
fn an_ancestor_pid_covers_descendants_only_with_tree() {
    let fam = Family::start();
    let parent = fam.parent.id().to_string();
    let fakes: Vec<Fake> = fam.kids.iter().map(|k| Fake::create(*k)).collect();
    fakes[0].set_policy("first_byte=1s action=shutdown");
    fakes[1].set_policy("first_byte=9s action=log");
    for f in &fakes {
        f.set_records(&[rec(5, TURN_CLIENT, 60_000)]);
    }

    // Without --tree the parent is not guarded: nothing is shown, nothing is asked.
    let (code, _, err) = sg(&["top", "--once", &parent]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--tree"), "{err}");
    for k in &fam.kids {
        assert!(err.contains(&k.to_string()), "{err}");
    }
    let (code, out, err) = sg(&["reap", &parent, "--stuck"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("--tree"), "{err}");
    for f in &fakes {
        assert_eq!(f.header().mailbox.head.load(Ordering::Acquire), 0);
    }
    let (code, _, err) = sg(&["metrics", &parent]);
    assert_eq!(code, 1, "{err}");

    // With --tree: both children, each under its own policy.
    let (code, out, err) = sg(&["top", "--once", "--tree", &parent]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("policy: first_byte=1s action=shutdown"),
        "{out}"
    );
    assert!(out.contains("policy: first_byte=9s action=log"), "{out}");
    let (code, out, _) = sg(&["top", "--once", "--json", "--tree", &parent]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let policies: Vec<&str> = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(
        policies,
        ["first_byte=1s action=shutdown", "first_byte=9s action=log"]
    );
    // A child's own pid needs no --tree.
    let (code, out, _) = sg(&["top", "--once", &fam.kids[0].to_string()]);
    assert_eq!(code, 0);
    assert!(!out.contains("first_byte=9s"), "{out}");
}

#[test]
fn reap_stuck_has_one_definition_a_min_wait_and_says_why_not() {
    let owner = sleeper();
    let pid = owner.pid().to_string();
    let fake = Arc::new(Fake::create(owner.pid()));
    fake.set_records(&[
        rec(5, TURN_CLIENT, 12_000),
        rec(6, TURN_CLIENT, 3_000),
        rec(7, TURN_WRITING, 11_000),
        rec(8, TURN_CLIENT | FLAG_EXEMPT, 50_000),
        rec(9, 0, 40_000),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = fake::watcher(fake.clone(), stop.clone());
    let (code, out, err) = sg(&["reap", &pid, "--stuck"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("pid {pid}: reaped 2 connections"));
    let (code, out, err) = sg(&["reap", &pid, "--stuck", "--min-wait", "2s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("pid {pid}: reaped 3 connections"));
    // Nothing qualifies: say why.
    fake.set_records(&[
        rec(5, TURN_CLIENT, 4_200),
        rec(6, TURN_CLIENT, 300),
        rec(7, TURN_WRITING, 100),
    ]);
    let (code, out, _) = sg(&["reap", &pid, "--stuck"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!(
            "pid {pid}: reaped 0: 3 connections on the client's turn, none for ≥ 10s \
             (longest 4.2s; lower it with --min-wait)"
        )
    );
    stop.store(true, Ordering::Relaxed);
    let asked: Vec<(u32, i32)> = watcher
        .join()
        .unwrap()
        .into_iter()
        .map(|(_, kind, fd)| (kind, fd))
        .collect();
    let by_fd = |fds: &[i32]| fds.iter().map(|fd| (REQUEST_FD, *fd)).collect::<Vec<_>>();
    assert_eq!(asked, by_fd(&[5, 7, 5, 6, 7]));
    assert_eq!(
        sg(&["reap", &pid, "--min-wait", "2s"]).0,
        2,
        "needs --stuck"
    );

    // --help and the man page give the same definition.
    let (_, help, _) = sg(&["reap", "--help"]);
    let page = std::fs::read_to_string(repo().join("man/stallguard.1")).unwrap();
    for text in [&help, &page] {
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("on the client's turn (the server waits on the client, or a write is pending) for at least"),
            "{flat}"
        );
    }
}

#[test]
fn top_fits_80_columns_keeps_recent_reaps_labels_queued_sorts_and_filters() {
    let owner = sleeper();
    let pid = owner.pid().to_string();
    let fake = Fake::create(owner.pid());
    fake.set_policy(
        "first_byte=20s request=20s-40s,minrate=500 idle=1m write_stall=1m lifetime=off \
         action=shutdown tick=100ms adopt=on backstops=on socket_timeouts=off per_source=50 \
         defer_accept=8080 exempt=1 port9000=off port8080=\"first_byte=5s request=10s-20s\"",
    );
    let mut queued = rec(10, 0, 0);
    queued.bytes_in = 0;
    queued.bytes_out = 0;
    let mut big = rec(11, TURN_CLIENT, 1_500);
    big.bytes_in = 123_456_789;
    big.bytes_out = 987_654;
    big.time_left_ms = 18_500;
    big.peer_ip[..4].copy_from_slice(&[255, 255, 255, 255]);
    big.peer_port = 65535;
    fake.set_records(&[
        rec(5, TURN_CLIENT, 250_000),
        rec(6, TURN_CLIENT | FLAG_REAPED, 20_000),
        rec(7, TURN_WRITING | FLAG_WOULD_REAP, 61_000),
        queued,
        big,
    ]);
    fake.header().tracked.store(5, Ordering::Relaxed);
    fake.header().reaped[0].store(1, Ordering::Relaxed);
    fake.header().would_reap[3].store(1, Ordering::Relaxed);

    let (code, out, err) = sg(&["top", "--once", &pid]);
    assert_eq!(code, 0, "{err}");
    for l in out.lines() {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l:?}",
            l.chars().count()
        );
    }
    assert!(out.contains("recent reaps"), "{out}");
    assert!(out.contains("reaped pid"), "{out}");
    assert!(out.contains("would_reap pid"), "{out}");
    // Rows: FD is the first column with one process.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("FD "))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let fd_of = |row: &Vec<&str>| row[0].parse::<i32>().unwrap();
    assert_eq!(
        rows.iter().map(fd_of).collect::<Vec<_>>(),
        [5, 7, 6, 11, 10]
    );
    let row = |fd: i32| rows.iter().find(|r| fd_of(r) == fd).unwrap().clone();
    assert_eq!(row(10)[3], "queued", "{out}");
    assert!(out.contains("queued: accepted, not yet read"), "{out}");
    assert_eq!(row(7).last(), Some(&"would_reap"), "{out}");
    assert_eq!(row(6).last(), Some(&"reaped"), "{out}");
    assert_eq!(row(11)[1], "255.255.255.255:65535");

    let (_, out, _) = sg(&["top", "--once", "--sort", "in", &pid]);
    assert!(out.contains("sort: in"), "{out}");
    let first = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("FD "))
        .nth(1)
        .unwrap();
    assert!(first.trim_start().starts_with("11 "), "{out}");
    let (_, out, _) = sg(&["top", "--once", "--filter", "turn=queued", &pid]);
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("FD "))
        .skip(1)
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].trim_start().starts_with("10 "), "{out}");
    let (code, _, err) = sg(&["top", "--once", "--filter", "colour=red", &pid]);
    assert_eq!(code, 2);
    assert!(err.contains("turn=client"), "{err}");

    // JSON: would_reap is not reaped.
    let (_, out, _) = sg(&["top", "--once", "--json", &pid]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c7 = doc["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["fd"] == 7)
        .unwrap()
        .clone();
    assert_eq!(c7["would_reap"], true);
    assert_eq!(c7["reaped"], false);
    assert_eq!(doc["processes"][0]["comm"], "sleep");
}

/// The first line a child writes on a stream.
fn first_line(stream: impl Read) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// A C example server with the library preloaded directly; killed (by pid) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(name: &str, env: &[(&str, &str)]) -> Server {
        let exe = repo().join("target/c-examples").join(name);
        assert!(exe.exists(), "{} missing: run `make` first", exe.display());
        let mut cmd = Command::new(exe);
        cmd.arg("0").env("LD_PRELOAD", library());
        cmd.envs(env.iter().copied()).stdin(Stdio::null());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let line = first_line(child.stdout.take().unwrap());
        let port = line.trim().trim_start_matches("port=").parse().unwrap();
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn status_tells_a_fresh_guarded_server_from_an_unguarded_process() {
    // A preloaded program that has not listened yet (nor owns a connection): the library is
    // loaded, nothing is published; status reads the policy from its environment.
    let mut quiet = Command::new("sleep")
        .arg("60")
        .env("LD_PRELOAD", library())
        .env("STALLGUARD_IDLE", "15s")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = quiet.id().to_string();
    let end = Instant::now() + Duration::from_secs(5);
    let (mut code, mut out, mut err) = sg(&["status", &pid]);
    while !out.contains(": guarded") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        (code, out, err) = sg(&["status", &pid]);
    }
    let _ = quiet.kill();
    let _ = quiet.wait();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("pid {pid} (sleep): guarded")),
        "{out}"
    );
    assert!(
        out.contains(&format!("library: {}", library().display())),
        "{out}"
    );
    assert!(out.contains("idle=15s"), "{out}");
    assert!(out.contains("(from its environment)"), "{out}");
    assert!(out.contains("since: 20"), "{out}");

    // A server is published as soon as it listens, before its first connection.
    let server = Server::start("pool_server", &[("STALLGUARD_IDLE", "15s")]);
    let pid = server.child.id().to_string();
    let end = Instant::now() + Duration::from_secs(10);
    let mut out = String::new();
    while Instant::now() < end {
        out = sg(&["status", &pid]).1;
        if out.contains("watcher started") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.contains("watcher started"), "{out}");
    assert!(out.contains("idle=15s"), "{out}");
    assert!(out.contains("tracked 0"), "{out}");

    let sleeper = sleeper();
    let (code, out, _) = sg(&["status", &sleeper.pid().to_string()]);
    assert_eq!(code, 1);
    assert!(out.contains("not guarded"), "{out}");
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let (code, _, err) = sg(&["status", &gone.id().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("no process"), "{err}");
}

#[test]
fn monitor_mode_shows_would_reap_not_reaped() {
    let server = Server::start(
        "pool_server",
        &[
            ("STALLGUARD_ACTION", "log"),
            ("STALLGUARD_FIRST_BYTE", "1s"),
            ("STALLGUARD_TICK", "50ms"),
        ],
    );
    let pid = server.child.id().to_string();
    let client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let port = client.local_addr().unwrap().port();
    let end = Instant::now() + Duration::from_secs(15);
    let mut last = serde_json::Value::Null;
    while Instant::now() < end {
        let (code, out, _) = sg(&["top", "--once", "--json", &pid]);
        if code == 0 {
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            if let Some(c) = doc["connections"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["peer"] == format!("127.0.0.1:{port}"))
            {
                last = c.clone();
                if c["would_reap"] == true {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last["would_reap"], true, "{last}");
    assert_eq!(last["reaped"], false, "{last}");
    let (_, out, _) = sg(&["top", "--once", &pid]);
    assert!(out.contains("would_reap"), "{out}");
    assert!(!out.contains(" reaped\n"), "{out}");
}

#[test]
fn run_check_opens_the_log_file_as_the_library_will_and_reports_everything() {
    let (code, out, err) = sg(&["run", "--check", "--log-file", "/nonexistent/dir/x.log"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--log-file \"/nonexistent/dir/x.log\""),
        "{err}"
    );
    assert!(err.contains("LogsDirectory="), "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");
    // Not started either.
    let (code, _, _) = sg(&[
        "run",
        "--log-file",
        "/nonexistent/dir/x.log",
        "--",
        "/bin/true",
    ]);
    assert_eq!(code, 2);

    let dir = scratch_dir("check");
    let log = dir.join("guard.log");
    let log_text = log.to_str().unwrap();
    let (code, out, err) = sg(&[
        "run",
        "--check",
        "--log-file",
        log_text,
        "--exempt",
        "10.0.0.0/24,::1",
        "--metrics-file",
        "/run/stallguard-{pid}.prom",
        "--report",
        "30s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(log.exists(), "created, as the library would");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("first_byte="), "{out}");
    assert!(
        lines.contains(&"exempt peers: 10.0.0.0/24, ::1/128"),
        "{out}"
    );
    assert!(
        lines.contains(&format!("log file: {log_text}").as_str()),
        "{out}"
    );
    assert!(
        lines.contains(&"metrics file: /run/stallguard-{pid}.prom"),
        "{out}"
    );
    assert!(lines.contains(&"report period: 30s"), "{out}");
    assert_eq!(
        lines.last().copied(),
        Some(format!("ok: policy valid; would preload {}", library().display()).as_str())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of `sleep` under a name of our own (its comm), running.
fn named_sleeper(exe: &PathBuf) -> Child {
    Command::new(exe).arg("60").spawn().unwrap()
}

fn http_get(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn metrics_follow_a_program_by_name_and_pidfile_across_restarts() {
    let dir = scratch_dir("fleet");
    let name = format!("sgfl{}", std::process::id() % 100_000);
    let exe = dir.join(&name);
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let pidfile = dir.join("server.pid");

    let mut first = named_sleeper(&exe);
    let fake1 = Fake::create(first.id());
    fake1.header().reaped[0].store(4, Ordering::Relaxed);
    std::fs::write(&pidfile, format!("{}\n", first.id())).unwrap();

    let (code, out, err) = sg(&["metrics", "--name", &name]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "stallguard_reaped_total{{pid=\"{}\",comm=\"{name}\",reason=\"first_byte\"}} 4\n",
            first.id()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "stallguard_build_info{{version=\"{}\",segment_layout=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            stallguard_shm::VERSION
        )),
        "{out}"
    );

    let mut exporter = Command::new(env!("CARGO_BIN_EXE_stallguard"));
    exporter.args(["metrics", "--pidfile"]).arg(&pidfile);
    exporter.args(["--name", &name, "--listen", "127.0.0.1:0"]);
    let mut exporter = exporter
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(exporter.stderr.take().unwrap());
    assert!(line.contains("serving http://"), "{line}");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();
    let body = http_get(&addr);
    assert!(body.contains(&format!("pid=\"{}\"", first.id())), "{body}");

    // Restart under a new pid.
    drop(fake1);
    let _ = first.kill();
    let _ = first.wait();
    let mut second = named_sleeper(&exe);
    let _fake2 = Fake::create(second.id());
    std::fs::write(&pidfile, format!("{}\n", second.id())).unwrap();
    let body = http_get(&addr);
    assert!(body.contains(&format!("pid=\"{}\"", second.id())), "{body}");
    assert!(!body.contains(&format!("pid=\"{}\"", first.id())), "{body}");
    assert!(body.contains(&format!("comm=\"{name}\"")), "{body}");

    let _ = exporter.kill();
    let _ = exporter.wait();
    let _ = second.kill();
    let _ = second.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_come_from_the_command_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = sg(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["status", "min-wait", "tree", "pidfile", "first-byte"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
}
