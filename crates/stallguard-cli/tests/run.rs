//! `stallguard run`: flags reach the shim (its start line), bad input starts nothing,
//! `--check`, the environment merge, LD_PRELOAD handling, exit statuses.

use stallguard_testkit::cli::*;
use stallguard_testkit::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The server's environment, from /proc.
fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn flags_reach_the_shim_and_merge_over_the_environment() {
    let log = scratch("run-flags.log");
    let mut cmd = Command::new(cli_bin());
    cmd.args([
        "run",
        "--first-byte",
        "30s",
        "--request",
        "5-9,minrate=100",
        "--idle",
        "45s",
        "--write-stall",
        "50s",
        "--tick",
        "50ms",
        "--per-source",
        "7",
        "--action",
        "log",
        "--log-file",
        log.to_str().unwrap(),
        "--",
    ])
    .arg(example("pool_server"))
    .arg("0")
    .env("STALLGUARD_LIB", shim())
    .env("STALLGUARD_LIFETIME", "1h") // from the environment
    .env("STALLGUARD_IDLE", "5s") // overridden by --idle
    .env("LD_PRELOAD", "libm.so.6") // kept, after the library
    .stdin(Stdio::null());
    let server = Proc::launch("pool_server", cmd, log, true);
    // exec: the server runs under the command's own pid.
    let env = environ(server.pid());
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("LD_PRELOAD"),
        Some(format!("{}:libm.so.6", shim().display()))
    );
    assert_eq!(get("STALLGUARD_IDLE").as_deref(), Some("45s"));
    assert_eq!(
        get("STALLGUARD_LIB"),
        None,
        "the command's own variable leaked"
    );

    // The start line comes with the first tracked connection.
    let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let start = server.wait_events("start", 1, Duration::from_secs(10));
    assert_eq!(start.len(), 1, "no start line: {}", server.log_text());
    let line = &start[0];
    for (k, v) in [
        ("first_byte", "30s"),
        ("request", "5s-9s,minrate=100"),
        ("idle", "45s"),
        ("write_stall", "50s"),
        ("lifetime", "1h"), // in the largest exact unit
        ("tick", "50ms"),
        ("per_source", "7"),
        ("action", "log"),
    ] {
        assert_eq!(line.get(k).map(String::as_str), Some(v), "{k}: {line:?}");
    }
}

