//! luastrip: a drop-in `docker.sock`. A gateway listens on a Unix socket in front of the Docker
//! daemon, forwards the Docker Engine API faithfully — streams, hijacked attach/exec sessions,
//! every path spelling — and hands each call to hooks (Lua route scripts, Powerstrip adapters).
//!
//! # Layout
//!
//! * [`serve`] — the listen socket (ready-only appearance, stale-socket handling, permissions),
//!   one task per client connection, clean shutdown. Entry point: [`serve::run`].
//! * [`call`] — the life of one call as named phases: accept → match+pre → upstream → post →
//!   reply → journal. The one place that forwards; extensions plug in via [`call::Hooks`].
//! * [`control`] — the control socket (HTTP/JSON): recent calls, live tail, routes, reload.
//! * [`upstream`] — pooled HTTP/1 connections to the daemon's Unix socket.
//! * [`hijack`] — `101 UPGRADED` and old-style `200` raw-stream tunnels with half-close.
//! * [`outbound`] — HTTP requests luastrip makes to other services (`http.request`, adapters).
//! * [`powerstrip`] — the Powerstrip protocol v1 client for external adapters.
//! * [`repl`] — `luastrip repl`, the rustyline front end of the control socket.
//! * [`route`] — path normalisation, `"METHOD /path"` patterns and the route table.
//! * [`journal`] — call records in a ring buffer, broadcast to watchers.
//! * [`lua`] — the route-script engine: per-thread VMs, limits, reload; one file per Lua
//!   namespace (`route`, `json`, `log`). It implements [`call::Hooks`].
//! * [`error`] — the one error type, recording its source, and its Docker JSON form.
//!
//! The core (`call`, `upstream`, `hijack`, `route`) imports none of the extensions; they hang off
//! its phases. The phase chart is in `docs/phases.md`.

pub mod body;
pub mod call;
pub mod control;
pub mod error;
pub mod hijack;
pub mod journal;
pub mod lua;
pub mod outbound;
pub mod powerstrip;
pub mod repl;
pub mod route;
pub mod serve;
pub mod upstream;

pub use error::Error;
