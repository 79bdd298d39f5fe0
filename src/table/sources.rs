//! `STALLGUARD_PER_SOURCE`: how many connections each client address holds right now, shared
//! by every process of a prefork server.
//!
//! The counters live in one `MAP_SHARED` anonymous mapping made by the constructor, before
//! the server forks its workers, so all of them count into the same table. It is an
//! open-addressing table keyed by the client address (an IPv6 client by its /64, where one
//! host usually owns the whole prefix); keys are never removed, so two processes inserting the
//! same key always meet in the same bucket. A full table admits everyone (fail open).

use super::Identity;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::*};

const BUCKETS: usize = 1 << 16;

#[repr(C)]
struct Entry {
    key: AtomicU64,
    count: AtomicU32,
    _pad: u32,
}

static BASE: AtomicPtr<Entry> = AtomicPtr::new(std::ptr::null_mut());

/// Makes the shared table (constructor only, and only when a cap is set).
pub fn init() -> bool {
    match crate::abi::sys::map_anonymous(BUCKETS * std::mem::size_of::<Entry>(), true) {
        Some(p) => {
            BASE.store(p.cast(), Release);
            true
        }
        None => false,
    }
}

/// The key of a client: its IPv4 address (also when IPv4-mapped), or its IPv6 /64.
pub fn source_key(id: &Identity) -> u64 {
    let ip = &id.peer_ip;
    let v4 = if id.family == libc::AF_INET as u16 {
        Some([ip[0], ip[1], ip[2], ip[3]])
    } else if ip[..10].iter().all(|b| *b == 0) && ip[10] == 0xff && ip[11] == 0xff {
        Some([ip[12], ip[13], ip[14], ip[15]])
    } else {
        None
    };
    match v4 {
        Some(a) => 0xffff_ffff_0000_0000 | u64::from(u32::from_be_bytes(a)),
        None => u64::from_be_bytes(ip[..8].try_into().unwrap_or_default()).max(1),
    }
}

fn entry(key: u64) -> Option<&'static Entry> {
    let base = BASE.load(Acquire);
    if base.is_null() {
        return None;
    }
    let start = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as usize % BUCKETS;
    for i in 0..BUCKETS {
        // SAFETY: `base` is a live mapping of BUCKETS entries (never unmapped), the index is
        // below BUCKETS, and a zeroed entry is a valid Entry (atomics).
        let e = unsafe { &*base.add((start + i) % BUCKETS) };
        let k = e.key.load(Acquire);
        if k == key {
            return Some(e);
        }
        if k == 0 {
            match e.key.compare_exchange(0, key, AcqRel, Acquire) {
                Ok(_) => return Some(e),
                Err(other) if other == key => return Some(e),
                Err(_) => continue,
            }
        }
    }
    None
}

/// Counts one more connection from `key`; false (and nothing counted) when that would exceed
/// `limit`.
pub fn acquire(key: u64, limit: u32) -> bool {
    let Some(e) = entry(key) else { return true };
    if e.count.fetch_add(1, AcqRel) >= limit {
        release_entry(e);
        return false;
    }
    true
}

/// One connection from `key` ended.
pub fn release(key: u64) {
    if let Some(e) = entry(key) {
        release_entry(e);
    }
}

fn release_entry(e: &Entry) {
    let _ = e.count.fetch_update(AcqRel, Acquire, |c| c.checked_sub(1));
}
