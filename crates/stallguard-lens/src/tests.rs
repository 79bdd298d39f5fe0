extern crate std;

use super::*;
use std::format;
use std::string::String;
use std::vec::Vec;

fn fed(bytes: &[u8]) -> Lens {
    let mut l = Lens::new();
    l.feed(bytes);
    l
}

fn bytewise(bytes: &[u8]) -> (Lens, u32) {
    let mut l = Lens::new();
    let mut n = 0;
    for b in bytes {
        n += l.feed(core::slice::from_ref(b)).completed;
    }
    (l, n)
}

const GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: example\r\nUser-Agent: t/1\r\n\r\n";

#[test]
fn size_and_zero_is_fresh() {
    assert!(core::mem::size_of::<Lens>() <= 32);
    assert_eq!(Lens::from_words([0; 4]), Lens::new());
    assert_eq!(Lens::new().stage(), Stage::Detect);
    assert_eq!(Lens::disabled().stage(), Stage::Off);
}

#[test]
fn simple_get() {
    let mut l = Lens::new();
    let f = l.feed(GET);
    assert_eq!(
        f,
        Feed {
            completed: 1,
            stage: Stage::Server
        }
    );
    assert_eq!(l.requests(), 1);
    assert!(l.is_http());
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Response);
    l.on_read_wait();
    assert_eq!(l.stage(), Stage::Idle);
    // The next byte starts the next request.
    assert_eq!(l.feed(b"G").stage, Stage::Headers);
    assert_eq!(l.feed(&GET[1..]).stage, Stage::Server);
    assert_eq!(l.requests(), 2);
}

#[test]
fn detection_one_byte_at_a_time() {
    let line = b"GET / HTTP/1.1\r\n";
    let mut l = Lens::new();
    for (i, b) in line.iter().enumerate() {
        let st = l.feed(core::slice::from_ref(b)).stage;
        if i + 1 < line.len() {
            assert_eq!(st, Stage::Detect, "at byte {i}");
        } else {
            assert_eq!(st, Stage::Headers);
        }
    }
    assert_eq!(l.feed(b"\r\n").stage, Stage::Server);
}

#[test]
fn http2_preface_and_non_http_are_off() {
    let pri = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let (l, _) = bytewise(pri);
    assert_eq!(l.stage(), Stage::Off);
    assert_eq!(l.off_reason(), OffReason::Http2);
    assert_eq!(fed(pri).off_reason(), OffReason::Http2);

    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], // TLS ClientHello
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
        b"PING\r\n",
        b"get foo\r\n",         // memcached: no version
        b"GET /\r\n",           // HTTP/0.9
        b"GET  / HTTP/1.1\r\n", // two spaces
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.2\r\n",
        b"GET / http/1.1\r\n",
        b"GET / HTTP/1.1\rX",
        b" GET / HTTP/1.1\r\n",
        b"\x00",
        b"{\"json\": 1}",
    ] {
        let l = fed(junk);
        assert_eq!(l.stage(), Stage::Off, "{:?}", String::from_utf8_lossy(junk));
        assert_eq!(
            l.off_reason(),
            OffReason::NotHttp,
            "{:?}",
            String::from_utf8_lossy(junk)
        );
        assert!(!l.is_http());
        assert_eq!(bytewise(junk).0, l);
    }
    // Off is final.
    let mut l = fed(b"PING\r\n");
    l.feed(GET);
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Off);
    assert_eq!(l.requests(), 0);
}

#[test]
fn leading_empty_lines_are_skipped_within_bound() {
    let mut s = Vec::from(&b"\r\n\r\n"[..]);
    s.extend_from_slice(GET);
    assert_eq!(fed(&s).stage(), Stage::Server);
    let mut s = Vec::from(&[b'\n'; 17][..]);
    s.extend_from_slice(GET);
    assert_eq!(fed(&s).off_reason(), OffReason::TooLarge);
}

#[test]
fn bare_lf_line_ends() {
    let l = fed(b"GET / HTTP/1.1\nHost: x\n\n");
    assert_eq!(l.stage(), Stage::Server);
    assert_eq!(l.requests(), 1);
}

