//! `stallguard check BINARY` on the C examples, system binaries, a static binary and
//! binaries carrying each Go marker.

use stallguard_testkit::cli::*;
use stallguard_testkit::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn check(path: &Path) -> (i32, String, String) {
    let out = stallguard(&["check", path.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Compiles a C program into the scratch directory.
fn cc(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = scratch(&format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = scratch(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc {flags:?} failed for {name}");
    out
}

#[test]
fn c_examples_are_guardable_and_list_their_hooked_imports() {
    let (code, out, _) = check(&example("pool_server"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("guardable"), "{out}");
    let imports = out
        .lines()
        .find(|l| {
            l.starts_with("    ")
                && l.trim_start()
                    .starts_with(&format!("{}:", example("pool_server").display()))
        })
        .unwrap_or("");
    for f in ["accept", "__recv_chk", "recv", "send", "close"] {
        assert!(
            imports.split_whitespace().any(|w| w == f),
            "{f} missing: {out}"
        );
    }

    let (code, out, _) = check(&example("prefork_server"));
    assert_eq!(code, 0, "{out}");
    for f in ["accept4", "sendfile64", "writev", "read"] {
        assert!(out.split_whitespace().any(|w| w == f), "{f} missing: {out}");
    }

    let (code, out, _) = check(&example("epoll_server"));
    assert_eq!(code, 0, "{out}");
    assert!(out.split_whitespace().any(|w| w == "epoll_ctl"), "{out}");
}

#[test]
fn programs_that_accept_nothing_are_not_guardable() {
    // ls: no socket functions of its own (libselinux's are for its own use).
    let (code, out, _) = check(Path::new("/bin/ls"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not guardable"), "{out}");
    // The inetd service reads stdin through stdio: only adoption can guard it.
    let (code, out, _) = check(&example("stdio_service"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("inetd"), "{out}");
}

#[test]
fn a_static_binary_is_not_guardable() {
    let src = "#include <stdio.h>\n#include <sys/socket.h>\nint main(void){int s=socket(AF_INET,SOCK_STREAM,0);\
               printf(\"%d\\n\", accept(s,0,0)); return 0;}\n";
    for (name, flag) in [("static_srv", "-static"), ("static_pie_srv", "-static-pie")] {
        let bin = cc(name, src, &["-O2", flag]);
        let (code, out, err) = check(&bin);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(out.contains("statically linked"), "{name}: {out}");
    }
}

#[test]
fn go_markers_make_a_binary_unguardable() {
    // No Go toolchain here: plain C binaries carrying each marker a Go binary has.
    let main = "int main(void){return 0;}\n";
    let cases = [
        (
            "go_buildinfo",
            format!(
                "__attribute__((section(\".go.buildinfo\"), used)) static const char bi[32] = \
                 \"\\xff Go buildinf:\";\n{main}"
            ),
            ".go.buildinfo",
        ),
        (
            "go_note",
            format!(
                "__asm__(\".section .note.go.buildid,\\\"a\\\",@note\\n.balign 4\\n.long 3\\n.long 8\\n\
                 .long 4\\n.asciz \\\"Go\\\"\\n.balign 4\\n.ascii \\\"abcdefgh\\\"\\n.text\\n\");\n{main}"
            ),
            "Go build ID note",
        ),
        (
            "go_runtime_main",
            format!(
                "void runtime_main(void) __asm__(\"runtime.main\");\nvoid runtime_main(void) {{}}\n{main}"
            ),
            "runtime.main",
        ),
    ];
    for (name, source, evidence) in cases {
        let bin = cc(name, &source, &["-O0"]);
        let (code, out, err) = check(&bin);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(out.contains("a Go program"), "{name}: {out}");
        assert!(out.contains(evidence), "{name}: {out}");
    }
    if let Ok(go) = which("go") {
        eprintln!("note: a Go toolchain is at {go}, but this test does not use it");
    }
}

fn which(name: &str) -> Result<String, ()> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map_err(|_| ())?;
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(())
    }
}

#[test]
fn errors_exit_2() {
    let (code, _, err) = check(Path::new("/nonexistent/server"));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/server"), "{err}");
    let text_file = scratch("notes.txt");
    std::fs::write(&text_file, "neither ELF nor a script\n").unwrap();
    let (code, _, err) = check(&text_file);
    assert_eq!(code, 2);
    assert!(err.contains("not an ELF file"), "{err}");
    let script = scratch("lost-interpreter.sh");
    std::fs::write(&script, "#!/nonexistent/interp\n").unwrap();
    let (code, _, err) = check(&script);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/interp"), "{err}");
}

/// `stallguard check ARGS` with `PATH` set to the examples' directory, then the system's.
fn check_in_path(arg: &str) -> (i32, String, String) {
    let examples = example("pool_server").parent().unwrap().to_path_buf();
    let path = std::env::join_paths([examples, "/usr/bin".into(), "/bin".into()]).unwrap();
    let out = Command::new(cli_bin())
        .args(["check", arg])
        .env("PATH", path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn a_bare_name_is_looked_up_in_path_as_run_does() {
    let (code, out, err) = check_in_path("pool_server");
    assert_eq!(code, 0, "{out}{err}");
    let full = example("pool_server").display().to_string();
    assert!(out.contains(&format!("{full}: guardable")), "{out}");
    let (code, _, err) = check_in_path("no-such-server-anywhere");
    assert_eq!(code, 2);
    assert!(err.contains("no-such-server-anywhere"), "{err}");
}

#[test]
fn a_script_is_judged_by_its_interpreter_and_says_so() {
    let server = example("pool_server").display().to_string();
    let direct = scratch("direct.sh");
    std::fs::write(&direct, format!("#!{server} 0\n")).unwrap();
    let via_env = scratch("via-env.sh");
    std::fs::write(&via_env, "#!/usr/bin/env -S pool_server 0\n").unwrap();
    for (script, line) in [
        (&direct, format!("#!{server} 0")),
        (&via_env, "#!/usr/bin/env -S pool_server 0".to_string()),
    ] {
        let (code, out, err) = check_in_path(script.to_str().unwrap());
        assert_eq!(code, 0, "{out}{err}");
        let first = out.lines().next().unwrap_or("");
        assert_eq!(
            first,
            format!(
                "{}: a script ({line}): the library is loaded into its interpreter, so this \
                 checks {server}",
                script.display()
            ),
            "{out}"
        );
        assert!(out.contains(&format!("{server}: guardable")), "{out}");
    }
    // An interpreter that accepts nothing: the script is not guardable either.
    let shell = scratch("shell.sh");
    std::fs::write(&shell, "#!/bin/ls\n").unwrap();
    let (code, out, _) = check_in_path(shell.to_str().unwrap());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("checks /bin/ls"), "{out}");
    let missing = scratch("missing-env.sh");
    std::fs::write(&missing, "#!/usr/bin/env no-such-interp-x\n").unwrap();
    let (code, _, err) = check_in_path(missing.to_str().unwrap());
    assert_eq!(code, 2);
    assert!(
        err.contains("no-such-interp-x is not found in PATH"),
        "{err}"
    );
}
