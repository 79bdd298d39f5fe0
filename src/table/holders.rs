//! `STALLGUARD_PER_SOURCE` across fork: a connection keeps its source's place until the last
//! process holding it lets go, not when the process that accepted it closes its copy (a
//! fork-per-connection server's parent does that right after fork).
//!
//! A counted connection gets a *hold* in one shared table (a `MAP_SHARED` mapping made by the
//! constructor, like the per-source counts): how many processes hold the connection, its
//! source, and the pids of the holders. Each process counts its own fds per hold in private
//! memory (copied into a forked child with the rest of its memory):
//! * accept: a new hold, one holder (this process), one local fd;
//! * dup/dup2/fcntl(F_DUPFD): one more local fd;
//! * fork: *before* the fork, in the parent, one more holder for each hold it has fds of (the
//!   parent may close its copy the moment fork returns, before the child runs a line); in the
//!   child, its pid is registered as a holder;
//! * close: one local fd less; the process's last one makes it leave: one holder less, its
//!   pid removed; the last holder gives the source's place back;
//! * exit(): an atexit handler leaves every hold this process still has (the kernel closes
//!   the fds afterwards without our hooks);
//! * a holder that never lets go (killed, `_exit`, exec'd and exited): the watchers' liveness
//!   sweep takes each registered pid that is gone out of the hold, with its holder; a hold
//!   left with holders but no registered pid (a fork that failed, or whose child has not
//!   registered yet) is freed after a grace period. A child that finds the pid list full
//!   first takes the place of a gone holder; if none, it is counted as unlisted and the hold
//!   is never freed by the sweep while it has unlisted holders (fail closed for that one
//!   connection rather than admit more than the cap).
//!
//! Everything is atomics: the hooks (close, dup) and the fork handlers run here, async-signal
//! safe. When the table is full, a connection is counted the old way (its place is given back
//! when the accepting process closes it).

use super::sources;
use crate::abi::sys;
use crate::runtime::pid;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

const HOLDS: usize = 1 << 14;
const PIDS: usize = 4;
/// `count` of a hold being claimed or released (the sweep and other claimers skip it).
const BUSY: u64 = 0xffff_ffff;
/// A hold with no live holder but a fork not yet registered in its child is freed only after
/// it stayed so for this long (the child registers within microseconds; a fork that failed
/// never does).
const ORPHAN_GRACE_MS: u64 = 2_000;
/// The sweep runs at most this often, across all processes.
const SWEEP_EVERY_MS: u64 = 250;

#[repr(C, align(64))]
struct Hold {
    /// generation << 32 | holders (0: free; BUSY: being claimed or released). The generation
    /// changes with every claim, so a stale id never touches the hold's next connection.
    state: AtomicU64,
    /// The source key whose place this connection holds.
    source: AtomicU64,
    pids: [AtomicU32; PIDS],
    /// Holders whose pid did not fit in `pids` (the sweep cannot see whether they live).
    unlisted: AtomicU32,
    /// Forks counted in the parent whose child has not registered its pid yet.
    pending: AtomicU32,
    /// When the sweep first saw no live holder (0: it has not).
    orphan_since: AtomicU64,
}

#[repr(C)]
struct Shared {
    /// One past the highest hold ever claimed (the sweep reads up to it).
    used: AtomicUsize,
    swept_at: AtomicU64,
    holds: [Hold; HOLDS],
}

static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

/// This process's fds per hold: id << 32 | count (private memory, copied into a forked child).
static LOCAL: [AtomicU64; HOLDS] = [const { AtomicU64::new(0) }; HOLDS];
/// One past the highest hold this process (or the parent it was forked from) ever counted.
static LOCAL_HIGH: AtomicUsize = AtomicUsize::new(0);
/// This process forked while holding connections (a fork-per-connection server's parent):
/// its children's zombies are only recognised by its own sweep, so it sweeps on its own
/// schedule, not the shared one.
static FORKED_HOLDING: AtomicBool = AtomicBool::new(false);
static MY_SWEEP_AT: AtomicU64 = AtomicU64::new(0);

/// Makes the shared table (constructor only, and only when a cap is set).
pub fn init() -> bool {
    match sys::map_anonymous(std::mem::size_of::<Shared>(), true) {
        Some(p) => {
            SHARED.store(p.cast(), Release);
            true
        }
        None => false,
    }
}

