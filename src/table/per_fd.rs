//! A side table of one cell per fd, apart from the slots, for facts only some connections
//! have (the request line of HTTP connections, the poll mark of poll/select servers): one
//! anonymous `MAP_NORESERVE` mapping of `MAX_FDS` cells, made when the first cell is written,
//! never unmapped. The kernel backs a page only once one of its cells is written, so a program
//! that never needs the table pays one pointer load per lookup and nothing else.

use super::MAX_FDS;
use crate::abi::sys;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

/// A cell type whose all-zero bytes are a valid value (fresh anonymous memory is zero).
///
/// # Safety
/// Implement only for types made of atomics (or plain integers) with no invariant, for which
/// zeroed memory is a valid, initialised value.
pub unsafe trait ZeroedCell: Sync + 'static {}
// SAFETY: an AtomicU64 is a u64: every bit pattern, zero included, is valid.
unsafe impl ZeroedCell for AtomicU64 {}
// SAFETY: an array of valid-when-zero cells is valid when zero.
unsafe impl<const N: usize> ZeroedCell for [AtomicU64; N] {}

pub struct PerFd<T: ZeroedCell> {
    base: AtomicPtr<T>,
}

impl<T: ZeroedCell> PerFd<T> {
    pub const fn new() -> PerFd<T> {
        PerFd {
            base: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Bytes per fd (the start line's accounting).
    pub const CELL_BYTES: usize = std::mem::size_of::<T>();

    /// The cell of `fd`, if the table exists (reading never maps it).
    #[inline(always)]
    pub fn get(&'static self, fd: libc::c_int) -> Option<&'static T> {
        let idx = index(fd)?;
        let base = self.base.load(Acquire);
        // SAFETY: see `at`.
        (!base.is_null()).then(|| unsafe { at(base, idx) })
    }

    /// The cell of `fd`, mapping the table first if it does not exist yet (None: out of range
    /// or no memory).
    #[inline]
    pub fn get_or_map(&'static self, fd: libc::c_int) -> Option<&'static T> {
        let idx = index(fd)?;
        let mut base = self.base.load(Acquire);
        if base.is_null() {
            base = self.map()?;
        }
        // SAFETY: see `at`.
        Some(unsafe { at(base, idx) })
    }

    #[cold]
    fn map(&self) -> Option<*mut T> {
        let bytes = MAX_FDS * std::mem::size_of::<T>();
        let p = sys::map_anonymous(bytes, false)?.cast::<T>();
        match self
            .base
            .compare_exchange(std::ptr::null_mut(), p, AcqRel, Acquire)
        {
            Ok(_) => Some(p),
            Err(winner) => {
                // Another thread mapped it first: keep theirs.
                // SAFETY: `p` is our own mapping of `bytes`, never published.
                unsafe { sys::unmap(p.cast(), bytes) };
                Some(winner)
            }
        }
    }
}

fn index(fd: libc::c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_FDS)
}

/// # Safety
/// `base` is a published mapping of `MAX_FDS` cells and `idx < MAX_FDS`.
#[inline(always)]
unsafe fn at<T: ZeroedCell>(base: *mut T, idx: usize) -> &'static T {
    // SAFETY: the mapping is never unmapped and holds MAX_FDS cells, idx is in range, and a
    // zeroed cell is a valid T (`ZeroedCell`); cells are atomics, shared by reference.
    unsafe { &*base.add(idx) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_never_maps_and_writing_maps_once() {
        static TABLE: PerFd<AtomicU64> = PerFd::new();
        assert!(TABLE.get(3).is_none(), "no table yet: nothing to read");
        let cell = TABLE.get_or_map(3).unwrap();
        assert_eq!(cell.load(Relaxed), 0, "a fresh cell is zero");
        cell.store(7, Relaxed);
        assert_eq!(TABLE.get(3).unwrap().load(Relaxed), 7);
        assert_eq!(TABLE.get(4).unwrap().load(Relaxed), 0);
        assert!(TABLE.get(-1).is_none() && TABLE.get_or_map(MAX_FDS as i32).is_none());
    }
}
