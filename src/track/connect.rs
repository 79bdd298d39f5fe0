//! connect: with STALLGUARD_OUTBOUND set, TCP connections the program opens itself are
//! tracked too, so a legacy client stuck on a stalled upstream (a connect that never
//! completes, a server that accepts and never answers) gets an error instead of hanging.
//! Without it the hook costs one load and a branch ([`enabled`]).

use crate::abi::errno::{errno, ErrnoGuard};
use crate::abi::socket;
use crate::runtime::{clock, config, start_watcher};
use crate::table::{self, stats, Flags, Identity, Slot};
use libc::c_int;

/// Whether the connect hook does anything.
#[inline(always)]
pub fn enabled() -> bool {
    config::outbound_enabled()
}

/// connect(fd) to `destination`, made by `call`.
pub fn connecting(fd: c_int, destination: Option<Identity>, call: impl FnOnce() -> c_int) -> c_int {
    let slot = begin(fd, destination);
    let r = call();
    if let Some(slot) = slot {
        let e = errno();
        if r == 0 {
            slot.connected();
        } else if e != libc::EINPROGRESS && e != libc::EINTR {
            let _errno = ErrnoGuard::new();
            slot.untrack(); // failed at once: nothing to guard
        }
        // EINPROGRESS / EINTR: still connecting; the watcher sees it complete (TCP_INFO).
    }
    r
}

/// Tracks a TCP stream socket about to connect to an IPv4/IPv6 address.
fn begin(fd: c_int, destination: Option<Identity>) -> Option<&'static Slot> {
    let id = destination?;
    config::policy().outbound.as_ref()?;
    let _errno = ErrnoGuard::new();
    if !socket::is_tcp(fd) {
        return None;
    }
    let slot = table::slot(fd)?;
    let now = clock::refresh();
    slot.track(fd, &id, now);
    stats::count_tracked();
    slot.set_flag(Flags::OUTBOUND);
    slot.connect_started(now);
    start_watcher();
    Some(slot)
}
