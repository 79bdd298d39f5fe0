//! What the hooks call: safe functions that record facts into the table around the real
//! call the hook makes. `admission` (accept: track, ignore or refuse), `adopt` (connections
//! inherited at start), `alias` (every path that ends or copies an fd), `connect` (outbound
//! connections), `io` (the read and write paths of a tracked connection), `lens` (the HTTP/1
//! lens those paths feed), `split` (a thread takes a private fd table), `tls` (OpenSSL's
//! plaintext, fed to the lens), `wait` (poll, select, epoll read interest).
//!
//! Like the hooks, they take no lock, allocate nothing, never log, and leave errno as the
//! real call set it.

pub mod admission;
pub mod adopt;
pub mod alias;
pub mod connect;
pub mod io;
pub mod lens;
pub mod split;
pub mod tls;
pub mod wait;
