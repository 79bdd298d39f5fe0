//! Durations as operators write them: `500ms`, `20s`, `2m`, `1h`, `1d`, a bare number of
//! seconds, `off` or `0` for a disabled timer. Stored as whole milliseconds; `0` means off.

/// The longest duration accepted: 30 days. Anything larger is almost certainly a typo, and it
/// keeps every deadline computation far away from u64 overflow.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// What an error message says a duration may look like.
pub const DURATION_ACCEPTS: &str =
    "a duration such as 500ms, 20s, 2m, 1h or 1d (a bare number means seconds), or off";

/// The units, largest first: what the parser reads and what [`format_duration_ms`] writes.
const UNITS: [(&str, u64); 5] = [
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a duration; `Ok(0)` means off. `Err` carries a short reason.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty value".into());
    }
    if t.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    if t.starts_with('-') {
        return Err("negative durations are not accepted (use off to disable)".into());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale_ms = unit_ms(&unit.trim().to_ascii_lowercase())? as f64;
    if number.is_empty() || number.matches('.').count() > 1 || number.starts_with('.') {
        return Err("not a number".into());
    }
    let value: f64 = number.parse().map_err(|_| "not a number".to_string())?;
    let ms = value * scale_ms;
    if !ms.is_finite() || ms > MAX_DURATION_MS as f64 {
        return Err("longer than 30 days".into());
    }
    if value > 0.0 && ms < 1.0 {
        return Err("shorter than 1ms".into());
    }
    Ok(ms.round() as u64)
}

/// Milliseconds in one `unit` (no unit: seconds).
fn unit_ms(unit: &str) -> Result<u64, String> {
    let unit = match unit {
        "" | "sec" => "s",
        "min" => "m",
        other => other,
    };
    UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, size)| *size)
        .ok_or_else(|| format!("unknown unit '{unit}'"))
}

/// Formats milliseconds the way the parser reads them back, in the largest unit that is exact
/// (`off`, `250ms`, `1.5s`, `20s`, `2m`, `90m`, `1h`, `30d`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "off".into();
    }
    if let Some((unit, size)) = UNITS.iter().find(|(_, size)| ms.is_multiple_of(*size)) {
        if *size >= 1000 || ms < 1000 {
            return format!("{}{unit}", ms / size);
        }
    }
    let fraction = format!("{:03}", ms % 1000);
    format!("{}.{}s", ms / 1000, fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("20s"), Ok(20_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("30d"), Ok(MAX_DURATION_MS));
        assert_eq!(parse_duration_ms("1.5d"), Ok(129_600_000));
        assert_eq!(parse_duration_ms("15"), Ok(15_000));
        assert_eq!(parse_duration_ms("1.5"), Ok(1500));
        assert_eq!(parse_duration_ms("0.25s"), Ok(250));
        assert_eq!(parse_duration_ms(" 3s "), Ok(3000));
        assert_eq!(parse_duration_ms("OFF"), Ok(0));
        assert_eq!(parse_duration_ms("0"), Ok(0));
    }

    #[test]
    fn rejects_hostile_values() {
        for bad in [
            "",
            " ",
            "-1",
            "-5s",
            "5x",
            "s",
            "ms",
            "1..2",
            ".5",
            "5 5",
            "1e9",
            "NaN",
            "inf",
            "99999999999999999999999",
            "31d",
            "720h1",
            "١٠s",
            "5ﬀ",
            "0.0001ms",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse_duration_ms("721h").is_err());
        assert_eq!(parse_duration_ms("720h"), Ok(MAX_DURATION_MS));
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [0, 1, 250, 1000, 1500, 20_000, 60_000, 120_000, 90_500] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(format_duration_ms(1500), "1.5s");
        assert_eq!(format_duration_ms(20_000), "20s");
    }

    #[test]
    fn echoed_in_the_largest_exact_unit() {
        for (ms, shown) in [
            (MAX_DURATION_MS, "30d"),
            (86_400_000, "1d"),
            (90_000_000, "25h"),
            (3_600_000, "1h"),
            (5_400_000, "90m"),
            (120_000, "2m"),
            (90_000, "90s"),
            (999, "999ms"),
            (1001, "1.001s"),
        ] {
            assert_eq!(format_duration_ms(ms), shown, "{ms}");
        }
        assert_eq!(
            format_duration_ms(parse_duration_ms("720h").unwrap()),
            "30d"
        );
        for ms in [
            86_400_000,
            3_600_000,
            5_400_000,
            MAX_DURATION_MS,
            129_600_000,
        ] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms), "{ms}");
        }
    }

    #[test]
    fn negative_durations_say_so() {
        for bad in ["-1", "-5s", " -0.5m", "-off"] {
            let why = parse_duration_ms(bad).unwrap_err();
            assert!(
                why.contains("negative durations are not accepted"),
                "{bad}: {why}"
            );
        }
    }
}
