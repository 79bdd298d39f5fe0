//! Pressure (issue 12): once a tick, after the fixed timers were judged, each port whose
//! clients wait for a worker — its listeners' accept queues (read once per listener per
//! tick), or connections accepted but not yet read — while connections on the client's turn
//! hold workers, is *under pressure*; there the connections on the client's turn proven slow
//! over the grace (`stallguard_policy::pressure`) are reaped, longest-stalled first, at most as
//! many as clients wait (plus a margin). The decisions are the policy crate's; this module
//! only gathers the facts (listener queues, TCP_INFO of the candidates, both through
//! `reach`: the watcher may have left the program's fd table) and acts.
//!
//! Its state is its own: the progress windows of the candidates on ports under pressure
//! (a map: nothing per fd for a quiet server, which costs one query per listener per tick)
//! and the per-port figures it publishes.
//!
//! Under the due-driven watcher (issue 13) a tick's observations hold only what is due, so
//! the pass first asks [`Pressure::wants_all`]: while a port with pressure on has clients
//! waiting (a listener's accept queue, a connection queued inside, or waiting clients last
//! tick) the watcher hands it every slot for that tick (its full pass); otherwise it only
//! publishes the listeners' queues ([`Pressure::quiet`]). A connection accepted on such a
//! port is queued for the moment it would count as queued inside (`Watch::schedule`).

use super::act::{self, Why};
use super::observe::{Memory, Observation};
use super::reach;
use crate::runtime::config;
use crate::runtime::log::log_line;
use crate::table::{self, listeners, stats};
use stallguard_policy::pressure::{
    below_rate, pick, queued_inside, stalled_for, sustained, turn_after_answer, within_turn,
    PortLoad, Rates, Window,
};
use stallguard_policy::{Action, Reason};
use std::collections::HashMap;

/// Per-fd progress window, valid for the slot state it was started in.
#[derive(Clone, Copy, Default)]
struct Tracked {
    state: u32,
    window: Window,
}

#[derive(Default)]
pub struct Pressure {
    windows: HashMap<i32, Tracked>,
    loads: Vec<PortLoad>,
    /// (stalled_for, index in `seen`) of this tick's candidates on one port.
    candidates: Vec<(u64, usize)>,
    /// Ports under pressure last tick (to log when it starts and ends).
    was_under: Vec<u16>,
    /// Per port: since when clients have been waiting without a break.
    waiting_since: Vec<(u16, u64)>,
    /// The listeners were read this tick (`loads` holds their queues).
    read: bool,
}

impl Pressure {
    /// Whether this tick's pass needs every connection (`due`: the tick's due observations).
    /// Reads the listeners' accept queues (kept for [`Pressure::tick`] or [`Pressure::quiet`])
    /// when they can matter: some connection may be on the client's turn, or `display` (this
    /// tick publishes the live view or a report, which show the queues).
    pub fn wants_all(&mut self, now: u64, due: &[Observation], display: bool) -> bool {
        self.loads.clear();
        self.read = false;
        if !any_port_with_pressure() {
            self.waiting_since.clear();
            self.was_under.clear();
            return false;
        }
        if !needs_queues(table::engaged(), !self.was_under.is_empty(), display) {
            // No connection was ever waited on: none holds a worker on the client's turn, so
            // no port can be under pressure whatever its queue (one listener query per tick
            // and, with connections accepted but not read, a full pass saved).
            self.waiting_since.clear();
            return false;
        }
        self.read = true;
        self.read_listeners();
        if !table::engaged() && self.was_under.is_empty() {
            return false; // read for the display only
        }
        self.loads
            .iter()
            .any(|l| l.accept_queue > 0 && pressure_on(l.port))
            || self
                .waiting_since
                .iter()
                .any(|&(port, _)| pressure_on(port))
            || !self.was_under.is_empty()
            || due.iter().any(|o| {
                applies(o) && queued_inside(o.facts.first_wait_at, o.facts.accepted_at, now)
            })
    }

