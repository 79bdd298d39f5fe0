//! errno, read and written in one place. A hook must leave errno exactly as the real call set
//! it; anything the shim does around the call goes inside an [`ErrnoGuard`].

use libc::c_int;

/// The calling thread's errno.
#[inline(always)]
pub fn errno() -> c_int {
    // SAFETY: __errno_location returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
#[inline(always)]
pub fn set_errno(e: c_int) {
    // SAFETY: as in `errno`; the pointer is valid for writes for the thread's lifetime.
    unsafe { *libc::__errno_location() = e }
}

/// Whether the last call failed only for now (EAGAIN, EWOULDBLOCK, EINTR).
#[inline(always)]
pub fn errno_is_retry() -> bool {
    let e = errno();
    e == libc::EAGAIN || e == libc::EWOULDBLOCK || e == libc::EINTR
}

/// Saves errno when made and restores it when dropped: whatever the shim does between, the
/// program sees the errno of its own call.
#[must_use = "errno is restored when the guard is dropped"]
pub struct ErrnoGuard(c_int);

impl ErrnoGuard {
    #[inline(always)]
    pub fn new() -> ErrnoGuard {
        ErrnoGuard(errno())
    }
}

impl Drop for ErrnoGuard {
    #[inline(always)]
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_restores_errno() {
        set_errno(libc::EAGAIN);
        {
            let _g = ErrnoGuard::new();
            set_errno(libc::EBADF);
        }
        assert_eq!(errno(), libc::EAGAIN);
        assert!(errno_is_retry());
    }
}
