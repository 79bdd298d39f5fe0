//! Item 5 (model part): the table's ownership protocol (TRACKED / ACTING / FREE with
//! generations, src/table/slot.rs), three ways.
//!
//! A. Conformance: the *real* `src/table/` is compiled into this test (`#[path]`, with the
//!    shim's real lower layers, runtime/ and abi/) and every transition of the real code is
//!    compared with a small pure model `step(state, op)`: track, untrack, begin_act (current
//!    and stale judgements), end_act, release_orphaned_act, same_generation; that untrack and
//!    track wait while ACTING is checked with a second thread.
//! B. Exhaustive interleavings of that model (sequentially consistent, every atomic step of
//!    the real functions is one step): a watcher that judges, begins to act, re-checks the
//!    socket cookie, shuts down and ends, against a program thread that closes the fd through
//!    a hook (untrack first), lets the kernel reuse the number for another connection or a
//!    non-socket, and re-tracks it. Property: the watcher never shuts down an object other
//!    than the connection it judged. With closes no hook sees (raw syscall) the only bad
//!    interleavings must be the documented residual window between the cookie check and the
//!    shutdown. Deliberately broken variants of the protocol (no generation check in
//!    begin_act plus no cookie check; untrack that does not wait for ACTING) must be caught.
//! C. Stress of the real code: a watcher thread and closer threads run the real functions
//!    millions of times against a simulated kernel fd; the object at the fd may never change
//!    while the watcher holds ACTING.
//!
//! Not covered: weak-memory reorderings (B is sequentially consistent; the real code's
//! Acquire/Release pairs are exercised only by C on x86-64, which is TSO).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

#[path = "../../src/table/mod.rs"]
#[allow(dead_code, clippy::all)]
pub mod table;

use table::{phase, Identity, Slot, ACTING, FREE, TRACKED};

// ------------------------------------------------------------------ A. conformance

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Track,
    Untrack,
    BeginActCurrent,
    BeginActStale,
    EndAct,
    ReleaseOrphaned,
}

const STEP: u32 = 4;

/// The protocol as a pure function: (state, op, previously judged state) → (state, result).
/// `Untrack`/`Track` on ACTING block in the real code: the model says None (checked apart).
pub fn step(st: u32, op: Op, judged: u32) -> Option<(u32, bool)> {
    let gen = st & !3;
    let ph = st & 3;
    Some(match op {
        Op::Track => {
            if ph == ACTING {
                return None;
            }
            (gen.wrapping_add(STEP) | TRACKED, true)
        }
        Op::Untrack => match ph {
            FREE => (st, true),
            ACTING => return None,
            _ => (gen.wrapping_add(STEP) | FREE, true),
        },
        Op::BeginActCurrent => {
            if ph == TRACKED {
                (gen | ACTING, true)
            } else {
                (st, false)
            }
        }
        Op::BeginActStale => {
            // A judgement from an earlier generation never takes the slot.
            if judged == st && ph == TRACKED {
                (gen | ACTING, true)
            } else {
                (st, false)
            }
        }
        Op::EndAct => (judged, true),
        Op::ReleaseOrphaned => {
            if ph == ACTING {
                (gen | TRACKED, true)
            } else {
                (st, true)
            }
        }
    })
}

fn slot_for_test(fd: i32) -> &'static Slot {
    assert!(table::init());
    table::slot(fd).unwrap()
}

fn ident(cookie: u64) -> Identity {
    Identity {
        cookie,
        family: libc::AF_INET as u16,
        peer_ip: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        peer_port: 4000,
        local_port: 80,
    }
}

/// Applies `op` to the real slot; returns the new state and the result.
fn real_apply(s: &Slot, fd: i32, op: Op, judged: u32) -> (u32, bool) {
    let r = match op {
        Op::Track => {
            s.track(fd, &ident(9), 1);
            true
        }
        Op::Untrack => {
            s.untrack();
            true
        }
        Op::BeginActCurrent => s.begin_act(s.state.load(Acquire)),
        Op::BeginActStale => s.begin_act(judged),
        Op::EndAct => {
            s.end_act(judged);
            true
        }
        Op::ReleaseOrphaned => {
            s.release_orphaned_act();
            true
        }
    };
    (s.state.load(Acquire), r)
}

