//! The fast paths of [`Lens::run`] against [`Lens::step`] alone: for any bytes, split into
//! reads anywhere, with server writes between them, the lens fed through `run` ends every read
//! in exactly the state (words, requests completed, request line) of a lens fed the same bytes
//! one `step` at a time. Inputs are built from the pieces HTTP/1 requests are made of, near
//! misses of the names and keywords the lens recognises (case, length, a byte off), bounds,
//! and random bytes and mutations, so every fast path starts, ends and is cut everywhere.

extern crate std;

use super::*;
use proptest::prelude::*;
use std::vec::Vec;

/// Feeds `pieces` to two lenses, one through `run` (as `feed_with_line` does), the other a
/// byte at a time through `step`; `writes[k]`: the server writes after piece `k`. Checks that
/// they agree after every piece.
fn agree(pieces: &[&[u8]], writes: &[bool]) -> Result<(), TestCaseError> {
    let (mut fast, mut slow) = (Lens::new(), Lens::new());
    let (mut fast_line, mut slow_line) = (RequestLine::new(), RequestLine::new());
    let (mut fast_done, mut slow_done) = (0u32, 0u32);
    for (k, piece) in pieces.iter().enumerate() {
        fast_done += fast.feed_with_line(piece, &mut fast_line).completed;
        slow_done += slow.run_stepwise(piece, &mut slow_line);
        prop_assert_eq!(fast, slow, "after piece {} of {:?}", k, pieces);
        prop_assert_eq!(fast_done, slow_done, "after piece {}", k);
        prop_assert_eq!(fast_line, slow_line, "after piece {}", k);
        if writes.get(k).copied().unwrap_or(false) {
            fast.on_server_write();
            slow.on_server_write();
        }
    }
    Ok(())
}

/// `bytes` cut at `cuts` (indices into its length + 1, in any order).
fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// One of `items`.
fn pick(items: &[&'static [u8]]) -> impl Strategy<Value = &'static [u8]> {
    proptest::sample::select(items.to_vec())
}

/// A word in a random ASCII case.
fn cased(word: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |up| {
        word.iter()
            .zip(up)
            .map(|(&b, u)| if u { b.to_ascii_uppercase() } else { b })
            .collect()
    })
}

/// A word the lens knows, or one just off it: a byte short, a byte long, a byte changed.
fn near(words: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        pick(words),
        0u8..6,
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_flat_map(|(w, how, at, b)| {
            cased(w).prop_map(move |mut v| {
                let i = at.index(v.len());
                match how {
                    0 => {
                        v.pop();
                    }
                    1 => v.push(b'x'),
                    2 => v[i] = b,
                    3 => v.insert(i, b'-'),
                    _ => {}
                }
                v
            })
        })
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::sample::select(&b"abcxyzABCXYZ019!#$%&'*+-.^_`|~"[..]),
        0..12,
    )
}

fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        8 => Just(&b"\r\n"[..]),
        3 => Just(&b"\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b"\r\r\n"[..]),
        1 => Just(&b""[..]),
    ]
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => pick(&[&b"GET"[..], b"POST", b"PUT", b"HEAD", b"DELETE"][..])
            .prop_map(|m| m.to_vec()),
        2 => near(&[b"CONNECT", b"PRI"]),
        1 => token(),
        // Around MAX_METHOD.
        1 => (30usize..35).prop_map(|n| std::vec![b'M'; n]),
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => pick(&[&b"/"[..], b"/index.html", b"*", b"example.com:443",
            b"/a/b/c?d=e&f=g#h", b"/\xff\x80~"][..]).prop_map(|t| t.to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..80),
        1 => (0usize..100).prop_map(|n| std::vec![b'/'; n]),
    ]
}

fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(b"HTTP/1.1".to_vec()),
        3 => Just(b"HTTP/1.0".to_vec()),
        1 => pick(&[&b"HTTP/1.2"[..], b"HTTP/2.0", b"HTTP/1.", b"http/1.1",
            b"HTTP/1.11", b"HTTP"][..]).prop_map(|v| v.to_vec()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => near(&[b"chunked", b"close", b"upgrade", b"100-continue", b"keep-alive", b"gzip"]),
        2 => pick(&[&b", "[..], b",", b" ", b"\t", b";q=1", b";", b"0",
            b"12", b"18446744073709551615", b"18446744073709551616", b"\"x\""][..])
            .prop_map(|p| p.to_vec()),
        1 => token(),
        1 => proptest::collection::vec(any::<u8>(), 0..20),
    ];
    proptest::collection::vec(piece, 0..5).prop_map(|v| v.concat())
}

