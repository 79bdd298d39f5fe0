//! Log rotation (issue 15): the watcher follows the file at STALLGUARD_LOG_FILE when it is
//! replaced (`mv` then a new file, logrotate's `create`), and `copytruncate` keeps working
//! (O_APPEND). contrib/logrotate/stallguard is run for real with the `logrotate` binary.

use stallguard_testkit::*;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn text_of(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits until the file at `p` holds `what`.
fn wait_for(p: &Path, what: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let t = text_of(p);
        if t.contains(what) || Instant::now() > end {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A guarded C example server `name` whose log is `dir/guard.log`.
fn server_named(name: &str, dir: &Path) -> (Proc, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("guard.log");
    let mut cmd = Command::new(example(name));
    cmd.arg("0").stderr(std::process::Stdio::inherit());
    guard(&mut cmd, &log, FAST);
    let srv = Proc::launch(name, cmd, log.clone(), true);
    assert!(!srv
        .wait_events("start", 1, Duration::from_secs(3))
        .is_empty());
    (srv, log)
}

fn server(dir: &Path) -> (Proc, PathBuf) {
    server_named("pool_server", dir)
}

/// logrotate (in /usr/sbin, which a user's PATH may lack).
fn logrotate_bin() -> &'static str {
    if Path::new("/usr/sbin/logrotate").exists() {
        "/usr/sbin/logrotate"
    } else {
        "logrotate"
    }
}

/// A silent client, reaped for first_byte: a line the watcher writes on demand.
fn reap_one(srv: &Proc, log: &Path, nth: usize) -> String {
    let mut silent = TcpStream::connect(srv.addr()).unwrap();
    assert!(wait_cut(&mut silent, Duration::from_secs(4)));
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let t = text_of(log);
        if events_in(&t, "reap").len() >= nth || Instant::now() > end {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mv guard.log guard.log.1; : > guard.log`: the next lines go to the new file, the old one
/// stops growing once the watcher noticed (within a second).
#[test]
fn a_log_moved_away_and_replaced_is_reopened_by_path() {
    let dir = scratch("rotation-mv");
    let (srv, log) = server(&dir);
    let old = dir.join("guard.log.1");
    std::fs::rename(&log, &old).unwrap();
    std::fs::File::create(&log).unwrap();
    let t = wait_for(&log, "event=log_reopened", Duration::from_secs(3));
    assert!(
        t.contains("event=log_reopened"),
        "new: {t}\nold: {}",
        text_of(&old)
    );
    let old_size = size(&old);
    let new = reap_one(&srv, &log, 1);
    assert_eq!(events_in(&new, "reap").len(), 1, "{new}");
    assert_eq!(
        size(&old),
        old_size,
        "the old file grew:\n{}",
        text_of(&old)
    );
    assert!(events_in(&text_of(&old), "reap").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fork-per-connection server: the child that serves a connection after the rotation (its
/// watcher starts in the child, with the program's copy of the log descriptor still naming
/// the old file) writes its lines to the new file too.
#[test]
fn a_forked_child_after_a_rotation_logs_to_the_new_file() {
    let dir = scratch("rotation-fork");
    let (srv, log) = server_named("forking_server", &dir);
    let old = dir.join("guard.log.1");
    std::fs::rename(&log, &old).unwrap();
    std::fs::File::create(&log).unwrap();
    let t = wait_for(&log, "event=log_reopened", Duration::from_secs(3));
    assert!(
        t.contains("event=log_reopened"),
        "new: {t}\nold: {}",
        text_of(&old)
    );
    let old_size = size(&old);
    let new = reap_one(&srv, &log, 1);
    let reaps = events_in(&new, "reap");
    assert_eq!(reaps.len(), 1, "{new}\nold: {}", text_of(&old));
    assert_ne!(
        reaps[0]["pid"],
        srv.pid().to_string(),
        "reaped by the child: {new}"
    );
    assert_eq!(
        size(&old),
        old_size,
        "the old file grew:\n{}",
        text_of(&old)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// contrib/logrotate/stallguard, run by logrotate against a guarded server's log (its path
/// put in place of /var/log/stallguard/*.log): with `create`, new lines land in the new file
/// and the rotated one stops growing; with `copytruncate` instead, lines go on at the start
/// of the truncated file (O_APPEND: no hole of NULs where the old end was).
#[test]
fn the_contrib_logrotate_snippet_rotates_a_live_log() {
    let dir = scratch("rotation-logrotate");
    let (srv, log) = server(&dir);
    let snippet = std::fs::read_to_string(repo().join("contrib/logrotate/stallguard")).unwrap();
    assert!(snippet.contains("/var/log/stallguard/*.log {"), "{snippet}");
    let conf = dir.join("logrotate.conf");
    let state = dir.join("logrotate.state");
    let write_conf = |text: &str| {
        std::fs::write(
            &conf,
            text.replace("/var/log/stallguard/*.log", &log.to_string_lossy()),
        )
        .unwrap();
        // logrotate skips a configuration others could write to.
        Command::new("chmod")
            .arg("0644")
            .arg(&conf)
            .status()
            .unwrap();
    };
    let logrotate = || {
        let out = Command::new(logrotate_bin())
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&conf)
            .output()
            .expect("logrotate is installed (scripts/install-deps.sh)");
        assert!(
            out.status.success(),
            "logrotate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // create
    write_conf(&snippet);
    logrotate();
    let rotated = dir.join("guard.log.1");
    assert!(
        text_of(&rotated).contains("event=start"),
        "{:?}",
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    let t = wait_for(&log, "event=log_reopened", Duration::from_secs(3));
    assert!(t.contains("event=log_reopened"), "{t}");
    let rotated_size = size(&rotated);
    let new = reap_one(&srv, &log, 1);
    assert_eq!(events_in(&new, "reap").len(), 1, "{new}");
    assert_eq!(size(&rotated), rotated_size, "{}", text_of(&rotated));

    // copytruncate
    assert!(snippet.contains("    create 0640\n"));
    write_conf(&snippet.replace("    create 0640\n", "    copytruncate\n"));
    logrotate();
    let copied = text_of(&rotated);
    assert_eq!(events_in(&copied, "reap").len(), 1, "the copy: {copied}");
    let after = reap_one(&srv, &log, 1);
    assert!(
        !after.contains('\0'),
        "a hole before the new lines: {after:?}"
    );
    assert_eq!(events_in(&after, "reap").len(), 1, "{after}");
    assert!(after.starts_with("ts="), "{after:?}");
    assert!(!after.contains("event=start"), "not truncated: {after}");
    assert_eq!(events_in(&text_of(&rotated), "reap").len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that chroots after it listens (haproxy's `chroot`, vsftpd, sshd's privilege
/// separation): the log path then names a file inside the jail. The guard must keep writing
/// to the file it has open (its lines, the stop line at exit) and never create a log file in
/// the jail (it did: the rotation check found "no file at the path", created
/// `<jail>/<path>` and moved every later line there).
#[test]
fn a_chroot_after_listen_keeps_the_log_where_it_was() {
    let dir = scratch("chroot-log");
    let jail = dir.join("jail");
    let log = dir.join("guard.log");
    // The log's directory exists inside the jail too, as /tmp or /var/log often do.
    let inner = jail.join(dir.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inner).unwrap();
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import os, socket, sys, time\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
         time.sleep(1)\n\
         os.chroot(sys.argv[1]); os.chdir('/')\n\
         time.sleep(2.5)\n\
         sys.exit(0)",
    ])
    .arg(&jail);
    guard(&mut cmd, &log, FAST);
    let out = cmd.output().expect("run python3");
    assert!(out.status.success(), "{out:?}");
    let text = text_of(&log);
    let in_jail: Vec<_> = walk(&jail);
    assert!(in_jail.is_empty(), "files created in the jail: {in_jail:?}");
    assert!(text.contains("event=start"), "{text}");
    assert!(text.contains("event=stop"), "the stop line: {text}");
    assert!(!text.contains("log_reopen"), "{text}");
}

/// The files under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}
