//! What `top` shows: a consistent copy of one or more segments, as a table or as JSON.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;

use stallguard_shm::{
    Counters, Record, FLAG_EXEMPT, FLAG_KERNEL_VIEW, FLAG_OUTBOUND, FLAG_REAPED, FLAG_UNIX,
    REASONS, REASON_NAMES, TURN_CLIENT, TURN_WRITING,
};

use crate::json;
use crate::segment::{now_unix_ms, Segment};

/// One process's segment, copied.
pub struct ProcessView {
    pub pid: u32,
    pub policy: String,
    pub tick_ms: u32,
    pub updated_unix_ms: u64,
    pub started_unix_ms: u64,
    pub counters: Counters,
    pub records: Vec<Record>,
    /// The watcher kept rewriting while we read (no consistent copy this time).
    pub torn: bool,
}

impl ProcessView {
    pub fn read(seg: &Segment) -> ProcessView {
        let h = seg.header();
        let snap = seg.snapshot();
        ProcessView {
            pid: seg.pid,
            policy: h.policy_text(),
            tick_ms: h.tick_ms.load(Ordering::Relaxed),
            updated_unix_ms: h.updated_unix_ms.load(Ordering::Relaxed),
            started_unix_ms: h.started_unix_ms.load(Ordering::Relaxed),
            counters: Counters::from_header(h),
            torn: snap.is_none(),
            records: snap.unwrap_or_default(),
        }
    }

    /// How long ago the watcher last published, ms (None before its first publish).
    pub fn updated_ago_ms(&self, now_ms: u64) -> Option<u64> {
        (self.updated_unix_ms != 0).then(|| now_ms.saturating_sub(self.updated_unix_ms))
    }
}

/// Whose turn a record is on.
pub fn turn(r: &Record) -> &'static str {
    if r.flags & TURN_WRITING != 0 {
        "writing"
    } else if r.flags & TURN_CLIENT != 0 {
        "client"
    } else {
        "server"
    }
}

pub fn peer(r: &Record) -> String {
    if r.flags & FLAG_UNIX != 0 || r.family == libc::AF_UNIX as u16 {
        return "unix".into();
    }
    match r.family as i32 {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(r.peer_ip[0], r.peer_ip[1], r.peer_ip[2], r.peer_ip[3]);
            format!("{ip}:{}", r.peer_port)
        }
        libc::AF_INET6 => format!("[{}]:{}", Ipv6Addr::from(r.peer_ip), r.peer_port),
        f => format!("family{f}"),
    }
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if b < 10_000 {
        return b.to_string();
    }
    let mut v = b as f64;
    let mut unit = "";
    for u in UNITS {
        if v < 10_000.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.0}{unit}")
}

/// `stage=server method=GET target="/wait" requests=2` for an HTTP connection, else empty.
pub fn http_text(r: &Record) -> String {
    let Some(stage) = stallguard_shm::STAGE_NAMES
        .get(r.stage as usize)
        .filter(|n| !n.is_empty())
    else {
        return String::new();
    };
    let line = stallguard_lens::RequestLine::from_words(r.line);
    let mut buf = [0u8; stallguard_lens::LOGFMT_MAX];
    let n = if line.is_empty() {
        0
    } else {
        line.write_logfmt(&mut buf)
    };
    let shown = String::from_utf8_lossy(&buf[..n]);
    let sep = if n > 0 { " " } else { "" };
    format!("stage={stage}{sep}{shown} requests={}", r.requests)
}

fn flags_text(r: &Record) -> String {
    let mut f = Vec::new();
    if r.flags & FLAG_REAPED != 0 {
        f.push("reaped");
    }
    if r.flags & FLAG_KERNEL_VIEW != 0 {
        f.push("kernel");
    }
    if r.flags & FLAG_OUTBOUND != 0 {
        f.push("outbound");
    }
    if r.flags & FLAG_EXEMPT != 0 {
        f.push("exempt");
    }
    f.join(",")
}

/// All connections of all views, longest wait first (ties: pid, fd).
pub fn sorted_connections(views: &[ProcessView]) -> Vec<(u32, Record)> {
    let mut all: Vec<(u32, Record)> = views
        .iter()
        .flat_map(|v| v.records.iter().map(move |r| (v.pid, *r)))
        .collect();
    all.sort_by(|a, b| {
        b.1.waiting_ms
            .cmp(&a.1.waiting_ms)
            .then(a.0.cmp(&b.0))
            .then(a.1.fd.cmp(&b.1.fd))
    });
    all
}

fn reasons_text(counts: &[u64; REASONS]) -> String {
    let parts: Vec<String> = REASON_NAMES
        .iter()
        .enumerate()
        .filter(|(i, n)| !n.is_empty() && counts[*i] > 0)
        .map(|(i, n)| format!("{n}={}", counts[i]))
        .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(" ")
    }
}

