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
    let chosen = segs.and_then(|segs| {
        let pids: Vec<u32> = segs.iter().map(|s| s.pid).collect();
        Ok((choose(&pids, pid, target)?, segs))
    });
    let (chosen, segs) = match chosen {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stallguard: {e}");
            return 1;
        }
    };
    let posted: Vec<(&Segment, u64)> = chosen
        .into_iter()
        .map(|i| (&segs[i], post(&segs[i], target)))
        .collect();
    let answers = wait_for_answers(&posted);
    print_answers(&posted, &answers, target)
}

/// Which of the segments (`pids`, those `segments_for(pid)` found) the request goes to:
/// `--stuck` all of them; `--fd` the process's own, or its only child's.
fn choose(pids: &[u32], pid: u32, target: Target) -> Result<Vec<usize>, String> {
    match target {
        Target::Stuck => Ok((0..pids.len()).collect()),
        Target::Fd(_) => match pids.iter().position(|p| *p == pid) {
            Some(own) => Ok(vec![own]),
            None if pids.len() == 1 => Ok(vec![0]),
            None => {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                Err(format!(
                    "process {pid} has no segment of its own but {} guarded children ({}); an \
                     fd belongs to one process: give that child's pid with --fd",
                    pids.len(),
                    pids.join(" ")
                ))
            }
        },
    }
}

/// Polls every posted request's answer until all came or [`ANSWER_WITHIN`] passed.
fn wait_for_answers(posted: &[(&Segment, u64)]) -> Vec<Option<u32>> {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut answers: Vec<Option<u32>> = vec![None; posted.len()];
    loop {
        for (i, (seg, seq)) in posted.iter().enumerate() {
            if answers[i].is_none() {
                answers[i] = answer(seg, *seq);
            }
        }
        if answers.iter().all(Option::is_some) || Instant::now() >= deadline {
            return answers;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One line per process (and a total when there are several); returns the exit status.
fn print_answers(posted: &[(&Segment, u64)], answers: &[Option<u32>], target: Target) -> i32 {
    let mut status = 0;
    let mut total = 0u64;
    for ((seg, _), a) in posted.iter().zip(answers) {
        match a {
            Some(n) => {
                total += u64::from(*n);
                println!("pid {}: {}", seg.pid, describe_answer(seg.pid, target, *n));
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

/// What the watcher of `pid` did: `reaped fd 17`, `reaped 2 connections`.
fn describe_answer(pid: u32, target: Target, reaped: u32) -> String {
    match target {
        Target::Fd(fd) if reaped == 0 => {
            format!("reaped 0: fd {fd} is not a tracked connection (see `stallguard top {pid}`)")
        }
        Target::Fd(fd) => format!("reaped fd {fd}"),
        Target::Stuck => format!(
            "reaped {reaped} connection{}",
            if reaped == 1 { "" } else { "s" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fd_goes_to_the_process_itself_or_its_only_child() {
        assert_eq!(choose(&[7, 9], 9, Target::Fd(3)), Ok(vec![1]));
        assert_eq!(choose(&[12], 9, Target::Fd(3)), Ok(vec![0]));
        let err = choose(&[12, 13], 9, Target::Fd(3)).unwrap_err();
        assert!(err.contains("2 guarded children (12 13)"), "{err}");
        assert_eq!(choose(&[12, 13], 9, Target::Stuck), Ok(vec![0, 1]));
    }

    #[test]
    fn answers_read_as_sentences() {
        assert_eq!(describe_answer(5, Target::Fd(17), 1), "reaped fd 17");
        assert_eq!(
            describe_answer(5, Target::Fd(17), 0),
            "reaped 0: fd 17 is not a tracked connection (see `stallguard top 5`)"
        );
        assert_eq!(describe_answer(5, Target::Stuck, 1), "reaped 1 connection");
        assert_eq!(describe_answer(5, Target::Stuck, 0), "reaped 0 connections");
    }
}