fn header() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        4 => near(&[b"content-length", b"transfer-encoding", b"expect", b"upgrade",
            b"connection", b"host"]),
        1 => token(),
    ];
    let colon = prop_oneof![8 => Just(&b":"[..]), 1 => Just(&b""[..]), 1 => Just(&b" :"[..])];
    (name, colon, value(), line_end()).prop_map(|(n, c, v, e)| [&n[..], c, &v, e].concat())
}

fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0usize..20, line_end()).prop_map(|(n, e)| {
            let mut c = std::format!("{n:x}").into_bytes();
            c.extend_from_slice(e);
            c.extend(std::iter::repeat_n(b'd', n));
            c.extend_from_slice(b"\r\n");
            c
        }),
        1 => pick(&[&b"1;ext=\"v\"\r\nx\r\n"[..], b"0\r\n\r\n",
            b"0\r\nT: 1\r\n\r\n", b"0\nT: 1\n\n", b"zz\r\n", b"fffffffffffffffff\r\n",
            b"3\r\nabcX"][..]).prop_map(|c| c.to_vec()),
    ]
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        pick(&[&b""[..], b"\r\n", b"\n\n"][..]),
        method(),
        pick(&[&b" "[..], b"  ", b""][..]),
        target(),
        pick(&[&b" "[..], b"\t"][..]),
        version(),
        line_end(),
        proptest::collection::vec(header(), 0..6),
        line_end(),
        proptest::collection::vec(
            prop_oneof![chunk(), proptest::collection::vec(any::<u8>(), 0..12)],
            0..4,
        ),
    )
        .prop_map(|(lead, m, sp1, t, sp2, v, e, hs, e2, body)| {
            [
                lead,
                &m,
                sp1,
                &t,
                sp2,
                &v,
                e,
                &hs.concat(),
                e2,
                &body.concat(),
            ]
            .concat()
        })
}

