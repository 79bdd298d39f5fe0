//! The table of interposed functions (src/interpose.rs, as `stallguard_inventory`) against
//! what ships: the built library's dynamic symbols, the README and the man page.

use stallguard_testkit::shim;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn inventory() -> BTreeSet<String> {
    stallguard_inventory::NAMES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A C identifier (OpenSSL's rows have capitals: `SSL_read`).
fn is_function_name(w: &str) -> bool {
    w.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Exported functions of the built library are the table's rows plus the cooperation API
/// (include/stallguard.h), nothing else.
#[test]
fn library_exports_exactly_the_table() {
    let so = shim();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("nm (binutils) runs");
    assert!(out.status.success(), "nm failed");
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            (kind == "T").then(|| name.to_string())
        })
        .filter(|name| !name.starts_with("stallguard_"))
        .collect();
    assert_eq!(
        exported,
        inventory(),
        "exports of {} vs src/interpose.rs",
        so.display()
    );
}

/// The text of `file` from its "Interposed functions:" on.
fn list_in(file: &str) -> String {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let start = text
        .find("Interposed functions:")
        .unwrap_or_else(|| panic!("{file} has no \"Interposed functions:\" list"));
    text[start..].to_string()
}

/// The README's "Interposed functions:" sentence names every row, and only rows.
#[test]
fn readme_lists_the_table() {
    let rest = list_in("README.md");
    let end = rest.find(". ").unwrap_or(rest.len());
    let named: BTreeSet<String> = rest[..end]
        .split('`')
        .skip(1)
        .step_by(2) // inside backticks
        .flat_map(|code| code.split_whitespace())
        .filter(|w| is_function_name(w))
        .map(str::to_string)
        .collect();
    assert_eq!(
        named,
        inventory(),
        "README \"Interposed functions\" vs src/interpose.rs"
    );
}

/// The man page's "Interposed functions:" paragraph names every row, and only rows.
#[test]
fn man_page_lists_the_table() {
    let mut named = BTreeSet::new();
    for line in list_in("man/libstallguard.so.8").lines().skip(1) {
        if !line.starts_with('.') {
            if line.ends_with('.') {
                break; // the sentence after the list
            }
            continue;
        }
        let Some(args) = line
            .strip_prefix(".BR ")
            .or_else(|| line.strip_prefix(".B "))
        else {
            continue;
        };
        let words: Vec<&str> = match args.split('"').nth(1) {
            Some(quoted) => quoted.split_whitespace().collect(),
            None => args.split_whitespace().take(1).collect(),
        };
        named.extend(
            words
                .into_iter()
                .filter(|w| is_function_name(w))
                .map(str::to_string),
        );
    }
    assert_eq!(
        named,
        inventory(),
        "man page \"Interposed functions\" vs src/interpose.rs"
    );
}