#[test]
fn pipelined_requests_in_one_read() {
    let mut s = Vec::new();
    for _ in 0..3 {
        s.extend_from_slice(GET);
    }
    s.extend_from_slice(b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    s.extend_from_slice(b"GET /half HTTP/1.1\r\nHo");
    let mut l = Lens::new();
    let f = l.feed(&s);
    assert_eq!(f.completed, 4);
    assert_eq!(l.requests(), 4);
    // The 5th is incomplete but earlier ones are unanswered: the server's turn.
    assert_eq!(f.stage, Stage::Server);
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Headers);
    assert_eq!(l.feed(b"st: x\r\n\r\n").completed, 1);
    assert_eq!(l.stage(), Stage::Server);
    let (b, n) = bytewise(&s);
    assert_eq!(n, 4);
    let mut whole = Lens::new();
    whole.feed(&s);
    assert_eq!(b, whole);
}

#[test]
fn content_length_body() {
    let mut l = Lens::new();
    let f = l.feed(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n");
    assert_eq!(
        f,
        Feed {
            completed: 0,
            stage: Stage::Body
        }
    );
    assert_eq!(l.feed(b"01234").stage, Stage::Body);
    assert_eq!(l.feed(b"5678").stage, Stage::Body);
    assert_eq!(
        l.feed(b"9"),
        Feed {
            completed: 1,
            stage: Stage::Server
        }
    );
    // Zero length: complete at the blank line.
    assert_eq!(
        fed(b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n").stage(),
        Stage::Server
    );
    // Same value twice is fine; OWS around it too.
    let l = fed(b"POST / HTTP/1.1\r\nContent-Length:  3 \r\nCONTENT-LENGTH:3\r\n\r\nabc");
    assert_eq!(l.stage(), Stage::Server);
}

#[test]
fn bad_content_length_is_off() {
    for (req, why) in [
        (
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            OffReason::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            OffReason::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            OffReason::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            OffReason::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            OffReason::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            OffReason::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            OffReason::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            OffReason::ClAndTe,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            OffReason::ClAndTe,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            OffReason::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            OffReason::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            OffReason::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            OffReason::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked x\r\n\r\n",
            OffReason::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
            OffReason::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            OffReason::Http10Te,
        ),
        (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", OffReason::ObsFold),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            OffReason::ObsFold,
        ),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", OffReason::BadHeader),
        (b"GET / HTTP/1.1\r\n: x\r\n\r\n", OffReason::BadHeader),
        (
            b"GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n",
            OffReason::BadHeader,
        ),
        (b"GET / HTTP/1.1\r\nHost\r\n\r\n", OffReason::BadHeader),
        (b"GET / HTTP/1.1\r\n\rX", OffReason::BadHeader),
        (
            b"GET / HTTP/1.1\r\n\r\nGET  / HTTP/1.1\r\n",
            OffReason::BadRequestLine,
        ),
    ] {
        let l = fed(req);
        assert_eq!(l.off_reason(), why, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(bytewise(req).0, l, "{:?}", String::from_utf8_lossy(req));
    }
}

#[test]
fn transfer_encoding_lists() {
    // chunked last, in a list or across lines, case-insensitive, with OWS and empty elements.
    for req in [
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: ,gzip ,, chunked ,\r\n\r\n",
    ] {
        assert_eq!(
            fed(req).stage(),
            Stage::Body,
            "{:?}",
            String::from_utf8_lossy(req)
        );
    }
}

const CHUNKED: &[u8] = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n\
1A;name=value;x=\"q\"\r\nabcdefghijklmnopqrstuvwxyz\r\n\
0003 \r\nabc\r\n\
0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";

#[test]
fn chunked_body_split_at_every_byte_boundary() {
    let whole = fed(CHUNKED);
    assert_eq!(whole.stage(), Stage::Server);
    assert_eq!(whole.requests(), 1);
    let body_start = CHUNKED.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    for cut in 0..=CHUNKED.len() {
        let mut l = Lens::new();
        let a = l.feed(&CHUNKED[..cut]);
        if cut < CHUNKED.len() {
            assert_eq!(a.completed, 0);
            let want = if cut < 18 {
                Stage::Detect
            } else if cut < body_start {
                Stage::Headers
            } else {
                Stage::Body
            };
            assert_eq!(a.stage, want, "cut {cut}");
        }
        let b = l.feed(&CHUNKED[cut..]);
        assert_eq!(a.completed + b.completed, 1, "cut {cut}");
        assert_eq!(l, whole, "cut {cut}");
        // And every pair of cuts.
        for cut2 in cut..=CHUNKED.len() {
            let mut l = Lens::new();
            let n = l.feed(&CHUNKED[..cut]).completed
                + l.feed(&CHUNKED[cut..cut2]).completed
                + l.feed(&CHUNKED[cut2..]).completed;
            assert_eq!(n, 1);
            assert_eq!(l, whole, "cuts {cut} {cut2}");
        }
    }
    let (b, n) = bytewise(CHUNKED);
    assert_eq!((b, n), (whole, 1));
}

#[test]
fn chunked_without_trailers_and_bare_lf() {
    let l = fed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
    assert_eq!(l.stage(), Stage::Server);
    let l = fed(b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n2\nab\n0\n\n");
    assert_eq!(l.stage(), Stage::Server);
}

#[test]
fn bad_chunks_are_off() {
    for body in [
        &b"x\r\n"[..],
        b";ext\r\n",
        b"2\r\nabc\r\n", // data longer than the size
        b"2\r\nab\rX",
        b"2\rX",
        b"11111111111111111\r\n", // 17 hex digits: overflow
        b"0\r\nTrailer: x\rX",
        b"0\r\n\rX",
    ] {
        let mut req = Vec::from(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        req.extend_from_slice(body);
        assert_eq!(
            fed(&req).off_reason(),
            OffReason::BadChunk,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(bytewise(&req).0, fed(&req));
    }
    // 16 hex digits is fine.
    let l = fed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n");
    assert_eq!(l.stage(), Stage::Body);
}

#[test]
fn expect_100_continue() {
    let mut l = Lens::new();
    let f = l.feed(b"PUT /f HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(
        f,
        Feed {
            completed: 0,
            stage: Stage::Server
        }
    );
    l.on_server_write(); // "HTTP/1.1 100 Continue"
    assert_eq!(l.stage(), Stage::Body);
    assert_eq!(l.feed(b"da").stage, Stage::Body);
    assert_eq!(
        l.feed(b"ta"),
        Feed {
            completed: 1,
            stage: Stage::Server
        }
    );

    // The client may send the body without waiting: the body stage starts with it.
    let mut l = fed(b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(l.feed(b"d").stage, Stage::Body);

    // Chunked too.
    let mut l =
        fed(b"PUT /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(l.stage(), Stage::Server);
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Body);

    // No body: nothing to wait for. HTTP/1.0: ignored (RFC 9110 §10.1.1).
    assert_eq!(
        fed(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").requests(),
        1
    );
    let l = fed(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
    assert_eq!(l.stage(), Stage::Body);
    // Another expectation is not 100-continue.
    let l = fed(b"PUT / HTTP/1.1\r\nExpect: 100-continuex\r\nContent-Length: 1\r\n\r\n");
    assert_eq!(l.stage(), Stage::Body);
}

#[test]
fn upgrade_goes_to_tunnel_after_the_answer() {
    let mut l = fed(
        b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: abc\r\n\r\n",
    );
    assert_eq!(l.stage(), Stage::Server);
    assert_eq!(l.requests(), 1);
    // Bytes before the answer are the new protocol's: no framing, still the server's turn.
    assert_eq!(l.feed(b"\x81\x85garbage").stage, Stage::Server);
    l.on_server_write(); // 101 Switching Protocols
    assert_eq!(l.stage(), Stage::Tunnel);
    assert_eq!(
        l.feed(b"\x81\x05hello GET / HTTP/1.1\r\n\r\n").stage,
        Stage::Tunnel
    );
    l.on_server_write();
    l.on_read_wait();
    assert_eq!(l.stage(), Stage::Tunnel);
    assert_eq!(l.requests(), 1);

    // Upgrade without "Connection: upgrade" is not an upgrade (as llhttp).
    let mut l = fed(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: close\r\n\r\n");
    assert!(l.close_requested());
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Response);

    // An upgrade with a body: the body first.
    let mut l = fed(b"POST / HTTP/1.1\r\nUpgrade: HTTP/2.0, SHTTP/1.3\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(l.stage(), Stage::Body);
    l.feed(b"ok");
    assert_eq!(l.stage(), Stage::Server);
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Tunnel);
}

#[test]
fn connect_goes_to_tunnel_after_the_answer() {
    let mut l = Lens::new();
    let f =
        l.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01");
    assert_eq!(
        f,
        Feed {
            completed: 1,
            stage: Stage::Server
        }
    );
    l.on_server_write(); // 200 Connection Established
    assert_eq!(l.stage(), Stage::Tunnel);
    // "CONNECTX" and "CONNEC" are ordinary methods.
    let mut l = fed(b"CONNECTX / HTTP/1.1\r\n\r\n");
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Response);
    let mut l = fed(b"CONNEC / HTTP/1.1\r\n\r\n");
    l.on_server_write();
    assert_eq!(l.stage(), Stage::Response);
}

#[test]
fn bounds() {
    // A header section just under the bound is fine; over it, off.
    let mut big = Vec::from(&b"GET / HTTP/1.1\r\nX: "[..]);
    let head = big.len() + 4; // "\r\n\r\n"
    big.resize(MAX_SECTION as usize - head + 19, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(big.len(), MAX_SECTION as usize);
    assert_eq!(fed(&big).stage(), Stage::Server);
    let mut bigger = big.clone();
    bigger.insert(20, b'a');
    assert_eq!(fed(&bigger).off_reason(), OffReason::TooLarge);
    assert_eq!(bytewise(&bigger).0, fed(&bigger));
    // A long target.
    let mut t = Vec::from(&b"GET /"[..]);
    t.resize(MAX_SECTION as usize + 10, b'a');
    assert_eq!(fed(&t).off_reason(), OffReason::TooLarge);
    // Method.
    let m = [b'A'; MAX_METHOD as usize + 1];
    assert_eq!(fed(&m).off_reason(), OffReason::TooLarge);
    let mut m = Vec::from(&[b'A'; MAX_METHOD as usize][..]);
    m.extend_from_slice(b" / HTTP/1.1\r\n\r\n");
    assert_eq!(fed(&m).stage(), Stage::Server);
    // A chunk-size line with huge extensions.
    let mut c = Vec::from(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;"[..]);
    c.resize(c.len() + MAX_SECTION as usize, b'e');
    assert_eq!(fed(&c).off_reason(), OffReason::TooLarge);
    // A huge body is fine (only lines are bounded).
    let mut l = fed(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
    let chunk = [0u8; 4096];
    for _ in 0..100 {
        l.feed(&chunk);
    }
    assert_eq!(l.stage(), Stage::Body);
}

#[test]
fn server_write_mid_request_changes_nothing() {
    let mut l = fed(b"GET / HTTP/1.1\r\nHo");
    l.on_server_write(); // e.g. an early error the server sends before closing
    assert_eq!(l.stage(), Stage::Headers);
    l.feed(b"st: x\r\n\r\n");
    assert_eq!(l.stage(), Stage::Server);
}

#[test]
fn words_round_trip_at_every_prefix() {
    let mut all = Vec::from(GET);
    all.extend_from_slice(CHUNKED);
    all.extend_from_slice(
        b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd",
    );
    let mut l = Lens::new();
    for (i, b) in all.iter().enumerate() {
        l.feed(core::slice::from_ref(b));
        if i % 7 == 0 {
            l.on_server_write();
        }
        assert_eq!(Lens::from_words(l.to_words()), l, "at {i}");
        assert_eq!(Lens::from_words(l.to_words()).to_words(), l.to_words());
    }
    for l in [Lens::disabled(), fed(b"PING\r\n")] {
        assert_eq!(Lens::from_words(l.to_words()), l);
    }
}

#[test]
fn corrupt_words_never_panic() {
    let patterns = [
        0u64,
        1,
        0xff,
        0x1234_5678_9abc_def0,
        u64::MAX,
        1 << 63,
        0x18,
        0x13,
    ];
    for &a in &patterns {
        for &b in &patterns {
            for st in 0..=255u64 {
                let mut l = Lens::from_words([a, b, a ^ b, st | (b << 8)]);
                let _ = l.stage();
                let _ = l.off_reason();
                l.feed(CHUNKED);
                l.on_server_write();
                l.on_read_wait();
                l.feed(GET);
                let _ = l.stage();
            }
        }
    }
    let l = Lens::from_words([0, 0, 0, 200]);
    assert_eq!(l.stage(), Stage::Off);
    assert_eq!(l.off_reason(), OffReason::Corrupt);
}

#[test]
fn request_line_display() {
    let mut line = RequestLine::new();
    let mut l = Lens::new();
    l.feed_with_line(b"GET /a\"b\\c?d=\xff HTTP/1.1\r\n\r\n", &mut line);
    assert_eq!(line.method(), b"GET");
    assert_eq!(line.target(), b"/a\"b\\c?d=\xff");
    assert!(!line.truncated());
    let mut out = [0u8; LOGFMT_MAX];
    let n = line.write_logfmt(&mut out);
    assert_eq!(
        &out[..n],
        &b"method=GET target=\"/a\\\"b\\\\c?d=\\xff\""[..]
    );
    assert_eq!(
        format!("{}", Logfmt(line.target())),
        "\"/a\\\"b\\\\c?d=\\xff\""
    );
    assert_eq!(RequestLine::from_words(line.to_words()), line);

    // Pipelined: the latest request line, even if split.
    l.feed_with_line(
        b"POST /second HTTP/1.1\r\nContent-Length: 1\r\n\r\nxDEL",
        &mut line,
    );
    assert_eq!(line.method(), b"DEL");
    assert_eq!(line.target(), b"");
    l.feed_with_line(b"ETE /t", &mut line);
    l.feed_with_line(b"hird HTTP/1.1\r\n", &mut line);
    assert_eq!(line.as_bytes(), b"DELETE /third");

    // Truncated at 63 bytes, marked.
    let mut long = Vec::from(&b"GET /"[..]);
    long.resize(300, b'x');
    long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    let mut line = RequestLine::new();
    let (a, b) = long.split_at(40);
    let mut l = Lens::new();
    l.feed_with_line(a, &mut line);
    l.feed_with_line(b, &mut line);
    assert_eq!(line.len(), 63);
    assert!(line.truncated());
    assert_eq!(line.target().len(), 59);
    let n = line.write_logfmt(&mut out);
    assert!(out[..n].ends_with(b"xxx...\""));
    assert_eq!(RequestLine::from_words(line.to_words()), line);
}

#[test]
fn logfmt_escaping_never_injects() {
    let all: Vec<u8> = (0..=255u8).collect();
    let s = format!("{}", Logfmt(&all));
    assert!(s.starts_with('"') && s.ends_with('"'));
    let inner = &s[1..s.len() - 1];
    assert!(!inner.contains('\n') && !inner.contains('\r'));
    assert!(inner.bytes().all(|b| (0x20..0x7f).contains(&b)));
    // Every quote inside is escaped.
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'"' {
            let backslashes = bytes[..i].iter().rev().take_while(|&&c| c == b'\\').count();
            assert_eq!(backslashes % 2, 1, "unescaped quote at {i}");
        }
    }
    let mut out = [0u8; 1024];
    let n = escape_logfmt(&all, &mut out);
    assert_eq!(&out[..n], inner.as_bytes());
    // A short buffer cuts at an escape boundary.
    let mut small = [0u8; 5];
    let n = escape_logfmt(b"ab\n", &mut small);
    assert_eq!(&small[..n], b"ab");
    // A corrupt line (from words) is still escaped, method quoted.
    let mut w = [0u64; 8];
    w[0] = u64::from_le_bytes(*b"G\"T\n /x\"");
    let line = RequestLine::from_words(w);
    let n = line.write_logfmt(&mut out);
    assert_eq!(&out[..n], &b"method=\"G\\\"T\\x0a\" target=\"/x\\\"\""[..]);
}

#[test]
fn stage_timers() {
    let h = StageTimer::APACHE_HEADER;
    assert_eq!(h.allowed_ms(0), 20_000);
    assert_eq!(h.allowed_ms(500), 21_000);
    assert_eq!(h.allowed_ms(1_000_000), 40_000);
    let b = StageTimer::APACHE_BODY;
    assert_eq!(b.allowed_ms(1_000_000), 2_020_000);
    assert_eq!(b.allowed_ms(u64::MAX), 20_000 + u64::MAX / 500);
    let d = |s| stage_deadline(s, Some(h), Some(b), 1000, 250);
    assert_eq!(d(Stage::Headers), Some(21_500));
    assert_eq!(d(Stage::Body), Some(21_500));
    for s in [
        Stage::Detect,
        Stage::Server,
        Stage::Response,
        Stage::Idle,
        Stage::Tunnel,
        Stage::Off,
    ] {
        assert_eq!(d(s), None);
    }
    assert_eq!(stage_deadline(Stage::Body, Some(h), None, 0, 0), None);
    let no_rate = StageTimer {
        timeout_ms: 5,
        max_ms: 0,
        min_rate: 0,
    };
    assert_eq!(no_rate.allowed_ms(1 << 40), 5);
}
