//! Named points where a test makes the gateway die as if killed (`SIGKILL`: no clean-up, no
//! answer), to prove that what the cluster records survives a crash at that very step: the
//! two-phase push's steps, on the sending and on the receiving side. A point may instead pause
//! for a while, to hold a step open while a test makes its calls in the middle of it.
//!
//! `LUASTRIP_FAILPOINTS=volumes.push.cut-over,volumes.receive.landing=sleep:1500,…` names the
//! points: a bare name aborts the process there, `NAME=sleep:MS` pauses there for MS
//! milliseconds (at a point reached through [`pause`]). Unset (always, outside tests), a point
//! costs one load of a flag. A crash or a delay is all a failpoint can cause, and whoever sets
//! the gateway's environment can kill or slow it anyway.

use std::sync::OnceLock;
use std::time::Duration;

/// The points named in the environment, read once: each with its pause (`None`: abort).
fn armed() -> &'static [(String, Option<Duration>)] {
    static ARMED: OnceLock<Vec<(String, Option<Duration>)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("LUASTRIP_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once("=sleep:") {
                Some((name, ms)) => (
                    name.to_string(),
                    Some(Duration::from_millis(ms.parse().unwrap_or(0))),
                ),
                None => (s.to_string(), None),
            })
            .collect()
    })
}

/// Die here, at once, if the point `name` is armed.
pub fn hit(name: &str) {
    if armed()
        .iter()
        .any(|(a, pause)| a == name && pause.is_none())
    {
        tracing::error!(
            failpoint = name,
            "failpoint reached: aborting (LUASTRIP_FAILPOINTS)"
        );
        std::process::abort();
    }
}

/// [`hit`], or pause here (without blocking other tasks) if `name` is armed with a sleep.
pub async fn pause(name: &str) {
    hit(name);
    if let Some((_, Some(pause))) = armed().iter().find(|(a, _)| a == name) {
        tracing::warn!(
            failpoint = name,
            ms = pause.as_millis() as u64,
            "failpoint reached: pausing (LUASTRIP_FAILPOINTS)"
        );
        tokio::time::sleep(*pause).await;
    }
}