    /// Whether the pass must run every tick: a port has pressure on and some connection
    /// may hold a worker on the client's turn (or a port is still under pressure), so
    /// clients queueing in an accept queue, which only reading it shows, are seen within a
    /// tick. Otherwise the watcher may sleep longer (`sleep`): no port can come under
    /// pressure, and a connection queued inside is queued for the moment it counts.
    pub fn needs_ticks(&self) -> bool {
        any_port_with_pressure() && (table::engaged() || !self.was_under.is_empty())
    }

    /// A tick without the full pass: no port with pressure on has clients waiting, or no
    /// connection can hold a worker. The figures published last stay if no listener was
    /// read this tick.
    pub fn quiet(&mut self) {
        self.waiting_since.clear();
        if self.read {
            self.publish();
        }
    }

    /// The tick's pressure pass over `seen` (every tracked connection, in fd order, after
    /// the due ones were judged by the fixed timers), after [`Pressure::wants_all`].
    pub fn tick(&mut self, now: u64, seen: &mut [Observation], memory: &mut [Memory]) {
        // Windows of connections gone (or whose fd now names another) are dropped.
        self.windows.retain(|&fd, w| {
            seen.binary_search_by_key(&fd, |o| o.fd)
                .is_ok_and(|i| seen[i].state == w.state)
        });
        if !seen.iter().any(applies) {
            self.log_changes(); // nothing holds a worker: no port is under pressure
            self.publish();
            return;
        }
        for o in seen.iter().filter(|o| applies(o)) {
            let load = load_of(&mut self.loads, o.identity.local_port);
            if queued_inside(o.facts.first_wait_at, o.facts.accepted_at, now) {
                load.queued_inside += 1;
            } else if on_clients_turn(o) {
                load.holders += 1;
            }
        }
        self.require_sustained(now);
        let grace = config::policy().pressure_grace_ms;
        for i in 0..self.loads.len() {
            let load = self.loads[i];
            if load.under_pressure() {
                self.relieve(load, now, grace, seen, memory);
            }
        }
        self.log_changes();
        self.publish();
    }

    /// Clears the waiting clients of ports where they have not waited long enough yet (they
    /// are no pressure), remembering since when each port has had some.
    fn require_sustained(&mut self, now: u64) {
        let loads = &mut self.loads;
        self.waiting_since
            .retain(|(port, _)| loads.iter().any(|l| l.port == *port && l.waiting() > 0));
        for l in loads.iter_mut().filter(|l| l.waiting() > 0) {
            let since = match self.waiting_since.iter().find(|(p, _)| *p == l.port) {
                Some(&(_, since)) => since,
                None => {
                    self.waiting_since.push((l.port, now));
                    now
                }
            };
            if !sustained(since, now) {
                l.holders = 0; // not (yet) under pressure
            }
        }
    }

    /// Adds each listener's accept queue to its port's load; forgets fds that no longer
    /// are listeners.
    fn read_listeners(&mut self) {
        let loads = &mut self.loads;
        listeners::each(|fd| match reach::listener_queue(fd) {
            Some((queue, port)) => load_of(loads, port).accept_queue += queue,
            None => listeners::forget(fd),
        });
    }

    /// Reaps, on a port under pressure, the slow connections on the client's turn.
    fn relieve(
        &mut self,
        load: PortLoad,
        now: u64,
        grace: u64,
        seen: &mut [Observation],
        memory: &mut [Memory],
    ) {
        self.candidates.clear();
        for (i, o) in seen.iter().enumerate() {
            if !applies(o) || o.identity.local_port != load.port || !on_clients_turn(o) {
                continue;
            }
            let Some(mut k) = reach::tcp_progress(o.fd, o.identity.cookie) else {
                continue;
            };
            if o.facts.accepted_at != 0 {
                k.age_ms = k.age_ms.max(now.saturating_sub(o.facts.accepted_at));
            }
            let f = &o.facts;
            let turn = turn_after_answer(f.last_out, f.write_pending_since, now);
            let k = within_turn(k, turn);
            let w = self.windows.entry(o.fd).or_default();
            if w.state != o.state {
                *w = Tracked {
                    state: o.state,
                    window: Window::default(),
                };
            }
            if let Some(t) = turn {
                w.window.forget_before(now.saturating_sub(t));
            }
            w.window.observe(now, k.total_in, k.total_acked, grace);
            let span = w.window.span(now, k.total_in, k.total_acked);
            let Some(t) = o.timers else { continue };
            let rates = Rates {
                request: t.request.map_or(0, |r| r.min_rate),
                response: t.write_min_rate,
            };
            if below_rate(&k, span, rates, grace) {
                self.candidates.push((stalled_for(&k), i));
            }
        }
        pick(&mut self.candidates, load.budget());
        for &(stalled, i) in &self.candidates {
            let o = &mut seen[i];
            let Some(slot) = table::slot(o.fd) else {
                continue;
            };
            let why = Why {
                reason: Reason::Pressure,
                waited_ms: stalled,
                note: Some(("queue", load.waiting())),
            };
            act::reap_why(o.fd, slot, o.state, why, &o.facts, o.kernel_view);
            if config::policy().action != Action::Log {
                stats::count_pressure_reap(load.port); // monitor mode only logged it
            }
            o.done = true;
            if let Some(m) = memory.get_mut(o.fd as usize) {
                m.set_done();
            }
        }
    }

