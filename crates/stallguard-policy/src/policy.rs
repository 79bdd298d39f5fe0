//! The policy: what `STALLGUARD_*` variables mean, parsed into plain values. One row of
//! [`VARIABLES`] per variable (name, what it accepts, default, how it applies) drives parsing,
//! error messages and `stallguard run --help`. Every bad value or unknown name becomes a
//! [`ConfigError`] naming the variable, the value and what is accepted; nothing is silently
//! defaulted.

use crate::cidr::{Cidr, CIDR_ACCEPTS};
use crate::duration::{format_duration_ms, parse_duration_ms, DURATION_ACCEPTS};
use crate::ports::{parse_ports, PORTS_ACCEPTS};
use crate::timers::{
    parse_body, parse_lens, parse_outbound, parse_request, set_write_stall, OutboundPolicy, Timers,
    BODY_ACCEPTS, OUTBOUND_ACCEPTS, REQUEST_ACCEPTS, WRITE_STALL_ACCEPTS,
};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `shutdown(SHUT_RDWR)`: wakes the blocked worker, which sees EOF / EPIPE.
    Shutdown,
    /// Monitor only: log what would be reaped, touch nothing.
    Log,
    /// Like shutdown, and the program's close() sends an RST (SO_LINGER {1,0}).
    Rst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Stop the process at start with status 2.
    Exit,
    /// Run the process unguarded and say so.
    Warn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub timers: Timers,
    /// Per local port: its own timers, or `None` to leave the port alone.
    pub ports: Vec<(u16, Option<Timers>)>,
    /// Peers never touched.
    pub exempt: Vec<Cidr>,
    /// Most concurrent connections one client address (IPv6: one /64) may hold; 0 = no cap.
    pub per_source: u32,
    pub action: Action,
    pub tick_ms: u64,
    pub log_level: LogLevel,
    pub log_file: Option<String>,
    pub on_error: OnError,
    /// Adopt connected TCP sockets found on fds 0-2 at start (inetd services).
    pub adopt_stdio: bool,
    /// Kernel backstops on tracked sockets: TCP_USER_TIMEOUT and TCP keepalive.
    pub backstops: bool,
    /// Also SO_RCVTIMEO / SO_SNDTIMEO on tracked sockets (opt-in).
    pub socket_timeouts: bool,
    /// Listening ports that get TCP_DEFER_ACCEPT.
    pub defer_accept: Vec<u16>,
    /// Track accepted Unix-domain stream connections too (opt-in).
    pub unix: bool,
    /// Deadlines for connections the program opens itself (opt-in).
    pub outbound: Option<OutboundPolicy>,
    /// Period of the stuck-connection report (0 = off).
    pub report_ms: u64,
    /// Prometheus textfile the watcher rewrites (`{pid}` is replaced by the pid).
    pub metrics_file: Option<String>,
    /// Under pressure, how far back a connection on the client's turn must show progress at
    /// its minimum rate (`STALLGUARD_PRESSURE_GRACE`).
    pub pressure_grace_ms: u64,
    /// Whether the cancellable calls of a program with no thread of its own may be made as
    /// system calls by the guard (`STALLGUARD_DIRECT_SYSCALLS=auto`), or always go through
    /// glibc's wrappers (`off`: for tools that watch system calls only inside libc).
    pub direct_syscalls: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timers: Timers::default(),
            ports: Vec::new(),
            exempt: Vec::new(),
            per_source: 0,
            action: Action::Shutdown,
            tick_ms: 100,
            log_level: LogLevel::Info,
            log_file: None,
            on_error: OnError::Exit,
            adopt_stdio: true,
            backstops: true,
            socket_timeouts: false,
            defer_accept: Vec::new(),
            unix: false,
            outbound: None,
            report_ms: 60_000,
            metrics_file: None,
            pressure_grace_ms: 2_000,
            direct_syscalls: true,
        }
    }
}

impl Policy {
    /// The timers for a connection on local `port`; `None` when the port is left alone.
    pub fn timers_for_port(&self, port: u16) -> Option<&Timers> {
        match self.ports.iter().find(|(p, _)| *p == port) {
            Some((_, rule)) => rule.as_ref(),
            None => Some(&self.timers),
        }
    }

