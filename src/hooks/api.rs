//! The cooperation API for programs that can be rebuilt (include/stallguard.h). The header
//! declares these weak, so a program built against it runs unchanged without the shim (the
//! symbols are then null and the header's wrappers return -1 / ENOSYS). Each call only sets
//! facts in the table, like a hook: no lock, no allocation, no log.

use crate::abi::errno::set_errno;
use crate::runtime::clock;
use crate::table::{self, stats, Flags};
use libc::{c_int, c_uint};

fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

/// Never judge this connection again (a long poll, a stream, a trusted peer). 0, or -1 with
/// ENOENT when `fd` is not a guarded connection.
#[no_mangle]
pub extern "C" fn stallguard_exempt(fd: c_int) -> c_int {
    match table::tracked(fd) {
        Some(slot) => {
            slot.set_flag(Flags::EXEMPT);
            0
        }
        None => fail(libc::ENOENT),
    }
}

/// This connection must be done within `ms` from now, whoever has the turn; 0 removes the
/// deadline. 0, or -1 with ENOENT when `fd` is not a guarded connection.
#[no_mangle]
pub extern "C" fn stallguard_set_deadline(fd: c_int, ms: c_uint) -> c_int {
    match table::tracked(fd) {
        Some(slot) => {
            // Exact time, not the coarse clock: the program asked for milliseconds.
            let now = clock::monotonic_ms();
            let at = if ms == 0 { 0 } else { now + u64::from(ms) };
            slot.set_own_deadline(at, now);
            table::call_attention(fd); // any deadline, however near: the watcher looks now
            0
        }
        None => fail(libc::ENOENT),
    }
}

/// The C struct of include/stallguard.h (append-only: `size` tells how much the caller has).
#[repr(C)]
pub struct Counters {
    pub tracked: u64,
    pub waiting: u64,
    pub reaped_total: u64,
    pub rejected_over_cap: u64,
    pub reaped: [u64; stallguard_shm::REASONS],
}

/// Copies this process's counters into `out` (at most `size` bytes). 0, or -1 with EINVAL.
///
/// # Safety
/// `out` must point at `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn stallguard_counters(out: *mut Counters, size: libc::size_t) -> c_int {
    if out.is_null() || size < std::mem::size_of::<[u64; 4]>() {
        return fail(libc::EINVAL);
    }
    let c = stats::counters();
    let full = Counters {
        tracked: c.tracked,
        waiting: c.waiting,
        reaped_total: c.reaped.iter().sum(),
        rejected_over_cap: c.rejected_over_cap,
        reaped: c.reaped,
    };
    let n = size.min(std::mem::size_of::<Counters>());
    // SAFETY: `out` is valid for `size` >= n bytes (the caller's contract), `full` for
    // size_of::<Counters>() >= n; they do not overlap (`full` is a local).
    unsafe {
        std::ptr::copy_nonoverlapping((&full as *const Counters).cast::<u8>(), out.cast::<u8>(), n)
    };
    0
}
