//! Item 7: transparency against a third-party, socket-heavy test suite: CPython's own
//! regression tests (Debian's python3.11 with the libpython3.11-testsuite package, installed
//! by `make soak-deps`), run once plain and once with the shim preloaded (into every worker
//! process: regrtest -j forks/execs them with the environment), compared test by test.
//!
//! Loopback only: only test_socketserver (which serves on localhost) gets `-u network`; the
//! other modules run without the network resource, so their internet tests are skipped.

use stallguard_testkit::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PYTHON: &str = "/usr/bin/python3";
pub const TESTSUITE_PROBE: &str = "/usr/lib/python3.11/test/test_socketserver.py";

/// CI-sized: ~20 s per run on this machine.
pub const CI_MODULES: &[&str] = &[
    "test_asyncio.test_sock_lowlevel",
    "test_asyncio.test_streams",
    "test_asyncio.test_server",
    "test_asyncio.test_sendfile",
    "test_select",
    "test_epoll",
    "test_urllib2_localnet",
    "test_telnetlib",
    "test_wsgiref",
    "test_httpservers",
];
/// The long form adds these (test_socket is left out: over 5 minutes even without the shim).
pub const SOAK_MODULES: &[&str] = &[
    "test_httplib",
    "test_smtplib",
    "test_asyncio.test_events",
    "test_poll",
    "test_selectors",
    "test_xmlrpc",
    "test_ftplib",
    "test_ssl",
];
/// Run with `-u network`: serves and connects on localhost only.
pub const NETWORK_MODULES: &[&str] = &["test_socketserver"];

pub const POLICY: &[(&str, &str)] = &[("STALLGUARD_TICK", "10ms")];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Passed,
    Skipped,
    Failed,
    Error,
}

pub struct Run {
    pub results: BTreeMap<String, Outcome>,
    pub output: String,
    /// The guard log (guarded run): `event=start` per process that tracked a connection.
    pub log: String,
}

impl Run {
    pub fn count(&self, o: Outcome) -> usize {
        self.results.values().filter(|v| **v == o).count()
    }

    /// `N cases: P passed, S skipped, F failed, E errors`.
    pub fn summary(&self) -> String {
        format!(
            "{} cases: {} passed, {} skipped, {} failed, {} errors",
            self.results.len(),
            self.count(Outcome::Passed),
            self.count(Outcome::Skipped),
            self.count(Outcome::Failed),
            self.count(Outcome::Error)
        )
    }
}

/// Per-test outcomes from regrtest's --junit-xml output.
pub fn parse_junit(xml: &str) -> BTreeMap<String, Outcome> {
    let mut out = BTreeMap::new();
    for chunk in xml.split("<testcase ").skip(1) {
        let Some(name) = chunk
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        // The case's own content ends at its closing tag (or it is self-closing).
        let head_end = chunk.find('>').unwrap_or(chunk.len());
        let body = if chunk[..head_end].ends_with('/') {
            ""
        } else {
            chunk.split("</testcase>").next().unwrap_or("")
        };
        let outcome = if body.contains("<failure") {
            Outcome::Failed
        } else if body.contains("<error") {
            Outcome::Error
        } else if body.contains("<skipped") || chunk[..head_end].contains("status=\"skipped\"") {
            Outcome::Skipped
        } else {
            Outcome::Passed
        };
        out.insert(name.replace("&lt;", "<").replace("&gt;", ">"), outcome);
    }
    out
}

fn regrtest(
    modules: &[&str],
    network: bool,
    guarded: bool,
    log: &Path,
) -> (BTreeMap<String, Outcome>, String) {
    let xml = scratch("regrtest.xml");
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-m", "test", "-j2", "--timeout", "300", "--junit-xml"])
        .arg(&xml);
    if network {
        cmd.args(["-u", "network"]);
    }
    cmd.args(modules).stdin(std::process::Stdio::null());
    scrub_env(&mut cmd);
    cmd.env_remove("PYTHONPATH").env_remove("PYTHONHOME");
    if guarded {
        guard(&mut cmd, log, POLICY);
    }
    let out = cmd.output().expect("run python3 -m test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results = parse_junit(&std::fs::read_to_string(&xml).unwrap_or_default());
    (results, text)
}

pub fn run(modules: &[&str], guarded: bool) -> Run {
    let log = scratch("cpython.guard.log");
    let (mut results, mut output) = regrtest(modules, false, guarded, &log);
    let (net, net_out) = regrtest(NETWORK_MODULES, true, guarded, &log);
    results.extend(net);
    output.push_str(&net_out);
    Run {
        results,
        output,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

pub fn testsuite_present() -> Result<PathBuf, String> {
    let probe = PathBuf::from(TESTSUITE_PROBE);
    if !Path::new(PYTHON).exists() || !probe.exists() {
        return Err(format!(
            "{PYTHON} with CPython's test suite ({TESTSUITE_PROBE}) is needed: run `make soak-deps` \
             (installs Debian's libpython3.11-testsuite)"
        ));
    }
    Ok(probe)
}

/// Runs a suite plain and guarded (`run(guarded)`) and returns both runs and the tests whose
/// outcome differs. One retry of the whole comparison weeds out a test that is merely flaky on
/// a loaded machine: a real difference shows up again.
pub fn compare(run: impl Fn(bool) -> Run) -> (Run, Run, Vec<String>) {
    let plain = run(false);
    let guarded = run(true);
    let mut diff = differences(&plain, &guarded);
    if !diff.is_empty() {
        eprintln!("first comparison differs, retrying: {diff:#?}");
        let again = differences(&run(false), &run(true));
        diff.retain(|d| {
            again
                .iter()
                .any(|a| a.split(':').next() == d.split(':').next())
        });
    }
    (plain, guarded, diff)
}

/// Tests whose outcome differs between the two runs.
pub fn differences(a: &Run, b: &Run) -> Vec<String> {
    let mut d = Vec::new();
    for (name, oa) in &a.results {
        match b.results.get(name) {
            Some(ob) if ob == oa => {}
            other => d.push(format!("{name}: plain {oa:?}, guarded {other:?}")),
        }
    }
    for name in b.results.keys() {
        if !a.results.contains_key(name) {
            d.push(format!("{name}: only in the guarded run"));
        }
    }
    d
}
