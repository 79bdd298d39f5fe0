//! The real libc functions behind every hook, one entry per row of the table in
//! `interpose.rs` (`real::read(..)` calls the libc `read`; for a row with a `sys(..)` column,
//! while `route` allows it, the same system call glibc's wrapper would make, made here).
//!
//! Each is resolved once, eagerly, by the library constructor with `dlsym(RTLD_NEXT)`. A
//! pointer that resolves back into this library is refused (calling it would recurse forever).
//! If a hook runs before the constructor (another library's constructor doing I/O), the entry
//! is resolved on first use instead.
//!
//! OpenSSL's rows (family `Tls`) are called through the real function for their caller
//! (`NAME::caller`, `NAME::at`: see `caller`); the global entry below is that lookup's
//! fallback. It is resolved the same way as libc's, and also in a libssl the program
//! loaded privately: Python's `_ssl` module is `dlopen`ed with RTLD_LOCAL, so its libssl is
//! outside RTLD_NEXT's scope, yet its calls to `SSL_read` bind to this library's export (the
//! global scope comes first; an unversioned definition satisfies `SSL_read@OPENSSL_3.0.0`).
//! When libssl is not loaded at start the entry stays 0 and is resolved at the first call. If
//! it still cannot be found, the hook fails the way OpenSSL's functions do: 0 (for `SSL_read`
//! and `SSL_write` a failure, `<= 0`; for the `_ex` forms the only failure value).

use libc::{
    c_int, c_uint, c_ulong, c_void, epoll_event, fd_set, iovec, msghdr, nfds_t, off_t, pollfd,
};
use libc::{pthread_t, sigset_t, size_t, sockaddr, socklen_t, ssize_t};
use libc::{timespec, timeval, FILE};
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

use super::objects::is_ours;

/// Resolves `name` (NUL-terminated) with RTLD_NEXT, or else (`library`: a file name prefix
/// such as `libssl.so`) in that library if the program loaded it privately, into `slot`; 0 if
/// missing or if it would call this library itself.
pub(super) fn resolve(name: &'static [u8], slot: &AtomicUsize, library: Option<&[u8]>) -> usize {
    // SAFETY: `name` is a NUL-terminated static string; dlsym takes no other input.
    let mut sym = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    if sym.is_null() {
        if let Some(lib) = library {
            sym = super::loaded::symbol_in(lib, name, is_ours);
        }
    }
    let addr = if sym.is_null() || is_ours(sym) {
        0
    } else {
        sym as usize
    };
    slot.store(addr, Relaxed);
    addr
}

/// The library a family's functions live in, when it may be loaded privately.
macro_rules! library_of {
    (Tls) => {
        Some(b"libssl.so".as_slice())
    };
    ($other:ident) => {
        None::<&[u8]>
    };
}

/// What a row's real function returns when it cannot be found.
macro_rules! failure_of {
    (Tls, $ret:ty) => {
        0 // OpenSSL's failure value for every row of the family
    };
    ($other:ident, $ret:ty) => {
        <$ret as Unavailable>::unavailable()
    };
}

/// For a row of family `Tls`, a module of the row's name: the real function for one caller
/// (`caller`) and a call through an address it gave (`at`).
macro_rules! by_caller {
    (Tls $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty) => {
        #[allow(non_snake_case)]
        pub mod $name {
            use super::*;

            static CALLERS: super::super::caller::Callers = super::super::caller::Callers::new();

            /// The address of the real function for the caller returning to `from` (0: none).
            #[inline(always)]
            pub fn caller(from: usize) -> usize {
                const NAME: &[u8] = concat!(stringify!($name), "\0").as_bytes();
                CALLERS.real(from, NAME, || match TABLE.$name.load(Relaxed) {
                    0 => resolve(NAME, &TABLE.$name, library_of!(Tls)),
                    p => p,
                })
            }

            /// Calls the real function at `p` (from [`caller`]); 0 with ENOSYS when there is none.
            ///
            /// # Safety
            /// The C function's own contract: the arguments must be valid for it.
            #[inline(always)]
            pub unsafe fn at(p: usize, $($arg: $ty),*) -> $ret {
                if p == 0 {
                    crate::abi::errno::set_errno(libc::ENOSYS);
                    return failure_of!(Tls, $ret);
                }
                // SAFETY: `p` is the address dlsym gave for this very symbol, whose C type is
                // the signature of this row; the caller upholds its contract.
                unsafe {
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = std::mem::transmute(p);
                    f($($arg),*)
                }
            }
        }
    };
    ($other:ident $($rest:tt)*) => {};
}

