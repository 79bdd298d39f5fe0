//! Log lines in logfmt, written with one raw write(2) to a descriptor the shim owns.
//!
//! No `log`/`env_logger`, no std::io: those lock and allocate, and would come back through our
//! own `write` hook. Lines are formatted into a stack buffer and written whole (O_APPEND keeps
//! concurrent writers of a shared log file from interleaving inside a line).
//!
//! The descriptor is a private, close-on-exec duplicate placed high in the fd space so the host's
//! "lowest free fd" arithmetic is unchanged. If the host closes it (closefrom, a daemon closing
//! every fd), the close hooks call [`forget_fd`] and logging to that descriptor stops (a log file
//! is reopened by the watcher) — we never write into a number the host reused.
//!
//! Once the watcher has a fd table of its own (`watcher::reach`), it writes to its own copy of
//! that descriptor ([`adopt_own_copy`]), which nothing the program does can close; the
//! program's copy is still followed by the close hooks, for the watcher of a forked child.
//!
//! Log rotation: at most once a second the watcher compares the file at the log path with the
//! one it writes to (device and inode) and, when the path names another file (`mv x.log
//! x.log.1` then a new `x.log`, logrotate's `create`), opens the path again and puts the new
//! file under the same descriptor number (`dup3`), so nothing else changes. `copytruncate`
//! needs nothing: the file is opened with O_APPEND, so writes follow the truncation.

use super::clock::{civil_from_days, wall_clock};
use crate::abi::{real, sys};
use stallguard_policy::LogLevel;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::OnceLock;

static LOG_FD: AtomicI32 = AtomicI32::new(-1);
/// Set while the watcher writes, so a concurrent close of LOG_FD waits for the write to end.
static WRITING: AtomicBool = AtomicBool::new(false);
static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static LOG_PATH: OnceLock<std::ffi::CString> = OnceLock::new();
/// Set while the watcher has a fd table of its own: lines then go to OWN_FD, a number in that
/// table (LOG_FD is a number in the program's table, which the watcher no longer shares).
static OWN_TABLE: AtomicBool = AtomicBool::new(false);
static OWN_FD: AtomicI32 = AtomicI32::new(-1);
/// What LOG_FD was opened on (device, inode): the watcher recognises its copy by it.
static LOG_DEV: AtomicU64 = AtomicU64::new(0);
static LOG_INO: AtomicU64 = AtomicU64::new(0);
/// The (device, inode) of `/` when the log path was opened: a program that then chroots
/// (haproxy's `chroot`, vsftpd, sshd's privilege separation) makes the path name a file
/// inside its jail, never to be opened or created there ([`trusted_path`]).
static ROOT_DEV: AtomicU64 = AtomicU64::new(0);
static ROOT_INO: AtomicU64 = AtomicU64::new(0);

/// Set by the exit handler once the stop line is written: it is the last line, whatever the
/// watcher was about to say.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// Rotation (watcher only): when the path was last compared, whether it then named no file,
/// and whether a failed reopen was already said.
static ROTATION_CHECKED_AT: AtomicU64 = AtomicU64::new(0);
static PATH_MISSING: AtomicBool = AtomicBool::new(false);
static REOPEN_FAILED: AtomicBool = AtomicBool::new(false);
const ROTATION_CHECK_EVERY_MS: u64 = 1000;

/// The lowest fd number our private log descriptor may take.
const HIGH_FD_FLOOR: libc::c_int = 200;

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, SeqCst);
}

pub fn enabled(level: LogLevel) -> bool {
    level != LogLevel::Off && (level as u8) <= LEVEL.load(SeqCst)
}

/// Opens the destination: the file at `path`, or a duplicate of stderr. Stderr is refused when
/// it is a socket (inetd hands the client connection over as fds 0-2: logging there would
/// write into the client's response).
pub fn open(path: Option<&str>) -> Result<(), String> {
    let fd = match path {
        Some(p) => {
            let c = std::ffi::CString::new(p).map_err(|_| "path contains NUL".to_string())?;
            let fd = open_file(&c);
            if fd < 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            if let Some((dev, ino)) = sys::path_id(c"/") {
                ROOT_DEV.store(dev, SeqCst);
                ROOT_INO.store(ino, SeqCst);
            }
            let _ = LOG_PATH.set(c);
            fd
        }
        None => {
            if sys::is_open_non_socket(2) {
                dup_high(2)
            } else {
                -1
            }
        }
    };
    if let Some((dev, ino)) = sys::file_id(fd) {
        LOG_DEV.store(dev, SeqCst);
        LOG_INO.store(ino, SeqCst);
    }
    LOG_FD.store(fd, SeqCst);
    Ok(())
}

