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
/// The last rejected client (peer_ip hi/lo, family << 16 | port), for the watcher's log line.
static REJECTED_PEER: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

pub fn publish_tick(tracked: u64, waiting: u64) {
    TRACKED.store(tracked, Relaxed);
    WAITING.store(waiting, Relaxed);
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
