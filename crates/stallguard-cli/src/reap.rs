//! `stallguard reap PID (--fd N | --stuck [--min-wait D]) [--tree]`: asks the process's
//! watcher, through the mailbox in its segment, to shut connections down now (logged with
//! `reason=manual`).
//!
//! "Stuck" has one definition, here ([`is_stuck`]): on the client's turn (the server waits on
//! the client, or a write is pending) for at least the minimum wait (default 10 s, the
//! library's stuck-report threshold), neither exempt nor already reaped. The command picks the
//! connections from the published table and asks for each by fd; right before each request it
//! re-reads the table and skips a connection whose fd now names another peer.

use std::time::{Duration, Instant};

use stallguard_shm::{
    Answer, Record, FLAG_ALIAS, FLAG_EXEMPT, FLAG_REAPED, FLAG_WOULD_REAP, REQUEST_FD, TURN_CLIENT,
    TURN_WRITING,
};

use crate::segment::{segments_for, Notes, Segment};
use crate::view::human_ms;

pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);
const _: () = assert!(stallguard_shm::REQUEST_EXPIRES_MS + 250 <= ANSWER_WITHIN.as_millis() as u64);

/// The default minimum wait of `--stuck`: the library's "stuck" threshold.
pub const DEFAULT_MIN_WAIT_MS: u64 = stallguard_policy::STUCK_AFTER_MS;

/// `stallguard reap` options.
#[derive(Clone, Debug, clap::Args)]
pub struct ReapArgs {
    /// The server's pid
    pub pid: u32,
    /// The connection's fd in that process (see `stallguard top`)
    #[arg(long, value_name = "N", conflicts_with_all = ["stuck", "tree"],
          required_unless_present = "stuck", allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(0..))]
    pub fd: Option<i32>,
    /// Every stuck connection: on the client's turn for at least --min-wait
    #[arg(long)]
    pub stuck: bool,
    /// With --stuck: how long the client's turn must have lasted (default 10s)
    #[arg(long, value_name = "DURATION", requires = "stuck", value_parser = parse_min_wait)]
    pub min_wait: Option<u64>,
    /// With --stuck: also the process's descendants (a prefork server's children)
    #[arg(long)]
    pub tree: bool,
}

fn parse_min_wait(s: &str) -> Result<u64, String> {
    stallguard_policy::parse_duration_ms(s)
}