    /// Whether a peer is exempt (`peer_ip` as in the table: IPv4 in the first 4 bytes).
    pub fn is_exempt(&self, peer_ip: &[u8; 16], v4: bool) -> bool {
        self.exempt.iter().any(|c| c.contains(peer_ip, v4))
    }
}

/// One rejected variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    /// What is accepted, or (for an unknown name) the list of known names / a suggestion.
    pub accepted: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line whatever the input holds: the name and the reason (which may quote a
        // fragment of the value) get their control characters escaped, the value is quoted.
        write!(
            f,
            "stallguard: invalid {}={:?}: {}",
            one_line(&self.var),
            self.value,
            one_line(&self.accepted)
        )
    }
}

/// The log file at `path` cannot be opened for appending (`error`: the system's reason). The
/// library at load and `stallguard run --check` say the same, with what to do about it.
pub fn log_file_error(path: &str, error: &str) -> ConfigError {
    ConfigError {
        var: "STALLGUARD_LOG_FILE".into(),
        value: path.into(),
        accepted: format!(
            "cannot open it for appending: {error} (the directory must exist and be writable \
             by the server's user; under systemd use LogsDirectory=)"
        ),
    }
}

/// The line that follows [`log_file_error`] when the library stops the process
/// (STALLGUARD_ON_ERROR=exit): what happened, and the way to run anyway.
pub const LOG_FILE_REFUSAL: &str = "stallguard: refusing to start: the library could not open its log file (fix the path, or set STALLGUARD_ON_ERROR=warn to run unguarded instead)";

/// Escapes control characters (a line break in a value must not forge a second log line).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One `STALLGUARD_*` variable: the row that parsing, error messages, `stallguard run --help`
/// and the documentation checks all read.
pub struct Variable {
    pub name: &'static str,
    /// What is accepted, as error messages and help text say it.
    pub accepts: &'static str,
    /// The value in effect when the variable is unset, as a user would write it (parsing it
    /// gives [`Policy::default`]); `None` when unset means absent (no file, no rules).
    pub default: Option<&'static str>,
    apply: Apply,
    /// Applied after all the others: port rules start from the global timers, whatever order
    /// the variables come in.
    late: bool,
}

/// Sets a value in the policy, or says why it is refused.
type Apply = fn(&mut Policy, &str) -> Result<(), Refusal>;

/// A refused value: a short reason, or `None` when "expected ..." says it all.
type Refusal = Option<String>;

impl Variable {
    const fn new(
        name: &'static str,
        accepts: &'static str,
        default: Option<&'static str>,
        apply: Apply,
    ) -> Self {
        Variable {
            name,
            accepts,
            default,
            apply,
            late: false,
        }
    }

    /// Applied after all the others (see [`Variable::late`]).
    const fn late(self) -> Self {
        Variable { late: true, ..self }
    }

    /// Applies `value` to `policy` (left unchanged when the value is refused).
    fn set(&self, policy: &mut Policy, value: &str) -> Result<(), ConfigError> {
        (self.apply)(policy, value).map_err(|why| {
            let accepted = match why {
                Some(why) => format!("{why}; expected {}", self.accepts),
                None => format!("expected {}", self.accepts),
            };
            err(self.name, value, accepted)
        })
    }
}

const SWITCH: &str = "on or off";
const AUTO_OFF: &str = "auto or off";
const GRACE_ACCEPTS: &str = "a duration from 500ms to 1h, such as 2s";
const ACTION_ACCEPTS: &str = "shutdown, rst or log";
const TICK_ACCEPTS: &str = "a duration from 10ms to 10s, such as 100ms";
const LOG_ACCEPTS: &str = "off, error, warn, info or debug";
const LOG_FILE_ACCEPTS: &str = "an absolute path to a file to append to";
const ON_ERROR_ACCEPTS: &str = "exit or warn";
const PER_SOURCE_ACCEPTS: &str = "a whole number of connections from 1 to 1000000, or off";
const PORT_LIST_ACCEPTS: &str = "a comma-separated list of ports from 1 to 65535, or off";
const METRICS_FILE_ACCEPTS: &str =
    "an absolute path for the Prometheus textfile ({pid} is replaced by the process id)";

