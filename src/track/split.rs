//! unshare(CLONE_FILES) and close_range(.., CLOSE_RANGE_UNSHARE): the calling thread may now
//! have a private copy of the fd table (the kernel copies only a table other threads share).
//! From then on every newly tracked connection records its thread (`table::owners`), so the
//! watcher can reach that thread's table; until then nothing is recorded and the hooks pay
//! nothing. (clone/clone3 without CLONE_FILES are not interposed: see the README.)

use crate::abi::errno::ErrnoGuard;
use crate::table::owners;
use libc::c_int;

/// unshare(flags) returned `r`. Returns `r`.
pub fn unshared(flags: c_int, r: c_int) -> c_int {
    if r == 0 && flags & libc::CLONE_FILES != 0 {
        let _errno = ErrnoGuard::new();
        owners::table_split();
    }
    r
}

/// close_range(.., flags) returned `r`. Returns `r`.
pub fn closed_range(flags: c_int, r: c_int) -> c_int {
    if r == 0 && flags & (libc::CLOSE_RANGE_UNSHARE as c_int) != 0 {
        let _errno = ErrnoGuard::new();
        owners::table_split();
    }
    r
}
