//! Symbols of a library the program loaded privately (`dlopen` with RTLD_LOCAL, or as the
//! dependency of such a module): RTLD_NEXT does not search it, but the object is mapped, so
//! it is found by its file name and opened again without loading (RTLD_NOLOAD).

use libc::{c_char, c_int, c_void, dl_phdr_info, size_t};
use std::ffi::CStr;

/// Room for the path of the library found (paths longer than this are not followed).
const PATH_MAX: usize = 512;

/// What the search looks for, and what it found.
struct Search<'a> {
    prefix: &'a [u8],
    path: [u8; PATH_MAX],
    found: bool,
}

/// `name` (NUL-terminated) in the first loaded object whose file name starts with `prefix`;
/// null if there is none or it has no such symbol.
pub fn symbol_in(prefix: &[u8], name: &'static [u8]) -> *mut c_void {
    let mut search = Search {
        prefix,
        path: [0; PATH_MAX],
        found: false,
    };
    // SAFETY: the callback only reads the entries dl_iterate_phdr hands it and writes into
    // `search`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    if !search.found {
        return std::ptr::null_mut();
    }
    // Opened outside the iteration (it holds the loader's lock): NOLOAD only takes another
    // reference on the object already mapped, given back below.
    // SAFETY: `path` is NUL-terminated (copied with room for the NUL).
    let handle = unsafe {
        libc::dlopen(
            search.path.as_ptr().cast(),
            libc::RTLD_LAZY | libc::RTLD_NOLOAD,
        )
    };
    if handle.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: a live handle and a NUL-terminated static name.
    let sym = unsafe { libc::dlsym(handle, name.as_ptr().cast()) };
    // SAFETY: the handle dlopen just gave; the object stays mapped (the program holds it).
    unsafe { libc::dlclose(handle) };
    sym
}

/// dl_iterate_phdr's callback: stops at the first object whose file name matches.
unsafe extern "C" fn visit(info: *mut dl_phdr_info, _size: size_t, data: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid entry and our `Search`.
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    if info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: a NUL-terminated path owned by the loader, valid during the callback.
    let path = unsafe { CStr::from_ptr(info.dlpi_name as *const c_char) }.to_bytes();
    let file = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    if !file.starts_with(search.prefix) || path.len() >= PATH_MAX {
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

    #[test]
    fn finds_a_symbol_in_a_loaded_library_by_file_name() {
        let sym = symbol_in(b"libc.so", b"getpid\0");
        assert!(!sym.is_null());
        // The same function the dynamic linker binds.
        assert_eq!(sym as usize, libc::getpid as *const () as usize);
    }

    #[test]
    fn nothing_for_a_library_not_loaded_or_a_missing_symbol() {
        assert!(symbol_in(b"libstallguard-no-such-lib.so", b"getpid\0").is_null());
        assert!(symbol_in(b"libc.so", b"stallguard_no_such_symbol\0").is_null());
    }
}