/// Walks every sequence of up to `depth` ops from FREE, comparing the real code with `step`.
pub fn conformance(depth: usize) -> usize {
    const OPS: [Op; 6] = [
        Op::Track,
        Op::Untrack,
        Op::BeginActCurrent,
        Op::BeginActStale,
        Op::EndAct,
        Op::ReleaseOrphaned,
    ];
    let fd = (table::MAX_FDS - 3) as i32;
    let s = slot_for_test(fd);
    let mut checked = 0;
    let mut stack: Vec<Vec<Op>> = vec![vec![]];
    while let Some(seq) = stack.pop() {
        // Replay from a fresh FREE slot.
        s.state.store(0, SeqCst);
        let mut judged_tracked = 0u32; // the last TRACKED state a "watcher" judged
        let mut acting_from = None::<u32>;
        let mut ok = true;
        for &op in &seq {
            let before = s.state.load(SeqCst);
            let judged = match op {
                Op::EndAct => match acting_from {
                    Some(j) => j,
                    None => {
                        ok = false;
                        break;
                    }
                },
                _ => judged_tracked,
            };
            let Some((want, want_r)) = step(before, op, judged) else {
                ok = false; // would block: not a sequential sequence
                break;
            };
            let (got, got_r) = real_apply(s, fd, op, judged);
            assert_eq!(
                (got, got_r),
                (want, want_r),
                "real table.rs differs from the model after {seq:?} (state before {before:#x}, op {op:?})"
            );
            checked += 1;
            if phase(got) == TRACKED {
                if op == Op::Track {
                    judged_tracked = got;
                }
                acting_from = None;
            }
            if (op == Op::BeginActCurrent || op == Op::BeginActStale) && got_r {
                acting_from = Some(before);
            }
            if op == Op::EndAct || op == Op::ReleaseOrphaned {
                acting_from = None;
            }
        }
        if ok && seq.len() < depth {
            for op in OPS {
                let mut next = seq.clone();
                next.push(op);
                stack.push(next);
            }
        }
    }
    s.state.store(0, SeqCst);
    checked
}

/// untrack and track wait while the watcher holds ACTING, and proceed once it ends.
pub fn blocking_ops_wait_for_acting() {
    let fd = (table::MAX_FDS - 5) as i32;
    let s = slot_for_test(fd);
    s.state.store(0, SeqCst);
    for op in [Op::Untrack, Op::Track] {
        s.track(fd, &ident(1), 1);
        let judged = s.state.load(SeqCst);
        assert!(s.begin_act(judged));
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let t = std::thread::spawn(move || {
            let s = table::slot(fd).unwrap();
            match op {
                Op::Untrack => s.untrack(),
                _ => s.track(fd, &ident(2), 2),
            }
            d.store(true, SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !done.load(SeqCst),
            "{op:?} went ahead while the watcher held ACTING"
        );
        assert_eq!(s.state.load(SeqCst), judged & !3 | ACTING);
        s.end_act(judged);
        t.join().unwrap();
        assert!(done.load(SeqCst));
        let after = s.state.load(SeqCst);
        assert_ne!(
            after & !3,
            judged & !3,
            "{op:?} must start a new generation"
        );
        s.untrack();
    }
    s.state.store(0, SeqCst);
}

// ------------------------------------------------------------------ B. interleavings

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The real protocol, closes through the hooks.
    Real,
    /// The real protocol; the program closes with a raw syscall no hook sees.
    RawClose,
    /// Broken on purpose: begin_act takes whatever TRACKED state is there, no cookie check.
    NoGenerationNoCookie,
    /// Broken on purpose: untrack does not wait while ACTING.
    UntrackNoWait,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    state: u32,
    slot_cookie: u64,
    /// The object the kernel has under the fd number (0: nothing / not a socket).
    kernel: u64,
    next_cookie: u64,
    w_pc: u8,
    w_judged: u32,
    w_cookie: u64,
    c_pc: u8,
    c_seen: u32,
    c_cycles: u8,
    /// What the kernel had under the number when the watcher re-checked the cookie.
    w_checked: u64,
    /// The watcher shut down an object other than the one it judged.
    violation: Option<Wrong>,
}

/// How a wrong shutdown came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wrong {
    /// The object was the judged one at the cookie check and changed before the shutdown.
    AfterCheck,
    /// The object was already another one when the watcher went ahead.
    Unchecked,
}

