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
    assert!(
        text.contains(&format!(
            "stallguard_reaped_total{{pid=\"{pid}\",reason=\"first_byte\"}} 1\n"
        )),
        "{text}"
    );
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
