//! The HTTP/1 lens on a tracked connection (issue 11): the bytes the server reads are fed to
//! a per-connection `stallguard_lens::Lens` kept in the slot's third cache line, and the
//! server's writes tell it the answer started. The watcher turns the lens's stage into whose
//! turn it is (`stallguard_policy::Framing`).
//!
//! Only connections the accept path armed (`STALLGUARD_LENS=auto` for their port) are fed,
//! and only until the lens turns off (not HTTP/1, HTTP/2 preface, framing it does not trust)
//! or the connection becomes a tunnel: `FLAG_LENS` is cleared then, and the read and write
//! paths cost one flag test again. The method and target of the latest request line live in
//! a separate, lazily mapped side table indexed by fd, written only for HTTP connections.
//!
//! Like the rest of the hooks' work: no lock, no allocation, async-signal-safe. The slot's
//! words are written with relaxed stores by the one thread doing I/O on the connection; the
//! watcher may read a mix of old and new words, which `Lens::from_words` accepts (the stage
//! itself comes from one word).

use crate::clock::now_ms;
use crate::table::{Slot, FLAG_LENS, MAX_FDS};
use libc::{c_int, iovec, msghdr};
use stallguard_lens::{Lens, RequestLine, Stage};
use stallguard_policy::Framing;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

/// One fd's request line: `stallguard_lens::RequestLine::to_words`.
type LineCell = [AtomicU64; 8];

/// The side table of request lines, `MAX_FDS` cells, mapped at the first HTTP connection.
static LINES: AtomicPtr<LineCell> = AtomicPtr::new(std::ptr::null_mut());

pub fn load(slot: &Slot) -> Lens {
    Lens::from_words(std::array::from_fn(|i| slot.lens[i].load(Relaxed)))
}

pub fn store(slot: &Slot, lens: &Lens) {
    for (cell, w) in slot.lens.iter().zip(lens.to_words()) {
        cell.store(w, Relaxed);
    }
}

/// Accept path: follow this connection's requests if its port's policy says so.
pub fn arm(slot: &Slot, local_port: u16) {
    if crate::config::policy()
        .timers_for_port(local_port)
        .is_some_and(|t| t.lens)
    {
        store(slot, &Lens::new());
        slot.set_flag(FLAG_LENS);
    }
}

/// What the verdict needs, when the lens knows the framing.
pub fn framing(slot: &Slot) -> Option<Framing> {
    let lens = load(slot);
    let stage = lens.stage();
    stage.is_framed().then(|| Framing {
        stage,
        since: slot.stage_since.load(Relaxed),
        bytes: slot.stage_bytes.load(Relaxed),
        requests: lens.requests(),
    })
}

/// Where a read-family call put the bytes it returned.
#[derive(Clone, Copy)]
#[repr(C, u8)]
pub enum Buf {
    Flat(*const u8),
    Iov(*const iovec, c_int),
    Msg(*const msghdr),
}

/// The server read `r` > 0 bytes (not a peek) from the connection on `fd` into `buf`.
///
/// `extern "C"`: the hooks' callers know it cannot unwind, so the untracked path of every
/// read hook keeps no landing pad and no stack frame; a bug in the lens is caught here.
///
/// # Safety
/// `buf` must describe the buffers the call just filled with `r` bytes.
#[inline(never)]
pub unsafe extern "C" fn after_read(fd: c_int, slot: &Slot, buf: Buf, r: usize) {
    let feed = std::panic::AssertUnwindSafe(|| feed_read(fd, slot, buf, r));
    if std::panic::catch_unwind(feed).is_err() {
        slot.clear_flag(FLAG_LENS); // never again on this connection
    }
}

unsafe fn feed_read(fd: c_int, slot: &Slot, buf: Buf, r: usize) {
    let mut lens = load(slot);
    let before = lens.stage();
    if before == Stage::Off || before == Stage::Tunnel {
        slot.clear_flag(FLAG_LENS);
        return;
    }
    // A fresh lens starts a fresh line: the cell may hold the fd's previous connection's.
    let fresh = lens == Lens::new();
    let cell = if fresh { None } else { line_cell(fd) };
    let mut line = match cell {
        Some(c) => RequestLine::from_words(std::array::from_fn(|i| c[i].load(Relaxed))),
        None => RequestLine::new(),
    };
    let mut completed = 0u32;
    for_each_chunk(buf, r, |bytes| {
        completed = completed.saturating_add(lens.feed_with_line(bytes, &mut line).completed);
    });
    let after = lens.stage();
    store(slot, &lens);
    if after == Stage::Off {
        slot.clear_flag(FLAG_LENS);
    } else if let Some(c) = cell.or_else(|| line_cell(fd)) {
        for (w, v) in c.iter().zip(line.to_words()) {
            w.store(v, Relaxed);
        }
    }
    if after != before || completed > 0 {
        // A request's header stage runs from its first byte (as STALLGUARD_REQUEST always
        // did); any other stage from now.
        let now = now_ms();
        let request_start = slot.request_start.load(Relaxed);
        let (since, bytes) = if after == Stage::Headers && completed == 0 && request_start != 0 {
            (request_start, slot.request_bytes.load(Relaxed))
        } else {
            (now, 0)
        };
        slot.stage_since.store(since, Relaxed);
        slot.stage_bytes.store(bytes, Relaxed);
    } else {
        let b = slot.stage_bytes.load(Relaxed);
        slot.stage_bytes.store(b.saturating_add(r as u64), Relaxed);
    }
}