/// How often some watcher must sweep (None: STALLGUARD_PER_SOURCE is off): a place held by a
/// process that died is given back within it, so a watcher that would sleep longer does not.
pub fn sweep_period_ms() -> Option<u64> {
    shared().map(|_| SWEEP_EVERY_MS)
}

fn shared() -> Option<&'static Shared> {
    let p = SHARED.load(Acquire);
    // SAFETY: a non-null SHARED is a live shared mapping of one zero-initialised `Shared`
    // (all atomics), never unmapped.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// An id names a hold and its generation: (generation & 0xffff) << 16 | (index + 1); 0: none.
fn id_of(index: usize, generation: u64) -> u32 {
    (((generation & 0xffff) as u32) << 16) | (index as u32 + 1)
}

fn index_of(id: u32) -> usize {
    ((id & 0xffff) as usize).wrapping_sub(1)
}

fn generation_matches(state: u64, id: u32) -> bool {
    (state >> 32) & 0xffff == u64::from(id >> 16)
}

/// A new hold for a connection from `source` that this process just accepted and counted;
/// its id, or 0 when there is no table or it is full (then the caller counts the old way).
pub fn adopt(source: u64) -> u32 {
    let Some(sh) = shared() else { return 0 };
    for (i, h) in sh.holds.iter().enumerate() {
        let s = h.state.load(Acquire);
        if s & BUSY != 0 {
            continue;
        }
        let generation = (s >> 32).wrapping_add(1) & 0xffff_ffff;
        if h.state
            .compare_exchange(s, (generation << 32) | BUSY, AcqRel, Relaxed)
            .is_err()
        {
            continue;
        }
        h.source.store(source, Relaxed);
        h.pids[0].store(pid::pid() as u32, Relaxed);
        for p in &h.pids[1..] {
            p.store(0, Relaxed);
        }
        h.unlisted.store(0, Relaxed);
        h.pending.store(0, Relaxed);
        h.orphan_since.store(0, Relaxed);
        h.state.store((generation << 32) | 1, Release);
        sh.used.fetch_max(i + 1, AcqRel);
        let id = id_of(i, generation);
        LOCAL[i].store(u64::from(id) << 32 | 1, Relaxed);
        LOCAL_HIGH.fetch_max(i + 1, Relaxed);
        return id;
    }
    0
}

/// One more fd of this process names the connection of hold `id` (dup).
pub fn share(id: u32) {
    if let Some(l) = LOCAL.get(index_of(id)) {
        let _ = l.fetch_update(AcqRel, Acquire, |v| {
            (v >> 32 == u64::from(id) && v as u32 != 0).then_some(v + 1)
        });
    }
}

/// One fd of this process naming hold `id`'s connection is closing: the last one makes this
/// process leave the hold.
pub fn let_go(id: u32) {
    let i = index_of(id);
    let Some(l) = LOCAL.get(i) else { return };
    let Ok(before) = l.fetch_update(AcqRel, Acquire, |v| {
        (v >> 32 == u64::from(id) && v as u32 != 0).then(|| if v as u32 == 1 { 0 } else { v - 1 })
    }) else {
        return; // not ours (or already left, at exit)
    };
    if before as u32 == 1 {
        leave(i, id);
    }
}

/// This process holds the connection no more: its pid out, one holder less, and the last
/// holder frees the hold and its source's place.
fn leave(i: usize, id: u32) {
    let Some(h) = shared().and_then(|sh| sh.holds.get(i)) else {
        return;
    };
    if !generation_matches(h.state.load(Acquire), id) {
        return; // freed by the sweep (and perhaps reused) meanwhile
    }
    let me = pid::pid() as u32;
    let listed = h
        .pids
        .iter()
        .any(|p| p.compare_exchange(me, 0, AcqRel, Relaxed).is_ok());
    if !listed {
        let _ = h
            .unlisted
            .fetch_update(AcqRel, Acquire, |n| n.checked_sub(1));
    }
    drop_holder(h, id);
}

/// One holder less (generation-checked); the last one frees the hold.
fn drop_holder(h: &Hold, id: u32) {
    loop {
        let s = h.state.load(Acquire);
        let count = s & BUSY;
        if !generation_matches(s, id) || count == 0 || count == BUSY {
            return; // freed by the sweep meanwhile
        }
        if count == 1 {
            if free(h, s) {
                return;
            }
        } else if h.state.compare_exchange(s, s - 1, AcqRel, Acquire).is_ok() {
            return;
        }
    }
}

