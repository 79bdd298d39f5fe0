//! The live view: this process's segment `/dev/shm/stallguard-<pid>` (layout in the
//! `stallguard-shm` crate), which the `stallguard` command reads (`top`, `metrics`) and posts
//! reap requests into. Created by the watcher with mode 0600, so only the process's user (or
//! root) can read it or ask for a reap; removed at exit. Only the watcher writes it: the hooks
//! never touch it, so it costs the hot path nothing.

use super::observe::Observation;
use crate::abi::sys;
use crate::runtime::log::log_line;
use crate::runtime::{clock, config, pid};
use crate::table::stats;
use stallguard_shm::{Header, Record, CAPACITY, MAGIC, SEGMENT_BYTES, VERSION};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering::*};

static SEGMENT: AtomicPtr<Header> = AtomicPtr::new(std::ptr::null_mut());
/// The pid the mapped segment belongs to (a forked child must not write its parent's).
static OWNER: AtomicI32 = AtomicI32::new(0);
static REMOVE_AT_EXIT: AtomicBool = AtomicBool::new(false);
/// When the records were last rewritten (they are refreshed at most once a second; the
/// counters every tick).
static RECORDS_AT: AtomicU64 = AtomicU64::new(0);
const RECORDS_EVERY_MS: u64 = 1000;
/// When this process's segment was created (its access time then is ours, not a reader's).
static CREATED_UNIX_MS: AtomicU64 = AtomicU64::new(0);

/// Creates this process's segment (watcher start). Without /dev/shm the guard runs without
/// a live view.
pub fn open() {
    let pid = pid::pid();
    if OWNER.load(Acquire) == pid && !SEGMENT.load(Acquire).is_null() {
        return;
    }
    clean_up(clock::monotonic_ms());
    let Ok(path) = std::ffi::CString::new(stallguard_shm::path_for(pid as u32)) else {
        return;
    };
    let Some(p) = create(&path) else { return };
    // SAFETY: a fresh shared mapping of SEGMENT_BYTES (zeroed by ftruncate), page-aligned,
    // not yet published: no other reference to it exists in this process.
    fill(unsafe { &mut *p }, pid);
    OWNER.store(pid, Release);
    CREATED_UNIX_MS.store(unix_ms(), Relaxed);
    SEGMENT.store(p, Release);
    if !REMOVE_AT_EXIT.swap(true, AcqRel) {
        sys::at_exit(remove_at_exit);
    }
}

/// Creates the segment file at `path` (replacing a stale one of a dead process with our pid)
/// and maps it.
fn create(path: &std::ffi::CStr) -> Option<*mut Header> {
    sys::unlink(path);
    let fd = sys::create_exclusive(path);
    if fd < 0 {
        log_line!(
            Debug,
            "event=no_live_view error=\"{}\"",
            std::io::Error::last_os_error()
        );
        return None;
    }
    let mapped = if sys::truncate(fd, SEGMENT_BYTES) {
        sys::map_file_shared(fd, SEGMENT_BYTES)
    } else {
        None
    };
    sys::close_own(fd); // the mapping stays
    if mapped.is_none() {
        sys::unlink(path);
    }
    mapped.map(|p| p.cast::<Header>())
}

/// The header of a new segment: layout, owner, policy.
fn fill(h: &mut Header, pid: i32) {
    h.magic = MAGIC;
    h.version = VERSION;
    h.record_size = std::mem::size_of::<Record>() as u32;
    h.pid = pid as u32;
    h.capacity = CAPACITY as u32;
    h.tick_ms.store(config::policy().tick_ms as u32, Relaxed);
    h.started_unix_ms.store(unix_ms(), Relaxed);
    let text = config::policy().describe();
    let n = text.len().min(stallguard_shm::POLICY_BYTES - 1);
    h.policy[..n].copy_from_slice(&text.as_bytes()[..n]);
}

/// When this process (or the process it was forked from) last removed stale segments
/// (monotonic ms; 0: never). Inherited over fork on purpose: a forked connection process
/// whose parent scanned lately does not scan again (a fork-per-connection server with 200
/// children paid 200 `kill(pid, 0)` per child start, one per live child's segment).
static CLEANED_AT: AtomicU64 = AtomicU64::new(0);
/// How often a long-running watcher removes stale segments again (the segments of its
/// killed children, which do not scan, go within it).
const CLEAN_EVERY_MS: u64 = 60_000;

/// Whether stale segments are to be removed now, last removed at `last` (0: never).
fn clean_due(last: u64, now: u64) -> bool {
    last == 0 || now.saturating_sub(last) >= CLEAN_EVERY_MS
}

