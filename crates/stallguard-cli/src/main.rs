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
mod status;
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
        stallguard status 1234\n  \
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
        lasted (--sort, or s in the live view, changes it). TURN is client (the server waits on \
        the client: a timer runs), writing (a write is pending), server (the server has the \
        turn: no timer) or queued (accepted, not yet read by a worker: no timer until the \
        server waits on it). LEFT is the time before the earliest running deadline. FLAGS: \
        reaped, would_reap (monitor mode: logged only), kernel, outbound, exempt. Each process \
        is shown with its own policy; reaps stay listed under \"recent reaps\" after their \
        row is gone. Only PID's own connections are shown: for a prefork server give the \
        parent's pid with --tree. Lines fit the terminal (80 columns when not a terminal, or \
        $COLUMNS). q or Ctrl-C quits.\n\n\
        Examples:\n  \
        stallguard top 1234\n  \
        stallguard top --tree --sort left --filter turn=client 1234\n  \
        stallguard top --once --json 1234 | jq '.connections[] | select(.turn == \"client\")'"
    )]
    Top {
        /// The server's pid
        pid: u32,
        /// Also its descendants (a prefork server's children)
        #[arg(long)]
        tree: bool,
        /// Print once and exit
        #[arg(long)]
        once: bool,
        /// JSON: one document (one line) per refresh
        #[arg(long)]
        json: bool,
        /// Sort the connections by
        #[arg(long, value_enum, default_value_t = view::SortKey::Wait)]
        sort: view::SortKey,
        /// Show only matching connections (repeatable; all must match): turn=client|writing|
        /// server|queued, port=N, peer=PREFIX, pid=N, flag=reaped|would_reap|kernel|outbound|exempt
        #[arg(long, value_name = "KEY=VALUE")]
        filter: Vec<view::Filter>,
    },

    /// Shut down a connection (--fd) or every stuck one (--stuck) now, with reason=manual
    #[command(
        after_help = "Stuck means: on the client's turn (the server waits on the client, \
        or a write is pending) for at least --min-wait (default 10s, the threshold of the \
        library's stuck report), neither exempt nor already reaped. When nothing qualifies the \
        command says why. The request goes through the mailbox in the process's segment; its \
        watcher answers within a tick. Only PID's own connections are considered: add --tree \
        for a prefork server's children. Only the server's user or root may reap. Exit status 1 \
        if the process is not guarded, not yours, or did not answer within 3 s.\n\n\
        Examples:\n  \
        stallguard reap 1234 --fd 17\n  \
        stallguard reap 1234 --stuck\n  \
        stallguard reap 1234 --stuck --min-wait 2m --tree"
    )]
    Reap {
        /// The server's pid
        pid: u32,
        /// The connection's fd in that process (see `stallguard top`)
        #[arg(long, value_name = "N", conflicts_with_all = ["stuck", "tree"],
              required_unless_present = "stuck", allow_hyphen_values = true,
              value_parser = clap::value_parser!(i32).range(0..))]
        fd: Option<i32>,
        /// Every stuck connection: on the client's turn for at least --min-wait
        #[arg(long)]
        stuck: bool,
        /// With --stuck: how long the client's turn must have lasted (default 10s)
        #[arg(long, value_name = "DURATION", requires = "stuck", value_parser = parse_min_wait)]
        min_wait: Option<u64>,
        /// With --stuck: also the process's descendants (a prefork server's children)
        #[arg(long)]
        tree: bool,
    },

    /// Print the counters in the Prometheus text format, or serve them over HTTP
    #[command(
        after_help = "Every sample has pid and comm (program name) labels: one series per \
        guarded process; sum them with `sum without (pid) (...)`. --name and --pidfile are \
        resolved again at every scrape, so a restarted server is followed under its new pid. \
        --tree adds each process's descendants (a prefork server's children). With --listen, \
        GET /metrics is served until the command is killed, re-reading the segments on each \
        scrape (processes that exit disappear); other methods get 405. The default address is \
        loopback only. stallguard_build_info names this command's version.\n\n\
        Examples:\n  \
        stallguard metrics 1234\n  \
        stallguard metrics --name civetweb --listen 127.0.0.1:9464\n  \
        stallguard metrics --pidfile /run/legacy-api.pid --tree --listen"
    )]
    Metrics {
        /// The servers' pids
        #[arg(required_unless_present_any = ["name", "pidfile"])]
        pids: Vec<u32>,
        /// Every process running this program (comm or executable name; repeatable)
        #[arg(long, value_name = "PROGRAM")]
        name: Vec<String>,
        /// The pid written in this file (repeatable)
        #[arg(long, value_name = "FILE")]
        pidfile: Vec<PathBuf>,
        /// Also each process's descendants (a prefork server's children)
        #[arg(long)]
        tree: bool,
        /// Serve GET /metrics on this address (e.g. 127.0.0.1:9464; port 0 picks one)
        #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
              default_missing_value = "127.0.0.1:9464")]
        listen: Option<SocketAddr>,
    },

    /// Tell whether a process runs with the library loaded, with which policy, since when
    #[command(
        after_help = "Reads /proc/PID/maps (only the process's user or root can). Works \
        before the first connection: the policy is then the one in the process's environment, \
        which the library read at load. Exit status: 0 guarded, 1 not guarded or no such \
        process, 2 cannot tell (permission).\n\n\
        Examples:\n  \
        stallguard status 1234"
    )]
    Status {
        /// The process's pid
        pid: u32,
    },

    /// Print a shell completion script (bash, zsh, fish, ...) for this command
    #[command(after_help = "make install installs them; by hand:\n  \
        stallguard completions bash > /etc/bash_completion.d/stallguard")]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

fn parse_min_wait(s: &str) -> Result<u64, String> {
    stallguard_policy::parse_duration_ms(s).map_err(|e| e.to_string())
}

/// The command's definition (for completions and the tests).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
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
        Cmd::Top {
            pid,
            tree,
            once,
            json,
            sort,
            filter,
        } => top::top(top::TopArgs {
            pid,
            tree,
            once,
            json,
            sort,
            filters: filter,
        }),
        Cmd::Reap {
            pid,
            fd,
            stuck: _,
            min_wait,
            tree,
        } => {
            let target = match fd {
                Some(fd) => reap::Target::Fd(fd),
                None => reap::Target::Stuck {
                    min_wait_ms: min_wait.unwrap_or(reap::DEFAULT_MIN_WAIT_MS),
                },
            };
            reap::reap(pid, target, tree)
        }
        Cmd::Metrics {
            pids,
            name,
            pidfile,
            tree,
            listen,
        } => metrics_cmd(
            &metrics::Targets {
                pids,
                names: name,
                pidfiles: pidfile,
                tree,
            },
            listen,
        ),
        Cmd::Status { pid } => status::status(pid),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "stallguard", &mut std::io::stdout());
            0
        }
    };
    std::process::exit(status);
}

fn metrics_cmd(pids: &metrics::Targets, listen: Option<SocketAddr>) -> i32 {
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
    // Fixed pids: fail early if nothing is guarded now; later scrapes tolerate exits. Names
    // and pidfiles are followed: the server may (re)start after the exporter.
    if let Err(e) = metrics::exposition(pids, true, &mut notes) {
        if pids.names.is_empty() && pids.pidfiles.is_empty() {
            eprintln!("stallguard: {e}");
            return 1;
        }
        eprintln!("stallguard: warning: {e} (serving anyway: followed at every scrape)");
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
