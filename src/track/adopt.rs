//! Adoption: connected TCP sockets a process inherits at start. inetd hands a service its
//! client connection as fds 0-2 and the service (micro-httpd, for one) then does all its I/O
//! through stdio, which no hook sees. Such a connection is tracked from the constructor and
//! judged by the kernel's counters (see `stallguard_policy::kernel_view`) for as long as no
//! hook sees the program read from it. A listening socket on fd 0 (`wait = yes` services) is
//! never adopted: it has no peer.

use super::admission::{decide, Admission};
use crate::abi::socket;
use crate::runtime::{clock, config, start_watcher};
use crate::table::{self, stats, Flags};

/// Adopts the connected TCP sockets on fds 0-2 (once per process image: after exec the new
/// image adopts again, so a service that execs stays guarded).
pub fn adopt_stdio() {
    if !config::policy().adopt_stdio {
        return;
    }
    let mut primary: [(i32, u64); 3] = [(-1, 0); 3];
    let mut adopted = 0;
    for fd in 0..=2 {
        let (Some(id), Some(slot)) = (socket::identify_tcp(fd), table::slot(fd)) else {
            continue;
        };
        if decide(&id) == Admission::Ignore {
            continue; // port off or exempt peer (an inetd service's cap is inetd's business)
        }
        // fds 0, 1 and 2 are usually one connection: judge it once, through the first fd;
        // the others are tracked as its aliases, so hooked I/O on them is still recorded.
        match primary
            .iter()
            .find(|(pfd, cookie)| *pfd >= 0 && *cookie == id.cookie)
        {
            Some(&(pfd, _)) => {
                if let Some(src) = table::tracked(pfd) {
                    slot.track_alias_of(fd, src);
                }
            }
            None => {
                slot.track(fd, &id, clock::refresh());
                stats::count_tracked();
                slot.set_flag(Flags::KERNEL_VIEW);
                primary[fd as usize] = (fd, id.cookie);
                adopted += 1;
            }
        }
    }
    if adopted > 0 {
        start_watcher();
    }
}
