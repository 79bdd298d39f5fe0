//! `top`, `reap` and `metrics` against real guarded processes (started with `stallguard run`,
//! so they publish /dev/shm/stallguard-<pid>).

use stallguard_testkit::cli::*;
use stallguard_testkit::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn local_port(s: &TcpStream) -> u16 {
    s.local_addr().unwrap().port()
}

fn is_client_turn(c: &serde_json::Value) -> bool {
    c["turn"] == "client"
}

/// `stallguard run NAME ARGS` with patient timers, one silent client, and that client's
/// connection as `top` shows it once the server waits on it.
fn with_silent_client(name: &str, args: &[&str]) -> (Proc, TcpStream, serde_json::Value) {
    let server = stallguard_run(name, args, PATIENT);
    let client = silent_client(server.addr());
    let conn = wait_connection(
        server.pid(),
        local_port(&client),
        Duration::from_secs(20),
        is_client_turn,
    );
    (server, client, conn)
}

#[test]
fn top_shows_a_stalled_client_with_a_growing_wait() {
    let (server, client, first) = with_silent_client("pool_server", &[]);
    let port = local_port(&client);
    let w0 = first["waiting_ms"].as_u64().unwrap();
    assert_eq!(first["local_port"].as_u64(), Some(u64::from(server.port)));
    assert_eq!(first["pid"].as_u64(), Some(u64::from(server.pid())));
    assert_eq!(first["peer"], format!("127.0.0.1:{port}"));
    assert_eq!(first["view"], "hooks");
    let left = first["time_left_ms"].as_u64().expect("a timer runs");
    // The deadline is 120 s after the wait began: never more left than that, although the
    // shim's coarse clock stamps events at the end of its tick.
    assert!(left <= 120_000, "{first}");
    // Records are republished about once a second: wait for a later copy.
    let later = wait_connection(server.pid(), port, Duration::from_secs(15), |c| {
        c["waiting_ms"].as_u64().unwrap_or(0) >= w0 + 1000
    });
    assert_eq!(later["turn"], "client");
    assert!(
        later["time_left_ms"].as_u64().unwrap() < left,
        "{first} then {later}"
    );

    let doc = top_json(server.pid()).unwrap();
    assert!(doc["counters"]["tracked"].as_u64().unwrap() >= 1, "{doc}");
    assert!(doc["counters"]["waiting"].as_u64().unwrap() >= 1, "{doc}");
    assert!(doc["processes"][0]["policy"]
        .as_str()
        .unwrap()
        .contains("first_byte=2m"));

    // The text form, sorted by waiting time.
    let out = stallguard(&["top", "--once", &server.pid().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert!(screen.contains("TURN"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains(&format!("127.0.0.1:{port}")) && l.contains("client")),
        "{screen}"
    );
    drop(client);
}

#[test]
fn reap_fd_releases_the_connection() {
    let (server, mut client, conn) = with_silent_client("pool_server", &[]);
    let port = local_port(&client);
    let fd = conn["fd"].as_i64().unwrap().to_string();

    let out = stallguard(&["reap", &server.pid().to_string(), "--fd", &fd]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("reaped fd {fd}")),
        "{}",
        text(&out.stdout)
    );
    assert!(
        wait_cut(&mut client, Duration::from_secs(5)),
        "client not cut"
    );
    let reaps = server.wait_events("reap", 1, Duration::from_secs(5));
    assert!(
        reaps.iter().any(|r| r["reason"] == "manual"
            && r["fd"] == fd
            && r["peer"].ends_with(&format!(":{port}"))),
        "{}",
        server.log_text()
    );
    // The worker is free again: a request is served.
    let (status, body) = http_get(server.addr(), "/", "GET").unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");

    // An fd that is not a tracked connection: answered, nothing reaped, exit status 1.
    let out = stallguard(&["reap", &server.pid().to_string(), "--fd", "999"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("reaped 0"),
        "{}",
        text(&out.stdout)
    );
}

/// Issue 14 item 3: concurrent commands used to overwrite each other's request in a
/// single-slot mailbox (all but one lost). Twenty at once, each on its own connection: each
/// answered, each connection cut.
#[test]
fn twenty_concurrent_reaps_are_each_answered() {
    const N: usize = 20;
    let server = stallguard_run("pool_server", &["--threads", "24"], PATIENT);
    let mut clients: Vec<TcpStream> = (0..N).map(|_| silent_client(server.addr())).collect();
    let fds: Vec<String> = clients
        .iter()
        .map(|c| {
            let conn = wait_connection(
                server.pid(),
                local_port(c),
                Duration::from_secs(20),
                is_client_turn,
            );
            conn["fd"].as_i64().unwrap().to_string()
        })
        .collect();
    let pid = server.pid().to_string();
    let start = std::sync::Arc::new(std::sync::Barrier::new(N));
    let commands: Vec<_> = fds
        .iter()
        .map(|fd| {
            let (pid, fd, start) = (pid.clone(), fd.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let out = stallguard(&["reap", &pid, "--fd", &fd]);
                (fd, out)
            })
        })
        .collect();
    for c in commands {
        let (fd, out) = c.join().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "fd {fd}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(&format!("reaped fd {fd}\n")),
            "fd {fd}: {}",
            text(&out.stdout)
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(
            wait_cut(c, Duration::from_secs(5)),
            "client {i} (fd {}) not cut",
            fds[i]
        );
    }
    let manual = server
        .wait_events("reap", N, Duration::from_secs(5))
        .into_iter()
        .filter(|r| r["reason"] == "manual")
        .count();
    assert_eq!(manual, N, "{}", server.log_text());
}

/// A request the command gave up on (the process was stopped and did not answer in time) is
/// not carried out when the process continues: by then the fd may name another connection.
#[test]
fn a_request_given_up_on_is_not_carried_out_later() {
    let (server, mut client, conn) = with_silent_client("pool_server", &[]);
    let fd = conn["fd"].as_i64().unwrap().to_string();
    kill_pid(server.pid(), libc::SIGSTOP);
    let out = stallguard(&["reap", &server.pid().to_string(), "--fd", &fd]);
    kill_pid(server.pid(), libc::SIGCONT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("no answer"),
        "{}",
        text(&out.stderr)
    );
    let expired = server.wait_events("operator_request_expired", 1, Duration::from_secs(5));
    assert_eq!(expired[0]["fd"], fd, "{}", server.log_text());
    assert!(
        !wait_cut(&mut client, Duration::from_millis(500)),
        "cut by a request its command had given up on"
    );
    assert!(server.events("reap").is_empty(), "{}", server.log_text());
}

#[test]
fn reap_stuck_cuts_long_waits_only() {
    let server = stallguard_run("pool_server", &["--threads", "4"], PATIENT);
    let mut a = silent_client(server.addr());
    let mut b = silent_client(server.addr());
    // "Stuck": on the client's turn for 10 s or more.
    for c in [&a, &b] {
        wait_connection(server.pid(), local_port(c), Duration::from_secs(40), |c| {
            is_client_turn(c) && c["waiting_ms"].as_u64().unwrap_or(0) >= 10_500
        });
    }
    let mut fresh = silent_client(server.addr());
    wait_connection(
        server.pid(),
        local_port(&fresh),
        Duration::from_secs(20),
        is_client_turn,
    );

    let out = stallguard(&["reap", &server.pid().to_string(), "--stuck"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("reaped 2 connections"),
        "{}",
        text(&out.stdout)
    );
    assert!(wait_cut(&mut a, Duration::from_secs(5)));
    assert!(wait_cut(&mut b, Duration::from_secs(5)));
    assert!(
        !wait_cut(&mut fresh, Duration::from_millis(500)),
        "a fresh wait was cut"
    );
    let manual: Vec<_> = server
        .wait_events("reap", 2, Duration::from_secs(5))
        .into_iter()
        .filter(|r| r["reason"] == "manual")
        .collect();
    assert_eq!(manual.len(), 2, "{}", server.log_text());
}

/// Parses Prometheus text: checks every sample follows its family's TYPE line and returns
/// `name{labels}` → value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                ["counter", "gauge", "untyped", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE {name} twice"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let name = series.split('{').next().unwrap();
        assert!(types.contains_key(name), "{name} has no TYPE before it");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        samples.insert(series.to_string(), value.parse::<f64>().expect("a number"));
    }
    samples
}

