//! The real libc functions behind every hook, in one table.
//!
//! Each is resolved once, eagerly, by the library constructor with `dlsym(RTLD_NEXT)`. A
//! pointer that resolves back into this library is refused (calling it would recurse forever).
//! If a hook runs before the constructor (another library's constructor doing I/O), the entry
//! is resolved on first use instead.

use libc::{
    c_int, c_uint, c_ulong, c_void, epoll_event, fd_set, iovec, msghdr, nfds_t, off_t, pollfd,
};
use libc::{sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec, timeval};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// What a real function returns when it cannot be found: -1 with errno ENOSYS.
pub trait Unavailable {
    fn unavailable() -> Self;
}
impl Unavailable for c_int {
    fn unavailable() -> Self {
        -1
    }
}
impl Unavailable for ssize_t {
    fn unavailable() -> Self {
        -1
    }
}
impl Unavailable for () {
    fn unavailable() -> Self {}
}

/// Base address of this library, to refuse symbols that resolve to our own hooks.
fn own_base() -> usize {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = own_base as *const c_void;
    if unsafe { libc::dladdr(here, &mut info) } == 0 {
        return 0;
    }
    info.dli_fbase as usize
}

unsafe fn resolve(name: &'static [u8], slot: &AtomicUsize) -> usize {
    let sym = libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast());
    let mut addr = sym as usize;
    if addr != 0 {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(sym, &mut info) != 0 && info.dli_fbase as usize == own_base() {
            addr = 0; // would call ourselves
        }
    }
    slot.store(addr, Relaxed);
    addr
}

macro_rules! real_functions {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ; )*) => {
        #[allow(non_snake_case)]
        struct Table { $( $name: AtomicUsize, )* }

        static TABLE: Table = Table { $( $name: AtomicUsize::new(0), )* };

        /// Resolves every real function; called once by the constructor.
        pub fn resolve_all() {
            $( unsafe { resolve(concat!(stringify!($name), "\0").as_bytes(), &TABLE.$name); } )*
        }

        /// Names of the functions that could not be resolved (for the debug start line).
        pub fn missing() -> Vec<&'static str> {
            let mut v = Vec::new();
            $( if TABLE.$name.load(Relaxed) == 0 { v.push(stringify!($name)); } )*
            v
        }

        $(
            #[inline(always)]
            #[allow(non_snake_case, clippy::missing_safety_doc)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let p = TABLE.$name.load(Relaxed);
                if p == 0 {
                    return first_use::$name($($arg),*);
                }
                // The hot path: one load, one test, one indirect jump (a tail call).
                let f: unsafe extern "C" fn($($ty),*) -> $ret = std::mem::transmute(p);
                f($($arg),*)
            }
        )*

        /// Out of line, so the hot path above needs no stack frame: resolves on first use
        /// (a hook running before the constructor) and calls.
        mod first_use {
            use super::*;
            $(
                #[cold]
                #[inline(never)]
                #[allow(non_snake_case)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let p = resolve(concat!(stringify!($name), "\0").as_bytes(), &TABLE.$name);
                    if p == 0 {
                        *libc::__errno_location() = libc::ENOSYS;
                        return <$ret as Unavailable>::unavailable();
                    }
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = std::mem::transmute(p);
                    f($($arg),*)
                }
            )*
        }
    };
}

real_functions! {
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;

    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;

    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t;
    fn sendfile64(out: c_int, inp: c_int, off: *mut i64, n: size_t) -> ssize_t;

    fn close(fd: c_int) -> c_int;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fn closefrom(low: c_int) -> ();
    fn fclose(f: *mut libc::FILE) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fn shutdown(fd: c_int, how: c_int) -> c_int;

    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int;
    fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    fn ppoll(fds: *mut pollfd, n: nfds_t, ts: *const timespec, mask: *const sigset_t) -> c_int;
    fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, tv: *mut timeval) -> c_int;
    fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, ts: *const timespec, mask: *const sigset_t) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int;
}
