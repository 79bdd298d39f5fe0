//! The segment each guarded process publishes at `/dev/shm/stallguard-<pid>` (mode 0600,
//! owned by the process's user, removed at exit): its live connection table and counters,
//! rewritten by its watcher every tick, and a mailbox through which the `stallguard` command
//! asks that watcher to reap connections. Only the watcher writes the table; only the owner
//! (or root) can open the file, so only they can post requests.
//!
//! Readers copy the header and records, then check `seq`: it is odd while the watcher writes
//! and changes with every tick (a seqlock), so a torn read is detected and retried.
//! All fields are plain integers in native byte order: reader and writer run on one machine.

use stallguard_policy::Reason;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub const MAGIC: [u8; 8] = *b"STALLGD1";
pub const VERSION: u32 = 2;
/// Records in a segment; the file is sparse, so unused records cost no memory.
pub const CAPACITY: usize = 65_536;
/// Counter slots per reason: one per `stallguard_policy::Reason`, at `Reason::index()`.
pub const REASONS: usize = Reason::ALL.len();
pub const REASON_MANUAL: usize = Reason::Manual.index();
pub const POLICY_BYTES: usize = 1024;

/// Where a process's segment lives.
pub fn path_for(pid: u32) -> String {
    format!("/dev/shm/stallguard-{pid}")
}

/// The pid a segment file name belongs to (`stallguard-1234` → 1234).
pub fn pid_of(file_name: &str) -> Option<u32> {
    file_name.strip_prefix("stallguard-")?.parse().ok()
}

/// Mailbox request kinds.
pub const REQUEST_FD: u32 = 1;
pub const REQUEST_STUCK: u32 = 2;

#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub record_size: u32,
    pub pid: u32,
    pub capacity: u32,
    /// Seqlock: odd while the watcher rewrites the table.
    pub seq: AtomicU64,
    /// Records valid in the last published tick.
    pub count: AtomicU32,
    pub tick_ms: AtomicU32,
    /// Wall-clock time of the last publish (ms since the epoch).
    pub updated_unix_ms: AtomicU64,
    pub started_unix_ms: AtomicU64,
    pub tracked: AtomicU64,
    pub waiting: AtomicU64,
    pub reaped: [AtomicU64; REASONS],
    pub would_reap: [AtomicU64; REASONS],
    pub rejected_over_cap: AtomicU64,
    /// The effective policy as logfmt, NUL-padded.
    pub policy: [u8; POLICY_BYTES],
    // ---- mailbox: written by the command, read by the watcher ----
    /// Bumped by the command after it filled `request_kind`/`request_fd`.
    pub request_seq: AtomicU64,
    pub request_kind: AtomicU32,
    pub request_fd: AtomicI32,
    /// Set by the watcher to `request_seq` once handled, with how many it reaped.
    pub answer_seq: AtomicU64,
    pub answer_reaped: AtomicU32,
    pub _reserved: [u32; 15],
}

/// Bits of `Record::flags` (the published form; the shim's slot flags have their own
/// numbering and are mapped onto these by its publisher).
/// The server waits on the client.
pub const TURN_CLIENT: u32 = 1;
/// A write is pending.
pub const TURN_WRITING: u32 = 2;
/// The guard shut the connection down.
pub const FLAG_REAPED: u32 = 4;
/// Judged by the kernel's counters (an adopted inetd connection).
pub const FLAG_KERNEL_VIEW: u32 = 8;
/// Opened by the program itself (STALLGUARD_OUTBOUND).
pub const FLAG_OUTBOUND: u32 = 16;
/// A Unix-domain connection.
pub const FLAG_UNIX: u32 = 32;
/// Exempted by the program (stallguard_exempt).
pub const FLAG_EXEMPT: u32 = 64;
/// A duplicate fd of a connection listed under another fd too (dup2 onto 0/1, inetd 0-2).
pub const FLAG_ALIAS: u32 = 128;
/// Monitor mode (`STALLGUARD_ACTION=log`): the connection would have been reaped; it was only
/// logged (`FLAG_REAPED` means it really was shut down).
pub const FLAG_WOULD_REAP: u32 = 256;
/// Every record bit, each once.
pub const RECORD_BITS: [u32; 9] = [
    TURN_CLIENT,
    TURN_WRITING,
    FLAG_REAPED,
    FLAG_KERNEL_VIEW,
    FLAG_OUTBOUND,
    FLAG_UNIX,
    FLAG_EXEMPT,
    FLAG_ALIAS,
    FLAG_WOULD_REAP,
];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub fd: i32,
    pub flags: u32,
    pub family: u16,
    pub local_port: u16,
    pub peer_port: u16,
    pub _pad: u16,
    pub peer_ip: [u8; 16],
    /// How long the current turn has lasted (client's wait or pending write), ms.
    pub waiting_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Before the earliest running timer expires; `u64::MAX` when no timer runs.
    pub time_left_ms: u64,
    pub age_ms: u64,
    /// HTTP/1 stage (index into [`STAGE_NAMES`]; 0: not an HTTP connection the lens follows).
    pub stage: u32,
    /// Requests completed on the connection (HTTP only).
    pub requests: u32,
    /// Latest request line, `METHOD SP target` (`stallguard_lens::RequestLine::to_words`).
    pub line: [u64; 8],
}

