//! What `top` shows: a consistent copy of one or more segments, as a table or as JSON.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;

use stallguard_shm::{
    Counters, Record, FLAG_EXEMPT, FLAG_KERNEL_VIEW, FLAG_OUTBOUND, FLAG_REAPED, FLAG_UNIX,
    FLAG_WOULD_REAP, REASONS, REASON_NAMES, TURN_CLIENT, TURN_WRITING,
};

use crate::json;
use crate::segment::{now_unix_ms, Segment};

/// One process's segment, copied.
pub struct ProcessView {
    pub pid: u32,
    /// The program's name (`/proc/PID/comm`).
    pub comm: String,
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
            comm: crate::segment::proc_info(seg.pid)
                .map(|i| i.comm)
                .unwrap_or_default(),
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

/// Whose turn a record is on. `queued`: accepted, but the server has not read from it nor
/// written to it yet (an eager-accept server's queue): no timer runs until a worker waits on it.
pub fn turn(r: &Record) -> &'static str {
    if r.flags & TURN_WRITING != 0 {
        "writing"
    } else if r.flags & TURN_CLIENT != 0 {
        "client"
    } else if r.bytes_in == 0
        && r.bytes_out == 0
        && r.flags & (FLAG_KERNEL_VIEW | FLAG_REAPED | FLAG_WOULD_REAP | FLAG_OUTBOUND) == 0
    {
        "queued"
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
    if r.flags & FLAG_WOULD_REAP != 0 {
        f.push("would_reap");
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

/// What `top` sorts its rows by (`--sort`; `s` cycles through them in the live view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// How long the current turn has lasted, longest first (the default)
    Wait,
    /// Time left before the earliest running deadline, soonest first
    Left,
    /// Connection age, oldest first
    Age,
    /// Bytes received, most first
    In,
    /// Bytes sent, most first
    Out,
    /// Process id, then fd
    Pid,
    /// Local port, then peer
    Port,
    /// Peer address
    Peer,
}

impl SortKey {
    pub const ALL: [SortKey; 8] = [
        SortKey::Wait,
        SortKey::Left,
        SortKey::Age,
        SortKey::In,
        SortKey::Out,
        SortKey::Pid,
        SortKey::Port,
        SortKey::Peer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Wait => "wait",
            SortKey::Left => "left",
            SortKey::Age => "age",
            SortKey::In => "in",
            SortKey::Out => "out",
            SortKey::Pid => "pid",
            SortKey::Port => "port",
            SortKey::Peer => "peer",
        }
    }

    /// The next key (the live view's `s`).
    pub fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

/// One `--filter KEY=VALUE`: every filter must match for a row to be shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `turn=client|writing|server|queued`
    Turn(String),
    /// `port=8080` (local port)
    Port(u16),
    /// `peer=10.0.0.` (prefix of ip:port)
    Peer(String),
    /// `pid=1234`
    Pid(u32),
    /// `flag=would_reap` (reaped, would_reap, kernel, outbound, exempt)
    Flag(String),
}

pub const FILTER_HELP: &str =
    "turn=client|writing|server|queued, port=N, peer=PREFIX, pid=N, flag=reaped|would_reap|kernel|outbound|exempt";

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Filter, String> {
        let bad = || format!("{s:?}: expected KEY=VALUE, one of {FILTER_HELP}");
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        let v = v.trim();
        match k.trim() {
            "turn" if ["client", "writing", "server", "queued"].contains(&v) => {
                Ok(Filter::Turn(v.into()))
            }
            "port" => v.parse().map(Filter::Port).map_err(|_| bad()),
            "peer" if !v.is_empty() => Ok(Filter::Peer(v.into())),
            "pid" => v.parse().map(Filter::Pid).map_err(|_| bad()),
            "flag" if ["reaped", "would_reap", "kernel", "outbound", "exempt"].contains(&v) => {
                Ok(Filter::Flag(v.into()))
            }
            _ => Err(bad()),
        }
    }
}

