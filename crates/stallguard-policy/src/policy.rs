//! The policy: what `STALLGUARD_*` variables mean, parsed into plain values.
//! Every bad value or unknown name becomes a [`ConfigError`] naming the variable, the value and
//! what is accepted; nothing is silently defaulted.

use crate::cidr::{Cidr, CIDR_ACCEPTS};
use crate::duration::{format_duration_ms, parse_duration_ms, DURATION_ACCEPTS, MAX_DURATION_MS};
use crate::ports::{parse_ports, PORTS_ACCEPTS};
use std::fmt;

/// Apache `mod_reqtimeout` arithmetic: once the client starts sending it has `timeout_ms`; every
/// byte received extends that by 1/`min_rate` s, never past `max_ms` after the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPolicy {
    pub timeout_ms: u64,
    /// Equal to `timeout_ms` when no range was given.
    pub max_ms: u64,
    /// Bytes per second; 0 means no extension.
    pub min_rate: u64,
}

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

/// The timers a connection is judged by (the global ones, or a port's overrides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub first_byte_ms: u64,
    /// `None` when `STALLGUARD_REQUEST=off`.
    pub request: Option<RequestPolicy>,
    /// HTTP/1 body stage (`STALLGUARD_BODY`), measured from the body's start; `None`: off.
    pub body: Option<RequestPolicy>,
    /// Follow HTTP/1 framing to tell whose turn it is (`STALLGUARD_LENS=auto`).
    pub lens: bool,
    pub idle_ms: u64,
    pub write_stall_ms: u64,
    /// Cap on a connection's total age; 0 = off (the default).
    pub lifetime_ms: u64,
    /// Deadline of an outbound connect(); only outbound connections have one.
    pub connect_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            first_byte_ms: 20_000,
            request: Some(RequestPolicy {
                timeout_ms: 20_000,
                max_ms: 40_000,
                min_rate: 500,
            }),
            // Apache mod_reqtimeout's body=20,MinRate=500: no maximum.
            body: Some(RequestPolicy {
                timeout_ms: 20_000,
                max_ms: MAX_DURATION_MS,
                min_rate: 500,
            }),
            lens: true,
            idle_ms: 60_000,
            write_stall_ms: 60_000,
            lifetime_ms: 0,
            connect_ms: 0,
        }
    }
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
}

/// `STALLGUARD_OUTBOUND=connect=5s,idle=30s`: a connect() that has not completed within
/// `connect_ms`, or an outbound connection whose upstream sends nothing for `idle_ms` while
/// the program waits on it, is shut down so the program gets an error instead of hanging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboundPolicy {
    pub connect_ms: u64,
    pub idle_ms: u64,
}

