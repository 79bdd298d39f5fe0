//! libstallguard.so: preloaded into an unmodified server, it tracks every accepted TCP
//! connection and shuts down the ones that stall, so a fixed pool of workers cannot be parked
//! forever by slow or silent clients.
//!
//! Flow of data, one way: libc call → `hooks` (record facts) → `table` (atomics, one slot per
//! fd) → `watcher` (judges with `stallguard_policy::judge`) → `action` (shutdown, log, stats).

// The hooks are compiled out of unit tests (the test binary must not interpose its own libc
// calls), which leaves some of their helpers unused there.
#![cfg_attr(test, allow(dead_code))]

mod action;
mod admission;
mod adopt;
#[cfg(not(test))]
mod api;
mod clock;
mod config;
#[cfg(not(test))]
mod hooks;
mod lens;
mod log;
mod observe;
mod process;
mod publish;
mod real;
mod report;
mod socket;
mod sources;
mod stats;
mod table;
mod watcher;

/// Runs when the library is loaded, before the host's main.
extern "C" fn init() {
    let ok = std::panic::catch_unwind(|| {
        real::resolve_all();
        process::refresh_pid();
        clock::refresh();
        if !config::load() {
            return;
        }
        if !table::init() {
            log::to_stderr("stallguard: cannot reserve the connection table: running UNGUARDED");
            return;
        }
        if config::policy().per_source > 0 && !sources::init() {
            log::to_stderr("stallguard: cannot map the per-source table: STALLGUARD_PER_SOURCE is not enforced");
        }
        process::install_fork_handler();
        process::refresh_sigpipe_disposition();
        process::enable();
        adopt::adopt_stdio();
    });
    if ok.is_err() {
        log::to_stderr("stallguard: internal error during start: running UNGUARDED");
    }
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = init;
