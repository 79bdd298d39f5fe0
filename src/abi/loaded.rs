//! Symbols of a library the program loaded privately (`dlopen` with RTLD_LOCAL, or as the
//! dependency of such a module): RTLD_NEXT does not search it, but the object is mapped, so
//! it is found by its file name and opened again without loading (RTLD_NOLOAD).
//!
//! The library named by the caller (`libssl.so*`) is looked in first, then every other loaded
//! object: OpenSSL is not always a file called `libssl.so*`. A Python wheel vendors it as
//! `libssl-<hash>.so.3` (auditwheel), a plugin may have it built in (static libssl in a
//! module loaded with RTLD_LOCAL); their calls to `SSL_read` bind to this library's export
//! just the same (the global scope comes first) and must reach that copy, not fail. Among
//! the other objects the symbol must be unambiguous: two copies (two wheels each vendoring
//! its OpenSSL) and nothing is taken, as before (OpenSSL's failure value), since handing
//! one copy's `SSL*` to the other's `SSL_read` would crash the host.
//!
//! Since the hooks know their caller (`caller`), this search only answers where the caller
//! gives no answer (the main program, code in no object): the last fallback.
//!
//! A search that found nothing is not repeated until the program loads another object (the
//! loader's `dlpi_adds` count): a hook that calls it on every call stays cheap.

use libc::{c_char, c_int, c_void, dl_phdr_info, size_t};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Room for the path of the library found (paths longer than this are not followed).
const PATH_MAX: usize = 512;

/// Which loaded objects a pass of the search visits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Those whose file name starts with the prefix.
    Named,
    /// Every other object with a path (not the main program, which comes before this library
    /// in the global scope: a symbol it defines never reaches a hook).
    Others,
}

/// What one walk of the loaded objects looks for (the `skip`-th object of the pass), and
/// what it found.
struct Search<'a> {
    prefix: &'a [u8],
    pass: Pass,
    skip: usize,
    path: [u8; PATH_MAX],
    found: bool,
    /// The loader's count of objects loaded so far (`dlpi_adds`).
    adds: u64,
}

/// Searches that found nothing, each one word ([`miss_tag`]: written whole, so a racing
/// writer never pairs one name with another's count), kept round-robin. A few entries
/// suffice: the callers look for a handful of names.
static MISSES: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static NEXT_MISS: AtomicUsize = AtomicUsize::new(0);

/// One word for "`name` was missing when the loader had counted `adds` objects": the name's
/// address mixed, with the count (never 0, the empty entry).
fn miss_tag(name: &'static [u8], adds: u64) -> u64 {
    ((name.as_ptr() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ adds) | 1
}

/// `name` (NUL-terminated) in the loaded objects whose file name starts with `prefix`, else
/// in any other loaded object; never a symbol `reject` refuses (this library's own). Null if
/// there is none.
pub fn symbol_in(
    prefix: &[u8],
    name: &'static [u8],
    reject: fn(*const c_void) -> bool,
) -> *mut c_void {
    let tag = miss_tag(name, walk(prefix, Pass::Others, usize::MAX).adds);
    if MISSES.iter().any(|m| m.load(Relaxed) == tag) {
        return std::ptr::null_mut();
    }
    for skip in 0.. {
        let search = walk(prefix, Pass::Named, skip);
        if !search.found {
            break;
        }
        let sym = symbol_of(&search.path, name);
        if !sym.is_null() && !reject(sym) {
            return sym;
        }
    }
    // Elsewhere: one definition only (the same one may be found through several objects:
    // a module and the library it depends on).
    let mut found: *mut c_void = std::ptr::null_mut();
    for skip in 0.. {
        let search = walk(prefix, Pass::Others, skip);
        if !search.found {
            break;
        }
        let sym = symbol_of(&search.path, name);
        if sym.is_null() || reject(sym) || sym == found {
            continue;
        }
        if !found.is_null() {
            found = std::ptr::null_mut(); // two copies: which one the caller meant is unknown
            break;
        }
        found = sym;
    }
    if !found.is_null() {
        return found;
    }
    // Remembered (an entry overwritten by another miss: at worst a search is repeated).
    MISSES[NEXT_MISS.fetch_add(1, Relaxed) % MISSES.len()].store(tag, Relaxed);
    std::ptr::null_mut()
}

/// The `skip`-th object of `pass` (its path in the result), and the loader's `dlpi_adds`.
fn walk(prefix: &[u8], pass: Pass, skip: usize) -> Search<'_> {
    let mut search = Search {
        prefix,
        pass,
        skip,
        path: [0; PATH_MAX],
        found: false,
        adds: 0,
    };
    // SAFETY: the callback only reads the entries dl_iterate_phdr hands it and writes into
    // `search`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    search
}

