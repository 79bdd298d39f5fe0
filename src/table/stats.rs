//! Live counters of this process's guard: written by the watcher (tracked, waiting, reaps)
//! and by the accept path (rejections: atomics only); read by the watcher's publisher and the
//! cooperation API. Per-reason counters are sized by `stallguard_shm::REASONS`, which is
//! `Reason::ALL.len()`: every reason has its slot by construction.

use super::Identity;
use stallguard_policy::Reason;
use stallguard_shm::REASONS;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const _: () = assert!(REASONS == Reason::ALL.len());

static TRACKED: AtomicU64 = AtomicU64::new(0);
static WAITING: AtomicU64 = AtomicU64::new(0);
static REAPED: [AtomicU64; REASONS] = [const { AtomicU64::new(0) }; REASONS];
static WOULD_REAP: [AtomicU64; REASONS] = [const { AtomicU64::new(0) }; REASONS];
static REJECTED: AtomicU64 = AtomicU64::new(0);
/// Connections tracked since this process started (or was forked), for the stop line.
static TRACKED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// The last rejected client (peer_ip hi/lo, family << 16 | port), for the watcher's log line.
static REJECTED_PEER: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Per listening port (pressure, issue 12): the port (0: free entry), clients waiting for a
/// worker, under pressure (0/1), connections reaped for pressure. Written by the watcher only.
static PORTS: [[AtomicU64; 4]; stallguard_shm::PORTS] =
    [const { [const { AtomicU64::new(0) }; 4] }; stallguard_shm::PORTS];

/// The entry of `port`, claimed if needed (None when every entry is taken).
fn port_entry(port: u16) -> Option<&'static [AtomicU64; 4]> {
    let port = u64::from(port);
    PORTS
        .iter()
        .find(|e| e[0].load(Relaxed) == port)
        .or_else(|| {
            let free = PORTS.iter().find(|e| e[0].load(Relaxed) == 0)?;
            free[0].store(port, Relaxed);
            Some(free)
        })
}

/// This tick's load of each port; ports not listed have nobody waiting.
pub fn publish_ports(loads: &[stallguard_policy::pressure::PortLoad]) {
    for e in &PORTS {
        e[1].store(0, Relaxed);
        e[2].store(0, Relaxed);
    }
    for l in loads {
        if let Some(e) = port_entry(l.port) {
            e[1].store(l.waiting(), Relaxed);
            e[2].store(u64::from(l.under_pressure()), Relaxed);
        }
    }
}

pub fn count_pressure_reap(port: u16) {
    if let Some(e) = port_entry(port) {
        e[3].fetch_add(1, Relaxed);
    }
}

pub fn publish_tick(tracked: u64, waiting: u64) {
    TRACKED.store(tracked, Relaxed);
    WAITING.store(waiting, Relaxed);
}

/// A connection is now tracked (from the hooks: one relaxed add).
pub fn count_tracked() {
    TRACKED_TOTAL.fetch_add(1, Relaxed);
}

pub fn tracked_total() -> u64 {
    TRACKED_TOTAL.load(Relaxed)
}

/// In a forked child: what the parent counted is the parent's (its own metrics, live view
/// and stop line say so); the child counts what it does itself from here on. Connections it
/// inherited are counted by the watcher's next pass (tracked, waiting).
pub fn reset_after_fork() {
    for c in REAPED.iter().chain(WOULD_REAP.iter()) {
        c.store(0, Relaxed);
    }
    for c in [&REJECTED, &TRACKED_TOTAL, &TRACKED, &WAITING] {
        c.store(0, Relaxed);
    }
    for e in &PORTS {
        e[3].store(0, Relaxed);
    }
}

pub fn count_reap(reason: Reason, acted: bool) {
    let counters = if acted { &REAPED } else { &WOULD_REAP };
    counters[reason.index()].fetch_add(1, Relaxed);
}

/// Everything counted so far, in the form the live view and the metrics use.
pub fn counters() -> stallguard_shm::Counters {
    let mut c = stallguard_shm::Counters {
        tracked: TRACKED.load(Relaxed),
        waiting: WAITING.load(Relaxed),
        rejected_over_cap: REJECTED.load(Relaxed),
        ..Default::default()
    };
    for r in Reason::ALL {
        c.reaped[r.index()] = REAPED[r.index()].load(Relaxed);
        c.would_reap[r.index()] = WOULD_REAP[r.index()].load(Relaxed);
    }
    for (to, e) in c.ports.iter_mut().zip(&PORTS) {
        *to = stallguard_shm::PortStat {
            port: e[0].load(Relaxed) as u16,
            under_pressure: e[2].load(Relaxed) as u16,
            waiting: e[1].load(Relaxed).min(u64::from(u32::MAX)) as u32,
            pressure_reaps: e[3].load(Relaxed),
        };
    }
    c
}

/// A connection refused at accept for its source's cap (called from the accept hook: atomics
/// only; the watcher logs, rate-limited).
pub fn count_rejected(id: &Identity) {
    let (hi, lo) = id.peer_ip.split_at(8);
    REJECTED_PEER[0].store(
        u64::from_be_bytes(hi.try_into().unwrap_or_default()),
        Relaxed,
    );
    REJECTED_PEER[1].store(
        u64::from_be_bytes(lo.try_into().unwrap_or_default()),
        Relaxed,
    );
    REJECTED_PEER[2].store(
        (u64::from(id.family) << 16) | u64::from(id.peer_port),
        Relaxed,
    );
    REJECTED.fetch_add(1, Relaxed);
}

pub fn rejected() -> u64 {
    REJECTED.load(Relaxed)
}

pub fn last_rejected_peer() -> Identity {
    let mut peer_ip = [0u8; 16];
    peer_ip[..8].copy_from_slice(&REJECTED_PEER[0].load(Relaxed).to_be_bytes());
    peer_ip[8..].copy_from_slice(&REJECTED_PEER[1].load(Relaxed).to_be_bytes());
    let fp = REJECTED_PEER[2].load(Relaxed);
    Identity {
        family: (fp >> 16) as u16,
        peer_port: fp as u16,
        peer_ip,
        ..Identity::default()
    }
}