/// Every variable the shim reads, in the order help text and "known:" lists show them.
#[rustfmt::skip]
pub const VARIABLES: &[Variable] = &[
    Variable::new("STALLGUARD_FIRST_BYTE", DURATION_ACCEPTS, Some("20s"),
        |p, v| store(&mut p.timers.first_byte_ms, duration(v))),
    Variable::new("STALLGUARD_REQUEST", REQUEST_ACCEPTS, Some("20-40,minrate=500"),
        |p, v| store(&mut p.timers.request, parse_request(v).map_err(Some))),
    Variable::new("STALLGUARD_BODY", BODY_ACCEPTS, Some("20,minrate=500"),
        |p, v| store(&mut p.timers.body, parse_body(v).map_err(Some))),
    Variable::new("STALLGUARD_LENS", "auto or off", Some("auto"),
        |p, v| store(&mut p.timers.lens, parse_lens(v).map_err(|_| None))),
    Variable::new("STALLGUARD_IDLE", DURATION_ACCEPTS, Some("60s"),
        |p, v| store(&mut p.timers.idle_ms, duration(v))),
    Variable::new("STALLGUARD_WRITE_STALL", WRITE_STALL_ACCEPTS, Some("60s,minrate=240"),
        |p, v| set_write_stall(&mut p.timers, v).map_err(Some)),
    Variable::new("STALLGUARD_PRESSURE", SWITCH, Some("on"),
        |p, v| store(&mut p.timers.pressure, switch(v))),
    Variable::new("STALLGUARD_PRESSURE_GRACE", GRACE_ACCEPTS, Some("2s"),
        |p, v| store(&mut p.pressure_grace_ms, grace(v))),
    Variable::new("STALLGUARD_ACTION", ACTION_ACCEPTS, Some("shutdown"),
        |p, v| store(&mut p.action, one_of(v, ACTIONS))),
    Variable::new("STALLGUARD_TICK", TICK_ACCEPTS, Some("100ms"),
        |p, v| store(&mut p.tick_ms, tick(v))),
    Variable::new("STALLGUARD_LOG", LOG_ACCEPTS, Some("info"),
        |p, v| store(&mut p.log_level, one_of(v, LOG_LEVELS))),
    Variable::new("STALLGUARD_LOG_FILE", LOG_FILE_ACCEPTS, None,
        |p, v| store(&mut p.log_file, absolute_path(v))),
    Variable::new("STALLGUARD_ON_ERROR", ON_ERROR_ACCEPTS, Some("exit"),
        |p, v| store(&mut p.on_error, one_of(v, ON_ERRORS))),
    Variable::new("STALLGUARD_ADOPT", SWITCH, Some("on"),
        |p, v| store(&mut p.adopt_stdio, switch(v))),
    Variable::new("STALLGUARD_LIFETIME", DURATION_ACCEPTS, Some("off"),
        |p, v| store(&mut p.timers.lifetime_ms, duration(v))),
    Variable::new("STALLGUARD_PORTS", PORTS_ACCEPTS, None,
        |p, v| store(&mut p.ports, parse_ports(v, &p.timers).map_err(Some))).late(),
    Variable::new("STALLGUARD_EXEMPT", CIDR_ACCEPTS, None,
        |p, v| store(&mut p.exempt, Cidr::parse_list(v).map_err(Some))),
    Variable::new("STALLGUARD_PER_SOURCE", PER_SOURCE_ACCEPTS, Some("off"),
        |p, v| store(&mut p.per_source, per_source(v))),
    Variable::new("STALLGUARD_BACKSTOPS", SWITCH, Some("on"),
        |p, v| store(&mut p.backstops, switch(v))),
    Variable::new("STALLGUARD_SOCKET_TIMEOUTS", SWITCH, Some("off"),
        |p, v| store(&mut p.socket_timeouts, switch(v))),
    Variable::new("STALLGUARD_DEFER_ACCEPT", PORT_LIST_ACCEPTS, Some("off"),
        |p, v| store(&mut p.defer_accept, parse_port_list(v).map_err(Some))),
    Variable::new("STALLGUARD_UNIX", SWITCH, Some("off"),
        |p, v| store(&mut p.unix, switch(v))),
    Variable::new("STALLGUARD_OUTBOUND", OUTBOUND_ACCEPTS, Some("off"),
        |p, v| store(&mut p.outbound, parse_outbound(v).map_err(Some))),
    Variable::new("STALLGUARD_REPORT", DURATION_ACCEPTS, Some("60s"),
        |p, v| store(&mut p.report_ms, duration(v))),
    Variable::new("STALLGUARD_METRICS_FILE", METRICS_FILE_ACCEPTS, None,
        |p, v| store(&mut p.metrics_file, file_path(v))),
    Variable::new("STALLGUARD_DIRECT_SYSCALLS", AUTO_OFF, Some("auto"),
        |p, v| store(&mut p.direct_syscalls, one_of(v, &[("auto", true), ("off", false)]))),
];

