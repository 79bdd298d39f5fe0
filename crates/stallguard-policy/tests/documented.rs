//! The README's variable table and libstallguard.so(8) list exactly the variables of the
//! policy crate's table, with the same defaults.

use stallguard_policy::policy::VARIABLES;

fn doc(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn table_names() -> Vec<String> {
    sorted(VARIABLES.iter().map(|v| v.name.to_string()).collect())
}

/// (variable, default cell) for each row of the README's Configuration table.
fn readme_rows() -> Vec<(String, String)> {
    doc("README.md")
        .lines()
        .skip_while(|l| !l.starts_with("| variable | default |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

#[test]
fn the_readme_table_lists_exactly_the_variables_with_their_defaults() {
    let rows = readme_rows();
    let names = sorted(rows.iter().map(|(n, _)| n.clone()).collect());
    assert_eq!(names, table_names(), "README.md's variable table");
    for (name, cell) in &rows {
        let var = VARIABLES.iter().find(|v| v.name == name).unwrap();
        match var.default {
            Some(default) => assert_eq!(*cell, format!("`{default}`"), "{name}'s default"),
            None => assert!(
                !cell.starts_with('`'),
                "{name} has no default value: {cell}"
            ),
        }
    }
}

#[test]
fn the_library_man_page_lists_exactly_the_variables_with_their_defaults() {
    let page = doc("man/libstallguard.so.8");
    let lines: Vec<&str> = page.lines().collect();
    let entries: Vec<String> = lines
        .windows(2)
        .filter(|w| w[0] == ".TP" && w[1].starts_with(".B STALLGUARD_"))
        .map(|w| w[1].trim_start_matches(".B ").to_string())
        .collect();
    assert_eq!(sorted(entries), table_names(), "man/libstallguard.so.8");
    for var in VARIABLES {
        let entry = format!(".TP\n.B {}\n", var.name);
        let after = &page[page.find(&entry).unwrap() + entry.len()..];
        match var.default {
            Some(default) => {
                let shown = format!("Default\n.BR {} .\n", default.replace('-', "\\-"));
                assert!(after.starts_with(&shown), "{}'s default", var.name);
            }
            None => assert!(after.starts_with("Default: "), "{}", var.name),
        }
    }
}
