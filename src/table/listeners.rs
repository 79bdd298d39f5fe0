//! The listening sockets of this process (issue 12, pressure): the fds the program called
//! `listen` on or accepted from, so the watcher can read their accept queues. A small fixed
//! array of atomics (an fd + 1 per entry, 0 = free): registering is lock-free and allocates
//! nothing, and a forked child inherits the table with the listeners (prefork). The watcher
//! checks each entry is still a listener before using it and forgets those that are not.

use std::sync::atomic::{AtomicU32, Ordering::*};

/// Listeners remembered; more are ignored (their ports are judged without their queue).
pub const MAX_LISTENERS: usize = 32;

static LISTENERS: [AtomicU32; MAX_LISTENERS] = [const { AtomicU32::new(0) }; MAX_LISTENERS];

/// Remembers `fd` as a listener (no-op if it already is, or the table is full).
pub fn note(fd: libc::c_int) {
    if fd < 0 {
        return;
    }
    let entry = fd as u32 + 1;
    if LISTENERS.iter().any(|l| l.load(Relaxed) == entry) {
        return;
    }
    for l in &LISTENERS {
        if l.compare_exchange(0, entry, AcqRel, Relaxed).is_ok() {
            return;
        }
        if l.load(Relaxed) == entry {
            return; // registered concurrently
        }
    }
}

/// Forgets `fd` (the watcher found it is no longer a listener).
pub fn forget(fd: libc::c_int) {
    let entry = fd as u32 + 1;
    for l in &LISTENERS {
        let _ = l.compare_exchange(entry, 0, AcqRel, Relaxed);
    }
}

/// Calls `f` with every remembered listener fd.
pub fn each(mut f: impl FnMut(libc::c_int)) {
    for l in &LISTENERS {
        let entry = l.load(Acquire);
        if entry != 0 {
            f((entry - 1) as libc::c_int);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_is_idempotent_and_forget_frees() {
        let count = |fd| {
            let mut n = 0;
            each(|l| n += usize::from(l == fd));
            n
        };
        note(1_000_001);
        note(1_000_001);
        assert_eq!(count(1_000_001), 1);
        forget(1_000_001);
        assert_eq!(count(1_000_001), 0);
    }
}
