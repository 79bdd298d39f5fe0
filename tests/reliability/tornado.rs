//! Issue 14: a second third-party suite, built around event loops: Tornado's own tests
//! (Debian's python3-tornado, installed by `make soak-deps`: HTTP servers and clients,
//! websockets, IOStream timeouts, all on asyncio), run once plain and once with the library
//! preloaded under the default policy, compared test by test.

use crate::cpython::{Outcome, Run, PYTHON};
use stallguard_testkit::{guard, scratch, scrub_env};
use std::collections::BTreeMap;
use std::process::Command;

pub const PROBE: &str = "/usr/lib/python3/dist-packages/tornado/test/runtests.py";

/// Per-test outcomes from unittest's `--verbose` lines: `NAME ... ok|skipped '…'|FAIL|ERROR`.
pub fn parse_verbose(text: &str) -> BTreeMap<String, Outcome> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, verdict)) = line.rsplit_once(" ... ") else {
            continue;
        };
        let outcome = match verdict {
            "ok" | "expected failure" => Outcome::Passed,
            "FAIL" | "unexpected success" => Outcome::Failed,
            "ERROR" => Outcome::Error,
            v if v.starts_with("skipped") => Outcome::Skipped,
            _ => continue,
        };
        out.insert(name.to_string(), outcome);
    }
    out
}

/// One run of the whole suite (about 20 s here), plain or guarded (default policy).
pub fn run(guarded: bool) -> Run {
    let log = scratch("tornado.guard.log");
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-m", "tornado.test.runtests", "--verbose"])
        .stdin(std::process::Stdio::null());
    scrub_env(&mut cmd);
    cmd.env_remove("PYTHONPATH").env_remove("PYTHONHOME");
    if guarded {
        guard(&mut cmd, &log, &[]);
    }
    let out = cmd.output().expect("run python3 -m tornado.test.runtests");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        results: parse_verbose(&output),
        output,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

pub fn present() -> Result<(), String> {
    if std::path::Path::new(PROBE).exists() {
        return Ok(());
    }
    Err(format!(
        "Tornado's test suite ({PROBE}) is needed: run `make soak-deps` (installs Debian's \
         python3-tornado)"
    ))
}

#[test]
fn verbose_lines_parse_into_outcomes() {
    let text = "Doctest: tornado.httputil.HTTPHeaders ... ok\n\
                test_a (tornado.test.x.T.test_a) ... skipped 'no ipv6'\n\
                test_b (tornado.test.x.T.test_b) ... FAIL\n\
                test_c (tornado.test.x.T.test_c) ... ERROR\n\
                test_d (tornado.test.x.T.test_d) ... expected failure\n\
                some log line ... with dots\n";
    let r = parse_verbose(text);
    assert_eq!(r.len(), 5);
    assert_eq!(r["Doctest: tornado.httputil.HTTPHeaders"], Outcome::Passed);
    assert_eq!(r["test_a (tornado.test.x.T.test_a)"], Outcome::Skipped);
    assert_eq!(r["test_b (tornado.test.x.T.test_b)"], Outcome::Failed);
    assert_eq!(r["test_c (tornado.test.x.T.test_c)"], Outcome::Error);
    assert_eq!(r["test_d (tornado.test.x.T.test_d)"], Outcome::Passed);
}
