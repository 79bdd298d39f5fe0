//! The shim's layout is its data flow: this test reads the `crate::` / `super::` paths of
//! every file under src/ and fails on an edge between stages that the flow does not allow, or
//! on any cycle between modules. It also checks the policy crate for cycles.
//!
//! Stages (top-level modules of src/) and what each may use:
//!
//! ```text
//! lib.rs   → everything (init and after-fork wiring)
//! hooks    → track, table, runtime, abi      (exports; the table rows in interpose.rs)
//! track    → table, runtime, abi             (what hooks call)
//! watcher  → table, runtime, abi             (and the policy crate)
//! table    → runtime, abi
//! runtime  → abi
//! abi      → nothing                         (libc and the kernel)
//! ```
//!
//! A module naming its own submodules (`mod x;`, `pub use x::Y`) is containment, not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sources to read: `dir` of this repository, or the tree named by the environment
/// variable `var` (another commit's, to compare).
fn sources(var: &str, dir: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| repo().join(dir), PathBuf::from)
}

fn shim_src() -> PathBuf {
    sources("MODULE_EDGES_SRC", "src")
}

/// What each stage may use (besides itself).
fn allowed(stage: &str) -> Option<&'static [&'static str]> {
    Some(match stage {
        "crate" => &[
            "abi",
            "hooks",
            "track",
            "table",
            "watcher",
            "runtime",
            "interpose",
        ],
        "hooks" => &["track", "table", "runtime", "abi"],
        "track" => &["table", "runtime", "abi"],
        "watcher" => &["table", "runtime", "abi"],
        "table" => &["runtime", "abi"],
        "runtime" => &["abi"],
        "abi" => &[],
        "interpose" => &[],
        _ => return None,
    })
}

/// Every .rs file under `dir`, as (module path, file).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let path = if parts.is_empty() {
                "crate".to_string()
            } else {
                format!("crate::{}", parts.join("::"))
            };
            (path, f)
        })
        .collect()
}

/// The code of a file without comments (doc comments name modules too).
fn code(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many inline `mod x { .. }` blocks (tests, macro-made modules) enclose each char.
fn inline_depths(code: &[char]) -> Vec<usize> {
    let mut depth = vec![0; code.len() + 1];
    let text: String = code.iter().collect();
    let mut from = 0;
    while let Some(at) = text[from..].find("mod ") {
        let start = from + at;
        from = start + 4;
        let name_end = text[from..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .map_or(text.len(), |k| from + k);
        let after = text[name_end..].trim_start();
        if name_end == from || !after.starts_with('{') {
            continue;
        }
        // `text` is ASCII in the code we read, so byte and char indexes agree.
        let open = text.len() - after.len();
        let mut level = 0;
        let mut close = open;
        for (k, c) in code.iter().enumerate().skip(open) {
            match c {
                '{' => level += 1,
                '}' => {
                    level -= 1;
                    if level == 0 {
                        close = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        for d in &mut depth[open..=close] {
            *d += 1;
        }
    }
    depth
}

/// The paths a file names: `crate::a::b`, `super::x`, with one level of `{a, b}` expanded.
/// A `super` that only leaves an inline module of the same file is dropped.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let depths = inline_depths(&bytes);
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == ':'));
        let starts = starts || (rest.starts_with("crate::") && i > 0 && bytes[i - 1] == '$');
        if !starts {
            i += 1;
            continue;
        }
        // Read a path: idents separated by ::, possibly ending in a {group}.
        let before = out.len();
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            segs.push(bytes[s..j].iter().collect::<String>());
            if j + 1 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                j += 2;
                if j < bytes.len() && bytes[j] == '{' {
                    let close = (j..bytes.len()).find(|&k| bytes[k] == '}').unwrap_or(j);
                    let group: String = bytes[j + 1..close].iter().collect();
                    for item in group.split(',') {
                        let first = item.trim().split("::").next().unwrap_or("").trim();
                        if !first.is_empty() && first != "self" && first != "*" {
                            let mut p = segs.clone();
                            p.push(first.to_string());
                            out.push(p);
                        }
                    }
                    out.push(segs.clone());
                    j = close + 1;
                    break;
                }
                continue;
            }
            break;
        }
        if segs.len() > 1 {
            out.push(segs);
        }
        // Supers that leave inline modules stay in this file's module.
        for p in out.iter_mut().skip(before) {
            let mut inline = depths[i];
            while inline > 0 && p.first().map(String::as_str) == Some("super") {
                p.remove(0);
                inline -= 1;
            }
        }
        i = j.max(i + 1);
    }
    out
}