/// The row for `name`, if it is a policy variable.
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

fn store<T>(field: &mut T, value: Result<T, Refusal>) -> Result<(), Refusal> {
    *field = value?;
    Ok(())
}

fn duration(value: &str) -> Result<u64, Refusal> {
    parse_duration_ms(value).map_err(Some)
}

fn grace(value: &str) -> Result<u64, Refusal> {
    parse_duration_ms(value)
        .ok()
        .filter(|ms| (500..=3_600_000).contains(ms))
        .ok_or(None)
}

fn tick(value: &str) -> Result<u64, Refusal> {
    parse_duration_ms(value)
        .ok()
        .filter(|ms| (10..=10_000).contains(ms))
        .ok_or(None)
}

/// One of the named choices, case-insensitively.
fn one_of<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, Refusal> {
    let value = value.trim().to_ascii_lowercase();
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, choice)| *choice)
        .ok_or(None)
}

const ACTIONS: &[(&str, Action)] = &[
    ("shutdown", Action::Shutdown),
    ("rst", Action::Rst),
    ("log", Action::Log),
];

const ON_ERRORS: &[(&str, OnError)] = &[("exit", OnError::Exit), ("warn", OnError::Warn)];

const LOG_LEVELS: &[(&str, LogLevel)] = &[
    ("off", LogLevel::Off),
    ("error", LogLevel::Error),
    ("warn", LogLevel::Warn),
    ("info", LogLevel::Info),
    ("debug", LogLevel::Debug),
];

/// `on`/`off` switches.
fn switch(value: &str) -> Result<bool, Refusal> {
    one_of(value, &[("on", true), ("off", false)])
}

fn per_source(value: &str) -> Result<u32, Refusal> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    if v == "0" {
        return Err(Some(
            "0 would refuse every connection; use off for no cap".into(),
        ));
    }
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or(None)
}

fn absolute_path(value: &str) -> Result<Option<String>, Refusal> {
    if !value.starts_with('/') || value.contains('\0') {
        return Err(None);
    }
    Ok(Some(value.to_string()))
}

/// An absolute path that names a file (not a directory).
fn file_path(value: &str) -> Result<Option<String>, Refusal> {
    if value.ends_with('/') {
        return Err(None);
    }
    absolute_path(value)
}

/// `80,8080` (or `off`).
fn parse_port_list(value: &str) -> Result<Vec<u16>, String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("'{}' is not a port from 1 to 65535", p.trim()))
        })
        .collect()
}

fn err(var: &str, value: &str, accepted: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.into(),
        value: value.into(),
        accepted: accepted.into(),
    }
}

