//! The four stalls of the seed, run by attacker threads against a server.

use crate::client::{connect_tcp, peer_closed, peer_reset, tcp_state};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    /// (a) connect and say nothing.
    Silent,
    /// (b) a header byte every 500 ms, forever (bounded by the attacker's lifetime): slowloris.
    Drip,
    /// (c) headers without their end.
    HeadersNoEnd,
    /// (d) asks for a large response and never reads it.
    NeverReads,
}

impl Attack {
    pub const ALL: [Attack; 4] = [
        Attack::Silent,
        Attack::Drip,
        Attack::HeadersNoEnd,
        Attack::NeverReads,
    ];

    /// The reap reason the FAST policy must log for this attack.
    pub fn reason(self) -> &'static str {
        match self {
            Attack::Silent => "first_byte",
            Attack::Drip | Attack::HeadersNoEnd => "request",
            Attack::NeverReads => "write_stall",
        }
    }

    /// The FAST policy timer this attack runs into, in ms.
    pub fn timer_ms(self) -> u64 {
        match self {
            Attack::Silent | Attack::NeverReads => 1000,
            Attack::Drip | Attack::HeadersNoEnd => 2000,
        }
    }
}

/// Attackers run in threads until stopped (or 30 s, whichever first); each records whether the
/// server cut its connection.
pub struct Attackers {
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Attackers {
    pub fn launch(addr: SocketAddr, attack: Attack, count: usize) -> Attackers {
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for _ in 0..count {
            let (stop, cut) = (stop.clone(), cut.clone());
            threads.push(thread::spawn(move || {
                if attack_once(addr, attack, &stop) {
                    cut.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        // Let every attacker connect and be picked up by a worker before anyone probes.
        thread::sleep(Duration::from_millis(300));
        Attackers { stop, cut, threads }
    }

    /// How many attackers' connections the server has cut so far.
    pub fn cut(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }

    /// Waits until `n` attackers were cut (or `within` passed), then stops them all.
    pub fn stop_after_cut(self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.cut() < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        self.stop()
    }

    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        self.cut.load(Ordering::SeqCst)
    }
}

/// One attacker; returns true when the server cut the connection (EOF, reset, or EPIPE).
fn attack_once(addr: SocketAddr, attack: Attack, stop: &AtomicBool) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    let s = match attack {
        Attack::NeverReads => connect_tcp([127, 0, 0, 1], addr, Some(4096)).ok(),
        _ => TcpStream::connect(addr).ok(),
    };
    let Some(mut s) = s else { return false };
    let header = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Pad: ";
    let opening: &[u8] = match attack {
        Attack::Silent | Attack::Drip => b"",
        Attack::HeadersNoEnd => header,
        Attack::NeverReads => b"GET /big HTTP/1.1\r\nHost: slow\r\n\r\n",
    };
    if s.write_all(opening).is_err() {
        return true;
    }
    let mut sent = 0usize;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        if attack == Attack::Drip {
            let byte = header[sent % header.len()];
            if s.write_all(&[byte]).is_err() {
                return true;
            }
            sent += 1;
        }
        let cut = if attack == Attack::NeverReads {
            peer_reset(&s)
        } else {
            peer_closed(&s)
        };
        if cut {
            return true;
        }
        thread::sleep(Duration::from_millis(if attack == Attack::Drip {
            500
        } else {
            50
        }));
    }
    let _ = s.shutdown(Shutdown::Both);
    false
}

/// A sustained slowloris from 127.0.0.1: every 100 ms one more connection sends `opening`,
/// and every connection still established gets `drip`. Runs in a thread until stopped.
pub struct Slowloris {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Slowloris {
    pub fn start(addr: SocketAddr, opening: &'static [u8], drip: &'static [u8]) -> Slowloris {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(mut s) = connect_tcp([127, 0, 0, 1], addr, None) {
                    let _ = s.write_all(opening);
                    held.push(s);
                }
                held.retain_mut(|s| s.write_all(drip).is_ok() && tcp_state(s) == 1);
                thread::sleep(Duration::from_millis(100));
            }
        });
        Slowloris {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the attack and closes its connections.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.halt();
    }
}