impl OutboundPolicy {
    /// The timers an outbound connection is judged by: the upstream must answer (first byte)
    /// and keep moving (idle, write stall) within `idle_ms`; no request phase.
    pub fn timers(&self) -> Timers {
        Timers {
            first_byte_ms: self.idle_ms,
            request: None,
            body: None,
            lens: false,
            idle_ms: self.idle_ms,
            write_stall_ms: self.idle_ms,
            lifetime_ms: 0,
            connect_ms: self.connect_ms,
        }
    }
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

/// Every variable the shim reads, with what it accepts (used for help text and suggestions).
pub const VARIABLES: &[(&str, &str)] = &[
    ("STALLGUARD_FIRST_BYTE", DURATION_ACCEPTS),
    ("STALLGUARD_REQUEST", REQUEST_ACCEPTS),
    ("STALLGUARD_BODY", BODY_ACCEPTS),
    ("STALLGUARD_LENS", "auto or off"),
    ("STALLGUARD_IDLE", DURATION_ACCEPTS),
    ("STALLGUARD_WRITE_STALL", DURATION_ACCEPTS),
    ("STALLGUARD_ACTION", "shutdown, rst or log"),
    (
        "STALLGUARD_TICK",
        "a duration from 10ms to 10s, such as 100ms",
    ),
    ("STALLGUARD_LOG", "off, error, warn, info or debug"),
    (
        "STALLGUARD_LOG_FILE",
        "an absolute path to a file to append to",
    ),
    ("STALLGUARD_ON_ERROR", "exit or warn"),
    ("STALLGUARD_ADOPT", "on or off"),
    ("STALLGUARD_LIFETIME", DURATION_ACCEPTS),
    ("STALLGUARD_PORTS", PORTS_ACCEPTS),
    ("STALLGUARD_EXEMPT", CIDR_ACCEPTS),
    (
        "STALLGUARD_PER_SOURCE",
        "a whole number of connections from 1 to 1000000, or off",
    ),
    ("STALLGUARD_BACKSTOPS", "on or off"),
    ("STALLGUARD_SOCKET_TIMEOUTS", "on or off"),
    (
        "STALLGUARD_DEFER_ACCEPT",
        "a comma-separated list of ports from 1 to 65535, or off",
    ),
    ("STALLGUARD_UNIX", "on or off"),
    ("STALLGUARD_OUTBOUND", OUTBOUND_ACCEPTS),
    ("STALLGUARD_REPORT", DURATION_ACCEPTS),
    (
        "STALLGUARD_METRICS_FILE",
        "an absolute path for the Prometheus textfile ({pid} is replaced by the process id)",
    ),
];

const OUTBOUND_ACCEPTS: &str = "off, or connect=DURATION,idle=DURATION (e.g. connect=5s,idle=30s)";

/// `on`/`off` switches.
fn parse_switch(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(err(name, value, accepted_for(name))),
    }
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

/// `connect=5s,idle=30s` (either may be omitted: that deadline is off), or `off`.
pub fn parse_outbound(value: &str) -> Result<Option<OutboundPolicy>, String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let mut o = OutboundPolicy {
        connect_ms: 0,
        idle_ms: 0,
    };
    for item in v.split(',') {
        let (name, val) = item
            .split_once('=')
            .ok_or_else(|| format!("'{}' is not name=value", item.trim()))?;
        let ms = parse_duration_ms(val).map_err(|e| format!("{}: {e}", name.trim()))?;
        match name.trim().to_ascii_lowercase().as_str() {
            "connect" => o.connect_ms = ms,
            "idle" => o.idle_ms = ms,
            other => return Err(format!("unknown deadline '{other}'")),
        }
    }
    if o.connect_ms == 0 && o.idle_ms == 0 {
        return Err("no deadline set".into());
    }
    Ok(Some(o))
}

pub(crate) const BODY_ACCEPTS: &str =
    "T[-MAX][,minrate=BYTES_PER_SECOND] (without MAX: no maximum, e.g. 20,minrate=500), or off";

/// `auto` / `off` for the HTTP/1 lens.
pub(crate) fn parse_lens(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected auto or off".into()),
    }
}

/// `STALLGUARD_BODY`: the request syntax, except that a rate without MAX has no maximum
/// (Apache's `body=20,MinRate=500`).
pub fn parse_body(value: &str) -> Result<Option<RequestPolicy>, String> {
    parse_rate_timer(value, true)
}

const REQUEST_ACCEPTS: &str =
    "T[-MAX][,minrate=BYTES_PER_SECOND] with durations T <= MAX (e.g. 20-40,minrate=500 or 10s), or off";

fn err(var: &str, value: &str, accepted: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.into(),
        value: value.into(),
        accepted: accepted.into(),
    }
}

fn parse_timer(var: &str, value: &str) -> Result<u64, ConfigError> {
    parse_duration_ms(value)
        .map_err(|why| err(var, value, format!("{why}; expected {DURATION_ACCEPTS}")))
}

/// Parses `20-40,minrate=500`, `20s-1m`, `10`, `off`.
pub fn parse_request(value: &str) -> Result<Option<RequestPolicy>, String> {
    parse_rate_timer(value, false)
}

