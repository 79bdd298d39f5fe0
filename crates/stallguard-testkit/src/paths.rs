//! Where the things under test are: the workspace, the built library, the C programs, the
//! `stallguard` command, and per-process scratch files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The workspace root.
pub fn repo() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn built(p: PathBuf) -> PathBuf {
    assert!(p.exists(), "{} missing: run `make` first", p.display());
    p.canonicalize().unwrap()
}

/// The variable that points the tests at another build of the library: the one the
/// `stallguard` command reads (and removes from the program's environment), which the library
/// itself ignores, so a guarded child that inherits it is not refused for an unknown
/// `STALLGUARD_` variable.
pub const LIBRARY_VAR: &str = "STALLGUARD_LIB";

/// The library under test (`make` builds it; [`LIBRARY_VAR`] overrides).
pub fn shim() -> PathBuf {
    built(
        std::env::var_os(LIBRARY_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/release/libstallguard.so")),
    )
}

/// A C example program (c-examples/, built into target/c-examples/).
pub fn example(name: &str) -> PathBuf {
    built(repo().join("target/c-examples").join(name))
}

/// A C test harness program (tests/c/, built into target/c-tests/).
pub fn harness(name: &str) -> PathBuf {
    built(repo().join("target/c-tests").join(name))
}

/// The `stallguard` command of the running test's profile (cargo builds a package's binaries
/// before its integration tests: target/<profile>/stallguard beside target/<profile>/deps/).
pub fn cli_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    built(profile.join("stallguard"))
}

/// A unique scratch file path for this test process (target/test-scratch/PID-N-name).
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = repo().join("target/test-scratch");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ))
}