const W_DONE: u8 = 99;
const C_DONE: u8 = 99;

fn watcher_step(w: &mut World, v: Variant) {
    match w.w_pc {
        0 => {
            // observe + judge: the slot is stalled in the state it was loaded in
            w.w_judged = w.state;
            w.w_pc = if phase(w.state) == TRACKED { 1 } else { W_DONE };
        }
        1 => {
            w.w_cookie = w.slot_cookie; // identity(), read after the state
            w.w_pc = 2;
        }
        2 => {
            // begin_act: CAS on the judged state
            let expected = if v == Variant::NoGenerationNoCookie {
                w.state // broken: whatever is there now
            } else {
                w.w_judged
            };
            if phase(expected) == TRACKED && w.state == expected {
                w.state = (expected & !3) | ACTING;
                w.w_judged = expected;
                w.w_pc = 3;
            } else {
                w.w_pc = W_DONE;
            }
        }
        3 => {
            // re-check the socket's cookie
            w.w_checked = w.kernel;
            if v != Variant::NoGenerationNoCookie && w.w_cookie != 0 && w.kernel != w.w_cookie {
                w.state = w.w_judged; // end_act, then untrack the stale slot
                w.w_pc = 5;
            } else {
                w.w_pc = 4;
            }
        }
        4 => {
            // shutdown(fd): acts on whatever the kernel has under the number now
            if w.kernel != w.w_cookie && w.violation.is_none() {
                w.violation = Some(if w.w_checked == w.w_cookie {
                    Wrong::AfterCheck
                } else {
                    Wrong::Unchecked
                });
            }
            w.state = w.w_judged; // end_act
            w.w_pc = W_DONE;
        }
        5 => {
            // untrack of the stale slot (the program cannot be ACTING-blocked here)
            if phase(w.state) == TRACKED {
                w.state = (w.state & !3).wrapping_add(STEP) | FREE;
            }
            w.w_pc = W_DONE;
        }
        _ => {}
    }
}

fn closer_step(w: &mut World, v: Variant) {
    let raw = v == Variant::RawClose;
    match w.c_pc {
        0 => {
            // close(): untrack first (hooked), or straight to the kernel (raw)
            w.c_pc = if raw { 3 } else { 1 };
        }
        1 => {
            w.c_seen = w.state;
            w.c_pc = 2;
        }
        2 => {
            let st = w.c_seen;
            match phase(st) {
                FREE => w.c_pc = 3,
                ACTING if v != Variant::UntrackNoWait => w.c_pc = 1, // sched_yield, retry
                _ => {
                    if w.state == st {
                        w.state = (st & !3).wrapping_add(STEP) | FREE;
                        w.c_pc = 3;
                    } else {
                        w.c_pc = 1;
                    }
                }
            }
        }
        3 => {
            w.kernel = 0; // the real close
            w.c_pc = 4;
        }
        4 => {
            // the number is reused at once: a connection (tracked next) or, after a raw
            // close, a pipe/outbound socket that no hook tracks
            w.next_cookie += 1;
            w.kernel = if raw {
                1000 + w.next_cookie
            } else {
                w.next_cookie
            };
            w.c_pc = if raw { 8 } else { 5 };
        }
        5 => {
            // track(): wait_not_acting
            w.c_seen = w.state;
            w.c_pc = if phase(w.c_seen) == ACTING { 5 } else { 6 };
        }
        6 => {
            w.slot_cookie = w.kernel; // identity, then publish
            w.c_pc = 7;
        }
        7 => {
            w.state = (w.c_seen & !3).wrapping_add(STEP) | TRACKED;
            w.c_pc = 8;
        }
        8 => {
            w.c_cycles += 1;
            w.c_pc = if w.c_cycles < 2 { 0 } else { C_DONE };
        }
        _ => {}
    }
}

pub struct Exploration {
    pub states: usize,
    /// The kinds of wrong shutdown some interleaving reached.
    pub violations_after: HashSet<Wrong>,
}

