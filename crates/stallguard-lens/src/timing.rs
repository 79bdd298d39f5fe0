//! `mod_reqtimeout` arithmetic for the client's stages.

use crate::Stage;

/// One stage's timer, as Apache `mod_reqtimeout` (`header=20-40,MinRate=500`): once the
/// stage starts the client has `timeout_ms`; every byte received in the stage extends that by
/// 1/`min_rate` s, never past `max_ms` after the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageTimer {
    pub timeout_ms: u64,
    /// No extension past this (`u64::MAX`: no maximum, Apache's `body=20,MinRate=500`).
    /// Values below `timeout_ms` count as `timeout_ms`.
    pub max_ms: u64,
    /// Bytes per second; 0 means no extension.
    pub min_rate: u64,
}

impl StageTimer {
    /// Apache's default `header=20-40,MinRate=500`.
    pub const APACHE_HEADER: StageTimer = StageTimer {
        timeout_ms: 20_000,
        max_ms: 40_000,
        min_rate: 500,
    };
    /// Apache's default `body=20,MinRate=500` (no maximum).
    pub const APACHE_BODY: StageTimer = StageTimer {
        timeout_ms: 20_000,
        max_ms: u64::MAX,
        min_rate: 500,
    };

    /// Time allowed after the stage start, having received `bytes` in the stage.
    pub fn allowed_ms(&self, bytes: u64) -> u64 {
        let earned = bytes
            .saturating_mul(1000)
            .checked_div(self.min_rate)
            .unwrap_or(0);
        self.timeout_ms
            .saturating_add(earned)
            .min(self.max_ms.max(self.timeout_ms))
    }

    /// Absolute deadline (ms) of a stage that started at `start_ms`.
    pub fn deadline(&self, start_ms: u64, bytes: u64) -> u64 {
        start_ms.saturating_add(self.allowed_ms(bytes))
    }
}

/// The deadline of the client's current stage: `Headers` by `header`, `Body` by `body`
/// (`None` = that timer is off). `None` for every other stage: the server has the turn, or
/// the lens does not know and call patterns decide (`Detect`, `Off`), or only idle /
/// write-stall apply (`Response`, `Idle`, `Tunnel`).
///
/// `stage_start_ms` is when the stage was first seen (the caller stamps it when the stage
/// reported by the lens changes) and `stage_bytes` the bytes read since then.
pub fn stage_deadline(
    stage: Stage,
    header: Option<StageTimer>,
    body: Option<StageTimer>,
    stage_start_ms: u64,
    stage_bytes: u64,
) -> Option<u64> {
    let timer = match stage {
        Stage::Headers => header,
        Stage::Body => body,
        _ => None,
    };
    timer.map(|t| t.deadline(stage_start_ms, stage_bytes))
}