impl Filter {
    pub fn matches(&self, pid: u32, r: &Record) -> bool {
        match self {
            Filter::Turn(t) => turn(r) == t,
            Filter::Port(p) => r.local_port == *p,
            Filter::Peer(p) => peer(r).starts_with(p.as_str()),
            Filter::Pid(p) => pid == *p,
            Filter::Flag(f) => flags_text(r).split(',').any(|x| x == f),
        }
    }
}

/// All connections of all views, sorted by `key` (ties: pid, fd); aliases of a connection
/// listed under another fd are kept (they are real fds of the process).
pub fn sorted_connections(views: &[ProcessView]) -> Vec<(u32, Record)> {
    sorted_by(views, SortKey::Wait, &[])
}

pub fn sorted_by(views: &[ProcessView], key: SortKey, filters: &[Filter]) -> Vec<(u32, Record)> {
    let mut all: Vec<(u32, Record)> = views
        .iter()
        .flat_map(|v| v.records.iter().map(move |r| (v.pid, *r)))
        .filter(|(pid, r)| filters.iter().all(|f| f.matches(*pid, r)))
        .collect();
    all.sort_by(|a, b| {
        let (ra, rb) = (&a.1, &b.1);
        let primary = match key {
            SortKey::Wait => rb.waiting_ms.cmp(&ra.waiting_ms),
            SortKey::Left => ra.time_left_ms.cmp(&rb.time_left_ms),
            SortKey::Age => rb.age_ms.cmp(&ra.age_ms),
            SortKey::In => rb.bytes_in.cmp(&ra.bytes_in),
            SortKey::Out => rb.bytes_out.cmp(&ra.bytes_out),
            SortKey::Pid => std::cmp::Ordering::Equal,
            SortKey::Port => ra
                .local_port
                .cmp(&rb.local_port)
                .then_with(|| peer(ra).cmp(&peer(rb))),
            SortKey::Peer => peer(ra).cmp(&peer(rb)),
        };
        primary.then(a.0.cmp(&b.0)).then(ra.fd.cmp(&rb.fd))
    });
    all
}

/// A connection seen reaped (or, in monitor mode, that would have been), kept on screen after
/// it is gone from the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentReap {
    pub seen_unix_ms: u64,
    pub pid: u32,
    pub fd: i32,
    pub peer: String,
    pub port: u16,
    pub waited_ms: u64,
    pub would: bool,
}

impl RecentReap {
    pub fn from_record(pid: u32, r: &Record, now: u64) -> Option<RecentReap> {
        let would = r.flags & FLAG_WOULD_REAP != 0;
        (would || r.flags & FLAG_REAPED != 0).then(|| RecentReap {
            seen_unix_ms: now,
            pid,
            fd: r.fd,
            peer: peer(r),
            port: r.local_port,
            waited_ms: r.waiting_ms,
            would,
        })
    }

    /// Same connection (the table is re-read every second: a reaped row stays a while).
    pub fn same(&self, o: &RecentReap) -> bool {
        self.pid == o.pid && self.fd == o.fd && self.peer == o.peer && self.port == o.port
    }
}

/// How `render_text` lays the screen out.
#[derive(Clone, Debug)]
pub struct TextOptions {
    /// Columns: no line is longer.
    pub width: usize,
    /// Bounds the connection table (a terminal's height); None prints all.
    pub max_rows: Option<usize>,
    pub sort: SortKey,
    pub filters: Vec<Filter>,
    /// The most recent first.
    pub recent: Vec<RecentReap>,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            width: 80,
            max_rows: None,
            sort: SortKey::Wait,
            filters: Vec::new(),
            recent: Vec::new(),
        }
    }
}

/// Cuts a line to `width` characters (an ellipsis marks the cut).
pub fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Word-wraps `text` to `width`, continuation lines indented by `indent` spaces.
pub fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let lead = text.len() - text.trim_start().len();
    let mut cur = text[..lead].to_string();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let cur_len = cur.chars().count();
        if cur_len > 0 && cur_len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
            cur = " ".repeat(indent);
        } else if cur_len > 0 && !cur.trim().is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.trim().is_empty() {
        lines.push(cur);
    }
    lines.into_iter().map(|l| fit(&l, width)).collect()
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