/// Removes stale segments at a watcher's start, and then once a minute (`now`: monotonic ms),
/// unless it was done lately here or in the process this one was forked from.
pub fn clean_up(now: u64) {
    if clean_due(CLEANED_AT.load(Relaxed), now) {
        CLEANED_AT.store(now, Relaxed);
        remove_stale_segments();
    }
}

/// Segments of processes that died without running atexit (killed by a signal) are removed
/// by the next watcher that starts, and by a running one within a minute (only ours: other
/// users' files are not ours to delete).
fn remove_stale_segments() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = stallguard_shm::pid_of(&name.to_string_lossy()) else {
            continue;
        };
        if sys::process_gone(pid as i32) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// atexit: remove the segment of the exiting process (atexit handlers are inherited over
/// fork, hence the owner check: a child never removes its parent's segment).
extern "C" fn remove_at_exit() {
    let pid = sys::getpid();
    if OWNER.load(Acquire) == pid {
        if let Ok(path) = std::ffi::CString::new(stallguard_shm::path_for(pid as u32)) {
            sys::unlink(&path);
        }
    }
}

/// In a forked child: the inherited mapping is the parent's segment; drop it (the child's
/// watcher creates its own).
pub fn forget_after_fork() {
    let p = SEGMENT.swap(std::ptr::null_mut(), AcqRel);
    OWNER.store(0, Release);
    if !p.is_null() {
        // SAFETY: the parent's mapping, made by `open`; only the watcher used it, and no
        // watcher runs in this child yet.
        unsafe { sys::unmap(p.cast(), SEGMENT_BYTES) };
    }
}

fn segment() -> Option<&'static Header> {
    let p = SEGMENT.load(Acquire);
    // SAFETY: a non-null SEGMENT is a live mapping made by `open` for this pid; it is unmapped
    // only in a forked child before its watcher starts.
    (!p.is_null() && OWNER.load(Acquire) == pid::pid()).then(|| unsafe { &*p })
}

/// Publishes this tick: counters always, the connection records at most once a second.
pub fn tick(now: u64, seen: &[Observation]) {
    let Some(h) = segment() else { return };
    counters(h);
    if now.saturating_sub(RECORDS_AT.load(Relaxed))
        >= RECORDS_EVERY_MS.max(config::policy().tick_ms)
    {
        records(h, now, seen);
    }
    // Last: `stallguard`, having woken a dozing watcher, waits for this to change and then
    // reads the records too.
    h.updated_unix_ms.store(unix_ms(), Release);
}

/// Publishes the counters only (a tick without a full pass).
pub fn tick_counters() {
    if let Some(h) = segment() {
        counters(h);
        h.updated_unix_ms.store(unix_ms(), Release);
    }
}

fn counters(h: &Header) {
    let c = stats::counters();
    h.tracked.store(c.tracked, Relaxed);
    h.waiting.store(c.waiting, Relaxed);
    h.rejected_over_cap.store(c.rejected_over_cap, Relaxed);
    for i in 0..stallguard_shm::REASONS {
        h.reaped[i].store(c.reaped[i], Relaxed);
        h.would_reap[i].store(c.would_reap[i], Relaxed);
    }
    for (cell, port) in h.ports.iter().zip(&c.ports) {
        cell.store(port);
    }
}

fn records(h: &Header, now: u64, seen: &[Observation]) {
    RECORDS_AT.store(now, Relaxed);
    let seq = h.seq.load(Relaxed);
    h.seq.store(seq | 1, Release); // odd: writing
    std::sync::atomic::fence(Release);
    // SAFETY: the mapping is SEGMENT_BYTES long (made by `open`).
    let records = unsafe { stallguard_shm::records(h) as *mut Record };
    let n = seen.len().min(CAPACITY);
    for (i, o) in seen.iter().take(n).enumerate() {
        // SAFETY: i < CAPACITY records fit after the header; only the watcher writes them,
        // readers detect a torn copy with the seqlock.
        unsafe { records.add(i).write(record(o, now)) };
    }
    h.count.store(n as u32, Release);
    h.seq.store((seq | 1) + 1, Release); // even again, and changed
}

/// What a record's flag bits say, from the observation: the explicit mapping of the
/// watcher's view onto `stallguard_shm`'s published bits (the slot's own `table::Flags` have
/// another numbering; no bit is copied across).
/// The published bits of `o` (the client's turn as the verdict sees it: an HTTP request that
/// is complete is the server's turn even with the fd in an epoll read set).
fn record_flags(o: &Observation) -> u32 {
    use stallguard_policy::client_turn_since;
    use stallguard_shm::{
        FLAG_ALIAS, FLAG_EXEMPT, FLAG_KERNEL_VIEW, FLAG_OUTBOUND, FLAG_REAPED, FLAG_UNIX,
        FLAG_WOULD_REAP, TURN_CLIENT, TURN_WRITING,
    };
    [
        (client_turn_since(&o.facts).is_some(), TURN_CLIENT),
        (o.facts.write_pending_since != 0, TURN_WRITING),
        // Only a real reap marks the slot; monitor mode merely logged it.
        (o.done && o.reaped, FLAG_REAPED),
        (o.done && !o.reaped, FLAG_WOULD_REAP),
        (o.kernel_view, FLAG_KERNEL_VIEW),
        (o.outbound, FLAG_OUTBOUND),
        (o.exempt, FLAG_EXEMPT),
        (o.alias, FLAG_ALIAS),
        (o.identity.family == libc::AF_UNIX as u16, FLAG_UNIX),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |bits, (_, bit)| bits | bit)
}

