//! The guard's log lines: logfmt `key=value` pairs, one event per line.

use std::collections::HashMap;

/// One parsed log line.
pub type Event = HashMap<String, String>;

/// Splits a logfmt line into its key=value pairs (quoted values keep their spaces).
pub fn logfmt(line: &str) -> Event {
    let mut map = HashMap::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = match rest.split_once('=') {
            Some(kv) => kv,
            None => break,
        };
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        map.insert(key.trim().to_string(), value.to_string());
        rest = next.trim_start();
    }
    map
}

/// Lines of `text` whose `event` is `event`.
pub fn events_in(text: &str, event: &str) -> Vec<Event> {
    text.lines()
        .map(logfmt)
        .filter(|m| m.get("event").map(String::as_str) == Some(event))
        .collect()
}

/// `1.103s` → milliseconds.
pub fn seconds_ms(text: &str) -> u64 {
    let secs: f64 = text.trim_end_matches('s').parse().expect("seconds");
    (secs * 1000.0).round() as u64
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_keep_spaces() {
        let m = logfmt(r#"event=reap reason=request msg="a b c" fd=7"#);
        assert_eq!(m["event"], "reap");
        assert_eq!(m["msg"], "a b c");
        assert_eq!(m["fd"], "7");
        assert_eq!(seconds_ms("1.103s"), 1103);
        assert_eq!(events_in("event=a\nevent=b x=1\n", "b").len(), 1);
        assert_eq!(tail("1\n2\n3", 2), "2\n3");
    }
}
