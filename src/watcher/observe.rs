//! What the watcher sees: for a tracked slot, its facts (from the hooks, or from the
//! kernel's counters for adopted stdio connections), completed with the watcher's own memory
//! of kernel progress, and the timers that apply to it; and which slots to look at each tick
//! ([`Watch`]: what is due, not every slot).

use super::reach;
use crate::runtime::config;
use crate::table::{self, phase, Flags, Identity, TRACKED};
use stallguard_policy::pressure::{Window, QUEUED_AFTER_MS};
use stallguard_policy::{deadline, Facts, KernelTrack, Timers};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering::Acquire;

/// One tracked connection as of this tick.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub fd: i32,
    /// The slot state observed (generation and phase): acting requires it unchanged.
    pub state: u32,
    pub identity: Identity,
    pub facts: Facts,
    /// `None`: its port is `off` (never happens for tracked slots, kept for safety).
    pub timers: Option<Timers>,
    pub kernel_view: bool,
    pub outbound: bool,
    /// Already reaped (by us) or reported: not judged again.
    pub done: bool,
    /// Really shut down by us (monitor mode only logs: `done` without `reaped`).
    pub reaped: bool,
    /// The program exempted it (stallguard_exempt): never judged.
    pub exempt: bool,
    /// A duplicate fd of a connection (counted once).
    pub alias: bool,
}

#[cfg(test)]
impl Observation {
    /// A plain tracked connection on `fd` with `facts` (no policy, nothing flagged), for the
    /// watcher's unit tests.
    pub fn for_test(fd: i32, facts: stallguard_policy::Facts) -> Observation {
        Observation {
            fd,
            state: 1,
            identity: crate::table::Identity::default(),
            facts,
            timers: None,
            kernel_view: false,
            outbound: false,
            done: false,
            reaped: false,
            exempt: false,
            alias: false,
        }
    }
}

/// What the watcher remembers about a slot between looks (its own memory, never shared):
/// 8 bytes per fd up to the high-water mark. The rare kernel-counter history lives in
/// [`Extra`], only for the connections that need it.
#[derive(Clone, Copy, Default)]
pub struct Memory {
    /// The slot state this memory belongs to (a new generation resets it), with [`DONE`]:
    /// an observed state's phase is always TRACKED (0b01), so bit 1 is free.
    state: u32,
    /// The low 32 bits of when it is next due (queued; 0: not queued). Queued times are at
    /// most [`QUEUE_AHEAD_MS`] ahead, so two of them compare exactly by their low bits.
    due: u32,
}

/// `Memory::state`'s bit for "already reaped or reported: never judged again".
const DONE: u32 = 0b10;

/// A deadline further than this is queued at this distance instead (looked at then, and
/// queued again): 2^30 ms, 12.4 days, well within what 32-bit times compare exactly.
const QUEUE_AHEAD_MS: u64 = 1 << 30;

impl Memory {
    fn of(state: u32) -> Memory {
        Memory { state, due: 0 }
    }

    fn state(&self) -> u32 {
        self.state & !DONE
    }

    /// Already reaped or reported: never judged again.
    pub fn done(&self) -> bool {
        self.state & DONE != 0
    }

    pub fn set_done(&mut self) {
        self.state |= DONE;
    }

    /// Whether it is queued for `due` (an entry of the deadline queue).
    fn queued_for(&self, due: u64) -> bool {
        self.due != 0 && self.due == low(due)
    }

    /// Whether `t` (at most [`QUEUE_AHEAD_MS`] from now) comes before the time it is queued
    /// for; true when it is not queued.
    fn sooner(&self, t: u64) -> bool {
        self.due == 0 || (low(t).wrapping_sub(self.due) as i32) < 0
    }

    fn queue_for(&mut self, t: u64) {
        self.due = low(t);
    }
}

/// The low 32 bits of a queued time, never 0 (0: not queued; one ms off once in 49.7 days
/// only decides which of two entries is kept, never when the look happens).
fn low(t: u64) -> u32 {
    (t as u32).max(1)
}

