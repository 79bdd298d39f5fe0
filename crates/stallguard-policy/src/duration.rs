//! Durations as operators write them: `500ms`, `20s`, `2m`, `1h`, a bare number of seconds,
//! `off` or `0` for a disabled timer. Stored as whole milliseconds; `0` means off.

/// The longest duration accepted: 30 days. Anything larger is almost certainly a typo, and it
/// keeps every deadline computation far away from u64 overflow.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// What an error message says a duration may look like.
pub const DURATION_ACCEPTS: &str =
    "a duration such as 500ms, 20s, 2m or 1h (a bare number means seconds), or off";

/// Parses a duration; `Ok(0)` means off. `Err` carries a short reason.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty value".into());
    }
    if t.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale_ms: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1.0,
        "" | "s" | "sec" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        other => return Err(format!("unknown unit '{other}'")),
    };
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

/// Formats milliseconds the way the parser reads them back (`off`, `250ms`, `1.5s`, `2m`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        "off".into()
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        let fraction = format!("{:03}", ms % 1000);
        format!("{}.{}s", ms / 1000, fraction.trim_end_matches('0'))
    }
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
}