/// Names of [`Record::stage`] (the lens's `Stage` numbering; 0 and 7 are not shown).
pub const STAGE_NAMES: [&str; 8] = [
    "", "headers", "body", "server", "response", "idle", "tunnel", "",
];

pub const SEGMENT_BYTES: usize =
    std::mem::size_of::<Header>() + CAPACITY * std::mem::size_of::<Record>();

// The layout both sides rely on, checked when either is compiled: a change here must come
// with a new VERSION (readers refuse other versions).
const _: () = {
    assert!(std::mem::size_of::<Record>() == 144);
    assert!(std::mem::size_of::<Header>().is_multiple_of(8));
    assert!(std::mem::align_of::<Header>() == 8);
    // Each record bit is a bit of its own.
    let mut seen = 0u32;
    let mut i = 0;
    while i < RECORD_BITS.len() {
        assert!(RECORD_BITS[i].count_ones() == 1);
        assert!(seen & RECORD_BITS[i] == 0);
        seen |= RECORD_BITS[i];
        i += 1;
    }
};

impl Header {
    /// Whether a mapped header is a segment this code understands.
    pub fn is_valid(&self) -> bool {
        self.magic == MAGIC
            && self.version == VERSION
            && self.record_size as usize == std::mem::size_of::<Record>()
            && self.capacity as usize <= CAPACITY
    }

    pub fn policy_text(&self) -> String {
        let end = self
            .policy
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(POLICY_BYTES);
        String::from_utf8_lossy(&self.policy[..end]).into_owned()
    }
}

/// Records follow the header.
///
/// # Safety
/// `header` must point at the start of a mapping of at least `SEGMENT_BYTES`.
pub unsafe fn records(header: *const Header) -> *const Record {
    (header as *const u8).add(std::mem::size_of::<Header>()) as *const Record
}

/// A consistent copy of a segment: retries while the watcher is writing.
///
/// # Safety
/// `header` must point at a mapped, valid segment.
pub unsafe fn snapshot(header: *const Header) -> Option<(Vec<Record>, u64)> {
    let h = &*header;
    for _ in 0..100 {
        let before = h.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        let n = (h.count.load(Ordering::Acquire) as usize).min(CAPACITY);
        let recs = std::slice::from_raw_parts(records(header), n).to_vec();
        std::sync::atomic::fence(Ordering::Acquire);
        if h.seq.load(Ordering::Acquire) == before {
            return Some((recs, before));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        assert_eq!(std::mem::size_of::<Record>(), 144);
        assert_eq!(std::mem::size_of::<Header>() % 8, 0);
        assert_eq!(pid_of("stallguard-1234"), Some(1234));
        assert_eq!(pid_of("stallguard-x"), None);
        assert_eq!(path_for(7), "/dev/shm/stallguard-7");
    }
}

/// Counters in the form the metrics exposition needs (from a header, or summed over several
/// processes of one server).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub tracked: u64,
    pub waiting: u64,
    pub reaped: [u64; REASONS],
    pub would_reap: [u64; REASONS],
    pub rejected_over_cap: u64,
}

