//! Lua route scripts: the engine behind `luastrip serve --scripts PATH`.
//!
//! The engine implements [`crate::call::Hooks`]: in the pre phase it runs the matching
//! `route.pre` hooks and `route.endpoint` handlers, in the post phase the `route.post` hooks.
//! Scripts see the call as a `req` table and the answer as a `res` table (`docs/lua-api.md`);
//! what they change is applied back to the call.
//!
//! # Rooms
//!
//! * [`engine`] — the VMs (one per worker, plus one for the control socket's `eval`), script
//!   generations and reload: a new generation is built off the workers, reloads are serialised,
//!   and it replaces the old one only once every VM of it has loaded.
//! * [`scripts`] — reading the script files and `adapters.yml`.
//! * [`sandbox`] — what scripts cannot reach, and `require`.
//! * [`hooks`] — the [`crate::call::Hooks`] implementation: matching, running, failing closed.
//! * [`message`] — the `req` / `res` tables: lazy fields (headers, query, the request body) and
//!   writing a script's edits back to the call.
//! * [`errors`] — Lua errors to [`crate::Error`], with `file:line`.
//! * [`exchange`] — what `docker.*` and `http.*` share: an options table to a request, the
//!   answer to a result table, a bounded wait not charged to the hook.
//! * [`helper_fn`] — what `zfs.*` and `overlay.*` share: async functions, waits not charged, a
//!   clear error naming the flag when the helper is off.
//! * [`reload`] — reloading on file changes (debounced), on `SIGHUP` and on the REPL's `reload`.
//! * [`budget`] — the time budget of each hook, which `pcall` and coroutines cannot escape.
//! * [`patterns`] — `string.find`/`match`/`gmatch`/`gsub` with bounded work.
//! * [`lint`] — what `luastrip check` finds without running a script: reply tables with keys
//!   the gateway would ignore.
//! * [`on_event`] — the background task that follows `/events` while scripts have
//!   `docker.on_event` handlers, and runs them once per event.
//! * One module per Lua namespace, each with the same [`Register`] signature, all wired in
//!   [`NAMESPACES`]: [`route`], [`json`], [`log`], [`store`], [`docker`], [`http`],
//!   [`powerstrip`], [`zfs`], [`overlay`].
//!
//! # Limits
//!
//! Each hook runs under a wall-clock budget checked every 1000 Lua instructions (and before every
//! built-in whose one call can be long), and each VM under a memory cap; a hook is preempted
//! after 1 ms so that the other calls on its worker run. A hook that throws or exceeds a limit fails the call closed: a 500 Docker JSON
//! error naming `file:line` and the reason, and nothing reaches the daemon.
//!
//! Errors raised by luastrip's own Lua functions (a failing adapter, a budget overrun, a request
//! body over the limit) cross the Lua boundary typed, as a [`crate::Error`] inside
//! `mlua::Error::external`, and come out as that same error.

pub mod budget;
pub mod docker;
pub mod engine;
pub mod errors;
pub mod exchange;
pub mod helper_fn;
pub mod hooks;
pub mod http;
pub mod json;
pub mod lint;
pub mod log;
pub mod message;
pub mod on_event;
pub mod overlay;
pub mod patterns;
pub mod powerstrip;
pub mod reload;
pub mod route;
pub mod sandbox;
pub mod scripts;
pub mod store;
pub mod zfs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlua::Lua;

pub use engine::Engine;
pub use scripts::Scripts;

use crate::upstream::UpstreamAddr;

/// Limits applied to scripts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one hook call.
    pub hook_time: Duration,
    /// Memory cap of one VM.
    pub vm_memory: usize,
    /// Largest request or response body a hook may read.
    pub body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hook_time: Duration::from_millis(100),
            vm_memory: 64 << 20,
            body: 16 << 20,
        }
    }
}

/// What every VM's namespaces are connected to. It lives outside the VMs, which are rebuilt per
/// worker and on every reload; helpers keep their state here.
#[derive(Clone)]
pub struct Services {
    /// The daemon for `docker.*`; `None` for `luastrip check`.
    pub upstream: Option<UpstreamAddr>,
    /// The `store` shared by all VMs.
    pub store: Arc<store::Store>,
    /// `--powerstrip-config`: Powerstrip's `adapters.yml`, re-read on every reload.
    pub adapters_file: Option<PathBuf>,
    /// Budgets and caps.
    pub limits: Limits,
    /// The volume helper (`zfs.*`), when a `--volume-backend` is configured.
    pub volumes: Option<Arc<crate::volumes::Volumes>>,
    /// The overlay helper (`overlay.*`), when a `--network-plugin` is configured.
    pub overlay: Option<Arc<crate::overlay::Overlay>>,
    /// Adapter containers' addresses, kept for every VM while the daemon's events are followed.
    pub adapter_addresses: Arc<crate::powerstrip::Addresses>,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            upstream: None,
            store: Arc::new(store::Store::memory(store::DEFAULT_CAP)),
            adapters_file: None,
            limits: Limits::default(),
            volumes: None,
            overlay: None,
            adapter_addresses: Arc::default(),
        }
    }
}

/// Installs one Lua namespace (a global table) in a VM.
pub type Register = fn(&Lua, &Services) -> mlua::Result<()>;

/// Every namespace scripts see, in the order they are installed.
pub const NAMESPACES: &[(&str, Register)] = &[
    ("json", json::register),
    ("log", log::register),
    ("route", route::register),
    ("store", store::register),
    ("docker", docker::register),
    ("http", http::register),
    ("powerstrip", powerstrip::register),
    ("zfs", zfs::register),
    ("overlay", overlay::register),
];
