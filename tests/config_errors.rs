//! Bad input never gets a silent default: one line on stderr naming the variable, the value
//! and what is accepted; exit status 2 by default; `STALLGUARD_ON_ERROR=warn` runs unguarded.

use stallguard_testkit::*;
use std::process::{Command, Output};

/// Runs the file/pipe I/O program (exits 0 on its own) under the shim with `vars`.
fn run_with(vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(harness("fileio_check"));
    cmd.env("LD_PRELOAD", shim());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run fileio_check")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Issue 14 item 6: the variable that points the tests at a build of the library is inherited
/// by guarded children (not every test scrubs the environment): the library must accept it,
/// so the test suite never needs a knob the library rejects.
#[test]
fn the_tests_library_variable_is_not_an_unknown_variable() {
    let so = shim();
    let out = run_with(&[(LIBRARY_VAR, so.to_str().unwrap())]);
    let lines = stderr_lines(&out);
    let named = lines.iter().any(|l| l.contains(LIBRARY_VAR));
    assert!(
        out.status.code() == Some(0) && !named,
        "{LIBRARY_VAR} refused or reported: {lines:?}"
    );
}

#[test]
fn every_bad_value_is_refused_with_a_clear_line_and_status_2() {
    let cases: &[(&str, &str, &str)] = &[
        ("STALLGUARD_FIRST_BYTE", "5x", "500ms"),
        ("STALLGUARD_FIRST_BYTE", "-3", "500ms"),
        ("STALLGUARD_IDLE", "", "500ms"),
        ("STALLGUARD_IDLE", "99999999999999999999", "500ms"),
        ("STALLGUARD_IDLE", "31d", "500ms"),
        ("STALLGUARD_WRITE_STALL", "1.2.3s", "500ms"),
        ("STALLGUARD_WRITE_STALL", "５s", "500ms"),
        ("STALLGUARD_REQUEST", "40-20", "T[-MAX]"),
        ("STALLGUARD_REQUEST", "20-40,minrate=abc", "minrate"),
        ("STALLGUARD_REQUEST", "20-40,speed=5", "unknown option"),
        ("STALLGUARD_ACTION", "kill", "shutdown, rst or log"),
        ("STALLGUARD_LIFETIME", "forever", "500ms"),
        ("STALLGUARD_PORTS", "8080", "PORT:off"),
        ("STALLGUARD_PORTS", "70000:off", "1 to 65535"),
        ("STALLGUARD_PORTS", "8080:idle=5x", "PORT:off"),
        ("STALLGUARD_PORTS", "8080:colour=red", "unknown timer"),
        ("STALLGUARD_EXEMPT", "10.0.0.0/33", "CIDR"),
        ("STALLGUARD_EXEMPT", "lb.example.com", "CIDR"),
        ("STALLGUARD_PER_SOURCE", "-1", "whole number"),
        ("STALLGUARD_PER_SOURCE", "many", "whole number"),
        ("STALLGUARD_ADOPT", "yes", "on or off"),
        ("STALLGUARD_TICK", "0", "10ms to 10s"),
        ("STALLGUARD_TICK", "1h", "10ms to 10s"),
        (
            "STALLGUARD_LOG",
            "verbose",
            "off, error, warn, info or debug",
        ),
        ("STALLGUARD_LOG_FILE", "relative/path.log", "absolute path"),
        (
            "STALLGUARD_LOG_FILE",
            "/nonexistent-dir/x.log",
            "cannot open",
        ),
        ("STALLGUARD_ON_ERROR", "ignore", "exit or warn"),
        ("STALLGUARD_DIRECT_SYSCALLS", "on", "auto or off"),
    ];
    for (var, value, accepted) in cases {
        let out = run_with(&[(var, value)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value:?} must stop the process"
        );
        assert!(
            out.stdout.is_empty(),
            "{var}={value:?}: the program must not have run"
        );
        let lines = stderr_lines(&out);
        let line = &lines[0];
        assert!(line.contains(var), "{var}={value:?}: {line}");
        assert!(
            line.contains(&format!("{value:?}")),
            "{var}={value:?}: {line}"
        );
        assert!(line.contains(accepted), "{var}={value:?}: {line}");
    }
}

#[test]
fn an_unknown_name_suggests_the_nearest_known_one() {
    let out = run_with(&[("STALLGUARD_FIST_BYTE", "5s")]);
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert!(
        lines[0].contains("STALLGUARD_FIST_BYTE")
            && lines[0].contains("did you mean STALLGUARD_FIRST_BYTE?"),
        "{lines:?}"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let out = run_with(&[("STALLGUARD_IDLE", "x"), ("STALLGUARD_ACTION", "y")]);
    let lines = stderr_lines(&out);
    assert!(
        lines.iter().any(|l| l.contains("STALLGUARD_IDLE")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("STALLGUARD_ACTION")),
        "{lines:?}"
    );
}

#[test]
fn on_error_warn_runs_the_program_unguarded_and_says_so() {
    let clean = Command::new(harness("fileio_check")).output().unwrap();
    let out = run_with(&[("STALLGUARD_IDLE", "5x"), ("STALLGUARD_ON_ERROR", "warn")]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, clean.stdout, "the program ran normally");
    let lines = stderr_lines(&out);
    assert!(
        lines.iter().any(|l| l.contains("STALLGUARD_IDLE")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("UNGUARDED")), "{lines:?}");
}

#[test]
fn unguarded_after_warn_really_does_not_reap() {
    let policy = [
        ("STALLGUARD_FIRST_BYTE", "1s"),
        ("STALLGUARD_IDLE", "bogus"),
        ("STALLGUARD_ON_ERROR", "warn"),
    ];
    let srv = Proc::start("pool_server", &["--threads", "1"], Some(&policy));
    let attackers = Attackers::launch(srv.addr(), Attack::Silent, 1);
    std::thread::sleep(std::time::Duration::from_millis(1800));
    assert_eq!(attackers.stop(), 0);
    assert!(srv.events("reap").is_empty());
}

#[test]
fn valid_values_in_every_documented_form_are_accepted() {
    let out = run_with(&[
        ("STALLGUARD_FIRST_BYTE", "500ms"),
        ("STALLGUARD_REQUEST", "20-40,minrate=500"),
        ("STALLGUARD_IDLE", "2m"),
        ("STALLGUARD_WRITE_STALL", "off"),
        ("STALLGUARD_ACTION", "log"),
        ("STALLGUARD_TICK", "250ms"),
        ("STALLGUARD_LOG", "debug"),
        ("STALLGUARD_ON_ERROR", "exit"),
        ("STALLGUARD_LIFETIME", "1h"),
        (
            "STALLGUARD_PORTS",
            "8080:request=10-20,minrate=1000,idle=15s;9000:off",
        ),
        ("STALLGUARD_EXEMPT", "10.0.0.0/8,::1"),
        ("STALLGUARD_PER_SOURCE", "50"),
        ("STALLGUARD_ADOPT", "off"),
        ("STALLGUARD_DIRECT_SYSCALLS", "off"),
    ]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 15 item 2: a log file that cannot be opened stops the process with the usual two
/// lines: what is wrong (the variable, the value, why, what to do: LogsDirectory=), then that
/// the process was refused and how to run it anyway.
#[test]
fn a_log_file_that_cannot_be_opened_is_refused_in_two_lines() {
    let out = run_with(&[("STALLGUARD_LOG_FILE", "/nonexistent-dir/x.log")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "the program must not have run");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("stallguard: invalid STALLGUARD_LOG_FILE=\"/nonexistent-dir/x.log\": cannot open it for appending: No such file or directory"),
        "{lines:?}"
    );
    assert!(lines[0].contains("LogsDirectory="), "{lines:?}");
    assert!(
        lines[1].starts_with("stallguard: refusing to start:")
            && lines[1].contains("STALLGUARD_ON_ERROR=warn"),
        "{lines:?}"
    );
    let warned = run_with(&[
        ("STALLGUARD_LOG_FILE", "/nonexistent-dir/x.log"),
        ("STALLGUARD_ON_ERROR", "warn"),
    ]);
    assert_eq!(warned.status.code(), Some(0));
    let lines = stderr_lines(&warned);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("UNGUARDED"), "{lines:?}");
}
