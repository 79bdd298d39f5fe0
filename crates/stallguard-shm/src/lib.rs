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
/// 2: the mailbox became a ring of request slots (concurrent commands no longer overwrite
/// each other's request); records carry the HTTP stage and request count (the lens).
/// 3: both of version 2's layouts in one (the mailbox ring and the HTTP fields).
/// 4: a `pressure` reason counter and per-port pressure figures.
pub const VERSION: u32 = 4;
/// Records in a segment; the file is sparse, so unused records cost no memory.
pub const CAPACITY: usize = 65_536;
/// Counter slots per reason: one per `stallguard_policy::Reason`, at `Reason::index()`.
pub const REASONS: usize = Reason::ALL.len();
pub const REASON_MANUAL: usize = Reason::Manual.index();
pub const POLICY_BYTES: usize = 1024;
/// Listening ports whose pressure figures a segment carries (issue 12).
pub const PORTS: usize = 8;

/// One listening port's pressure figures. `port` 0: unused entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStat {
    pub port: u16,
    /// 1 while clients wait for a worker and connections on the client's turn hold workers.
    pub under_pressure: u16,
    /// Clients waiting for a worker: the accept queue plus connections accepted, not yet read.
    pub waiting: u32,
    /// Connections reaped for pressure on this port.
    pub pressure_reaps: u64,
}

/// The published form of a [`PortStat`] (written by the watcher every tick).
#[repr(C)]
pub struct PortCell {
    /// `port | under_pressure << 16 | waiting << 32`.
    pub packed: AtomicU64,
    pub pressure_reaps: AtomicU64,
}

impl PortCell {
    pub fn store(&self, p: &PortStat) {
        self.packed.store(
            u64::from(p.port) | u64::from(p.under_pressure) << 16 | u64::from(p.waiting) << 32,
            Ordering::Relaxed,
        );
        self.pressure_reaps
            .store(p.pressure_reaps, Ordering::Relaxed);
    }

    pub fn load(&self) -> PortStat {
        let packed = self.packed.load(Ordering::Relaxed);
        PortStat {
            port: packed as u16,
            under_pressure: (packed >> 16) as u16,
            waiting: (packed >> 32) as u32,
            pressure_reaps: self.pressure_reaps.load(Ordering::Relaxed),
        }
    }
}

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

/// Request slots in the mailbox ring: more commands than this posting at the same instant
/// wait for a free slot.
pub const MAILBOX_SLOTS: usize = 64;

/// A request the watcher finds later than this after it was posted is answered without
/// being carried out: by then the command has given up (it waits longer than this for an
/// answer, so it sees every request that was carried out), and the fd may name another
/// connection (a process stopped, then continued).
pub const REQUEST_EXPIRES_MS: u64 = 2_500;

/// CLOCK_MONOTONIC in milliseconds: the clock requests are stamped with (the same for every
/// process on the machine).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// One request slot. `state` tells, for the ticket `t` this slot serves in lap
/// `t / MAILBOX_SLOTS`: `2 * lap` free, `2 * lap + 1` posted (kind and fd filled), and
/// `2 * (lap + 1)` once answered or abandoned (free for the next lap). A zeroed slot is free
/// for lap 0, so a fresh (zero-filled) segment needs no initialisation.
#[repr(C)]
pub struct RequestSlot {
    pub state: AtomicU64,
    pub kind: AtomicU32,
    pub fd: AtomicI32,
    /// The answer: the ticket's low 32 bits, then how many connections were reaped.
    pub answer: AtomicU64,
    /// When it was posted ([`monotonic_ms`]).
    pub posted_ms: AtomicU64,
}

/// The operator's requests: a bounded multi-producer (commands), single-consumer (the
/// watcher) queue of [`RequestSlot`]s. A command claims ticket `head` by compare-and-swap,
/// fills its slot and marks it posted; the watcher takes tickets in order from `tail`,
/// answers in the slot and frees it. Neither side ever blocks the other: a full ring or a
/// claimed-but-unposted slot is seen and waited out (or, by the watcher, abandoned).
#[repr(C)]
pub struct Mailbox {
    /// The next ticket a command claims.
    pub head: AtomicU64,
    /// The next ticket the watcher takes (only the watcher writes it).
    pub tail: AtomicU64,
    pub slots: [RequestSlot; MAILBOX_SLOTS],
}

/// A request the watcher took from the mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub ticket: u64,
    pub kind: u32,
    pub fd: i32,
    pub posted_ms: u64,
}

impl Request {
    /// Posted more than [`REQUEST_EXPIRES_MS`] before `now_ms` ([`monotonic_ms`]).
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.posted_ms) > REQUEST_EXPIRES_MS
    }
}

