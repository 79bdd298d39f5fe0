//! Asks the verdict about every observed connection and hands the stalled ones to `act`;
//! carries out the operator's requests (`stallguard reap`).

use super::act;
use super::observe::{Memory, Observation};
use super::publish;
use super::reach;
use stallguard_policy::{is_stuck, judge, spared_by_unread, turn_ms, Reason, Unread, Verdict};

pub fn judge_and_act(now: u64, seen: &mut [Observation], memory: &mut [Memory]) {
    for o in seen.iter_mut().filter(|o| !o.done && !o.exempt) {
        let Some(timers) = o.timers else { continue };
        if let Verdict::Stalled { reason, waited_ms } = judge(&o.facts, &timers, now) {
            // Unread bytes or an unread FIN in the kernel: the server has the turn, whatever
            // its calls say.
            if reason.is_client_turn() && spared_by_unread(reason, unread_of_ours(o)) {
                continue;
            }
            reap(o, reason, waited_ms, memory);
        }
    }
}

/// What waits unread in the kernel for the connection `o` names, if its fd still names it: a
/// file that took a closed connection's number has "unread" bytes too (FIONREAD counts what
/// is left of it), and such a slot must go on to the reap's cookie check.
fn unread_of_ours(o: &Observation) -> Unread {
    if o.identity.cookie == 0 {
        return Unread::default();
    }
    // Through a copy checked by cookie (see `reach`).
    reach::unread(o.fd, o.identity.cookie).unwrap_or_default()
}

fn reap(o: &mut Observation, reason: Reason, waited_ms: u64, memory: &mut [Memory]) {
    if let Some(slot) = crate::table::slot(o.fd) {
        act::reap(
            o.fd,
            slot,
            o.state,
            reason,
            waited_ms,
            &o.facts,
            o.kernel_view,
        );
        o.done = true;
        if let Some(m) = memory.get_mut(o.fd as usize) {
            m.set_done();
        }
    }
}

/// `stallguard reap PID --fd N | --stuck`: carried out here, by the process's own watcher,
/// every queued request each tick (at most a ringful, so a flood cannot hold the tick).
pub fn answer_operator(now: u64, seen: &mut [Observation], memory: &mut [Memory]) {
    for _ in 0..stallguard_shm::MAILBOX_SLOTS {
        let Some(request) = publish::take_request(now) else {
            return;
        };
        let mut reaped = 0;
        for o in seen.iter_mut().filter(|o| !o.done) {
            if wanted(request.fd, o, now) {
                reap(
                    o,
                    Reason::Manual,
                    turn_ms(&o.facts, now).unwrap_or(0),
                    memory,
                );
                reaped += 1;
            }
        }
        publish::answer(request.ticket, reaped);
    }
}

/// Whether a request (`fd`: that connection; None: every stuck one) asks for `o`. "Stuck" is
/// the command's definition (`stallguard reap --stuck`): on the client's turn for the stuck
/// threshold, and neither exempted by the program (`stallguard_exempt`: never cut but by
/// name) nor an alias (a dup of a connection judged through its first fd: cut once).
fn wanted(fd: Option<i32>, o: &Observation, now: u64) -> bool {
    match fd {
        Some(fd) => o.fd == fd,
        None => !o.exempt && !o.alias && is_stuck(&o.facts, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuck_for_a_minute() -> Observation {
        let facts = stallguard_policy::Facts {
            waiting_since: 1_000,
            first_wait_at: 1_000,
            ..Default::default()
        };
        Observation::for_test(7, facts)
    }

    #[test]
    fn a_stuck_request_spares_exempt_connections_and_aliases_an_fd_request_does_not() {
        let now = 61_000;
        let o = stuck_for_a_minute();
        assert!(wanted(None, &o, now));
        assert!(!wanted(None, &o, 1_500), "not stuck yet");
        let exempt = Observation {
            exempt: true,
            ..stuck_for_a_minute()
        };
        assert!(!wanted(None, &exempt, now));
        assert!(wanted(Some(7), &exempt, now), "named by the operator");
        let alias = Observation {
            alias: true,
            ..stuck_for_a_minute()
        };
        assert!(!wanted(None, &alias, now));
        assert!(!wanted(Some(8), &o, now));
    }
}
