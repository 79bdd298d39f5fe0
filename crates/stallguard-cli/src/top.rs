//! `stallguard top PID`: the process's tracked connections, refreshed every second.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::segment::{segments_for, Notes};
use crate::view::{render_json, render_text, ProcessView};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Puts a terminal in non-canonical, no-echo mode (so `q` is read at once) and restores it
/// when dropped.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        // SAFETY: termios is plain data (zeroed is a valid value); both calls get a pointer
        // to a live local.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: `saved` is the termios tcgetattr filled in.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// Waits up to `d` for a key on stdin; true if it was `q` (or stdin ended).
fn wait_for_quit(d: Duration, keys: bool) -> bool {
    let end = Instant::now() + d;
    while !STOP.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if !keys {
            std::thread::sleep(left.min(Duration::from_millis(100)));
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(100) as libc::c_int;
        // SAFETY: one live pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 {
            let mut b = [0u8; 16];
            // SAFETY: reads at most b.len() bytes into `b`.
            let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            if n <= 0 || b[..n as usize].iter().any(|c| *c == b'q' || *c == b'Q') {
                return true;
            }
        }
    }
    true
}

fn terminal_rows() -> Option<usize> {
    // SAFETY: winsize is plain integers: zeroed is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the live `ws`.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some(ws.ws_row as usize)
}

fn read_views(pid: u32) -> Result<Vec<ProcessView>, String> {
    let mut notes = Notes::new();
    let segs = segments_for(pid, false, &mut notes);
    for n in &notes {
        eprintln!("stallguard: {n}");
    }
    Ok(segs?.iter().map(ProcessView::read).collect())
}

pub fn top(pid: u32, once: bool, json: bool) -> i32 {
    if once {
        return match read_views(pid) {
            Ok(views) => {
                let text = if json {
                    render_json(pid, &views) + "\n"
                } else {
                    render_text(pid, &views, None)
                };
                if print(&text) {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("stallguard: {e}");
                1
            }
        };
    }
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let interactive = !json && io::stdout().is_terminal();
    let keys = io::stdin().is_terminal();
    let _raw = if keys { RawTerminal::enable() } else { None };
    loop {
        let views = match read_views(pid) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("stallguard: {e}");
                return 1;
            }
        };
        if !print(&refresh(pid, &views, json, interactive)) {
            return 0; // the reader went away (a pipe closed): not an error
        }
        if wait_for_quit(Duration::from_secs(1), keys) {
            return 0;
        }
    }
}

/// One refresh: a JSON line, a screen (cleared, cut to the terminal's height), or a block.
fn refresh(pid: u32, views: &[ProcessView], json: bool, interactive: bool) -> String {
    if json {
        render_json(pid, views) + "\n"
    } else if interactive {
        let rows = terminal_rows().map(|r| r.saturating_sub(views.len() + 6).max(1));
        format!(
            "\x1b[H\x1b[2J{}\n(q or Ctrl-C to quit)\n",
            render_text(pid, views, rows)
        )
    } else {
        render_text(pid, views, None) + "\n"
    }
}

/// Writes and flushes `text` to stdout; false when it could not (the reader went away).
fn print(text: &str) -> bool {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}
