//! The request line (method and target, `stallguard_lens::RequestLine`) of each HTTP
//! connection, for the operator: a side table indexed by fd, apart from the slots so only
//! HTTP connections ever touch it. One anonymous `MAP_NORESERVE` mapping of `MAX_FDS` cells
//! of 64 bytes, made when the first HTTP connection writes its line (a page is backed only
//! once one of its 64 fds does). Written by the one thread reading the connection, read by
//! the watcher: a torn read shows a mixed line, never anything unsafe (it is display only,
//! and escaped when shown).

use super::MAX_FDS;
use crate::abi::sys;
use stallguard_lens::RequestLine;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

/// One fd's request line: `RequestLine::to_words`.
type Cell = [AtomicU64; 8];

/// Bytes per fd of an HTTP connection (the start line's accounting).
pub const CELL_BYTES: usize = std::mem::size_of::<Cell>();

static LINES: AtomicPtr<Cell> = AtomicPtr::new(std::ptr::null_mut());

/// The cell of `fd`; `create`: map the table if it is not yet.
fn cell(fd: libc::c_int, create: bool) -> Option<&'static Cell> {
    let idx = usize::try_from(fd).ok().filter(|&i| i < MAX_FDS)?;
    let mut base = LINES.load(Acquire);
    if base.is_null() {
        if !create {
            return None;
        }
        base = map()?;
    }
    // SAFETY: `base` maps MAX_FDS cells (never unmapped) and idx < MAX_FDS; a zeroed cell is
    // a valid Cell (atomics).
    Some(unsafe { &*base.add(idx) })
}

#[cold]
fn map() -> Option<*mut Cell> {
    let bytes = MAX_FDS * std::mem::size_of::<Cell>();
    let p = sys::map_anonymous(bytes, false)?.cast::<Cell>();
    match LINES.compare_exchange(std::ptr::null_mut(), p, AcqRel, Acquire) {
        Ok(_) => Some(p),
        Err(winner) => {
            // Another thread mapped it first: keep theirs.
            // SAFETY: `p` is our own mapping of `bytes`, never shared.
            unsafe { sys::unmap(p.cast(), bytes) };
            Some(winner)
        }
    }
}

/// The line stored for `fd` (empty if none).
pub fn load(fd: libc::c_int) -> RequestLine {
    match cell(fd, false) {
        Some(c) => RequestLine::from_words(std::array::from_fn(|i| c[i].load(Relaxed))),
        None => RequestLine::new(),
    }
}

pub fn store(fd: libc::c_int, line: &RequestLine) {
    if let Some(c) = cell(fd, true) {
        for (w, v) in c.iter().zip(line.to_words()) {
            w.store(v, Relaxed);
        }
    }
}

/// The latest request line of the HTTP connection on `fd`, if one was stored.
pub fn request_line(fd: libc::c_int) -> Option<RequestLine> {
    let line = load(fd);
    (!line.is_empty()).then_some(line)
}