/// `open_max`: `T,minrate=R` without MAX means no maximum (else it is refused).
fn parse_rate_timer(value: &str, open_max: bool) -> Result<Option<RequestPolicy>, String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") || v == "0" {
        return Ok(None);
    }
    let mut parts = v.split(',');
    let range = parts.next().unwrap_or("").trim();
    let ranged = range.contains('-');
    let (t, mut max) = match range.split_once('-') {
        Some((t, max)) => (
            parse_duration_ms(t).map_err(|e| format!("timeout: {e}"))?,
            parse_duration_ms(max).map_err(|e| format!("maximum: {e}"))?,
        ),
        None => {
            let t = parse_duration_ms(range).map_err(|e| format!("timeout: {e}"))?;
            (t, t)
        }
    };
    if t == 0 {
        return Err("the timeout must be above 0 (use off to disable)".into());
    }
    if max < t {
        return Err("the maximum is below the timeout".into());
    }
    let mut min_rate = 0;
    for option in parts {
        let (key, val) = option
            .split_once('=')
            .ok_or_else(|| format!("'{}' is not key=value", option.trim()))?;
        if !key.trim().eq_ignore_ascii_case("minrate") {
            return Err(format!("unknown option '{}'", key.trim()));
        }
        min_rate = val
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|r| (1..=1_000_000_000).contains(r))
            .ok_or_else(|| {
                format!(
                    "minrate '{}' is not a whole number of bytes per second from 1 to 1e9",
                    val.trim()
                )
            })?;
    }
    if open_max && min_rate > 0 && !ranged {
        max = MAX_DURATION_MS;
    }
    if min_rate > 0 && max == t {
        // A rate without room to extend into would be silently useless.
        return Err("minrate needs a range T-MAX with MAX above T".into());
    }
    Ok(Some(RequestPolicy {
        timeout_ms: t,
        max_ms: max.min(MAX_DURATION_MS),
        min_rate,
    }))
}

