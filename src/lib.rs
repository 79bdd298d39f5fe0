//! libstallguard.so: preloaded into an unmodified server, it tracks every accepted TCP
//! connection and shuts down the ones that stall, so a fixed pool of workers cannot be parked
//! forever by slow or silent clients.
//!
//! Flow of data, one way, one folder per stage:
//!
//! ```text
//! libc call → hooks/ ──> track/ ──> table/ <── watcher/ ──> action (shutdown, log, stats)
//!   exports    record     atomics,   one slot    observe, judge (stallguard_policy), act,
//!   (interpose.rs rows)   facts      per fd      publish, report
//!                 └──────────┴──────────┴───────────┴──> runtime/ (clock, config, pid, log)
//!                                                        abi/ (real functions, errno, sockets)
//! ```
//!
//! This file is the only one that names every stage: it starts the guard when the library
//! is loaded and fixes it up in a forked child.

// Every unsafe operation is in an `unsafe {}` block with a `// SAFETY:` reason, even inside
// an `unsafe fn`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// The hooks are compiled out of unit tests (the test binary must not interpose its own libc
// calls), which leaves some of their helpers unused there.
#![cfg_attr(test, allow(dead_code))]

#[macro_use]
mod interpose;

mod abi;
#[cfg(not(test))]
mod hooks;
mod runtime;
mod table;
mod track;
mod watcher;

use runtime::{clock, config, log, pid};

/// Runs when the library is loaded, before the host's main.
/// Every allocation of this library goes through a gate that fork() waits on
/// (`runtime::alloc`): a child never inherits an allocator lock held by our watcher.
#[global_allocator]
static ALLOCATOR: runtime::alloc::ForkSafe = runtime::alloc::ForkSafe;

extern "C" fn init() {
    // First of our fork handlers: its prepare runs last before fork, its child handler first
    // after (the watcher the child handler below may start allocates).
    abi::sys::at_fork(
        runtime::alloc::before_fork,
        runtime::alloc::after_fork,
        runtime::alloc::after_fork_in_child,
    );
    let ok = std::panic::catch_unwind(|| {
        // First, before anything here can start our watcher: whether the program is
        // single-threaded, so that its cancellable calls may skip glibc's wrappers (acted on
        // only once the guard is on, below), and where glibc counts its threads.
        let single = abi::sys::single_threaded_now();
        abi::route::find_count();
        abi::real::resolve_all();
        pid::refresh_pid();
        abi::args::refresh_poll_limit();
        clock::refresh();
        if !config::load() {
            return;
        }
        if !table::init() {
            log::to_stderr("stallguard: cannot reserve the connection table: running UNGUARDED");
            return;
        }
        if config::policy().per_source > 0 {
            if !table::sources::init() {
                log::to_stderr("stallguard: cannot map the per-source table: STALLGUARD_PER_SOURCE is not enforced");
            } else if table::holders::init() {
                abi::sys::at_fork_prepare(before_fork);
                abi::sys::at_exit(table::holders::at_exit);
            }
        }
        runtime::set_watcher_starter(watcher::ensure_running);
        abi::sys::at_fork(before_fork_route, after_fork_in_parent, after_fork_in_child);
        pid::refresh_sigpipe_disposition();
        config::enable();
        track::adopt::adopt_stdio();
        // Last, once the guard is on (a guard running UNGUARDED changes nothing): the
        // cancellable calls may go to the kernel directly (`abi::route`).
        abi::route::at_start(
            single,
            abi::real::sys_rows_in_libc(),
            config::policy().direct_syscalls,
        );
    });
    if ok.is_err() {
        log::to_stderr("stallguard: internal error during start: running UNGUARDED");
    }
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = init;

/// The `event=stop` line (`watcher::stop`), from the library's destructor: the loader runs it
/// after every exit handler the program registered, so what the guard does while those still
/// serve is logged before it.
#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = watcher::write_stop_line;

/// Runs in the parent right before fork() (only with STALLGUARD_PER_SOURCE): the child will
/// hold this process's counted connections too.
extern "C" fn before_fork() {
    table::holders::before_fork();
}

/// Runs in the parent right before fork(): glibc's wrappers until the handlers after it
/// (`abi::route`: the child must not go direct on the parent's count of our threads).
extern "C" fn before_fork_route() {
    abi::route::before_fork();
}

/// Runs in the parent right after fork().
extern "C" fn after_fork_in_parent() {
    abi::route::after_fork_in_parent();
}

/// Runs in the child right after fork(). The parent's watcher thread and every call that was
/// in flight in another thread do not exist here: the program's calls go to the kernel
/// directly again (`abi::route`), release slots the watcher held, forget the
/// parent's in-flight waits (this process judges only what its own hooks see), and start a
/// watcher of our own if we inherited connections (fork-per-connection servers: the parent
/// accepts, the child serves).
extern "C" fn after_fork_in_child() {
    // One thread copied, none of ours: direct again while glibc's count says it is alone
    // (a child handler before this one may have started a thread), unless the program ever
    // asked to cancel.
    abi::route::after_fork_in_child();
    pid::refresh_pid();
    clock::refresh();
    log::reset_after_fork();
    table::stats::reset_after_fork();
    watcher::forget_parent_watcher();
    table::holders::after_fork_in_child();
    table::owners::forget_after_fork();
    let mut inherited = 0;
    for fd in 0..table::high_water() {
        if let Some(s) = table::tracked(fd as i32) {
            s.release_orphaned_act();
            s.forget_inflight();
            inherited += 1;
        }
    }
    if inherited > 0 && config::enabled() {
        // A forked connection process (fork-per-connection, CGI-style children): its
        // watcher wakes only when something is due (dozing up to 10 s, at most half the shortest
        // timer: `watcher::sleep`), and the hooks
        // read the exact clock instead of a coarse one refreshed every tick.
        clock::set_exact();
        watcher::ensure_running();
    }
}