/// A deadline queued: due (ms) << 20 | fd (fds are below `table::MAX_FDS` = 2^20), one word:
/// ordered by due time. Which generation it was queued for is the fd's [`Memory`]'s.
type QueueEntry = Reverse<u64>;
const FD_BITS: u32 = 20;
const _: () = assert!(table::MAX_FDS <= 1 << FD_BITS);

fn entry(due: u64, fd: i32) -> QueueEntry {
    Reverse(due << FD_BITS | fd as u64)
}

fn unpack(e: &QueueEntry) -> (u64, i32) {
    (e.0 >> FD_BITS, (e.0 & ((1 << FD_BITS) - 1)) as i32)
}

/// The guard's memory per tracked connection, for the start line (`make bench` accounts
/// with it): the slot (one per fd number, in the fd table), the watcher's [`Memory`] (one per
/// fd up to the highest tracked), a deadline-queue entry (one per connection with a deadline
/// running), an HTTP request line (one per fd of an HTTP connection, `table::lines`).
pub fn layout() -> String {
    format!(
        "bytes=\"slot:{} watcher:{} queue:{} http_line:{}\"",
        std::mem::size_of::<table::Slot>(),
        std::mem::size_of::<Memory>(),
        std::mem::size_of::<QueueEntry>(),
        table::lines::CELL_BYTES
    )
}

/// Kernel-counter memory, kept only for connections with a write pending or judged by the
/// kernel's counters (adopted stdio connections).
#[derive(Default)]
pub struct Extra {
    /// Kernel counter of bytes the peer acknowledged, last seen.
    acked: Option<u64>,
    /// When that counter last moved: progress inside a blocking write the hooks cannot see.
    acked_moved_at: u64,
    /// Kernel-counter history, for adopted connections whose I/O no hook sees.
    kernel: Option<KernelTrack>,
    /// Sliding window over the response in progress (the response minimum rate).
    out: Window,
}

/// The watcher's view of the table between ticks: per-fd memory, the queue of deadlines,
/// and the cursor of the bounded sweep. A tick touches only what is due (a deadline, a new
/// connection, the sweep's share), not every slot.
#[derive(Default)]
pub struct Watch {
    pub memory: Vec<Memory>,
    extra: HashMap<i32, Extra>,
    /// An entry whose fd was rescheduled since is skipped when it comes out; one whose fd was
    /// reused at worst makes the new connection be looked at once more.
    queue: BinaryHeap<QueueEntry>,
    cursor: usize,
    candidates: Vec<i32>,
    /// (tracked, waiting) counted by the sweep over its current cycle, and over the last
    /// complete one: the counters when no full pass runs.
    sweep_count: (u64, u64),
    pub swept: Option<(u64, u64)>,
    /// When the sweep last advanced (its share is the time since, see [`sweep_share`]).
    swept_at: u64,
}

/// How many slots of `high` the sweep re-reads after `elapsed` ms, to go round them all once
/// per `cycle_ms`: at least one, at most all (the first call, with nothing swept before,
/// reads them all). Counted from the time slept, not per wake-up, so a watcher that sleeps
/// long reads more per wake-up and one woken often reads fewer: a slot is re-read at most
/// `cycle_ms` plus the longest sleep after it was last read.
pub fn sweep_share(high: usize, elapsed: u64, cycle_ms: u64) -> usize {
    (high as u64)
        .saturating_mul(elapsed)
        .div_ceil(cycle_ms.max(1))
        .clamp(1, high.max(1) as u64) as usize
}

impl Watch {
    fn fit(&mut self) -> usize {
        let high = table::high_water();
        if self.memory.len() < high {
            // Grown by an eighth at a time, not doubled: 8 bytes per fd, not up to 16.
            let more = (high - self.memory.len()).max(self.memory.len() / 8);
            self.memory.reserve_exact(more);
            self.memory.resize(high, Memory::default());
        }
        high
    }