/// Explores every interleaving of one watcher pass (repeated twice) and two close/reuse cycles.
pub fn explore(v: Variant) -> Exploration {
    let start = World {
        state: STEP | TRACKED, // connection 1 tracked
        slot_cookie: 1,
        kernel: 1,
        next_cookie: 1,
        w_pc: 0,
        w_judged: 0,
        w_cookie: 0,
        c_pc: 0,
        c_seen: 0,
        c_cycles: 0,
        w_checked: 0,
        violation: None,
    };
    let mut seen: HashSet<(World, u8)> = HashSet::new();
    let mut stack = vec![(start, 0u8)]; // (world, watcher passes done)
    let mut violations_after = HashSet::new();
    while let Some((w, passes)) = stack.pop() {
        if !seen.insert((w.clone(), passes)) {
            continue;
        }
        if let Some(at) = w.violation {
            violations_after.insert(at);
            continue;
        }
        // watcher moves (a finished pass may start another one)
        if w.w_pc != W_DONE {
            let mut n = w.clone();
            watcher_step(&mut n, v);
            stack.push((n, passes));
        } else if passes < 1 {
            let mut n = w.clone();
            n.w_pc = 0;
            stack.push((n, passes + 1));
        }
        if w.c_pc != C_DONE {
            let mut n = w.clone();
            closer_step(&mut n, v);
            // A spinning program with nothing changed is the same state: skip self-loops.
            if n != w {
                stack.push((n, passes));
            }
        }
    }
    Exploration {
        states: seen.len(),
        violations_after,
    }
}

// ------------------------------------------------------------------ C. real-code stress

pub struct Stress {
    pub acts: usize,
    pub cycles: usize,
    pub wrong: usize,
}

/// Acts the stress must see before it stops: the watcher acting while the closer reuses the
/// number is what is under test, and a run without any proves nothing.
pub const MIN_ACTS: usize = 1_000;
/// How long the stress may go on past `iterations` to see `MIN_ACTS` acts. On a loaded 2-core
/// machine the watcher thread can sit unscheduled for the whole of a fixed-count run (300k
/// cycles take ~30 ms), which once gave "0 acts"; the race itself is the same.
const ACTS_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Real Slot functions under contention: while the watcher holds ACTING (and has verified the
/// "kernel" object's cookie), the object under the fd must not change. Runs at least
/// `iterations` close/reuse cycles, and on until the watcher acted `MIN_ACTS` times (bounded
/// by `ACTS_WITHIN`).
pub fn stress(iterations: usize) -> Stress {
    let fd = (table::MAX_FDS - 7) as i32;
    let s = slot_for_test(fd);
    s.state.store(0, SeqCst);
    let kernel = Arc::new(AtomicU64::new(1));
    s.track(fd, &ident(1), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(AtomicUsize::new(0));
    let acts = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (kernel, stop, wrong, acts, started) = (
            kernel.clone(),
            stop.clone(),
            wrong.clone(),
            acts.clone(),
            started.clone(),
        );
        std::thread::spawn(move || {
            let s = table::slot(fd).unwrap();
            started.store(true, SeqCst);
            while !stop.load(Relaxed) {
                let judged = s.state.load(Acquire);
                if phase(judged) != TRACKED {
                    continue;
                }
                let id = s.identity();
                if !s.begin_act(judged) {
                    continue;
                }
                if kernel.load(SeqCst) == id.cookie {
                    // "shutdown": the object must stay put for the whole act
                    for _ in 0..50 {
                        if kernel.load(SeqCst) != id.cookie {
                            wrong.fetch_add(1, Relaxed);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    acts.fetch_add(1, Relaxed);
                }
                s.end_act(judged);
            }
        })
    };
    // The closer starts once the watcher runs (a thread can take long to first run under load).
    while !started.load(SeqCst) {
        std::thread::yield_now();
    }
    let give_up = std::time::Instant::now() + ACTS_WITHIN;
    let mut cycles = 0;
    let mut cookie = 1u64;
    while cycles < iterations
        || (acts.load(Relaxed) < MIN_ACTS
            && (cycles % 1024 != 0 || std::time::Instant::now() < give_up))
    {
        // close through the hook: untrack, the kernel closes and reuses the number, track
        s.untrack();
        cookie += 1;
        kernel.store(0, SeqCst);
        kernel.store(cookie, SeqCst);
        s.track(fd, &ident(cookie), 1);
        cycles += 1;
    }
    stop.store(true, Relaxed);
    watcher.join().unwrap();
    s.untrack();
    s.state.store(0, SeqCst);
    Stress {
        acts: acts.load(Relaxed),
        cycles,
        wrong: wrong.load(Relaxed),
    }
}