    /// One line when a port comes under pressure and one when it is relieved.
    fn log_changes(&mut self) {
        for l in self.loads.iter().filter(|l| l.under_pressure()) {
            if !self.was_under.contains(&l.port) {
                log_line!(
                    Info,
                    "event=pressure port={} state=on accept_queue={} queued_inside={} holders={}",
                    l.port,
                    l.accept_queue,
                    l.queued_inside,
                    l.holders
                );
            }
        }
        let loads = &self.loads;
        self.was_under.retain(|port| {
            let still = loads.iter().any(|l| l.port == *port && l.under_pressure());
            if !still {
                log_line!(Info, "event=pressure port={port} state=off");
            }
            still
        });
        for l in self.loads.iter().filter(|l| l.under_pressure()) {
            if !self.was_under.contains(&l.port) {
                self.was_under.push(l.port);
            }
        }
    }

    fn publish(&self) {
        stats::publish_ports(&self.loads);
    }
}

/// Whether the listeners' queues must be read this tick: pressure needs both clients waiting
/// and connections on the client's turn, so the queues matter only while some connection
/// may be on the client's turn (`engaged`), a port is still under pressure (its end must be
/// seen), or the tick shows them (`display`).
fn needs_queues(engaged: bool, under: bool, display: bool) -> bool {
    engaged || under || display
}

/// Some port (or the default) has pressure on.
fn any_port_with_pressure() -> bool {
    let policy = config::policy();
    policy.timers.pressure
        || policy
            .ports
            .iter()
            .any(|(_, t)| t.is_some_and(|t| t.pressure))
}

fn pressure_on(port: u16) -> bool {
    config::policy()
        .timers_for_port(port)
        .is_some_and(|t| t.pressure)
}

/// A connection pressure may judge: tracked by the hooks, inbound, not exempt, not done, on a
/// port with pressure on.
fn applies(o: &Observation) -> bool {
    !o.done
        && !o.exempt
        && !o.outbound
        && !o.kernel_view
        && !o.alias
        && o.timers.is_some_and(|t| t.pressure)
}

/// The client has the turn (the server waits on it, or its HTTP request is incomplete), or
/// the server's write does not complete. A complete request the server is answering (a long
/// poll on an event loop that keeps the fd in its read set) is the server's turn.
fn on_clients_turn(o: &Observation) -> bool {
    stallguard_policy::client_turn_since(&o.facts).is_some() || o.facts.write_pending_since != 0
}

fn load_of(loads: &mut Vec<PortLoad>, port: u16) -> &mut PortLoad {
    match loads.iter().position(|l| l.port == port) {
        Some(i) => &mut loads[i],
        None => {
            loads.push(PortLoad {
                port,
                ..PortLoad::default()
            });
            let last = loads.len() - 1;
            &mut loads[last]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::needs_queues;

    #[test]
    fn queues_are_read_only_when_they_can_matter() {
        assert!(
            !needs_queues(false, false, false),
            "nothing on the client's turn, no display"
        );
        assert!(
            needs_queues(true, false, false),
            "a connection may hold a worker"
        );
        assert!(
            needs_queues(false, true, false),
            "a port under pressure: its end is seen"
        );
        assert!(
            needs_queues(false, false, true),
            "the live view or a report shows them"
        );
    }
}