/// Builds the policy from `(name, value)` pairs (the process environment, or a CLI's flags).
/// Names not starting with `STALLGUARD_` are ignored; unknown `STALLGUARD_` names are errors.
pub fn parse_env<I, K, V>(vars: I) -> (Policy, Vec<ConfigError>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut policy = Policy::default();
    let mut errors = Vec::new();
    // The last value of each late variable, applied once the others are.
    let mut late: Vec<(&Variable, String)> = Vec::new();
    for (k, v) in vars {
        let (name, value) = (k.as_ref(), v.as_ref());
        // STALLGUARD_LIB tells the `stallguard` command where the library is: not policy.
        if !name.starts_with("STALLGUARD_") || name == "STALLGUARD_LIB" {
            continue;
        }
        match variable(name) {
            None => errors.push(unknown_variable(name, value)),
            Some(var) if var.late => {
                late.retain(|(l, _)| l.name != var.name);
                late.push((var, value.to_string()));
            }
            Some(var) => errors.extend(var.set(&mut policy, value).err()),
        }
    }
    for (var, value) in late {
        errors.extend(var.set(&mut policy, &value).err());
    }
    (policy, errors)
}

/// An unknown `STALLGUARD_` name: the nearest known one, or the list of them.
fn unknown_variable(name: &str, value: &str) -> ConfigError {
    let hint = match nearest_name(name) {
        Some(n) => format!("unknown variable; did you mean {n}?"),
        None => format!(
            "unknown variable; known: {}",
            VARIABLES
                .iter()
                .map(|v| v.name)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    err(name, value, hint)
}

/// The known variable closest to a misspelt one, if it is plausibly a typo (the part after
/// `STALLGUARD_` is compared: `STALLGUARD_FOO` is not a typo of `STALLGUARD_LOG`).
pub fn nearest_name(name: &str) -> Option<&'static str> {
    let suffix = |n: &'static str| n.trim_start_matches("STALLGUARD_");
    let typed = name.strip_prefix("STALLGUARD_").unwrap_or(name);
    let near = crate::suggest::nearest(typed, VARIABLES.iter().map(|v| suffix(v.name)))?;
    VARIABLES.iter().map(|v| v.name).find(|n| suffix(n) == near)
}

impl Policy {
    /// The effective policy as logfmt pairs, for the start line. Port rules, exemptions and
    /// the per-source cap appear only when set.
    pub fn describe(&self) -> String {
        let mut parts = vec![
            self.timers.describe(),
            format!("action={}", self.action.name()),
            format!("tick={}", format_duration_ms(self.tick_ms)),
            format!("adopt={}", on_off(self.adopt_stdio)),
            format!(
                "pressure_grace={}",
                format_duration_ms(self.pressure_grace_ms)
            ),
            format!("backstops={}", on_off(self.backstops)),
            format!("socket_timeouts={}", on_off(self.socket_timeouts)),
        ];
        parts.extend(self.optional_parts());
        parts.join(" ")
    }

    /// The pairs shown only when set: cap, Unix sockets, deferred accept, outbound
    /// deadlines, exempt ranges, port rules.
    fn optional_parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if self.per_source > 0 {
            parts.push(format!("per_source={}", self.per_source));
        }
        if self.unix {
            parts.push("unix=on".into());
        }
        if !self.defer_accept.is_empty() {
            parts.push(format!("defer_accept={}", joined(&self.defer_accept)));
        }
        if let Some(o) = self.outbound {
            let (c, i) = (
                format_duration_ms(o.connect_ms),
                format_duration_ms(o.idle_ms),
            );
            parts.push(format!("outbound=connect={c},idle={i}"));
        }
        if !self.exempt.is_empty() {
            parts.push(format!("exempt={}", joined(&self.exempt)));
        }
        for (port, rule) in &self.ports {
            parts.push(match rule {
                None => format!("port{port}=off"),
                Some(t) => format!("port{port}=\"{}\"", t.describe()),
            });
        }
        parts
    }
}

impl Action {
    /// As `STALLGUARD_ACTION` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Shutdown => "shutdown",
            Action::Rst => "rst",
            Action::Log => "log",
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// `80,8080`, `10.0.0.0/8,::1/128`.
fn joined<T: fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().map(T::to_string).collect();
    shown.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timers::RequestPolicy;