#[test]
fn metrics_over_http_count_a_manual_reap() {
    let (server, _client, conn) = with_silent_client("pool_server", &[]);
    let pid = server.pid().to_string();

    // Once, on stdout.
    let out = stallguard(&["metrics", &pid]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let once = parse_prometheus(&text(&out.stdout));
    assert!(
        once[&format!("stallguard_connections_tracked{{pid=\"{pid}\",comm=\"pool_server\"}}")]
            >= 1.0
    );

    let mut exporter = Command::new(cli_bin())
        .args(["metrics", &pid, "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(exporter.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("stallguard: serving http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback());

    let manual =
        format!("stallguard_reaped_total{{pid=\"{pid}\",comm=\"pool_server\",reason=\"manual\"}}");
    let scrape = || {
        let (status, body) = http_get(addr, "/metrics", "GET").unwrap();
        assert!(status.contains("200"), "{status}");
        assert!(
            body.contains("# TYPE stallguard_reaped_total counter\n"),
            "{body}"
        );
        assert!(
            body.contains("# TYPE stallguard_connections_tracked gauge\n"),
            "{body}"
        );
        parse_prometheus(&body)
    };
    let before = scrape()[&manual];

    let out = stallguard(&["reap", &pid, "--fd", &conn["fd"].to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape()[&manual];
        if now >= before + 1.0 {
            break;
        }
        assert!(Instant::now() < end, "manual counter stayed at {now}");
        thread::sleep(Duration::from_millis(200));
    }

    let (status, _) = http_get(addr, "/metrics", "POST").unwrap();
    assert!(status.contains("405"), "{status}");
    let (status, _) = http_get(addr, "/nope", "GET").unwrap();
    assert!(status.contains("404"), "{status}");

    let _ = exporter.kill();
    let _ = exporter.wait();
}

#[test]
fn only_the_servers_user_may_reap() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the command as nobody");
        return;
    }
    let (server, _client, _) = with_silent_client("pool_server", &[]);
    // A copy of the command that nobody can execute wherever the build tree is.
    let dir = std::env::temp_dir().join(format!("stallguard-cli-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("stallguard");
    std::fs::copy(cli_bin(), &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        // 126 is ETXTBSY: another test thread forked while the copy was still open for
        // writing and holds that descriptor until its exec. It passes; try again.
        for _ in 0..50 {
            let out = Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(&copy)
                .args(args)
                .output()
                .expect("setpriv");
            if out.status.code() != Some(126) {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} stayed busy (ETXTBSY)", copy.display());
    };
    let pid = server.pid().to_string();
    let out = as_nobody(&["reap", &pid, "--stuck"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("permission denied: only the server's user or root may reap"),
        "{err}"
    );
    let out = as_nobody(&["top", "--once", &pid]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    // The segment is still there and root still reads it.
    assert!(top_json(server.pid()).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_on_a_prefork_parent_shows_its_childrens_connections() {
    let (server, _client, conn) = with_silent_client("prefork_server", &["--procs", "2"]);
    let child = conn["pid"].as_u64().unwrap() as u32;
    assert_ne!(child, server.pid(), "{conn}");
    assert_eq!(parent_of(child), Some(server.pid()));
    // Without --tree only the parent's own table (it listens, so it has a segment; the
    // connections are its children's): a note names the children and suggests --tree.
    let out = stallguard(&["top", "--once", &server.pid().to_string()]);
    let err = text(&out.stderr);
    assert!(
        out.status.success() && err.contains("--tree") && err.contains(&child.to_string()),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains(conn["peer"].as_str().unwrap()),
        "{}",
        text(&out.stdout)
    );
    // And metrics for the parent cover the child with --tree.
    let out = stallguard(&["metrics", "--tree", &server.pid().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("pid=\"{child}\"")));
}

#[test]
fn unguarded_and_missing_processes_are_clear_errors() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleeper.id().to_string();
    for args in [
        vec!["top", "--once", pid.as_str()],
        vec!["reap", pid.as_str(), "--stuck"],
        vec!["metrics", pid.as_str()],
    ] {
        let out = stallguard(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("has no stallguard segment"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let out = stallguard(&["top", "--once", &pid]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("no process {pid}")),
        "{}",
        text(&out.stderr)
    );
    // Bad input is refused by the parser, naming the argument.
    let out = stallguard(&["reap", "12", "--fd", "-3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--fd"), "{}", text(&out.stderr));
    let out = stallguard(&["top", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("abc"), "{}", text(&out.stderr));
    let out = stallguard(&["metrics", "1", "--listen", "localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--listen"),
        "{}",
        text(&out.stderr)
    );
}
