//! The flags of a slot, typed: what is known about a tracked connection beyond its facts.
//! (The live view publishes some of them under its own bit numbers: `watcher::publish` maps
//! them explicitly onto `stallguard_shm`'s record flags.)

use std::ops::BitOr;

/// A set of slot flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(u32);

impl Flags {
    /// The shim itself shut this connection down (so EPIPE on it is ours, not the peer's).
    pub const REAPED: Flags = Flags(1);
    /// The fd is in an epoll interest set for input (the event loop waits on the client).
    pub const EPOLL_IN: Flags = Flags(2);
    /// Inherited over fork; judged only on facts this process's own hooks record.
    pub const INHERITED: Flags = Flags(4);
    /// Adopted at start (inetd); judged by the kernel's counters while no hook sees reads.
    pub const KERNEL_VIEW: Flags = Flags(8);
    /// Holds one of its source's STALLGUARD_PER_SOURCE places, given back when it ends.
    pub const COUNTED: Flags = Flags(16);
    /// A connection the program opened itself (STALLGUARD_OUTBOUND).
    pub const OUTBOUND: Flags = Flags(32);
    /// The program exempted it (stallguard_exempt): tracked, never judged.
    pub const EXEMPT: Flags = Flags(64);
    /// A duplicate (dup, dup2, F_DUPFD, inherited 0-2) of a connection tracked elsewhere.
    pub const ALIAS: Flags = Flags(128);
    /// The HTTP/1 lens follows this connection (its reads are fed to it); cleared for good
    /// when the lens turns off or the connection becomes a tunnel.
    pub const LENS: Flags = Flags(256);
    /// The keepalive backstop is still to be set (by the watcher, at its first look).
    pub const KEEPALIVE_DUE: Flags = Flags(512);
    /// Not a connection: the slot of a listening socket, caching what the connections it
    /// accepts inherit (`Slot::cached_listener`). Cleared when the fd is tracked or reused.
    pub const LISTENER: Flags = Flags(1024);
    /// Its bytes are TLS records (the first raw read opened a handshake, or OpenSSL's
    /// SSL_read/SSL_write was seen on it): the lens is fed the plaintext OpenSSL hands the
    /// program, never the raw reads, and only SSL_write starts an answer
    /// (`stallguard_lens::tls`).
    pub const TLS: Flags = Flags(2048);
    /// The TCP_USER_TIMEOUT backstop is still to be set (by the watcher, at its first look).
    pub const USER_TIMEOUT_DUE: Flags = Flags(4096);
    /// Not a flag: none.
    pub const NONE: Flags = Flags(0);
    /// Not a flag: the backstops the watcher sets at its first look, any of them due.
    pub const BACKSTOPS_DUE: Flags = Flags(Flags::KEEPALIVE_DUE.0 | Flags::USER_TIMEOUT_DUE.0);
    /// Not a flag: the top two bits hold the connection's address family (`slot.rs`), set
    /// with the identity; no flag may use them.
    pub const FAMILY_MASK: Flags = Flags(0b11 << 30);

    /// The bits, as stored in the slot.
    #[inline(always)]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The flags stored in a slot.
    #[inline(always)]
    pub(super) const fn from_bits(bits: u32) -> Flags {
        Flags(bits)
    }

    /// Whether `self` and `other` share a flag.
    #[inline(always)]
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        self.union(other)
    }
}

/// Every flag, for the check below.
const ALL: [Flags; 13] = [
    Flags::REAPED,
    Flags::EPOLL_IN,
    Flags::INHERITED,
    Flags::KERNEL_VIEW,
    Flags::COUNTED,
    Flags::OUTBOUND,
    Flags::EXEMPT,
    Flags::ALIAS,
    Flags::LENS,
    Flags::KEEPALIVE_DUE,
    Flags::LISTENER,
    Flags::TLS,
    Flags::USER_TIMEOUT_DUE,
];

// Each flag is one bit of its own.
const _: () = {
    let mut seen = 0u32;
    let mut i = 0;
    while i < ALL.len() {
        assert!(ALL[i].0.count_ones() == 1);
        assert!(seen & ALL[i].0 == 0);
        assert!(ALL[i].0 & Flags::FAMILY_MASK.0 == 0);
        seen |= ALL[i].0;
        i += 1;
    }
};
