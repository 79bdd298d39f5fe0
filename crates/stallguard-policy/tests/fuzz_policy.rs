//! Hostile input for the policy parser (issue #7, item 6): whatever an operator or an attacker
//! with control of the environment puts in `STALLGUARD_*`, parsing never panics, never
//! silently accepts garbage, and each problem is one clear line naming the variable.

use proptest::prelude::*;
use stallguard_policy::duration::MAX_DURATION_MS;
use stallguard_policy::policy::VARIABLES;
use stallguard_policy::ports::parse_ports;
use stallguard_policy::{
    format_duration_ms, parse_duration_ms, parse_env, timers::parse_request, Cidr, Timers,
};

/// Values an operator might mistype or an attacker might plant.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        "[0-9]{1,40}(ms|s|m|h|d|us|)?",
        "-[0-9]{1,25}(ms|s)?",
        "[0-9]{0,20}\\.[0-9]{0,20}(ms|s|m|h)?",
        "[0-9]{1,5}e[0-9]{1,5}",
        Just(String::new()),
        Just(" ".into()),
        Just("off".into()),
        Just("OFF".into()),
        Just("0".into()),
        Just("NaN".into()),
        Just("inf".into()),
        Just("-inf".into()),
        Just("18446744073709551616".into()),
        Just("18446744073709551615ms".into()),
        Just("9223372036854775808s".into()),
        Just("720h".into()),
        Just("721h".into()),
        Just("0.0005ms".into()),
        Just("١٠s".into()),
        Just("5ﬀ".into()),
        Just("１０s".into()),
        Just("\u{0}".into()),
        Just("10s\u{0}".into()),
        Just("20-40,minrate=500".into()),
        Just("20-10".into()),
        Just("20-40,minrate=0".into()),
        Just("20-40,minrate=99999999999999999999".into()),
        Just("20-40,,minrate=5".into()),
        Just("8080:off;8080:off".into()),
        Just("65536:off".into()),
        Just("0:idle=1s".into()),
        Just("8080:request=1-2,minrate=5,idle=1s;9000:off".into()),
        Just("::1/129,10.0.0.0/33".into()),
        Just("10.0.0.0/8,::ffff:1.2.3.4/120".into()),
        Just("connect=5s,idle=30s".into()),
        Just("connect=,idle=".into()),
        Just("/tmp/x\nlevel=error".into()),
        Just("a\nb".into()),
    ]
}

/// Names: the real ones, near misses, and arbitrary `STALLGUARD_` suffixes (including control
/// characters: an environment name may contain any byte but `=` and NUL).
fn name() -> impl Strategy<Value = String> {
    let known: Vec<String> = VARIABLES.iter().map(|v| v.name.to_string()).collect();
    prop_oneof![
        4 => proptest::sample::select(known.clone()),
        1 => (proptest::sample::select(known), 0usize..30, any::<char>()).prop_map(|(n, i, c)| {
            let mut v: Vec<char> = n.chars().collect();
            let i = i % v.len();
            v[i] = c;
            v.into_iter().collect()
        }),
        1 => "STALLGUARD_\\PC{0,20}",
        1 => "STALLGUARD_[A-Z_]{0,20}",
        1 => any::<String>(),
    ]
}

fn is_one_clear_line(text: &str) -> bool {
    !text.contains('\n') && !text.contains('\r') && !text.is_empty()
}