/// For a row with a `sys(..)` column: in a process where `route` allows it (and the row's
/// condition holds), the system call, made here and returned from the entry; else nothing.
macro_rules! direct {
    ($nr:ident : $($sa:expr),* $(; if $cond:expr)?) => {
        if let Some(nr) = super::syscall::nr::$nr {
            if super::route::direct() $(&& $cond)? {
                // SAFETY: the program's own arguments, valid for the call its C function
                // would make with them: the very system call glibc's wrapper makes.
                return super::syscall::result(unsafe { super::syscall::raw_syscall!(nr; $($sa),*) });
            }
        }
    };
}

macro_rules! real_entries {
    ($( $family:ident fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty
        = $shape:ident ( $($sarg:ident),* ) $( sys ( $($sys:tt)* ) )? { $($body:tt)* } ; )*) => {
        #[allow(non_snake_case)]
        struct Table { $( $name: AtomicUsize, )* }

        static TABLE: Table = Table { $( $name: AtomicUsize::new(0), )* };

        /// Resolves every real function; called once by the constructor.
        pub fn resolve_all() {
            $( resolve(concat!(stringify!($name), "\0").as_bytes(), &TABLE.$name, library_of!($family)); )*
        }

        /// Whether every row with a `sys(..)` column resolved into libc, the object that
        /// defines `__errno_location` (`route::next_is_libc`): another interposer's function
        /// there (a proxy's `connect`, a user-space stack's `read`) is what the program's
        /// call must reach, and the system call would skip it. After `resolve_all`.
        pub fn sys_rows_in_libc() -> bool {
            let base = |address: usize| match super::objects::object_base(address as *const c_void) {
                0 => None,
                b => Some(b),
            };
            let libc_base = base(libc::__errno_location as *const () as usize);
            let rows = [ $( $( { let _ = stringify!($($sys)*); TABLE.$name.load(Relaxed) }, )? )* ];
            let rows = rows.map(|address| (address, base(address)));
            super::route::next_is_libc(libc_base, &rows)
        }

        /// Names of the functions that could not be resolved (for the debug start line);
        /// those of a library the program may load later (libssl) are not missing.
        pub fn missing() -> Vec<&'static str> {
            let mut v = Vec::new();
            $( if TABLE.$name.load(Relaxed) == 0 && library_of!($family).is_none() { v.push(stringify!($name)); } )*
            v
        }

        /// The address each row's real function was resolved to (0: not yet): which copy of
        /// a library serves the calls (`openssl` asks it for its other functions).
        pub mod address {
            use super::*;
            $(
                #[allow(non_snake_case, dead_code)]
                #[inline(always)]
                pub fn $name() -> usize {
                    TABLE.$name.load(Relaxed)
                }
            )*
        }

        $( by_caller!($family $name ( $($arg : $ty),* ) -> $ret); )*

        $(
            /// The real libc function of this name (a `Tls` row's hook calls the real function
            /// for its caller instead: `NAME::at`).
            ///
            /// # Safety
            /// The C function's own contract: the arguments must be valid for it.
            #[inline(always)]
            #[allow(non_snake_case, dead_code)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                $( direct!($($sys)*); )?
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
                #[allow(non_snake_case, dead_code)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let p = resolve(concat!(stringify!($name), "\0").as_bytes(), &TABLE.$name, library_of!($family));
                    if p == 0 {
                        crate::abi::errno::set_errno(libc::ENOSYS);
                        return failure_of!($family, $ret);
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