/// The connection table's columns.
macro_rules! table_row {
    ($($cell:expr),* $(,)?) => {
        format!(
            "{:>7} {:>5} {:<24} {:>5} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:<8} {}\n",
            $($cell),*
        )
    };
}

/// The text screen: a summary line per process, then the connections.
/// `max_rows` bounds the table (a terminal's height); None prints all.
pub fn render_text(target: u32, views: &[ProcessView], max_rows: Option<usize>) -> String {
    let now = now_unix_ms();
    let mut out = summary_line(target, views);
    if let Some(first) = views.first() {
        out += &format!("policy: {}\n", first.policy);
    }
    for v in views {
        out += &process_line(v, now);
    }
    out += "\n";
    out += &table_row!(
        "PID", "FD", "PEER", "LPORT", "TURN", "WAITING", "IN", "OUT", "LEFT", "AGE", "FLAGS",
        "HTTP"
    );
    let conns = sorted_connections(views);
    let shown = max_rows.unwrap_or(usize::MAX).min(conns.len());
    for (pid, r) in &conns[..shown] {
        out += &connection_row(*pid, r);
    }
    if shown < conns.len() {
        out += &format!("… {} more\n", conns.len() - shown);
    }
    out
}

/// The first line: the processes' counters summed.
fn summary_line(target: u32, views: &[ProcessView]) -> String {
    let mut total = Counters::default();
    for v in views {
        total.add(&v.counters);
    }
    let mut out = format!(
        "stallguard top {target}: {} guarded process{}, tracked {}, waiting on client {}, reaped: {}",
        views.len(),
        if views.len() == 1 { "" } else { "es" },
        total.tracked,
        total.waiting,
        reasons_text(&total.reaped),
    );
    if total.would_reap.iter().any(|n| *n > 0) {
        out += &format!(", would reap: {}", reasons_text(&total.would_reap));
    }
    if total.rejected_over_cap > 0 {
        out += &format!(", rejected over cap: {}", total.rejected_over_cap);
    }
    out + "\n"
}

/// One process: its counters and how fresh its segment is.
fn process_line(v: &ProcessView, now: u64) -> String {
    let age = match v.updated_ago_ms(now) {
        None => "never published".to_string(),
        Some(ms) => format!("updated {} ago", human_ms(ms)),
    };
    let stalled = matches!(v.updated_ago_ms(now), Some(ms) if ms > 3 * v.tick_ms as u64 + 2000);
    format!(
        "  pid {:<7} tracked {:<5} waiting {:<5} reaped {:<24} {age}{}{}\n",
        v.pid,
        v.counters.tracked,
        v.counters.waiting,
        reasons_text(&v.counters.reaped),
        if stalled {
            " (watcher not publishing: process stopped?)"
        } else {
            ""
        },
        if v.torn { " (no consistent copy)" } else { "" },
    )
}

fn connection_row(pid: u32, r: &Record) -> String {
    table_row!(
        pid,
        r.fd,
        peer(r),
        r.local_port,
        turn(r),
        human_ms(r.waiting_ms),
        human_bytes(r.bytes_in),
        human_bytes(r.bytes_out),
        if r.time_left_ms == u64::MAX {
            "-".to_string()
        } else {
            human_ms(r.time_left_ms)
        },
        human_ms(r.age_ms),
        flags_text(r),
        http_text(r),
    )
}

fn reasons_json(counts: &[u64; REASONS]) -> String {
    let fields: Vec<(&str, String)> = REASON_NAMES
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
        .map(|(i, n)| (*n, counts[i].to_string()))
        .collect();
    json::object(&fields)
}

fn counters_json(c: &Counters) -> String {
    json::object(&[
        ("tracked", c.tracked.to_string()),
        ("waiting", c.waiting.to_string()),
        ("reaped", reasons_json(&c.reaped)),
        ("would_reap", reasons_json(&c.would_reap)),
        ("rejected_over_cap", c.rejected_over_cap.to_string()),
    ])
}

pub fn record_json(pid: u32, r: &Record) -> String {
    json::object(&[
        ("pid", pid.to_string()),
        ("fd", r.fd.to_string()),
        ("peer", json::string(&peer(r))),
        ("local_port", r.local_port.to_string()),
        ("turn", json::string(turn(r))),
        ("waiting_ms", r.waiting_ms.to_string()),
        ("bytes_in", r.bytes_in.to_string()),
        ("bytes_out", r.bytes_out.to_string()),
        (
            "time_left_ms",
            if r.time_left_ms == u64::MAX {
                "null".into()
            } else {
                r.time_left_ms.to_string()
            },
        ),
        ("age_ms", r.age_ms.to_string()),
        (
            "view",
            json::string(if r.flags & FLAG_KERNEL_VIEW != 0 {
                "kernel"
            } else {
                "hooks"
            }),
        ),
        ("outbound", (r.flags & FLAG_OUTBOUND != 0).to_string()),
        ("reaped", (r.flags & FLAG_REAPED != 0).to_string()),
        ("exempt", (r.flags & FLAG_EXEMPT != 0).to_string()),
        ("http", json::string(&http_text(r))),
    ])
}

