//! The Debian package and `make install`: the package holds exactly what scripts/install.sh
//! lists, stripped; installed with dpkg into a scratch root (as root; otherwise unpacked with
//! dpkg-deb) its command checks a binary and runs a guarded server that reaps a silent client
//! using only the installed paths; removed with dpkg, nothing is left. `make install` copies
//! without building and `make uninstall` removes all of it. Self-contained (needs `make`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = repo()
        .join("target/test-scratch")
        .join(format!("packaging-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// What scripts/install.sh installs for this layout (paths without the leading `/`).
fn manifest(env: &[(&str, &str)]) -> BTreeSet<String> {
    stdout(
        Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .arg("list")
            .envs(env.iter().copied()),
    )
    .lines()
    .map(|l| l.trim_start_matches('/').to_string())
    .collect()
}

const DEB_LAYOUT: &[(&str, &str)] = &[
    ("PREFIX", "/usr"),
    ("ZSHDIR", "/usr/share/zsh/vendor-completions"),
    ("GZIP_MAN", "1"),
];

fn assert_built() {
    for built in [
        "target/release/stallguard",
        "target/release/libstallguard.so",
        "target/completions/stallguard.bash",
        "target/c-examples/pool_server",
    ] {
        assert!(
            repo().join(built).exists(),
            "{built} missing: run `make` first"
        );
    }
}

/// Builds the package from what `make` built (no compiling: scripts/deb.sh only stages).
fn build_deb() -> PathBuf {
    assert_built();
    let deb = stdout(Command::new("bash").arg(repo().join("scripts/deb.sh")));
    let deb = repo().join(deb.trim());
    assert!(deb.exists(), "{}", deb.display());
    deb
}

fn not_stripped(binary: &Path) -> Vec<String> {
    stdout(Command::new("readelf").arg("-SW").arg(binary))
        .lines()
        .filter_map(|l| {
            [".symtab", ".debug_info", ".debug_line"]
                .into_iter()
                .find(|s| l.contains(&format!(" {s} ")))
        })
        .map(str::to_string)
        .collect()
}

/// Starts the installed command on a C example server, a silent client is reaped.
fn guarded_server_reaps_from(root: &Path) {
    let log = root.join("guard.log");
    let mut cmd = Command::new(root.join("usr/bin/stallguard"));
    cmd.args(["run", "--first-byte", "1s", "--tick", "50ms", "--log-file"]);
    cmd.arg(&log)
        .arg("--")
        .arg(repo().join("target/c-examples/pool_server"));
    cmd.arg("0")
        .env_remove("STALLGUARD_LIB")
        .env_remove("LD_PRELOAD");
    let mut server = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().trim_start_matches("port=").parse().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.id())).unwrap();
    let lib = root
        .join("usr/lib/libstallguard.so")
        .canonicalize()
        .unwrap();
    assert!(
        maps.contains(lib.to_str().unwrap()),
        "the installed library is not the one loaded"
    );
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let t = Instant::now();
    let mut b = [0u8; 16];
    let n = client.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "the silent client was not cut");
    assert!(t.elapsed() < Duration::from_secs(8));
    let end = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < end && !text.contains("event=reap ") {
        std::thread::sleep(Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    assert!(
        text.contains("event=reap ") && text.contains("reason=first_byte"),
        "{text}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_debian_package_installs_runs_a_guarded_server_and_removes_cleanly() {
    let deb = build_deb();
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for field in [
        "Package: stallguard",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Depends: libc6 (>= 2.",
        "Maintainer: ",
        "Description: ",
    ] {
        assert!(info.contains(field), "no {field:?} in\n{info}");
    }
    // The package holds exactly the manifest (directories aside).
    let files: BTreeSet<String> = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb))
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .unwrap()
                .trim_start_matches("./")
                .to_string()
        })
        .collect();
    let expected = manifest(DEB_LAYOUT);
    assert_eq!(files, expected);
    for must in [
        "usr/bin/stallguard",
        "usr/lib/libstallguard.so",
        "usr/include/stallguard.h",
        "usr/share/man/man1/stallguard.1.gz",
        "usr/share/man/man8/libstallguard.so.8.gz",
        "usr/share/bash-completion/completions/stallguard",
        "usr/share/zsh/vendor-completions/_stallguard",
        "usr/share/fish/vendor_completions.d/stallguard.fish",
        "usr/share/doc/stallguard/LICENSE",
        "usr/share/doc/stallguard/CHANGELOG.md",
        "usr/share/stallguard/contrib/systemd/stallguard.conf",
        "usr/share/stallguard/contrib/stallguard.env",
        "usr/share/stallguard/contrib/prometheus/stallguard.rules.yml",
        "usr/share/stallguard/contrib/grafana/stallguard.json",
        "usr/share/stallguard/contrib/logrotate/stallguard",
    ] {
        assert!(files.contains(must), "{must} not in the package");
    }

    // Installed into a clean root: with dpkg (its own database there) as root, else unpacked.
    let root = scratch("root");
    let as_root = unsafe { libc::geteuid() } == 0;
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .arg("--log=/dev/null")
            .args(args);
        c
    };
    if as_root {
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        // libc6 is not in the scratch database: the dependency is the host's.
        run(dpkg(&["--force-depends", "-i", deb.to_str().unwrap()]).stderr(Stdio::null()));
        let status = stdout(&mut dpkg(&["-s", "stallguard"]));
        assert!(status.contains("Status: install ok installed"), "{status}");
    } else {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    }
    let bin = root.join("usr/bin/stallguard");
    let lib = root.join("usr/lib/libstallguard.so");
    assert_eq!(
        not_stripped(&bin),
        Vec::<String>::new(),
        "command not stripped"
    );
    assert_eq!(
        not_stripped(&lib),
        Vec::<String>::new(),
        "library not stripped"
    );
    let version = stdout(Command::new(&bin).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("stallguard {}", env!("CARGO_PKG_VERSION"))
    );
    let check = stdout(
        Command::new(&bin)
            .arg("check")
            .arg(repo().join("target/c-examples/pool_server")),
    );
    assert!(check.contains("guardable"), "{check}");
    let ok = stdout(
        Command::new(&bin)
            .args(["run", "--check"])
            .env_remove("STALLGUARD_LIB"),
    );
    assert_eq!(
        ok.lines().last().unwrap_or(""),
        format!(
            "ok: policy valid; would preload {}",
            lib.canonicalize().unwrap().display()
        )
    );
    run(Command::new("gzip")
        .arg("-t")
        .arg(root.join("usr/share/man/man1/stallguard.1.gz")));
    guarded_server_reaps_from(&root);

    if as_root {
        run(dpkg(&["-r", "stallguard"]).stdout(Stdio::null()));
        let left: Vec<String> = expected
            .iter()
            .filter(|f| root.join(f).exists())
            .cloned()
            .collect();
        assert!(left.is_empty(), "left after dpkg -r: {left:?}");
        let status = dpkg(&["-s", "stallguard"]).output().unwrap();
        assert!(!status.status.success(), "still registered");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn make_install_copies_without_building_and_make_uninstall_removes_it_all() {
    assert_built();
    let plan = stdout(
        Command::new("make")
            .arg("-n")
            .arg("install")
            .current_dir(repo()),
    );
    assert!(!plan.contains("cargo"), "make install builds:\n{plan}");
    let dest = scratch("destdir");
    let vars = [
        format!("DESTDIR={}", dest.display()),
        "PREFIX=/opt/sg".to_string(),
    ];
    run(Command::new("make")
        .arg("-s")
        .arg("install")
        .args(&vars)
        .current_dir(repo()));
    let expected = manifest(&[("PREFIX", "/opt/sg")]);
    for f in &expected {
        assert!(dest.join(f).is_file(), "{f} not installed");
    }
    assert!(not_stripped(&dest.join("opt/sg/bin/stallguard")).is_empty());
    assert!(not_stripped(&dest.join("opt/sg/lib/libstallguard.so")).is_empty());
    // The installed command finds the installed library (../lib).
    let ok = stdout(
        Command::new(dest.join("opt/sg/bin/stallguard"))
            .args(["run", "--check"])
            .env_remove("STALLGUARD_LIB"),
    );
    assert!(
        ok.trim_end()
            .ends_with(&format!("{}/opt/sg/lib/libstallguard.so", dest.display())),
        "{ok}"
    );
    run(Command::new("make")
        .arg("-s")
        .arg("uninstall")
        .args(&vars)
        .current_dir(repo()));
    let left: Vec<PathBuf> = walk(&dest);
    assert!(left.is_empty(), "left after make uninstall: {left:?}");
    let _ = std::fs::remove_dir_all(&dest);
}

/// Every regular file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
