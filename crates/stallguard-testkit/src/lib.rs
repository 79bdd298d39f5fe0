//! Test support shared by the workspace's integration tests (the root package's `tests/`, the
//! `stallguard` command's tests): where things are built, the one guarded-process type, the
//! guard's logfmt lines, loopback clients and attackers, /proc sampling, and the command's own
//! helpers. A test file says `use stallguard_testkit::*;`.
//!
//! Everything here runs in the test process, never under the shim: nothing in this crate is
//! preloaded.

pub mod attack;
pub mod cli;
pub mod client;
pub mod logfmt;
pub mod nginx;
pub mod paths;
pub mod proc;
pub mod procfs;
pub mod scale;

pub use attack::*;
pub use client::*;
pub use logfmt::*;
pub use nginx::*;
pub use paths::*;
pub use proc::*;
pub use procfs::*;
pub use scale::*;
