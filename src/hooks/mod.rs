//! The exported symbols: one per row of the table in `interpose.rs`, generated here, and
//! the cooperation API (`api`). Hooks only record facts into the table (through `track`) and
//! always make the real call exactly once; they take no lock, allocate nothing, never log,
//! and leave errno as the real call set it. On an fd that is not a tracked connection an
//! `fd(..)` hook costs one bounds check, one load and a branch before a tail call to libc, or,
//! for a cancellable call while the calling thread is the program's only one (`abi::route`:
//! three loads, a subtraction and a branch) the system call itself, still without a stack
//! frame (errno is set out of line).
//! A `tls(..)` hook (OpenSSL's rows) is exported as a naked two-instruction trampoline that
//! adds the caller's return address as one more argument, so the hook calls the real function
//! of the caller's own OpenSSL (`abi::caller`; kept per call site: a miss takes the loader's
//! lock once per call site, then a few atomic loads).

mod api;

use crate::abi::{args, real, route};
use crate::table::{self, Slot};
use crate::track;
use libc::{
    c_int, c_uint, c_ulong, c_void, epoll_event, fd_set, iovec, msghdr, nfds_t, off_t, pollfd,
};
use libc::{pthread_t, sigset_t, size_t, sockaddr, socklen_t, ssize_t};
use libc::{timespec, timeval, FILE};

/// One exported hook per row.
macro_rules! exports {
    ($( $family:ident fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty
        = $shape:ident ( $($sarg:ident),* ) $( sys ( $($sys:tt)* ) )? { $($body:tt)* } ; )*) => {
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
    // A trampoline that adds the caller's return address as one more argument (the C
    // arguments stay in their registers), then jumps to the hook, which binds `$via` to the
    // real function for that caller and runs the body.
    (tls ($via:ident) $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty { $($body:tt)* }) => {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        // SAFETY: no prologue is needed: the body only copies the return address into the
        // next argument register (the row's arguments are all integers or pointers, in their
        // registers) and jumps, with the caller's stack and return address untouched, to an
        // `extern "C"` function taking exactly those arguments plus that one.
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            trampoline!($name::hook; $($arg)*)
        }

        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the program's own call, with its own arguments, made once; no return
            // address known: the global resolution answers.
            unsafe { $name::hook($($arg,)* 0) }
        }

        #[allow(non_snake_case)]
        mod $name {
            use super::*;

            /// The hook, with the caller's return address `from`.
            ///
            /// # Safety
            /// The C function's contract: the arguments are valid for it.
            pub(super) unsafe extern "C" fn hook($($arg: $ty,)* from: usize) -> $ret {
                let $via = real::$name::caller(from);
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

/// The register of the argument after `$arg`s (integer or pointer arguments only, as every
/// `Tls` row has), and the trampoline's body: that register gets the return address, then a
/// jump (not a call: the stack and the return address stay the caller's) to `$hook`.
#[cfg(target_arch = "x86_64")]
macro_rules! trampoline {
    ($hook:path; $a:ident $b:ident $c:ident) => {
        core::arch::naked_asm!("mov rcx, [rsp]", "jmp {hook}", hook = sym $hook)
    };
    ($hook:path; $a:ident $b:ident $c:ident $d:ident) => {
        core::arch::naked_asm!("mov r8, [rsp]", "jmp {hook}", hook = sym $hook)
    };
}

#[cfg(target_arch = "aarch64")]
macro_rules! trampoline {
    ($hook:path; $a:ident $b:ident $c:ident) => {
        core::arch::naked_asm!("mov x3, x30", "b {hook}", hook = sym $hook)
    };
    ($hook:path; $a:ident $b:ident $c:ident $d:ident) => {
        core::arch::naked_asm!("mov x4, x30", "b {hook}", hook = sym $hook)
    };
}

interposed!(exports);
