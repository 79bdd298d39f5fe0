//! Finding, validating and mapping the segments guarded processes publish at
//! `/dev/shm/stallguard-<pid>` (layout in `stallguard-shm`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use stallguard_shm::{Header, Record, SEGMENT_BYTES};

/// Why a segment could not be used.
#[derive(Debug)]
pub enum SegError {
    /// No such file.
    Missing,
    /// The file exists but we may not open it this way.
    PermissionDenied {
        path: PathBuf,
        write: bool,
    },
    /// Not a segment this tool understands (bad magic, version, size, owner).
    Invalid {
        path: PathBuf,
        why: String,
    },
    Io {
        path: PathBuf,
        err: io::Error,
    },
}

impl fmt::Display for SegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegError::Missing => write!(f, "no segment"),
            SegError::PermissionDenied { path, write: true } => write!(
                f,
                "permission denied: only the server's user or root may reap ({} is not writable by you)",
                path.display()
            ),
            SegError::PermissionDenied { path, write: false } => write!(
                f,
                "permission denied: only the server's user or root may read {}",
                path.display()
            ),
            SegError::Invalid { path, why } => {
                write!(f, "{} is not a usable stallguard segment: {why}", path.display())
            }
            SegError::Io { path, err } => write!(f, "{}: {err}", path.display()),
        }
    }
}

