//! `stallguard`: run a server under libstallguard.so, tell whether a binary can be guarded,
//! and watch, reap and export the connections of guarded processes (through the segment each
//! publishes at /dev/shm/stallguard-<pid>).
//!
//! This crate must never depend on the root package (the shim): linking its `#[no_mangle]`
//! hooks would interpose this tool's own libc calls.

mod check;
mod json;
mod metrics;
mod program;
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
        after_help = "Reads the ELF file and the libraries it loads. A name without a / is \
        looked up in PATH, as run does. A script (#!) is judged by its interpreter, and the \
        report says so (#!/usr/bin/env python3: the first python3 in PATH). Exit status: 0 \
        guardable, 1 not guardable (static, Go, another architecture or libc, no socket \
        functions), 2 error (missing file, not ELF nor a script, interpreter not found).\n\n\
        Examples:\n  \
        stallguard check /usr/sbin/legacy-server\n  \
        stallguard check civetweb\n  \
        stallguard check ./app.py"
    )]
    Check {
        /// The program to inspect: a path, a name in PATH, or a script
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
    Top(top::TopArgs),

    /// Shut down a connection (--fd) or every stuck one (--stuck) now, with reason=manual
    #[command(
        after_help = "Stuck means: on the client's turn (the server waits on the client, \
        or a write is pending) for at least --min-wait (default 10s, the threshold of the \
        library's stuck report), neither exempt nor already reaped. When nothing qualifies the \
        command says why. The request goes through the mailbox in the process's segment; its \
        watcher answers within a tick. Only PID's own connections are considered: add --tree \
        for a prefork server's children. Only the server's user or root may reap. Exit status 1 \
        if the fd is not a tracked connection, or the process is not guarded, not yours, or did \
        not answer within 3 s.\n\n\
        Examples:\n  \
        stallguard reap 1234 --fd 17\n  \
        stallguard reap 1234 --stuck\n  \
        stallguard reap 1234 --stuck --min-wait 2m --tree"
    )]
    Reap(reap::ReapArgs),

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
        before the process listens (the library publishes its live view from its first listen \
        or connection): the policy is then the one in the process's environment, which the \
        library read at load. Exit status: 0 guarded, 1 not guarded or no such \
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

/// The command's definition (for completions and the tests).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

fn main() {
    std::process::exit(Cli::parse().command.run());
}

impl Cmd {
    /// Runs the subcommand; returns the exit status.
    fn run(self) -> i32 {
        match self {
            Cmd::Run(args) => run::run(args),
            Cmd::Check { binary } => check_cmd(&binary),
            Cmd::Top(args) => top::top(args),
            Cmd::Reap(args) => reap::reap(args.pid, args.target(), args.tree),
            Cmd::Metrics {
                pids,
                name,
                pidfile,
                tree,
                listen,
            } => {
                let targets = metrics::Targets {
                    pids,
                    names: name,
                    pidfiles: pidfile,
                    tree,
                };
                metrics_cmd(&targets, listen)
            }
            Cmd::Status { pid } => status::status(pid),
            Cmd::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut command(),
                    "stallguard",
                    &mut std::io::stdout(),
                );
                0
            }
        }
    }
}

/// `stallguard check`: the report on stdout, or the error (exit status 2).
fn check_cmd(binary: &std::path::Path) -> i32 {
    match check::check_program(binary) {
        Ok(report) => {
            print!("{}", report.text);
            report.status
        }
        Err(e) => {
            eprintln!("stallguard: {e}");
            2
        }
    }
}

fn metrics_cmd(pids: &metrics::Targets, listen: Option<SocketAddr>) -> i32 {
    match listen {
        None => metrics_once(pids),
        Some(addr) => metrics_serve(pids, addr),
    }
}

/// Prints the exposition once; exit status 1 when nothing guarded is found.
fn metrics_once(pids: &metrics::Targets) -> i32 {
    let mut notes = segment::Notes::new();
    let result = metrics::exposition(pids, true, &mut notes);
    for n in &notes {
        eprintln!("stallguard: {n}");
    }
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("stallguard: {e}");
            1
        }
    }
}

/// `--listen`: serves GET /metrics until killed.
fn metrics_serve(pids: &metrics::Targets, addr: SocketAddr) -> i32 {
    // Fixed pids: fail early if nothing is guarded now; later scrapes tolerate exits. Names
    // and pidfiles are followed: the server may (re)start after the exporter.
    if let Err(e) = metrics::exposition(pids, true, &mut segment::Notes::new()) {
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
    announce(listener.local_addr().unwrap_or(addr));
    match metrics::serve(listener, pids) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stallguard: {e}");
            1
        }
    }
}

/// Says where the metrics are served (and warns when that is not loopback).
fn announce(bound: SocketAddr) {
    if !metrics::is_loopback(&bound) {
        eprintln!(
            "stallguard: warning: serving metrics on {bound}, which is not a loopback address"
        );
    }
    eprintln!("stallguard: serving http://{bound}/metrics");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        Cli::try_parse_from([&["stallguard"], args].concat())
            .unwrap()
            .command
    }

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn subcommands_parse_into_their_arguments() {
        let Cmd::Reap(reap) = parse(&["reap", "12", "--stuck", "--min-wait", "2m"]) else {
            panic!("not reap");
        };
        assert!(matches!(
            reap.target(),
            reap::Target::Stuck {
                min_wait_ms: 120_000
            }
        ));
        let Cmd::Reap(reap) = parse(&["reap", "12", "--fd", "7"]) else {
            panic!("not reap");
        };
        assert!(matches!(reap.target(), reap::Target::Fd(7)));
        let Cmd::Reap(reap) = parse(&["reap", "12", "--stuck"]) else {
            panic!("not reap");
        };
        assert!(matches!(
            reap.target(),
            reap::Target::Stuck {
                min_wait_ms: reap::DEFAULT_MIN_WAIT_MS
            }
        ));
        let Cmd::Top(top) = parse(&["top", "--filter", "port=80", "--sort", "left", "5"]) else {
            panic!("not top");
        };
        assert_eq!(top.pid, 5);
        assert_eq!(top.filters, vec![view::Filter::Port(80)]);
        assert_eq!(top.sort, view::SortKey::Left);
    }
}
