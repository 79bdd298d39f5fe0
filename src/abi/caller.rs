//! The real OpenSSL function for one caller: the one the calling object would have bound to
//! without this library.
//!
//! This library's exports are unversioned, and the loader lets an unversioned definition
//! satisfy a versioned reference: every object in the process that calls `SSL_read` — with
//! its own private copy of OpenSSL (Python's `_ssl` with the system libssl loaded RTLD_LOCAL,
//! a wheel's vendored `libssl-<hash>.so.3`, a plugin built against OpenSSL 1.1 or with OpenSSL
//! linked in) — binds to the hook. Which copy the caller meant is known from where it called:
//! the hook's return address lies in the caller's object (`dladdr1` gives its link_map), and
//! in glibc a link_map is a `dlsym` handle whose search list is that object and its own
//! dependencies (which do not contain this library, unless the object is the main program or
//! searches the global scope). So `dlsym(caller, "SSL_read")` is what the caller's reference
//! resolves to in its own scope.
//!
//! Versions: `dlsym` gives the default (`@@`) version. A caller's own dependency provides one
//! version of these functions in practice (OpenSSL 1.1's `libssl.so.1.1` defines only
//! `@@OPENSSL_1_1_0`, OpenSSL 3's only `@@OPENSSL_3.0.0`), so the default is the one its
//! reference names; a library defining both a compat `@` and a default `@@` version of the
//! same function is not handled specially (the default is taken).
//!
//! If the caller's scope yields nothing or this library's own export (the main program, an
//! object loaded RTLD_GLOBAL whose scope is the global one, code outside any object), the
//! caller binds in the global scope: the row's global resolution answers (RTLD_NEXT first).
//!
//! The answer is kept per return address in a small fixed table per row (lock-free, no
//! allocation): a call site takes the loader's lock once; later calls load a few atomics.
//! Entries are stamped with the count of objects unloaded so far ([`unloaded`], counted by the
//! `dlclose` hook): a call site whose object was unloaded — and another object later mapped at
//! the same address — never reuses an answer about a copy of OpenSSL that may be gone. A full
//! table: resolved at each call.

use libc::c_void;
use std::sync::atomic::{AtomicUsize, Ordering::*};

/// Entries per row: a process has a handful of call sites per function.
const ENTRIES: usize = 32;

/// A free entry's return address is 0; 1 marks one being filled.
const CLAIMED: usize = 1;

/// dladdr1's request for the object's `struct link_map *` (glibc's <dlfcn.h>).
const RTLD_DL_LINKMAP: libc::c_int = 2;

/// Kept verdict: the caller binds in the global scope (the row's global resolution answers).
const GLOBAL: usize = 1;

/// Objects unloaded so far (see `dlclose` in the table): entries made before are stale.
static UNLOADS: AtomicUsize = AtomicUsize::new(0);

/// An object is being unloaded: answers kept until now may name a copy of OpenSSL that goes.
pub fn unloaded() {
    UNLOADS.fetch_add(1, Release);
}

struct Entry {
    /// The return address (0: free; [`CLAIMED`]: being filled), written last.
    at: AtomicUsize,
    /// [`UNLOADS`] when the answer was found.
    unloads: AtomicUsize,
    /// The real function, or [`GLOBAL`].
    fun: AtomicUsize,
}

/// One row's answers, by return address.
pub struct Callers {
    entries: [Entry; ENTRIES],
}

impl Callers {
    pub const fn new() -> Self {
        Callers {
            entries: [const {
                Entry {
                    at: AtomicUsize::new(0),
                    unloads: AtomicUsize::new(0),
                    fun: AtomicUsize::new(0),
                }
            }; ENTRIES],
        }
    }

