//! `stallguard top PID`: the process's tracked connections, refreshed every second.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::segment::{now_unix_ms, segments_for, Notes};
use crate::view::{
    render_json, render_text, Filter, ProcessView, RecentReap, SortKey, TextOptions,
};

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
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// What a key pressed in the live view asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Quit,
    NextSort,
}

/// Waits up to `d` for a key on stdin: `q` (or stdin ending) quits, `s` changes the sort.
fn wait_for_key(d: Duration, keys: bool) -> Option<Key> {
    let end = Instant::now() + d;
    while !STOP.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
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
        if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 {
            let mut b = [0u8; 16];
            let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            if n <= 0 || b[..n as usize].iter().any(|c| *c == b'q' || *c == b'Q') {
                return Some(Key::Quit);
            }
            if b[..n as usize].iter().any(|c| *c == b's' || *c == b'S') {
                return Some(Key::NextSort);
            }
        }
    }
    Some(Key::Quit)
}

/// The terminal's size (rows, columns) when stdout is one.
fn terminal_size() -> Option<(usize, usize)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row as usize, ws.ws_col as usize))
}

/// Columns to lay out for: the terminal's, else `$COLUMNS`, else 80.
fn columns() -> usize {
    terminal_size()
        .map(|(_, c)| c)
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .filter(|c| *c >= 40)
        .unwrap_or(80)
}

fn read_views(pid: u32, tree: bool) -> Result<Vec<ProcessView>, String> {
    let mut notes = Notes::new();
    let segs = segments_for(pid, false, tree, &mut notes);
    for n in &notes {
        eprintln!("stallguard: {n}");
    }
    Ok(segs?.iter().map(ProcessView::read).collect())
}

/// `stallguard top` options.
#[derive(Clone, Debug)]
pub struct TopArgs {
    pub pid: u32,
    pub tree: bool,
    pub once: bool,
    pub json: bool,
    pub sort: SortKey,
    pub filters: Vec<Filter>,
}

/// Adds the connections now marked reaped (or would_reap) to `recent`, newest first, at most
/// `keep`.
fn note_reaps(recent: &mut Vec<RecentReap>, views: &[ProcessView], keep: usize) {
    let now = now_unix_ms();
    for v in views {
        for r in &v.records {
            if let Some(new) = RecentReap::from_record(v.pid, r, now) {
                if !recent.iter().any(|o| o.same(&new)) {
                    recent.insert(0, new);
                }
            }
        }
    }
    recent.truncate(keep);
}

pub fn top(args: TopArgs) -> i32 {
    let stdout = io::stdout();
    let mut opts = TextOptions {
        width: columns(),
        sort: args.sort,
        filters: args.filters.clone(),
        ..TextOptions::default()
    };
    if args.once {
        return match read_views(args.pid, args.tree) {
            Ok(views) => {
                let text = if args.json {
                    render_json(args.pid, &views) + "\n"
                } else {
                    note_reaps(&mut opts.recent, &views, 5);
                    render_text(args.pid, &views, &opts)
                };
                let mut out = stdout.lock();
                if out
                    .write_all(text.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return 1;
                }
                0
            }
            Err(e) => {
                eprintln!("stallguard: {e}");
                1
            }
        };
    }
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let interactive = !args.json && io::stdout().is_terminal();
    let keys = io::stdin().is_terminal();
    let _raw = if keys { RawTerminal::enable() } else { None };
    let mut recent: Vec<RecentReap> = Vec::new();
    loop {
        let views = match read_views(args.pid, args.tree) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("stallguard: {e}");
                return 1;
            }
        };
        note_reaps(&mut recent, &views, 5);
        opts.recent = recent.clone();
        let text = if args.json {
            render_json(args.pid, &views) + "\n"
        } else if interactive {
            let (rows, cols) = terminal_size().unwrap_or((24, 80));
            opts.width = cols;
            let fixed = 2 * views.len() + 8 + recent.len().min(5) + 2;
            opts.max_rows = Some(rows.saturating_sub(fixed).max(1));
            format!(
                "\x1b[H\x1b[2J{}(q quits, s sorts: {})\n",
                render_text(args.pid, &views, &opts),
                opts.sort.name()
            )
        } else {
            render_text(args.pid, &views, &opts) + "\n"
        };
        let mut out = stdout.lock();
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return 0; // the reader went away (a pipe closed): not an error
        }
        drop(out);
        match wait_for_key(Duration::from_secs(1), keys) {
            Some(Key::Quit) => return 0,
            Some(Key::NextSort) => opts.sort = opts.sort.next(),
            None => {}
        }
    }
}
