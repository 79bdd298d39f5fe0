//! The HTTP/1.x lens: whose turn it is on a connection, from the bytes the server reads.
//!
//! A [`Lens`] follows the *request* framing of one connection (request line, header section,
//! body by `Content-Length` or `chunked`, pipelined requests) and tells the watcher which
//! [`Stage`] the connection is in. It never allocates, never panics on any input, is `no_std`,
//! and packs into four `u64` words ([`Lens::to_words`]) so an fd slot can keep it in atomics.
//! An all-zero lens (`Lens::new()`, `Lens::from_words([0; 4])`) is a fresh connection.
//!
//! # Stages (the rule)
//!
//! | stage | meaning | whose turn |
//! |---|---|---|
//! | [`Stage::Detect`] | no byte yet, or the first request line is not complete yet | call patterns decide (today's behaviour) |
//! | [`Stage::Headers`] | inside a request's header section (request line included, after the first request) | client: header timer |
//! | [`Stage::Body`] | inside a request body (`Content-Length` or `chunked`, trailers included) | client: body timer |
//! | [`Stage::Server`] | a complete request was read and the server has not written since; or `Expect: 100-continue` headers read and the server has not written yet | server: no client timer |
//! | [`Stage::Response`] | the server wrote after the last complete request; the next byte read starts the next request | idle + write-stall timers |
//! | [`Stage::Idle`] | as `Response`, and the server has since tried to read and found nothing ([`Lens::on_read_wait`]) | idle + write-stall timers |
//! | [`Stage::Tunnel`] | after the server's answer to `CONNECT` or to `Upgrade` + `Connection: upgrade` | idle + write-stall timers only |
//! | [`Stage::Off`] | not HTTP/1.x, or framing the lens does not trust | call patterns decide (today's behaviour) |
//!
//! The lens does not parse responses, so it cannot know when an answer ends: the first server
//! write after a complete request moves the connection to `Response`, and the next byte read
//! from the client starts the next request. A pipelined request that arrives while an earlier
//! one is still unanswered is reported as `Server` (the server owes an answer) until the server
//! writes.
//!
//! # What turns the lens off (for the rest of the connection)
//!
//! See [`OffReason`]: anything that is not `METHOD SP target SP HTTP/1.0|1.1 CRLF` (the
//! `PRI * HTTP/2.0` preface included), an invalid header line, obs-fold, a bad or conflicting
//! `Content-Length`, `Content-Length` together with `Transfer-Encoding`, a `Transfer-Encoding`
//! whose last coding is not `chunked` (or `chunked` twice, or any in HTTP/1.0), a bad chunk-size
//! line or chunk terminator, and the bounds below. Off is final and safe: the caller falls back
//! to call-pattern behaviour; the lens itself never asks for a cut.
//!
//! # Bounds
//!
//! * [`MAX_SECTION`] (64 KiB): request line + header section, each chunk-size line (extensions
//!   included), and the trailer section.
//! * [`MAX_METHOD`] (32 bytes): method token.
//! * [`MAX_EMPTY_LINES`] (16 bytes of CR/LF) before a request line.
//! * `Content-Length` and chunk sizes: up to `u64::MAX`.
//!
//! Line ends: CRLF, or a bare LF (RFC 9112 §2.2 allows recipients to accept it); a CR not
//! followed by LF turns the lens off.
#![no_std]
#![forbid(unsafe_code)]

mod line;
mod timing;
pub mod tls;

pub use line::{escape_logfmt, Logfmt, RequestLine, LINE_BYTES, LOGFMT_MAX};
pub use timing::{stage_deadline, StageTimer};

/// Bound on the request line + header section, on each chunk-size line, and on the trailer
/// section, in bytes.
pub const MAX_SECTION: u32 = 64 * 1024;
/// Bound on the method token, in bytes.
pub const MAX_METHOD: u16 = 32;
/// How many CR/LF bytes may precede a request line (RFC 9112 §2.2: ignore empty lines).
pub const MAX_EMPTY_LINES: u16 = 16;

/// Where a connection is, for the watcher. See the crate documentation for the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stage {
    Detect = 0,
    Headers = 1,
    Body = 2,
    Server = 3,
    Response = 4,
    Idle = 5,
    Tunnel = 6,
    Off = 7,
}

impl Stage {
    /// The name used in log lines (`stage=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Detect => "detect",
            Stage::Headers => "headers",
            Stage::Body => "body",
            Stage::Server => "server",
            Stage::Response => "response",
            Stage::Idle => "idle",
            Stage::Tunnel => "tunnel",
            Stage::Off => "off",
        }
    }

    /// The client owes bytes of an incomplete request: a header or body timer runs.
    pub fn is_client_turn(self) -> bool {
        matches!(self, Stage::Headers | Stage::Body)
    }

    /// The lens knows the framing (the caller should not fall back to call patterns).
    pub fn is_framed(self) -> bool {
        !matches!(self, Stage::Detect | Stage::Off)
    }
}