/// Reason labels, by counter index (`stallguard_policy::Reason::as_str`).
pub const REASON_NAMES: [&str; REASONS] = {
    let mut names = [""; REASONS];
    let mut i = 0;
    while i < REASONS {
        names[i] = Reason::ALL[i].as_str();
        i += 1;
    }
    names
};

impl Counters {
    pub fn from_header(h: &Header) -> Counters {
        let mut c = Counters {
            tracked: h.tracked.load(Ordering::Relaxed),
            waiting: h.waiting.load(Ordering::Relaxed),
            rejected_over_cap: h.rejected_over_cap.load(Ordering::Relaxed),
            ..Counters::default()
        };
        for i in 0..REASONS {
            c.reaped[i] = h.reaped[i].load(Ordering::Relaxed);
            c.would_reap[i] = h.would_reap[i].load(Ordering::Relaxed);
        }
        c
    }

    pub fn add(&mut self, o: &Counters) {
        self.tracked += o.tracked;
        self.waiting += o.waiting;
        self.rejected_over_cap += o.rejected_over_cap;
        for i in 0..REASONS {
            self.reaped[i] += o.reaped[i];
            self.would_reap[i] += o.would_reap[i];
        }
    }

    /// Prometheus text exposition (format 0.0.4), following its naming conventions.
    /// `labels` (e.g. `pid="42"`) is added to every sample; empty for none.
    pub fn prometheus(&self, labels: &str) -> String {
        let with = |extra: &str| match (labels.is_empty(), extra.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("{{{extra}}}"),
            (false, true) => format!("{{{labels}}}"),
            (false, false) => format!("{{{labels},{extra}}}"),
        };
        let mut out = String::new();
        out += "# HELP stallguard_connections_tracked Connections the guard is watching.\n";
        out += "# TYPE stallguard_connections_tracked gauge\n";
        out += &format!(
            "stallguard_connections_tracked{} {}\n",
            with(""),
            self.tracked
        );
        out += "# HELP stallguard_connections_waiting Tracked connections on the client's turn (the server waits on them).\n";
        out += "# TYPE stallguard_connections_waiting gauge\n";
        out += &format!(
            "stallguard_connections_waiting{} {}\n",
            with(""),
            self.waiting
        );
        out += "# HELP stallguard_reaped_total Connections shut down, by reason.\n";
        out += "# TYPE stallguard_reaped_total counter\n";
        for (i, name) in REASON_NAMES
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
        {
            out += &format!(
                "stallguard_reaped_total{} {}\n",
                with(&format!("reason=\"{name}\"")),
                self.reaped[i]
            );
        }
        out += "# HELP stallguard_would_reap_total Connections monitor mode (STALLGUARD_ACTION=log) would have shut down, by reason.\n";
        out += "# TYPE stallguard_would_reap_total counter\n";
        for (i, name) in REASON_NAMES
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
        {
            out += &format!(
                "stallguard_would_reap_total{} {}\n",
                with(&format!("reason=\"{name}\"")),
                self.would_reap[i]
            );
        }
        out += "# HELP stallguard_rejected_over_cap_total Connections refused at accept for STALLGUARD_PER_SOURCE.\n";
        out += "# TYPE stallguard_rejected_over_cap_total counter\n";
        out += &format!(
            "stallguard_rejected_over_cap_total{} {}\n",
            with(""),
            self.rejected_over_cap
        );
        out
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let mut c = Counters {
            tracked: 3,
            ..Counters::default()
        };
        c.reaped[0] = 5;
        let text = c.prometheus("pid=\"42\"");
        assert!(text.contains("stallguard_connections_tracked{pid=\"42\"} 3\n"));
        assert!(text.contains("stallguard_reaped_total{pid=\"42\",reason=\"first_byte\"} 5\n"));
        assert!(text.contains("# TYPE stallguard_reaped_total counter\n"));
        let bare = c.prometheus("");
        assert!(bare.contains("stallguard_connections_tracked 3\n"));
        assert!(bare.contains("stallguard_reaped_total{reason=\"manual\"} 0\n"));
    }
}