/// Frees a hold last seen in state `s`, giving its source's place back; false if the state
/// changed meanwhile.
fn free(h: &Hold, s: u64) -> bool {
    let generation = s & !BUSY;
    if h.state
        .compare_exchange(s, generation | BUSY, AcqRel, Acquire)
        .is_err()
    {
        return false;
    }
    sources::release(h.source.load(Relaxed));
    for p in &h.pids {
        p.store(0, Relaxed);
    }
    h.state.store(generation, Release);
    true
}

/// The holds this process has fds of, as (index, id).
fn each_local(mut f: impl FnMut(usize, u32)) {
    for (i, l) in LOCAL.iter().enumerate().take(LOCAL_HIGH.load(Relaxed)) {
        let v = l.load(Acquire);
        if v as u32 != 0 {
            f(i, (v >> 32) as u32);
        }
    }
}

/// pthread_atfork prepare (the parent, before fork): the child will hold every connection
/// this process holds. Counted now, not in the child: the parent may close its copy as soon
/// as fork returns, and the connection must not lose its place in between.
pub fn before_fork() {
    let Some(sh) = shared() else { return };
    each_local(|i, id| {
        let h = &sh.holds[i];
        let counted = h.state.fetch_update(AcqRel, Acquire, |s| {
            let count = s & BUSY;
            (generation_matches(s, id) && count != 0 && count != BUSY).then_some(s + 1)
        });
        if counted.is_ok() {
            h.pending.fetch_add(1, AcqRel);
            FORKED_HOLDING.store(true, Relaxed);
        }
    });
}

/// In the forked child: registers this pid as a holder of what it inherited (the parent
/// already counted it in [`before_fork`]).
pub fn after_fork_in_child() {
    let Some(sh) = shared() else { return };
    FORKED_HOLDING.store(false, Relaxed);
    let me = pid::pid() as u32;
    each_local(|i, id| {
        let h = &sh.holds[i];
        let s = h.state.load(Acquire);
        if !generation_matches(s, id) || s & BUSY == 0 || s & BUSY == BUSY {
            return; // no longer the connection this process inherited
        }
        let placed = h
            .pids
            .iter()
            .any(|p| p.compare_exchange(0, me, AcqRel, Relaxed).is_ok())
            || take_place_of_a_gone_holder(h, id, me);
        if !placed {
            h.unlisted.fetch_add(1, AcqRel);
        }
        let _ = h
            .pending
            .fetch_update(AcqRel, Acquire, |n| n.checked_sub(1));
    });
}

/// A full pid list: takes the entry of a holder that is gone (it never let go: killed,
/// `_exit`, exec'd and exited), dropping its holder.
fn take_place_of_a_gone_holder(h: &Hold, id: u32, me: u32) -> bool {
    h.pids.iter().any(|p| {
        let old = p.load(Acquire);
        let taken = old != 0
            && old != me
            && sys::process_gone(old as i32)
            && p.compare_exchange(old, me, AcqRel, Relaxed).is_ok();
        if taken {
            drop_holder(h, id);
        }
        taken
    })
}

/// atexit: the kernel is about to close this process's fds without our hooks; leave every
/// hold now.
pub extern "C" fn at_exit() {
    each_local(|i, id| {
        if LOCAL[i].swap(0, AcqRel) as u32 != 0 {
            leave(i, id);
        }
    });
}

