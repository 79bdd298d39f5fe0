//! The libc functions libstallguard.so interposes, with their family: the same table the
//! shim expands into its exports and real-function entries (`src/interpose.rs`, included
//! here as it is), expanded once more into plain data. `stallguard check` reads it; the
//! shim's tests compare it with the built library's dynamic symbols, the README and the man
//! page.

/// What a family of hooks records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Where connections come from (accept, accept4, listen).
    Accept,
    /// Outbound connections (STALLGUARD_OUTBOUND).
    Connect,
    /// The server waits on the client.
    Read,
    /// The server answers.
    Write,
    /// Paths that end or copy an fd.
    Close,
    /// Waiting for readiness (a read set means waiting on the client).
    Poll,
    /// OpenSSL's reads and writes: a TLS connection's plaintext, for the HTTP/1 lens.
    Tls,
    /// Thread cancellation: a program that asks for one keeps glibc's cancellable wrappers.
    Thread,
}

impl Family {
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Accept => "accept",
            Family::Connect => "connect",
            Family::Read => "read",
            Family::Write => "write",
            Family::Close => "close",
            Family::Poll => "poll",
            Family::Tls => "tls",
            Family::Thread => "thread",
        }
    }
}

/// One interposed function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: &'static str,
    pub family: Family,
}

#[macro_use]
#[allow(unused_macros)]
#[path = "../../../src/interpose.rs"]
mod interpose;

macro_rules! inventory {
    ($( $family:ident fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty
        = $shape:ident ( $($sarg:ident),* ) $( sys ( $($sys:tt)* ) )? { $($body:tt)* } ; )*) => {
        /// Every interposed function, in table order.
        pub const FUNCTIONS: &[Function] = &[
            $( Function { name: stringify!($name), family: Family::$family }, )*
        ];

        /// Their names, in the same order.
        pub const NAMES: &[&str] = &[ $( stringify!($name), )* ];
    };
}

interposed!(inventory);

/// The family of `name`, if the shim interposes it.
pub fn family_of(name: &str) -> Option<Family> {
    FUNCTIONS.iter().find(|f| f.name == name).map(|f| f.family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_in_step() {
        let mut names: Vec<&str> = NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FUNCTIONS.len());
        assert!(FUNCTIONS.iter().zip(NAMES).all(|(f, n)| f.name == *n));
        assert_eq!(family_of("recv"), Some(Family::Read));
        assert_eq!(family_of("sendfile64"), Some(Family::Write));
        assert_eq!(family_of("fgets"), None);
        assert_eq!(family_of("SSL_read_ex"), Some(Family::Tls));
    }
}
