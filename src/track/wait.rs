//! poll, ppoll, select, pselect, epoll_ctl: a tracked fd in a read set means the server is
//! waiting on the client (apache, civetweb and stunnel read non-blocking, get EAGAIN, then sit
//! here). Only facts are recorded; the real call is untouched.

use crate::table::{self, Flags};
use libc::{c_int, pollfd};

const READ_EVENTS: libc::c_short = libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM;

/// poll is about to wait on `fds` (None: a null array).
#[inline(always)]
pub fn polling(fds: Option<&[pollfd]>) {
    let Some(fds) = fds else { return };
    for p in fds {
        if p.events & READ_EVENTS != 0 {
            if let Some(slot) = table::tracked(p.fd) {
                slot.mark_waiting();
            }
        }
    }
}

/// select is about to wait for `fd` to become readable.
pub fn selecting(fd: c_int) {
    if let Some(slot) = table::tracked(fd) {
        slot.mark_waiting();
    }
}

/// epoll_ctl(op, fd) succeeded; `events` reads its event mask (only for a tracked fd).
pub fn epoll_changed(fd: c_int, op: c_int, events: impl FnOnce() -> u32) {
    if let Some(slot) = table::tracked(fd) {
        if op != libc::EPOLL_CTL_DEL && events() & (libc::EPOLLIN as u32) != 0 {
            slot.set_flag(Flags::EPOLL_IN);
            slot.mark_waiting();
        } else {
            // Read interest removed (the JDK queues the connection for a worker with the
            // request unread): the server no longer waits on the client.
            slot.clear_flag(Flags::EPOLL_IN);
            slot.end_wait();
        }
    }
}
