//! OpenSSL's side of a TLS connection (issue 11, item 3): the plaintext `SSL_read` hands the
//! program feeds the HTTP/1 lens, `SSL_write` starts the answer, `SSL_peek` marks the
//! connection TLS (its raw reads are ciphertext) and feeds nothing (the bytes stay for the
//! next `SSL_read`). Which bytes feed the lens is decided in `stallguard_lens::tls`.
//!
//! The `SSL*` is mapped to its socket with `SSL_get_rfd`. Nothing happens unless that socket
//! is a tracked connection the lens follows: not for a memory BIO (asyncio), a client
//! connection the program opened, or a port with the lens off. A call that moved no byte
//! (an error, `SSL_ERROR_WANT_READ` on a non-blocking socket, close_notify) changes nothing
//! here: the raw reads and writes inside it already recorded the waits. Like every hook
//! path, this leaves errno as the real call set it (`SSL_get_error` consults it), and it
//! never touches OpenSSL's error queue.

use super::lens;
use crate::abi::args::ReadBuf;
use crate::abi::errno::ErrnoGuard;
use crate::abi::openssl;
use crate::table::{self, Flags, Slot};
use libc::{c_int, c_void};

/// The tracked connection under `ssl` that the lens follows, with its fd; `via`: the real
/// function that served the call (its library's copy is asked about `ssl`).
fn followed(via: usize, ssl: *mut c_void) -> Option<(c_int, &'static Slot)> {
    let fd = openssl::socket_of(ssl, via)?;
    let slot = table::tracked(fd)?;
    slot.has_flag(Flags::LENS).then_some((fd, slot))
}

/// `SSL_read`/`SSL_read_ex` on `ssl` handed the program `n` bytes of plaintext at `buf`.
///
/// # Safety
/// `buf` holds the `n` bytes the call just wrote.
#[inline(always)]
pub unsafe fn read(via: usize, ssl: *mut c_void, buf: *const u8, n: usize) {
    if n == 0 {
        return;
    }
    let _errno = ErrnoGuard::new();
    if let Some((fd, slot)) = followed(via, ssl) {
        // SAFETY: the caller's contract.
        unsafe { lens::after_tls_read(fd, slot, ReadBuf::Flat(buf), n) };
    }
}

/// `SSL_peek`/`SSL_peek_ex` on `ssl` showed the program `n` bytes without consuming them.
#[inline(always)]
pub fn peeked(via: usize, ssl: *mut c_void, n: usize) {
    if n == 0 {
        return;
    }
    let _errno = ErrnoGuard::new();
    if let Some((_, slot)) = followed(via, ssl) {
        if !slot.has_flag(Flags::TLS) {
            slot.set_flag(Flags::TLS);
        }
    }
}

/// `SSL_write`/`SSL_write_ex` on `ssl` took `n` bytes of the program's answer.
#[inline(always)]
pub fn wrote(via: usize, ssl: *mut c_void, n: usize) {
    if n == 0 {
        return;
    }
    let _errno = ErrnoGuard::new();
    if let Some((_, slot)) = followed(via, ssl) {
        lens::after_tls_write(slot);
    }
}