    fn parse(pairs: &[(&str, &str)]) -> (Policy, Vec<ConfigError>) {
        parse_env(pairs.iter().copied())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let (p, e) = parse(&[("PATH", "/bin")]);
        assert!(e.is_empty());
        assert_eq!(p, Policy::default());
        assert_eq!(
            p.describe(),
            "first_byte=20s request=20s-40s,minrate=500 body=20s,minrate=500 lens=auto idle=1m write_stall=1m,minrate=240 lifetime=off pressure=on action=shutdown tick=100ms adopt=on pressure_grace=2s backstops=on socket_timeouts=off"
        );
    }

    #[test]
    fn body_and_lens() {
        let (p, e) = parse(&[
            ("STALLGUARD_BODY", "5,minrate=500"),
            ("STALLGUARD_LENS", "off"),
        ]);
        assert_eq!(e, vec![]);
        assert_eq!(
            p.timers.body,
            Some(RequestPolicy {
                timeout_ms: 5_000,
                max_ms: crate::duration::MAX_DURATION_MS,
                min_rate: 500
            }),
            "a rate without MAX has no maximum, as Apache's body=20,MinRate=500"
        );
        assert!(!p.timers.lens);
        assert!(p.timers.describe().contains("body=5s,minrate=500 lens=off"));
        let (p, e) = parse(&[("STALLGUARD_BODY", "off")]);
        assert!(e.is_empty() && p.timers.body.is_none());
        for (var, val) in [
            ("STALLGUARD_BODY", "9-3"),
            ("STALLGUARD_LENS", "on"),
            ("STALLGUARD_BODY", "x"),
        ] {
            let (_, e) = parse(&[(var, val)]);
            assert_eq!(e.len(), 1, "{var}={val}");
            assert!(e[0].to_string().contains("expected"), "{}", e[0]);
        }
    }

    #[test]
    fn every_variable_parses() {
        let (p, e) = parse(&[
            ("STALLGUARD_FIRST_BYTE", "2s"),
            ("STALLGUARD_REQUEST", "3-9,minrate=100"),
            ("STALLGUARD_IDLE", "off"),
            ("STALLGUARD_WRITE_STALL", "1500ms"),
            ("STALLGUARD_ACTION", "log"),
            ("STALLGUARD_TICK", "50ms"),
            ("STALLGUARD_LOG", "debug"),
            ("STALLGUARD_LOG_FILE", "/tmp/sg.log"),
            ("STALLGUARD_ON_ERROR", "warn"),
            ("STALLGUARD_ADOPT", "off"),
            ("STALLGUARD_BACKSTOPS", "off"),
            ("STALLGUARD_SOCKET_TIMEOUTS", "on"),
            ("STALLGUARD_DEFER_ACCEPT", "80,8080"),
            ("STALLGUARD_UNIX", "on"),
            ("STALLGUARD_OUTBOUND", "connect=5s,idle=30s"),
            ("STALLGUARD_PRESSURE", "off"),
            ("STALLGUARD_PRESSURE_GRACE", "1500ms"),
            ("STALLGUARD_DIRECT_SYSCALLS", "off"),
        ]);
        assert!(!p.direct_syscalls);
        assert!(!p.timers.pressure);
        assert_eq!(p.pressure_grace_ms, 1500);
        assert_eq!(e, vec![]);
        assert_eq!(p.timers.first_byte_ms, 2000);
        assert_eq!(
            p.timers.request,
            Some(RequestPolicy {
                timeout_ms: 3000,
                max_ms: 9000,
                min_rate: 100
            })
        );
        assert_eq!(p.timers.idle_ms, 0);
        assert_eq!(p.timers.write_stall_ms, 1500);
        assert_eq!(p.action, Action::Log);
        assert_eq!(p.tick_ms, 50);
        assert_eq!(p.log_level, LogLevel::Debug);
        assert_eq!(p.log_file.as_deref(), Some("/tmp/sg.log"));
        assert_eq!(p.on_error, OnError::Warn);
        assert!(!p.adopt_stdio);
        assert!(!p.backstops);
        assert!(p.socket_timeouts);
        assert_eq!(p.defer_accept, vec![80, 8080]);
        assert!(p.unix);
        assert_eq!(
            p.outbound,
            Some(OutboundPolicy {
                connect_ms: 5000,
                idle_ms: 30_000
            })
        );
    }

