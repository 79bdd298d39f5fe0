//! Facts about the loaded objects that `real`, `caller` and `loaded` all need, kept apart so
//! that none of them depends on another for them: which object an address lies in, and
//! closing a handle we opened ourselves without passing through our own `dlclose` hook.

use libc::c_void;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Base address of the object that contains `addr` (0 if unknown).
pub(super) fn object_base(addr: *const c_void) -> usize {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads `addr` as an address and fills `info`.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 {
        return 0;
    }
    info.dli_fbase as usize
}

/// Whether `sym` lies in this library (calling it would recurse forever).
pub fn is_ours(sym: *const c_void) -> bool {
    object_base(sym) == object_base(object_base as *const c_void)
}

/// The dynamic loader's own `dlclose` (0: not resolved yet).
static LOADER_DLCLOSE: AtomicUsize = AtomicUsize::new(0);

/// Closes `handle`, which we opened ourselves (with `RTLD_NOLOAD`: nothing is unloaded), with
/// the loader's `dlclose`: ours would count an unload (see `caller`) where there is none.
///
/// # Safety
/// `handle` is a handle our own `dlopen` returned and nobody closed yet.
pub unsafe fn close_own_handle(handle: *mut c_void) {
    let mut f = LOADER_DLCLOSE.load(Relaxed);
    if f == 0 {
        // SAFETY: a NUL-terminated static name; dlsym takes no other input.
        let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlclose".as_ptr()) };
        if sym.is_null() || is_ours(sym) {
            return; // leaving a NOLOAD reference open only keeps a loaded object loaded
        }
        f = sym as usize;
        LOADER_DLCLOSE.store(f, Relaxed);
    }
    // SAFETY: `f` is the loader's dlclose (resolved above, not ours); `handle` per the
    // caller's contract.
    let close: unsafe extern "C" fn(*mut c_void) -> libc::c_int = unsafe { std::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { close(handle) };
}