/// The server wrote `r` > 0 bytes to the connection: its answer started. `extern "C"` for
/// the same reason as [`after_read`] (the lens never panics; if it did, this aborts).
#[inline(never)]
pub extern "C" fn after_write(slot: &Slot) {
    let mut lens = load(slot);
    let before = lens.stage();
    lens.on_server_write();
    let after = lens.stage();
    store(slot, &lens); // even on the same stage: the lens's own flags may have changed
    if after == before {
        return;
    }
    slot.stage_since.store(now_ms(), Relaxed);
    slot.stage_bytes.store(0, Relaxed);
    if matches!(after, Stage::Off | Stage::Tunnel) {
        slot.clear_flag(FLAG_LENS);
    }
}

/// Calls `f` with each filled part of `buf`, `r` bytes in all.
unsafe fn for_each_chunk(buf: Buf, r: usize, mut f: impl FnMut(&[u8])) {
    let iovs = match buf {
        Buf::Flat(p) => {
            if !p.is_null() {
                f(std::slice::from_raw_parts(p, r));
            }
            return;
        }
        Buf::Iov(iov, cnt) => (iov, cnt.max(0) as usize),
        Buf::Msg(msg) if msg.is_null() => return,
        Buf::Msg(msg) => ((*msg).msg_iov.cast_const(), (*msg).msg_iovlen),
    };
    if iovs.0.is_null() {
        return;
    }
    let mut left = r;
    for v in std::slice::from_raw_parts(iovs.0, iovs.1) {
        if left == 0 {
            break;
        }
        let n = v.iov_len.min(left);
        if n > 0 && !v.iov_base.is_null() {
            f(std::slice::from_raw_parts(v.iov_base as *const u8, n));
        }
        left -= n;
    }
}

/// The side-table cell of `fd`, mapping the table on first use (`MAP_NORESERVE`: a page is
/// backed only once an HTTP connection on one of its 64 fds writes its line).
fn line_cell(fd: c_int) -> Option<&'static LineCell> {
    let idx = usize::try_from(fd).ok().filter(|&i| i < MAX_FDS)?;
    let mut base = LINES.load(Acquire);
    if base.is_null() {
        base = map_lines()?;
    }
    // SAFETY: `base` maps MAX_FDS cells and idx < MAX_FDS; atomics make shared access sound.
    Some(unsafe { &*base.add(idx) })
}

#[cold]
fn map_lines() -> Option<*mut LineCell> {
    let bytes = MAX_FDS * std::mem::size_of::<LineCell>();
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let p = p.cast::<LineCell>();
    match LINES.compare_exchange(std::ptr::null_mut(), p, AcqRel, Acquire) {
        Ok(_) => Some(p),
        Err(winner) => {
            // Another thread mapped it first: keep theirs.
            // SAFETY: `p` is our own mapping of `bytes`, never shared.
            unsafe { libc::munmap(p.cast(), bytes) };
            Some(winner)
        }
    }
}

/// The latest request line of the HTTP connection on `fd`, for the operator (the watcher).
/// `None` when no HTTP connection ever wrote one (the table is not even mapped).
pub fn request_line(fd: c_int) -> Option<RequestLine> {
    if LINES.load(Acquire).is_null() {
        return None;
    }
    let c = line_cell(fd)?;
    let line = RequestLine::from_words(std::array::from_fn(|i| c[i].load(Relaxed)));
    (!line.is_empty()).then_some(line)
}

/// ` stage=server method=GET target="/wait?ms=40000" requests=2` for an HTTP connection (the
/// lens knows its framing), nothing otherwise: appended to reap, would_reap and stuck lines.
/// The method and target come escaped (`stallguard_lens::RequestLine::write_logfmt`): no line
/// break and no bare quote can reach the log.
pub struct HttpFields {
    framing: Option<Framing>,
    waiting: bool,
    line: Option<RequestLine>,
}

impl HttpFields {
    pub fn of(fd: c_int, facts: &stallguard_policy::Facts) -> HttpFields {
        HttpFields {
            framing: facts.framing,
            waiting: facts.waiting_since != 0,
            line: facts.framing.and_then(|_| request_line(fd)),
        }
    }
}

impl std::fmt::Display for HttpFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(fr) = self.framing else {
            return Ok(());
        };
        write!(f, " stage={}", fr.shown_stage(self.waiting).as_str())?;
        if let Some(line) = &self.line {
            let mut buf = [0u8; stallguard_lens::LOGFMT_MAX];
            let n = line.write_logfmt(&mut buf);
            write!(f, " {}", std::str::from_utf8(&buf[..n]).unwrap_or(""))?;
        }
        write!(f, " requests={}", fr.requests)
    }
}