/// Why the lens turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OffReason {
    /// The lens is not off.
    None = 0,
    /// The first bytes are not an HTTP/1.x request line.
    NotHttp = 1,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`).
    Http2 = 2,
    /// A later request line is malformed.
    BadRequestLine = 3,
    /// A header line is malformed (name, colon, CR without LF).
    BadHeader = 4,
    /// A header line starts with whitespace (obs-fold).
    ObsFold = 5,
    /// `Content-Length` is not a number, overflows, or two values differ.
    BadContentLength = 6,
    /// Both `Content-Length` and `Transfer-Encoding`.
    ClAndTe = 7,
    /// `Transfer-Encoding` whose last coding is not `chunked`, or `chunked` twice.
    BadTransferEncoding = 8,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    Http10Te = 9,
    /// A bad chunk-size line, chunk terminator or trailer line.
    BadChunk = 10,
    /// A bound ([`MAX_SECTION`], [`MAX_METHOD`], [`MAX_EMPTY_LINES`]) was exceeded.
    TooLarge = 11,
    /// The state words did not describe a valid lens.
    Corrupt = 12,
}

impl OffReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OffReason::None => "none",
            OffReason::NotHttp => "not_http",
            OffReason::Http2 => "http2",
            OffReason::BadRequestLine => "bad_request_line",
            OffReason::BadHeader => "bad_header",
            OffReason::ObsFold => "obs_fold",
            OffReason::BadContentLength => "bad_content_length",
            OffReason::ClAndTe => "cl_and_te",
            OffReason::BadTransferEncoding => "bad_transfer_encoding",
            OffReason::Http10Te => "http10_te",
            OffReason::BadChunk => "bad_chunk",
            OffReason::TooLarge => "too_large",
            OffReason::Corrupt => "corrupt",
        }
    }

    fn from_u8(v: u8) -> OffReason {
        match v {
            0 => OffReason::None,
            1 => OffReason::NotHttp,
            2 => OffReason::Http2,
            3 => OffReason::BadRequestLine,
            4 => OffReason::BadHeader,
            5 => OffReason::ObsFold,
            6 => OffReason::BadContentLength,
            7 => OffReason::ClAndTe,
            8 => OffReason::BadTransferEncoding,
            9 => OffReason::Http10Te,
            10 => OffReason::BadChunk,
            11 => OffReason::TooLarge,
            _ => OffReason::Corrupt,
        }
    }
}

/// What one [`Lens::feed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feed {
    /// Requests completed by these bytes (pipelining: several per read).
    pub completed: u32,
    /// The stage after these bytes.
    pub stage: Stage,
}

// States. The order matters: 1..=17 count toward `section`, 11..=21 are body states.
const S_START: u8 = 0;
const S_METHOD: u8 = 1;
const S_TARGET: u8 = 2;
const S_VERSION: u8 = 3;
const S_VERSION_END: u8 = 4;
const S_RL_CR: u8 = 5;
const S_HLINE: u8 = 6;
const S_HNAME: u8 = 7;
const S_HVALUE: u8 = 8;
const S_HVALUE_CR: u8 = 9;
const S_HEND_CR: u8 = 10;
const S_CHUNK_SIZE: u8 = 11;
const S_CHUNK_EXT: u8 = 12;
const S_CHUNK_SIZE_CR: u8 = 13;
const S_TRAILER_LINE: u8 = 14;
const S_TRAILER: u8 = 15;
const S_TRAILER_CR: u8 = 16;
const S_TRAILER_END_CR: u8 = 17;
const S_BODY_CL: u8 = 18;
const S_CHUNK_DATA: u8 = 19;
const S_CHUNK_DATA_END: u8 = 20;
const S_CHUNK_DATA_CR: u8 = 21;
const S_TUNNEL_PENDING: u8 = 22;
const S_TUNNEL: u8 = 23;
const S_OFF: u8 = 24;

// Flags. Connection-wide:
const CONFIRMED: u16 = 1 << 0; // a request line was valid: this is HTTP/1.x
const UNANSWERED: u16 = 1 << 1; // a complete request, no server write since
const RESPONDED: u16 = 1 << 2; // the server wrote after the last complete request
const IDLE: u16 = 1 << 3; // ... and then found nothing to read
                          // Per request:
const HAS_CL: u16 = 1 << 4;
const TE_SEEN: u16 = 1 << 5;
const TE_CHUNKED: u16 = 1 << 6;
const TE_LAST_CHUNKED: u16 = 1 << 7;
const EXPECT: u16 = 1 << 8;
const UPGRADE: u16 = 1 << 9;
const CONN_UPGRADE: u16 = 1 << 10;
const CONN_CLOSE: u16 = 1 << 11;
const CONNECT: u16 = 1 << 12;
const HTTP10: u16 = 1 << 13;
const EXPECT_WAIT: u16 = 1 << 14; // 100-continue: the server's turn until it writes

// Header ids (low 3 bits of `hdr`; bits 4..6 are the value sub-state).
const H_OTHER: u8 = 0;
const H_CL: u8 = 1;
const H_TE: u8 = 2;
const H_EXPECT: u8 = 3;
const H_UPGRADE: u8 = 4;
const H_CONNECTION: u8 = 5;

const NAMES: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"expect",
    b"upgrade",
    b"connection",
];
const METHODS: &[&[u8]] = &[b"CONNECT", b"PRI"];
const KW_TE: &[&[u8]] = &[b"chunked"];
const KW_EXPECT: &[&[u8]] = &[b"100-continue"];
const KW_CONNECTION: &[&[u8]] = &[b"close", b"upgrade"];
const KW_NONE: &[&[u8]] = &[];

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const SP: u8 = b' ';
const HT: u8 = b'\t';

