//! Named points where a test makes the gateway die as if killed (`SIGKILL`: no clean-up, no
//! answer), to prove that what the cluster records survives a crash at that very step: the
//! two-phase push's steps, on the sending and on the receiving side.
//!
//! `LUASTRIP_FAILPOINTS=volumes.push.cut-over,…` names the points; the process aborts when it
//! reaches one. Unset (always, outside tests), a point costs one load of a flag. A crash is all
//! a failpoint can cause, and whoever sets the gateway's environment can kill it anyway.

use std::sync::OnceLock;

/// The points named in the environment, read once.
fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("LUASTRIP_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Die here, at once, if the point `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        tracing::error!(
            failpoint = name,
            "failpoint reached: aborting (LUASTRIP_FAILPOINTS)"
        );
        std::process::abort();
    }
}
