//! lensbench: instructions the HTTP/1 lens spends per 1 KiB request (issue 11), for callgrind:
//!
//!   cargo build --release --example lensbench
//!   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*lensbench::run*' \
//!       target/release/examples/lensbench 10000
//!
//! Inclusive Ir of `run` / (requests) is the cost per request: one `feed_with_line` of the
//! whole request (as one read returns it), then the server's answer (`on_server_write`),
//! plus the slot's word loads and stores the hooks do around them. `--split 16` feeds the
//! request in 16-byte reads instead (a slow client); `--small`: the 47-byte GET a load
//! generator sends instead.

use stallguard_lens::{Lens, RequestLine};
use std::hint::black_box;

/// A 1 KiB GET: request line, a few common headers, padding in a cookie.
fn request() -> Vec<u8> {
    let mut r = b"GET /api/v1/items?id=12345&sort=desc HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/115.0\r\n\
Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n\
Connection: keep-alive\r\nCookie: s="
        .to_vec();
    while r.len() < 1024 - 4 {
        r.push(b'a');
    }
    r.extend_from_slice(b"\r\n\r\n");
    assert_eq!(r.len(), 1024);
    r
}

/// What wrk and most load generators send: a request line and a Host header (47 bytes).
fn small_request() -> Vec<u8> {
    b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".to_vec()
}

#[inline(never)]
fn run(words: &mut [u64; 4], line: &mut [u64; 8], req: &[u8], n: usize, split: usize) -> u32 {
    let mut done = 0;
    for _ in 0..n {
        let mut lens = Lens::from_words(*words);
        let mut l = RequestLine::from_words(*line);
        for piece in req.chunks(split) {
            done += lens.feed_with_line(black_box(piece), &mut l).completed;
        }
        lens.on_server_write();
        *words = lens.to_words();
        *line = l.to_words();
    }
    done
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let split = match args.iter().position(|a| a == "--split") {
        Some(i) => args[i + 1].parse().unwrap(),
        None => 1024,
    };
    let req = if args.iter().any(|a| a == "--small") {
        small_request()
    } else {
        request()
    };
    let mut words = [0u64; 4];
    let mut line = [0u64; 8];
    let done = run(&mut words, &mut line, &req, n, split);
    assert_eq!(done as usize, n, "every request completes");
    println!("requests {n} split {split} completed {done}");
}