const C_TCHAR: u8 = 1;
const C_TARGET: u8 = 2;
const C_PLAIN: u8 = 4; // neither CR nor LF

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            c |= C_TCHAR;
        }
        if b > 0x20 && b != 0x7f {
            c |= C_TARGET;
        }
        if b != CR && b != LF {
            c |= C_PLAIN;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CLASS: [u8; 256] = classes();

#[inline(always)]
fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

#[inline(always)]
fn is_tchar(b: u8) -> bool {
    class(b) & C_TCHAR != 0
}

fn all_bits(words: &[&[u8]]) -> u8 {
    ((1u16 << words.len()) - 1) as u8
}

/// Keeps the candidates whose byte at `pos` is `b`.
#[inline]
fn match_step(cand: u8, pos: u16, b: u8, words: &[&[u8]]) -> u8 {
    let mut c = cand;
    for (i, w) in words.iter().enumerate() {
        if c & (1 << i) != 0 && w.get(pos as usize) != Some(&b) {
            c &= !(1 << i);
        }
    }
    c
}

/// The candidate of exactly `len` bytes, if any.
#[inline]
fn match_end(cand: u8, len: u16, words: &[&[u8]]) -> Option<usize> {
    words
        .iter()
        .enumerate()
        .find(|(i, w)| cand & (1 << i) != 0 && w.len() == len as usize)
        .map(|(i, _)| i)
}

/// [`match_step`] over a whole run of bytes at positions `pos..`: keeps the candidates
/// whose bytes there are `run` (ASCII case folded when `fold`; the words are lowercase). One
/// slice compare per live candidate instead of a pass over every candidate per byte.
#[inline]
fn match_run(cand: u8, pos: u16, run: &[u8], words: &[&[u8]], fold: bool) -> u8 {
    let mut c = cand;
    for (i, w) in words.iter().enumerate() {
        if c & (1 << i) == 0 {
            continue;
        }
        // A byte loop, not `==`: for the few bytes compared here a call to memcmp costs
        // more than the compare.
        let same = match w.get(usize::from(pos)..).and_then(|t| t.get(..run.len())) {
            Some(t) if fold => t.eq_ignore_ascii_case(run),
            Some(t) => t.iter().zip(run).all(|(a, b)| a == b),
            None => false,
        };
        if !same {
            c &= !(1 << i);
        }
    }
    c
}

/// The index in [`NAMES`] of the name of each length (`u8::MAX`: none). The names' lengths
/// differ (checked here, at compile time), so a name's length picks its only candidate.
const NAME_BY_LEN: [u8; 32] = {
    let mut t = [u8::MAX; 32];
    let mut i = 0;
    while i < NAMES.len() {
        let len = NAMES[i].len();
        assert!(
            len < 32 && t[len] == u8::MAX,
            "header names of distinct lengths"
        );
        t[len] = i as u8;
        i += 1;
    }
    t
};

/// The header id of a name whose first `pos` bytes left the candidates `cand` and whose
/// remaining bytes are `run` (the whole rest of the name: a colon follows): what
/// [`match_end`] would say after [`match_step`] over every byte of `run`. Its length picks
/// the one name it can be, and one case-insensitive compare decides (most names, `Host`
/// among them, have no known name's length and cost no compare).
#[inline]
fn name_id(cand: u8, pos: u16, run: &[u8]) -> u8 {
    let len = usize::from(pos) + run.len();
    let i = match NAME_BY_LEN.get(len) {
        Some(&i) if cand & 1u8.checked_shl(u32::from(i)).unwrap_or(0) != 0 => i,
        _ => return H_OTHER,
    };
    let same = NAMES
        .get(usize::from(i))
        .and_then(|w| w.get(usize::from(pos)..))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(run));
    if same {
        i + 1
    } else {
        H_OTHER
    }
}

fn value_words(id: u8) -> &'static [&'static [u8]] {
    match id {
        H_TE => KW_TE,
        H_EXPECT => KW_EXPECT,
        H_CONNECTION => KW_CONNECTION,
        _ => KW_NONE,
    }
}

/// Receives the method and target bytes of each request line.
pub(crate) trait Sink {
    fn start(&mut self);
    fn push(&mut self, bytes: &[u8]);
}

struct NoSink;

impl Sink for NoSink {
    #[inline(always)]
    fn start(&mut self) {}
    #[inline(always)]
    fn push(&mut self, _: &[u8]) {}
}

/// The per-connection HTTP/1.x request-framing state. 32 bytes, `Copy`, all-zero = fresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lens {
    /// Body bytes left (Content-Length body or current chunk); the first Content-Length
    /// value while in the header section.
    remaining: u64,
    /// Number being parsed (a Content-Length value, a chunk size).
    acc: u64,
    /// Requests completed on this connection (saturating).
    requests: u32,
    /// Bytes of the current bounded section (header section, chunk-size line, trailers).
    section: u32,
    state: u8,
    /// Current header id | value sub-state << 4.
    hdr: u8,
    /// Keyword candidates (method, header name, list element).
    cand: u8,
    off: u8,
    flags: u16,
    /// Position inside the current token / line element / CR-LF run.
    pos: u16,
}

impl Lens {
    /// A fresh connection: nothing read yet ([`Stage::Detect`]).
    pub const fn new() -> Lens {
        Lens {
            remaining: 0,
            acc: 0,
            requests: 0,
            section: 0,
            state: S_START,
            hdr: 0,
            cand: 0,
            off: 0,
            flags: 0,
            pos: 0,
        }
    }

    /// A lens that is off from the start (e.g. `STALLGUARD_LENS=off`).
    pub const fn disabled() -> Lens {
        let mut l = Lens::new();
        l.state = S_OFF;
        l
    }

    /// Packs the state into four words for an fd slot's atomics:
    ///
    /// * `w[0]` = body bytes remaining (or the first `Content-Length` while in headers)
    /// * `w[1]` = number being parsed (Content-Length value, chunk size)
    /// * `w[2]` = requests completed (bits 0..32) | section byte count (bits 32..64)
    /// * `w[3]` = state (0..8) | header id+sub-state (8..16) | candidates (16..24) |
    ///   off reason (24..32) | flags (32..48) | position (48..64)
    pub const fn to_words(&self) -> [u64; 4] {
        [
            self.remaining,
            self.acc,
            self.requests as u64 | (self.section as u64) << 32,
            self.state as u64
                | (self.hdr as u64) << 8
                | (self.cand as u64) << 16
                | (self.off as u64) << 24
                | (self.flags as u64) << 32
                | (self.pos as u64) << 48,
        ]
    }

    /// Unpacks [`Lens::to_words`]. Total: words that no lens produced give a lens that is
    /// (or soon turns) [`Stage::Off`], never a panic.
    pub const fn from_words(w: [u64; 4]) -> Lens {
        Lens {
            remaining: w[0],
            acc: w[1],
            requests: w[2] as u32,
            section: (w[2] >> 32) as u32,
            state: w[3] as u8,
            hdr: (w[3] >> 8) as u8,
            cand: (w[3] >> 16) as u8,
            off: (w[3] >> 24) as u8,
            flags: (w[3] >> 32) as u16,
            pos: (w[3] >> 48) as u16,
        }
    }

