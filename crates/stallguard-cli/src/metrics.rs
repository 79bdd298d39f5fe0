//! `stallguard metrics`: the counters of guarded processes in the Prometheus text format,
//! printed once or served over HTTP.
//!
//! Every sample carries a `pid` label (one per guarded process: a prefork server's children
//! each have their own). Per-process series let a dashboard sum them (`sum without (pid)`)
//! and keep counters monotonic per series even when a child is replaced.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use stallguard_shm::Counters;

use crate::segment::{segments_for, Notes};

/// Merges several expositions of the same metric families into one valid exposition: each
/// family's `# HELP`/`# TYPE` once, then all its samples (the text format requires a family's
/// samples to be contiguous and its metadata to appear once).
pub fn merge_expositions(parts: &[String]) -> String {
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let index_of =
        |families: &mut Vec<(String, Vec<String>, Vec<String>)>, name: &str| match families
            .iter()
            .position(|(n, _, _)| n == name)
        {
            Some(i) => i,
            None => {
                families.push((name.to_string(), Vec::new(), Vec::new()));
                families.len() - 1
            }
        };
    for part in parts {
        for line in part.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split_whitespace().next().unwrap_or("");
                let i = index_of(&mut families, name);
                if !families[i].1.iter().any(|l| l == line) {
                    families[i].1.push(line.to_string());
                }
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                let i = index_of(&mut families, &line[..end]);
                families[i].2.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for (_, meta, samples) in families {
        for l in meta.iter().chain(samples.iter()) {
            out += l;
            out += "\n";
        }
    }
    out
}

/// The exposition for `pids` (each expanded to its own segment and its children's).
/// Errors for a pid that is not running or not guarded are returned when `strict`, and
/// skipped (listed in `notes`) otherwise.
pub fn exposition(pids: &[u32], strict: bool, notes: &mut Notes) -> Result<String, String> {
    let mut parts = Vec::new();
    let mut seen = Vec::new();
    for &pid in pids {
        match segments_for(pid, false, notes) {
            Ok(segs) => {
                for seg in segs {
                    if seen.contains(&seg.pid) {
                        continue;
                    }
                    seen.push(seg.pid);
                    let c = Counters::from_header(seg.header());
                    parts.push(c.prometheus(&format!("pid=\"{}\"", seg.pid)));
                }
            }
            Err(e) if strict => return Err(e),
            Err(e) => notes.push(e),
        }
    }
    Ok(merge_expositions(&parts))
}

const MAX_REQUEST_HEAD: usize = 8192;

/// Serves `GET /metrics` until killed. One connection at a time, each bounded by a 5 s
/// timeout and an 8 KiB request head: a scraper is one client, and a stuck one cannot hold
/// the exporter for longer than that.
pub fn serve(listener: TcpListener, pids: &[u32]) -> io::Result<()> {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if let Err(e) = handle(&mut conn, pids) {
            eprintln!("stallguard metrics: {e}");
        }
    }
    Ok(())
}

/// The request line of an HTTP request head: (method, path).
pub fn request_line(head: &str) -> Option<(&str, &str)> {
    let mut parts = head.lines().next()?.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

fn handle(conn: &mut TcpStream, pids: &[u32]) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(
                conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
    }
    let head = String::from_utf8_lossy(&head);
    let Some((method, path)) = request_line(&head) else {
        return respond(conn, "400 Bad Request", "text/plain", "bad request\n");
    };
    if method != "GET" {
        return respond(
            conn,
            "405 Method Not Allowed",
            "text/plain",
            "only GET is supported\n",
        );
    }
    match path {
        "/metrics" => {
            let mut notes = Notes::new();
            let body = exposition(pids, false, &mut notes).unwrap_or_default();
            respond(
                conn,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
        }
        "/" => respond(
            conn,
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n",
        ),
        _ => respond(
            conn,
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n",
        ),
    }
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &str) -> io::Result<()> {
    let mut msg = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        msg += "Allow: GET\r\n";
    }
    msg += "\r\n";
    msg += body;
    conn.write_all(msg.as_bytes())?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Whether an address is loopback (the default bind; others must be asked for explicitly).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_families_are_contiguous_and_declared_once() {
        let mut a = Counters::default();
        a.reaped[6] = 2;
        let b = Counters {
            tracked: 5,
            ..Counters::default()
        };
        let text = merge_expositions(&[a.prometheus("pid=\"1\""), b.prometheus("pid=\"2\"")]);
        assert_eq!(
            text.matches("# TYPE stallguard_reaped_total counter\n")
                .count(),
            1
        );
        assert!(text.contains("stallguard_reaped_total{pid=\"1\",reason=\"manual\"} 2\n"));
        assert!(text.contains("stallguard_connections_tracked{pid=\"2\"} 5\n"));
        // Every sample line follows its family's TYPE line, and families do not interleave.
        let mut current = String::new();
        let mut done: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!done.contains(&name), "{name} declared twice");
                done.push(name.clone());
                current = name;
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&current), "{line} outside {current}");
            }
        }
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_line(""), None);
        assert_eq!(request_line("GET"), None);
    }
}
