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
#[derive(Clone, Debug, clap::Args)]
pub struct TopArgs {
    /// The server's pid
    pub pid: u32,
    /// Also its descendants (a prefork server's children)
    #[arg(long)]
    pub tree: bool,
    /// Print once and exit
    #[arg(long)]
    pub once: bool,
    /// JSON: one document (one line) per refresh
    #[arg(long)]
    pub json: bool,
    /// Sort the connections by
    #[arg(long, value_enum, default_value_t = SortKey::Wait)]
    pub sort: SortKey,
    /// Show only matching connections (repeatable; all must match): turn=client|writing|
    /// server|queued, port=N, peer=PREFIX, pid=N, flag=reaped|would_reap|kernel|outbound|exempt
    #[arg(long = "filter", value_name = "KEY=VALUE")]
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
    let opts = TextOptions {
        width: columns(),
        sort: args.sort,
        filters: args.filters.clone(),
        ..TextOptions::default()
    };
    if args.once {
        once(&args, opts)
    } else {
        live(&args, opts)
    }
}

/// Writes `text` to stdout; false when the reader went away.
fn write_out(text: &str) -> bool {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

/// `--once`: one screen (or one JSON document) and exit.
fn once(args: &TopArgs, mut opts: TextOptions) -> i32 {
    let views = match read_views(args.pid, args.tree) {
        Ok(views) => views,
        Err(e) => {
            eprintln!("stallguard: {e}");
            return 1;
        }
    };
    let text = if args.json {
        render_json(args.pid, &views) + "\n"
    } else {
        note_reaps(&mut opts.recent, &views, RECENT_KEPT);
        render_text(args.pid, &views, &opts)
    };
    if write_out(&text) {
        0
    } else {
        1
    }
}

/// Recent reaps kept on screen.
const RECENT_KEPT: usize = 5;

/// Connection rows that fit a terminal of `rows` lines under the other lines of the screen.
fn table_rows(rows: usize, processes: usize, recent: usize) -> usize {
    let fixed = 2 * processes + 8 + recent.min(RECENT_KEPT) + 2;
    rows.saturating_sub(fixed).max(1)
}

/// One refresh: JSON, a full terminal screen, or text for a pipe.
fn frame(args: &TopArgs, views: &[ProcessView], opts: &mut TextOptions, tty: bool) -> String {
    if args.json {
        return render_json(args.pid, views) + "\n";
    }
    if !tty {
        return render_text(args.pid, views, opts) + "\n";
    }
    let (rows, cols) = terminal_size().unwrap_or((24, 80));
    opts.width = cols;
    opts.max_rows = Some(table_rows(rows, views.len(), opts.recent.len()));
    format!(
        "\x1b[H\x1b[2J{}(q quits, s sorts: {})\n",
        render_text(args.pid, views, opts),
        opts.sort.name()
    )
}

/// Stops the live view on SIGINT and SIGTERM (restoring the terminal on the way out).
fn catch_signals() {
    let handler = on_signal as *const () as libc::sighandler_t;
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The live view: a refresh every second until q, Ctrl-C or the reader goes away.
fn live(args: &TopArgs, mut opts: TextOptions) -> i32 {
    catch_signals();
    let tty = !args.json && io::stdout().is_terminal();
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
        note_reaps(&mut recent, &views, RECENT_KEPT);
        opts.recent = recent.clone();
        if !write_out(&frame(args, &views, &mut opts, tty)) {
            return 0; // the reader went away (a pipe closed): not an error
        }
        match wait_for_key(Duration::from_secs(1), keys) {
            Some(Key::Quit) => return 0,
            Some(Key::NextSort) => opts.sort = opts.sort.next(),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gets_the_rows_the_rest_of_the_screen_leaves() {
        // 24 rows, one process, no recent reaps: 24 - (2 + 8 + 0 + 2) = 12.
        assert_eq!(table_rows(24, 1, 0), 12);
        // Recent reaps take at most 5 lines.
        assert_eq!(table_rows(24, 1, 9), 7);
        assert_eq!(table_rows(10, 3, 5), 1, "at least one row");
    }

    #[test]
    fn json_and_piped_frames_are_one_render_and_a_newline() {
        let args = TopArgs {
            pid: 1,
            tree: false,
            once: false,
            json: true,
            sort: SortKey::Wait,
            filters: Vec::new(),
        };
        let mut opts = TextOptions::default();
        let json = frame(&args, &[], &mut opts, true);
        assert!(
            json.starts_with("{\"pid\":1,") && json.ends_with("}\n"),
            "{json}"
        );
        let text = frame(
            &TopArgs {
                json: false,
                ..args
            },
            &[],
            &mut opts,
            false,
        );
        assert!(
            text.starts_with("stallguard top 1: 0 guarded processes"),
            "{text}"
        );
        assert!(text.ends_with("\n\n"), "{text:?}");
        assert_eq!(opts.max_rows, None, "a pipe gets every row");
    }
}