/// The log path, while it means what it meant when it was opened: None without a path, or
/// once the process has another root directory (chroot: the path would name a file inside
/// the jail; the lines keep going to the file already open).
fn trusted_path() -> Option<&'static std::ffi::CStr> {
    let path = LOG_PATH.get()?;
    let root = (ROOT_DEV.load(SeqCst), ROOT_INO.load(SeqCst));
    (sys::path_id(c"/") == Some(root)).then_some(path.as_c_str())
}

/// Whether `fd` is the log file as last opened (not a number the program closed behind the
/// hooks' back and reused).
fn is_our_file(fd: libc::c_int) -> bool {
    fd >= 0 && sys::file_id(fd) == Some((LOG_DEV.load(SeqCst), LOG_INO.load(SeqCst)))
}

/// The log descriptor in the program's table (-1: none): the watcher keeps its copy of this
/// number when it leaves the program's table.
pub fn program_fd() -> libc::c_int {
    LOG_FD.load(SeqCst)
}

/// The watcher has just left the program's fd table (a private copy of it, `kept` the only
/// descriptor left of the program's): from now on it logs to its copy of `kept` if that is
/// still our log (the program may have closed and reused the number just before), else to
/// the log file opened again, in its own table.
pub fn adopt_own_copy(kept: libc::c_int) {
    let fd = if is_our_file(kept) {
        kept
    } else {
        if kept >= 0 {
            sys::close_own(kept);
        }
        trusted_path().map_or(-1, open_file)
    };
    OWN_FD.store(fd, SeqCst);
    OWN_TABLE.store(true, SeqCst);
}

fn open_file(path: &std::ffi::CStr) -> libc::c_int {
    let fd = sys::open_append(path);
    if fd < 0 {
        return fd;
    }
    let high = dup_high(fd);
    if high >= 0 {
        sys::close_own(fd);
        high
    } else {
        fd
    }
}

/// A close-on-exec duplicate of `fd` at or above the high floor (-1 on failure).
fn dup_high(fd: libc::c_int) -> libc::c_int {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and touches no memory.
    unsafe { real::fcntl(fd, libc::F_DUPFD_CLOEXEC, high_fd_floor() as libc::c_ulong) }
}