impl ReapArgs {
    /// One fd, or the stuck connections (`--fd` and `--stuck` exclude each other).
    pub fn target(&self) -> Target {
        match self.fd {
            Some(fd) => Target::Fd(fd),
            None => Target::Stuck {
                min_wait_ms: self.min_wait.unwrap_or(DEFAULT_MIN_WAIT_MS),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Target {
    Fd(i32),
    Stuck { min_wait_ms: u64 },
}

/// On the client's turn: the server waits on the client or a write is pending.
pub fn on_clients_turn(r: &Record) -> bool {
    r.flags & (TURN_CLIENT | TURN_WRITING) != 0
        && r.flags & (FLAG_REAPED | FLAG_WOULD_REAP | FLAG_EXEMPT | FLAG_ALIAS) == 0
}

/// The one definition of a stuck connection (`reap --stuck`).
pub fn is_stuck(r: &Record, min_wait_ms: u64) -> bool {
    on_clients_turn(r) && r.waiting_ms >= min_wait_ms
}

/// Why nothing qualified, e.g. `3 connections on the client's turn, none for ≥ 10s (longest 4.2s)`.
pub fn why_none(records: &[Record], min_wait_ms: u64) -> String {
    let on_turn: Vec<&Record> = records.iter().filter(|r| on_clients_turn(r)).collect();
    let min = stallguard_policy::format_duration_ms(min_wait_ms);
    match on_turn.iter().map(|r| r.waiting_ms).max() {
        None => format!(
            "no connection on the client's turn ({} tracked)",
            records.iter().filter(|r| r.flags & FLAG_ALIAS == 0).count()
        ),
        Some(longest) => format!(
            "{} connection{} on the client's turn, none for ≥ {min} (longest {}; lower it with --min-wait)",
            on_turn.len(),
            if on_turn.len() == 1 { "" } else { "s" },
            human_ms(longest)
        ),
    }
}

/// Posts one request and waits for its answer (None: no answer in time). Requests queue in
/// the segment's mailbox ring, so concurrent commands (and the many requests of one
/// `--stuck`) each get their own answer.
fn ask(seg: &Segment, kind: u32, fd: i32) -> Option<u32> {
    let mailbox = &seg.header().mailbox;
    let deadline = Instant::now() + ANSWER_WITHIN;
    let ticket = loop {
        if let Some(t) = mailbox.post(kind, fd, stallguard_shm::monotonic_ms()) {
            break t;
        }
        // Full: as many requests as the ring holds wait for the watcher.
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A dozing watcher sleeps on the mailbox's word: woken, it takes the request at once.
    crate::segment::wake_watcher(seg.header());
    // The watcher carries a request out only within REQUEST_EXPIRES_MS of its posting: the
    // answer of any request carried out comes before this deadline.
    let deadline = deadline.max(Instant::now() + ANSWER_WITHIN);
    loop {
        match mailbox.answer_of(ticket) {
            Answer::Reaped(n) => return Some(n),
            // Answered, but the count was overwritten by a later lap of the ring before we
            // looked (only after MAILBOX_SLOTS more requests): the request was carried out.
            Answer::Done => return Some(u32::from(kind == REQUEST_FD)),
            Answer::Pending => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn same_connection(a: &Record, b: &Record) -> bool {
    a.fd == b.fd
        && a.family == b.family
        && a.peer_ip == b.peer_ip
        && a.peer_port == b.peer_port
        && a.local_port == b.local_port
        && b.age_ms >= a.age_ms
}

fn no_answer(seg: &Segment) {
    eprintln!(
        "stallguard: pid {}: no answer within {} s (is the process stopped, or its library older \
         than this command?)",
        seg.pid,
        ANSWER_WITHIN.as_secs()
    );
}

/// Reaps the stuck connections of one segment; None if the watcher did not answer.
fn reap_stuck(seg: &Segment, min_wait_ms: u64) -> Option<(u32, String)> {
    let records = seg.snapshot().unwrap_or_default();
    let chosen: Vec<Record> = records
        .iter()
        .filter(|r| is_stuck(r, min_wait_ms))
        .copied()
        .collect();
    if chosen.is_empty() {
        return Some((0, format!("reaped 0: {}", why_none(&records, min_wait_ms))));
    }
    let mut reaped = 0;
    for r in &chosen {
        // The fd must still name the same connection (closed and reused since: skip it).
        let now = seg.snapshot().unwrap_or_default();
        if !now.iter().any(|n| same_connection(r, n) && is_stuck(n, 0)) {
            continue;
        }
        reaped += ask(seg, REQUEST_FD, r.fd)?;
    }
    let s = if reaped == 1 { "" } else { "s" };
    Some((reaped, format!("reaped {reaped} connection{s}")))
}

/// One segment's answer: how many were reaped, what to print, and whether the request
/// failed (`--fd` naming no tracked connection: exit status 1).
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub reaped: u32,
    pub what: String,
    pub failed: bool,
}

/// The outcome of `--fd FD` answered with `reaped` by process `pid`.
pub fn fd_outcome(pid: u32, fd: i32, reaped: u32) -> Outcome {
    let what = if reaped == 0 {
        format!("reaped 0: fd {fd} is not a tracked connection (see `stallguard top {pid}`)")
    } else {
        format!("reaped fd {fd}")
    };
    Outcome {
        reaped,
        what,
        failed: reaped == 0,
    }
}

/// Asks one segment's watcher; None if it did not answer.
fn reap_one(seg: &Segment, target: Target) -> Option<Outcome> {
    match target {
        Target::Fd(fd) => ask(seg, REQUEST_FD, fd).map(|n| fd_outcome(seg.pid, fd, n)),
        Target::Stuck { min_wait_ms } => {
            reap_stuck(seg, min_wait_ms).map(|(reaped, what)| Outcome {
                reaped,
                what,
                failed: false,
            })
        }
    }
}

/// Exit status: 0 when every process answered and (for `--fd`) the fd was reaped, else 1.
pub fn reap(pid: u32, target: Target, tree: bool) -> i32 {
    let mut notes = Notes::new();
    let segs = segments_for(pid, true, tree, &mut notes);
    for n in &notes {
        eprintln!("stallguard: {n}");
    }
    let segs = match segs {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stallguard: {e}");
            return 1;
        }
    };
    let mut status = 0;
    let mut total = 0u64;
    for seg in &segs {
        match reap_one(seg, target) {
            Some(o) => {
                total += u64::from(o.reaped);
                println!("pid {}: {}", seg.pid, o.what);
                if o.failed {
                    status = 1;
                }
            }
            None => {
                no_answer(seg);
                status = 1;
            }
        }
    }
    if segs.len() > 1 {
        println!("total reaped: {total}");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::tests::rec;

    #[test]
    fn an_untracked_fd_is_a_failure() {
        let o = fd_outcome(42, 99, 0);
        assert!(o.failed);
        assert_eq!(
            o.what,
            "reaped 0: fd 99 is not a tracked connection (see `stallguard top 42`)"
        );
        assert_eq!(
            fd_outcome(42, 7, 1),
            Outcome {
                reaped: 1,
                what: "reaped fd 7".into(),
                failed: false
            }
        );
    }

    #[test]
    fn one_definition_of_stuck() {
        assert!(is_stuck(&rec(4, TURN_CLIENT, 10_000), DEFAULT_MIN_WAIT_MS));
        assert!(is_stuck(&rec(4, TURN_WRITING, 10_000), DEFAULT_MIN_WAIT_MS));
        assert!(!is_stuck(&rec(4, TURN_CLIENT, 9_999), DEFAULT_MIN_WAIT_MS));
        assert!(!is_stuck(&rec(4, 0, 99_000), 0), "the server's turn");
        for f in [FLAG_EXEMPT, FLAG_REAPED, FLAG_WOULD_REAP, FLAG_ALIAS] {
            assert!(!is_stuck(&rec(4, TURN_CLIENT | f, 99_000), 0));
        }
        let recs = [
            rec(4, TURN_CLIENT, 4_200),
            rec(5, TURN_CLIENT, 100),
            rec(6, TURN_WRITING, 50),
            rec(7, 0, 0),
        ];
        assert_eq!(
            why_none(&recs, 10_000),
            "3 connections on the client's turn, none for ≥ 10s (longest 4.2s; lower it with --min-wait)"
        );
        assert_eq!(
            why_none(&[rec(7, 0, 0)], 10_000),
            "no connection on the client's turn (1 tracked)"
        );
    }
}
