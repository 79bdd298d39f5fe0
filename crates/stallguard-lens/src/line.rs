//! The request line for display: method and target, truncated, escaped for logfmt.

use crate::Sink;
use core::fmt;

/// Size of a [`RequestLine`] in bytes (8 words).
pub const LINE_BYTES: usize = 64;
/// Content bytes kept: `METHOD SP target`, cut after 63 bytes; the last byte is the
/// truncation mark.
const CAP: usize = LINE_BYTES - 1;
/// The longest output of [`RequestLine::write_logfmt`].
pub const LOGFMT_MAX: usize = "method=\"\" target=\"...\"".len() + CAP * 4;

/// The method and target of the latest request line, as `METHOD SP target`, at most 63
/// bytes (the rest is dropped and [`RequestLine::truncated`] is set). Kept apart from the
/// [`crate::Lens`] so the caller chooses where (and whether) to store it; all-zero = empty.
///
/// The lens only ever pushes token bytes, one space and target bytes (0x21..=0x7e,
/// 0x80..=0xff), never NUL, so the content ends at the first NUL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestLine {
    buf: [u8; LINE_BYTES],
}

impl Default for RequestLine {
    fn default() -> Self {
        RequestLine::new()
    }
}

impl fmt::Debug for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RequestLine({}{})",
            Logfmt(self.as_bytes()),
            if self.truncated() { "..." } else { "" }
        )
    }
}

impl RequestLine {
    pub const fn new() -> RequestLine {
        RequestLine {
            buf: [0; LINE_BYTES],
        }
    }

    /// Content length in bytes (0..=63): where the first NUL is, found eight bytes at a
    /// time (every push asks).
    #[inline]
    pub fn len(&self) -> usize {
        let (words, _) = self.buf.as_chunks::<8>();
        for (k, w) in words.iter().enumerate() {
            let x = u64::from_le_bytes(*w);
            // A high bit for each zero byte; above the first zero a borrow may mark a 0x01
            // too, never below it, so the lowest mark is the first NUL.
            let zeros = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
            if zeros != 0 {
                return (k * 8 + zeros.trailing_zeros() as usize / 8).min(CAP);
            }
        }
        CAP
    }

    pub fn is_empty(&self) -> bool {
        self.buf[0] == 0
    }

    /// The request line was longer than what is kept.
    pub fn truncated(&self) -> bool {
        self.buf[CAP] != 0
    }

    /// `METHOD SP target` (possibly cut).
    pub fn as_bytes(&self) -> &[u8] {
        let n = self.len();
        self.buf.get(..n).unwrap_or(&[])
    }

    /// The method (empty while none was read).
    pub fn method(&self) -> &[u8] {
        let s = self.as_bytes();
        match s.iter().position(|&b| b == b' ') {
            Some(i) => s.get(..i).unwrap_or(&[]),
            None => s,
        }
    }

    /// The target (possibly cut; empty while not reached).
    pub fn target(&self) -> &[u8] {
        let s = self.as_bytes();
        match s.iter().position(|&b| b == b' ') {
            Some(i) => s.get(i + 1..).unwrap_or(&[]),
            None => &[],
        }
    }

    /// Eight little-endian words, for atomics.
    pub fn to_words(&self) -> [u64; 8] {
        let mut w = [0u64; 8];
        for (word, chunk) in w.iter_mut().zip(self.buf.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        w
    }

    pub fn from_words(w: [u64; 8]) -> RequestLine {
        let mut line = RequestLine::new();
        for (chunk, word) in line.buf.chunks_exact_mut(8).zip(w.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        line
    }

    /// Writes `method=GET target="/path"` (escaped, `...` before the closing quote when
    /// truncated) into `out`; returns the bytes written. Output longer than `out` is cut at
    /// an escape boundary. `out` of [`LOGFMT_MAX`] bytes always suffices.
    pub fn write_logfmt(&self, out: &mut [u8]) -> usize {
        let mut w = Writer { out, n: 0 };
        w.put(b"method=");
        let method = self.method();
        if !method.is_empty() && method.iter().all(|&b| crate::is_tchar(b)) {
            w.put(method);
        } else {
            w.put(b"\"");
            w.escaped(method);
            w.put(b"\"");
        }
        w.put(b" target=\"");
        w.escaped(self.target());
        if self.truncated() {
            w.put(b"...");
        }
        w.put(b"\"");
        w.n
    }
}

impl Sink for RequestLine {
    fn start(&mut self) {
        self.buf = [0; LINE_BYTES];
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = self.len();
        let room = CAP - n;
        let take = bytes.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(n..n + take), bytes.get(..take)) {
            dst.copy_from_slice(src);
        }
        if bytes.len() > room {
            self.buf[CAP] = 1;
        }
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    n: usize,
    // `n` only grows by whole pieces that fit.
}

impl Writer<'_> {
    fn put(&mut self, piece: &[u8]) -> bool {
        match self.out.get_mut(self.n..self.n + piece.len()) {
            Some(dst) => {
                dst.copy_from_slice(piece);
                self.n += piece.len();
                true
            }
            None => false,
        }
    }

    fn escaped(&mut self, src: &[u8]) {
        for &b in src {
            let (e, len) = escape_byte(b);
            if !self.put(&e[..len]) {
                return;
            }
        }
    }
}

/// One byte as it appears inside a quoted logfmt value: printable ASCII as is, `"` and `\`
/// backslash-escaped, anything else (controls, DEL, non-ASCII) as `\xNN`.
fn escape_byte(b: u8) -> ([u8; 4], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' | b'\\' => ([b'\\', b, 0, 0], 2),
        0x20..=0x7e => ([b, 0, 0, 0], 1),
        _ => (
            [b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]],
            4,
        ),
    }
}

/// Escapes `src` for the inside of a quoted logfmt value into `out` (no quotes added);
/// returns the bytes written, cut at an escape boundary when `out` is short.
pub fn escape_logfmt(src: &[u8], out: &mut [u8]) -> usize {
    let mut w = Writer { out, n: 0 };
    w.escaped(src);
    w.n
}

/// Displays bytes as a quoted, escaped logfmt value: `"..."`. Never a line break, never an
/// unescaped quote.
#[derive(Clone, Copy, Debug)]
pub struct Logfmt<'a>(pub &'a [u8]);

impl fmt::Display for Logfmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('"')?;
        for &b in self.0 {
            let (e, len) = escape_byte(b);
            for &c in &e[..len] {
                f.write_char(c as char)?;
            }
        }
        f.write_char('"')
    }
}