    /// One slot as of now: None if it tracks nothing (or is being acted on).
    fn look(&mut self, fd: i32, now: u64) -> Option<Observation> {
        let slot = table::slot(fd)?;
        let state = slot.state.load(Acquire);
        let mem = self.memory.get_mut(fd as usize)?;
        if phase(state) != TRACKED {
            return None;
        }
        if mem.state() != state {
            *mem = Memory::of(state);
            self.extra.remove(&fd);
        }
        let needs_extra = slot.has_flag(Flags::KERNEL_VIEW)
            || slot.write_pending()
            || self.extra.contains_key(&fd);
        if !needs_extra {
            return observe(fd, slot, state, mem, &mut Extra::default(), now);
        }
        let extra = self.extra.entry(fd).or_default();
        let o = observe(fd, slot, state, mem, extra, now);
        if o.is_some_and(|o| !o.kernel_view && o.facts.write_pending_since == 0) {
            self.extra.remove(&fd); // the write completed: its history is not needed
        }
        o
    }

    /// Every tracked connection (the full pass: the live view's records, reports, the
    /// operator's requests, the tracked/waiting counters).
    pub fn observe_all(&mut self, now: u64, out: &mut Vec<Observation>) {
        out.clear();
        let high = self.fit();
        for fd in 0..high {
            if let Some(o) = self.look(fd as i32, now) {
                out.push(o);
            }
        }
    }

    /// The connections due this tick: new or flagged ones (`table::take_attention`), those
    /// whose deadline came, and the bounded sweep's share: the slots the time since the last
    /// call is worth at one cycle per `cycle_ms` ([`sweep_share`]), so a client's turn that
    /// started unseen is found before its timer can run out, however long the watcher slept.
    pub fn observe_due(&mut self, now: u64, cycle_ms: u64, out: &mut Vec<Observation>) {
        out.clear();
        let high = self.fit();
        let mut cand = std::mem::take(&mut self.candidates);
        cand.clear();
        table::take_attention(high, |fd| cand.push(fd));
        while let Some(e) = self.queue.peek() {
            let (due, fd) = unpack(e);
            if due > now {
                break;
            }
            self.queue.pop();
            if let Some(m) = self.memory.get_mut(fd as usize) {
                if m.queued_for(due) {
                    m.due = 0;
                    cand.push(fd);
                }
            }
        }
        let (mut start, mut share, mut wrapped) = (0, 0, false);
        let elapsed = now.saturating_sub(std::mem::replace(&mut self.swept_at, now));
        if high > 0 {
            share = sweep_share(high, elapsed, cycle_ms);
            start = (self.cursor + 1) % high;
            for _ in 0..share {
                self.cursor = if self.cursor + 1 >= high {
                    wrapped = true;
                    0
                } else {
                    self.cursor + 1
                };
                cand.push(self.cursor as i32);
            }
        }
        cand.sort_unstable();
        cand.dedup();
        for &fd in &cand {
            if let Some(o) = self.look(fd, now) {
                let swept = (fd as usize + high - start) % high.max(1) < share;
                if swept && !o.alias {
                    self.sweep_count.0 += 1;
                    self.sweep_count.1 += u64::from(o.facts.waiting_since != 0);
                }
                out.push(o);
            }
        }
        if wrapped {
            self.swept = Some(std::mem::take(&mut self.sweep_count));
        }
        self.candidates = cand;
    }

    /// Queues each observed connection for its next deadline (the pure `deadline()` the
    /// verdict agrees with), or for the next tick while it needs the kernel's counters.
    pub fn schedule(&mut self, seen: &[Observation], now: u64, tick_ms: u64) {
        for o in seen {
            let Some(mem) = self.memory.get_mut(o.fd as usize) else {
                continue;
            };
            if mem.state() != o.state || mem.done() || o.done || o.exempt {
                continue;
            }
            let Some(timers) = o.timers else { continue };
            let mut next = deadline(&o.facts, &timers);
            let polled = o.kernel_view
                || o.facts.write_pending_since != 0
                || (o.outbound && o.facts.connecting_since != 0);
            if polled {
                let soon = now + tick_ms;
                next = Some(next.map_or(soon, |t| t.min(soon)));
            }
            // Issue 12: on a port with pressure on, a connection the server has not read yet
            // is looked at when it would count as queued inside (the pressure pass then
            // walks every slot while clients wait).
            if timers.pressure
                && !o.outbound
                && o.facts.first_wait_at == 0
                && o.facts.accepted_at != 0
            {
                let queued = o.facts.accepted_at + QUEUED_AFTER_MS;
                if queued > now {
                    next = Some(next.map_or(queued, |t| t.min(queued)));
                }
            }
            // A far deadline is looked at sooner, then queued again (see QUEUE_AHEAD_MS).
            match next.map(|t| t.min(now + QUEUE_AHEAD_MS)) {
                Some(t) if mem.sooner(t) => {
                    mem.queue_for(t);
                    self.queue.push(entry(t, o.fd));
                }
                _ => {}
            }
        }
    }

