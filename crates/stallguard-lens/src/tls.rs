//! Which bytes feed the lens on a connection that may carry TLS (issue 11, item 3).
//!
//! A server that terminates TLS with OpenSSL reads *ciphertext* through `read`/`recv` and gets
//! the request's *plaintext* from `SSL_read`. The lens must see the plaintext only: ciphertext
//! would turn it off (0x16 is no method token), and handshake records are not the request.
//! So a connection whose first raw bytes open a TLS handshake record becomes a TLS connection
//! (one bit in its slot) and from then on:
//!
//! * raw reads are not fed ([`Route::Skip`]) — they still drive the call-pattern facts, so the
//!   first-byte and request timers run on the raw bytes while no plaintext has come (a
//!   handshake never started or stalled is reaped as before the lens);
//! * the TLS layer's plaintext is fed ([`Route::Feed`]), with the same framing as raw reads;
//! * only the TLS layer's writes start the answer: the raw writes of the handshake (ServerHello,
//!   TLS 1.3 session tickets written before the request) and of alerts are not an answer.
//!
//! A server whose TLS library the shim does not see (statically linked OpenSSL, another
//! library, memory BIOs) keeps the lens at `Detect`: the call-pattern rules, as before.

/// Who handed the server the bytes (or took them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The socket itself: `read`, `recv`, `write`, `send`...
    Socket,
    /// The TLS layer (OpenSSL's `SSL_read`, `SSL_write` and their `_ex` forms).
    TlsLayer,
}

/// What the lens does with bytes the server just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Feed them to the lens.
    Feed,
    /// Ciphertext of a TLS connection: not the request's bytes.
    Skip,
    /// The first bytes of a TLS handshake: the connection is TLS from now on; not fed.
    StartTls,
}

/// Where bytes read from `source` go. `tls`: the connection is already known to be TLS;
/// `fresh`: the lens has been fed nothing yet; `first`: the first bytes read (up to 3 matter).
pub fn route_read(source: Source, tls: bool, fresh: bool, first: &[u8]) -> Route {
    match source {
        Source::TlsLayer => Route::Feed,
        Source::Socket if tls => Route::Skip,
        Source::Socket if fresh && is_tls_handshake(first) => Route::StartTls,
        Source::Socket => Route::Feed,
    }
}

/// Whether a write through `source` starts the server's answer, for the lens.
pub fn write_starts_answer(source: Source, tls: bool) -> bool {
    match source {
        Source::TlsLayer => true,
        Source::Socket => !tls,
    }
}

/// Whether `first` (the first bytes of a connection, at least one) can open a TLS handshake
/// record: content type 22, then legacy version major 3, minor 0 (SSL 3.0) to 4. A short read
/// is judged on what it has; no HTTP/1 request starts with byte 22 (it is no token character),
/// so taking one for TLS never hides a request from the lens.
pub fn is_tls_handshake(first: &[u8]) -> bool {
    match first {
        [0x16] | [0x16, 0x03] => true,
        [0x16, 0x03, minor, ..] => *minor <= 0x04,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

    #[test]
    fn a_client_hello_opens_tls_at_any_short_read() {
        for n in 1..=CLIENT_HELLO.len() {
            assert!(is_tls_handshake(&CLIENT_HELLO[..n]), "{n} bytes");
        }
        for minor in 0..=4 {
            assert!(is_tls_handshake(&[0x16, 0x03, minor]));
        }
    }

    #[test]
    fn other_first_bytes_are_not_tls() {
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0",
            &[0x16, 0x02, 0x00],
            &[0x16, 0x03, 0x05],
            &[0x17, 0x03, 0x03],
            &[0x80, 0x2e, 0x01], // SSLv2-style hello: not followed (the lens turns off)
            &[],
        ] {
            assert!(!is_tls_handshake(first), "{first:?}");
        }
    }

    #[test]
    fn raw_reads_feed_until_tls_starts_then_never() {
        use Route::*;
        use Source::*;
        // Plain HTTP: fed, first read and later ones.
        assert_eq!(route_read(Socket, false, true, b"GET"), Feed);
        assert_eq!(route_read(Socket, false, false, &[0x16, 0x03]), Feed);
        // A handshake on a fresh connection makes it TLS...
        assert_eq!(route_read(Socket, false, true, CLIENT_HELLO), StartTls);
        // ... then every raw read is ciphertext, whatever its first byte (a record body, an
        // application-data record, an alert).
        for first in [&[0x01u8, 0x00][..], &[0x17, 0x03, 0x03], &[0x15], b"GET"] {
            assert_eq!(route_read(Socket, true, true, first), Skip);
            assert_eq!(route_read(Socket, true, false, first), Skip);
        }
    }

    #[test]
    fn the_tls_layer_always_feeds() {
        for (tls, fresh) in [(false, false), (false, true), (true, false), (true, true)] {
            // Plaintext that happens to start with 22 is not a handshake: fed (and the lens
            // turns off on it, as on any other non-HTTP request).
            for first in [&b"GET /"[..], &[0x16, 0x03, 0x01]] {
                assert_eq!(route_read(Source::TlsLayer, tls, fresh, first), Route::Feed);
            }
        }
    }

    #[test]
    fn only_the_tls_layer_answers_on_a_tls_connection() {
        assert!(write_starts_answer(Source::Socket, false));
        assert!(!write_starts_answer(Source::Socket, true)); // ServerHello, tickets, alerts
        assert!(write_starts_answer(Source::TlsLayer, true));
        assert!(write_starts_answer(Source::TlsLayer, false));
    }
}
