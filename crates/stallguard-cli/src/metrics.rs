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

use crate::segment::{proc_info, process_table, segments_for, Notes, ProcInfo, Segment};

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

/// Which processes `metrics` exports, resolved again on every scrape so that a server
/// restarted under a new pid is followed (`--name`, `--pidfile`).
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub pids: Vec<u32>,
    /// Program names (`/proc/PID/comm`, or the executable's file name).
    pub names: Vec<String>,
    pub pidfiles: Vec<std::path::PathBuf>,
    /// Include each target's descendants (a prefork server's children).
    pub tree: bool,
}

/// Whether process `pid` runs a program called `name` (its comm, or its executable's name:
/// comm is cut at 15 bytes).
fn is_named(p: &ProcInfo, name: &str) -> bool {
    if p.comm == name || (name.len() > 15 && name.starts_with(&p.comm) && p.comm.len() == 15) {
        return true;
    }
    std::fs::read_link(format!("/proc/{}/exe", p.pid))
        .ok()
        .and_then(|e| e.file_name().map(|f| f.to_string_lossy() == name))
        .unwrap_or(false)
}

impl Targets {
    /// The pids to look at now, each with whether it was found by name (notes: pidfiles that
    /// cannot be read, names that match nothing).
    pub fn resolve(&self, notes: &mut Notes) -> Vec<(u32, bool)> {
        let mut out: Vec<(u32, bool)> = self.pids.iter().map(|p| (*p, false)).collect();
        for f in &self.pidfiles {
            match std::fs::read_to_string(f) {
                Ok(t) => match t.trim().parse::<u32>() {
                    Ok(p) => out.push((p, false)),
                    Err(_) => notes.push(format!("{}: not a pid: {:?}", f.display(), t.trim())),
                },
                Err(e) => notes.push(format!("{}: {e}", f.display())),
            }
        }
        if !self.names.is_empty() {
            let table = process_table();
            for n in &self.names {
                let mut found: Vec<u32> = table
                    .iter()
                    .filter(|p| !p.zombie && is_named(p, n))
                    .map(|p| p.pid)
                    .collect();
                found.sort_unstable();
                if found.is_empty() {
                    notes.push(format!("no process named {n}"));
                }
                out.extend(found.into_iter().map(|p| (p, true)));
            }
        }
        out
    }
}

/// The exporter's own `stallguard_build_info` series (the renderer the library's textfile
/// uses too).
pub fn build_info() -> String {
    stallguard_shm::build_info(env!("CARGO_PKG_VERSION"), "")
}

/// The exposition for `targets` (each pid expanded to its own segment, and its descendants'
/// with `tree`). Every sample is labelled with the process's `pid` and `comm`. Errors for a
/// target that is not running or not guarded are returned when `strict`, and skipped (listed
/// in `notes`) otherwise.
pub fn exposition(targets: &Targets, strict: bool, notes: &mut Notes) -> Result<String, String> {
    let mut parts = vec![build_info()];
    let mut seen = Vec::new();
    let pids = targets.resolve(notes);
    if pids.is_empty() && strict {
        return Err(notes
            .pop()
            .unwrap_or_else(|| "no process to export".to_string()));
    }
    // Processes found by name without a segment (a prefork parent, a helper) are skipped
    // quietly.
    for &(pid, by_name) in &pids {
        let mut quiet = Notes::new();
        match segments_for(pid, false, targets.tree, &mut quiet) {
            Ok(segs) => {
                notes.extend(quiet);
                for seg in &segs {
                    if !seen.contains(&seg.pid) {
                        seen.push(seg.pid);
                        parts.push(samples(seg));
                    }
                }
            }
            Err(_) if by_name => {}
            Err(e) if strict => return Err(e),
            Err(e) => notes.push(e),
        }
    }
    let found = !seen.is_empty();
    if strict && !found {
        return Err(format!(
            "no guarded process among {} (a prefork parent's children need --tree)",
            pids.iter()
                .map(|(p, _)| p.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    Ok(merge_expositions(&parts))
}

/// One process's counters, labelled with its pid and comm.
fn samples(seg: &Segment) -> String {
    let comm = proc_info(seg.pid).map(|i| i.comm).unwrap_or_default();
    Counters::from_header(seg.header()).prometheus(&stallguard_shm::process_labels(seg.pid, &comm))
}

const MAX_REQUEST_HEAD: usize = 8192;

/// Serves `GET /metrics` until killed. One connection at a time, each bounded by a 5 s
/// timeout and an 8 KiB request head: a scraper is one client, and a stuck one cannot hold
/// the exporter for longer than that.
pub fn serve(listener: TcpListener, pids: &Targets) -> io::Result<()> {
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

fn handle(conn: &mut TcpStream, pids: &Targets) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let (status, ctype, body) = match read_head(conn)? {
        Some(head) => answer(&String::from_utf8_lossy(&head), pids),
        None => (
            "431 Request Header Fields Too Large",
            "text/plain",
            String::new(),
        ),
    };
    respond(conn, status, ctype, &body)
}

/// The request head, up to its blank line or the end of input; None when longer than
/// [`MAX_REQUEST_HEAD`].
fn read_head(conn: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
    Ok(Some(head))
}

/// The response to a request head: (status, content type, body).
fn answer(head: &str, pids: &Targets) -> (&'static str, &'static str, String) {
    let Some((method, path)) = request_line(head) else {
        return ("400 Bad Request", "text/plain", "bad request\n".into());
    };
    if method != "GET" {
        return (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is supported\n".into(),
        );
    }
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            exposition(pids, false, &mut Notes::new()).unwrap_or_default(),
        ),
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n".into(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".into(),
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
    fn requests_are_answered_by_method_and_path() {
        let none = Targets::default();
        let status = |head: &str| answer(head, &none).0;
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\n\r\n"),
            "405 Method Not Allowed"
        );
        assert_eq!(status("\r\n\r\n"), "400 Bad Request");
        assert_eq!(status("GET /nope HTTP/1.1\r\n\r\n"), "404 Not Found");
        assert_eq!(status("GET /?x=1 HTTP/1.0\n\n"), "200 OK");
        let (_, ctype, body) = answer("GET /metrics HTTP/1.1\r\n\r\n", &none);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("stallguard_build_info{"), "{body}");
    }

    #[test]
    fn request_heads_are_bounded() {
        let mut short: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        assert!(read_head(&mut short).unwrap().is_some());
        let long = vec![b'a'; MAX_REQUEST_HEAD + 2048];
        assert_eq!(read_head(&mut long.as_slice()).unwrap(), None);
    }

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
