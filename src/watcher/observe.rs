//! What the watcher sees each tick: for every tracked slot, its facts (from the hooks, or
//! from the kernel's counters for adopted stdio connections), completed with the watcher's
//! own memory of kernel progress, and the timers that apply to it.

use crate::abi::socket;
use crate::runtime::config;
use crate::table::{self, phase, Flags, Identity, TRACKED};
use stallguard_policy::{Facts, KernelTrack, Timers};
use std::sync::atomic::Ordering::{Acquire, Relaxed};

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

/// What the watcher remembers about a slot between ticks (its own memory, never shared).
#[derive(Clone, Copy, Default)]
pub struct Memory {
    /// The slot state this memory belongs to; a new generation resets it.
    state: u32,
    /// Already reaped or reported: never judged again.
    pub done: bool,
    /// Kernel counter of bytes the peer acknowledged, last seen.
    acked: Option<u64>,
    /// When that counter last moved: progress inside a blocking write the hooks cannot see.
    acked_moved_at: u64,
    /// Kernel-counter history, for adopted connections whose I/O no hook sees.
    kernel: Option<KernelTrack>,
}

/// Fills `out` with every tracked connection (reusing its allocation; `memory` grows with
/// the highest fd ever tracked, never with the traffic).
pub fn observe_all(now: u64, memory: &mut Vec<Memory>, out: &mut Vec<Observation>) {
    out.clear();
    let high = table::high_water();
    if memory.len() < high {
        memory.resize(high, Memory::default());
    }
    for (fd, mem) in memory.iter_mut().enumerate().take(high) {
        let Some(slot) = table::slot(fd as i32) else {
            break;
        };
        let state = slot.state.load(Acquire);
        if phase(state) != TRACKED {
            continue;
        }
        if mem.state != state {
            *mem = Memory {
                state,
                ..Memory::default()
            };
        }
        if let Some(o) = observe(fd as i32, slot, state, mem, now) {
            out.push(o);
        }
    }
}

fn observe(
    fd: i32,
    slot: &table::Slot,
    state: u32,
    mem: &mut Memory,
    now: u64,
) -> Option<Observation> {
    let policy = config::policy();
    if slot.has_flag(Flags::KEEPALIVE_DUE) {
        super::act::arm_keepalive(fd, slot, state);
    }
    let mut facts = slot.facts();
    let kernel_view = slot.has_flag(Flags::KERNEL_VIEW) && facts.first_wait_at == 0;
    if kernel_view {
        // No hook has seen this program read: judge by the kernel's counters.
        let sample = socket::kernel_sample(fd)?;
        let accepted_at = facts.accepted_at;
        facts = mem
            .kernel
            .get_or_insert_with(|| KernelTrack::new(sample, now))
            .observe(sample, now);
        facts.accepted_at = accepted_at;
    } else if facts.write_pending_since != 0 {
        if let Some(acked) = socket::tcp_bytes_acked(fd) {
            if mem.acked.is_some_and(|seen| seen != acked) {
                mem.acked_moved_at = now;
            }
            mem.acked = Some(acked);
        }
        facts.last_out = facts.last_out.max(mem.acked_moved_at);
    }
    let outbound = slot.has_flag(Flags::OUTBOUND);
    if outbound && facts.connecting_since != 0 && socket::is_established(fd) {
        // A non-blocking connect completed (the program learns it from poll + SO_ERROR,
        // which no hook records).
        slot.connecting_since.store(0, Relaxed);
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
        done: mem.done || slot.has_flag(Flags::REAPED),
        reaped: slot.has_flag(Flags::REAPED),
        exempt: slot.has_flag(Flags::EXEMPT),
        alias: slot.has_flag(Flags::ALIAS),
    })
}

/// How many distinct connections `seen` holds (dup'ed fds of one connection count once).
/// Sorting happens only when there are aliases, which most servers never have.
pub fn distinct_connections(seen: &[Observation], scratch: &mut Vec<u64>) -> (u64, u64) {
    let waiting = |o: &Observation| o.facts.waiting_since != 0;
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