    /// Requests completed on this connection (saturating at `u32::MAX`).
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Why the lens is off ([`OffReason::None`] unless [`Stage::Off`]).
    pub fn off_reason(&self) -> OffReason {
        match self.state {
            S_OFF => match OffReason::from_u8(self.off) {
                OffReason::None => OffReason::Corrupt,
                r => r,
            },
            s if s > S_OFF => OffReason::Corrupt,
            _ => OffReason::None,
        }
    }

    /// A valid HTTP/1.x request line was seen on this connection.
    pub fn is_http(&self) -> bool {
        self.flags & CONFIRMED != 0
    }

    /// The current (or last completed) request carried `Connection: close`.
    pub fn close_requested(&self) -> bool {
        self.flags & CONN_CLOSE != 0
    }

    /// Where the connection is. See the crate documentation for the rule.
    pub fn stage(&self) -> Stage {
        let f = self.flags;
        match self.state {
            S_OFF => Stage::Off,
            S_TUNNEL => Stage::Tunnel,
            s if s > S_OFF => Stage::Off,
            _ if f & UNANSWERED != 0 => Stage::Server,
            S_TUNNEL_PENDING => Stage::Server,
            S_START => {
                if f & CONFIRMED == 0 {
                    Stage::Detect
                } else if f & IDLE != 0 {
                    Stage::Idle
                } else {
                    Stage::Response
                }
            }
            S_METHOD..=S_RL_CR if f & CONFIRMED == 0 => Stage::Detect,
            S_METHOD..=S_HEND_CR => Stage::Headers,
            _ if f & EXPECT_WAIT != 0 => Stage::Server,
            _ => Stage::Body,
        }
    }

    /// Feeds bytes the server read from the client (any split points).
    pub fn feed(&mut self, bytes: &[u8]) -> Feed {
        let completed = self.run(bytes, &mut NoSink);
        Feed {
            completed,
            stage: self.stage(),
        }
    }

    /// As [`Lens::feed`], and keeps the method and target of the latest request line in
    /// `line` (truncated; see [`RequestLine`]).
    pub fn feed_with_line(&mut self, bytes: &[u8], line: &mut RequestLine) -> Feed {
        let completed = self.run(bytes, line);
        Feed {
            completed,
            stage: self.stage(),
        }
    }

    /// The server wrote to the client (any byte count > 0): its answer started.
    /// `Server` → `Response`; `Expect: 100-continue` wait → `Body`; after `CONNECT` or an
    /// upgrade request → `Tunnel`.
    pub fn on_server_write(&mut self) {
        match self.state {
            S_OFF | S_TUNNEL => {}
            S_TUNNEL_PENDING => {
                let requests = self.requests;
                let confirmed = self.flags & CONFIRMED;
                *self = Lens::new();
                self.requests = requests;
                self.flags = confirmed;
                self.state = S_TUNNEL;
            }
            s if s > S_OFF => self.turn_off(OffReason::Corrupt),
            _ => {
                if self.flags & UNANSWERED != 0 {
                    self.flags = (self.flags & !UNANSWERED) | RESPONDED;
                }
                self.flags &= !(EXPECT_WAIT | IDLE);
            }
        }
    }

    /// Whether [`Lens::on_server_write`] would change this lens: the server owes an answer
    /// (or a tunnel, or a 100-continue wait, or `Idle` ends). A caller that keeps the lens
    /// elsewhere can skip the write's bookkeeping when it would not (the second and later
    /// writes of an answer).
    pub fn server_write_matters(&self) -> bool {
        match self.state {
            S_OFF | S_TUNNEL => false,
            S_TUNNEL_PENDING => true,
            s if s > S_OFF => true, // corrupt: the write turns it off
            _ => self.flags & (UNANSWERED | EXPECT_WAIT | IDLE) != 0,
        }
    }

    /// Whether the next bytes fed may continue the current request line (its method or
    /// target, cut by the end of the previous read) without starting a new one: only then
    /// does [`Lens::feed_with_line`] need the line it wrote so far. At any other point the
    /// bytes either start a new line (which begins empty) or touch none, so a caller that
    /// stores the line elsewhere may pass `RequestLine::new()` and keep the stored line if
    /// nothing was written into it.
    pub fn in_request_line(&self) -> bool {
        matches!(self.state, S_METHOD | S_TARGET)
    }

    /// Optional: a read by the server found nothing (EAGAIN, or it is about to block).
    /// Between requests after an answer, this marks the connection `Idle` (for display; the
    /// watcher treats `Response` and `Idle` alike).
    pub fn on_read_wait(&mut self) {
        if self.state == S_START && self.flags & (RESPONDED | UNANSWERED) == RESPONDED {
            self.flags |= IDLE;
        }
    }

    fn turn_off(&mut self, reason: OffReason) {
        let requests = self.requests;
        let confirmed = self.flags & CONFIRMED;
        *self = Lens::new();
        self.requests = requests;
        self.flags = confirmed;
        self.state = S_OFF;
        self.off = reason as u8;
    }

    fn line_reason(&self) -> OffReason {
        if self.flags & CONFIRMED != 0 {
            OffReason::BadRequestLine
        } else {
            OffReason::NotHttp
        }
    }

    /// Adds `n` bytes to the bounded section; false (and off) past the bound.
    #[inline(always)]
    fn count(&mut self, n: usize) -> bool {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.section = self.section.saturating_add(n);
        if self.section > MAX_SECTION {
            self.turn_off(OffReason::TooLarge);
            return false;
        }
        true
    }