/// What the watcher finds at the mailbox's tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    Empty,
    Request(Request),
    /// Claimed by a command that has not posted it yet (or died in between).
    Claimed(u64),
}

/// A command's view of its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Pending,
    Reaped(u32),
    /// Handled, but the slot has since served another request (its count is gone), or the
    /// watcher abandoned it.
    Done,
}

fn lap(ticket: u64) -> u64 {
    ticket / MAILBOX_SLOTS as u64
}

fn tag(ticket: u64) -> u64 {
    (ticket & 0xffff_ffff) << 32
}

impl Mailbox {
    fn slot(&self, ticket: u64) -> &RequestSlot {
        &self.slots[(ticket % MAILBOX_SLOTS as u64) as usize]
    }

    /// Command side: posts a request at `now_ms` ([`monotonic_ms`]); its ticket, or None
    /// while the ring is full.
    pub fn post(&self, kind: u32, fd: i32, now_ms: u64) -> Option<u64> {
        loop {
            let t = self.head.load(Ordering::Acquire);
            let slot = self.slot(t);
            let free = 2 * lap(t);
            let state = slot.state.load(Ordering::Acquire);
            if state < free {
                return None; // the previous lap's request is still waiting
            }
            if state > free {
                continue; // another command took ticket t meanwhile: reload
            }
            if self
                .head
                .compare_exchange(t, t + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            slot.kind.store(kind, Ordering::Relaxed);
            slot.fd.store(fd, Ordering::Relaxed);
            slot.posted_ms.store(now_ms, Ordering::Relaxed);
            // Fails only if the watcher abandoned the claim in between (we were stopped
            // for a long time): claim another ticket.
            if slot
                .state
                .compare_exchange(free, free + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(t);
            }
        }
    }

    /// Command side: the watcher's answer to `ticket`.
    pub fn answer_of(&self, ticket: u64) -> Answer {
        let slot = self.slot(ticket);
        if slot.state.load(Ordering::Acquire) < 2 * (lap(ticket) + 1) {
            return Answer::Pending;
        }
        let a = slot.answer.load(Ordering::Acquire);
        if a & !0xffff_ffff == tag(ticket) {
            Answer::Reaped(a as u32)
        } else {
            Answer::Done
        }
    }

    /// Watcher side: the request at the tail, if posted (it stays there until answered).
    pub fn peek(&self) -> Take {
        let t = self.tail.load(Ordering::Acquire);
        if self.head.load(Ordering::Acquire) <= t {
            return Take::Empty;
        }
        let slot = self.slot(t);
        if slot.state.load(Ordering::Acquire) != 2 * lap(t) + 1 {
            return Take::Claimed(t);
        }
        Take::Request(Request {
            ticket: t,
            kind: slot.kind.load(Ordering::Relaxed),
            fd: slot.fd.load(Ordering::Relaxed),
            posted_ms: slot.posted_ms.load(Ordering::Relaxed),
        })
    }

    /// Watcher side: answers the tail request and frees its slot.
    pub fn answer(&self, ticket: u64, reaped: u32) {
        let slot = self.slot(ticket);
        slot.answer
            .store(tag(ticket) | u64::from(reaped), Ordering::Release);
        slot.state.store(2 * (lap(ticket) + 1), Ordering::Release);
        self.tail.store(ticket + 1, Ordering::Release);
    }

    /// Watcher side: gives up a ticket claimed but never posted (its command died between
    /// claim and post); a command that posts it late sees the refusal and claims another.
    pub fn abandon(&self, ticket: u64) -> bool {
        let free = 2 * lap(ticket);
        let gone = self
            .slot(ticket)
            .state
            .compare_exchange(free, free + 2, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if gone {
            self.tail.store(ticket + 1, Ordering::Release);
        }
        gone
    }
}

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
    /// Per listening port: clients waiting, under pressure, pressure reaps.
    pub ports: [PortCell; PORTS],
    /// The effective policy as logfmt, NUL-padded.
    pub policy: [u8; POLICY_BYTES],
    // ---- mailbox: written by the command, read by the watcher (see [`Mailbox`]) ----
    pub mailbox: Mailbox,
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
    fn mailbox_in_order_with_answers() {
        let m: Mailbox = unsafe { std::mem::zeroed() };
        assert_eq!(m.peek(), Take::Empty);
        let a = m.post(REQUEST_FD, 7, 0).unwrap();
        let b = m.post(REQUEST_STUCK, -1, 0).unwrap();
        assert_eq!(m.answer_of(a), Answer::Pending);
        let Take::Request(r) = m.peek() else { panic!() };
        assert_eq!((r.ticket, r.kind, r.fd), (a, REQUEST_FD, 7));
        assert!(!r.expired(REQUEST_EXPIRES_MS) && r.expired(REQUEST_EXPIRES_MS + 1));
        m.answer(a, 1);
        assert_eq!(m.answer_of(a), Answer::Reaped(1));
        assert_eq!(m.answer_of(b), Answer::Pending);
        let Take::Request(r) = m.peek() else { panic!() };
        assert_eq!((r.ticket, r.kind), (b, REQUEST_STUCK));
        m.answer(b, 0);
        assert_eq!(m.answer_of(b), Answer::Reaped(0));
        assert_eq!(m.peek(), Take::Empty);
    }

    #[test]
    fn mailbox_full_then_free_again_and_overwritten_answers() {
        let m: Mailbox = unsafe { std::mem::zeroed() };
        let tickets: Vec<u64> = (0..MAILBOX_SLOTS)
            .map(|i| m.post(REQUEST_FD, i as i32, 0).unwrap())
            .collect();
        assert_eq!(m.post(REQUEST_FD, 99, 0), None, "full");
        let Take::Request(r) = m.peek() else { panic!() };
        m.answer(r.ticket, 1);
        let next = m.post(REQUEST_FD, 99, 0).unwrap();
        assert_eq!(next, MAILBOX_SLOTS as u64);
        for _ in 1..MAILBOX_SLOTS {
            let Take::Request(r) = m.peek() else { panic!() };
            m.answer(r.ticket, 1);
        }
        let Take::Request(r) = m.peek() else { panic!() };
        assert_eq!((r.ticket, r.fd), (next, 99));
        m.answer(next, 3);
        assert_eq!(m.answer_of(next), Answer::Reaped(3));
        // Ticket 0 shared its slot with `next`: handled, its count overwritten.
        assert_eq!(m.answer_of(tickets[0]), Answer::Done);
        assert_eq!(m.answer_of(tickets[1]), Answer::Reaped(1));
    }

    #[test]
    fn mailbox_abandons_a_claim_never_posted() {
        let m: Mailbox = unsafe { std::mem::zeroed() };
        // A command claimed ticket 0 and died before posting it.
        m.head.store(1, Ordering::Release);
        assert_eq!(m.peek(), Take::Claimed(0));
        assert!(m.abandon(0));
        assert_eq!(m.peek(), Take::Empty);
        let t = m.post(REQUEST_FD, 5, 0).unwrap();
        assert_eq!(t, 1);
        let Take::Request(r) = m.peek() else { panic!() };
        assert_eq!(r.fd, 5);
    }

    #[test]
    fn mailbox_concurrent_posts_are_each_taken_once() {
        let m: &'static Mailbox = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        let posters: Vec<_> = (0..8)
            .map(|p| {
                std::thread::spawn(move || {
                    (0..200)
                        .map(|i| {
                            let fd = p * 1000 + i;
                            let t = loop {
                                if let Some(t) = m.post(REQUEST_FD, fd, 0) {
                                    break t;
                                }
                                std::thread::yield_now();
                            };
                            loop {
                                match m.answer_of(t) {
                                    Answer::Pending => std::thread::yield_now(),
                                    Answer::Reaped(n) => break assert_eq!(n as i32, fd),
                                    // The slot served another lap before this thread looked.
                                    Answer::Done => break,
                                }
                            }
                        })
                        .count()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 1600 {
            match m.peek() {
                Take::Request(r) => {
                    assert!(seen.insert(r.fd), "fd {} taken twice", r.fd);
                    m.answer(r.ticket, r.fd as u32);
                }
                _ => std::thread::yield_now(),
            }
        }
        for p in posters {
            assert_eq!(p.join().unwrap(), 200);
        }
    }

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
    /// Per listening port (entries with port 0 are unused).
    pub ports: [PortStat; PORTS],
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
        for (to, cell) in c.ports.iter_mut().zip(&h.ports) {
            *to = cell.load();
        }
        c
    }

    /// The ports in use, in port order.
    pub fn active_ports(&self) -> Vec<PortStat> {
        let mut ports: Vec<PortStat> = self.ports.iter().copied().filter(|p| p.port != 0).collect();
        ports.sort_by_key(|p| p.port);
        ports
    }

    pub fn add(&mut self, o: &Counters) {
        self.tracked += o.tracked;
        self.waiting += o.waiting;
        self.rejected_over_cap += o.rejected_over_cap;
        for i in 0..REASONS {
            self.reaped[i] += o.reaped[i];
            self.would_reap[i] += o.would_reap[i];
        }
        // Prefork children share their listeners: the queue is the same for all (max),
        // reaps add up.
        for p in o.ports.iter().filter(|p| p.port != 0) {
            let mine = match self.ports.iter().position(|m| m.port == p.port) {
                Some(i) => Some(i),
                None => self.ports.iter().position(|m| m.port == 0),
            };
            if let Some(i) = mine {
                let m = &mut self.ports[i];
                m.port = p.port;
                m.waiting = m.waiting.max(p.waiting);
                m.under_pressure = m.under_pressure.max(p.under_pressure);
                m.pressure_reaps += p.pressure_reaps;
            }
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
        let ports = self.active_ports();
        type Value = fn(&PortStat) -> u64;
        let families: [(&str, &str, &str, Value); 3] = [
            ("stallguard_accept_queue", "gauge", "Clients waiting for a worker on a listening port (accept queue, and accepted but not yet read).", |p| u64::from(p.waiting)),
            ("stallguard_under_pressure", "gauge", "1 while clients wait for a worker and connections on the client's turn hold workers.", |p| u64::from(p.under_pressure)),
            ("stallguard_pressure_total", "counter", "Connections reaped for pressure, by listening port.", |p| p.pressure_reaps),
        ];
        for (family, kind, help, value) in families {
            out += &format!("# HELP {family} {help}\n# TYPE {family} {kind}\n");
            for p in &ports {
                let labels = with(&format!("port=\"{}\"", p.port));
                out += &format!("{family}{labels} {}\n", value(p));
            }
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

/// A label value with `\`, `"` and newlines escaped (text format 0.0.4).
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels every per-process sample carries, in the library's textfile and in
/// `stallguard metrics` alike: `pid` (one series per process: a prefork server's children
/// each have theirs) and `comm` (the program's name, stable across restarts).
pub fn process_labels(pid: u32, comm: &str) -> String {
    format!("pid=\"{pid}\",comm=\"{}\"", label_value(comm))
}

/// The `stallguard_build_info` series: the stallguard `version` that exports the metrics and
/// the live-view layout it reads, plus `labels` (empty for none). The command exports one
/// for itself; the library's textfile one per process (with its process labels: identical
/// series in several textfiles would make node_exporter fail the scrape).
pub fn build_info(version: &str, labels: &str) -> String {
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!(",{labels}")
    };
    format!(
        "# HELP stallguard_build_info The stallguard build exporting these metrics (value 1).\n\
         # TYPE stallguard_build_info gauge\n\
         stallguard_build_info{{version=\"{version}\",segment_layout=\"{VERSION}\"{labels}}} 1\n"
    )
}

/// One process's exposition, as the library writes it to STALLGUARD_METRICS_FILE: its build
/// and its counters, every sample labelled with [`process_labels`].
pub fn process_exposition(version: &str, pid: u32, comm: &str, counters: &Counters) -> String {
    let labels = process_labels(pid, comm);
    build_info(version, &labels) + &counters.prometheus(&labels)
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn a_process_exposition_labels_every_sample_with_pid_and_comm() {
        let text = process_exposition("9.9.9", 42, "my \"srv\"", &Counters::default());
        let labels = "pid=\"42\",comm=\"my \\\"srv\\\"\"";
        assert!(
            text.contains(&format!(
            "stallguard_build_info{{version=\"9.9.9\",segment_layout=\"{VERSION}\",{labels}}} 1\n"
        )),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains(labels), "{line}");
        }
        assert!(build_info("1", "").contains(&format!(
            "stallguard_build_info{{version=\"1\",segment_layout=\"{VERSION}\"}} 1\n"
        )));
    }

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
        assert!(bare.contains("stallguard_reaped_total{reason=\"pressure\"} 0\n"));
        c.ports[0] = PortStat {
            port: 8080,
            under_pressure: 1,
            waiting: 12,
            pressure_reaps: 7,
        };
        let mut sum = Counters::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(
            sum.ports[0].waiting, 12,
            "a shared listener's queue is not doubled"
        );
        let text = sum.prometheus("");
        assert!(
            text.contains("stallguard_accept_queue{port=\"8080\"} 12\n"),
            "{text}"
        );
        assert!(text.contains("stallguard_under_pressure{port=\"8080\"} 1\n"));
        assert!(text.contains("stallguard_pressure_total{port=\"8080\"} 14\n"));
        let cell = PortCell {
            packed: AtomicU64::new(0),
            pressure_reaps: AtomicU64::new(0),
        };
        cell.store(&c.ports[0]);
        assert_eq!(cell.load(), c.ports[0]);
    }
}