/// The liveness sweep (a watcher, at most every 250 ms across all processes, and as often in
/// a process that forked holding connections, which alone sees its exited children as
/// gone before it waits for them): frees holds whose registered holders are all gone
/// (killed, `_exit`, exec'd and exited): at once, or
/// after the grace period while a fork has not registered its child. Returns how many it
/// freed.
pub fn sweep(now: u64) -> usize {
    let Some(sh) = shared() else { return 0 };
    let gate = if FORKED_HOLDING.load(Relaxed) {
        &MY_SWEEP_AT
    } else {
        &sh.swept_at
    };
    let last = gate.load(Relaxed);
    if now.saturating_sub(last) < SWEEP_EVERY_MS
        || gate.compare_exchange(last, now, AcqRel, Relaxed).is_err()
    {
        return 0;
    }
    let me = pid::pid() as u32;
    let mut freed = 0;
    for (i, h) in sh.holds.iter().enumerate().take(sh.used.load(Acquire)) {
        let s = h.state.load(Acquire);
        let count = s & BUSY;
        if count == 0 || count == BUSY {
            continue;
        }
        let id = id_of(i, s >> 32);
        // Each registered holder that is gone (and never let go) leaves now, through us.
        let mut listed = false;
        for p in &h.pids {
            let pid = p.load(Acquire);
            if pid == 0 {
                continue;
            }
            // This process is alive: no syscall for what it holds itself.
            let gone =
                pid != me && (sys::process_gone(pid as i32) || sys::exited_child(pid as i32));
            if gone && p.compare_exchange(pid, 0, AcqRel, Relaxed).is_ok() {
                if h.state.load(Acquire) & BUSY == 1 {
                    freed += 1; // the last holder: dropping it frees the hold
                }
                drop_holder(h, id);
            } else if !gone {
                listed = true;
            }
        }
        let s = h.state.load(Acquire);
        let count = s & BUSY;
        if listed || count == 0 || count == BUSY || h.unlisted.load(Acquire) != 0 {
            h.orphan_since.store(0, Relaxed);
            continue;
        }
        // Holders, none registered: forks whose child has not registered (yet, or ever).
        let since = h.orphan_since.load(Relaxed);
        if since == 0 {
            h.orphan_since.store(now, Relaxed);
        }
        let waited = since != 0 && now.saturating_sub(since) >= ORPHAN_GRACE_MS;
        if (h.pending.load(Acquire) == 0 || waited) && free(h, s) {
            freed += 1;
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables are process-wide: one test at a time, each with the sweep's clock reset.
    fn setup() -> std::sync::MutexGuard<'static, ()> {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        static INIT: std::sync::Once = std::sync::Once::new();
        let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
        INIT.call_once(|| assert!(sources::init() && init()));
        crate::runtime::pid::refresh_pid();
        MY_SWEEP_AT.store(0, Relaxed);
        shared().unwrap().swept_at.store(0, Relaxed);
        guard
    }

    /// A connection from `key` accepted and counted under a cap of 1: the hold's id.
    fn accepted(key: u64) -> u32 {
        assert!(sources::acquire(key, 1));
        let id = adopt(key);
        assert_ne!(id, 0);
        id
    }

    fn held(key: u64) -> bool {
        // A cap of 1: admitted only if nothing from `key` is held.
        let free = sources::acquire(key, 1);
        if free {
            sources::release(key);
        }
        !free
    }

    #[test]
    fn the_place_is_held_until_the_last_fd_of_the_last_process() {
        let _one = setup();
        let key = 0xffff_ffff_0a00_0063;
        let id = accepted(key);
        share(id); // dup
        let_go(id);
        assert!(held(key), "a copy is still open");
        // fork: counted in the parent before it; the parent then closes its copy.
        before_fork();
        let_go(id);
        assert!(held(key), "the child holds it");
        // A stray close changes nothing.
        let_go(id);
        // The child was never registered (it died before, or the fork failed): the sweep
        // waits for the grace period, then frees the place.
        assert_eq!(sweep(1_000_000), 0);
        assert_eq!(sweep(1_000_000 + SWEEP_EVERY_MS), 0);
        assert!(held(key));
        assert_eq!(sweep(1_000_000 + ORPHAN_GRACE_MS + SWEEP_EVERY_MS), 1);
        assert!(!held(key));
        // A stale id (its hold freed and reused) touches nothing.
        assert!(sources::acquire(key, 1));
        let again = adopt(key);
        assert_ne!(again, id);
        let_go(id);
        assert!(held(key));
        let_go(again);
        assert!(!held(key));
    }

    #[test]
    fn a_registered_holder_that_is_gone_is_dropped_by_the_sweep() {
        let _one = setup();
        let key = 0xffff_ffff_0a00_0064;
        let id = accepted(key);
        let h = &shared().unwrap().holds[index_of(id)];
        before_fork();
        // The child registered, then ended with _exit (no hook ran): a pid that is gone.
        let gone = i32::MAX as u32 - 7;
        assert!(sys::process_gone(gone as i32));
        h.pids[1].store(gone, Release);
        h.pending.store(0, Release);
        let_go(id); // the parent closes its copy
        assert!(held(key), "the child still counts");
        let t = 50_000_000;
        assert!(sweep(t) + sweep(t + SWEEP_EVERY_MS) >= 1);
        assert!(
            !held(key),
            "dropped at once, no grace: the child was registered"
        );
    }
}
