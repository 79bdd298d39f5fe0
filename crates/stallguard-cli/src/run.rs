//! `stallguard run [POLICY FLAGS] -- CMD ARGS...`: validate the policy exactly as the shim
//! will, find the library, preload it and exec the command.

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use stallguard_policy::policy::{Variable, VARIABLES};
use stallguard_policy::{format_duration_ms, parse_env, ConfigError, Policy};

/// The environment variable that names the library explicitly. The command's own: it is not
/// a policy variable, and it is removed from the child's environment (the shim would reject
/// it as an unknown STALLGUARD_ name).
pub const LIB_VAR: &str = "STALLGUARD_LIB";
pub const LIB_NAME: &str = "libstallguard.so";

/// `STALLGUARD_WRITE_STALL` → `write-stall`.
pub fn flag_for(var: &str) -> String {
    var.trim_start_matches("STALLGUARD_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// (flag, variable), one per policy variable: the flags are derived from the policy crate's
/// table, so a new variable gets its flag without touching this file.
pub fn policy_flags() -> Vec<(String, &'static Variable)> {
    VARIABLES.iter().map(|v| (flag_for(v.name), v)).collect()
}

/// A flag's help line: its variable, what it accepts and its default.
pub fn flag_help(var: &Variable) -> String {
    match var.default {
        Some(default) => format!("{}: {} [default: {default}]", var.name, var.accepts),
        None => format!("{}: {}", var.name, var.accepts),
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    pub check: bool,
    /// (variable, value) from the flags, in the policy crate's order.
    pub policy: Vec<(&'static str, String)>,
    pub command: Vec<OsString>,
}

impl FromArgMatches for RunArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = RunArgs {
            check: m.get_flag("check"),
            ..RunArgs::default()
        };
        for (flag, var) in policy_flags() {
            if let Some(v) = m.get_one::<String>(&flag) {
                args.policy.push((var.name, v.clone()));
            }
        }
        args.command = m
            .get_many::<OsString>("command")
            .map(|v| v.cloned().collect())
            .unwrap_or_default();
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = RunArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for RunArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = cmd
            .override_usage(
                "stallguard run [POLICY FLAGS] [--] CMD [ARGS]...\n       stallguard run [POLICY FLAGS] --check",
            )
            .arg(
                Arg::new("check")
                    .long("check")
                    .action(ArgAction::SetTrue)
                    .help("Only validate the policy and print it (like nginx -t); start nothing"),
            )
            .arg(
                Arg::new("command")
                    .value_name("CMD")
                    .help("The server to run, and its arguments (after --)")
                    .num_args(1..)
                    .trailing_var_arg(true)
                    .value_parser(clap::value_parser!(OsString))
                    .required_unless_present("check"),
            );
        for (flag, var) in policy_flags() {
            cmd = cmd.arg(
                Arg::new(flag.clone())
                    .long(flag)
                    .value_name("VALUE")
                    .action(ArgAction::Set)
                    // `--idle -1` is a value for the policy check to refuse, not a program.
                    .allow_hyphen_values(true)
                    .help_heading("Policy (each flag sets its STALLGUARD_ variable)")
                    .help(flag_help(var)),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        RunArgs::augment_args(cmd)
    }
}

/// The policy variables in effect: the environment's `STALLGUARD_*` (but not
/// `STALLGUARD_LIB`), each overridden by its flag. Non-UTF-8 values are errors.
pub fn merged_policy_vars(
    env: impl IntoIterator<Item = (OsString, OsString)>,
    flags: &[(&'static str, String)],
) -> (Vars, Vec<ConfigError>) {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in env {
        let Some(k) = k.to_str() else { continue };
        if !k.starts_with("STALLGUARD_") || k == LIB_VAR {
            continue;
        }
        if flags.iter().any(|(var, _)| *var == k) {
            continue;
        }
        match v.into_string() {
            Ok(v) => vars.push((k.to_string(), v)),
            Err(v) => errors.push(ConfigError {
                var: k.to_string(),
                value: v.to_string_lossy().into_owned(),
                accepted: "the value is not valid UTF-8".into(),
            }),
        }
    }
    vars.extend(flags.iter().map(|(k, v)| (k.to_string(), v.clone())));
    (vars, errors)
}

/// One line per error: a flag's errors name the flag (and its variable), the environment's
/// name the variable; both reuse the policy crate's description of what is accepted.
pub fn error_line(e: &ConfigError, flags: &[(&'static str, String)]) -> String {
    if flags.iter().any(|(var, _)| *var == e.var) {
        format!(
            "stallguard: invalid --{} {:?} ({}): {}",
            flag_for(&e.var),
            e.value,
            e.var,
            e.accepted
        )
    } else {
        format!("{e} (from the environment)")
    }
}

/// `(name, value)` pairs of policy variables.
pub type Vars = Vec<(String, String)>;

/// Validates; on success returns the policy and the variables to set.
pub fn validate(args: &RunArgs) -> Result<(Policy, Vars), Vec<String>> {
    let (vars, mut errors) = merged_policy_vars(std::env::vars_os(), &args.policy);
    let (policy, parse_errors) = parse_env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    errors.extend(parse_errors);
    if errors.is_empty() {
        Ok((policy, vars))
    } else {
        Err(errors.iter().map(|e| error_line(e, &args.policy)).collect())
    }
}

/// Opens the log file exactly as the library will at load (`O_WRONLY|O_APPEND|O_CREAT`,
/// mode 0640): a missing directory or a permission problem is found before anything starts.
/// Like the library, this creates the file when it does not exist.
pub fn check_log_file(policy: &Policy) -> Result<(), ConfigError> {
    let Some(path) = policy.log_file.as_deref() else {
        return Ok(());
    };
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(drop)
        .map_err(|e| stallguard_policy::log_file_error(path, &e.to_string()))
}

/// What `run --check` prints: the policy as the library will log it, then the settings
/// operators look for, and a final `ok` line naming the library that would be preloaded (or
/// why none would be).
pub fn check_report(policy: &Policy, lib: Result<&Path, &str>) -> String {
    let mut out = format!("{}\n", policy.describe());
    for (name, value) in settings(policy) {
        out += &format!("{name}: {value}\n");
    }
    out + &library_line(lib)
}

/// What `--check` lists after the policy line: (name, value).
fn settings(policy: &Policy) -> [(&'static str, String); 4] {
    let exempt: Vec<String> = policy.exempt.iter().map(cidr_text).collect();
    [
        (
            "exempt peers",
            if exempt.is_empty() {
                "none".to_string()
            } else {
                exempt.join(", ")
            },
        ),
        (
            "log file",
            policy
                .log_file
                .clone()
                .unwrap_or_else(|| "none (stderr of the server)".into()),
        ),
        (
            "metrics file",
            policy.metrics_file.clone().unwrap_or_else(|| "none".into()),
        ),
        ("report period", format_duration_ms(policy.report_ms)),
    ]
}

/// The `ok:` line naming the library `run` would preload, or why none would be.
fn library_line(lib: Result<&Path, &str>) -> String {
    match lib {
        Ok(l) => format!("ok: policy valid; would preload {}\n", l.display()),
        Err(e) => format!(
            "policy valid, but no library to preload: {}\n",
            e.trim_start_matches("stallguard: ")
        ),
    }
}

/// `10.0.0.0/24`, `::1/128` (a CIDR as the operator would write it).
pub fn cidr_text(c: &stallguard_policy::Cidr) -> String {
    c.to_string()
}

/// Where the library is looked for, in order (see the man page).
pub fn library_candidates(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        out.push(dir.join("../lib").join(LIB_NAME));
        out.push(dir.join(LIB_NAME));
    }
    let prefix = option_env!("STALLGUARD_PREFIX").unwrap_or("/usr/local");
    out.push(Path::new(prefix).join("lib").join(LIB_NAME));
    // Development: target/debug/stallguard (or target/release/deps/…) finds
    // target/release/libstallguard.so.
    if let Some(dir) = exe.and_then(Path::parent) {
        for anc in dir.ancestors().take(4) {
            let p = anc.join("release").join(LIB_NAME);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The library to preload: `STALLGUARD_LIB` if set (it must exist), else the first candidate
/// that exists. Always absolute, so a server that changes directory and re-execs keeps it.
pub fn find_library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(LIB_VAR) {
        let p = PathBuf::from(p);
        return p.canonicalize().map_err(|e| {
            format!(
                "stallguard: {LIB_VAR}={}: {e} (it must name libstallguard.so)",
                p.display()
            )
        });
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let candidates = library_candidates(exe.as_deref());
    for c in &candidates {
        if c.is_file() {
            return c
                .canonicalize()
                .map_err(|e| format!("{}: {e}", c.display()));
        }
    }
    let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(format!(
        "stallguard: cannot find {LIB_NAME} (looked in {}); set {LIB_VAR}=/path/to/{LIB_NAME}",
        looked.join(", ")
    ))
}

/// `LD_PRELOAD` with the library first, keeping the existing entries (and not repeating it).
pub fn preload_value(lib: &Path, existing: Option<&str>) -> String {
    let lib = lib.to_string_lossy();
    let rest: Vec<&str> = existing
        .unwrap_or("")
        .split([' ', ':'])
        .filter(|e| !e.is_empty() && *e != lib)
        .collect();
    let mut out = lib.into_owned();
    for e in rest {
        out.push(':');
        out.push_str(e);
    }
    out
}

/// Runs the subcommand; returns the exit status (on success `exec` never returns).
pub fn run(args: RunArgs) -> i32 {
    let (policy, vars) = match checked_policy(&args) {
        Ok(ok) => ok,
        Err(status) => return status,
    };
    let lib = find_library();
    if args.check {
        return check_only(&args, &policy, lib);
    }
    match lib.and_then(preloadable) {
        Ok(lib) => exec(&args.command, &lib, &vars),
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// The policy and its variables, checked as the library will check them (values, then the log
/// file); on failure the errors are printed and the exit status (2) returned.
fn checked_policy(args: &RunArgs) -> Result<(Policy, Vars), i32> {
    let (policy, vars) = validate(args).map_err(|lines| {
        for l in &lines {
            eprintln!("{l}");
        }
        eprintln!("{}", refusal(&lines));
        2
    })?;
    if let Err(e) = check_log_file(&policy) {
        eprintln!("{}", error_line(&e, &args.policy));
        eprintln!(
            "stallguard: refusing to start: the library could not open its log file (1 error); \
             nothing was started"
        );
        return Err(2);
    }
    Ok((policy, vars))
}

/// The last line after the policy's errors.
fn refusal(errors: &[String]) -> String {
    format!(
        "stallguard: refusing to start with an invalid policy ({} error{}); nothing was started",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    )
}

/// `--check`: print the report; 0 when a library would be preloaded, else 1.
fn check_only(args: &RunArgs, policy: &Policy, lib: Result<PathBuf, String>) -> i32 {
    print!(
        "{}",
        check_report(policy, lib.as_deref().map_err(String::as_str))
    );
    if !args.command.is_empty() {
        eprintln!("stallguard: --check: the command was not started");
    }
    if lib.is_ok() {
        0
    } else {
        1
    }
}

/// The library, if `LD_PRELOAD` can name it (no space nor colon in its path).
fn preloadable(lib: PathBuf) -> Result<PathBuf, String> {
    let text = lib.to_string_lossy();
    if text.contains([' ', ':']) {
        return Err(format!(
            "stallguard: the library path {text:?} contains a space or a colon, which \
             LD_PRELOAD cannot express; move it or set {LIB_VAR}"
        ));
    }
    Ok(lib)
}

/// Replaces this process with the command, the library preloaded and the policy set; returns
/// only on failure (127: not found, 126: cannot be run).
fn exec(command: &[OsString], lib: &Path, vars: &Vars) -> i32 {
    let program = &command[0];
    warn_if_unguardable(program);
    let existing = std::env::var("LD_PRELOAD").ok();
    let mut cmd = Command::new(program);
    cmd.args(&command[1..])
        .env("LD_PRELOAD", preload_value(lib, existing.as_deref()))
        .env_remove(LIB_VAR);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let err = cmd.exec();
    eprintln!(
        "stallguard: cannot run {}: {err}",
        Path::new(program).display()
    );
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// A one-line warning when the program obviously cannot be guarded (static, Go); the run
/// goes ahead (the user asked for it).
fn warn_if_unguardable(program: &std::ffi::OsStr) {
    let Some(p) = crate::program::which(Path::new(program)) else {
        return;
    };
    let Ok(data) = std::fs::read(&p) else { return };
    let Ok(info) = crate::check::read_elf(&data) else {
        return;
    };
    if !info.go_evidence.is_empty() {
        eprintln!(
            "stallguard: warning: {} is a Go program: the guard cannot see its connections",
            p.display()
        );
    } else if info.interpreter.is_none() && info.needed.is_empty() {
        eprintln!(
            "stallguard: warning: {} is statically linked: the library cannot be preloaded",
            p.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_has_a_flag() {
        let flags = policy_flags();
        assert_eq!(flags.len(), VARIABLES.len());
        let names: Vec<&str> = flags.iter().map(|(f, _)| f.as_str()).collect();
        for f in [
            "first-byte",
            "request",
            "idle",
            "write-stall",
            "action",
            "tick",
            "log",
            "log-file",
            "on-error",
            "adopt",
            "lifetime",
            "ports",
            "exempt",
            "per-source",
            "backstops",
            "socket-timeouts",
            "defer-accept",
            "unix",
            "outbound",
        ] {
            assert!(names.contains(&f), "{f} missing from {names:?}");
        }
    }

    #[test]
    fn flag_help_comes_from_the_policy_table() {
        let idle = stallguard_policy::policy::variable("STALLGUARD_IDLE").unwrap();
        assert_eq!(
            flag_help(idle),
            format!("STALLGUARD_IDLE: {} [default: 60s]", idle.accepts)
        );
        let log_file = stallguard_policy::policy::variable("STALLGUARD_LOG_FILE").unwrap();
        assert_eq!(
            flag_help(log_file),
            "STALLGUARD_LOG_FILE: an absolute path to a file to append to"
        );
    }

    #[test]
    fn flags_override_the_environment_and_lib_var_is_not_policy() {
        let env = vec![
            (OsString::from("STALLGUARD_IDLE"), OsString::from("5s")),
            (OsString::from("STALLGUARD_TICK"), OsString::from("50ms")),
            (OsString::from(LIB_VAR), OsString::from("/x.so")),
            (OsString::from("PATH"), OsString::from("/bin")),
        ];
        let (vars, errors) = merged_policy_vars(env, &[("STALLGUARD_IDLE", "9s".into())]);
        assert!(errors.is_empty());
        assert_eq!(
            vars,
            vec![
                ("STALLGUARD_TICK".to_string(), "50ms".to_string()),
                ("STALLGUARD_IDLE".to_string(), "9s".to_string())
            ]
        );
        let (p, e) = parse_env(vars);
        assert!(e.is_empty());
        assert_eq!(p.timers.idle_ms, 9000);
        assert_eq!(p.tick_ms, 50);
    }

    #[test]
    fn errors_name_the_flag_or_the_variable() {
        let flags = [("STALLGUARD_IDLE", "5x".to_string())];
        let (_, e) = parse_env([("STALLGUARD_IDLE", "5x"), ("STALLGUARD_IDEL", "1s")]);
        let a = error_line(&e[0], &flags);
        assert!(
            a.starts_with("stallguard: invalid --idle \"5x\" (STALLGUARD_IDLE): "),
            "{a}"
        );
        assert!(a.contains("500ms"), "{a}");
        let b = error_line(&e[1], &flags);
        assert!(b.contains("did you mean STALLGUARD_IDLE?"), "{b}");
        assert!(b.ends_with("(from the environment)"), "{b}");
    }

    #[test]
    fn preload_keeps_existing_entries_after_the_library() {
        let lib = Path::new("/usr/local/lib/libstallguard.so");
        assert_eq!(preload_value(lib, None), "/usr/local/lib/libstallguard.so");
        assert_eq!(
            preload_value(lib, Some("libfoo.so /opt/bar.so")),
            "/usr/local/lib/libstallguard.so:libfoo.so:/opt/bar.so"
        );
        assert_eq!(
            preload_value(lib, Some("/usr/local/lib/libstallguard.so:libfoo.so")),
            "/usr/local/lib/libstallguard.so:libfoo.so"
        );
    }

    #[test]
    fn refusals_count_the_errors_and_odd_library_paths_are_refused() {
        assert_eq!(
            refusal(&["a".into()]),
            "stallguard: refusing to start with an invalid policy (1 error); nothing was started"
        );
        assert!(refusal(&["a".into(), "b".into()]).contains("(2 errors)"));
        let ok = PathBuf::from("/usr/lib/libstallguard.so");
        assert_eq!(preloadable(ok.clone()), Ok(ok));
        for odd in ["/opt/my libs/libstallguard.so", "/opt/a:b/libstallguard.so"] {
            let e = preloadable(PathBuf::from(odd)).unwrap_err();
            assert!(e.contains("LD_PRELOAD cannot express"), "{e}");
        }
    }

    #[test]
    fn the_check_report_lists_the_settings_then_the_library() {
        let (policy, _) = parse_env([
            ("STALLGUARD_EXEMPT", "10.0.0.0/24,::1"),
            ("STALLGUARD_REPORT", "off"),
        ]);
        let report = check_report(&policy, Ok(Path::new("/l/libstallguard.so")));
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], policy.describe());
        assert_eq!(
            lines[1..],
            [
                "exempt peers: 10.0.0.0/24, ::1/128",
                "log file: none (stderr of the server)",
                "metrics file: none",
                "report period: off",
                "ok: policy valid; would preload /l/libstallguard.so",
            ]
        );
        let report = check_report(&Policy::default(), Err("stallguard: cannot find it"));
        assert!(
            report.contains("exempt peers: none\nlog file: none"),
            "{report}"
        );
        assert!(report.contains("report period: 1m\n"), "{report}");
        assert!(report.ends_with("policy valid, but no library to preload: cannot find it\n"));
    }

    #[test]
    fn library_search_order() {
        let c = library_candidates(Some(Path::new("/opt/sg/bin/stallguard")));
        assert_eq!(c[0], Path::new("/opt/sg/bin/../lib/libstallguard.so"));
        assert_eq!(c[1], Path::new("/opt/sg/bin/libstallguard.so"));
        assert_eq!(
            c[2],
            Path::new(option_env!("STALLGUARD_PREFIX").unwrap_or("/usr/local"))
                .join("lib/libstallguard.so")
        );
        let dev = library_candidates(Some(Path::new("/w/target/debug/stallguard")));
        assert!(dev.contains(&PathBuf::from("/w/target/release/libstallguard.so")));
    }
}