fn has_line_break(text: &str) -> bool {
    text.contains('\n') || text.contains('\r')
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4096),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// parse_env: no panic; one error per bad STALLGUARD_ variable (at most), each naming it,
    /// on one line; other names are ignored.
    #[test]
    fn parse_env_never_panics_and_names_each_bad_variable(
        vars in proptest::collection::vec((name(), hostile_value()), 0..8)
    ) {
        let (policy, errors) = parse_env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let ours = vars.iter().filter(|(k, _)| k.starts_with("STALLGUARD_")).count();
        prop_assert!(errors.len() <= ours, "{} errors for {} variables", errors.len(), ours);
        for e in &errors {
            prop_assert!(e.var.starts_with("STALLGUARD_"), "error for a foreign name {:?}", e.var);
            prop_assert!(vars.iter().any(|(k, _)| *k == e.var), "error names {:?}, not an input", e.var);
            let line = e.to_string();
            prop_assert!(line.starts_with("stallguard: invalid "), "{line}");
            // The name is in the line, its control characters escaped (one line, always).
            let shown: String = e.var.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect();
            prop_assert!(line.contains(&shown), "{line}");
            // (Inputs with line breaks: see the ignored test at the end, a known bug.)
            if !has_line_break(&e.var) && !has_line_break(&e.value) {
                prop_assert!(is_one_clear_line(&line), "not one line: {line:?}");
            }
            prop_assert!(!e.accepted.trim().is_empty(), "no hint of what is accepted: {line}");
        }
        // Whatever was accepted stays inside the documented bounds.
        for t in std::iter::once(&policy.timers).chain(policy.ports.iter().filter_map(|(_, t)| t.as_ref())) {
            for ms in [t.first_byte_ms, t.idle_ms, t.write_stall_ms, t.lifetime_ms] {
                prop_assert!(ms <= MAX_DURATION_MS);
            }
            if let Some(r) = t.request {
                prop_assert!(r.timeout_ms > 0 && r.timeout_ms <= r.max_ms && r.max_ms <= MAX_DURATION_MS);
            }
        }
        prop_assert!((10..=10_000).contains(&policy.tick_ms));
        prop_assert!(policy.per_source <= 1_000_000);
        // The start line of an accepted policy is one line too.
        prop_assert!(is_one_clear_line(&policy.describe()));
    }

    /// Valid-looking values for every variable: each one is accepted or rejected alone.
    #[test]
    fn every_variable_takes_hostile_values_without_panicking(value in hostile_value()) {
        for var in VARIABLES.iter().map(|v| &v.name) {
            let (_, errors) = parse_env([(*var, value.as_str())]);
            prop_assert!(errors.len() <= 1);
            if let Some(e) = errors.first() {
                prop_assert_eq!(&e.var, var);
                if !has_line_break(&value) {
                    prop_assert!(is_one_clear_line(&e.to_string()), "{:?}", e.to_string());
                }
            }
        }
    }

    #[test]
    fn durations_stay_in_range_and_round_trip(text in hostile_value(), ms in 0u64..=MAX_DURATION_MS) {
        match parse_duration_ms(&text) {
            Ok(v) => prop_assert!(v <= MAX_DURATION_MS, "{text:?} -> {v}"),
            Err(why) => prop_assert!(has_line_break(&text) || is_one_clear_line(&why), "{why:?}"),
        }
        prop_assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
    }

    #[test]
    fn huge_and_negative_numbers_are_refused(n in any::<u128>(), unit in "(ms|s|m|h|)") {
        let text = format!("{n}{unit}");
        let scale: u128 = match unit.as_str() { "ms" => 1, "m" => 60_000, "h" => 3_600_000, _ => 1000 };
        match parse_duration_ms(&text) {
            Ok(v) => prop_assert_eq!(u128::from(v), n * scale),
            Err(_) => prop_assert!(n.saturating_mul(scale) > u128::from(MAX_DURATION_MS)),
        }
        let negative = format!("-{n}{unit}");
        prop_assert!(parse_duration_ms(&negative).is_err() || n == 0);
    }

    #[test]
    fn request_specs_are_consistent(text in hostile_value(), t in 1u64..1000, extra in 0u64..1000, rate in 1u64..100_000) {
        match parse_request(&text) {
            Ok(Some(r)) => prop_assert!(r.timeout_ms > 0 && r.timeout_ms <= r.max_ms && r.min_rate <= 1_000_000_000),
            Ok(None) => {}
            Err(why) => prop_assert!(has_line_break(&text) || is_one_clear_line(&why)),
        }
        let spec = format!("{t}-{},minrate={rate}", t + extra + 1);
        let r = parse_request(&spec).unwrap().unwrap();
        prop_assert_eq!((r.timeout_ms, r.max_ms, r.min_rate), (t * 1000, (t + extra + 1) * 1000, rate));
    }

    #[test]
    fn cidrs_parse_what_they_print(text in hostile_value(), v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), p4 in 0u8..=32, p6 in 0u8..=128) {
        if let Err(why) = Cidr::parse(&text) {
            prop_assert!(has_line_break(&text) || is_one_clear_line(&why));
        }
        let a4 = std::net::Ipv4Addr::from(v4);
        let c4 = Cidr::parse(&format!("{a4}/{p4}")).unwrap();
        let mut peer = [0u8; 16];
        peer[..4].copy_from_slice(&v4);
        prop_assert!(c4.contains(&peer, true));
        let a6 = std::net::Ipv6Addr::from(v6);
        let c6 = Cidr::parse(&format!("{a6}/{p6}")).unwrap();
        prop_assert!(c6.contains(&v6, false));
        let (too_long4, too_long6) = (format!("{a4}/33"), format!("{a6}/129"));
        prop_assert!(Cidr::parse(&too_long4).is_err());
        prop_assert!(Cidr::parse(&too_long6).is_err());
    }

    #[test]
    fn port_rules_never_panic(spec in hostile_value(), port in 1u16.., other in 1u16.., fb in 1u64..100_000) {
        match parse_ports(&spec, &Timers::default()) {
            Ok(rules) => {
                prop_assert!(!rules.is_empty());
                for (i, (p, _)) in rules.iter().enumerate() {
                    prop_assert!(*p > 0);
                    prop_assert!(rules[i + 1..].iter().all(|(q, _)| q != p), "port {p} twice");
                }
            }
            Err(why) => prop_assert!(has_line_break(&spec) || is_one_clear_line(&why), "{why:?}"),
        }
        let spec = format!("{port}:first_byte={fb}ms;{other}:off");
        let r = parse_ports(&spec, &Timers::default());
        if port == other {
            prop_assert!(r.is_err());
        } else {
            let r = r.unwrap();
            prop_assert_eq!(r[0].1.unwrap().first_byte_ms, fb);
            prop_assert_eq!(r[1], (other, None));
        }
    }
}

/// KNOWN BUG (reported, not fixed here): a value (or name) containing a line break makes the
/// error two lines on stderr. ConfigError quotes the value with {:?}, but the reason part
/// repeats the offending fragment raw (`unknown unit '...'`, `rule '...' has no ':'`, the
/// CIDR and request parsers do the same), and the variable name is printed raw. Example:
/// `STALLGUARD_IDLE=$'5x\nstallguard: forged line'` prints a second line that starts like one
/// of ours.
#[test]
fn errors_are_one_line_even_for_values_with_line_breaks() {
    for (var, value) in [
        ("STALLGUARD_IDLE", "5x\nstallguard: forged line"),
        ("STALLGUARD_PORTS", "80\nforged"),
        ("STALLGUARD_EXEMPT", "10.0.0.0/8\nforged"),
        ("STALLGUARD_REQUEST", "20-40,minrate=\nforged"),
        ("STALLGUARD_IDLE\nforged", "5s"),
    ] {
        let (_, errors) = parse_env([(var, value)]);
        assert_eq!(errors.len(), 1, "{var}={value:?}");
        let line = errors[0].to_string();
        assert!(is_one_clear_line(&line), "{var}={value:?} gives {line:?}");
    }
}
