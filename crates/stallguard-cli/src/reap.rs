//! `stallguard reap PID (--fd N | --stuck)`: asks the process's watcher, through the mailbox
//! in its segment, to shut connections down now (logged with `reason=manual`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use stallguard_shm::{REQUEST_FD, REQUEST_STUCK};

use crate::segment::{segments_for, Notes, Segment};

pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
pub enum Target {
    Fd(i32),
    Stuck,
}

/// Posts a request: kind and fd first, then the bumped `request_seq` publishes them.
/// Returns the sequence number the answer must reach.
pub fn post(seg: &Segment, target: Target) -> u64 {
    let h = seg.header();
    let (kind, fd) = match target {
        Target::Fd(fd) => (REQUEST_FD, fd),
        Target::Stuck => (REQUEST_STUCK, -1),
    };
    h.request_kind.store(kind, Ordering::Release);
    h.request_fd.store(fd, Ordering::Release);
    h.request_seq.fetch_add(1, Ordering::AcqRel) + 1
}

/// The watcher's answer to request `seq`: Some(reaped) once `answer_seq` reached it.
pub fn answer(seg: &Segment, seq: u64) -> Option<u32> {
    let h = seg.header();
    let answered = h.answer_seq.load(Ordering::Acquire);
    (answered >= seq).then(|| h.answer_reaped.load(Ordering::Acquire))
}

pub fn reap(pid: u32, target: Target) -> i32 {
    let mut notes = Notes::new();
    let segs = segments_for(pid, true, &mut notes);
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
    let chosen: Vec<&Segment> = match target {
        Target::Stuck => segs.iter().collect(),
        Target::Fd(_) => {
            if let Some(own) = segs.iter().find(|s| s.pid == pid) {
                vec![own]
            } else if segs.len() == 1 {
                vec![&segs[0]]
            } else {
                let pids: Vec<String> = segs.iter().map(|s| s.pid.to_string()).collect();
                eprintln!(
                    "stallguard: process {pid} has no segment of its own but {} guarded children \
                     ({}); an fd belongs to one process: give that child's pid with --fd",
                    segs.len(),
                    pids.join(" ")
                );
                return 1;
            }
        }
    };
    let posted: Vec<(&Segment, u64)> = chosen.iter().map(|s| (*s, post(s, target))).collect();
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut answers: Vec<Option<u32>> = vec![None; posted.len()];
    loop {
        for (i, (seg, seq)) in posted.iter().enumerate() {
            if answers[i].is_none() {
                answers[i] = answer(seg, *seq);
            }
        }
        if answers.iter().all(Option::is_some) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut status = 0;
    let mut total = 0u64;
    for ((seg, _), a) in posted.iter().zip(&answers) {
        match a {
            Some(n) => {
                total += u64::from(*n);
                let what = match target {
                    Target::Fd(fd) if *n == 0 => {
                        format!("reaped 0: fd {fd} is not a tracked connection (see `stallguard top {}`)", seg.pid)
                    }
                    Target::Fd(fd) => format!("reaped fd {fd}"),
                    Target::Stuck => {
                        format!("reaped {n} connection{}", if *n == 1 { "" } else { "s" })
                    }
                };
                println!("pid {}: {what}", seg.pid);
            }
            None => {
                eprintln!(
                    "stallguard: pid {}: no answer within {} s (is the process stopped, or its \
                     library older than this command?)",
                    seg.pid,
                    ANSWER_WITHIN.as_secs()
                );
                status = 1;
            }
        }
    }
    if posted.len() > 1 {
        println!("total reaped: {total}");
    }
    status
}
