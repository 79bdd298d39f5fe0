//! The HTTP/1 lens on a tracked connection (issue 11): the bytes the server reads are fed to
//! a per-connection `stallguard_lens::Lens` kept in the slot's third cache line, and the
//! server's writes tell it that the answer started. The watcher turns the lens's stage into
//! whose turn it is (`Slot::framing`, `stallguard_policy::Framing`).
//!
//! Only connections the accept path armed (`STALLGUARD_LENS=auto` for their port) are fed,
//! and only until the lens turns off (not HTTP/1, HTTP/2 preface, framing it does not trust)
//! or the connection becomes a tunnel: `Flags::LENS` is cleared then, and the read and write
//! paths cost one flag test again. The method and target of the latest request line go to
//! the side table `table::lines`, written only for HTTP connections.
//!
//! On a TLS connection (`Flags::TLS`, `stallguard_lens::tls`) the raw reads are ciphertext:
//! the lens is fed the plaintext OpenSSL hands the program instead (`track::tls`), and only
//! OpenSSL's writes start an answer.
//!
//! The entry points are `extern "C"`: the compiler then knows they cannot unwind, so the
//! hooks' untracked path keeps no landing pad and no stack frame (checked with objdump).

use crate::abi::args::ReadBuf;
use crate::runtime::clock::now_ms;
use crate::runtime::config;
use crate::table::{lines, Flags, Slot};
use libc::c_int;
use stallguard_lens::tls::{self, Route, Source};
use stallguard_lens::{Lens, RequestLine, Stage};

/// Accept path: follow this connection's requests if its port's policy says so.
pub fn arm(slot: &Slot, local_port: u16) {
    if config::policy()
        .timers_for_port(local_port)
        .is_some_and(|t| t.lens)
    {
        slot.set_lens_state(&Lens::new());
        slot.set_flag(Flags::LENS);
    }
}

/// The server read `r` > 0 bytes (not a peek) from the socket `fd` into `buf`.
/// A bug in the lens is caught here and turns it off for this connection.
///
/// # Safety
/// `buf` describes the buffers the call just filled with `r` bytes.
#[inline(never)]
pub unsafe extern "C" fn after_read(fd: c_int, slot: &Slot, buf: ReadBuf, r: usize) {
    // SAFETY: the caller's contract, passed on.
    unsafe { guarded_feed(fd, slot, buf, r, Source::Socket) }
}

/// OpenSSL handed the program `r` > 0 bytes of plaintext in `buf`, read from the connection
/// on `fd`.
///
/// # Safety
/// As [`after_read`].
#[inline(never)]
pub unsafe extern "C" fn after_tls_read(fd: c_int, slot: &Slot, buf: ReadBuf, r: usize) {
    // SAFETY: the caller's contract, passed on.
    unsafe { guarded_feed(fd, slot, buf, r, Source::TlsLayer) }
}

/// # Safety
/// As [`after_read`].
unsafe fn guarded_feed(fd: c_int, slot: &Slot, buf: ReadBuf, r: usize, source: Source) {
    // SAFETY: the caller's contract, passed on.
    let feed = std::panic::AssertUnwindSafe(|| unsafe { feed_read(fd, slot, buf, r, source) });
    if std::panic::catch_unwind(feed).is_err() {
        slot.clear_flag(Flags::LENS); // never again on this connection
    }
}

/// Up to the first 3 bytes of what a read just filled (enough to tell a TLS record).
///
/// # Safety
/// As [`after_read`].
unsafe fn first_bytes(buf: ReadBuf, r: usize) -> ([u8; 3], usize) {
    let mut first = [0u8; 3];
    let mut n = 0;
    // SAFETY: the caller's contract.
    unsafe {
        buf.each_chunk(r, |bytes| {
            let take = bytes.len().min(first.len() - n);
            first[n..n + take].copy_from_slice(&bytes[..take]);
            n += take;
        })
    };
    (first, n)
}

