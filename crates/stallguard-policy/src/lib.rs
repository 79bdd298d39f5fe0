//! Plain-Rust core shared by the stallguard shim and its tools: the policy (what the
//! `STALLGUARD_*` variables mean) and the verdict (whether a connection is stalled).
//! No libc, no hooks: everything here is unit-tested without sockets.

pub mod cidr;
pub mod duration;
pub mod kernel_view;
pub mod policy;
pub mod ports;
pub mod pressure;
pub mod suggest;
pub mod timers;
pub mod verdict;

pub use cidr::Cidr;
pub use duration::{format_duration_ms, parse_duration_ms};
pub use kernel_view::{KernelSample, KernelTrack};
pub use policy::{
    log_file_error, parse_env, Action, ConfigError, LogLevel, OnError, Policy, LOG_FILE_REFUSAL,
};
pub use timers::{OutboundPolicy, RequestPolicy, Timers};
pub use verdict::{
    client_turn_since, deadline, is_stuck, judge, spared_by_unread, time_left_ms, turn_ms, Facts,
    Framing, Reason, Stage, Unread, Verdict, STUCK_AFTER_MS,
};
