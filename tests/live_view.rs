//! What the watcher says on a schedule: the stuck-connection report (STALLGUARD_REPORT) and
//! the Prometheus textfile (STALLGUARD_METRICS_FILE).

use stallguard_testkit::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn stuck_connections_are_reported_longest_first() {
    let vars = [
        ("STALLGUARD_FIRST_BYTE", "60s"),
        ("STALLGUARD_REPORT", "1s"),
    ];
    let srv = Proc::start("pool_server", &["--threads", "4"], Some(&vars));
    let _first = TcpStream::connect(srv.addr()).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _second = TcpStream::connect(srv.addr()).unwrap();
    // A connection is stuck once its turn has lasted 10 s: wait for both.
    let reports = srv.wait_events("report", 1, Duration::from_secs(16));
    let deadline = Instant::now() + Duration::from_secs(16);
    let mut stuck = Vec::new();
    while Instant::now() < deadline {
        let lines = srv.log_text();
        // The newest report and the stuck lines that follow it.
        if let Some(at) = lines.rfind("event=report") {
            stuck = lines[at..]
                .lines()
                .skip(1)
                .map(logfmt)
                .filter(|m| m["event"] == "stuck")
                .collect();
            if stuck.len() == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!reports.is_empty(), "{}", srv.log_text());
    assert_eq!(stuck.len(), 2, "{}", srv.log_text());
    let waited: Vec<u64> = stuck.iter().map(|m| seconds_ms(&m["waited"])).collect();
    assert!(waited[0] > waited[1], "longest first: {waited:?}");
    assert!(stuck
        .iter()
        .all(|m| m["turn"] == "client" && m.contains_key("time_left")));
    assert!(srv.events("reap").is_empty(), "reporting must not reap");
}

/// The library's textfile carries what `stallguard metrics` exports for the process: the
/// `pid` and `comm` labels and `stallguard_build_info` (one renderer, in stallguard-shm).
#[test]
fn the_metrics_textfile_is_rewritten_with_the_counters() {
    let dir = scratch("metrics");
    std::fs::create_dir_all(&dir).unwrap();
    let template = format!("{}/stallguard-{{pid}}.prom", dir.display());
    let vars = [
        ("STALLGUARD_FIRST_BYTE", "1s"),
        ("STALLGUARD_METRICS_FILE", template.as_str()),
    ];
    let srv = Proc::start("pool_server", &["--threads", "2"], Some(&vars));
    let _silent = TcpStream::connect(srv.addr()).unwrap();
    srv.wait_events("reap", 1, Duration::from_secs(3));
    let path = dir.join(format!("stallguard-{}.prom", srv.child.id()));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("reason=\"first_byte\"} 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = srv.child.id();
    let labels = format!("pid=\"{pid}\",comm=\"pool_server\"");
    assert!(
        text.contains(&format!(
            "stallguard_reaped_total{{{labels},reason=\"first_byte\"}} 1\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "stallguard_build_info{{version=\"{}\",segment_layout=\"{}\",{labels}}} 1\n",
            env!("CARGO_PKG_VERSION"),
            stallguard_shm::VERSION
        )),
        "{text}"
    );
    // The same series, with the same labels, as `stallguard metrics PID` exports (issue 15):
    // a dashboard built on one reads the other.
    let cli = stallguard_testkit::cli::stallguard(&["metrics", &pid.to_string()]);
    let cli = stallguard_testkit::cli::text(&cli.stdout);
    for sample in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("stallguard_build_info"))
    {
        let series = sample.rsplit_once(' ').unwrap().0;
        assert!(
            cli.contains(series),
            "{series} missing from `stallguard metrics`:\n{cli}"
        );
    }
    for family in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(
            cli.contains(family),
            "{family} differs from `stallguard metrics`:\n{cli}"
        );
    }
    assert!(
        text.contains("# TYPE stallguard_connections_tracked gauge\n"),
        "{text}"
    );
    // Rewritten atomically: no temporary file left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Issue 13: a forked connection process's watcher dozes (with nothing due it wakes every
/// 10 s), and `stallguard top` wakes it when it opens the live view: what it shows was
/// published a moment ago, not seconds ago (nor shown as a stalled watcher).
#[test]
fn a_reader_wakes_a_dozing_watcher_and_sees_fresh_figures() {
    use stallguard_testkit::cli::{stallguard, text};
    let vars = [("STALLGUARD_FIRST_BYTE", "60s"), ("STALLGUARD_IDLE", "60s")];
    let srv = Proc::start("forking_server", &["--max", "4"], Some(&vars));
    let _client = TcpStream::connect(srv.addr()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let child = loop {
        if let Some(&c) = children_of(srv.pid()).first() {
            if watcher_threads(c) == 1 {
                break c;
            }
        }
        assert!(Instant::now() < deadline, "no child with a watcher");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(2)); // past its first looks at the connection
    let before = watcher_sleeps(child).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let woke = watcher_sleeps(child).unwrap() - before;
    assert!(woke <= 1, "{woke} wake-ups in 2 s: not dozing");
    let out = stallguard(&["top", "--once", "--json", &child.to_string()]);
    let json = text(&out.stdout);
    let field = |name: &str| -> u64 {
        let at = json.find(&format!("\"{name}\":")).expect(name) + name.len() + 3;
        let digits: String = json[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let ago = field("time_unix_ms").saturating_sub(field("updated_unix_ms"));
    assert!(ago < 1000, "published {ago} ms before it was read: {json}");
    assert!(json.contains("\"tracked\":1"), "{json}");
}
