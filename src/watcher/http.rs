//! What reap, would_reap and stuck lines add for an HTTP connection the lens follows:
//! ` stage=server method=GET target="/wait?ms=40000" requests=2`, and ` tls=yes` before them
//! for a connection the lens found to carry TLS (`Flags::TLS`): with a stage, the lens reads
//! its plaintext through OpenSSL; without one, it cannot see inside (statically linked
//! OpenSSL, memory BIOs, another TLS library) or no plaintext came yet (the handshake).

use crate::table::{self, lines, Flags};
use stallguard_lens::RequestLine;
use stallguard_policy::{Facts, Framing};
use std::fmt;

/// Nothing for a connection without framing nor TLS. The method and target come escaped
/// (`RequestLine::write_logfmt`): no line break and no bare quote can reach the log.
pub struct HttpFields {
    tls: bool,
    framing: Option<Framing>,
    waiting: bool,
    line: Option<RequestLine>,
}

impl HttpFields {
    pub fn of(fd: i32, facts: &Facts) -> HttpFields {
        HttpFields {
            tls: table::slot(fd).is_some_and(|s| s.is_tracked() && s.has_flag(Flags::TLS)),
            framing: facts.framing,
            waiting: facts.waiting_since != 0,
            line: facts.framing.and_then(|_| lines::request_line(fd)),
        }
    }
}

impl fmt::Display for HttpFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str(" tls=yes")?;
        }
        let Some(fr) = self.framing else {
            return Ok(());
        };
        write!(f, " stage={}", fr.shown_stage(self.waiting).as_str())?;
        if let Some(line) = &self.line {
            let mut buf = [0u8; stallguard_lens::LOGFMT_MAX];
            let n = line.write_logfmt(&mut buf);
            write!(f, " {}", std::str::from_utf8(&buf[..n]).unwrap_or(""))?;
        }
        write!(f, " requests={}", fr.requests)
    }
}