    /// The real function `name` (NUL-terminated) for the caller returning to `at`: its own
    /// scope's definition, else `global()` (the row's global resolution); 0 if none.
    #[inline]
    pub fn real(&self, at: usize, name: &'static [u8], global: impl Fn() -> usize) -> usize {
        if at <= CLAIMED {
            return global();
        }
        let unloads = UNLOADS.load(Acquire);
        let start = first_slot(at);
        for k in 0..ENTRIES {
            let e = &self.entries[(start + k) % ENTRIES];
            match e.at.load(Acquire) {
                a if a == at => {
                    if e.unloads.load(Relaxed) != unloads {
                        continue; // stale: a later entry (or a new lookup) answers
                    }
                    return match e.fun.load(Relaxed) {
                        GLOBAL => global(),
                        f => f,
                    };
                }
                0 => break, // entries are never freed: the address is in none further on
                _ => {}
            }
        }
        self.missed(at, unloads, name, global)
    }

    #[cold]
    #[inline(never)]
    fn missed(
        &self,
        at: usize,
        unloads: usize,
        name: &'static [u8],
        global: impl Fn() -> usize,
    ) -> usize {
        let Some(own) = own_definition(at, name) else {
            return global(); // not in any object (generated code): not kept
        };
        let fun = if own == 0 { GLOBAL } else { own };
        let start = first_slot(at);
        // Kept in the first free entry from the address's place (a racing thread may keep the
        // same answer in another; full: nothing kept).
        for k in 0..ENTRIES {
            let e = &self.entries[(start + k) % ENTRIES];
            if e.at.compare_exchange(0, CLAIMED, Acquire, Relaxed).is_ok() {
                e.unloads.store(unloads, Relaxed);
                e.fun.store(fun, Relaxed);
                e.at.store(at, Release);
                break;
            }
        }
        if fun == GLOBAL {
            global()
        } else {
            fun
        }
    }
}

fn first_slot(at: usize) -> usize {
    ((at as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as usize % ENTRIES
}

/// `name` as the object holding the return address `at` resolves it in its own scope: Some(0)
/// when that is nothing or this library's export (the caller binds in the global scope),
/// None when `at` is in no loaded object.
fn own_definition(at: usize, name: &'static [u8]) -> Option<usize> {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut map: *mut c_void = std::ptr::null_mut();
    // SAFETY: dladdr1 only reads the address (the call instruction's last byte, inside the
    // caller's code even if the call is the object's last instruction) and fills `info` and
    // `map` (RTLD_DL_LINKMAP: a `struct link_map *`).
    let found = unsafe {
        libc::dladdr1(
            (at - 1) as *const c_void,
            &mut info,
            (&mut map as *mut *mut c_void).cast(),
            RTLD_DL_LINKMAP,
        )
    };
    if found == 0 || map.is_null() {
        return None;
    }
    // SAFETY: in glibc a link_map of a loaded object is a valid dlsym handle (dlopen returns
    // exactly that); the object holds the caller's code, which is running, so it is mapped.
    // `name` is NUL-terminated.
    let sym = unsafe { libc::dlsym(map, name.as_ptr().cast()) };
    if sym.is_null() || super::real::is_ours(sym) {
        return Some(0);
    }
    Some(sym as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_in_libc_gets_libcs_own_function() {
        // An address inside libc (its getpid): libc's scope has getppid, libc's own.
        let at = libc::getpid as *const () as usize + 1;
        let callers = Callers::new();
        let got = callers.real(at, b"getppid\0", || 7);
        assert_eq!(got, libc::getppid as *const () as usize);
        // Kept: the same answer again.
        assert_eq!(callers.real(at, b"getppid\0", || 7), got);
    }

    #[test]
    fn a_name_missing_from_the_callers_scope_goes_global() {
        let at = libc::getpid as *const () as usize + 1;
        let callers = Callers::new();
        assert_eq!(callers.real(at, b"stallguard_no_such_symbol\0", || 7), 7);
        assert_eq!(callers.real(at, b"stallguard_no_such_symbol\0", || 8), 8);
        assert_eq!(callers.real(0, b"getppid\0", || 9), 9);
    }

    #[test]
    fn an_unload_makes_kept_answers_stale() {
        let at = libc::getpid as *const () as usize + 1;
        let callers = Callers::new();
        assert_eq!(callers.real(at, b"no_such\0", || 7), 7);
        unloaded();
        assert_eq!(callers.real(at, b"no_such\0", || 8), 8);
        assert!(
            callers
                .entries
                .iter()
                .filter(|e| e.at.load(Relaxed) == at)
                .count()
                >= 2
        );
    }
}