    /// When the earliest queued deadline falls (None: nothing queued).
    pub fn next_due(&self) -> Option<u64> {
        self.queue.peek().map(|e| unpack(e).0)
    }

    /// Drops queue entries that lead nowhere any more, once they outnumber the live ones.
    pub fn compact(&mut self) {
        // At most one entry per fd leads anywhere: more than twice that are mostly stale.
        if self.queue.len() > 2 * self.memory.len() + 1024 {
            let memory = &self.memory;
            self.queue.retain(|e| {
                let (due, fd) = unpack(e);
                memory.get(fd as usize).is_some_and(|m| m.queued_for(due))
            });
        }
    }
}

fn observe(
    fd: i32,
    slot: &table::Slot,
    state: u32,
    mem: &mut Memory,
    extra: &mut Extra,
    now: u64,
) -> Option<Observation> {
    let policy = config::policy();
    if slot.has_flag(Flags::BACKSTOPS_DUE) {
        super::act::arm_backstops(fd, slot, state);
    }
    // Only for the kernel queries (rare: they take a copy of the socket, see `reach`).
    let cookie = || slot.identity().cookie;
    let mut facts = slot.facts(fd);
    let kernel_view = slot.has_flag(Flags::KERNEL_VIEW) && facts.first_wait_at == 0;
    if kernel_view {
        // No hook has seen this program read: judge by the kernel's counters.
        let sample = reach::kernel_sample(fd, cookie())?;
        let accepted_at = facts.accepted_at;
        facts = extra
            .kernel
            .get_or_insert_with(|| KernelTrack::new(sample, now))
            .observe(sample, now);
        facts.accepted_at = accepted_at;
    } else if facts.write_pending_since != 0 {
        if let Some(acked) = reach::tcp_bytes_acked(fd, cookie()) {
            if extra.acked.is_some_and(|seen| seen != acked) {
                extra.acked_moved_at = now;
            }
            extra.acked = Some(acked);
            response_window(&mut facts, extra, acked, slot, now);
        }
        facts.last_out = facts.last_out.max(extra.acked_moved_at);
    }
    let outbound = slot.has_flag(Flags::OUTBOUND);
    if outbound && facts.connecting_since != 0 && reach::is_established(fd, cookie()) {
        // A non-blocking connect completed (the program learns it from poll + SO_ERROR,
        // which no hook records).
        slot.connected();
        facts.connecting_since = 0;
    }
    let identity = slot.identity();
    let timers = if outbound {
        policy.outbound.map(|o| o.timers())
    } else {
        policy.timers_for_port(identity.local_port).copied()
    };
    Some(Observation {
        fd,
        state,
        identity,
        facts,
        timers,
        kernel_view,
        outbound,
        done: mem.done() || slot.has_flag(Flags::REAPED),
        reaped: slot.has_flag(Flags::REAPED),
        exempt: slot.has_flag(Flags::EXEMPT),
        alias: slot.has_flag(Flags::ALIAS),
    })
}

/// The response minimum rate: the window over acknowledged bytes while a write is pending,
/// one write-stall timer long at least (`STALLGUARD_WRITE_STALL=T,minrate=R`).
/// The window lives in [`Extra`], kept only while a write is pending (and dropped when it
/// completes: no response in progress); such a connection is judged every tick (`schedule`
/// polls it), since `deadline()` does not include the minimum rate.
fn response_window(facts: &mut Facts, extra: &mut Extra, acked: u64, slot: &table::Slot, now: u64) {
    let t = config::policy()
        .timers_for_port(slot.identity().local_port)
        .map_or(0, |t| t.write_stall_ms);
    if t == 0 {
        return;
    }
    extra.out.observe(now, 0, acked, t);
    if let Some(span) = extra.out.span(now, 0, acked) {
        facts.out_window_ms = span.ms;
        facts.out_window_bytes = span.acked;
    }
}