/// Requests, then a few random byte flips.
fn input() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(request(), 1..4),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(reqs, flips)| {
            let mut v = reqs.concat();
            for (at, b) in flips {
                if !v.is_empty() {
                    let i = at.index(v.len());
                    v[i] = b;
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn fast_paths_agree_with_step_on_requests_split_anywhere(
        bytes in input(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        writes in proptest::collection::vec(any::<bool>(), 0..9),
    ) {
        agree(&split(&bytes, &cuts), &writes)?;
        // And in one read, and a byte at a time.
        agree(&[&bytes], &[])?;
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        agree(&bytewise, &[])?;
    }

    #[test]
    fn fast_paths_agree_with_step_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        agree(&split(&bytes, &cuts), &[])?;
    }
}

/// The bounds, where a fast path's one count of a whole run meets the byte where `step`
/// turns the lens off: a header section around MAX_SECTION, cut at every point near the
/// bound, with the run ending in a name, a value and a target.
#[test]
fn fast_paths_agree_with_step_at_the_section_bound() {
    let bound = MAX_SECTION as usize;
    let mut shapes: Vec<Vec<u8>> = Vec::new();
    for extra in [0usize, 1, 2, 3] {
        // A value that ends right at the bound.
        let mut v = Vec::from(&b"GET / HTTP/1.1\r\nX: "[..]);
        v.resize(bound - 4 + extra, b'a');
        v.extend_from_slice(b"\r\nContent-Length: 1\r\n\r\nx");
        shapes.push(v);
        // A name that crosses it.
        let mut n = Vec::from(&b"GET / HTTP/1.1\r\nX: "[..]);
        n.resize(bound - 12 + extra, b'a');
        n.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
        shapes.push(n);
        // A target that crosses it.
        let mut t = Vec::from(&b"GET /"[..]);
        t.resize(bound - 8 + extra, b'a');
        t.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        shapes.push(t);
    }
    for s in &shapes {
        for cut in (bound - 24)..(bound + 8).min(s.len()) {
            let (a, b) = s.split_at(cut);
            agree(&[a, b], &[]).unwrap();
        }
        agree(&[s], &[]).unwrap();
    }
}

proptest! {
    /// `RequestLine::len`, eight bytes at a time, is where the first NUL of the 63 content
    /// bytes is (63 if none), whatever the bytes after it (0x01s above a NUL included).
    #[test]
    fn request_line_length_is_the_first_nul(
        words in proptest::collection::vec(
            prop_oneof![Just(0u64), Just(0x0101_0101_0101_0101), any::<u64>(),
                any::<u64>().prop_map(|w| w & 0x0101_0101_0101_01ff)],
            8,
        ),
    ) {
        let mut w = [0u64; 8];
        w.copy_from_slice(&words);
        let line = RequestLine::from_words(w);
        let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        let want = bytes[..63].iter().position(|&b| b == 0).unwrap_or(63);
        prop_assert_eq!(line.len(), want);
        prop_assert_eq!(line.is_empty(), want == 0);
    }
}

/// What a caller that keeps the request line elsewhere (`track::lens`, a side table) does:
/// it passes the stored line only while `in_request_line`, a fresh one otherwise, and keeps
/// the result if it passed the stored one or something was written into the fresh one.
/// Checked against passing (and keeping) the stored line every time, the lens not off.
fn lazy_line_agrees(pieces: &[&[u8]]) -> Result<(), TestCaseError> {
    let (mut eager, mut lazy) = (Lens::new(), Lens::new());
    let (mut eager_stored, mut lazy_stored) = (RequestLine::new(), RequestLine::new());
    for (k, piece) in pieces.iter().enumerate() {
        let mut line = eager_stored;
        eager.feed_with_line(piece, &mut line);
        if eager.stage() != Stage::Off {
            eager_stored = line;
        }
        let pass_stored = lazy.in_request_line();
        let mut line = if pass_stored {
            lazy_stored
        } else {
            RequestLine::new()
        };
        lazy.feed_with_line(piece, &mut line);
        if lazy.stage() != Stage::Off && (pass_stored || !line.is_empty()) {
            lazy_stored = line;
        }
        prop_assert_eq!(eager, lazy);
        if eager.stage() != Stage::Off {
            prop_assert_eq!(
                eager_stored,
                lazy_stored,
                "after piece {} of {:?}",
                k,
                pieces
            );
        }
        if k % 3 == 2 {
            eager.on_server_write();
            lazy.on_server_write();
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_stored_request_line_is_needed_only_inside_one(
        bytes in input(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        lazy_line_agrees(&split(&bytes, &cuts))?;
    }

    /// `server_write_matters` is exactly whether `on_server_write` changes the lens, at every
    /// point of any input (after reads that found nothing, too) and for corrupt words.
    #[test]
    fn a_server_write_matters_exactly_when_it_changes_the_lens(
        bytes in input(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        words in any::<[u64; 4]>(),
    ) {
        let check = |l: &Lens| -> Result<(), TestCaseError> {
            let mut after = *l;
            after.on_server_write();
            prop_assert_eq!(after != *l, l.server_write_matters(), "{:?}", l);
            Ok(())
        };
        let mut l = Lens::new();
        for (k, piece) in split(&bytes, &cuts).iter().enumerate() {
            l.feed(piece);
            check(&l)?;
            if k % 2 == 1 {
                l.on_read_wait();
                check(&l)?;
            }
            if k % 3 == 2 {
                l.on_server_write();
                check(&l)?;
            }
        }
        check(&Lens::from_words(words))?;
        let mut w = words;
        w[3] = (w[3] & !0xff) | (w[3] & 0x1f); // a valid state byte, other words random
        check(&Lens::from_words(w))?;
    }
}

/// Bytes that end runs (CR, LF, SP, controls, DEL) or sit next to them (0x01, 0x21, 0x7e,
/// 0x80, 0xff, 0x0e), among ordinary ones: what the word-at-a-time scans must not misjudge.
fn scan_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::sample::select(b"az/.-09".to_vec()),
            3 => proptest::sample::select(std::vec![0u8, 1, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
                0x1f, 0x20, 0x21, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff]),
            1 => any::<u8>(),
        ],
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    /// The word-at-a-time scans find exactly the run the byte-by-byte table scan finds.
    #[test]
    fn word_scans_agree_with_the_class_table(bytes in scan_bytes(), skip in 0usize..8) {
        let s = bytes.get(skip..).unwrap_or(&[]);
        prop_assert_eq!(plain_run(s), run_len(s, C_PLAIN), "{:?}", s);
        prop_assert_eq!(target_run(s), run_len(s, C_TARGET), "{:?}", s);
    }
}