/// One mapped segment.
pub struct Segment {
    pub pid: u32,
    pub path: PathBuf,
    ptr: *mut libc::c_void,
    /// The file's owner (for stale-segment removal).
    pub owner_uid: u32,
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr` is this segment's own mapping of SEGMENT_BYTES (see `map`), and no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr, SEGMENT_BYTES) };
    }
}

impl Segment {
    /// Opens `/dev/shm/stallguard-<pid>`.
    pub fn open(pid: u32, write: bool) -> Result<Segment, SegError> {
        Segment::open_path(Path::new(&stallguard_shm::path_for(pid)), pid, write)
    }

    /// Opens and maps a segment file, checking it is a regular file of the right size with
    /// the right magic, version and record size. Symlinks are refused.
    pub fn open_path(path: &Path, pid: u32, write: bool) -> Result<Segment, SegError> {
        let invalid = |why: String| SegError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let io_error = |err| SegError::Io {
            path: path.to_path_buf(),
            err,
        };
        let file = open_file(path, write)?;
        mark_reader(&file);
        let meta = file.metadata().map_err(io_error)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".into()));
        }
        if (meta.len() as usize) < SEGMENT_BYTES {
            return Err(invalid(format!(
                "{} bytes, expected {SEGMENT_BYTES} (a different stallguard version?)",
                meta.len()
            )));
        }
        let seg = Segment {
            pid,
            path: path.to_path_buf(),
            ptr: map(&file, write).map_err(io_error)?,
            owner_uid: meta.uid(),
        };
        if let Some(why) = header_problem(seg.header(), pid) {
            return Err(invalid(why));
        }
        wake_watcher(seg.header());
        wait_fresh(seg.header(), pid);
        Ok(seg)
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least SEGMENT_BYTES (checked at open), page-aligned, and
        // lives as long as `self`; every Header field is an integer or an atomic, valid for
        // any bytes the watcher writes.
        unsafe { &*(self.ptr as *const Header) }
    }

    /// A consistent copy of the records (None if the watcher kept writing for 100 tries).
    pub fn snapshot(&self) -> Option<Vec<Record>> {
        // SAFETY: a Segment exists only once its header was checked (magic, layout, pid).
        unsafe { stallguard_shm::snapshot(self.ptr as *const Header) }.map(|(r, _)| r)
    }
}

/// Tells the process's watcher someone reads its live view: the access time of the file, set
/// to now (the watcher refreshes the connection records only for a few seconds after).
/// Best effort: a reader that may not set it still reads whatever was last published.
fn mark_reader(file: &File) {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a valid open fd and an array of two timespecs.
    unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
}

/// Wakes the process's watcher if it dozes (an idle watcher sleeps up to a second, or ten
/// in a forked connection process): it sees the reader (`mark_reader`) and refreshes the
/// records at once, then every tick while the reader stays. It sleeps on the low word of the
/// mailbox's `head`, as for a reap request.
pub fn wake_watcher(h: &Header) {
    // SAFETY: the address is inside the live shared mapping; FUTEX_WAKE only uses it as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            (&h.mailbox.head as *const std::sync::atomic::AtomicU64).cast::<u32>(),
            libc::FUTEX_WAKE,
            i32::MAX,
        )
    };
}

/// After [`wake_watcher`]: a dozing watcher last published up to seconds ago; give it a moment
/// (at most 300 ms) to publish again, so what is read is fresh and not shown as a stalled
/// watcher. Not for a process that is gone, nor when the publish is recent anyway.
fn wait_fresh(h: &Header, pid: u32) {
    use std::sync::atomic::Ordering::Relaxed;
    let before = h.updated_unix_ms.load(Relaxed);
    if now_unix_ms().saturating_sub(before) < 1000 || !Path::new(&format!("/proc/{pid}")).exists() {
        return;
    }
    let end = std::time::Instant::now() + std::time::Duration::from_millis(300);
    while h.updated_unix_ms.load(Relaxed) == before && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Opens a segment file without following symlinks; errors say which case it was.
fn open_file(path: &Path, write: bool) -> Result<File, SegError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => SegError::Missing,
            io::ErrorKind::PermissionDenied => SegError::PermissionDenied {
                path: path.to_path_buf(),
                write,
            },
            _ if err.raw_os_error() == Some(libc::ELOOP) => SegError::Invalid {
                path: path.to_path_buf(),
                why: "it is a symbolic link".into(),
            },
            _ => SegError::Io {
                path: path.to_path_buf(),
                err,
            },
        })
}

/// What is wrong with a mapped header for `pid` (magic, layout, owner), if anything.
fn header_problem(h: &Header, pid: u32) -> Option<String> {
    if h.magic != stallguard_shm::MAGIC {
        return Some("bad magic".into());
    }
    if !h.is_valid() {
        return Some(format!(
            "layout version {} record size {} capacity {} (this tool reads version {} record size {})",
            h.version,
            h.record_size,
            h.capacity,
            stallguard_shm::VERSION,
            std::mem::size_of::<Record>()
        ));
    }
    (h.pid != pid).then(|| format!("it belongs to pid {}", h.pid))
}

fn map(file: &File, write: bool) -> io::Result<*mut libc::c_void> {
    let prot = if write {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh shared mapping of an open file; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SEGMENT_BYTES,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p)
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What `/proc/<pid>/stat` and `status` say about a process.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub zombie: bool,
    /// Start time, ms since the epoch (precision: the boot time's second).
    pub start_unix_ms: Option<u64>,
}

/// `None` when there is no such process.
pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &stat)
}

/// Parses `/proc/<pid>/stat` (the command name may hold spaces and parentheses).
pub fn parse_stat(pid: u32, stat: &str) -> Option<ProcInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] = state (field 3), rest[1] = ppid (4), rest[19] = starttime (22).
    let state = rest.first()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let start_unix_ms = rest
        .get(19)
        .and_then(|t| t.parse::<u64>().ok())
        .and_then(|ticks| {
            // SAFETY: sysconf reads a constant; no pointers.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            let btime = boot_time_s()?;
            (hz > 0).then(|| btime * 1000 + ticks * 1000 / hz as u64)
        });
    Some(ProcInfo {
        pid,
        ppid,
        comm,
        zombie: *state == "Z" || *state == "X",
        start_unix_ms,
    })
}

fn boot_time_s() -> Option<u64> {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The process's real, effective, saved and filesystem uids.
fn proc_uids(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:").map(|v| {
                    v.split_whitespace()
                        .filter_map(|u| u.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Whether the segment belongs to the live process `pid` (not to a dead one whose pid was
/// reused): the process must exist, not be a zombie, and must have started before the
/// segment's last publish (1 s of slack for the boot time's precision, 2 s in all).
pub fn is_live(seg: &Segment) -> bool {
    let Some(info) = proc_info(seg.pid) else {
        return false;
    };
    if info.zombie {
        return false;
    }
    let updated = seg
        .header()
        .updated_unix_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    match info.start_unix_ms {
        Some(start) if updated != 0 => start <= updated + 2000,
        _ => true,
    }
}

/// A segment file owned by neither the process's user nor root was planted by someone else.
fn owner_plausible(seg: &Segment) -> bool {
    seg.owner_uid == 0 || proc_uids(seg.pid).contains(&seg.owner_uid)
}

/// Removes a stale segment if we own it. Returns whether it was removed.
pub fn remove_if_ours(seg: &Segment) -> bool {
    // SAFETY: geteuid cannot fail and takes no pointers.
    let euid = unsafe { libc::geteuid() };
    seg.owner_uid == euid && fs::remove_file(&seg.path).is_ok()
}

/// Every process's parent, from `/proc/*/stat`.
pub fn process_table() -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_info)
        .collect()
}

/// `pid`'s descendants, breadth first (children before grandchildren), in pid order per level.
pub fn descendants(pid: u32, table: &[ProcInfo]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in table {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    for v in children.values_mut() {
        v.sort_unstable();
    }
    let mut out = Vec::new();
    let mut seen = HashSet::from([pid]);
    let mut level = vec![pid];
    while !level.is_empty() {
        let mut next = Vec::new();
        for p in level {
            for c in children.get(&p).into_iter().flatten() {
                if seen.insert(*c) {
                    out.push(*c);
                    next.push(*c);
                }
            }
        }
        level = next;
    }
    out
}

/// Notes (stale segments removed, foreign segments skipped) for the user, on stderr.
pub type Notes = Vec<String>;

/// Opens the segment of `pid` if it has a live one. Stale ones are removed when ours.
fn open_live(pid: u32, write: bool, notes: &mut Notes) -> Result<Option<Segment>, SegError> {
    match Segment::open(pid, write) {
        Ok(seg) => {
            if !is_live(&seg) {
                let removed = remove_if_ours(&seg);
                notes.push(format!(
                    "ignored the stale segment {} (process {pid} is gone{})",
                    seg.path.display(),
                    if removed { "; removed it" } else { "" }
                ));
                return Ok(None);
            }
            if !owner_plausible(&seg) {
                notes.push(format!(
                    "ignored {}: owned by uid {}, which is neither root nor process {pid}'s user",
                    seg.path.display(),
                    seg.owner_uid
                ));
                return Ok(None);
            }
            Ok(Some(seg))
        }
        Err(SegError::Missing) => Ok(None),
        Err(e @ SegError::PermissionDenied { .. }) => Err(e),
        Err(e) => {
            notes.push(format!("ignored: {e}"));
            Ok(None)
        }
    }
}

/// The segments that make up "process `pid`": its own, and with `tree` those of its
/// descendants too (a prefork server's children). Without `tree` an ancestor never stands for
/// its descendants (PID 1 would otherwise mean every guarded process on the host): when `pid`
/// has no segment but descendants do, the error names them and suggests `--tree`.
/// Errors when the process does not exist or nothing guarded is found.
pub fn segments_for(
    pid: u32,
    write: bool,
    tree: bool,
    notes: &mut Notes,
) -> Result<Vec<Segment>, String> {
    let info = proc_info(pid).filter(|i| !i.zombie);
    let own = open_live(pid, write, notes).map_err(|e| e.to_string())?;
    let Some(info) = info else {
        return Err(format!("no process {pid}"));
    };
    let mut out: Vec<Segment> = own.into_iter().collect();
    let table = process_table();
    if tree {
        out.extend(descendant_segments(pid, &table, write, notes)?);
    } else {
        let guarded = guarded_descendants(pid, &table);
        if !guarded.is_empty() {
            if out.is_empty() {
                return Err(descendants_only(pid, &info.comm, &guarded));
            }
            // A prefork parent has a segment of its own (it listens) and none of the
            // connections: say where they are.
            notes.push(descendants_too(pid, &info.comm, &guarded));
        }
    }
    if out.is_empty() {
        return Err(not_guarded(pid, &info.comm, tree));
    }
    Ok(out)
}

/// The live segments of `pid`'s descendants.
fn descendant_segments(
    pid: u32,
    table: &[ProcInfo],
    write: bool,
    notes: &mut Notes,
) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    for child in descendants(pid, table) {
        out.extend(open_live(child, write, notes).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// `pid`'s descendants that have a segment file.
fn guarded_descendants(pid: u32, table: &[ProcInfo]) -> Vec<u32> {
    descendants(pid, table)
        .into_iter()
        .filter(|c| Path::new(&stallguard_shm::path_for(*c)).exists())
        .collect()
}

/// The note when `pid` and some of its descendants have segments and `--tree` was not given.
pub fn descendants_too(pid: u32, comm: &str, guarded: &[u32]) -> String {
    let shown: Vec<String> = guarded.iter().take(8).map(u32::to_string).collect();
    format!(
        "process {pid} ({comm}) only: {} of its descendants {} a segment too ({}{}): add --tree \
         to include them",
        guarded.len(),
        if guarded.len() == 1 { "has" } else { "have" },
        shown.join(" "),
        if guarded.len() > shown.len() {
            " …"
        } else {
            ""
        }
    )
}

/// The error when `pid` has no segment but some of its descendants do: name them (at most 8)
/// and suggest `--tree`.
pub fn descendants_only(pid: u32, comm: &str, guarded: &[u32]) -> String {
    let shown: Vec<String> = guarded.iter().take(8).map(u32::to_string).collect();
    format!(
        "process {pid} ({comm}) has no stallguard segment of its own, but {} of its \
         descendants {} ({}{}): add --tree to include its descendants",
        guarded.len(),
        if guarded.len() == 1 {
            "has one"
        } else {
            "have one"
        },
        shown.join(" "),
        if shown.len() < guarded.len() {
            " …"
        } else {
            ""
        }
    )
}

/// The error when nothing guarded is found for `pid` (and, with `tree`, its descendants).
pub fn not_guarded(pid: u32, comm: &str, tree: bool) -> String {
    format!(
        "process {pid} ({comm}) has no stallguard segment{}: it is not guarded, or has not \
         published yet (`stallguard status {pid}` tells whether the library is loaded; \
         `stallguard check` whether the program can be guarded)",
        if tree {
            ", nor has any of its descendants"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let line = "42 (a) b (c) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10";
        let i = parse_stat(42, line).unwrap();
        assert_eq!(i.comm, "a) b (c");
        assert_eq!(i.ppid, 7);
        assert!(!i.zombie);
        assert!(i.start_unix_ms.is_some());
        let z = parse_stat(43, "43 (x) Z 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5 0").unwrap();
        assert!(z.zombie);
    }

    #[test]
    fn descendants_breadth_first_without_cycles() {
        let p = |pid, ppid| ProcInfo {
            pid,
            ppid,
            comm: String::new(),
            zombie: false,
            start_unix_ms: None,
        };
        let table = vec![
            p(10, 1),
            p(12, 10),
            p(11, 10),
            p(20, 11),
            p(30, 2),
            p(1, 10),
        ];
        assert_eq!(descendants(10, &table), vec![1, 11, 12, 20]);
        assert_eq!(descendants(99, &table), Vec::<u32>::new());
    }

    #[test]
    fn errors_name_the_guarded_descendants_or_say_nothing_is_guarded() {
        assert_eq!(
            descendants_only(10, "srv", &[11]),
            "process 10 (srv) has no stallguard segment of its own, but 1 of its descendants \
             has one (11): add --tree to include its descendants"
        );
        let many: Vec<u32> = (11..=20).collect();
        let e = descendants_only(10, "srv", &many);
        assert!(
            e.contains("10 of its descendants have one (11 12 13 14 15 16 17 18 …)"),
            "{e}"
        );
        assert!(not_guarded(10, "srv", false)
            .starts_with("process 10 (srv) has no stallguard segment: it is not guarded"));
        assert!(not_guarded(10, "srv", true)
            .contains("no stallguard segment, nor has any of its descendants:"));
    }

    #[test]
    fn our_own_process_is_live_and_found_in_the_table() {
        let me = std::process::id();
        let info = proc_info(me).unwrap();
        assert!(!info.zombie);
        let start = info.start_unix_ms.unwrap();
        assert!(start <= now_unix_ms() + 1000);
        assert!(process_table().iter().any(|p| p.pid == me));
    }
}
