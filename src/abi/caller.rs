//! The real OpenSSL function for one caller: the one the calling object would have bound to
//! without this library.
//!
//! This library's exports are unversioned, and the loader lets an unversioned definition
//! satisfy a versioned reference: every object in the process that calls `SSL_read` — with
//! its own private copy of OpenSSL (Python's `_ssl` with the system libssl loaded RTLD_LOCAL,
//! a wheel's vendored `libssl-<hash>.so.3`, a plugin built against OpenSSL 1.1 or with OpenSSL
//! linked in) — binds to the hook. Which copy the caller meant is known from where it called:
//! the hook's return address lies in the caller's object (`dladdr1`). The real function is
//! looked up as the loader would have bound the caller's reference without this library: in
//! the global scope first (RTLD_NEXT), then in the caller's own scope (the object and its
//! dependencies, through a handle on it), with the version the reference names (the caller's
//! `.gnu.version_r`, through `dlvsym`; unversioned: `dlsym`, the default version). So a plugin
//! built for OpenSSL 1.1 (`SSL_write@OPENSSL_1_1_0`) in a program using OpenSSL 3 reaches its
//! own 1.1 (OpenSSL 3 has no such version), two private copies each serve their own callers,
//! and a private copy of the very version the program has in the global scope is passed over,
//! as the loader passes it over for the caller's `SSL_new` (not interposed).
//!
//! If neither yields a function other than this library's export (the main program, code
//! outside any object), the row's global resolution answers (RTLD_NEXT first, then the
//! search of `loaded`, the last fallback).
//!
//! The answer is kept per return address in a small fixed table per row (lock-free, no
//! allocation): a call site takes the loader's lock once; later calls load a few atomics.
//! Entries are stamped with the count of objects unloaded so far ([`unloaded`], counted by the
//! `dlclose` hook): a call site whose object was unloaded — and another object later mapped at
//! the same address — never reuses an answer about a copy of OpenSSL that may be gone. A full
//! table: resolved at each call.

use libc::{c_char, c_void};
use std::ffi::CStr;
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

/// The public head of glibc's `struct link_map` (<link.h>).
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *const Dyn,
}

