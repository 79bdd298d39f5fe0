//! `stallguard status PID`: is the library loaded in the process (`/proc/PID/maps`), with
//! which policy, since when. Works before the process's first connection: the segment (when
//! the watcher has published one) gives the policy and the watcher's start; otherwise the
//! policy is the one the library read from the process's environment at load, and the load
//! time is the process's start.

use std::fs;

use stallguard_policy::parse_env;

use crate::segment::{now_unix_ms, proc_info, Notes};
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
        println!(
            "pid {pid} ({}): not guarded: libstallguard.so is not mapped (is it in the \
             process's LD_PRELOAD? `stallguard check` tells whether the program can be guarded)",
            info.comm
        );
        return 1;
    };
    println!("pid {pid} ({}): guarded", info.comm);
    println!("  library: {lib}");
    let mut notes = Notes::new();
    let seg = crate::segment::segments_for(pid, false, false, &mut notes)
        .ok()
        .and_then(|mut s| (!s.is_empty()).then(|| s.remove(0)));
    let now = now_unix_ms();
    match seg {
        Some(seg) => {
            let v = ProcessView::read(&seg);
            println!(
                "  since: {} (watcher started; process started {})",
                utc(v.started_unix_ms),
                info.start_unix_ms.map_or("?".into(), utc)
            );
            println!("  policy: {}", v.policy);
            println!(
                "  live view: {}, updated {} ago; tracked {} waiting {}",
                seg.path.display(),
                v.updated_ago_ms(now).map_or("never".into(), human_ms),
                v.counters.tracked,
                v.counters.waiting
            );
        }
        None => {
            println!(
                "  since: {} (loaded at process start)",
                info.start_unix_ms.map_or("?".into(), utc)
            );
            match environ_policy(pid) {
                Ok(p) => println!("  policy: {p} (from its environment)"),
                Err(e) => println!("  policy: unknown ({e})"),
            }
            println!(
                "  live view: none yet (the watcher publishes once the process tracks a connection)"
            );
        }
    }
    0
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
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_003_702_000), "2026-11-18T12:08:22Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
