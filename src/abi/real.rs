//! The real libc functions behind every hook, one entry per row of the table in
//! `interpose.rs` (`real::read(..)` calls the libc `read`).
//!
//! Each is resolved once, eagerly, by the library constructor with `dlsym(RTLD_NEXT)`. A
//! pointer that resolves back into this library is refused (calling it would recurse forever).
//! If a hook runs before the constructor (another library's constructor doing I/O), the entry
//! is resolved on first use instead.

use libc::{
    c_int, c_uint, c_ulong, c_void, epoll_event, fd_set, iovec, msghdr, nfds_t, off_t, pollfd,
};
use libc::{sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec, timeval, FILE};
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

/// Base address of the object that contains `addr` (0 if unknown).
fn object_base(addr: *const c_void) -> usize {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads `addr` as an address and fills `info`.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 {
        return 0;
    }
    info.dli_fbase as usize
}

/// Resolves `name` (NUL-terminated) with RTLD_NEXT into `slot`; 0 if missing or if it would
/// call this library itself.
fn resolve(name: &'static [u8], slot: &AtomicUsize) -> usize {
    // SAFETY: `name` is a NUL-terminated static string; dlsym takes no other input.
    let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    let mut addr = sym as usize;
    if addr != 0 && object_base(sym) == object_base(object_base as *const c_void) {
        addr = 0; // would call ourselves
    }
    slot.store(addr, Relaxed);
    addr
}

macro_rules! real_entries {
    ($( $family:ident fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty
        = $shape:ident ( $($sarg:ident),* ) { $($body:tt)* } ; )*) => {
        #[allow(non_snake_case)]
        struct Table { $( $name: AtomicUsize, )* }

        static TABLE: Table = Table { $( $name: AtomicUsize::new(0), )* };

        /// Resolves every real function; called once by the constructor.
        pub fn resolve_all() {
            $( resolve(concat!(stringify!($name), "\0").as_bytes(), &TABLE.$name); )*
        }

        /// Names of the functions that could not be resolved (for the debug start line).
        pub fn missing() -> Vec<&'static str> {
            let mut v = Vec::new();
            $( if TABLE.$name.load(Relaxed) == 0 { v.push(stringify!($name)); } )*
            v
        }

        $(
            /// The real libc function of this name.
            ///
            /// # Safety
            /// The C function's own contract: the arguments must be valid for it.
            #[inline(always)]
            #[allow(non_snake_case)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let p = TABLE.$name.load(Relaxed);
                if p == 0 {
                    // SAFETY: the caller upholds the C function's contract.
                    return unsafe { first_use::$name($($arg),*) };
                }
                // The hot path: one load, one test, one indirect jump (a tail call).
                // SAFETY: `p` is the address dlsym gave for this very symbol, whose C type
                // is the signature of this row; the caller upholds its contract.
                unsafe {
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = std::mem::transmute(p);
                    f($($arg),*)
                }
            }
        )*

        /// Out of line, so the hot path above needs no stack frame: resolves on first use
        /// (a hook running before the constructor) and calls.
        mod first_use {
            use super::*;
            $(
                /// # Safety
                /// As the entry of the same name.
                #[cold]
                #[inline(never)]
                #[allow(non_snake_case)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let p = resolve(concat!(stringify!($name), "\0").as_bytes(), &TABLE.$name);
                    if p == 0 {
                        crate::abi::errno::set_errno(libc::ENOSYS);
                        return <$ret as Unavailable>::unavailable();
                    }
                    // SAFETY: as in the entry of the same name.
                    unsafe {
                        let f: unsafe extern "C" fn($($ty),*) -> $ret = std::mem::transmute(p);
                        f($($arg),*)
                    }
                }
            )*
        }
    };
}

interposed!(real_entries);