/// Writes `bytes` to `fd` with one raw write.
fn write_all_once(fd: libc::c_int, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length.
    unsafe { real::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn high_fd_floor() -> libc::c_int {
    let cur = sys::nofile_limit().min(1 << 20) as libc::c_int;
    HIGH_FD_FLOOR.min((cur - 8).max(3))
}

pub fn is_log_fd(fd: libc::c_int) -> bool {
    fd >= 0 && LOG_FD.load(SeqCst) == fd
}

/// The host is closing or replacing our descriptor: stop using it, after any write in flight.
pub fn forget_fd(fd: libc::c_int) {
    if LOG_FD.compare_exchange(fd, -1, SeqCst, SeqCst).is_ok() && !OWN_TABLE.load(SeqCst) {
        while WRITING.load(SeqCst) {
            sys::yield_now();
        }
    }
}

/// Like [`forget_fd`] when our descriptor matches `closes` (close_range, closefrom).
pub fn forget_fd_if(closes: impl Fn(libc::c_int) -> bool) {
    let fd = LOG_FD.load(SeqCst);
    if closes(fd) {
        forget_fd(fd);
    }
}

/// In a forked child no write is in flight, whatever the parent's watcher was doing.
pub fn reset_after_fork() {
    WRITING.store(false, SeqCst);
    // The parent was not exiting when it forked (its stop line is its own).
    STOPPED.store(false, SeqCst);
    // The child's watcher compares the log path at its first tick.
    ROTATION_CHECKED_AT.store(0, SeqCst);
    // The parent watcher's own table was not copied: its number means nothing here.
    OWN_TABLE.store(false, SeqCst);
    OWN_FD.store(-1, SeqCst);
}

/// The watcher's care of its log, each tick: reopen it if the host closed it, and follow a
/// rotation (at most once a second).
pub fn maintain(now: u64) {
    reopen_if_closed();
    if LOG_PATH.get().is_none() {
        return;
    }
    if now.saturating_sub(ROTATION_CHECKED_AT.load(SeqCst)) < ROTATION_CHECK_EVERY_MS {
        return;
    }
    ROTATION_CHECKED_AT.store(now, SeqCst);
    let Some(path) = trusted_path() else { return };
    let fd = watcher_fd();
    if fd < 0 {
        return;
    }
    let decision = rotation(
        sys::path_id(path),
        sys::file_id(fd),
        PATH_MISSING.load(SeqCst),
    );
    PATH_MISSING.store(decision == Rotation::Wait, SeqCst);
    if decision == Rotation::Reopen {
        follow_rotation(path, fd);
    }
}

/// What to do about the file at the log path, seen by the watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The path names the file we write to.
    Keep,
    /// The path names another file (or none for a second look): open it.
    Reopen,
    /// Nothing at the path yet: logrotate's `create` follows its rename at once, so wait one
    /// more look before creating the file ourselves (`nocreate`, a plain `mv`).
    Wait,
}

/// Compares the (device, inode) at the log path with the open descriptor's; `missing_before`:
/// the previous look found nothing at the path.
pub fn rotation(
    at_path: Option<(u64, u64)>,
    open: Option<(u64, u64)>,
    missing_before: bool,
) -> Rotation {
    match at_path {
        Some(id) if Some(id) == open => Rotation::Keep,
        Some(_) => Rotation::Reopen,
        None if missing_before => Rotation::Reopen,
        None => Rotation::Wait,
    }
}

/// The descriptor the watcher writes to (in its own table, or the program's).
fn watcher_fd() -> libc::c_int {
    if OWN_TABLE.load(SeqCst) {
        OWN_FD.load(SeqCst)
    } else {
        LOG_FD.load(SeqCst)
    }
}

/// Opens the log path again and puts the new file under `fd`'s number. If it cannot be
/// opened (the directory is gone, privileges were dropped), lines keep going to the old file
/// and that is said once (the next look, a second later, tries again, quietly).
fn follow_rotation(path: &std::ffi::CStr, fd: libc::c_int) {
    let new = open_file(path);
    if new < 0 {
        let error = std::io::Error::last_os_error();
        if !REOPEN_FAILED.swap(true, SeqCst) {
            log_line!(
                Warn,
                "event=log_reopen_failed path={:?} error=\"{error}\" msg=\"the log file was moved or replaced; lines still go to the old file\"",
                path.to_string_lossy()
            );
        }
        return;
    }
    REOPEN_FAILED.store(false, SeqCst);
    let own = OWN_TABLE.load(SeqCst);
    // In the program's table the host may be closing our number right now: `forget_fd`
    // waits while WRITING is set, and we replace the file only if the number is still ours.
    WRITING.store(true, SeqCst);
    let ours = if own {
        OWN_FD.load(SeqCst) == fd
    } else {
        LOG_FD.load(SeqCst) == fd
    };
    // SAFETY: dup3 touches no memory; `fd` is our log descriptor (checked above, and kept
    // ours by the WRITING protocol), `new` a descriptor we just opened.
    let replaced = ours && unsafe { real::dup3(new, fd, libc::O_CLOEXEC) } == fd;
    WRITING.store(false, SeqCst);
    sys::close_own(new);
    if replaced {
        // What a forked child's watcher and the exit handler compare the program's copy with.
        if let Some((dev, ino)) = sys::file_id(fd) {
            LOG_DEV.store(dev, SeqCst);
            LOG_INO.store(ino, SeqCst);
        }
        log_line!(Info, "event=log_reopened path={:?}", path.to_string_lossy());
    }
}

/// Reopens the log file if the host closed our descriptor (watcher only). In a table of
/// its own the watcher's descriptor cannot be closed by the host: only a failed open is
/// retried.
fn reopen_if_closed() {
    if OWN_TABLE.load(SeqCst) {
        if OWN_FD.load(SeqCst) < 0 {
            if let Some(path) = trusted_path() {
                OWN_FD.store(open_file(path), SeqCst);
            }
        }
        return;
    }
    if LOG_FD.load(SeqCst) < 0 {
        if let Some(path) = trusted_path() {
            let fd = open_file(path);
            if fd >= 0 && LOG_FD.compare_exchange(-1, fd, SeqCst, SeqCst).is_err() {
                sys::close_own(fd);
            }
        }
    }
}

/// A fixed-size line buffer; text past its end is cut (a log line never allocates).
pub struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 1 - self.len; // keep one byte for '\n'
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Line {
    /// Starts a line with the common fields: `ts=… prog=stallguard level=… pid=…`.
    pub fn new(level: LogLevel) -> Line {
        let mut l = Line {
            buf: [0; 1024],
            len: 0,
        };
        let (secs, ms) = wall_clock();
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        let _ = write!(
            l,
            "ts={y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z prog=stallguard level={} pid={}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
            level_name(level),
            super::pid::pid(),
        );
        l
    }

    /// Writes the line to the log descriptor.
    pub fn emit(mut self) {
        self.buf[self.len] = b'\n';
        self.len += 1;
        WRITING.store(true, SeqCst);
        let fd = watcher_fd();
        // After the stop line nothing more is said (see `emit_last`).
        if fd >= 0 && !STOPPED.load(SeqCst) {
            write_all_once(fd, &self.buf[..self.len]);
        }
        WRITING.store(false, SeqCst);
    }

    /// Writes the process's last line, from the thread that calls exit (not the watcher):
    /// through the program's descriptor when it still names the file at the log path, else
    /// through the path opened for this one write. Nothing the watcher says afterwards is
    /// written. Bounded: a write in flight gets at most 100 ms to end; no lock, no allocation.
    pub fn emit_last(mut self) {
        self.buf[self.len] = b'\n';
        self.len += 1;
        STOPPED.store(true, SeqCst);
        let until = super::clock::monotonic_ms() + 100;
        while WRITING.load(SeqCst) && super::clock::monotonic_ms() < until {
            sys::yield_now();
        }
        let fd = LOG_FD.load(SeqCst);
        let mut current = false;
        if let Some(path) = trusted_path() {
            current =
                fd >= 0 && sys::file_id(fd).is_some() && sys::file_id(fd) == sys::path_id(path);
            if !current {
                let once = sys::open_append(path);
                if once >= 0 {
                    write_all_once(once, &self.buf[..self.len]);
                    sys::close_own(once);
                    return;
                }
            }
        }
        // The program's descriptor when the path names its file; with no path to open
        // (stderr, a chroot since, or it cannot be opened), if it is still the file opened.
        if current || is_our_file(fd) {
            write_all_once(fd, &self.buf[..self.len]);
        }
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Off => "off",
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

/// Logs one line if `level` is enabled: `log!(Info, "event=reap fd={}", fd)`.
macro_rules! log_line {
    ($level:ident, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        if $crate::runtime::log::enabled(stallguard_policy::LogLevel::$level) {
            let mut line = $crate::runtime::log::Line::new(stallguard_policy::LogLevel::$level);
            let _ = write!(line, " ");
            let _ = write!(line, $($arg)*);
            line.emit();
        }
    }};
}
pub(crate) use log_line;

/// Writes one line straight to stderr (configuration errors, before any log is set up).
pub fn to_stderr(text: &str) {
    let mut line = Line {
        buf: [0; 1024],
        len: 0,
    };
    let _ = line.write_str(text);
    line.buf[line.len] = b'\n';
    write_all_once(2, &line.buf[..line.len + 1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_follows_the_file_at_the_path() {
        let (a, b) = (Some((1, 10)), Some((1, 11)));
        assert_eq!(rotation(a, a, false), Rotation::Keep);
        // mv x.log x.log.1; : > x.log (or logrotate's create): another inode at the path.
        assert_eq!(rotation(b, a, false), Rotation::Reopen);
        // Moved away, nothing created yet: one more look before creating it ourselves.
        assert_eq!(rotation(None, a, false), Rotation::Wait);
        assert_eq!(rotation(None, a, true), Rotation::Reopen);
        // Our descriptor cannot be looked at: open the path.
        assert_eq!(rotation(a, None, false), Rotation::Reopen);
    }
}
