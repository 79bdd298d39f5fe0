//! The exported symbols: one per row of the table in `interpose.rs`, generated here, and
//! the cooperation API (`api`). Hooks only record facts into the table (through `track`) and
//! always make the real call exactly once; they take no lock, allocate nothing, never log,
//! and leave errno as the real call set it. On an fd that is not a tracked connection an
//! `fd(..)` hook costs one bounds check, one load and a branch before a tail call to libc.

mod api;

use crate::abi::{args, real};
use crate::table::{self, Slot};
use crate::track;
use libc::{
    c_int, c_uint, c_ulong, c_void, epoll_event, fd_set, iovec, msghdr, nfds_t, off_t, pollfd,
};
use libc::{sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec, timeval, FILE};

/// One exported hook per row.
macro_rules! exports {
    ($( $family:ident fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty
        = $shape:ident ( $($sarg:ident),* ) { $($body:tt)* } ; )*) => {
        $( export!($shape ( $($sarg),* ) $name ( $($arg : $ty),* ) -> $ret { $($body)* }); )*
    };
}

macro_rules! export {
    // Untracked fd: a tail call to libc. Tracked: the body, out of line (so the untracked
    // path needs no stack frame); the slot goes last so the arguments stay in the registers
    // they arrived in.
    (fd ($fd:ident, $slot:ident) $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty { $($body:tt)* }) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            match table::tracked($fd) {
                // SAFETY: the program's own call, with its own arguments, made once.
                None => unsafe { real::$name($($arg),*) },
                // SAFETY: as above; the tracked path makes the same call once.
                Some(slot) => unsafe { $name::tracked($($arg,)* slot) },
            }
        }

        #[allow(non_snake_case)]
        mod $name {
            use super::*;

            /// The hook on a tracked connection.
            ///
            /// # Safety
            /// The C function's contract: the arguments are valid for it.
            #[inline(never)]
            #[allow(clippy::too_many_arguments)] // the C signature's, plus the slot
            pub(super) unsafe fn tracked($($arg: $ty,)* $slot: &'static Slot) -> $ret {
                // SAFETY: the arguments are the program's own, valid for the real call the
                // body makes once; `args` reads them under the same contract.
                unsafe { $($body)* }
            }
        }
    };
    // The body is the whole hook.
    (call () $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty { $($body:tt)* }) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the arguments are the program's own, valid for the real call the body
            // makes once; `args` reads them under the same contract.
            unsafe { $($body)* }
        }
    };
}

interposed!(exports);
