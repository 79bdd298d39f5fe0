//! "Did you mean ...?": the known name nearest a misspelt one, offered only when the two are a
//! plausible typo apart (an adjacent swap counts as one edit), so a made-up name gets no
//! far-fetched suggestion.

/// The candidate nearest `typed`, if it is within a small edit distance: one edit for a name
/// of up to 5 characters, then one more per 3 characters, at most 3 (case-insensitive).
pub fn nearest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed = typed.to_ascii_lowercase();
    let allowed = (typed.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&typed, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `"; did you mean NAME?"` when a candidate is near, else nothing.
pub fn did_you_mean<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(typed, candidates)
        .map(|n| format!("; did you mean {n}?"))
        .unwrap_or_default()
}

/// Levenshtein distance where swapping two adjacent characters is one edit (optimal string
/// alignment).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: two back (for swaps), the previous, the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("idel", "idle"), 1, "a swap is one edit");
        assert_eq!(edit_distance("foo", "log"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("firstbyte", "first_byte"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn only_plausible_typos_are_suggested() {
        let names = ["idle", "first_byte", "write_stall", "lifetime", "request"];
        assert_eq!(nearest("idel", names), Some("idle"));
        assert_eq!(nearest("IDEL", names), Some("idle"));
        assert_eq!(nearest("writestall", names), Some("write_stall"));
        assert_eq!(nearest("speed", names), None);
        assert_eq!(nearest("foo", ["log", "unix"]), None);
        assert_eq!(did_you_mean("reqest", names), "; did you mean request?");
        assert_eq!(did_you_mean("x", names), "");
    }
}