/// Resolves a named path from module `from` to the longest known module it starts with.
fn resolve(from: &str, path: &[String], known: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<String> = from.split("::").map(str::to_string).collect();
    let mut rest = path;
    if rest.first().map(String::as_str) != Some("crate")
        && rest.first().map(String::as_str) != Some("super")
    {
        return None; // relative to an inline module: stays in this file's module
    }
    if rest.first().map(String::as_str) == Some("crate") {
        base = vec!["crate".to_string()];
        rest = &rest[1..];
    } else {
        while rest.first().map(String::as_str) == Some("super") {
            base.pop();
            rest = &rest[1..];
        }
    }
    let mut best = None;
    let mut cur = base.clone();
    if known.contains(&cur.join("::")) {
        best = Some(cur.join("::"));
    }
    for seg in rest {
        cur.push(seg.clone());
        let p = cur.join("::");
        if known.contains(&p) {
            best = Some(p);
        }
    }
    best
}

/// Module-level edges of the crate rooted at `src` (containment excluded).
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let mut g = BTreeMap::new();
    for (m, file) in &mods {
        let targets: BTreeSet<String> = named_paths(&code(file))
            .iter()
            .filter_map(|p| resolve(m, p, &known))
            .filter(|t| t != m && !t.starts_with(&format!("{m}::")) && m != "crate")
            .collect();
        g.insert(m.clone(), targets);
    }
    g
}

/// Every cycle (as a path of modules), found by depth-first search.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn dfs(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut c = stack[at..].to_vec();
            c.push(n.to_string());
            found.push(c);
            return;
        }
        if done.contains(n) {
            return;
        }
        stack.push(n.to_string());
        for t in g.get(n).into_iter().flatten() {
            dfs(t, g, stack, done, found);
        }
        stack.pop();
        done.insert(n.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for n in g.keys() {
        dfs(n, g, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn stage(module: &str) -> &str {
    module.split("::").nth(1).unwrap_or("crate")
}

#[test]
fn shim_edges_follow_the_flow() {
    let g = edges(&shim_src());
    let mut bad = Vec::new();
    for (from, targets) in &g {
        let Some(ok) = allowed(stage(from)) else {
            bad.push(format!(
                "{from}: not in any stage (add it to a folder of the flow)"
            ));
            continue;
        };
        for t in targets {
            let to = stage(t);
            if to != stage(from) && !ok.contains(&to) {
                bad.push(format!("{from} → {t}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "edges against the flow:\n  {}",
        bad.join("\n  ")
    );
}

/// Fails with every cycle between the modules under `src`.
fn assert_no_cycles(src: &Path, what: &str) {
    let found = cycles(&edges(src));
    let text: Vec<String> = found.iter().map(|c| c.join(" → ")).collect();
    assert!(
        found.is_empty(),
        "module cycles in {what}:\n  {}",
        text.join("\n  ")
    );
}

#[test]
fn shim_has_no_module_cycles() {
    assert_no_cycles(&shim_src(), "src/");
}

/// The policy crate: no cycles between its modules. (policy ↔ ports is broken by the policy
/// crate's `timers` module, on the CLI branch of the same refactor.)
#[test]
fn policy_crate_has_no_module_cycles() {
    let src = sources("MODULE_EDGES_POLICY_SRC", "crates/stallguard-policy/src");
    assert_no_cycles(&src, "stallguard-policy");
}

/// The parser itself, on the forms the code uses.
#[test]
fn paths_are_read_from_use_lists_and_expressions() {
    let p = named_paths("use crate::table::{self, stats, Flags};\nlet x = crate::abi::real::read(1);\nuse super::{act, observe::Memory};\n$crate::runtime::log::enabled()");
    let flat: Vec<String> = p.iter().map(|s| s.join("::")).collect();
    for want in [
        "crate::table::stats",
        "crate::table::Flags",
        "crate::abi::real::read",
        "super::act",
        "super::observe",
        "crate::runtime::log::enabled",
    ] {
        assert!(flat.contains(&want.to_string()), "{want} in {flat:?}");
    }
    let known: BTreeSet<String> = ["crate", "crate::table", "crate::table::stats"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let path: Vec<String> = ["super", "stats", "count"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        resolve("crate::table::slot", &path, &known).as_deref(),
        Some("crate::table::stats")
    );
}