#[test]
fn a_bad_flag_exits_2_and_starts_nothing() {
    let marker = scratch("must-not-exist");
    let out = Command::new(cli_bin())
        .args([
            "run", "--idle", "5x", "--tick", "1ms", "--", "/bin/sh", "-c",
        ])
        .arg(format!("touch {}", marker.display()))
        .env("STALLGUARD_LIB", shim())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.iter().any(|l| l
            .starts_with("stallguard: invalid --idle \"5x\" (STALLGUARD_IDLE): ")
            && l.contains("500ms")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("stallguard: invalid --tick \"1ms\"") && l.contains("10ms")),
        "{err}"
    );
    assert!(err.contains("nothing was started"), "{err}");
    assert!(text(&out.stdout).is_empty());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "the command ran");

    // An unknown variable in the environment is refused as the shim would.
    let out = Command::new(cli_bin())
        .args(["run", "--", "/bin/true"])
        .env("STALLGUARD_LIB", shim())
        .env("STALLGUARD_IDEL", "5s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("did you mean STALLGUARD_IDLE?"), "{err}");
    assert!(err.contains("(from the environment)"), "{err}");

    // Usage errors are clap's, also 2.
    for args in [
        &["run", "--idle"][..],
        &["run"][..],
        &["run", "--nope", "x", "--", "/bin/true"][..],
    ] {
        let out = Command::new(cli_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn negative_values_are_refused_not_run_and_messages_are_precise() {
    let marker = scratch("negative-must-not-exist");
    for value in ["-1", "-5s"] {
        let out = Command::new(cli_bin())
            .args(["run", "--idle", value, "/bin/sh", "-c"])
            .arg(format!("touch {}", marker.display()))
            .env("STALLGUARD_LIB", shim())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{value}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("invalid --idle \"{value}\" (STALLGUARD_IDLE)"))
                && err.contains("negative durations are not accepted"),
            "{value}: {err}"
        );
        assert!(!err.contains("cannot run"), "{value}: {err}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "the command ran");

    let refusal = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(cli_bin())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        text(&out.stderr)
    };
    let err = refusal(&["run", "--check"], &[("STALLGUARD_IDLE", "-1")]);
    assert!(err.contains("negative durations are not accepted"), "{err}");
    assert!(!err.contains("unknown unit"), "{err}");
    let err = refusal(&["run", "--check"], &[("STALLGUARD_FOO", "1")]);
    assert!(!err.contains("did you mean"), "{err}");
    assert!(
        err.contains("unknown variable; known: STALLGUARD_"),
        "{err}"
    );
    let err = refusal(&["run", "--check", "--ports", "80:idel=5s"], &[]);
    assert!(err.contains("did you mean idle?"), "{err}");
    let err = refusal(&["run", "--check", "--per-source", "0"], &[]);
    assert!(err.contains("use off for no cap"), "{err}");
}

#[test]
fn check_echoes_days_and_exempt_ranges_on_its_first_line() {
    let out = Command::new(cli_bin())
        .args(["run", "--check", "--lifetime", "720h", "--idle", "1d"])
        .args(["--exempt", "10.0.0.0/24,::1"])
        .env("STALLGUARD_LIB", shim())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first: Vec<&str> = stdout.lines().next().unwrap_or("").split(' ').collect();
    for part in ["lifetime=30d", "idle=1d", "exempt=10.0.0.0/24,::1/128"] {
        assert!(first.contains(&part), "{part}: {stdout}");
    }
}

#[test]
fn check_prints_the_effective_policy() {
    let out = Command::new(cli_bin())
        .args([
            "run",
            "--check",
            "--idle",
            "15s",
            "--tick",
            "200ms",
            "--ports",
            "8080:idle=5s",
        ])
        .env("STALLGUARD_TICK", "50ms")
        .env("STALLGUARD_FIRST_BYTE", "3s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (expected, errors) = stallguard_policy::parse_env([
        ("STALLGUARD_FIRST_BYTE", "3s"),
        ("STALLGUARD_IDLE", "15s"),
        ("STALLGUARD_TICK", "200ms"),
        ("STALLGUARD_PORTS", "8080:idle=5s"),
    ]);
    assert!(errors.is_empty());
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().next(), Some(expected.describe().as_str()));
    assert!(
        stdout.lines().last().unwrap_or("").starts_with("ok: "),
        "{stdout}"
    );

    let out = stallguard(&["run", "--check", "--action", "kill"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("shutdown, rst or log"));
}

#[test]
fn every_policy_variable_has_a_documented_flag() {
    let out = stallguard(&["run", "--help"]);
    let help = text(&out.stdout);
    for var in stallguard_policy::policy::VARIABLES.iter().map(|v| v.name) {
        let flag = format!(
            "--{}",
            var.trim_start_matches("STALLGUARD_")
                .to_ascii_lowercase()
                .replace('_', "-")
        );
        assert!(help.contains(&flag), "{flag} missing from run --help");
        assert!(help.contains(var), "{var} missing from run --help");
    }
    assert!(help.contains("Examples:"), "{help}");
}

#[test]
fn missing_library_and_missing_command() {
    let out = Command::new(cli_bin())
        .args(["run", "--", "/bin/true"])
        .env("STALLGUARD_LIB", "/nonexistent/libstallguard.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("STALLGUARD_LIB=/nonexistent/libstallguard.so"));

    let out = Command::new(cli_bin())
        .args(["run", "--", "/nonexistent/server"])
        .env("STALLGUARD_LIB", shim())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("cannot run /nonexistent/server"));
}

#[test]
fn version_and_help_everywhere() {
    let out = Command::new(cli_bin()).arg("--version").output().unwrap();
    assert!(
        text(&out.stdout).starts_with("stallguard "),
        "{}",
        text(&out.stdout)
    );
    for sub in ["run", "check", "top", "reap", "metrics", "status"] {
        let out = stallguard(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(
            text(&out.stdout).contains("Examples:"),
            "{sub} --help has no examples"
        );
    }
}
