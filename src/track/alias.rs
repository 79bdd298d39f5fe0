//! close, close_range, closefrom, fclose, dup, dup2, dup3, fcntl(F_DUPFD*).
//!
//! Every path that ends an fd untracks it *before* the real close, so the number can never be
//! reused while the watcher still believes it names the old connection; every path that
//! copies an fd tracks the copy as an alias of the same connection (inetd-style dup2 onto 0/1).
//! The log's own descriptor is forgotten the same way, so the watcher never writes into a
//! number the host reused.

use crate::runtime::log;
use crate::table;
use libc::{c_int, c_uint};

/// The fd is about to stop naming what it named (close).
#[inline(always)]
pub fn forget(fd: c_int) {
    if let Some(slot) = table::tracked(fd) {
        slot.untrack();
    }
    if log::is_log_fd(fd) {
        log::forget_fd(fd);
    }
}

/// fclose of a stream (None: a null stream, nothing to forget).
pub fn forget_stream(fd: Option<c_int>) {
    if let Some(fd) = fd {
        forget(fd);
    }
}

/// close_range(first, last, flags) and closefrom (first.., flags 0) are about to run.
pub fn closing_range(first: c_uint, last: c_uint, flags: c_int) {
    if flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) != 0 {
        return; // only marks them close-on-exec: nothing closes now
    }
    let end = (table::high_water() as u64).min(u64::from(last) + 1);
    for fd in u64::from(first)..end {
        if let Some(slot) = table::tracked(fd as c_int) {
            slot.untrack();
        }
    }
    log::forget_fd_if(|fd| fd >= 0 && (first..=last).contains(&(fd as c_uint)));
}

/// `new` now names the same connection as `old` (if that one is tracked).
fn alias(old: c_int, new: c_int) {
    if new < 0 || new == old {
        return;
    }
    if let Some(slot) = table::slot(new) {
        slot.forget_listener(); // whatever `new` named before, it names `old`'s socket now
    }
    if let (Some(src), Some(dst)) = (table::tracked(old), table::slot(new)) {
        dst.track_alias_of(new, src);
    }
}

/// dup returned `new`, a copy of `old`. Returns `new`.
pub fn copied(old: c_int, new: c_int) -> c_int {
    alias(old, new);
    new
}

/// fcntl(fd, cmd) returned `r`: F_DUPFD and F_DUPFD_CLOEXEC make a copy. Returns `r`.
pub fn fcntl_done(fd: c_int, cmd: c_int, r: c_int) -> c_int {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        alias(fd, r);
    }
    r
}

/// dup2/dup3(old, new) made by `call`. After a successful one, `new` names what `old`
/// names. Its old tracking is replaced only then: a failed call closes nothing, so the
/// connection must stay guarded. (A watcher that acts on `new` in between finds a different
/// SO_COOKIE and does nothing.) Our log descriptor is forgotten before: the watcher must
/// never write into the host's new file.
pub fn replacing(old: c_int, new: c_int, call: impl FnOnce() -> c_int) -> c_int {
    if old != new && log::is_log_fd(new) {
        log::forget_fd(new);
    }
    let r = call();
    if r >= 0 && old != new {
        if let Some(slot) = table::slot(new) {
            slot.forget_listener();
        }
        if table::tracked(old).is_some() {
            alias(old, new);
        } else if let Some(slot) = table::tracked(new) {
            slot.untrack();
        }
    }
    r
}
