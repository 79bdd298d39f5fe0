//! close, close_range, closefrom, fclose, dup, dup2, dup3, fcntl(F_DUPFD*), shutdown.
//!
//! Every path that ends an fd untracks it *before* the real close, so the number can never be
//! reused while the watcher still believes it names the old connection; every path that
//! copies an fd tracks the copy as an alias of the same connection (inetd-style dup2 onto 0/1).

use crate::{log, real, table};
use libc::{c_int, c_uint, c_ulong};

/// The fd is about to stop naming what it named.
#[inline(always)]
fn forget(fd: c_int) {
    if let Some(slot) = table::tracked(fd) {
        slot.untrack();
    }
    if log::is_log_fd(fd) {
        log::forget_fd(fd);
    }
}

fn forget_range(first: c_uint, last: c_uint) {
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
    if let (Some(src), Some(dst)) = (table::tracked(old), table::slot(new)) {
        dst.track_alias_of(new, src);
    }
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    forget(fd);
    real::close(fd)
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) == 0 {
        forget_range(first, last);
    }
    real::close_range(first, last, flags)
}

#[no_mangle]
pub unsafe extern "C" fn closefrom(low: c_int) {
    forget_range(low.max(0) as c_uint, c_uint::MAX);
    real::closefrom(low)
}

#[no_mangle]
pub unsafe extern "C" fn fclose(stream: *mut libc::FILE) -> c_int {
    if !stream.is_null() {
        forget(libc::fileno(stream));
    }
    real::fclose(stream)
}

#[no_mangle]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    let new = real::dup(old);
    alias(old, new);
    new
}

/// After a successful dup2/dup3, `new` names what `old` names. Its old tracking is replaced
/// only now: a failed call closes nothing, so the connection must stay guarded. (A watcher
/// that acts on `new` in between finds a different SO_COOKIE and does nothing.)
fn replaced(old: c_int, new: c_int) {
    if old == new {
        return;
    }
    if table::tracked(old).is_some() {
        alias(old, new);
    } else if let Some(slot) = table::tracked(new) {
        slot.untrack();
    }
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new && log::is_log_fd(new) {
        log::forget_fd(new); // before: the watcher must never write into the host's new file
    }
    let r = real::dup2(old, new);
    if r >= 0 {
        replaced(old, new);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old != new && log::is_log_fd(new) {
        log::forget_fd(new);
    }
    let r = real::dup3(old, new, flags);
    if r >= 0 {
        replaced(old, new);
    }
    r
}

/// fcntl is variadic in C; on the x86-64 and AArch64 Linux ABIs its one optional argument
/// arrives in the same register as a third fixed argument, so reading it as an unsigned long
/// is exact for every command (int or pointer).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let r = real::fcntl(fd, cmd, arg);
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        alias(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let r = real::fcntl64(fd, cmd, arg);
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        alias(fd, r);
    }
    r
}

/// The server's own shutdown: after SHUT_WR it no longer tries to write.
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    if let Some(slot) = table::tracked(fd) {
        if how != libc::SHUT_RD {
            slot.write_pending_since
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
    real::shutdown(fd, how)
}