fn record(o: &Observation, now: u64) -> Record {
    let f = &o.facts;
    let flags = record_flags(o);
    let slot = crate::table::slot(o.fd);
    Record {
        fd: o.fd,
        flags,
        family: o.identity.family,
        local_port: o.identity.local_port,
        peer_port: o.identity.peer_port,
        _pad: 0,
        peer_ip: o.identity.peer_ip,
        waiting_ms: stallguard_policy::turn_ms(f, now).unwrap_or(0),
        bytes_in: f.bytes_in,
        bytes_out: slot.map_or(0, |s| s.bytes_out()),
        time_left_ms: o
            .timers
            .and_then(|t| stallguard_policy::time_left_ms(f, &t, now))
            .unwrap_or(u64::MAX),
        age_ms: now.saturating_sub(f.accepted_at),
        stage: f
            .framing
            .map_or(0, |fr| fr.shown_stage(f.waiting_since != 0) as u32),
        requests: f.framing.map_or(0, |fr| fr.requests),
        line: f
            .framing
            .and_then(|_| crate::table::lines::request_line(o.fd))
            .map_or([0; 8], |l| l.to_words()),
    }
}

/// A reap request posted by `stallguard reap`.
pub struct Request {
    pub ticket: u64,
    /// `None`: every stuck connection.
    pub fd: Option<i32>,
}

/// How long after a reader last opened the segment the records keep being refreshed.
const READER_FRESH_MS: u64 = 3000;

/// Whether a reader (`stallguard top`, `status`, `metrics`) opened the segment lately: the
/// command marks its opens in the file's access time, so with nobody looking the watcher
/// never walks every connection to fill the records (one stat a second).
pub fn reader_attached() -> bool {
    if segment().is_none() {
        return false;
    }
    let Ok(path) = std::ffi::CString::new(stallguard_shm::path_for(pid::pid() as u32)) else {
        return false;
    };
    sys::atime_unix_ms(&path)
        .is_some_and(|at| at > CREATED_UNIX_MS.load(Relaxed) && at + READER_FRESH_MS >= unix_ms())
}

/// Sleeps up to `ms`, waking early when `stallguard reap` posts a request (it claims a
/// ticket, moving the mailbox's `head`, and wakes the futex on its low word).
pub fn sleep_unless_request(ms: u64) {
    let Some(h) = segment() else {
        return sys::sleep_ms(ms);
    };
    // The low 32 bits of head (little-endian: its first word).
    let word = (&h.mailbox.head as *const AtomicU64).cast::<u32>();
    let expected = h.mailbox.head.load(Acquire) as u32;
    if request_pending() {
        // Posted meanwhile (or claimed and not posted yet: `take_request` gives up such a
        // ticket after a while): look again soon, without spinning.
        return sys::sleep_ms(ms.min(10));
    }
    sys::wait_on_shared_word(word, expected, ms);
}

/// Set once `futex_waitv` (Linux 5.16) is found missing, or a seccomp filter applies (it may
/// not know that call): with a live view the watcher then never dozes, since a doze must
/// wake for a reap request too.
static NO_WAITV: AtomicBool = AtomicBool::new(false);

/// Whether the watcher may doze (`sleep`).
pub fn can_doze() -> bool {
    !NO_WAITV.load(Relaxed)
}

/// Dozes up to `ms` while the watcher's doze word holds `expected` (`clock::stop_publishing`),
/// waking early when a hook needs it (`clock::wake_watcher`) or when `stallguard` posts a
/// reap request or opens the live view (FUTEX_WAKE on the low word of the mailbox's `head`).
pub fn doze(expected: u32, ms: u64, tick_ms: u64) {
    let word = clock::doze_word();
    let Some(h) = segment() else {
        return sys::wait_private(word, expected, ms);
    };
    let head = (&h.mailbox.head as *const AtomicU64).cast::<u32>();
    let head_expected = h.mailbox.head.load(Acquire) as u32;
    if request_pending() {
        return sys::sleep_ms(ms.min(10));
    }
    if sys::seccomp_filtered() {
        // futex_waitv is newer than most filters: a filter that does not know it may kill
        // the process. Tick as before, for good (a filter is never removed).
        NO_WAITV.store(true, Relaxed);
        return sleep_unless_request(ms.min(tick_ms));
    }
    match sys::wait_either(word, expected, head, head_expected, ms) {
        Ok(()) | Err(libc::EAGAIN) => {}
        Err(_) => {
            // No futex_waitv: a tick-long sleep this time (the first hook that needs the
            // clock publishes it meanwhile), and no doze from now on.
            NO_WAITV.store(true, Relaxed);
            sleep_unless_request(ms.min(tick_ms));
        }
    }
}

