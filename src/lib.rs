//! luastrip: a drop-in `docker.sock`. A gateway listens on a Unix socket in front of the Docker
//! daemon, forwards the Docker Engine API faithfully — streams, hijacked attach/exec sessions,
//! every path spelling — and hands each call to hooks (Lua route scripts, Powerstrip adapters).
//!
//! # Layout
//!
//! The core — what every call goes through:
//!
//! * [`serve`] — the one assembly point: [`serve::run`] turns a [`serve::Config`] into a running
//!   gateway (scripts, hook layers, helpers that build themselves, background services,
//!   sockets) and serves until shutdown; its `checks` are the start-up refusals, its `listen`
//!   the acceptor, the workers and the connection driver.
//! * [`socket`] — Unix sockets that appear only when ready (private directory, mode and group,
//!   then renamed into place), stale ones replaced, live ones refused; or the one systemd
//!   passes (socket activation), and readiness told to systemd (`NOTIFY_SOCKET`).
//! * [`call`] — the life of one call as named phases: accept → match+pre → upstream → post →
//!   reply → journal. The one place that forwards; extensions plug in via [`call::Hooks`].
//! * [`route`] — path normalisation, queries and JSON bodies checked as dockerd reads them, the
//!   route-kind table (which bodies and answers are streams), and `"METHOD /path"` patterns.
//! * [`upstream`] — pooled HTTP/1 connections to the daemon's Unix socket.
//! * [`hijack`] — `101 UPGRADED` and old-style `200` raw-stream tunnels with half-close.
//! * [`tls`] — rustls configurations from PEM files, for TCP listeners (`--listen tcp://…`) and
//!   a daemon reached over TCP.
//! * [`body`] — the body type every layer passes around.
//! * [`image_ref`] — image references normalised as Docker reads them (`busybox` is
//!   `docker.io/library/busybox:latest`), for `docker.image_ref` and policies.
//! * [`stream`] — the byte stream of every connection, accepted or to the daemon: Unix, TCP or
//!   TLS.
//! * [`events`] — following the daemon's `/events` (reopened with `since=` after a break) for the
//!   background services that must see what happens on the daemon directly, and dockerd's event
//!   filters.
//! * [`journal`] — call records (cancelled ones too) in a byte-capped ring, handed to observers
//!   (metrics) and broadcast to watchers;
//!   what the hooks changed and its line-by-line diff; recordings to NDJSON files with secrets
//!   redacted (`--record`, `record start`, `--journal` across restarts).
//! * [`error`] — the one error type, recording its source, and its Docker JSON form.
//! * [`failpoint`] — named steps where a test makes the process die as if killed, or pause
//!   (`LUASTRIP_FAILPOINTS`), to test what survives a crash or a call in mid-step.
//!
//! The extensions — they hang off the core's phases:
//!
//! * [`lua`] — the route-script engine: per-worker VMs, generations and reload, limits that
//!   scripts cannot escape (budget, memory, bounded patterns, read-only built-ins), the `req`/`res`
//!   tables, one module per Lua namespace (`route`, `json`, `log`, `store`, `docker`, `http`,
//!   `powerstrip`, `zfs`, `overlay`) wired in one list. It implements [`call::Hooks`].
//! * [`powerstrip`] — the Powerstrip protocol v1 client, `adapters.yml`, and the addresses of
//!   adapter containers.
//! * [`outbound`] — pooled HTTP to services other than the daemon (`http.request`, adapters,
//!   replays, the REPL).
//! * [`control`] — the control socket (HTTP/JSON): calls, tail, filters, routes, reload, eval,
//!   intercept (a hook layer), replay, record, metrics; and its client side for the REPL and the
//!   console, which also reads recorded files.
//! * [`repl`] — `luastrip repl`, the rustyline front end of the control socket.
//! * [`testing`] — `luastrip test`: scripts run in an in-process gateway against a recording
//!   (the daemon's answers taken from it), reported per call and compared with a saved
//!   expectation; `*_test.lua` cases with the `luastrip.test` assertions.
//! * [`scaffold`] — `luastrip init DIR`: a scripts directory to start from, with the type stubs
//!   and `.luarc.json` an editor needs, a `*_test.lua` and a README.
//! * [`console`] — `luastrip console`, the full-screen (ratatui) front end of the control socket:
//!   live flows, detail tabs with the diff, intercept queue, edit, replay, curl export.
//! * [`volumes`] — the volume helper, built from its flags by [`volumes::Config::open`]: named volumes behind the `VolumeBackend` trait (ZFS,
//!   driven by argv), checked names, ownership with a fencing epoch (a copy that is not the
//!   volume is read-only), the two-phase push recorded step by step and settled at start, standby
//!   replicas sent on a schedule, the
//!   `GET /luastrip/volumes` hook layer, and the swarm guard (services on its volumes update
//!   stop-first). Its state lives outside the Lua VMs; `zfs.*` drives it.
//! * [`plugin`] — Docker's plugin protocol, served for the helpers on
//!   `/run/docker/plugins/NAME.sock` so that dockerd calls them itself: the volume driver and
//!   the network and IPAM drivers.
//! * [`overlay`] — overlay IPs, built from their flags by [`overlay::Config::open`]: the helper scripts drive (`overlay.*`, `WEAVE_CIDR`), address
//!   allocation by owner in the cluster store, the bridge and veth pairs behind the network
//!   driver (`ip` by argv, checked names), the guard layer that keeps clients from reaching
//!   around the allocator (`--ip`, owner labels, overlapping subnets), and the `/events`
//!   follower that releases the addresses of destroyed containers and reconciles after every
//!   reconnect; VXLAN peers that follow the cluster's registered hosts; addresses bound to a
//!   container's identity that move with it between hosts, and VXLAN entries that follow them.
//! * [`cluster`] — what several hosts must agree on (volume owners, overlay addresses), behind
//!   one interface with create-if-absent and swap-if-revision, leases and change waits;
//!   [`cluster::open`] opens the store the flags name (the local JSON file, or etcd); the hosts'
//!   registrations, `luastrip cluster hosts` and `forget`.
//!
//! The core imports none of the extensions, except that [`serve::run`] assembles them; arrows
//! point inward. The phase chart is in `docs/phases.md`, the design in `docs/architecture.md`.

pub mod body;
pub mod call;
pub mod cluster;
pub mod console;
pub mod control;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod hijack;
pub mod image_ref;
pub mod journal;
pub mod lua;
pub mod outbound;
pub mod overlay;
pub mod plugin;
pub mod powerstrip;
pub mod repl;
pub mod route;
pub mod scaffold;
pub mod serve;
pub mod socket;
pub mod stream;
pub mod testing;
pub mod tls;
pub mod upstream;
pub mod volumes;

pub use error::Error;
