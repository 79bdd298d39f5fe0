//! The timers a connection is judged by, and the two values that set several at once:
//! `STALLGUARD_REQUEST` (the request phase) and `STALLGUARD_OUTBOUND` (outbound deadlines).
//! Shared by the global policy and the per-port rules.

use crate::duration::{format_duration_ms, parse_duration_ms, MAX_DURATION_MS};
use crate::suggest::did_you_mean;

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

pub const REQUEST_ACCEPTS: &str =
    "T[-MAX][,minrate=BYTES_PER_SECOND] with durations T <= MAX (e.g. 20-40,minrate=500 or 10s), or off";

pub const BODY_ACCEPTS: &str =
    "T[-MAX][,minrate=BYTES_PER_SECOND] (without MAX: no maximum, e.g. 20,minrate=500), or off";

/// `STALLGUARD_LENS` (and `lens=` of a port rule): `auto` or `off`.
pub fn parse_lens(value: &str) -> Result<bool, String> {
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
            let hint = did_you_mean(key.trim(), ["minrate"]);
            return Err(format!("unknown option '{}'{hint}", key.trim()));
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

pub const OUTBOUND_ACCEPTS: &str =
    "off, or connect=DURATION,idle=DURATION (e.g. connect=5s,idle=30s)";

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
            other => {
                let hint = did_you_mean(other, ["connect", "idle"]);
                return Err(format!("unknown deadline '{other}'{hint}"));
            }
        }
    }
    if o.connect_ms == 0 && o.idle_ms == 0 {
        return Err("no deadline set".into());
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