/// Whether the mailbox holds a request the watcher has not taken yet.
pub fn request_pending() -> bool {
    segment().is_some_and(|h| h.mailbox.head.load(Acquire) != h.mailbox.tail.load(Acquire))
}

/// A ticket claimed by a command but not posted, and since when (ms): a command killed
/// between claim and post would otherwise block the mailbox for good.
static CLAIMED: AtomicU64 = AtomicU64::new(u64::MAX);
static CLAIMED_SINCE: AtomicU64 = AtomicU64::new(0);
const ABANDON_CLAIM_AFTER_MS: u64 = 2000;

/// The next request in the mailbox (in the order they were posted), if any.
pub fn take_request(now: u64) -> Option<Request> {
    use stallguard_shm::Take;
    let mailbox = &segment()?.mailbox;
    loop {
        let r = match mailbox.peek() {
            Take::Empty => return None,
            Take::Claimed(t) => {
                if CLAIMED.swap(t, Relaxed) != t {
                    CLAIMED_SINCE.store(now, Relaxed);
                } else if now.saturating_sub(CLAIMED_SINCE.load(Relaxed)) >= ABANDON_CLAIM_AFTER_MS
                    && mailbox.abandon(t)
                {
                    log_line!(Warn, "event=bad_request msg=\"claimed, never posted\"");
                    continue;
                }
                return None;
            }
            Take::Request(r) if r.expired(now) => {
                // Its command gave up; the fd may name another connection by now.
                log_line!(Warn, "event=operator_request_expired fd={}", r.fd);
                mailbox.answer(r.ticket, 0);
                continue;
            }
            Take::Request(r) => r,
        };
        let fd = match r.kind {
            stallguard_shm::REQUEST_FD => Some(r.fd),
            stallguard_shm::REQUEST_STUCK => None,
            other => {
                log_line!(Warn, "event=bad_request kind={other}");
                mailbox.answer(r.ticket, 0);
                continue;
            }
        };
        log_line!(
            Info,
            "event=operator_request what={}",
            fd.map_or("stuck".to_string(), |fd| format!("fd={fd}"))
        );
        return Some(Request {
            ticket: r.ticket,
            fd,
        });
    }
}

pub fn answer(ticket: u64, reaped: u32) {
    if let Some(h) = segment() {
        h.mailbox.answer(ticket, reaped);
    }
}

fn unix_ms() -> u64 {
    let (s, ms) = clock::wall_clock();
    (s as u64) * 1000 + u64::from(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation() -> Observation {
        Observation::for_test(5, stallguard_policy::Facts::default())
    }

    #[test]
    fn stale_segments_are_looked_for_at_start_then_once_a_minute() {
        assert!(clean_due(0, 5), "never yet: at once");
        assert!(
            !clean_due(1_000, 1_000 + CLEAN_EVERY_MS - 1),
            "lately (or by the parent)"
        );
        assert!(clean_due(1_000, 1_000 + CLEAN_EVERY_MS));
    }

    #[test]
    fn record_flags_map_each_fact_onto_its_published_bit() {
        assert_eq!(record_flags(&observation()), 0);
        let logged = Observation {
            done: true,
            ..observation()
        };
        assert_eq!(record_flags(&logged), stallguard_shm::FLAG_WOULD_REAP);
        let reaped = Observation {
            done: true,
            reaped: true,
            ..observation()
        };
        // The slot's REAPED is bit 1, the record's is bit 4: mapped, never copied.
        assert_eq!(record_flags(&reaped), stallguard_shm::FLAG_REAPED);
        let mut all = Observation {
            done: true,
            reaped: true,
            kernel_view: true,
            outbound: true,
            exempt: true,
            alias: true,
            ..observation()
        };
        all.identity.family = libc::AF_UNIX as u16;
        all.facts.waiting_since = 1;
        all.facts.write_pending_since = 1;
        let every = stallguard_shm::RECORD_BITS.iter().fold(0, |a, b| a | b);
        let every = every & !stallguard_shm::FLAG_WOULD_REAP;
        assert_eq!(record_flags(&all), every);
    }
}
