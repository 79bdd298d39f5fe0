//! Reads the `STALLGUARD_*` environment once, in the constructor, and decides whether the
//! process runs guarded. Bad input never gets a silent default: each problem is one line on
//! stderr; `STALLGUARD_ON_ERROR=exit` (default) stops the process with status 2, `warn` runs it
//! unguarded and says so.

use super::{clock, log};
use crate::abi::sys;
use stallguard_policy::{parse_env, OnError, Policy};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::OnceLock;

static POLICY: OnceLock<Policy> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);
static OUTBOUND: AtomicBool = AtomicBool::new(false);

/// True once the constructor accepted the policy: only then are connections tracked.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Turns the guard on (constructor, last step).
pub fn enable() {
    OUTBOUND.store(policy().outbound.is_some(), Release);
    ENABLED.store(true, Release);
}

/// True when STALLGUARD_OUTBOUND is set: only then does the connect hook do anything.
#[inline(always)]
pub fn outbound_enabled() -> bool {
    OUTBOUND.load(Relaxed)
}

/// The policy in force (defaults until the constructor ran).
pub fn policy() -> &'static Policy {
    POLICY.get_or_init(Policy::default)
}

/// Parses the environment. Returns whether the guard may be enabled.
pub fn load() -> bool {
    let vars = std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    let (policy, errors) = parse_env(vars);
    let on_error = policy.on_error;
    for e in &errors {
        log::to_stderr(&e.to_string());
    }
    if !errors.is_empty() {
        match on_error {
            OnError::Exit => {
                log::to_stderr(
                    "stallguard: refusing to start with an invalid policy (set STALLGUARD_ON_ERROR=warn to run unguarded instead)",
                );
                sys::exit_now(2);
            }
            OnError::Warn => {
                log::to_stderr(
                    "stallguard: invalid policy: running UNGUARDED (STALLGUARD_ON_ERROR=warn)",
                );
                return false;
            }
        }
    }
    let log_file = policy.log_file.clone();
    log::set_level(policy.log_level);
    clock::set_tick_ms(policy.tick_ms);
    let _ = POLICY.set(policy);
    if let Err(why) = log::open(log_file.as_deref()) {
        let error = stallguard_policy::log_file_error(&log_file.unwrap_or_default(), &why);
        log::to_stderr(&error.to_string());
        if on_error == OnError::Exit {
            log::to_stderr(stallguard_policy::LOG_FILE_REFUSAL);
            sys::exit_now(2);
        }
        log::to_stderr("stallguard: running UNGUARDED (STALLGUARD_ON_ERROR=warn)");
        return false;
    }
    true
}
