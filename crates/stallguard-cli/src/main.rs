//! `stallguard`: run a server under libstallguard.so, tell whether a binary can be guarded,
//! and watch, reap and export the connections of guarded processes (through the segment each
//! publishes at /dev/shm/stallguard-<pid>).
//!
//! This crate must never depend on the root package (the shim): linking its `#[no_mangle]`
//! hooks would interpose this tool's own libc calls.

mod check;
mod json;
mod metrics;
mod reap;
mod run;
mod segment;
mod top;
mod view;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stallguard",
    version,
    about = "Deadlines for servers that have none: run a server under libstallguard.so, check a \
             binary, watch and reap its stalled connections, export its counters",
    after_help = "Examples:\n  \
        stallguard run --first-byte 10s --request 20-40,minrate=500 -- ./server --port 8080\n  \
        stallguard check /usr/sbin/legacy-server\n  \
        stallguard top 1234\n  \
        stallguard reap 1234 --stuck\n  \
        stallguard metrics 1234 --listen 127.0.0.1:9464\n\n\
        See stallguard(1) and libstallguard.so(8)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run CMD with the guard preloaded, after checking the policy as the library will
    #[command(
        after_help = "Each policy flag sets its STALLGUARD_ variable, over the value \
        already in the environment. The policy is checked first, exactly as the library will \
        check it: any bad value is printed (naming the flag, the value and what is accepted) \
        and nothing is started (exit status 2). The library is found through STALLGUARD_LIB, \
        then next to this command (../lib, same directory), then the install prefix; it is \
        put first in LD_PRELOAD, existing entries kept.\n\n\
        Examples:\n  \
        stallguard run --first-byte 10s --idle 30s -- ./pool_server 8080\n  \
        stallguard run --action log --log-file /var/log/stallguard.log -- /usr/sbin/legacy-api\n  \
        stallguard run --ports '8080:request=10-20,minrate=1000;9000:off' -- ./server\n  \
        STALLGUARD_IDLE=15s stallguard run --check"
    )]
    Run(run::RunArgs),

    /// Tell whether a binary can be guarded: dynamic, not Go, imports the hooked functions
    #[command(
        after_help = "Reads the ELF file and the libraries it loads. Exit status: 0 \
        guardable, 1 not guardable (static, Go, another architecture or libc, no socket \
        functions), 2 error (missing file, not ELF).\n\n\
        Examples:\n  \
        stallguard check /usr/sbin/legacy-server\n  \
        stallguard check \"$(command -v python3)\""
    )]
    Check {
        /// The program to inspect
        binary: PathBuf,
    },

    /// Show a guarded process's tracked connections, refreshed every second
    #[command(
        after_help = "Connections are sorted by how long their current turn has \
        lasted. TURN is client (the server waits on the client: a timer runs), writing (a write \
        is pending) or server (the server has the turn: no timer). LEFT is the time before the \
        earliest running deadline. For a prefork server give the parent's pid: every child's \
        segment is shown. q or Ctrl-C quits.\n\n\
        Examples:\n  \
        stallguard top 1234\n  \
        stallguard top --once 1234\n  \
        stallguard top --once --json 1234 | jq '.connections[] | select(.turn == \"client\")'"
    )]
    Top {
        /// The server's pid (a prefork parent: its children are shown)
        pid: u32,
        /// Print once and exit
        #[arg(long)]
        once: bool,
        /// JSON: one document (one line) per refresh
        #[arg(long)]
        json: bool,
    },

    /// Shut down a connection (--fd) or every stuck one (--stuck) now, with reason=manual
    #[command(
        after_help = "The request goes through the mailbox in the process's segment; \
        its watcher answers within a tick. Only the server's user or root may reap. Exit \
        status 1 if the process is not guarded, not yours, or did not answer within 3 s.\n\n\
        Examples:\n  \
        stallguard reap 1234 --fd 17\n  \
        stallguard reap 1234 --stuck"
    )]
    Reap {
        /// The server's pid (with --stuck, a prefork parent covers its children)
        pid: u32,
        /// The connection's fd in that process (see `stallguard top`)
        #[arg(long, value_name = "N", conflicts_with = "stuck", required_unless_present = "stuck",
              allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(0..))]
        fd: Option<i32>,
        /// Every connection on the client's turn (the server is waiting on it)
        #[arg(long)]
        stuck: bool,
    },

    /// Print the counters in the Prometheus text format, or serve them over HTTP
    #[command(
        after_help = "Every sample has a pid label (one series per guarded process; \
        a prefork parent's pid covers its children's segments): sum them with \
        `sum without (pid) (...)`. With --listen, GET /metrics is served until the command is \
        killed, re-reading the segments on each scrape (processes that exit disappear); other \
        methods get 405. The default address is loopback only.\n\n\
        Examples:\n  \
        stallguard metrics 1234\n  \
        stallguard metrics 1234 5678 --listen 127.0.0.1:9464"
    )]
    Metrics {
        /// The servers' pids
        #[arg(required = true)]
        pids: Vec<u32>,
        /// Serve GET /metrics on this address (e.g. 127.0.0.1:9464; port 0 picks one)
        #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
              default_missing_value = "127.0.0.1:9464")]
        listen: Option<SocketAddr>,
    },
}

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Cmd::Run(args) => run::run(args),
        Cmd::Check { binary } => match check::check(&binary) {
            Ok(report) => {
                print!("{}", report.text);
                report.status
            }
            Err(e) => {
                eprintln!("stallguard: {e}");
                2
            }
        },
        Cmd::Top { pid, once, json } => top::top(pid, once, json),
        Cmd::Reap { pid, fd, stuck } => {
            let target = match (fd, stuck) {
                (Some(fd), _) => reap::Target::Fd(fd),
                _ => reap::Target::Stuck,
            };
            reap::reap(pid, target)
        }
        Cmd::Metrics { pids, listen } => metrics_cmd(&pids, listen),
    };
    std::process::exit(status);
}

fn metrics_cmd(pids: &[u32], listen: Option<SocketAddr>) -> i32 {
    let mut notes = segment::Notes::new();
    let Some(addr) = listen else {
        let result = metrics::exposition(pids, true, &mut notes);
        for n in &notes {
            eprintln!("stallguard: {n}");
        }
        return match result {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("stallguard: {e}");
                1
            }
        };
    };
    // Fail early if nothing is guarded now; later scrapes tolerate exits.
    if let Err(e) = metrics::exposition(pids, true, &mut notes) {
        eprintln!("stallguard: {e}");
        return 1;
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stallguard: --listen {addr}: {e}");
            return 1;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    if !metrics::is_loopback(&bound) {
        eprintln!(
            "stallguard: warning: serving metrics on {bound}, which is not a loopback address"
        );
    }
    eprintln!("stallguard: serving http://{bound}/metrics");
    match metrics::serve(listener, pids) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stallguard: {e}");
            1
        }
    }
}