/// One JSON document (one line): totals, each process, every connection sorted.
pub fn render_json(target: u32, views: &[ProcessView]) -> String {
    let now = now_unix_ms();
    let mut total = Counters::default();
    for v in views {
        total.add(&v.counters);
    }
    let processes: Vec<String> = views
        .iter()
        .map(|v| {
            json::object(&[
                ("pid", v.pid.to_string()),
                ("policy", json::string(&v.policy)),
                ("tick_ms", v.tick_ms.to_string()),
                ("started_unix_ms", v.started_unix_ms.to_string()),
                ("updated_unix_ms", v.updated_unix_ms.to_string()),
                ("counters", counters_json(&v.counters)),
            ])
        })
        .collect();
    let conns: Vec<String> = sorted_connections(views)
        .iter()
        .map(|(pid, r)| record_json(*pid, r))
        .collect();
    json::object(&[
        ("pid", target.to_string()),
        ("time_unix_ms", now.to_string()),
        ("counters", counters_json(&total)),
        ("processes", json::array(&processes)),
        ("connections", json::array(&conns)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fd: i32, flags: u32, waiting_ms: u64) -> Record {
        Record {
            fd,
            flags,
            family: libc::AF_INET as u16,
            local_port: 8080,
            peer_port: 5555,
            peer_ip: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            waiting_ms,
            time_left_ms: u64::MAX,
            ..Record::default()
        }
    }

    #[test]
    fn turns_peers_and_units() {
        assert_eq!(turn(&rec(4, TURN_CLIENT, 0)), "client");
        assert_eq!(turn(&rec(4, TURN_WRITING | TURN_CLIENT, 0)), "writing");
        assert_eq!(turn(&rec(4, 0, 0)), "server");
        assert_eq!(peer(&rec(4, 0, 0)), "127.0.0.1:5555");
        let mut v6 = rec(4, 0, 0);
        v6.family = libc::AF_INET6 as u16;
        v6.peer_ip = std::net::Ipv6Addr::LOCALHOST.octets();
        assert_eq!(peer(&v6), "[::1]:5555");
        assert_eq!(peer(&rec(4, FLAG_UNIX, 0)), "unix");
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_340), "12.3s");
        assert_eq!(human_ms(245_000), "4m05s");
        assert_eq!(human_ms(7_380_000), "2h03m");
        assert_eq!(human_bytes(9999), "9999");
        assert_eq!(human_bytes(16 << 20), "16M");
        assert_eq!(human_bytes(123_456), "121K");
        assert_eq!(human_bytes(1 << 30), "1024M");
    }

    #[test]
    fn http_connections_show_stage_request_line_and_count_escaped() {
        assert_eq!(http_text(&rec(4, 0, 0)), "", "not HTTP: nothing");
        let mut r = rec(4, 0, 0);
        r.stage = 3;
        r.requests = 2;
        let mut raw = [0u8; 64];
        let line = b"GET /a\"b\n\x01c";
        raw[..line.len()].copy_from_slice(line);
        for (w, chunk) in r.line.iter_mut().zip(raw.chunks_exact(8)) {
            *w = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        let text = http_text(&r);
        assert_eq!(
            text,
            "stage=server method=GET target=\"/a\\\"b\\x0a\\x01c\" requests=2"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn sorted_by_waiting_then_pid_and_fd() {
        let views = vec![
            ProcessView {
                pid: 2,
                policy: String::new(),
                tick_ms: 100,
                updated_unix_ms: 0,
                started_unix_ms: 0,
                counters: Counters::default(),
                records: vec![rec(5, TURN_CLIENT, 10), rec(6, 0, 900)],
                torn: false,
            },
            ProcessView {
                pid: 1,
                policy: String::new(),
                tick_ms: 100,
                updated_unix_ms: 0,
                started_unix_ms: 0,
                counters: Counters::default(),
                records: vec![rec(7, TURN_CLIENT, 900)],
                torn: false,
            },
        ];
        let order: Vec<(u32, i32)> = sorted_connections(&views)
            .iter()
            .map(|(p, r)| (*p, r.fd))
            .collect();
        assert_eq!(order, vec![(1, 7), (2, 6), (2, 5)]);
        let text = render_text(1, &views, Some(2));
        assert!(text.contains("… 1 more"), "{text}");
        let j = render_json(1, &views);
        assert!(j.contains("\"time_left_ms\":null"), "{j}");
        assert!(j.starts_with("{\"pid\":1,"), "{j}");
    }
}
