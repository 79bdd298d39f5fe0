//! What /proc says about the processes a test started: memory, fds, threads, children.

use std::collections::{HashMap, VecDeque};

/// `VmRSS` in KiB and the number of open fds of `pid`.
pub fn rss_and_fds(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// Names of the threads of `pid` (from /proc/PID/task/*/comm).
pub fn thread_names(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// How many threads of `pid` are named `stallguard` (the watcher).
pub fn watcher_threads(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|n| *n == "stallguard")
        .count()
}

/// How often the watcher of `pid` has gone to sleep so far (the voluntary context switches of
/// its thread, named `stallguard`): its wake-ups, which are what an idle watcher costs.
pub fn watcher_sleeps(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let task = dir.filter_map(|e| e.ok()).find(|e| {
        std::fs::read_to_string(e.path().join("comm")).is_ok_and(|n| n.trim() == "stallguard")
    })?;
    let status = std::fs::read_to_string(task.path().join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `/proc/PID/stat` after the command name: state, ppid, … (the name may hold spaces and
/// parentheses, so split after the last ')').
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat[open + 1..close].to_string();
    let rest = stat[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((comm, rest))
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Children (direct) of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.1.get(1)?.parse().ok()
}

/// Alive and not a zombie (a zombie still has /proc/PID).
pub fn pid_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(_, rest)| rest.first().is_some_and(|s| s != "Z"))
}

/// Sends `sig` to one process we started, by pid.
pub fn kill_pid(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes no pointers; callers pass pids of processes they started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// pid → (ppid, comm) for every live process (zombies hold no connection and are left out).
pub fn process_table() -> HashMap<i32, (i32, String)> {
    let mut map = HashMap::new();
    for pid in all_pids() {
        let Some((comm, rest)) = stat_fields(pid) else {
            continue;
        };
        let state = rest.first().map(String::as_str).unwrap_or("");
        if state == "Z" || state == "X" {
            continue;
        }
        if let Some(ppid) = rest.get(1).and_then(|p| p.parse().ok()) {
            map.insert(pid as i32, (ppid, comm));
        }
    }
    map
}

/// Live descendants of `root` in `table`, parents before children.
pub fn descendants(table: &HashMap<i32, (i32, String)>, root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, &(ppid, _)) in table {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            queue.push_back(c);
        }
    }
    out
}