/// `name` looked up from the object at `path` (NUL-terminated): in it, else in its
/// dependencies. Opened outside the walk (which holds the loader's lock): NOLOAD only takes
/// another reference on the object already mapped, given back below.
fn symbol_of(path: &[u8; PATH_MAX], name: &'static [u8]) -> *mut c_void {
    // SAFETY: `path` is NUL-terminated (copied with room for the NUL).
    let handle = unsafe { libc::dlopen(path.as_ptr().cast(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: a live handle and a NUL-terminated static name.
    let sym = unsafe { libc::dlsym(handle, name.as_ptr().cast()) };
    // SAFETY: the handle dlopen just gave; the object stays mapped (the program holds it).
    // The real dlclose: ours would count an unload (see `caller`) where nothing is unloaded.
    unsafe { super::objects::close_own_handle(handle) };
    sym
}

/// `name` in the very object that holds the function at `beside` (an address dlsym gave):
/// the companion of a function, from the same copy of its library. Null when `beside` is in
/// no object with a path, or that object has no such symbol of its own (another library's
/// `SSL_read` — GnuTLS's OpenSSL layer — has no `SSL_get_rbio`, and OpenSSL's, from another
/// object, would read its `SSL*` as OpenSSL's).
pub fn symbol_beside(beside: usize, name: &'static [u8]) -> *mut c_void {
    let Some((base, path)) = object_of(beside) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a NUL-terminated path the loader gave for a mapped object; NOLOAD only takes
    // another reference on it, given back below.
    let handle = unsafe { libc::dlopen(path, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: a live handle and a NUL-terminated static name.
    let sym = unsafe { libc::dlsym(handle, name.as_ptr().cast()) };
    // SAFETY: the handle dlopen just gave; the object stays mapped (the program holds it).
    // The real dlclose: ours would count an unload (see `caller`) where nothing is unloaded.
    unsafe { super::objects::close_own_handle(handle) };
    match object_of(sym as usize) {
        Some((b, _)) if b == base => sym,
        _ => std::ptr::null_mut(),
    }
}

/// The base address and path of the loaded object holding `addr` (None: none, or the main
/// program, whose path dladdr does not give).
fn object_of(addr: usize) -> Option<(usize, *const c_char)> {
    if addr == 0 {
        return None;
    }
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads `addr` as an address and fills `info`.
    if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0
        || info.dli_fname.is_null()
        // SAFETY: a NUL-terminated string owned by the loader.
        || unsafe { *info.dli_fname } == 0
    {
        return None;
    }
    Some((info.dli_fbase as usize, info.dli_fname))
}

/// dl_iterate_phdr's callback: stops at the `skip`-th object of the pass.
unsafe extern "C" fn visit(info: *mut dl_phdr_info, _size: size_t, data: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid entry and our `Search`.
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    search.adds = info.dlpi_adds;
    if info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: a NUL-terminated path owned by the loader, valid during the callback.
    let path = unsafe { CStr::from_ptr(info.dlpi_name as *const c_char) }.to_bytes();
    let file = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let named = file.starts_with(search.prefix);
    let wanted = match search.pass {
        Pass::Named => named,
        Pass::Others => !named && !path.is_empty(),
    };
    if !wanted || path.len() >= PATH_MAX {
        return 0;
    }
    if search.skip > 0 {
        search.skip -= 1;
        return 0;
    }
    search.path[..path.len()].copy_from_slice(path);
    search.path[path.len()] = 0;
    search.found = true;
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: *const c_void) -> bool {
        false
    }

    #[test]
    fn finds_a_symbol_in_a_loaded_library_by_file_name() {
        let sym = symbol_in(b"libc.so", b"getpid\0", never);
        assert!(!sym.is_null());
        // The same function the dynamic linker binds.
        assert_eq!(sym as usize, libc::getpid as *const () as usize);
    }

    #[test]
    fn finds_a_symbol_in_a_library_of_another_name() {
        // Not in anything called libstallguard-no-such-lib.so: found where it is (libc).
        let sym = symbol_in(b"libstallguard-no-such-lib.so", b"getpid\0", never);
        assert_eq!(sym as usize, libc::getpid as *const () as usize);
    }

    #[test]
    fn a_companion_comes_from_the_same_object_only() {
        let getpid = libc::getpid as *const () as usize;
        let sym = symbol_beside(getpid, b"getppid\0");
        assert_eq!(sym as usize, libc::getppid as *const () as usize);
        // libc has no such symbol of its own: not taken from another object.
        assert!(symbol_beside(getpid, b"stallguard_no_such_symbol\0").is_null());
        assert!(symbol_beside(0, b"getppid\0").is_null());
    }

    #[test]
    fn nothing_for_a_missing_or_rejected_symbol() {
        assert!(symbol_in(b"libc.so", b"stallguard_no_such_symbol\0", never).is_null());
        // Again: answered from the misses, the same.
        assert!(symbol_in(b"libc.so", b"stallguard_no_such_symbol\0", never).is_null());
        assert!(symbol_in(b"libc.so", b"getppid\0", |_| true).is_null());
    }
}