/// # Safety
/// As [`after_read`].
unsafe fn feed_read(fd: c_int, slot: &Slot, buf: ReadBuf, r: usize, source: Source) {
    let mut lens = slot.lens_state();
    let before = lens.stage();
    if before == Stage::Off || before == Stage::Tunnel {
        slot.clear_flag(Flags::LENS);
        return;
    }
    let fresh = lens == Lens::new();
    let is_tls = slot.has_flag(Flags::TLS);
    let (first, n) = if fresh && !is_tls && source == Source::Socket {
        // SAFETY: the caller's contract.
        unsafe { first_bytes(buf, r) }
    } else {
        ([0; 3], 0)
    };
    match tls::route_read(source, is_tls, fresh, &first[..n]) {
        Route::Skip => return,
        Route::StartTls => {
            slot.set_flag(Flags::TLS);
            return;
        }
        Route::Feed if source == Source::TlsLayer && !is_tls => slot.set_flag(Flags::TLS),
        Route::Feed => {}
    }
    // The side table is read only when these bytes may continue the stored request line
    // (a read that ended inside its method or target); any other read starts a new line or
    // writes none (`Lens::in_request_line`). A fresh lens starts a fresh line (the table may
    // hold the fd's previous connection's), and a connection that turns out not to be HTTP
    // never touches it.
    let continues = !fresh && lens.in_request_line();
    let mut line = if continues {
        lines::load(fd)
    } else {
        RequestLine::new()
    };
    let mut completed = 0u32;
    // SAFETY: the caller's contract.
    unsafe {
        buf.each_chunk(r, |bytes| {
            let fed = lens.feed_with_line(bytes, &mut line);
            completed = completed.saturating_add(fed.completed);
        })
    };
    let after = lens.stage();
    slot.set_lens_state(&lens);
    if after == Stage::Off {
        slot.clear_flag(Flags::LENS);
    } else if fresh || continues || !line.is_empty() {
        // Written only when it changed: a read of headers or a body leaves it as it was.
        lines::store(fd, &line);
    }
    if after == before && completed == 0 {
        slot.stage_read(r as u64);
        return;
    }
    // A request's header stage runs from its first byte (as STALLGUARD_REQUEST always did);
    // any other stage from now.
    if !(after == Stage::Headers && completed == 0 && slot.stage_from_request()) {
        slot.stage_started(now_ms());
    }
}

/// The server wrote bytes to the socket: its answer started (`Server` → `Response`,
/// 100-continue → `Body`, after CONNECT/Upgrade → `Tunnel`), unless the connection is TLS
/// (then these are records: the handshake, tickets, alerts, or an answer `after_tls_write`
/// already saw). The lens never panics; if it did, this aborts rather than unwind through a
/// hook.
#[inline(never)]
pub extern "C" fn after_write(slot: &Slot) {
    answer_started(slot, Source::Socket);
}

/// OpenSSL took plaintext from the program for the connection: its answer started.
#[inline(never)]
pub extern "C" fn after_tls_write(slot: &Slot) {
    answer_started(slot, Source::TlsLayer);
}

fn answer_started(slot: &Slot, source: Source) {
    let is_tls = slot.has_flag(Flags::TLS);
    if !tls::write_starts_answer(source, is_tls) {
        return;
    }
    if source == Source::TlsLayer && !is_tls {
        slot.set_flag(Flags::TLS);
    }
    let mut lens = slot.lens_state();
    if !lens.server_write_matters() {
        return; // a later write of the same answer: nothing to record
    }
    let before = lens.stage();
    lens.on_server_write();
    let after = lens.stage();
    slot.set_lens_state(&lens); // even on the same stage: the lens's own flags changed
    if after == before {
        return;
    }
    slot.stage_started(now_ms());
    if matches!(after, Stage::Off | Stage::Tunnel) {
        slot.clear_flag(Flags::LENS);
    }
}