    /// The bytes through the machine: [`Lens::step`] byte by byte, except where a fast path
    /// takes a whole run of bytes at once. Each fast path leaves exactly the state (and
    /// pushes exactly the request-line bytes) `step` would have over the same bytes, at any
    /// split point (`equivalence` tests it against `step` alone); where a run is cut by the
    /// end of a read, or anything unusual follows it, it leaves the bytes to `step`.
    fn run<S: Sink>(&mut self, bytes: &[u8], sink: &mut S) -> u32 {
        let mut done = 0u32;
        let mut i = 0usize;
        while let Some(rest) = bytes.get(i..) {
            let Some(&b) = rest.first() else { break };
            match self.state {
                S_OFF | S_TUNNEL | S_TUNNEL_PENDING => break,
                S_BODY_CL | S_CHUNK_DATA if self.remaining > 0 => {
                    self.flags &= !EXPECT_WAIT;
                    let take = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        if self.state == S_BODY_CL {
                            done = done.saturating_add(self.complete());
                        } else {
                            self.state = S_CHUNK_DATA_END;
                        }
                    }
                    continue;
                }
                // A request's method (or the rest of it, after a split) and the space after
                // it: one compare per candidate (CONNECT, PRI) and one push, not a pass over
                // both and a push per byte. Only while the whole run stays within MAX_METHOD
                // (beyond, `step` turns the lens off).
                S_START | S_METHOD if self.state == S_METHOD || is_tchar(b) => {
                    let fresh = self.state == S_START;
                    let pos = if fresh { 0 } else { self.pos };
                    let n = run_len(rest, C_TCHAR);
                    if n > 1 && usize::from(pos) + n <= usize::from(MAX_METHOD) {
                        let (run, after) = rest.split_at(n);
                        i += n;
                        let cand = if fresh {
                            // `step` sets the section to 1 at the first byte, then counts
                            // the others: 0, then all of them.
                            self.begin_request();
                            self.section = 0;
                            sink.start();
                            all_bits(METHODS)
                        } else {
                            self.cand
                        };
                        if self.count(n) {
                            self.cand = match_run(cand, pos, run, METHODS, false);
                            self.pos = pos + n as u16; // at most MAX_METHOD
                                                       // With its space, in one push (the same bytes as two).
                            let with_space = rest.get(..=n).filter(|_| after.first() == Some(&SP));
                            match with_space {
                                Some(both) => {
                                    i += 1;
                                    let on = self.count(1) && self.method_ends();
                                    sink.push(if on { both } else { run });
                                }
                                None => sink.push(run),
                            }
                        }
                        continue;
                    }
                }
                // The target, and the space after it.
                S_TARGET => {
                    let n = target_run(rest);
                    if n > 1 {
                        let (run, after) = rest.split_at(n);
                        sink.push(run);
                        self.pos = self.pos.saturating_add(clamp_u16(n));
                        i += n;
                        if self.count(n) && after.first() == Some(&SP) {
                            i += 1;
                            if self.count(1) {
                                self.pos = 0;
                                self.state = S_VERSION;
                            }
                        }
                        continue;
                    }
                }
                // `HTTP/1.1` and its line end, whole: the request line is valid.
                S_VERSION if self.pos == 0 => {
                    if let Some((http10, n)) = version_line(rest) {
                        i += n;
                        if self.count(n) {
                            if http10 {
                                self.flags |= HTTP10;
                            }
                            self.flags |= CONFIRMED;
                            self.state = S_HLINE;
                        }
                        continue;
                    }
                }
                // The blank line that ends the header section.
                S_HLINE if b == CR && rest.get(1) == Some(&LF) => {
                    i += 2;
                    if self.count(2) {
                        done = done.saturating_add(self.headers_done());
                    }
                    continue;
                }
                // A header name (or its rest, after a split): with the colon in this read,
                // the name is recognised by its length and one case-insensitive compare;
                // cut by the end of the read, the candidates are narrowed in one pass.
                S_HLINE | S_HNAME if self.state == S_HNAME || is_tchar(b) => {
                    let (cand, pos) = if self.state == S_HNAME {
                        (self.cand, self.pos)
                    } else {
                        (all_bits(NAMES), 0)
                    };
                    let n = run_len(rest, C_TCHAR);
                    let (run, after) = rest.split_at(n);
                    match after.first() {
                        Some(&b':') => {
                            i += n + 1;
                            if self.count(n + 1) {
                                self.name_done(name_id(cand, pos, run));
                            }
                            continue;
                        }
                        None if n > 1 => {
                            i += n;
                            if self.count(n) {
                                self.cand = match_run(cand, pos, run, NAMES, true);
                                self.pos = pos.saturating_add(clamp_u16(n));
                                self.state = S_HNAME;
                            }
                            continue;
                        }
                        _ => {}
                    }
                }
                // The value of a header the lens ignores, with its line end when this read
                // holds it (`value_end` does nothing for such a header).
                S_HVALUE if self.hdr & 7 == H_OTHER => {
                    let n = plain_run(rest);
                    let end = match rest.split_at(n).1 {
                        [CR, LF, ..] => 2,
                        [LF, ..] => 1,
                        _ => 0,
                    };
                    if end > 0 {
                        i += n + end;
                        if self.count(n + end) {
                            self.hdr = 0;
                            self.cand = 0;
                            self.pos = 0;
                            self.state = S_HLINE;
                        }
                        continue;
                    }
                    if n > 1 {
                        i += n;
                        self.count(n);
                        continue;
                    }
                }
                // A token of a list header's value (`Connection: keep-alive`), in one pass.
                S_HVALUE
                    if matches!(self.hdr & 7, H_TE | H_EXPECT | H_UPGRADE | H_CONNECTION)
                        && (self.hdr >> 4 == 1 || (self.hdr >> 4 == 0 && is_tchar(b))) =>
                {
                    let n = run_len(rest, C_TCHAR);
                    if n > 1 {
                        let id = self.hdr & 7;
                        let words = value_words(id);
                        let (cand, pos) = if self.hdr >> 4 == 0 {
                            (all_bits(words), 0)
                        } else {
                            (self.cand, self.pos)
                        };
                        let (run, _) = rest.split_at(n);
                        i += n;
                        if self.count(n) {
                            self.cand = match_run(cand, pos, run, words, true);
                            self.pos = pos.saturating_add(clamp_u16(n));
                            self.hdr = id | 1 << 4;
                        }
                        continue;
                    }
                }
                S_CHUNK_EXT | S_TRAILER => {
                    let n = plain_run(rest);
                    if n > 1 {
                        self.flags &= !EXPECT_WAIT;
                        i += n;
                        self.count(n);
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
            done = done.saturating_add(self.step(b, sink));
        }
        done
    }

    /// [`Lens::run`] without its fast paths: every byte through [`Lens::step`]. The
    /// reference the fast paths are tested against.
    #[cfg(test)]
    fn run_stepwise<S: Sink>(&mut self, bytes: &[u8], sink: &mut S) -> u32 {
        let mut done = 0u32;
        for &b in bytes {
            if matches!(self.state, S_OFF | S_TUNNEL | S_TUNNEL_PENDING) {
                break;
            }
            done = done.saturating_add(self.step(b, sink));
        }
        done
    }

    /// One byte through the machine. Returns 1 when it completed a request.
    fn step<S: Sink>(&mut self, b: u8, sink: &mut S) -> u32 {
        let st = self.state;
        if (S_METHOD..=S_TRAILER_END_CR).contains(&st) && !self.count(1) {
            return 0;
        }
        if (S_CHUNK_SIZE..=S_CHUNK_DATA_CR).contains(&st) {
            self.flags &= !EXPECT_WAIT;
        }
        match st {
            S_START => {
                if b == CR || b == LF {
                    self.pos = self.pos.saturating_add(1);
                    if self.pos > MAX_EMPTY_LINES {
                        self.turn_off(OffReason::TooLarge);
                    }
                } else if is_tchar(b) {
                    self.begin_request();
                    self.section = 1;
                    self.pos = 1;
                    self.cand = match_step(all_bits(METHODS), 0, b, METHODS);
                    sink.start();
                    sink.push(&[b]);
                } else {
                    self.turn_off(self.line_reason());
                }
            }
            S_METHOD => {
                if is_tchar(b) {
                    if self.pos >= MAX_METHOD {
                        self.turn_off(OffReason::TooLarge);
                        return 0;
                    }
                    self.cand = match_step(self.cand, self.pos, b, METHODS);
                    self.pos += 1;
                    sink.push(&[b]);
                } else if b == SP {
                    self.method_done(sink);
                } else {
                    self.turn_off(self.line_reason());
                }
            }
            S_TARGET => {
                if class(b) & C_TARGET != 0 {
                    sink.push(&[b]);
                    self.pos = self.pos.saturating_add(1);
                } else if b == SP && self.pos > 0 {
                    self.pos = 0;
                    self.state = S_VERSION;
                } else {
                    self.turn_off(self.line_reason());
                }
            }
            S_VERSION => {
                const V: &[u8] = b"HTTP/1.";
                match V.get(self.pos as usize) {
                    Some(&v) if v == b => self.pos += 1,
                    Some(_) => self.turn_off(self.line_reason()),
                    None => match b {
                        b'0' => {
                            self.flags |= HTTP10;
                            self.state = S_VERSION_END;
                        }
                        b'1' => self.state = S_VERSION_END,
                        _ => self.turn_off(self.line_reason()),
                    },
                }
            }
            S_VERSION_END | S_RL_CR => {
                if b == CR && st == S_VERSION_END {
                    self.state = S_RL_CR;
                } else if b == LF {
                    self.flags |= CONFIRMED;
                    self.pos = 0;
                    self.state = S_HLINE;
                } else {
                    self.turn_off(self.line_reason());
                }
            }
            S_HLINE => {
                if b == CR {
                    self.state = S_HEND_CR;
                } else if b == LF {
                    return self.headers_done();
                } else if b == SP || b == HT {
                    self.turn_off(OffReason::ObsFold);
                } else if is_tchar(b) {
                    self.pos = 1;
                    self.cand = match_step(all_bits(NAMES), 0, b.to_ascii_lowercase(), NAMES);
                    self.state = S_HNAME;
                } else {
                    self.turn_off(OffReason::BadHeader);
                }
            }
            S_HNAME => {
                if is_tchar(b) {
                    self.cand = match_step(self.cand, self.pos, b.to_ascii_lowercase(), NAMES);
                    self.pos = self.pos.saturating_add(1);
                } else if b == b':' {
                    let id = match match_end(self.cand, self.pos, NAMES) {
                        Some(i) => i as u8 + 1,
                        None => H_OTHER,
                    };
                    self.name_done(id);
                } else {
                    self.turn_off(OffReason::BadHeader);
                }
            }
            S_HVALUE | S_HVALUE_CR => {
                if b == CR && st == S_HVALUE {
                    self.state = S_HVALUE_CR;
                } else if b == LF {
                    self.value_end();
                    if self.state != S_OFF {
                        self.hdr = 0;
                        self.cand = 0;
                        self.pos = 0;
                        self.state = S_HLINE;
                    }
                } else if st == S_HVALUE_CR {
                    self.turn_off(OffReason::BadHeader);
                } else {
                    self.value_byte(b);
                }
            }
            S_HEND_CR => {
                if b == LF {
                    return self.headers_done();
                }
                self.turn_off(OffReason::BadHeader);
            }
            S_CHUNK_SIZE => {
                if let Some(d) = hex(b) {
                    if self.acc > u64::MAX >> 4 {
                        self.turn_off(OffReason::BadChunk);
                        return 0;
                    }
                    self.acc = self.acc << 4 | d;
                    self.pos = self.pos.saturating_add(1);
                } else if self.pos == 0 {
                    self.turn_off(OffReason::BadChunk);
                } else if b == SP || b == HT || b == b';' {
                    self.state = S_CHUNK_EXT;
                } else if b == CR {
                    self.state = S_CHUNK_SIZE_CR;
                } else if b == LF {
                    self.chunk_size_done();
                } else {
                    self.turn_off(OffReason::BadChunk);
                }
            }
            S_CHUNK_EXT => {
                if b == CR {
                    self.state = S_CHUNK_SIZE_CR;
                } else if b == LF {
                    self.chunk_size_done();
                }
            }
            S_CHUNK_SIZE_CR => {
                if b == LF {
                    self.chunk_size_done();
                } else {
                    self.turn_off(OffReason::BadChunk);
                }
            }
            S_TRAILER_LINE => {
                if b == CR {
                    self.state = S_TRAILER_END_CR;
                } else if b == LF {
                    return self.complete();
                } else {
                    self.state = S_TRAILER;
                }
            }
            S_TRAILER => {
                if b == CR {
                    self.state = S_TRAILER_CR;
                } else if b == LF {
                    self.state = S_TRAILER_LINE;
                }
            }
            S_TRAILER_CR => {
                if b == LF {
                    self.state = S_TRAILER_LINE;
                } else {
                    self.turn_off(OffReason::BadChunk);
                }
            }
            S_TRAILER_END_CR => {
                if b == LF {
                    return self.complete();
                }
                self.turn_off(OffReason::BadChunk);
            }
            S_BODY_CL | S_CHUNK_DATA => {
                if self.remaining == 0 {
                    self.turn_off(OffReason::Corrupt);
                    return 0;
                }
                self.remaining -= 1;
                if self.remaining == 0 {
                    if st == S_BODY_CL {
                        return self.complete();
                    }
                    self.state = S_CHUNK_DATA_END;
                }
            }
            S_CHUNK_DATA_END | S_CHUNK_DATA_CR => {
                if b == CR && st == S_CHUNK_DATA_END {
                    self.state = S_CHUNK_DATA_CR;
                } else if b == LF {
                    self.state = S_CHUNK_SIZE;
                    self.pos = 0;
                    self.acc = 0;
                    self.section = 0;
                } else {
                    self.turn_off(OffReason::BadChunk);
                }
            }
            S_TUNNEL_PENDING | S_TUNNEL | S_OFF => {}
            _ => self.turn_off(OffReason::Corrupt),
        }
        0
    }

    /// A token byte where a request may start: a new request (connection-wide facts stay,
    /// the rest is reset), in its method.
    #[inline(always)]
    fn begin_request(&mut self) {
        self.flags &= CONFIRMED | UNANSWERED;
        self.remaining = 0;
        self.acc = 0;
        self.hdr = 0;
        self.state = S_METHOD;
    }

    /// The space after the method (counted already): the target follows, unless the method
    /// was the HTTP/2 preface's.
    #[inline(always)]
    fn method_done<S: Sink>(&mut self, sink: &mut S) {
        if self.method_ends() {
            sink.push(b" ");
        }
    }

    /// [`Lens::method_done`] but the push of the space: false if the lens turned off.
    #[inline(always)]
    fn method_ends(&mut self) -> bool {
        match match_end(self.cand, self.pos, METHODS) {
            Some(0) => self.flags |= CONNECT,
            Some(_) => {
                self.turn_off(OffReason::Http2);
                return false;
            }
            None => {}
        }
        self.pos = 0;
        self.cand = 0;
        self.state = S_TARGET;
        true
    }

    /// The colon after a header name: its value follows.
    #[inline(always)]
    fn name_done(&mut self, id: u8) {
        if id == H_TE {
            self.flags |= TE_SEEN;
        }
        self.hdr = id;
        self.cand = all_bits(value_words(id));
        self.pos = 0;
        self.acc = 0;
        self.state = S_HVALUE;
    }

    /// A byte of a known header's value (not CR, not LF).
    fn value_byte(&mut self, b: u8) {
        let id = self.hdr & 7;
        let vs = self.hdr >> 4;
        let ows = b == SP || b == HT;
        let mut next = vs;
        if id == H_CL {
            // Sub-states: 0 leading OWS, 1 digits, 2 trailing OWS.
            match (vs, b) {
                (0 | 2, _) if ows => {}
                (0 | 1, b'0'..=b'9') => {
                    match self
                        .acc
                        .checked_mul(10)
                        .and_then(|a| a.checked_add(u64::from(b - b'0')))
                    {
                        Some(a) => self.acc = a,
                        None => return self.turn_off(OffReason::BadContentLength),
                    }
                    next = 1;
                }
                (1, _) if ows => next = 2,
                _ => return self.turn_off(OffReason::BadContentLength),
            }
        } else if id != H_OTHER {
            // A list: elements separated by commas. Sub-states: 0 before an element,
            // 1 in its token, 2 after the token (OWS), 3 parameters or junk up to a comma.
            let words = value_words(id);
            if b == b',' {
                self.list_element();
                if self.state == S_OFF {
                    return;
                }
                next = 0;
            } else {
                match vs {
                    0 if ows => {}
                    0 if is_tchar(b) => {
                        self.cand = match_step(all_bits(words), 0, b.to_ascii_lowercase(), words);
                        self.pos = 1;
                        next = 1;
                    }
                    0 => {
                        self.cand = 0;
                        next = 3;
                    }
                    1 if is_tchar(b) => {
                        self.cand = match_step(self.cand, self.pos, b.to_ascii_lowercase(), words);
                        self.pos = self.pos.saturating_add(1);
                    }
                    1 | 2 if ows => next = 2,
                    1 | 2 if b == b';' => next = 3,
                    1 | 2 => {
                        self.cand = 0;
                        next = 3;
                    }
                    _ => {}
                }
            }
        }
        self.hdr = id | next << 4;
    }

    /// The end of one element of a list header.
    fn list_element(&mut self) {
        let id = self.hdr & 7;
        let vs = self.hdr >> 4;
        if vs != 0 {
            let hit = match_end(self.cand, self.pos, value_words(id));
            match id {
                H_TE => {
                    if hit == Some(0) {
                        if self.flags & TE_CHUNKED != 0 {
                            return self.turn_off(OffReason::BadTransferEncoding);
                        }
                        self.flags |= TE_CHUNKED | TE_LAST_CHUNKED;
                    } else {
                        self.flags &= !TE_LAST_CHUNKED;
                    }
                }
                H_EXPECT if hit == Some(0) => self.flags |= EXPECT,
                H_CONNECTION => match hit {
                    Some(0) => self.flags |= CONN_CLOSE,
                    Some(_) => self.flags |= CONN_UPGRADE,
                    None => {}
                },
                H_UPGRADE => self.flags |= UPGRADE,
                _ => {}
            }
        }
        self.cand = all_bits(value_words(id));
        self.pos = 0;
        self.hdr = id;
    }

    /// The end of a header line's value.
    fn value_end(&mut self) {
        match self.hdr & 7 {
            H_OTHER => {}
            H_CL => {
                if self.hdr >> 4 == 0 {
                    return self.turn_off(OffReason::BadContentLength);
                }
                if self.flags & HAS_CL != 0 && self.remaining != self.acc {
                    return self.turn_off(OffReason::BadContentLength);
                }
                self.remaining = self.acc;
                self.acc = 0;
                self.flags |= HAS_CL;
            }
            _ => self.list_element(),
        }
    }

    /// The blank line after the headers: decide the body.
    fn headers_done(&mut self) -> u32 {
        let f = self.flags;
        if f & TE_SEEN != 0 {
            if f & HTTP10 != 0 {
                self.turn_off(OffReason::Http10Te);
                return 0;
            }
            if f & HAS_CL != 0 {
                self.turn_off(OffReason::ClAndTe);
                return 0;
            }
            if f & TE_LAST_CHUNKED == 0 {
                self.turn_off(OffReason::BadTransferEncoding);
                return 0;
            }
        }
        self.section = 0;
        self.pos = 0;
        self.acc = 0;
        self.hdr = 0;
        self.cand = 0;
        if f & CONNECT != 0 {
            return self.complete();
        }
        let expect = f & EXPECT != 0 && f & HTTP10 == 0;
        if f & TE_SEEN != 0 {
            self.state = S_CHUNK_SIZE;
        } else if self.remaining > 0 {
            self.state = S_BODY_CL;
        } else {
            return self.complete();
        }
        if expect {
            self.flags |= EXPECT_WAIT;
        }
        0
    }

    fn chunk_size_done(&mut self) {
        self.section = 0;
        self.pos = 0;
        if self.acc == 0 {
            self.state = S_TRAILER_LINE;
        } else {
            self.remaining = self.acc;
            self.acc = 0;
            self.state = S_CHUNK_DATA;
        }
    }

    /// A request is complete: the server's turn.
    fn complete(&mut self) -> u32 {
        let f = self.flags;
        let tunnel = f & CONNECT != 0 || f & (UPGRADE | CONN_UPGRADE) == UPGRADE | CONN_UPGRADE;
        self.requests = self.requests.saturating_add(1);
        self.flags = (f & (CONFIRMED | CONN_CLOSE)) | UNANSWERED;
        self.remaining = 0;
        self.acc = 0;
        self.section = 0;
        self.pos = 0;
        self.hdr = 0;
        self.cand = 0;
        self.state = if tunnel { S_TUNNEL_PENDING } else { S_START };
        1
    }
}

/// How many leading bytes of `s` have class `c`.
#[inline(always)]
fn run_len(s: &[u8], c: u8) -> usize {
    s.iter().position(|&b| class(b) & c == 0).unwrap_or(s.len())
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A high bit for each byte of `x` below `n` (`n` <= 128), exact up to and including the
/// first such byte (the lowest): above it a borrow may mark others too, so only the lowest
/// mark is to be trusted — which is all a scan needs.
#[inline(always)]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// As [`bytes_below`], for the bytes equal to `b`.
#[inline(always)]
fn bytes_equal(x: u64, b: u8) -> u64 {
    bytes_below(x ^ (ONES * u64::from(b)), 1)
}

/// [`run_len`] of class `c`, eight bytes at a time: `ends(word)` marks (a high bit per byte,
/// the lowest mark exact) the bytes of a little-endian word that are not of class `c`; the
/// last few bytes (less than a word) one by one.
#[inline(always)]
fn run_len_words(s: &[u8], c: u8, ends: impl Fn(u64) -> u64) -> usize {
    let (words, _) = s.as_chunks::<8>();
    for (k, w) in words.iter().enumerate() {
        let marks = ends(u64::from_le_bytes(*w));
        if marks != 0 {
            return k * 8 + marks.trailing_zeros() as usize / 8;
        }
    }
    let n = words.len() * 8;
    n + s.get(n..).map_or(0, |t| run_len(t, c))
}

/// How many leading bytes of `s` are neither CR nor LF ([`C_PLAIN`]).
#[inline(always)]
fn plain_run(s: &[u8]) -> usize {
    run_len_words(s, C_PLAIN, |x| bytes_equal(x, CR) | bytes_equal(x, LF))
}

/// How many leading bytes of `s` may be in a request target ([`C_TARGET`]: above 0x20, not
/// DEL).
#[inline(always)]
fn target_run(s: &[u8]) -> usize {
    run_len_words(s, C_TARGET, |x| bytes_below(x, 0x21) | bytes_equal(x, 0x7f))
}

/// `HTTP/1.0` or `HTTP/1.1` and a line end (CRLF or a bare LF) at the start of `s`: whether
/// it is 1.0, and its length.
#[inline(always)]
fn version_line(s: &[u8]) -> Option<(bool, usize)> {
    let (http10, end) = match s {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', v @ (b'0' | b'1'), end @ ..] => {
            (*v == b'0', end)
        }
        _ => return None,
    };
    match end {
        [CR, LF, ..] => Some((http10, 10)),
        [LF, ..] => Some((http10, 9)),
        _ => None,
    }
}

/// A byte count as a position, saturating like the positions `step` advances.
#[inline(always)]
fn clamp_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[inline(always)]
fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

#[cfg(test)]
mod equivalence;
#[cfg(test)]
mod tests;