/// The text screen: a summary, each process with its own policy, the recent reaps, then the
/// connections. Every line fits in `opts.width` columns.
pub fn render_text(target: u32, views: &[ProcessView], opts: &TextOptions) -> String {
    let now = now_unix_ms();
    let width = opts.width.max(40);
    let mut lines = wrap(&summary_line(target, views), width, 2);
    lines.extend(process_lines(views, now, width));
    lines.extend(recent_lines(&opts.recent, now, width));
    lines.push(String::new());
    lines.extend(connection_lines(views, opts, width));
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `stallguard top 1234: 2 guarded processes, tracked 5, waiting on client 3, reaped: ...`.
fn summary_line(target: u32, views: &[ProcessView]) -> String {
    let mut total = Counters::default();
    for v in views {
        total.add(&v.counters);
    }
    let mut summary = format!(
        "stallguard top {target}: {} guarded process{}, tracked {}, waiting on client {}, reaped: {}",
        views.len(),
        if views.len() == 1 { "" } else { "es" },
        total.tracked,
        total.waiting,
        reasons_text(&total.reaped),
    );
    if total.would_reap.iter().any(|n| *n > 0) {
        summary += &format!(", would reap: {}", reasons_text(&total.would_reap));
    }
    if total.rejected_over_cap > 0 {
        summary += &format!(", rejected over cap: {}", total.rejected_over_cap);
    }
    summary
}

/// One line per process (and its policy, or one policy line when all share it).
fn process_lines(views: &[ProcessView], now: u64, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let same_policy = views.len() > 1 && views.iter().all(|v| v.policy == views[0].policy);
    if same_policy {
        let all = format!(
            "policy (all {} processes): {}",
            views.len(),
            views[0].policy
        );
        lines.extend(wrap(&all, width, 4));
    }
    for v in views {
        lines.extend(wrap(&process_line(v, now), width, 4));
        if !same_policy {
            lines.extend(wrap(&format!("  policy: {}", v.policy), width, 4));
        }
    }
    lines
}

/// `pid 1234 srv: tracked 5 waiting 3 reaped 0 updated 200ms ago`, with what is wrong.
fn process_line(v: &ProcessView, now: u64) -> String {
    let ago = v.updated_ago_ms(now);
    let age = match ago {
        None => "never published".to_string(),
        Some(ms) => format!("updated {} ago", human_ms(ms)),
    };
    let stalled = matches!(ago, Some(ms) if ms > 3 * v.tick_ms as u64 + 2000);
    format!(
        "pid {} {}: tracked {} waiting {} reaped {} {age}{}{}",
        v.pid,
        if v.comm.is_empty() { "?" } else { &v.comm },
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

/// The "recent reaps" panel (nothing when there are none).
fn recent_lines(recent: &[RecentReap], now: u64, width: usize) -> Vec<String> {
    if recent.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![
        String::new(),
        format!(
            "recent reaps (newest first, {} shown):",
            recent.len().min(5)
        ),
    ];
    for r in recent.iter().take(5) {
        let ago = human_ms(now.saturating_sub(r.seen_unix_ms));
        let line = format!(
            "  {} pid {} fd {} {} port {} after {} (seen {ago} ago)",
            if r.would { "would_reap" } else { "reaped" },
            r.pid,
            r.fd,
            r.peer,
            r.port,
            human_ms(r.waited_ms),
        );
        lines.push(fit(&line, width));
    }
    lines
}

/// The connection table's layout: which optional columns fit.
struct Columns {
    width: usize,
    /// With several processes.
    pid: bool,
    /// From 100 columns.
    age: bool,
}

impl Columns {
    const HEADINGS: [&'static str; 11] = [
        "PID", "FD", "PEER", "LPORT", "TURN", "WAIT", "IN", "OUT", "LEFT", "AGE", "FLAGS",
    ];

    /// One row, cut to the width.
    fn row<S: AsRef<str>>(&self, cells: &[S; 11]) -> String {
        let c: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
        let mut l = String::new();
        if self.pid {
            l += &format!("{:>7} ", c[0]);
        }
        l += &format!(
            "{:>4} {:<21} {:>5} {:<7} {:>5} {:>5} {:>5} {:>5} ",
            c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        );
        if self.age {
            l += &format!("{:>5} ", c[9]);
        }
        l += c[10];
        fit(l.trim_end(), self.width)
    }
}

/// A connection's cells, in [`Columns::HEADINGS`] order.
fn record_cells(pid: u32, r: &Record) -> [String; 11] {
    let left = if r.time_left_ms == u64::MAX {
        "-".to_string()
    } else {
        human_ms(r.time_left_ms)
    };
    [
        pid.to_string(),
        r.fd.to_string(),
        peer(r),
        r.local_port.to_string(),
        turn(r).to_string(),
        human_ms(r.waiting_ms),
        human_bytes(r.bytes_in),
        human_bytes(r.bytes_out),
        left,
        human_ms(r.age_ms),
        flags_text(r),
    ]
}

/// `sort: wait, 2 filters`.
fn sort_heading(opts: &TextOptions) -> String {
    let mut heading = format!("sort: {}", opts.sort.name());
    let n = opts.filters.len();
    if n > 0 {
        heading += &format!(", {n} filter{}", if n == 1 { "" } else { "s" });
    }
    heading
}

/// The sorted, filtered connection table, bounded by `opts.max_rows`, and the `queued` note.
fn connection_lines(views: &[ProcessView], opts: &TextOptions, width: usize) -> Vec<String> {
    let conns = sorted_by(views, opts.sort, &opts.filters);
    let columns = Columns {
        width,
        pid: views.len() > 1,
        age: width >= 100,
    };
    let mut lines = vec![
        fit(&sort_heading(opts), width),
        columns.row(&Columns::HEADINGS),
    ];
    let shown = opts.max_rows.unwrap_or(usize::MAX).min(conns.len());
    for (pid, r) in &conns[..shown] {
        lines.push(columns.row(&record_cells(*pid, r)));
        // An HTTP connection the lens follows: its stage and request on a line of its own.
        let http = http_text(r);
        if !http.is_empty() {
            lines.push(fit(&format!("        {http}"), width));
        }
    }
    if shown < conns.len() {
        lines.push(format!("… {} more", conns.len() - shown));
    }
    if conns.iter().any(|(_, r)| turn(r) == "queued") {
        lines.extend(wrap(
            "queued: accepted, not yet read by a worker (no timer runs until the server waits on it)",
            width,
            2,
        ));
    }
    lines
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
        ("would_reap", (r.flags & FLAG_WOULD_REAP != 0).to_string()),
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
                ("comm", json::string(&v.comm)),
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rec(fd: i32, flags: u32, waiting_ms: u64) -> Record {
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
    fn wrapped_and_fitted_lines() {
        assert_eq!(wrap("  policy: a b", 80, 4), ["  policy: a b"]);
        assert_eq!(wrap("aaaa bbbb cccc", 9, 2), ["aaaa bbbb", "  cccc"]);
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }

    #[test]
    fn http_connections_show_stage_request_line_and_count_escaped() {
        let mut r = Record::default();
        assert_eq!(http_text(&r), "", "not HTTP: nothing");
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
    fn turns_peers_and_units() {
        assert_eq!(turn(&rec(4, TURN_CLIENT, 0)), "client");
        assert_eq!(turn(&rec(4, TURN_WRITING | TURN_CLIENT, 0)), "writing");
        // Never read nor written: queued in the server (no timer runs).
        assert_eq!(turn(&rec(4, 0, 0)), "queued");
        let mut answered = rec(4, 0, 0);
        answered.bytes_in = 80;
        assert_eq!(turn(&answered), "server");
        assert_eq!(turn(&rec(4, FLAG_WOULD_REAP, 0)), "server");
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

    fn view(pid: u32, policy: &str, records: Vec<Record>) -> ProcessView {
        ProcessView {
            pid,
            comm: "srv".into(),
            policy: policy.into(),
            tick_ms: 100,
            updated_unix_ms: 0,
            started_unix_ms: 0,
            counters: Counters::default(),
            records,
            torn: false,
        }
    }

    #[test]
    fn the_summary_and_process_lines() {
        let mut a = view(1, "idle=1m", vec![]);
        a.counters.tracked = 3;
        a.counters.reaped[0] = 2;
        let mut b = view(2, "idle=1m", vec![]);
        b.counters.would_reap[1] = 1;
        b.counters.rejected_over_cap = 4;
        let summary = summary_line(9, &[a, b]);
        assert!(
            summary.starts_with("stallguard top 9: 2 guarded processes, tracked 3,"),
            "{summary}"
        );
        assert!(summary.contains(", would reap: "), "{summary}");
        assert!(summary.ends_with(", rejected over cap: 4"), "{summary}");

        let mut v = view(7, "idle=1m", vec![]);
        assert_eq!(
            process_line(&v, 10_000),
            "pid 7 srv: tracked 0 waiting 0 reaped 0 never published"
        );
        v.updated_unix_ms = 1_000;
        v.torn = true;
        v.comm.clear();
        assert_eq!(
            process_line(&v, 10_000),
            "pid 7 ?: tracked 0 waiting 0 reaped 0 updated 9.0s ago \
             (watcher not publishing: process stopped?) (no consistent copy)"
        );
        let shared = process_lines(&[view(1, "p", vec![]), view(2, "p", vec![])], 0, 80);
        assert_eq!(shared[0], "policy (all 2 processes): p");
        assert_eq!(shared.len(), 3, "{shared:?}");
        let own = process_lines(&[view(1, "p", vec![]), view(2, "q", vec![])], 0, 80);
        assert_eq!(own[1], "  policy: p");
        assert_eq!(own[3], "  policy: q");
    }

    #[test]
    fn the_table_rows_and_panels() {
        let narrow = Columns {
            width: 80,
            pid: false,
            age: false,
        };
        let heading = narrow.row(&Columns::HEADINGS);
        assert!(heading.starts_with("  FD PEER"), "{heading}");
        assert!(!heading.contains("PID") && !heading.contains("AGE"));
        let heading = Columns {
            width: 120,
            pid: true,
            age: true,
        }
        .row(&Columns::HEADINGS);
        assert!(heading.starts_with("    PID   FD") && heading.contains(" AGE FLAGS"));
        let cells = record_cells(3, &rec(4, TURN_CLIENT | FLAG_REAPED, 1_500));
        assert_eq!(cells[0], "3");
        assert_eq!(cells[4], "client");
        assert_eq!(cells[5], "1.5s");
        assert_eq!(cells[8], "-");
        assert_eq!(cells[10], "reaped");
        assert!(narrow.row(&cells).chars().count() <= 80);
        let opts = TextOptions {
            filters: vec![Filter::Port(80), Filter::Pid(1)],
            ..TextOptions::default()
        };
        assert_eq!(sort_heading(&opts), "sort: wait, 2 filters");
        assert_eq!(sort_heading(&TextOptions::default()), "sort: wait");
        assert!(recent_lines(&[], 0, 80).is_empty());
        let r = RecentReap::from_record(3, &rec(4, FLAG_WOULD_REAP, 2_000), 1_000).unwrap();
        assert_eq!(
            recent_lines(&[r], 3_000, 80),
            [
                "",
                "recent reaps (newest first, 1 shown):",
                "  would_reap pid 3 fd 4 127.0.0.1:5555 port 8080 after 2.0s (seen 2.0s ago)"
            ]
        );
    }

    #[test]
    fn sorted_by_waiting_then_pid_and_fd() {
        let views = vec![
            view(2, "", vec![rec(5, TURN_CLIENT, 10), rec(6, 0, 900)]),
            view(1, "", vec![rec(7, TURN_CLIENT, 900)]),
        ];
        let order: Vec<(u32, i32)> = sorted_connections(&views)
            .iter()
            .map(|(p, r)| (*p, r.fd))
            .collect();
        assert_eq!(order, vec![(1, 7), (2, 6), (2, 5)]);
        let opts = TextOptions {
            max_rows: Some(2),
            ..TextOptions::default()
        };
        let text = render_text(1, &views, &opts);
        assert!(text.contains("… 1 more"), "{text}");
        let j = render_json(1, &views);
        assert!(j.contains("\"time_left_ms\":null"), "{j}");
        assert!(j.starts_with("{\"pid\":1,"), "{j}");
    }
}