/// `name` as the object holding the return address `at` would have it bound without this
/// library: Some(0) when that is nothing or this library's export (the caller binds in the
/// global scope: the row's global resolution answers), None when `at` is in no loaded object.
///
/// The loader's order: the global scope first (the main program, its dependencies, objects
/// loaded RTLD_GLOBAL: RTLD_NEXT from here), then the caller's own scope (the object and its
/// dependencies), with the version the caller's reference names (its verneed): a plugin built
/// for OpenSSL 1.1 (`SSL_write@OPENSSL_1_1_0`) skips the program's OpenSSL 3 and reaches its
/// own; a plugin with a private copy of the same version as the program's binds to the
/// program's, like the rest of its OpenSSL calls (`SSL_new`, not interposed).
///
/// The caller's own scope: its link_map is not used as the dlsym handle (only an object that
/// was `dlopen`ed, or the main program, has its search list built; a dependency loaded with
/// it has none until it is opened itself, and dlsym on it reads a null list: a crash). The
/// object is opened again by its path without loading (RTLD_NOLOAD: the map already there,
/// another reference given back below; glibc then builds its search list).
fn own_definition(at: usize, name: &'static [u8]) -> Option<usize> {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut map: *const LinkMap = std::ptr::null();
    // SAFETY: dladdr1 only reads the address (the call instruction's last byte, inside the
    // caller's code even if the call is the object's last instruction) and fills `info` and
    // `map` (RTLD_DL_LINKMAP: a `struct link_map *`).
    let found = unsafe {
        libc::dladdr1(
            (at - 1) as *const c_void,
            &mut info,
            (&mut map as *mut *const LinkMap).cast(),
            RTLD_DL_LINKMAP,
        )
    };
    if found == 0 || map.is_null() {
        return None;
    }
    // SAFETY: the loader's link_map of a mapped object (the caller's code is running), whose
    // public head is <link.h>'s.
    let map = unsafe { &*map };
    // SAFETY: l_name is a NUL-terminated string the loader owns ("" for the main program,
    // whose scope is the global one).
    if map.l_name.is_null() || unsafe { *map.l_name } == 0 {
        return Some(0);
    }
    let symbol = &name[..name.len() - 1];
    // SAFETY: the map of a mapped object (above); `symbol` is a plain name.
    let version = unsafe { wanted_version(map, symbol) };
    let lookup = |handle: *mut c_void| -> usize {
        // SAFETY: a live handle (or RTLD_NEXT), a NUL-terminated static name, and a version
        // name the caller's string table holds (mapped while the caller runs).
        let sym = unsafe {
            match version {
                Some(v) => libc::dlvsym(handle, name.as_ptr().cast(), v),
                None => libc::dlsym(handle, name.as_ptr().cast()),
            }
        };
        if sym.is_null() || super::objects::is_ours(sym) {
            0
        } else {
            sym as usize
        }
    };
    let global = lookup(libc::RTLD_NEXT);
    if global != 0 {
        return Some(global);
    }
    // SAFETY: a NUL-terminated path of a mapped object; NOLOAD loads nothing.
    let handle = unsafe { libc::dlopen(map.l_name, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return Some(0); // not reachable by its path (another namespace): the global scope
    }
    let own = lookup(handle);
    // SAFETY: the handle dlopen just gave; the object stays mapped (its code is running). The
    // real dlclose: ours would count an unload where nothing is unloaded.
    unsafe { super::objects::close_own_handle(handle) };
    Some(own)
}

/// ELF dynamic entry, symbol and version-need records (64-bit: x86_64, aarch64).
#[repr(C)]
#[derive(Clone, Copy)]
struct Dyn {
    tag: i64,
    val: u64,
}

#[repr(C)]
struct Sym {
    name: u32,
    info: u8,
    other: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

#[repr(C)]
struct Verneed {
    version: u16,
    cnt: u16,
    file: u32,
    aux: u32,
    next: u32,
}

#[repr(C)]
struct Vernaux {
    hash: u32,
    flags: u16,
    other: u16,
    name: u32,
    next: u32,
}

const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_VERSYM: i64 = 0x6fff_fff0;
const DT_VERNEED: i64 = 0x6fff_fffe;
const DT_VERNEEDNUM: i64 = 0x6fff_ffff;

/// The version the object's undefined reference to `symbol` names (`OPENSSL_1_1_0`), from its
/// dynamic symbol table, `.gnu.version` and `.gnu.version_r`; None when the reference is
/// unversioned, the object defines the symbol itself, or the tables are not there.
///
/// # Safety
/// `map` is the link_map of a mapped object.
unsafe fn wanted_version(map: &LinkMap, symbol: &[u8]) -> Option<*const c_char> {
    if map.l_ld.is_null() {
        return None;
    }
    // Addresses in the dynamic section: relocated by the loader for some entries, not for
    // others (DT_VERNEED), depending on the glibc version: a value below the load address is
    // an offset in the object.
    let base = map.l_addr;
    let addr = |v: u64| -> usize {
        let v = v as usize;
        if v < base {
            v + base
        } else {
            v
        }
    };
    let (mut symtab, mut strtab, mut versym, mut verneed, mut verneednum) = (0, 0, 0, 0, 0);
    let (mut gnu_hash, mut hash) = (0, 0);
    let mut d = map.l_ld;
    loop {
        // SAFETY: the object's dynamic section, ended by DT_NULL.
        let e = unsafe { *d };
        match e.tag {
            0 => break,
            DT_SYMTAB => symtab = addr(e.val),
            DT_STRTAB => strtab = addr(e.val),
            DT_VERSYM => versym = addr(e.val),
            DT_VERNEED => verneed = addr(e.val),
            DT_VERNEEDNUM => verneednum = e.val as usize,
            DT_GNU_HASH => gnu_hash = addr(e.val),
            DT_HASH => hash = addr(e.val),
            _ => {}
        }
        // SAFETY: still inside the section (not past DT_NULL).
        d = unsafe { d.add(1) };
    }
    if symtab == 0 || strtab == 0 || versym == 0 || verneed == 0 {
        return None;
    }
    // Undefined symbols come before the GNU hash table's first hashed one (symoffset); the
    // SysV table's nchain counts them all.
    // SAFETY: the hash tables' headers (two u32 words at least).
    let count = unsafe {
        if gnu_hash != 0 {
            *(gnu_hash as *const u32).add(1)
        } else if hash != 0 {
            *(hash as *const u32).add(1)
        } else {
            return None;
        }
    } as usize;
    for i in 1..count {
        // SAFETY: index below the symbol count of the table.
        let sym = unsafe { &*(symtab as *const Sym).add(i) };
        if sym.shndx != 0 {
            continue;
        }
        // SAFETY: a NUL-terminated name in the object's string table.
        let n = unsafe { CStr::from_ptr((strtab + sym.name as usize) as *const c_char) };
        if n.to_bytes() != symbol {
            continue;
        }
        // SAFETY: .gnu.version has one entry per symbol.
        let index = unsafe { *(versym as *const u16).add(i) } & 0x7fff;
        if index < 2 {
            return None; // local or global: unversioned
        }
        let mut need = verneed;
        for _ in 0..verneednum {
            // SAFETY: the chain of .gnu.version_r, `verneednum` entries long.
            let vn = unsafe { &*(need as *const Verneed) };
            let mut aux = need + vn.aux as usize;
            for _ in 0..vn.cnt {
                // SAFETY: the entry's `cnt` auxiliary records.
                let va = unsafe { &*(aux as *const Vernaux) };
                if va.other == index {
                    return Some((strtab + va.name as usize) as *const c_char);
                }
                aux += va.next as usize;
            }
            need += vn.next as usize;
        }
        return None;
    }
    None
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
