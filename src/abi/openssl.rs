//! The OpenSSL functions the shim calls without interposing them: from an `SSL*` to the
//! socket it reads (`SSL_get_rfd`). Resolved like the table's OpenSSL rows (`real`): eagerly
//! if the program links libssl, else at first use, also in a libssl loaded privately.

use super::real::resolve;
use libc::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static GET_RBIO: AtomicUsize = AtomicUsize::new(0);
static GET_RFD: AtomicUsize = AtomicUsize::new(0);

const LIBSSL: Option<&[u8]> = Some(b"libssl.so");

/// Resolves both functions (the constructor; absent libssl leaves them for first use).
pub fn resolve_all() {
    resolve(b"SSL_get_rbio\0", &GET_RBIO, LIBSSL);
    resolve(b"SSL_get_rfd\0", &GET_RFD, LIBSSL);
}

fn entry(slot: &AtomicUsize, name: &'static [u8]) -> Option<usize> {
    match slot.load(Relaxed) {
        0 => Some(resolve(name, slot, LIBSSL)).filter(|&p| p != 0),
        p => Some(p),
    }
}

/// The socket `ssl` reads from: None for a memory BIO (asyncio and other event loops that
/// feed OpenSSL themselves), a BIO pair, no read BIO yet, or no libssl.
pub fn socket_of(ssl: *mut c_void) -> Option<c_int> {
    if ssl.is_null() {
        return None;
    }
    let get_rbio = entry(&GET_RBIO, b"SSL_get_rbio\0")?;
    let get_rfd = entry(&GET_RFD, b"SSL_get_rfd\0")?;
    // SAFETY: addresses dlsym gave for these OpenSSL functions, whose C types these are;
    // `ssl` is the live SSL* the program just passed to OpenSSL.
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