/// Builds the policy from `(name, value)` pairs (the process environment, or a CLI's flags).
/// Names not starting with `STALLGUARD_` are ignored; unknown `STALLGUARD_` names are errors.
pub fn parse_env<I, K, V>(vars: I) -> (Policy, Vec<ConfigError>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut p = Policy::default();
    let mut errors = Vec::new();
    let mut ports_spec: Option<String> = None;
    for (k, v) in vars {
        let (name, value) = (k.as_ref(), v.as_ref());
        // STALLGUARD_LIB tells the `stallguard` command where the library is: not policy.
        if !name.starts_with("STALLGUARD_") || name == "STALLGUARD_LIB" {
            continue;
        }
        let result: Result<(), ConfigError> = (|| {
            match name {
                "STALLGUARD_FIRST_BYTE" => p.timers.first_byte_ms = parse_timer(name, value)?,
                "STALLGUARD_IDLE" => p.timers.idle_ms = parse_timer(name, value)?,
                "STALLGUARD_WRITE_STALL" => p.timers.write_stall_ms = parse_timer(name, value)?,
                "STALLGUARD_LIFETIME" => p.timers.lifetime_ms = parse_timer(name, value)?,
                "STALLGUARD_BODY" => {
                    p.timers.body = parse_body(value).map_err(|why| {
                        err(name, value, format!("{why}; expected {BODY_ACCEPTS}"))
                    })?
                }
                "STALLGUARD_LENS" => {
                    p.timers.lens = parse_lens(value).map_err(|why| err(name, value, why))?
                }
                "STALLGUARD_REQUEST" => {
                    p.timers.request = parse_request(value).map_err(|why| {
                        err(name, value, format!("{why}; expected {REQUEST_ACCEPTS}"))
                    })?
                }
                // Applied after the loop: port overrides start from the global timers,
                // whatever order the variables come in.
                "STALLGUARD_PORTS" => ports_spec = Some(value.to_string()),
                "STALLGUARD_EXEMPT" => {
                    p.exempt = Cidr::parse_list(value).map_err(|why| {
                        err(name, value, format!("{why}; expected {CIDR_ACCEPTS}"))
                    })?
                }
                "STALLGUARD_PER_SOURCE" => {
                    let v = value.trim();
                    p.per_source = if v.eq_ignore_ascii_case("off") || v == "0" {
                        0
                    } else {
                        v.parse::<u32>()
                            .ok()
                            .filter(|n| (1..=1_000_000).contains(n))
                            .ok_or_else(|| err(name, value, accepted_for(name)))?
                    }
                }
                "STALLGUARD_TICK" => {
                    let ms = parse_duration_ms(value)
                        .ok()
                        .filter(|ms| (10..=10_000).contains(ms));
                    p.tick_ms = ms.ok_or_else(|| err(name, value, accepted_for(name)))?;
                }
                "STALLGUARD_ACTION" => {
                    p.action = match value.trim().to_ascii_lowercase().as_str() {
                        "shutdown" => Action::Shutdown,
                        "rst" => Action::Rst,
                        "log" => Action::Log,
                        _ => return Err(err(name, value, accepted_for(name))),
                    }
                }
                "STALLGUARD_LOG" => {
                    p.log_level = match value.trim().to_ascii_lowercase().as_str() {
                        "off" => LogLevel::Off,
                        "error" => LogLevel::Error,
                        "warn" => LogLevel::Warn,
                        "info" => LogLevel::Info,
                        "debug" => LogLevel::Debug,
                        _ => return Err(err(name, value, accepted_for(name))),
                    }
                }
                "STALLGUARD_LOG_FILE" => {
                    if !value.starts_with('/') || value.contains('\0') {
                        return Err(err(name, value, accepted_for(name)));
                    }
                    p.log_file = Some(value.to_string());
                }
                "STALLGUARD_ADOPT" => p.adopt_stdio = parse_switch(name, value)?,
                "STALLGUARD_BACKSTOPS" => p.backstops = parse_switch(name, value)?,
                "STALLGUARD_SOCKET_TIMEOUTS" => p.socket_timeouts = parse_switch(name, value)?,
                "STALLGUARD_UNIX" => p.unix = parse_switch(name, value)?,
                "STALLGUARD_REPORT" => p.report_ms = parse_timer(name, value)?,
                "STALLGUARD_METRICS_FILE" => {
                    if !value.starts_with('/') || value.contains('\0') || value.ends_with('/') {
                        return Err(err(name, value, accepted_for(name)));
                    }
                    p.metrics_file = Some(value.to_string());
                }
                "STALLGUARD_DEFER_ACCEPT" => {
                    p.defer_accept = parse_port_list(value).map_err(|why| {
                        err(
                            name,
                            value,
                            format!(
                                "{why}; expected {}",
                                accepted_for(name).trim_start_matches("expected ")
                            ),
                        )
                    })?
                }
                "STALLGUARD_OUTBOUND" => {
                    p.outbound = parse_outbound(value).map_err(|why| {
                        err(name, value, format!("{why}; expected {OUTBOUND_ACCEPTS}"))
                    })?
                }
                "STALLGUARD_ON_ERROR" => {
                    p.on_error = match value.trim().to_ascii_lowercase().as_str() {
                        "exit" => OnError::Exit,
                        "warn" => OnError::Warn,
                        _ => return Err(err(name, value, accepted_for(name))),
                    }
                }
                _ => {
                    let hint = match nearest_name(name) {
                        Some(n) => format!("unknown variable; did you mean {n}?"),
                        None => format!(
                            "unknown variable; known: {}",
                            VARIABLES
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    };
                    return Err(err(name, value, hint));
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            errors.push(e);
        }
    }
    if let Some(spec) = ports_spec {
        match parse_ports(&spec, &p.timers) {
            Ok(rules) => p.ports = rules,
            Err(why) => errors.push(err(
                "STALLGUARD_PORTS",
                &spec,
                format!("{why}; expected {PORTS_ACCEPTS}"),
            )),
        }
    }
    (p, errors)
}

fn accepted_for(name: &str) -> String {
    VARIABLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| format!("expected {a}"))
        .unwrap_or_default()
}

/// The known variable closest to a misspelt one, if it is plausibly a typo.
pub fn nearest_name(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .map(|(n, _)| (edit_distance(name, n), *n))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl Timers {
    /// `first_byte=20s request=20s-40s,minrate=500 body=20s,minrate=500 lens=auto idle=1m
    /// write_stall=1m lifetime=off`.
    pub fn describe(&self) -> String {
        let rate_timer = |t: Option<RequestPolicy>| match t {
            None => "off".to_string(),
            Some(r) if r.max_ms == r.timeout_ms => format_duration_ms(r.timeout_ms),
            Some(r) => format!(
                "{}{}{}",
                format_duration_ms(r.timeout_ms),
                if r.max_ms >= MAX_DURATION_MS {
                    String::new() // no maximum
                } else {
                    format!("-{}", format_duration_ms(r.max_ms))
                },
                if r.min_rate > 0 {
                    format!(",minrate={}", r.min_rate)
                } else {
                    String::new()
                }
            ),
        };
        format!(
            "first_byte={} request={} body={} lens={} idle={} write_stall={} lifetime={}",
            format_duration_ms(self.first_byte_ms),
            rate_timer(self.request),
            rate_timer(self.body),
            if self.lens { "auto" } else { "off" },
            format_duration_ms(self.idle_ms),
            format_duration_ms(self.write_stall_ms),
            format_duration_ms(self.lifetime_ms),
        )
    }
}

impl Policy {
    /// The effective policy as logfmt pairs, for the start line. Port rules, exemptions and
    /// the per-source cap appear only when set.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} action={} tick={} adopt={}",
            self.timers.describe(),
            match self.action {
                Action::Shutdown => "shutdown",
                Action::Rst => "rst",
                Action::Log => "log",
            },
            format_duration_ms(self.tick_ms),
            if self.adopt_stdio { "on" } else { "off" },
        );
        out += &format!(
            " backstops={} socket_timeouts={}",
            if self.backstops { "on" } else { "off" },
            if self.socket_timeouts { "on" } else { "off" }
        );
        if self.per_source > 0 {
            out += &format!(" per_source={}", self.per_source);
        }
        if self.unix {
            out += " unix=on";
        }
        if !self.defer_accept.is_empty() {
            let ports: Vec<String> = self.defer_accept.iter().map(u16::to_string).collect();
            out += &format!(" defer_accept={}", ports.join(","));
        }
        if let Some(o) = self.outbound {
            out += &format!(
                " outbound=connect={},idle={}",
                format_duration_ms(o.connect_ms),
                format_duration_ms(o.idle_ms)
            );
        }
        if !self.exempt.is_empty() {
            out += &format!(" exempt={}", self.exempt.len());
        }
        for (port, rule) in &self.ports {
            match rule {
                None => out += &format!(" port{port}=off"),
                Some(t) => out += &format!(" port{port}=\"{}\"", t.describe()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "first_byte=20s request=20s-40s,minrate=500 body=20s,minrate=500 lens=auto idle=1m write_stall=1m lifetime=off action=shutdown tick=100ms adopt=on backstops=on socket_timeouts=off"
        );
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
        ]);
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
                max_ms: MAX_DURATION_MS,
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
        }
    }

    #[test]
    fn request_forms() {
        assert_eq!(parse_request("off"), Ok(None));
        assert_eq!(
            parse_request("10"),
            Ok(Some(RequestPolicy {
                timeout_ms: 10_000,
                max_ms: 10_000,
                min_rate: 0
            }))
        );
        assert_eq!(
            parse_request("20s-1m, MinRate=500"),
            Ok(Some(RequestPolicy {
                timeout_ms: 20_000,
                max_ms: 60_000,
                min_rate: 500
            }))
        );
        for bad in [
            "40-20",
            "20-40,minrate=0",
            "20-40,minrate=-1",
            "20,minrate=5",
            "20-40,rate=5",
            "20-40,minrate",
            "-",
            "0-5",
            "",
            "20-x",
        ] {
            assert!(parse_request(bad).is_err(), "accepted {bad:?}");
        }
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
        ] {
            let (_, e) = parse(&[(var, val)]);
            assert_eq!(e.len(), 1, "{var}={val}");
            assert_eq!(e[0].var, var);
            assert!(e[0].to_string().contains("expected"), "{}", e[0]);
        }
    }

    #[test]
    fn unknown_names_suggest_the_nearest() {
        let (_, e) = parse(&[("STALLGUARD_IDEL", "5s")]);
        assert!(
            e[0].to_string().contains("did you mean STALLGUARD_IDLE?"),
            "{}",
            e[0]
        );
        let (_, e) = parse(&[("STALLGUARD_FIRSTBYTE", "5s")]);
        assert!(
            e[0].to_string().contains("STALLGUARD_FIRST_BYTE"),
            "{}",
            e[0]
        );
        let (_, e) = parse(&[("STALLGUARD_COMPLETELY_DIFFERENT", "1")]);
        assert!(
            e[0].to_string().contains("known: STALLGUARD_FIRST_BYTE"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn all_errors_are_reported_not_only_the_first() {
        let (_, e) = parse(&[("STALLGUARD_IDLE", "x"), ("STALLGUARD_ACTION", "y")]);
        assert_eq!(e.len(), 2);
    }
}