    #[test]
    fn bad_values_name_the_variable_the_value_and_what_is_accepted() {
        let (_, e) = parse(&[("STALLGUARD_IDLE", "5x")]);
        let line = e[0].to_string();
        assert!(line.contains("STALLGUARD_IDLE"), "{line}");
        assert!(line.contains("\"5x\""), "{line}");
        assert!(line.contains("500ms"), "{line}");
        assert!(!line.contains('\n'));

        for (var, val) in [
            ("STALLGUARD_ACTION", "kill"),
            ("STALLGUARD_LOG", "verbose"),
            ("STALLGUARD_TICK", "1ms"),
            ("STALLGUARD_TICK", "1m"),
            ("STALLGUARD_LOG_FILE", "relative.log"),
            ("STALLGUARD_ON_ERROR", ""),
            ("STALLGUARD_FIRST_BYTE", "-3"),
            ("STALLGUARD_WRITE_STALL", "∞"),
            ("STALLGUARD_ADOPT", "yes"),
            ("STALLGUARD_BACKSTOPS", "1"),
            ("STALLGUARD_DEFER_ACCEPT", "80,http"),
            ("STALLGUARD_DEFER_ACCEPT", "0"),
            ("STALLGUARD_OUTBOUND", "connect=5x"),
            ("STALLGUARD_OUTBOUND", "timeout=5s"),
            ("STALLGUARD_OUTBOUND", "connect=off"),
            ("STALLGUARD_PRESSURE", "auto"),
            ("STALLGUARD_DIRECT_SYSCALLS", "on"),
            ("STALLGUARD_PRESSURE_GRACE", "100ms"),
            ("STALLGUARD_WRITE_STALL", "60s,minrate=x"),
        ] {
            let (_, e) = parse(&[(var, val)]);
            assert_eq!(e.len(), 1, "{var}={val}");
            assert_eq!(e[0].var, var);
            assert!(e[0].to_string().contains("expected"), "{}", e[0]);
        }
    }

    /// The one error `name=value` gives, as printed.
    fn only_error(name: &str, value: &str) -> String {
        let (_, e) = parse(&[(name, value)]);
        assert_eq!(e.len(), 1, "{name}={value}: {e:?}");
        e[0].to_string()
    }

    #[test]
    fn unknown_names_suggest_the_nearest() {
        for (name, says) in [
            ("STALLGUARD_IDEL", "did you mean STALLGUARD_IDLE?"),
            (
                "STALLGUARD_FIRSTBYTE",
                "did you mean STALLGUARD_FIRST_BYTE?",
            ),
            (
                "STALLGUARD_FIST_BYTE",
                "did you mean STALLGUARD_FIRST_BYTE?",
            ),
            // Within a small edit distance only: FOO is two edits from LOG, of three letters.
            (
                "STALLGUARD_FOO",
                "unknown variable; known: STALLGUARD_FIRST_BYTE",
            ),
            (
                "STALLGUARD_COMPLETELY_DIFFERENT",
                "known: STALLGUARD_FIRST_BYTE",
            ),
        ] {
            let line = only_error(name, "1");
            assert!(line.contains(says), "{name}: {line}");
        }
    }

    #[test]
    fn negative_durations_zero_caps_and_misspelt_timers_say_what_is_wrong() {
        for (name, value, says) in [
            (
                "STALLGUARD_IDLE",
                "-1",
                "negative durations are not accepted",
            ),
            (
                "STALLGUARD_PER_SOURCE",
                "0",
                "0 would refuse every connection; use off",
            ),
            (
                "STALLGUARD_PORTS",
                "80:idel=5s",
                "unknown timer 'idel'; did you mean idle?",
            ),
            ("STALLGUARD_OUTBOUND", "conect=5s", "did you mean connect?"),
        ] {
            let line = only_error(name, value);
            assert!(line.contains(says), "{name}={value}: {line}");
            assert!(!line.contains("unknown unit"), "{name}={value}: {line}");
        }
        let (p, e) = parse(&[("STALLGUARD_PER_SOURCE", "off")]);
        assert_eq!((p.per_source, e), (0, vec![]));
    }

