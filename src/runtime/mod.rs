//! What every stage shares about the running process: the coarse clock (`clock`), the policy
//! and whether the guard is on (`config`), our pid and the SIGPIPE disposition (`pid`), the
//! log (`log`), and the library's allocator, which no fork catches mid-allocation (`alloc`). Depends only on `abi` and the policy crate.
//!
//! Also the one upward call a lower stage needs: `track` starts the watcher when it tracks a
//! first connection, but must not name it; `lib.rs` registers the starter here.

pub mod alloc;
pub mod clock;
pub mod config;
pub mod log;
pub mod pid;

use std::sync::atomic::{AtomicPtr, Ordering::*};

static WATCHER_STARTER: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// Registers what [`start_watcher`] calls (the constructor, once).
pub fn set_watcher_starter(start: fn()) {
    WATCHER_STARTER.store(start as *mut (), Release);
}

/// Makes sure this process's watcher runs (a connection is now tracked).
pub fn start_watcher() {
    let p = WATCHER_STARTER.load(Acquire);
    if !p.is_null() {
        // SAFETY: the only value ever stored is a `fn()` (set_watcher_starter).
        let start: fn() = unsafe { std::mem::transmute::<*mut (), fn()>(p) };
        start();
    }
}
