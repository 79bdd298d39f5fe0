//! The request line (method and target, `stallguard_lens::RequestLine`) of each HTTP
//! connection, for the operator: a side table indexed by fd, apart from the slots so only
//! HTTP connections ever touch it (`per_fd`: 64 bytes per fd, mapped when the first HTTP
//! connection writes its line). Written by the one thread reading the connection, read by
//! the watcher: a torn read shows a mixed line, never anything unsafe (it is display only,
//! and escaped when shown).

use super::per_fd::PerFd;
use stallguard_lens::RequestLine;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// One fd's request line: `RequestLine::to_words`.
static LINES: PerFd<[AtomicU64; 8]> = PerFd::new();

/// Bytes per fd of an HTTP connection (the start line's accounting).
pub const CELL_BYTES: usize = PerFd::<[AtomicU64; 8]>::CELL_BYTES;

/// The line stored for `fd` (empty if none).
pub fn load(fd: libc::c_int) -> RequestLine {
    match LINES.get(fd) {
        Some(c) => RequestLine::from_words(std::array::from_fn(|i| c[i].load(Relaxed))),
        None => RequestLine::new(),
    }
}

pub fn store(fd: libc::c_int, line: &RequestLine) {
    if let Some(c) = LINES.get_or_map(fd) {
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
