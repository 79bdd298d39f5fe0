//! The interposed libc functions, one file per family. Hooks only record facts into the
//! table and always make the real call exactly once; they take no lock, allocate nothing,
//! never log, and leave errno as the real call set it. On an fd that is not a tracked
//! connection they cost one bounds check, one load and a branch before the real call.

mod accept;
mod close;
mod connect;
mod poll;
mod read;
mod write;

use libc::c_int;

#[inline(always)]
fn errno() -> c_int {
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
fn set_errno(e: c_int) {
    unsafe { *libc::__errno_location() = e }
}
