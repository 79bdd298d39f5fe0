//! Everything the watcher says on a schedule rather than per event: the periodic report of
//! stuck connections (STALLGUARD_REPORT), the Prometheus textfile (STALLGUARD_METRICS_FILE),
//! the rate-limited per-source rejection line, and the debug stats line.

use super::act::{Peer, Seconds};
use super::observe::Observation;
use crate::abi::sys;
use crate::runtime::log::log_line;
use crate::runtime::{config, pid};
use crate::table::stats;
use stallguard_policy::{is_stuck, time_left_ms, turn_ms, Action};

/// Most per-connection lines in one report (the summary line counts them all).
const REPORT_LINES_MAX: usize = 50;
const METRICS_EVERY_MS: u64 = 1000;
const STATS_EVERY_MS: u64 = 10_000;
const REJECTIONS_EVERY_MS: u64 = 1000;

#[derive(Default)]
pub struct Reports {
    report_at: u64,
    metrics_at: u64,
    stats_at: u64,
    rejections_logged: u64,
    rejections_at: u64,
}

impl Reports {
    /// Whether the next tick needs every connection: a report or the metrics file is due.
    pub fn wants_full(&self, now: u64) -> bool {
        let policy = config::policy();
        (policy.report_ms > 0 && now.saturating_sub(self.report_at) >= policy.report_ms)
            || (policy.metrics_file.is_some()
                && now.saturating_sub(self.metrics_at) >= METRICS_EVERY_MS)
    }

    pub fn tick(&mut self, now: u64, seen: &[Observation]) {
        let policy = config::policy();
        if self.report_at == 0 {
            // First tick: schedule, do not report at once.
            (self.report_at, self.metrics_at, self.stats_at) = (now, 0, now);
        }
        if policy.report_ms > 0 && now.saturating_sub(self.report_at) >= policy.report_ms {
            self.report_at = now;
            report(now, seen);
        }
        if policy.metrics_file.is_some() && now.saturating_sub(self.metrics_at) >= METRICS_EVERY_MS
        {
            self.metrics_at = now;
            write_metrics_file();
        }
        if now.saturating_sub(self.stats_at) >= STATS_EVERY_MS {
            self.stats_at = now;
            log_stats();
        }
        self.log_rejections(now);
    }

    /// Connections refused for their source's cap are logged at most once a second, as a
    /// count: an attack opening thousands of connections cannot flood the log.
    fn log_rejections(&mut self, now: u64) {
        let total = stats::rejected();
        if total == self.rejections_logged
            || now.saturating_sub(self.rejections_at) < REJECTIONS_EVERY_MS
        {
            return;
        }
        log_line!(
            Warn,
            "event=over_cap rejected={} total={total} last_peer={} limit={} action=rst",
            total - self.rejections_logged,
            Peer(&stats::last_rejected_peer()),
            config::policy().per_source,
        );
        self.rejections_logged = total;
        self.rejections_at = now;
    }
}

/// The seed's stuck-connection report: a summary line, then one line per stuck connection,
/// longest wait first. Only when something is stuck, or always in monitor mode.
fn report(now: u64, seen: &[Observation]) {
    let mut stuck: Vec<&Observation> = seen
        .iter()
        .filter(|o| !o.done && !o.exempt && is_stuck(&o.facts, now))
        .collect();
    if stuck.is_empty() && config::policy().action != Action::Log {
        return;
    }
    stuck.sort_by_key(|o| std::cmp::Reverse(turn_ms(&o.facts, now).unwrap_or(0)));
    let c = stats::counters();
    log_line!(
        Info,
        "event=report tracked={} waiting={} stuck={} reaped_total={} would_reap_total={}",
        c.tracked,
        c.waiting,
        stuck.len(),
        c.reaped.iter().sum::<u64>(),
        c.would_reap.iter().sum::<u64>(),
    );
    for o in stuck.iter().take(REPORT_LINES_MAX) {
        let turn = if o.facts.write_pending_since != 0 {
            "writing"
        } else {
            "client"
        };
        let left = o.timers.and_then(|t| time_left_ms(&o.facts, &t, now));
        log_line!(
            Info,
            "event=stuck fd={} peer={} port={} turn={turn} waited={} bytes_in={} time_left={}{}",
            o.fd,
            Peer(&o.identity),
            o.identity.local_port,
            Seconds(turn_ms(&o.facts, now).unwrap_or(0)),
            o.facts.bytes_in,
            left.map_or("none".to_string(), |ms| Seconds(ms).to_string()),
            super::http::HttpFields::of(o.fd, &o.facts),
        );
    }
    if stuck.len() > REPORT_LINES_MAX {
        log_line!(
            Info,
            "event=stuck_more count={}",
            stuck.len() - REPORT_LINES_MAX
        );
    }
}

/// Rewrites the textfile atomically (write a temporary file, rename it over the old one), so
/// node_exporter never reads half a file.
fn write_metrics_file() {
    let Some(template) = config::policy().metrics_file.as_deref() else {
        return;
    };
    let pid = pid::pid();
    let path = template.replace("{pid}", &pid.to_string());
    let tmp = format!("{path}.tmp.{pid}");
    let text = stallguard_shm::process_exposition(
        env!("CARGO_PKG_VERSION"),
        pid as u32,
        &comm(),
        &stats::counters(),
    );
    // Not std::fs::write: its write and close would go through the hooks (see sys::write_file).
    if sys::write_file(tmp.as_ref(), text.as_bytes()) && std::fs::rename(&tmp, &path).is_ok() {
        static REMOVE_REGISTERED: std::sync::atomic::AtomicI32 =
            std::sync::atomic::AtomicI32::new(0);
        if REMOVE_REGISTERED.swap(pid, std::sync::atomic::Ordering::AcqRel) != pid {
            sys::at_exit(remove_metrics_file);
        }
        return;
    }
    let _ = std::fs::remove_file(&tmp);
    log_line!(Debug, "event=metrics_file_failed path={path}");
}

/// The program's name as `stallguard metrics` labels it: `/proc/self/comm` (the main
/// thread's, as the command reads `/proc/PID/comm`; read each time, the program may rename
/// itself). Empty when it cannot be read.
fn comm() -> String {
    let mut buf = [0u8; 64];
    let n = sys::read_small_file(c"/proc/self/comm", &mut buf);
    String::from_utf8_lossy(&buf[..n])
        .trim_end_matches('\n')
        .to_string()
}

fn log_stats() {
    let c = stats::counters();
    log_line!(
        Debug,
        "event=stats tracked={} waiting={} reaped_total={} rejected_over_cap={}",
        c.tracked,
        c.waiting,
        c.reaped.iter().sum::<u64>(),
        c.rejected_over_cap,
    );
}

/// atexit: a dead process's counters must not linger in the textfile collector.
extern "C" fn remove_metrics_file() {
    if let Some(template) = config::policy().metrics_file.as_deref() {
        let _ = std::fs::remove_file(template.replace("{pid}", &sys::getpid().to_string()));
    }
}
