//! poll, ppoll, select, pselect, epoll_ctl: a tracked fd in a read set means the server is
//! waiting on the client (apache, civetweb and stunnel read non-blocking, get EAGAIN, then sit
//! here). Only facts are recorded; the real call is untouched.

use crate::{real, table};
use libc::{c_int, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

const READ_EVENTS: libc::c_short = libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM;

#[inline(always)]
unsafe fn note_pollfds(fds: *const pollfd, n: nfds_t) {
    if fds.is_null() {
        return;
    }
    for p in std::slice::from_raw_parts(fds, n as usize) {
        if p.events & READ_EVENTS != 0 {
            if let Some(slot) = table::tracked(p.fd) {
                slot.mark_waiting();
            }
        }
    }
}

unsafe fn note_fd_set(n: c_int, set: *const fd_set) {
    if set.is_null() {
        return;
    }
    for fd in 0..n.clamp(0, libc::FD_SETSIZE as c_int) {
        if libc::FD_ISSET(fd, set) {
            if let Some(slot) = table::tracked(fd) {
                slot.mark_waiting();
            }
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    note_pollfds(fds, n);
    real::poll(fds, n, timeout)
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    note_pollfds(fds, n);
    real::__poll_chk(fds, n, timeout, fdslen)
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    note_pollfds(fds, n);
    real::ppoll(fds, n, ts, mask)
}

#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tv: *mut timeval,
) -> c_int {
    note_fd_set(n, r);
    real::select(n, r, w, e, tv)
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    note_fd_set(n, r);
    real::pselect(n, r, w, e, ts, mask)
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut epoll_event,
) -> c_int {
    let r = real::epoll_ctl(epfd, op, fd, ev);
    if r == 0 {
        if let Some(slot) = table::tracked(fd) {
            let events = if ev.is_null() {
                0
            } else {
                std::ptr::read_unaligned(std::ptr::addr_of!((*ev).events))
            };
            if op != libc::EPOLL_CTL_DEL && events & (libc::EPOLLIN as u32) != 0 {
                slot.set_flag(table::FLAG_EPOLL_IN);
                slot.mark_waiting();
            } else {
                // Read interest removed (the JDK queues the connection for a worker with the
                // request unread): the server no longer waits on the client.
                slot.clear_flag(table::FLAG_EPOLL_IN);
                slot.end_wait();
            }
        }
    }
    r
}