/// How many distinct connections `seen` holds (dup'ed fds of one connection count once).
/// Sorting happens only when there are aliases, which most servers never have.
pub fn distinct_connections(seen: &[Observation], scratch: &mut Vec<u64>) -> (u64, u64) {
    // The client's turn as the verdict sees it (a complete HTTP request is the server's turn).
    let waiting = |o: &Observation| stallguard_policy::client_turn_since(&o.facts).is_some();
    if !seen.iter().any(|o| o.alias) {
        return (
            seen.len() as u64,
            seen.iter().filter(|o| waiting(o)).count() as u64,
        );
    }
    let mut distinct = |keep: &dyn Fn(&Observation) -> bool| {
        scratch.clear();
        scratch.extend(seen.iter().filter(|o| keep(o)).map(|o| o.identity.cookie));
        scratch.sort_unstable();
        scratch.dedup();
        scratch.len() as u64
    };
    (distinct(&|_| true), distinct(&waiting))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_goes_round_once_a_cycle_whatever_the_wake_ups() {
        let (high, cycle) = (10_000, 19_000);
        // Ticks of 100 ms, or dozes of a second: one cycle's worth of time reads every slot.
        for step in [100, 1000, 7] {
            let mut read = 0;
            let mut t = 0;
            while t < cycle {
                read += sweep_share(high, step, cycle);
                t += step;
            }
            assert!(read >= high, "{step} ms steps read {read} of {high}");
            assert!(
                read <= high + high / 10 + cycle as usize / step as usize,
                "not much more"
            );
        }
        assert_eq!(sweep_share(high, 0, cycle), 1, "at least one");
        assert_eq!(sweep_share(high, u64::MAX, cycle), high, "at most all");
        assert_eq!(
            sweep_share(0, 100, cycle),
            1,
            "no slot: the caller reads none"
        );
    }

    #[test]
    fn watcher_memory_is_8_bytes_and_a_queue_entry_one_word() {
        assert_eq!(std::mem::size_of::<Memory>(), 8);
        assert_eq!(std::mem::size_of::<QueueEntry>(), 8);
    }

    #[test]
    fn queue_entries_keep_due_order_and_fd() {
        let fd = (table::MAX_FDS - 1) as i32;
        assert_eq!(unpack(&entry(1 << 43, fd)), (1 << 43, fd));
        assert!(
            entry(10, fd) > entry(11, 0),
            "Reverse: the earlier due comes out first"
        );
    }

    #[test]
    fn done_and_due_survive_their_packing() {
        let mut m = Memory::of(0b101);
        assert!(!m.done());
        m.set_done();
        assert!(m.done());
        assert_eq!(m.state(), 0b101, "the state compares without the done bit");
        for now in [1u64 << 20, (1 << 32) - 7, (5 << 32) + 3] {
            let mut m = Memory::of(1);
            assert!(m.sooner(now + 10), "not queued");
            m.queue_for(now + 1000);
            assert!(m.queued_for(now + 1000));
            assert!(!m.queued_for(now + 999));
            assert!(m.sooner(now + 999));
            assert!(!m.sooner(now + 1001));
            assert!(m.sooner(now + 5), "across a wrap of the low bits too");
            // The farthest a time is ever queued (QUEUE_AHEAD_MS) still compares exactly.
            m.queue_for(now + QUEUE_AHEAD_MS);
            assert!(m.sooner(now + QUEUE_AHEAD_MS - 1));
            assert!(!m.sooner(now + QUEUE_AHEAD_MS + 1));
        }
        // A time whose low bits are 0 is queued as 1: still queued, still found.
        let mut m = Memory::of(1);
        m.queue_for(7 << 32);
        assert!(m.queued_for(7 << 32));
    }
}
