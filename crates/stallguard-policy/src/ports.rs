//! `STALLGUARD_PORTS`: per local (listening) port overrides of the timers, or `off` to leave
//! a port alone. Example: `8080:request=10-20,minrate=1000,idle=15s;9000:off`.
//! Timers not named for a port keep their global value.

use crate::duration::parse_duration_ms;
use crate::suggest::did_you_mean;
use crate::timers::{parse_body, parse_lens, parse_request, Timers};

pub const PORTS_ACCEPTS: &str = "PORT:off or PORT:name=value[,name=value...] rules separated by ';' \
     (names: first_byte, request, body, lens, idle, write_stall, lifetime; e.g. 8080:request=10-20,minrate=1000,idle=15s;9000:off)";

/// The timers a port rule may name.
const TIMER_NAMES: [&str; 7] = [
    "first_byte",
    "request",
    "body",
    "lens",
    "idle",
    "write_stall",
    "lifetime",
];

/// Parses the rules, each starting from `base` (the global timers).
pub fn parse_ports(spec: &str, base: &Timers) -> Result<Vec<(u16, Option<Timers>)>, String> {
    let mut rules: Vec<(u16, Option<Timers>)> = Vec::new();
    for rule in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        let (port, body) = rule
            .split_once(':')
            .ok_or_else(|| format!("rule '{rule}' has no ':'"))?;
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{}' is not a port from 1 to 65535", port.trim()))?;
        if rules.iter().any(|(p, _)| *p == port) {
            return Err(format!("port {port} appears twice"));
        }
        let body = body.trim();
        if body.eq_ignore_ascii_case("off") {
            rules.push((port, None));
            continue;
        }
        rules.push((
            port,
            Some(parse_overrides(body, base).map_err(|e| format!("port {port}: {e}"))?),
        ));
    }
    if rules.is_empty() {
        return Err("no rule".into());
    }
    Ok(rules)
}

fn parse_overrides(body: &str, base: &Timers) -> Result<Timers, String> {
    let mut t = *base;
    // `minrate=` belongs to the `request=` before it: glue those back together first.
    let mut items: Vec<String> = Vec::new();
    for part in body.split(',') {
        let part = part.trim();
        let is_minrate = part.to_ascii_lowercase().starts_with("minrate=");
        match items.last_mut() {
            Some(last)
                if is_minrate
                    && (last.to_ascii_lowercase().starts_with("request=")
                        || last.to_ascii_lowercase().starts_with("body=")) =>
            {
                last.push(',');
                last.push_str(part);
            }
            _ if is_minrate => return Err("minrate must follow request= or body=".into()),
            _ => items.push(part.to_string()),
        }
    }
    for item in items {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not name=value"))?;
        let duration = || parse_duration_ms(value).map_err(|e| format!("{name}: {e}"));
        match name.trim().to_ascii_lowercase().as_str() {
            "first_byte" => t.first_byte_ms = duration()?,
            "idle" => t.idle_ms = duration()?,
            "write_stall" => t.write_stall_ms = duration()?,
            "lifetime" => t.lifetime_ms = duration()?,
            "request" => t.request = parse_request(value).map_err(|e| format!("request: {e}"))?,
            "body" => t.body = parse_body(value).map_err(|e| format!("body: {e}"))?,
            "lens" => t.lens = parse_lens(value).map_err(|e| format!("lens: {e}"))?,
            other => {
                let hint = did_you_mean(other, TIMER_NAMES);
                return Err(format!("unknown timer '{other}'{hint}"));
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timers::RequestPolicy;

    #[test]
    fn the_documented_example() {
        let base = Timers::default();
        let rules =
            parse_ports("8080:request=10-20,minrate=1000,idle=15s;9000:off", &base).unwrap();
        assert_eq!(rules.len(), 2);
        let (port, t) = rules[0];
        assert_eq!(port, 8080);
        let t = t.unwrap();
        assert_eq!(
            t.request,
            Some(RequestPolicy {
                timeout_ms: 10_000,
                max_ms: 20_000,
                min_rate: 1000
            })
        );
        assert_eq!(t.idle_ms, 15_000);
        assert_eq!(
            t.first_byte_ms, base.first_byte_ms,
            "unnamed timers keep their global value"
        );
        assert_eq!(rules[1], (9000, None));
    }

    #[test]
    fn other_forms() {
        let base = Timers::default();
        let rules = parse_ports(
            " 80 : first_byte=5s , write_stall=off ; 443:lifetime=1h;",
            &base,
        )
        .unwrap();
        assert_eq!(rules[0].1.unwrap().first_byte_ms, 5_000);
        assert_eq!(rules[0].1.unwrap().write_stall_ms, 0);
        assert_eq!(rules[1].1.unwrap().lifetime_ms, 3_600_000);
        assert_eq!(
            parse_ports("8080:request=off", &base).unwrap()[0]
                .1
                .unwrap()
                .request,
            None
        );
    }

    #[test]
    fn body_and_lens_per_port() {
        let base = Timers::default();
        let rules = parse_ports("8080:body=5-9,minrate=100,lens=off;81:lens=auto", &base).unwrap();
        let t = rules[0].1.unwrap();
        assert_eq!(
            t.body,
            Some(RequestPolicy {
                timeout_ms: 5_000,
                max_ms: 9_000,
                min_rate: 100
            })
        );
        assert!(!t.lens);
        assert!(rules[1].1.unwrap().lens);
        assert!(parse_ports("8080:lens=maybe", &base).is_err());
    }

    #[test]
    fn bad_rules_are_refused() {
        let base = Timers::default();
        for bad in [
            "",
            "8080",
            "0:off",
            "65536:off",
            "http:off",
            "8080:idle=5x",
            "8080:speed=1",
            "8080:minrate=5",
            "8080:off;8080:idle=1s",
            "8080:idle",
            "8080:request=40-20",
        ] {
            assert!(parse_ports(bad, &base).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_misspelt_timer_gets_a_suggestion() {
        let base = Timers::default();
        assert_eq!(
            parse_ports("80:idel=5s", &base),
            Err("port 80: unknown timer 'idel'; did you mean idle?".into())
        );
        assert_eq!(
            parse_ports("80:firstbyte=5s", &base),
            Err("port 80: unknown timer 'firstbyte'; did you mean first_byte?".into())
        );
        assert_eq!(
            parse_ports("80:speed=1", &base),
            Err("port 80: unknown timer 'speed'".into())
        );
    }
}