    #[test]
    fn days_are_accepted_and_durations_echoed_in_the_largest_exact_unit() {
        let (p, e) = parse(&[
            ("STALLGUARD_LIFETIME", "720h"),
            ("STALLGUARD_IDLE", "1d"),
            ("STALLGUARD_WRITE_STALL", "90m"),
            ("STALLGUARD_FIRST_BYTE", "3600"),
        ]);
        assert_eq!(e, vec![]);
        let text = p.describe();
        for part in [
            "lifetime=30d",
            "idle=1d",
            "write_stall=90m,minrate=240",
            "first_byte=1h",
        ] {
            assert!(text.split(' ').any(|w| w == part), "{part}: {text}");
        }
    }

    #[test]
    fn the_description_lists_the_exempt_ranges() {
        let (p, e) = parse(&[("STALLGUARD_EXEMPT", "10.0.0.0/8, ::1,192.168.1.5")]);
        assert_eq!(e, vec![]);
        let text = p.describe();
        assert!(
            text.ends_with(" exempt=10.0.0.0/8,::1/128,192.168.1.5/32"),
            "{text}"
        );
    }

    #[test]
    fn all_errors_are_reported_not_only_the_first() {
        let (_, e) = parse(&[("STALLGUARD_IDLE", "x"), ("STALLGUARD_ACTION", "y")]);
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn each_documented_default_parses_to_the_default_policy() {
        for var in VARIABLES {
            let Some(default) = var.default else { continue };
            let (p, e) = parse(&[(var.name, default)]);
            assert_eq!(e, vec![], "{}={default}", var.name);
            assert_eq!(p, Policy::default(), "{}={default}", var.name);
        }
    }

    #[test]
    fn each_refusal_quotes_what_its_variable_accepts() {
        for var in VARIABLES {
            let (p, e) = parse(&[(var.name, "\u{1}bogus")]);
            assert_eq!(e.len(), 1, "{}", var.name);
            assert_eq!(e[0].var, var.name);
            assert!(
                e[0].accepted
                    .ends_with(&format!("expected {}", var.accepts)),
                "{}",
                e[0]
            );
            assert_eq!(
                p,
                Policy::default(),
                "a refused {} changed the policy",
                var.name
            );
        }
    }

    #[test]
    fn port_rules_start_from_the_global_timers_in_any_order() {
        for pairs in [
            [
                ("STALLGUARD_PORTS", "8080:idle=5s"),
                ("STALLGUARD_FIRST_BYTE", "3s"),
            ],
            [
                ("STALLGUARD_FIRST_BYTE", "3s"),
                ("STALLGUARD_PORTS", "8080:idle=5s"),
            ],
        ] {
            let (p, e) = parse(&pairs);
            assert_eq!(e, vec![]);
            let t = p.timers_for_port(8080).unwrap();
            assert_eq!((t.first_byte_ms, t.idle_ms), (3_000, 5_000));
        }
        // The last value wins, as in an environment.
        let (p, e) = parse(&[
            ("STALLGUARD_PORTS", "8080:idle=5x"),
            ("STALLGUARD_PORTS", "9000:off"),
        ]);
        assert_eq!(e, vec![]);
        assert_eq!(p.ports, vec![(9000, None)]);
    }

    #[test]
    fn names_are_unique_and_all_known() {
        for (i, var) in VARIABLES.iter().enumerate() {
            assert!(var.name.starts_with("STALLGUARD_"), "{}", var.name);
            assert!(
                VARIABLES[..i].iter().all(|v| v.name != var.name),
                "{} twice",
                var.name
            );
            assert_eq!(variable(var.name).map(|v| v.name), Some(var.name));
        }
        assert!(variable("STALLGUARD_LIB").is_none());
    }
}
