//! The man pages document every policy variable (library page) and every flag (command page),
//! and render without groff warnings.

use stallguard_policy::policy::VARIABLES;
use stallguard_testkit::cli::*;
use stallguard_testkit::*;
use std::process::Command;

fn page(name: &str) -> String {
    std::fs::read_to_string(repo().join("man").join(name)).unwrap()
}

#[test]
fn the_library_page_documents_every_variable() {
    let lib = page("libstallguard.so.8");
    for var in VARIABLES.iter().map(|v| v.name) {
        assert!(
            lib.contains(&format!(".TP\n.B {var}\n")),
            "{var} has no entry in man/libstallguard.so.8"
        );
    }
}

#[test]
fn the_command_page_documents_every_flag() {
    let cmd = page("stallguard.1");
    for var in VARIABLES.iter().map(|v| v.name) {
        let flag = var
            .trim_start_matches("STALLGUARD_")
            .to_ascii_lowercase()
            .replace('_', "\\-");
        assert!(
            cmd.contains(&format!(".BI \\-\\-{flag} ")),
            "--{flag} ({var}) has no entry in man/stallguard.1"
        );
        assert!(
            cmd.contains(&format!(".B {var}\n")),
            "{var} not named in man/stallguard.1"
        );
    }
    for sub in ["run", "check", "top", "reap", "metrics", "status"] {
        assert!(
            cmd.contains(&format!(".SS \"{sub}")),
            "no section for {sub}"
        );
    }
}

#[test]
fn the_pages_render_cleanly() {
    // groff comes with Debian's groff-base, which `make deps` installs when missing.
    assert!(
        Command::new("groff").arg("-v").output().is_ok(),
        "groff is missing: run `make deps`"
    );
    for name in ["stallguard.1", "libstallguard.so.8"] {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(repo().join("man").join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}");
        assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
    }
}
