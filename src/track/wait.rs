//! poll, ppoll, select, pselect, epoll_ctl: a tracked fd in a read set means the server is
//! waiting on the client (apache, civetweb and stunnel read non-blocking, get EAGAIN, then sit
//! here). Only facts are recorded; the real call is untouched.
//!
//! Removing read interest ends the wait: `EPOLL_CTL_DEL` or a mask without EPOLLIN at once;
//! for poll and select, the same thread's next call without the fd (`table::polls`: each
//! call bumps its thread's generation once and stamps the fds it keeps).

use crate::table::{self, polls, Flags};
use libc::{c_int, pollfd};

const READ_EVENTS: libc::c_short = libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM;

/// poll is about to wait on `fds` (None: a null array).
#[inline(always)]
pub fn polling(fds: Option<&[pollfd]>) {
    let call = polls::begin_call();
    if let Some(fds) = fds {
        for p in fds {
            if p.events & READ_EVENTS != 0 {
                polled(p.fd, call);
            }
        }
    }
    polls::end_call(call);
}

/// select is about to wait; `each_readable` calls its argument with every fd of the read set.
#[inline(always)]
pub fn selecting(each_readable: impl FnOnce(&mut dyn FnMut(c_int))) {
    let call = polls::begin_call();
    each_readable(&mut |fd| polled(fd, call));
    polls::end_call(call);
}

/// `fd` is in the read set of `call`.
#[inline(always)]
fn polled(fd: c_int, call: polls::Call) {
    if let Some(slot) = table::tracked(fd) {
        let ended = polls::mark(fd, call, !slot.is_waiting());
        slot.mark_polled(ended);
    }
}

/// epoll_ctl(op, fd) succeeded; `events` reads its event mask (only for a tracked fd).
pub fn epoll_changed(fd: c_int, op: c_int, events: impl FnOnce() -> u32) {
    if let Some(slot) = table::tracked(fd) {
        if op != libc::EPOLL_CTL_DEL && events() & (libc::EPOLLIN as u32) != 0 {
            slot.set_flag(Flags::EPOLL_IN);
            slot.mark_polled(false);
        } else {
            // Read interest removed (the JDK queues the connection for a worker with the
            // request unread): the server no longer waits on the client.
            slot.clear_flag(Flags::EPOLL_IN);
            slot.end_wait();
        }
    }
}
