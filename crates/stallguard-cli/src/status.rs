//! `stallguard status PID`: is the library loaded in the process (`/proc/PID/maps`), with
//! which policy, since when. Works before the process listens: the segment (which the watcher
//! publishes from the process's first listen or connection) gives the policy and the
//! watcher's start; otherwise the policy is the one the library read from the process's
//! environment at load, and the load time is the process's start.

use std::fs;

use stallguard_policy::parse_env;

use crate::segment::{now_unix_ms, proc_info, Notes, ProcInfo, Segment};
use crate::view::{human_ms, ProcessView};

/// The mapped files whose name is the library's (`…/libstallguard.so`), from `/proc/PID/maps`.
pub fn mapped_library(maps: &str) -> Option<String> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("libstallguard.so"))
        })
        .map(str::to_string)
}

/// `2026-12-01T12:08:22Z` from ms since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The `STALLGUARD_*` variables of a process's initial environment (`/proc/PID/environ`).
fn environ_policy(pid: u32) -> Result<String, String> {
    let raw = fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("cannot read /proc/{pid}/environ: {e}"))?;
    let vars: Vec<(String, String)> = raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            (k.starts_with("STALLGUARD_") && k != "STALLGUARD_LIB")
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect();
    let (policy, errors) = parse_env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if errors.is_empty() {
        Ok(policy.describe())
    } else {
        let e: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        Ok(format!(
            "invalid policy in its environment: {}",
            e.join("; ")
        ))
    }
}

/// Exit status: 0 guarded, 1 not guarded or no such process, 2 cannot tell (permission).
pub fn status(pid: u32) -> i32 {
    let Some(info) = proc_info(pid).filter(|i| !i.zombie) else {
        eprintln!("stallguard: no process {pid}");
        return 1;
    };
    let maps = match fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "stallguard: cannot read /proc/{pid}/maps: {e} (only the process's user or root can)"
            );
            return 2;
        }
    };
    let Some(lib) = mapped_library(&maps) else {
        println!("{}", not_guarded(&info));
        return 1;
    };
    println!("pid {pid} ({}): guarded", info.comm);
    println!("  library: {lib}");
    match own_segment(pid) {
        Some(seg) => print!("{}", from_segment(&ProcessView::read(&seg), &seg, &info)),
        None => print!("{}", from_environment(&info, environ_policy(pid))),
    }
    0
}

/// The line for a process without the library.
fn not_guarded(info: &ProcInfo) -> String {
    format!(
        "pid {} ({}): not guarded: libstallguard.so is not mapped (is it in the \
         process's LD_PRELOAD? `stallguard check` tells whether the program can be guarded)",
        info.pid, info.comm
    )
}

/// The process's own published segment, if any.
fn own_segment(pid: u32) -> Option<Segment> {
    let mut notes = Notes::new();
    crate::segment::segments_for(pid, false, false, &mut notes)
        .ok()
        .and_then(|mut s| (!s.is_empty()).then(|| s.remove(0)))
}

/// Since when, with which policy, and the live view, from the published segment.
fn from_segment(v: &ProcessView, seg: &Segment, info: &ProcInfo) -> String {
    format!(
        "  since: {} (watcher started; process started {})\n  policy: {}\n  \
         live view: {}, updated {} ago; tracked {} waiting {}\n",
        utc(v.started_unix_ms),
        info.start_unix_ms.map_or("?".into(), utc),
        v.policy,
        seg.path.display(),
        v.updated_ago_ms(now_unix_ms())
            .map_or("never".into(), human_ms),
        v.counters.tracked,
        v.counters.waiting
    )
}

/// Since when and with which policy before anything is published: the process's start and
/// the policy in its environment.
fn from_environment(info: &ProcInfo, policy: Result<String, String>) -> String {
    let policy = match policy {
        Ok(p) => format!("{p} (from its environment)"),
        Err(e) => format!("unknown ({e})"),
    };
    format!(
        "  since: {} (loaded at process start)\n  policy: {policy}\n  \
         live view: none yet (the watcher publishes once the process listens on TCP or tracks a connection)\n",
        info.start_unix_ms.map_or("?".into(), utc)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_library_in_maps() {
        let maps = "7f00-7f01 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f02-7f03 r--p 00000000 08:01 456 /opt/sg/lib/libstallguard.so\n\
                    7f04-7f05 rw-p 00000000 00:00 0 \n";
        assert_eq!(
            mapped_library(maps).as_deref(),
            Some("/opt/sg/lib/libstallguard.so")
        );
        assert_eq!(
            mapped_library("7f00-7f01 r-xp 0 0 0 /lib/libc.so.6\n"),
            None
        );
    }

    #[test]
    fn before_the_first_publish_the_environment_tells() {
        let info = ProcInfo {
            pid: 42,
            ppid: 1,
            comm: "srv".into(),
            zombie: false,
            start_unix_ms: Some(0),
        };
        assert_eq!(
            from_environment(&info, Ok("idle=1m".into())),
            "  since: 1970-01-01T00:00:00Z (loaded at process start)\n  \
             policy: idle=1m (from its environment)\n  live view: none yet (the watcher \
             publishes once the process listens on TCP or tracks a connection)\n"
        );
        let unknown = from_environment(&info, Err("cannot read".into()));
        assert!(
            unknown.contains("  policy: unknown (cannot read)\n"),
            "{unknown}"
        );
        assert!(not_guarded(&info).starts_with("pid 42 (srv): not guarded: "));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_003_702_000), "2026-11-18T12:08:22Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
