//! The operator-facing files agree with the code: the systemd drop-ins (contrib/ and the
//! README's) pass `systemd-analyze verify`, the EnvironmentFile example lists every variable
//! the library accepts, the alert rules and the dashboard are well formed and use only series
//! the exporter emits, and the README's variable table and sample log lines match the library.
//! Self-contained: reads files, runs systemd-analyze, python3 and the command.

use stallguard_policy::policy::VARIABLES;
use stallguard_policy::{parse_env, Policy};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A fresh directory under the system's temporary directory.
fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sg-contrib-{}-{name}", std::process::id()));
    if d.exists() {
        std::fs::remove_dir_all(&d).unwrap();
    }
    std::fs::create_dir(&d).map(|()| d).unwrap()
}

/// `systemd-analyze verify` of a plain service with `drop_in` as its drop-in: the warnings
/// that name the drop-in (empty when it is clean).
fn verify_drop_in(drop_in: &str, tag: &str) -> String {
    let dir = tmp_dir(tag);
    std::fs::create_dir_all(dir.join("legacy-api.service.d")).unwrap();
    std::fs::write(
        dir.join("legacy-api.service"),
        "[Unit]\nDescription=a legacy server\n[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    std::fs::write(dir.join("legacy-api.service.d/stallguard.conf"), drop_in).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("legacy-api.service"))
        .output()
        .expect("systemd-analyze is missing: run `make deps` (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{err}");
    err.lines()
        .filter(|l| l.contains("stallguard.conf") || l.contains("legacy-api.service:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `Environment=` assignments of a unit file (quotes removed).
fn environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|v| v.trim_matches('"'))
        .filter_map(|v| v.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The README's systemd drop-in (the ```ini block under its heading).
fn readme_drop_in() -> String {
    let readme = read("README.md");
    let at = readme.find("### A deployment: systemd drop-in").unwrap();
    let block = &readme[at..];
    let start = block.find("```ini\n").unwrap() + 7;
    let end = start + block[start..].find("```").unwrap();
    block[start..end].to_string()
}

#[test]
fn the_systemd_drop_ins_verify_and_create_the_log_directory() {
    for (name, unit) in [
        ("contrib", read("contrib/systemd/stallguard.conf")),
        ("readme", readme_drop_in()),
    ] {
        assert_eq!(verify_drop_in(&unit, name), "", "{name} drop-in");
        // The checker reads the drop-in: a bad key in it is reported.
        let broken = format!("{unit}\nNoSuchKey=1\n");
        assert!(
            verify_drop_in(&broken, &format!("{name}-broken")).contains("NoSuchKey"),
            "systemd-analyze did not read the {name} drop-in"
        );
        assert!(
            unit.lines().any(|l| l == "LogsDirectory=stallguard"),
            "{name}: {unit}"
        );
        let env = environment(&unit);
        let log = env
            .iter()
            .find(|(k, _)| k == "STALLGUARD_LOG_FILE")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        assert!(log.starts_with("/var/log/stallguard/"), "{name}: {log}");
        assert!(env
            .iter()
            .any(|(k, v)| k == "LD_PRELOAD" && v.ends_with("/libstallguard.so")));
        let (_, errors) = parse_env(
            env.iter()
                .filter(|(k, _)| k.starts_with("STALLGUARD_"))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

/// `(name, value, comment above it)` of every commented-out assignment in the env file.
fn env_file_entries() -> Vec<(String, String, String)> {
    let text = read("contrib/stallguard.env");
    let mut out = Vec::new();
    let mut comment = String::new();
    for line in text.lines() {
        if let Some(assign) = line.strip_prefix("#STALLGUARD_") {
            let (k, v) = assign.split_once('=').unwrap();
            out.push((format!("STALLGUARD_{k}"), v.to_string(), comment.clone()));
            comment.clear();
        } else if let Some(c) = line.strip_prefix("# ") {
            comment += c;
            comment += " ";
        } else if line.trim().is_empty() {
            comment.clear();
        } else {
            assert!(
                line.starts_with('#'),
                "uncommented line in stallguard.env: {line}"
            );
        }
    }
    out
}

#[test]
fn the_env_file_lists_every_variable_once_commented_with_valid_values() {
    let entries = env_file_entries();
    let names: Vec<&str> = entries.iter().map(|(k, _, _)| k.as_str()).collect();
    let accepted: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        accepted.iter().copied().collect::<BTreeSet<_>>(),
        "contrib/stallguard.env and stallguard_policy::VARIABLES differ"
    );
    assert_eq!(names.len(), accepted.len(), "a variable appears twice");
    for (k, _, comment) in &entries {
        assert!(
            comment.contains("(default)") || comment.contains("(example"),
            "{k}: its comment must say (default) or (example): {comment:?}"
        );
    }
    // Every value is accepted, and the "(default)" ones are the defaults.
    let all: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    let (_, errors) = parse_env(all);
    assert!(errors.is_empty(), "{errors:?}");
    let defaults: Vec<(&str, &str)> = entries
        .iter()
        .filter(|(_, _, c)| c.contains("(default)"))
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    let (p, errors) = parse_env(defaults);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(p, Policy::default(), "a (default) value is not the default");
}

#[test]
fn the_readme_table_the_man_page_and_the_library_agree_on_variables() {
    let readme = read("README.md");
    let table: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `STALLGUARD_"))
        .map(|l| format!("STALLGUARD_{}", l.split('`').next().unwrap()))
        .collect();
    let page = read("man/libstallguard.so.8");
    // Entries: a `.TP` line, then `.B NAME`.
    let lines: Vec<&str> = page.lines().collect();
    let man: BTreeSet<String> = lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| w[1].strip_prefix(".B STALLGUARD_"))
        .map(|n| format!("STALLGUARD_{n}"))
        .collect();
    let accepted: BTreeSet<String> = VARIABLES.iter().map(|v| v.name.to_string()).collect();
    assert_eq!(table, accepted, "README's variable table");
    assert_eq!(man, accepted, "libstallguard.so(8)'s variable entries");
}

#[test]
fn the_docs_sample_log_lines_have_every_field() {
    let start_keys: Vec<String> = Policy::default()
        .describe()
        .split_whitespace()
        .map(|kv| kv.split('=').next().unwrap().to_string())
        .collect();
    let reap_keys = [
        "fd",
        "peer",
        "port",
        "reason",
        "waited",
        "bytes_in",
        "bytes_out",
        "view",
        "action",
    ];
    let mut seen = (0, 0);
    for doc in ["README.md", "man/libstallguard.so.8", "man/stallguard.1"] {
        // Man pages continue a sample line on indented lines.
        let text = read(doc).replace("\n  ", " ").replace("\\-", "-");
        for line in text.lines().filter(|l| l.contains("prog=stallguard")) {
            let keys: Vec<&str> = line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .collect();
            if line.contains("event=start") {
                seen.0 += 1;
                for k in &start_keys {
                    assert!(keys.contains(&k.as_str()), "{doc}: no {k}= in {line}");
                }
            }
            if line.contains("event=reap ") || line.contains("event=would_reap ") {
                seen.1 += 1;
                for k in reap_keys {
                    assert!(keys.contains(&k), "{doc}: no {k}= in {line}");
                }
            }
        }
    }
    assert!(seen.0 >= 1 && seen.1 >= 3, "{seen:?}");
    assert!(
        !read("README.md").contains("~1 minute"),
        "make test takes about 11 minutes"
    );
    let page = read("man/libstallguard.so.8");
    assert!(
        page.contains("= twice the write-stall timer"),
        "TCP_USER_TIMEOUT is twice the write-stall timer"
    );
}

/// The metric names `stallguard metrics` emits (HELP lines of the exporter's own output).
fn exported_metric_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = stallguard_shm::Counters::default()
        .prometheus("")
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    names.insert("stallguard_build_info".into());
    names
}

/// Every `stallguard_*` identifier in a PromQL expression.
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("stallguard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// YAML → JSON through python3's yaml module (python3-yaml; `make deps` installs it).
fn yaml_as_json(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python3 is missing");
    assert!(
        out.status.success(),
        "YAML does not parse (python3-yaml missing? run `make deps`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_alert_rules_are_well_formed_and_use_exported_series() {
    let path = repo().join("contrib/prometheus/stallguard.rules.yml");
    // promtool (Debian's prometheus package, ~96 MB installed) when present; the structure
    // check below runs everywhere.
    if let Ok(out) = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let doc = yaml_as_json(&path);
    let known = exported_metric_names();
    let groups = doc["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    let mut alerts = BTreeSet::new();
    for g in groups {
        assert!(g["name"].is_string());
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(name.to_string()), "{name} twice");
            let expr = r["expr"].as_str().expect("expr");
            let used = metric_names_in(expr);
            assert!(!used.is_empty(), "{name}: {expr}");
            for m in used {
                assert!(
                    known.contains(&m),
                    "{name}: unknown series {m} (known: {known:?})"
                );
            }
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{name}: {expr}"
            );
            let for_ = r["for"].as_str().expect("for");
            assert!(
                stallguard_policy::parse_duration_ms(for_).is_ok(),
                "{name}: for {for_}"
            );
            let sev = r["labels"]["severity"].as_str().expect("severity");
            assert!(["info", "warning", "critical"].contains(&sev), "{name}");
            assert!(r["annotations"]["summary"].is_string(), "{name}");
            assert!(r["annotations"]["description"].is_string(), "{name}");
        }
    }
    for must in [
        "StallguardReapingSustained",
        "StallguardMostConnectionsWaiting",
        "StallguardWouldReap",
    ] {
        assert!(alerts.contains(must), "{must} missing: {alerts:?}");
    }
}

#[test]
fn the_grafana_dashboard_is_json_with_reaps_by_reason_and_waiting_panels() {
    let doc: serde_json::Value =
        serde_json::from_str(&read("contrib/grafana/stallguard.json")).expect("valid JSON");
    let known = exported_metric_names();
    assert_eq!(doc["uid"], "stallguard");
    let panels = doc["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut has = (false, false);
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate panel id"
        );
        let title = p["title"].as_str().unwrap();
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().unwrap();
            for m in metric_names_in(expr) {
                assert!(known.contains(&m), "{title}: unknown series {m}");
            }
            if expr.contains("stallguard_reaped_total") && expr.contains("by (reason)") {
                has.0 = true;
            }
            if expr.contains("stallguard_connections_waiting") {
                has.1 = true;
            }
        }
        let g = &p["gridPos"];
        assert!(g["w"].as_u64().unwrap() <= 24 && g["h"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        has,
        (true, true),
        "panels for reaps by reason and waiting connections"
    );
}
