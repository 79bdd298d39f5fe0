//! The OpenSSL functions the shim calls without interposing them: from an `SSL*` to the
//! socket it reads (`SSL_get_rbio`, `SSL_get_rfd`).
//!
//! They are taken from the very object whose `SSL_read` (or other row) served the call: the
//! `SSL*` is that copy's. A process may map several libraries defining `SSL_read` (GnuTLS's
//! OpenSSL layer, which has no `SSL_get_rbio`, next to a libssl a plugin loaded; a wheel's
//! vendored libssl next to the system's): another copy's `SSL_get_rbio` would read the
//! `SSL*` with the wrong layout (a crash in the host). No companion in that object: None.
//!
//! Looked up once per real function (the hot path loads a few atomics: no dladdr, which
//! takes the loader's lock) and kept in entries claimed whole before they are filled, so a
//! reader never pairs one function with another object's companions.

use super::loaded;
use libc::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering::*};

/// An entry: the real function that served calls (0: free; [`CLAIMED`]: being filled), then
/// the two companions from its object (0: it has none).
struct Companions {
    via: AtomicUsize,
    get_rbio: AtomicUsize,
    get_rfd: AtomicUsize,
}

const CLAIMED: usize = 1;

/// Six rows per copy of OpenSSL; a process maps one, rarely two. Past these, a function's
/// companions are looked up at each call.
static KNOWN: [Companions; 16] = [const {
    Companions {
        via: AtomicUsize::new(0),
        get_rbio: AtomicUsize::new(0),
        get_rfd: AtomicUsize::new(0),
    }
}; 16];

/// The two functions in the object holding `via` (the real function that served the call),
/// looked up once and kept.
fn companions_of(via: usize) -> Option<(usize, usize)> {
    if via <= CLAIMED {
        return None;
    }
    for entry in &KNOWN {
        match entry.via.load(Acquire) {
            v if v == via => {
                return pair(entry.get_rbio.load(Relaxed), entry.get_rfd.load(Relaxed))
            }
            0 => break, // entries fill in order: no later one is taken
            _ => {}
        }
    }
    let rbio = loaded::symbol_beside(via, b"SSL_get_rbio\0") as usize;
    let rfd = loaded::symbol_beside(via, b"SSL_get_rfd\0") as usize;
    // Kept in the first free entry (a racing thread may keep the same answer in another).
    if let Some(entry) = KNOWN
        .iter()
        .find(|e| e.via.compare_exchange(0, CLAIMED, Acquire, Relaxed).is_ok())
    {
        entry.get_rbio.store(rbio, Relaxed);
        entry.get_rfd.store(rfd, Relaxed);
        entry.via.store(via, Release);
    }
    pair(rbio, rfd)
}

fn pair(rbio: usize, rfd: usize) -> Option<(usize, usize)> {
    (rbio != 0 && rfd != 0).then_some((rbio, rfd))
}

/// The socket `ssl` reads from, asked of the object whose function `via` served the call:
/// None for a memory BIO (asyncio and other event loops that feed OpenSSL themselves), a BIO
/// pair, no read BIO yet, a library without these functions, or no libssl.
pub fn socket_of(ssl: *mut c_void, via: usize) -> Option<c_int> {
    if ssl.is_null() {
        return None;
    }
    let (get_rbio, get_rfd) = companions_of(via)?;
    // SAFETY: addresses dlsym gave for these OpenSSL functions in the object whose function
    // the program just called with `ssl` (so `ssl` is that copy's live SSL*); these are
    // their C types.
    unsafe {
        let get_rbio: unsafe extern "C" fn(*const c_void) -> *mut c_void =
            std::mem::transmute(get_rbio);
        // Without a read BIO, SSL_get_rfd would push an error on the thread's OpenSSL error
        // queue, and the program's next SSL_get_error would report it.
        if get_rbio(ssl).is_null() {
            return None;
        }
        let get_rfd: unsafe extern "C" fn(*const c_void) -> c_int = std::mem::transmute(get_rfd);
        Some(get_rfd(ssl)).filter(|&fd| fd >= 0)
    }
}
