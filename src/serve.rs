//! The one assembly point and the listening side.
//!
//! [`run`] turns a [`Config`] into a running gateway: it loads the scripts and adapters, builds
//! the [`Gateway`] with its hook layers, starts the background services (reload on `SIGHUP` and
//! on file changes, the control socket, `--repl`) in one tracked set with one shutdown, binds the
//! sockets (the listen socket last, so that it appears only when everything behind it is ready)
//! and serves until the shutdown future resolves. `main.rs` and the tests call it.
//!
//! Sockets are bound by [`crate::socket::bind`], so they appear only when ready. [`run`] accepts
//! connections until the shutdown future resolves, then removes the socket, lets in-flight calls
//! finish (up to [`SHUTDOWN_GRACE`]) and returns.
//!
//! # Threads
//!
//! luastrip runs thread-per-core: `threads` workers, each a single-threaded Tokio runtime with its
//! own upstream pool ([`Worker`]) and Lua VM, on a thread of its own. One acceptor, on the
//! calling thread with the control socket and the other background services (never on a worker
//! that runs Lua), deals client connections to the workers round-robin; from then on a call, its
//! daemon connection and its tunnel all live on that worker's thread, so the hot path has no
//! cross-thread hand-off (only each new connection crosses once). Measured (see `bench/RESULTS.md`): on a 2-core machine a
//! work-stealing runtime spent 44 % of its samples in the kernel's wake-up and context-switch
//! paths and served 35k pass-through calls/s; thread-per-core serves about 50k.

use std::future::{poll_fn, Future};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::call::{self, Gateway, Worker};
use crate::control::{self, intercept::Intercept, Control};
use crate::hijack::{self, TunnelSlot};
use crate::lua::{store::Store, Engine, Limits, Services};
use crate::socket::{bind, BindError, ListenOptions, Listener};
use crate::stream::Stream;
use crate::upstream::{Upstream, UpstreamAddr};

/// How long in-flight calls (and open streams) may run on after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `luastrip serve` is told (each field is a flag with a `LUASTRIP_*` twin).
#[derive(Debug, Clone)]
pub struct Config {
    /// The Unix socket clients connect to (always served; the control socket goes beside it).
    pub listen: PathBuf,
    /// TCP addresses served too (`--listen tcp://…`), for tools that cannot use a socket.
    pub tcp: Vec<TcpListen>,
    /// The daemon.
    pub upstream: UpstreamAddr,
    /// Permission bits of the listen socket.
    pub socket_mode: u32,
    /// Group owning the listen socket (name or gid).
    pub socket_group: Option<String>,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Route scripts: a file or a directory.
    pub scripts: Option<PathBuf>,
    /// Powerstrip's `adapters.yml`.
    pub powerstrip_config: Option<PathBuf>,
    /// The control socket; `None`: the listen path with a `.ctl` extension.
    pub control: Option<PathBuf>,
    /// Where the scripts' `store` persists.
    pub state: Option<PathBuf>,
    /// Most bytes the `store` may hold.
    pub store_limit: usize,
    /// Script limits.
    pub limits: Limits,
    /// How long a client may take to send a request head (`None`: forever).
    pub header_timeout: Option<Duration>,
    /// A worker whose event loop has not run for this long is stuck; `None`: twice the hook
    /// budget plus a second.
    pub stuck_after: Option<Duration>,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// How long the daemon may take to answer a call that is not a stream (`None`: forever).
    pub upstream_timeout: Option<Duration>,
    /// Run the REPL on this terminal too; quitting it stops the gateway.
    pub repl: bool,
    /// The volume helper, if configured (`--volume-backend`).
    pub volumes: Option<VolumeConfig>,
    /// The overlay helper's network driver, if configured (`--network-plugin`).
    pub overlay: Option<OverlayConfig>,
    /// `--plugin-dir`: where dockerd looks for plugin sockets.
    pub plugin_dir: PathBuf,
    /// `--cluster-file`: the local cluster store (volume owners, overlay addresses).
    pub cluster_file: PathBuf,
    /// `--host-name`: this gateway's name in the cluster.
    pub host_name: String,
    /// `--journal`: keep the journal in this file across restarts.
    pub journal_file: Option<PathBuf>,
    /// `--record`: write every call to this file (NDJSON) from the start.
    pub record: Option<PathBuf>,
    /// `--redact-env`: environment names whose values recordings leave out.
    pub redact_env: String,
}

/// The control socket beside the listen socket `listen`: its extension replaced by `.ctl`
/// (`/run/luastrip.sock` → `/run/luastrip.ctl`), for `serve` and `repl` alike.
pub fn control_path_for(listen: &std::path::Path) -> PathBuf {
    listen.with_extension("ctl")
}

/// A TCP address the Docker API is served on, with TLS when configured.
#[derive(Debug, Clone)]
pub struct TcpListen {
    pub addr: std::net::SocketAddr,
    /// The server side of TLS (`--tls-cert`, `--tls-key`, `--tls-ca`); `None`: plain, which
    /// [`run`] allows on loopback addresses only.
    pub tls: Option<crate::tls::ServerTls>,
}

/// How the overlay helper is set up.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// `--network-plugin`: serve the network driver under this name.
    pub plugin: String,
    /// `--overlay-bridge`: the bridge every endpoint joins.
    pub bridge: String,
    /// `--overlay-cidr`: the default network's subnet, and that of networks created without one.
    pub cidr: String,
    /// `--overlay-grace-s`: how long a released address is held back from new containers.
    pub grace: Duration,
    /// `--overlay-network`: the default overlay network's name (others are `NAME-10.2.1.0-24`).
    pub network: String,
    /// `--overlay-range`: the part of `cidr` this host picks from.
    pub range: Option<String>,
    /// `--overlay-peer`: other hosts, reached by VXLAN from the overlay bridge.
    pub peers: Vec<std::net::Ipv4Addr>,
    /// `--overlay-vni`: the VXLAN network identifier.
    pub vni: u32,
}

/// How the volume helper is set up.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// `--volume-backend`: `zfs`.
    pub backend: String,
    /// `--zfs-pool`.
    pub zfs_pool: Option<String>,
    /// `--zfs-root`: volumes are `POOL/ROOT/NAME`.
    pub zfs_root: String,
    /// `--zfs-timeout-s`: the bound on one `zfs` command.
    pub zfs_timeout: Duration,
    /// `--volume-plugin`: also serve the Docker volume plugin protocol under this name.
    pub plugin: Option<String>,
    /// `--peer NAME=http://HOST:PORT`: other gateways volumes move to and from.
    pub peers: Vec<String>,
    /// `--peer-listen HOST:PORT`: serve the peer API here.
    pub peer_listen: Option<String>,
    /// `--peer-token-file`: the token peers share.
    pub peer_token_file: Option<PathBuf>,
    /// `--peer-tls-cert`, `--peer-tls-key`, `--peer-tls-ca`: mutual TLS between peers.
    pub peer_tls: crate::tls::TlsFiles,
}

impl Config {
    /// A pass-through gateway from `listen` to `upstream`, everything else at its default.
    pub fn new(listen: impl Into<PathBuf>, upstream: UpstreamAddr) -> Config {
        Config {
            listen: listen.into(),
            tcp: Vec::new(),
            upstream,
            socket_mode: 0o660,
            socket_group: None,
            threads: 0,
            scripts: None,
            powerstrip_config: None,
            control: None,
            state: None,
            store_limit: crate::lua::store::DEFAULT_CAP,
            limits: Limits::default(),
            header_timeout: Some(DEFAULT_HEADER_TIMEOUT),
            stuck_after: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upstream_timeout: Some(DEFAULT_UPSTREAM_TIMEOUT),
            repl: false,
            volumes: None,
            overlay: None,
            plugin_dir: PathBuf::from("/run/docker/plugins"),
            cluster_file: PathBuf::from("/var/lib/luastrip/cluster.json"),
            host_name: "luastrip".into(),
            journal_file: None,
            record: None,
            redact_env: crate::journal::record::DEFAULT_REDACT_ENV.into(),
        }
    }

    /// The control socket path.
    pub fn control_path(&self) -> PathBuf {
        self.control
            .clone()
            .unwrap_or_else(|| control_path_for(&self.listen))
    }

    fn workers(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// `--journal` and `--record`: the journal of the last run back in the ring (ids go on after
/// it), and the files every call is written to. Returns the redactor recordings use.
fn record_files(
    config: &Config,
    gateway: &Gateway,
) -> Result<crate::journal::record::Redactor, StartError> {
    use crate::journal::record::{self, Recorder, Redactor};
    let redactor = Redactor::new(&config.redact_env)
        .map_err(|e| StartError::Record(format!("--redact-env: {e}")))?;
    if let Some(file) = &config.journal_file {
        let mut earlier = Vec::new();
        for f in [record::rotated(file), file.clone()] {
            match record::read(&f, true) {
                Ok(calls) => earlier.extend(calls),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StartError::Record(format!(
                        "--journal {}: {e}",
                        f.display()
                    )))
                }
            }
        }
        if let Some(last) = earlier.iter().map(|c| c.id).max() {
            gateway.continue_ids_after(last);
        }
        info!(file = %file.display(), calls = earlier.len(), "journal restored");
        gateway.journal.restore(earlier);
        // The file holds about what the ring does, twice over with its rotated half.
        let rotate_at = Some(crate::journal::DEFAULT_BYTE_CAP as u64);
        let recorder = Recorder::open(file, redactor.clone(), rotate_at)
            .map_err(|e| StartError::Record(format!("--journal {}: {e}", file.display())))?;
        gateway
            .journal
            .record_to(recorder, true)
            .map_err(StartError::Record)?;
    }
    if let Some(file) = &config.record {
        let recorder = Recorder::open(file, redactor.clone(), None)
            .map_err(|e| StartError::Record(format!("--record {}: {e}", file.display())))?;
        gateway
            .journal
            .record_to(recorder, false)
            .map_err(|e| StartError::Record(format!("--record: {e}")))?;
    }
    Ok(redactor)
}

/// A streamed answer marked [`call::CountStream`] is counted as it goes to the client; the
/// count goes to the recordings when it ends.
fn count_stream(
    gateway: &Arc<Gateway>,
    res: http::Response<crate::body::Body>,
) -> http::Response<
    http_body_util::Either<crate::body::Body, crate::body::Counted<crate::body::Body>>,
> {
    use http_body_util::Either;
    let Some(call::CountStream(id)) = res.extensions().get::<call::CountStream>().copied() else {
        return res.map(Either::Left);
    };
    let gateway = gateway.clone();
    res.map(|body| {
        Either::Right(crate::body::Counted::new(body, move |bytes| {
            gateway.journal.stream_ended(
                id,
                crate::journal::StreamBytes {
                    client_to_daemon: 0,
                    daemon_to_client: bytes,
                },
            )
        }))
    })
}

/// Client connections served at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long the daemon may take to answer a call that is not a stream, by default.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);

/// A client that has not sent its whole request head after this long is disconnected.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Background services (reloaders, the control socket, the events followers, the plugin servers
/// and the peer listener): one tracked set, told to stop together and awaited at shutdown.
pub struct Background {
    tasks: TaskTracker,
    stop: watch::Sender<bool>,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            tasks: TaskTracker::new(),
            stop: watch::channel(false).0,
        }
    }
}

impl Background {
    /// Start a service on the current runtime. `make` gets the stop signal (it turns true at
    /// shutdown) and returns the service's future.
    pub fn spawn<F>(&self, name: &'static str, make: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let fut = make(self.stop.subscribe());
        self.tasks.spawn(async move {
            fut.await;
            debug!(service = name, "background service ended");
        });
    }

    /// The stop signal services get (it turns true at shutdown).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Tell every service to stop and wait for them (at most [`SHUTDOWN_GRACE`]).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            warn!("background services still running after the grace period");
        }
    }
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "--upstream {upstream} is this gateway's own listen socket (or TCP address): it would \
         forward every call to itself (is DOCKER_HOST pointing at luastrip? pass --upstream unix:///var/run/docker.sock)"
    )]
    ForwardsToItself { upstream: String },
    #[error("{0}")]
    Exposed(String),
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("--control: {0}")]
    Control(BindError),
    #[error("{}", .0.detail())]
    Scripts(#[from] crate::Error),
    #[error("--state: {0}")]
    State(String),
    #[error("{0}")]
    Helper(String),
    #[error("{0}")]
    Record(String),
    #[error("{0}")]
    Tcp(String),
    #[error("cannot watch {path}: {reason}")]
    Watch { path: String, reason: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Assemble and serve the gateway described by `config` until `shutdown` resolves (or the
/// `--repl` quits). Meant for a current-thread runtime: it accepts connections and runs the
/// background services, while the workers get threads of their own.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    // A socket systemd passed is the listen socket, wherever --listen points; the control
    // socket goes beside it.
    let activated = crate::socket::from_systemd()?;
    if let Some(l) = &activated {
        if l.path() != config.listen {
            warn!(
                listen = %config.listen.display(),
                socket = %l.path().display(),
                "--listen differs from the socket systemd passed; serving on systemd's"
            );
            config.listen = l.path().to_path_buf();
        }
    }
    refuse_exposure(&config.upstream, &config.tcp)?;
    refuse_self_forwarding(&config.upstream, &config.listen, &config.tcp)?;
    let workers = config.workers();
    let background = Background::default();
    // Scripts and adapters load before the socket appears: a broken script never leaves a
    // socket behind, and the first client already gets the hooks.
    let mut gateway = Gateway::new(Upstream::new(config.upstream.clone()));
    gateway.header_timeout = config.header_timeout;
    gateway.max_connections = config.max_connections;
    gateway.upstream_timeout = config.upstream_timeout;
    raise_fd_limit();
    let redactor = record_files(&config, &gateway)?;
    gateway.stuck_after = config
        .stuck_after
        .unwrap_or(config.limits.hook_time * 2 + Duration::from_secs(1));
    // What the helpers must agree on, opened once for all of them.
    let cluster: Option<Arc<dyn crate::cluster::Cluster>> =
        if config.volumes.is_some() || config.overlay.is_some() {
            Some(open_cluster(&config.cluster_file)?)
        } else {
            None
        };
    let volumes = match (&config.volumes, &cluster) {
        (Some(v), Some(cluster)) => Some(Arc::new(
            volume_helper(v, cluster.clone(), &config.host_name, &config.upstream)
                .await?
                .with_events(gateway.journal.helper_events()),
        )),
        _ => None,
    };
    let overlay = match (&config.overlay, &cluster) {
        (Some(o), Some(cluster)) => {
            let overlay = Arc::new(
                overlay_helper(o, cluster.clone(), &config.host_name, &config.upstream)?
                    .with_events(gateway.journal.helper_events()),
            );
            // Peers as the flags say now, if the bridge is up already (else at its first use).
            if overlay.settings.vxlan.is_some()
                && crate::overlay::link::exists(&overlay.settings.bridge).await
            {
                overlay
                    .ensure_bridge(&overlay.settings.bridge)
                    .await
                    .map_err(|e| StartError::Helper(format!("--overlay-peer: {e}")))?;
            }
            let follower = overlay.clone();
            background.spawn("overlay events follower", move |stop| {
                crate::overlay::events::follow(follower, stop)
            });
            Some(overlay)
        }
        _ => None,
    };
    // The overlay's guard runs before the scripts: no client reaches around the allocator.
    if let Some(o) = &overlay {
        gateway = gateway.with_hooks(Arc::new(crate::overlay::guard::Guard(o.clone())));
    }
    let mut engine = None;
    if config.scripts.is_some() || config.powerstrip_config.is_some() {
        let store = match &config.state {
            Some(path) => Store::open(path, config.store_limit).map_err(StartError::State)?,
            None => Store::memory(config.store_limit),
        };
        let adapter_addresses = Arc::<crate::powerstrip::Addresses>::default();
        let services = Services {
            upstream: Some(config.upstream.clone()),
            store: Arc::new(store),
            adapters_file: config.powerstrip_config.clone(),
            limits: config.limits.clone(),
            volumes: volumes.clone(),
            overlay: overlay.clone(),
            adapter_addresses: adapter_addresses.clone(),
        };
        let loaded = Arc::new(Engine::load(config.scripts.as_deref(), workers, services)?);
        // A policy that loaded nothing must not pass for one.
        let routes = loaded.routes().len();
        match &config.scripts {
            Some(path) if routes == 0 => warn!(
                scripts = %path.display(),
                "the scripts register no routes: every call passes through unchecked"
            ),
            Some(path) => info!(scripts = %path.display(), routes, "scripts loaded"),
            None => {}
        }
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let on_hup = loaded.clone();
        background.spawn("reload on SIGHUP", move |stop| {
            crate::lua::reload::on_sighup(on_hup, hup, stop)
        });
        for path in config.scripts.iter().chain(config.powerstrip_config.iter()) {
            let watching = crate::lua::reload::watch(loaded.clone(), path, background.stopping())
                .map_err(|e| StartError::Watch {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            background.spawn("reload on file change", move |_| watching);
        }
        let on_events = loaded.clone();
        let upstream = Upstream::new(config.upstream.clone());
        background.spawn("docker.on_event follower", move |stop| {
            crate::lua::on_event::follow(on_events, upstream, stop)
        });
        // Adapter containers' addresses are kept while this follower hears of no change. It
        // starts when the first is looked up.
        let upstream = Upstream::new(config.upstream.clone());
        background.spawn("adapter containers follower", move |mut stop| async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::pin!(stopped);
            tokio::select! {
                _ = adapter_addresses.first_wanted() => {}
                _ = &mut stopped => return,
            }
            let follower = Arc::new(crate::powerstrip::AddressFollower(adapter_addresses));
            crate::events::follow(upstream, follower, stopped).await
        });
        gateway = gateway.with_hooks(loaded.clone());
        engine = Some(loaded);
    }
    if let Some(v) = &volumes {
        gateway = gateway.with_hooks(Arc::new(crate::volumes::endpoint::VolumesEndpoint(
            v.clone(),
        )));
    }
    // Plugin drivers by plugin name: drivers given the same name share one socket.
    let mut plugins: std::collections::BTreeMap<String, Vec<Arc<dyn crate::plugin::Driver>>> =
        Default::default();
    if let (Some(overlay), Some(o)) = (&overlay, &config.overlay) {
        let drivers = plugins.entry(o.plugin.clone()).or_default();
        drivers.push(Arc::new(crate::plugin::network::NetworkDriver::new(
            overlay.clone(),
        )));
        drivers.push(Arc::new(crate::plugin::network::IpamDriver::new(
            overlay.clone(),
        )));
    }
    if let (Some(v), Some(cfg)) = (&volumes, &config.volumes) {
        if let Some(name) = &cfg.plugin {
            plugins.entry(name.clone()).or_default().push(Arc::new(
                crate::plugin::volume::VolumeDriver::new(v.clone()),
            ));
        }
    }
    for (name, drivers) in plugins {
        serve_plugin(&background, &name, &config.plugin_dir, drivers)?;
    }
    if let (Some(v), Some(cfg)) = (&volumes, &config.volumes) {
        if let Some(addr) = &cfg.peer_listen {
            let tls = match peer_tls(&cfg.peer_tls)? {
                true => Some(tokio_rustls::TlsAcceptor::from(
                    crate::tls::server_config(&cfg.peer_tls, "--peer-tls")
                        .map_err(StartError::Helper)?
                        .config,
                )),
                false => None,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Helper(format!("--peer-listen {addr}: {e}")))?;
            info!(listen = %addr, tls = tls.is_some(), "serving the peer API");
            let v = v.clone();
            background.spawn("peer listener", move |stop| {
                crate::volumes::peers::serve(listener, tls, v, stop)
            });
        }
    }
    // Intercept runs after the scripts: a held call shows what would be sent.
    let intercept = Arc::new(Intercept::default());
    let gateway = Arc::new(gateway.with_hooks(intercept.clone()));

    let control_path = config.control_path();
    let control_listener = bind(&ListenOptions {
        path: control_path.clone(),
        mode: 0o600,
        group: None,
    })
    .map_err(StartError::Control)?;
    let control = Arc::new(Control {
        stats: control::stats::Stats::observe(&gateway.journal),
        gateway: gateway.clone(),
        engine,
        intercept,
        listen: config.listen.clone(),
        redactor,
    });
    background.spawn("control socket", move |stop| async move {
        if let Err(e) = control::serve(control_listener, control, stop).await {
            warn!(error = %e, "the control socket failed");
        }
    });
    let mut tcp = Vec::new();
    for t in &config.tcp {
        let bound = std::net::TcpListener::bind(t.addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| StartError::Tcp(format!("--listen tcp://{}: {e}", t.addr)))?;
        info!(listen = %t.addr, tls = t.tls.is_some(), "serving the Docker API on TCP");
        tcp.push((
            bound,
            t.tls
                .as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone())),
        ));
    }
    // Last: the listen socket appears once everything behind it is ready (one systemd passed
    // exists already; clients that connected early wait in its backlog until now).
    let listener = match activated {
        Some(l) => l,
        None => bind(&ListenOptions {
            path: config.listen.clone(),
            mode: config.socket_mode,
            group: config.socket_group.clone(),
        })?,
    };
    refuse_self_forwarding(&config.upstream, listener.path(), &config.tcp)?;
    let upstream = gateway.upstream.clone();
    background.spawn("daemon check", move |_| async move {
        warn_unless_daemon_answers(&upstream).await
    });
    let idle = gateway.clone();
    background.spawn("memory trim", move |stop| {
        give_back_memory_when_idle(idle, stop)
    });

    let (quit_tx, mut quit_rx) = watch::channel(false);
    if config.repl {
        // The REPL blocks on the terminal: its own thread, talking to our control socket.
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            if let Err(e) = crate::repl::run(
                control::client::Flows::Live(control_path),
                None,
                &mut stdout.lock(),
            ) {
                tracing::error!(error = %e, "the REPL failed");
            }
            let _ = quit_tx.send(true);
        });
    }
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = quit_rx.wait_for(|q| *q) => {}
        }
    };
    let served = run_gateway(listener, tcp, gateway, workers, stop).await;
    background.shutdown().await;
    served.map_err(StartError::Io)
}

/// The overlay helper described by `config` (its flags checked).
fn overlay_helper(
    config: &OverlayConfig,
    cluster: Arc<dyn crate::cluster::Cluster>,
    host_name: &str,
    upstream: &UpstreamAddr,
) -> Result<crate::overlay::Overlay, StartError> {
    crate::overlay::link::check_name("--overlay-bridge", &config.bridge)
        .map_err(|e| StartError::Helper(e.to_string()))?;
    let cidr = crate::overlay::ipam::Cidr::parse(&config.cidr)
        .map_err(|e| StartError::Helper(format!("--overlay-cidr: {e}")))?;
    crate::volumes::name::VolumeName::parse(&config.plugin)
        .map_err(|e| StartError::Helper(format!("--network-plugin: {e}")))?;
    crate::volumes::name::VolumeName::parse(&config.network)
        .map_err(|e| StartError::Helper(format!("--overlay-network: {e}")))?;
    let range = match &config.range {
        None => None,
        Some(r) => {
            let r = crate::overlay::ipam::Cidr::parse(r)
                .map_err(|e| StartError::Helper(format!("--overlay-range: {e}")))?;
            if r.prefix < cidr.prefix || !r.overlaps(&cidr) {
                return Err(StartError::Helper(format!(
                    "--overlay-range {r} is not inside --overlay-cidr {cidr}"
                )));
            }
            Some(r)
        }
    };
    let vxlan = (!config.peers.is_empty()).then(|| crate::overlay::Vxlan {
        vni: config.vni,
        peers: config.peers.clone(),
    });
    let settings = crate::overlay::Settings {
        plugin: config.plugin.clone(),
        bridge: config.bridge.clone(),
        cidr,
        network: config.network.clone(),
        range,
        vxlan,
    };
    Ok(crate::overlay::Overlay::new(
        cluster,
        host_name.to_string(),
        config.grace,
        settings,
        Upstream::new(upstream.clone()),
    ))
}

/// Serve `drivers` as the Docker plugin `name` on `dir/name.sock`, in the background. The socket
/// (owner-only: dockerd runs as root) replaces a stale one and is removed at shutdown.
fn serve_plugin(
    background: &Background,
    name: &str,
    dir: &Path,
    drivers: Vec<Arc<dyn crate::plugin::Driver>>,
) -> Result<(), StartError> {
    crate::volumes::name::VolumeName::parse(name)
        .map_err(|e| StartError::Helper(format!("plugin name: {e}")))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| StartError::Helper(format!("--plugin-dir {}: {e}", dir.display())))?;
    let listener = bind(&ListenOptions {
        path: dir.join(format!("{name}.sock")),
        mode: 0o600,
        group: None,
    })?;
    let accept = UnixListener::from_std(listener.std_listener().try_clone()?)?;
    info!(plugin = name, socket = %listener.path().display(), "serving the Docker plugin protocol");
    background.spawn("plugin socket", move |stop| async move {
        crate::plugin::serve(accept, drivers, stop).await;
        drop(listener);
    });
    Ok(())
}

/// The local cluster store at `file` (its directory made if missing).
fn open_cluster(file: &Path) -> Result<Arc<dyn crate::cluster::Cluster>, StartError> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StartError::Helper(format!("--cluster-file {}: {e}", file.display())))?;
    }
    let cluster = crate::cluster::local::LocalCluster::open(file)
        .map_err(|e| StartError::Helper(format!("--cluster-file: {e}")))?;
    info!(cluster = %file.display(), "cluster store ready");
    Ok(Arc::new(cluster))
}

/// Whether the peer API runs over TLS: none, or all three of `--peer-tls-cert`,
/// `--peer-tls-key` and `--peer-tls-ca` (mutual: each side verifies the other's certificate
/// against the CA).
fn peer_tls(files: &crate::tls::TlsFiles) -> Result<bool, StartError> {
    match (&files.cert, &files.key, &files.ca) {
        (None, None, None) => Ok(false),
        (Some(_), Some(_), Some(_)) => Ok(true),
        _ => Err(StartError::Helper(
            "--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together (mutual TLS)".into(),
        )),
    }
}

/// The volume helper for `config`: its backend (checked now: a missing `zfs` command or pool is
/// a start-up error naming the flag) and the cluster store.
async fn volume_helper(
    config: &VolumeConfig,
    cluster: Arc<dyn crate::cluster::Cluster>,
    host_name: &str,
    upstream: &UpstreamAddr,
) -> Result<crate::volumes::Volumes, StartError> {
    let backend: Arc<dyn crate::volumes::VolumeBackend> = match config.backend.as_str() {
        "zfs" => {
            let pool = config.zfs_pool.as_deref().ok_or_else(|| {
                StartError::Helper("--volume-backend zfs needs --zfs-pool POOL".into())
            })?;
            Arc::new(
                crate::volumes::zfs::Zfs::open(pool, &config.zfs_root, config.zfs_timeout)
                    .await
                    .map_err(|e| StartError::Helper(e.to_string()))?,
            )
        }
        other => {
            return Err(StartError::Helper(format!(
                "--volume-backend {other:?}: the backends are: zfs"
            )))
        }
    };
    let peers = match &config.peer_token_file {
        Some(file) => {
            let token =
                crate::volumes::peers::Peers::read_token(file).map_err(StartError::Helper)?;
            let tls = match peer_tls(&config.peer_tls)? {
                true => Some(
                    crate::tls::client_config(&config.peer_tls, "--peer-tls")
                        .map_err(StartError::Helper)?,
                ),
                false => None,
            };
            Some(
                crate::volumes::peers::Peers::new(&config.peers, token, tls)
                    .map_err(StartError::Helper)?,
            )
        }
        None if !config.peers.is_empty() || config.peer_listen.is_some() => {
            return Err(StartError::Helper(
                "--peer and --peer-listen need --peer-token-file (the token peers share)".into(),
            ))
        }
        None => None,
    };
    info!(
        backend = backend.kind(),
        host = host_name,
        "volume helper ready"
    );
    let volumes = crate::volumes::Volumes::new(
        backend,
        cluster,
        host_name.to_string(),
        Upstream::new(upstream.clone()),
    );
    Ok(match peers {
        Some(p) => volumes.with_peers(p),
        None => volumes,
    })
}

/// After a burst, the allocator keeps the memory it grew to; when no client is connected, hand
/// what is free back to the system every few seconds (glibc's `malloc_trim`), so that RSS returns
/// to its resting size instead of staying at the peak.
async fn give_back_memory_when_idle(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut trimmed_at = 0;
    while !*stop.borrow() {
        tokio::select! {
            _ = stop.changed() => {}
            _ = tick.tick() => {
                let open = gateway.open_connections.load(std::sync::atomic::Ordering::Relaxed);
                let calls = gateway.calls_started();
                if open == 0 && calls != trimmed_at {
                    trimmed_at = calls;
                    #[cfg(all(target_os = "linux", target_env = "gnu"))]
                    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            }
        }
    }
}

/// Raise the soft limit on open files to the hard one (as Go programs do): each client connection
/// holds two descriptors, one toward the daemon.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
    }
}

/// Refuse an upstream that is the listen socket itself: the same path, or (once bound) the same
/// socket file under another name.
/// Whoever reaches the Docker API is root on the daemon's host. So a TCP listener off loopback
/// must ask every client for a certificate from its CA (as dockerd's `--tlsverify`), and a TCP
/// daemon off loopback is reached over TLS (its certificate verified), never in plain text.
/// Checked here, not where the flags are parsed, so that every way of starting a gateway is
/// held to it.
fn refuse_exposure(upstream: &UpstreamAddr, tcp: &[TcpListen]) -> Result<(), StartError> {
    for t in tcp {
        if !t.addr.ip().is_loopback() && !t.tls.as_ref().is_some_and(|t| t.verifies_clients) {
            return Err(StartError::Exposed(format!(
                "--listen tcp://{}: an address other than loopback needs --tls-cert, --tls-key \
                 and --tls-ca (client certificates verified, as dockerd's --tlsverify): whoever \
                 reaches that port would otherwise be root on this host",
                t.addr
            )));
        }
    }
    if upstream.unix_path().is_none() && upstream.tls.is_none() && !upstream.is_loopback() {
        return Err(StartError::Exposed(format!(
            "--upstream {upstream}: plain TCP only to a daemon on loopback; give its CA \
             (--upstream-tls-ca, or DOCKER_CERT_PATH with DOCKER_TLS_VERIFY=1) to use TLS"
        )));
    }
    Ok(())
}

fn refuse_self_forwarding(
    upstream: &UpstreamAddr,
    listen: &Path,
    tcp: &[TcpListen],
) -> Result<(), StartError> {
    let refused = || {
        Err(StartError::ForwardsToItself {
            upstream: upstream.to_string(),
        })
    };
    let Some(path) = upstream.unix_path() else {
        // A TCP daemon: not one of our own TCP listeners.
        if let crate::upstream::DaemonAt::Tcp { host, port } = &upstream.at {
            use std::net::ToSocketAddrs;
            let ips: Vec<std::net::IpAddr> = (host.as_str(), *port)
                .to_socket_addrs()
                .map(|a| a.map(|a| a.ip()).collect())
                .unwrap_or_default();
            let ours = tcp.iter().any(|t| {
                t.addr.port() == *port
                    && (t.addr.ip().is_unspecified() || ips.contains(&t.addr.ip()))
            });
            if ours {
                return refused();
            }
        }
        return Ok(());
    };
    let canonical = |p: &Path| -> PathBuf {
        match (p.parent(), p.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| p.to_path_buf()),
            _ => p.to_path_buf(),
        }
    };
    let same_path = canonical(path) == canonical(listen);
    let same_file = match (std::fs::metadata(path), std::fs::metadata(listen)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    if same_path || same_file {
        return refused();
    }
    Ok(())
}

/// A gateway in front of nothing serves only errors: say so at start-up (it still starts, so
/// that it can be up before the daemon).
async fn warn_unless_daemon_answers(upstream: &Upstream) {
    let ping = http::Request::builder()
        .uri("/_ping")
        .header(http::header::HOST, "docker")
        .body(crate::body::full(bytes::Bytes::new()));
    let Ok(ping) = ping else { return };
    let answer = tokio::time::timeout(Duration::from_secs(3), upstream.send(ping)).await;
    match answer {
        Ok(Ok(res)) if res.status().is_success() => {}
        Ok(Ok(res)) => warn!(
            upstream = %upstream.addr(),
            status = res.status().as_u16(),
            "the Docker daemon answered /_ping with an error; calls will fail until it is healthy"
        ),
        Ok(Err(e)) => warn!(
            upstream = %upstream.addr(),
            error = %e,
            "the Docker daemon does not answer /_ping; calls will get 502 until it does"
        ),
        Err(_) => warn!(
            upstream = %upstream.addr(),
            "the Docker daemon did not answer /_ping within 3 s"
        ),
    }
}

/// Serve `gateway` (pass-through or with hooks) on `threads` workers until `shutdown` resolves.
/// Each worker gets a thread and a runtime of its own; the calling runtime only accepts
/// connections (and runs the background services, such as the control socket), so that no
/// script, however stuck, can stop the gateway from accepting, answering its control socket or
/// shutting down.
pub async fn run_gateway(
    listener: Listener,
    tcp: Vec<(std::net::TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    gateway: Arc<Gateway>,
    threads: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    info!(
        listen = %listener.path().display(),
        upstream = %gateway.upstream.addr(),
        threads,
        "luastrip is serving"
    );
    crate::socket::notify_systemd("READY=1");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    let mut threads_running = Vec::new();
    let health = Arc::new(Health::new(threads.max(1)));
    for n in 0..threads.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        workers.push(tx);
        let gateway = gateway.clone();
        let stop = stop_rx.clone();
        let health = health.clone();
        let thread = std::thread::Builder::new()
            .name(format!("luastrip-worker-{n}"))
            .spawn(move || -> io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(worker(n, rx, gateway, stop, health))
            })?;
        threads_running.push(thread);
    }

    // One acceptor deals connections round-robin: a shared accept would let one worker win
    // most of them and leave the other core idle. Each listener (the Unix socket, each TCP
    // address) accepts in a task of its own on this thread and hands its connections to it.
    let (accepted_tx, mut accepted) = mpsc::channel::<ClientConn>(64);
    let mut accepting = vec![accept_into(
        UnixListener::from_std(listener.std_listener().try_clone()?)?,
        accepted_tx.clone(),
        |s| s.into_std().map(ClientConn::Unix),
    )];
    for (l, tls) in tcp {
        accepting.push(accept_into(
            tokio::net::TcpListener::from_std(l)?,
            accepted_tx.clone(),
            move |s| s.into_std().map(|s| ClientConn::Tcp(s, tls.clone())),
        ));
    }
    drop(accepted_tx);
    let mut next = 0;
    let mut checkup = tokio::time::interval(Duration::from_millis(250));
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => break,
            _ = checkup.tick() => { health.checkup(&gateway); continue }
            Some(conn) = accepted.recv() => conn,
        };
        let open = gateway
            .open_connections
            .load(std::sync::atomic::Ordering::Relaxed);
        if open >= gateway.max_connections as u64 {
            tokio::spawn(conn.refuse(format!(
                "luastrip: {open} connections are open, the most it serves at once \
                 (--max-connections); try again later"
            )));
            continue;
        }
        // The next worker that is not stuck; with all of them stuck, a clear 503.
        let n = workers.len();
        match (0..n)
            .map(|i| (next + i) % n)
            .find(|&w| !health.stuck(w, &gateway))
        {
            Some(w) => {
                let _ = workers[w].send(conn);
                next = (w + 1) % n;
            }
            None => {
                tokio::spawn(
                    conn.refuse(
                        "luastrip: every worker is stuck running a script past its budget; try \
                     again later"
                            .into(),
                    ),
                );
            }
        }
    }
    // Stop accepting (the listeners close with their tasks).
    for t in accepting {
        t.abort();
    }
    info!("shutting down: no new connections; finishing calls in flight");
    crate::socket::notify_systemd("STOPPING=1");
    // Remove the socket first so that no client connects to a gateway that is going away.
    drop(listener);
    drop(workers);
    let _ = stop_tx.send(true);
    // Workers finish their calls within SHUTDOWN_GRACE. One that does not answer by then is
    // stuck (a script in a loop that never yields, say): the gateway exits without it.
    let joined = tokio::task::spawn_blocking(move || {
        threads_running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a worker thread panicked")))
            })
            .collect::<io::Result<Vec<()>>>()
    });
    match tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), joined).await {
        Ok(Ok(r)) => r.map(|_| ()),
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => {
            warn!("a worker did not stop within the grace period; exiting without it");
            Ok(())
        }
    }
}

/// One worker: serve the connections dealt to it on this thread until told to stop, then give
/// calls in flight up to [`SHUTDOWN_GRACE`].
async fn worker(
    index: usize,
    mut incoming: mpsc::UnboundedReceiver<ClientConn>,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
) -> io::Result<()> {
    let worker = Arc::new(Worker::new(gateway, index));
    let tracker = TaskTracker::new();
    // The heartbeat: it only runs while this thread's event loop does.
    let beat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            health.beat(index);
        }
    });
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            conn = incoming.recv() => match conn {
                Some(conn) => {
                    let (worker, stop) = (worker.clone(), stop.clone());
                    tracker.spawn(async move {
                        // A TLS handshake in progress counts as an open connection.
                        let stream = {
                            let _open = Gauge::up(&worker.gateway.open_connections);
                            conn.open(crate::stream::TLS_HANDSHAKE).await
                        };
                        if let Some(stream) = stream {
                            connection(stream, worker, stop).await
                        }
                    });
                }
                None => break,
            }
        }
    }
    beat.abort();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "streams still open after the grace period; closing them"
        );
    }
    Ok(())
}

/// The workers' heartbeats, read by the acceptor: a worker whose event loop has not run for
/// [`Gateway::stuck_after`] is stuck (a script running past its budget in a way the budget cannot
/// stop), gets no new connections, and shows in the log and in `luastrip_workers_stuck`.
struct Health {
    started: std::time::Instant,
    /// Milliseconds since `started` of each worker's last beat.
    beats: Vec<std::sync::atomic::AtomicU64>,
    /// What the last checkup found, to log changes once.
    was_stuck: Vec<std::sync::atomic::AtomicBool>,
}

impl Health {
    fn new(workers: usize) -> Health {
        Health {
            started: std::time::Instant::now(),
            beats: (0..workers).map(|_| Default::default()).collect(),
            was_stuck: (0..workers).map(|_| Default::default()).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn beat(&self, worker: usize) {
        self.beats[worker].store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn stuck(&self, worker: usize, gateway: &Gateway) -> bool {
        let last = self.beats[worker].load(std::sync::atomic::Ordering::Relaxed);
        self.now_ms().saturating_sub(last) > gateway.stuck_after.as_millis() as u64
    }

    /// Log workers that became stuck or recovered, and count them for metrics.
    fn checkup(&self, gateway: &Gateway) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut stuck = 0;
        for w in 0..self.beats.len() {
            let now = self.stuck(w, gateway);
            stuck += u64::from(now);
            if self.was_stuck[w].swap(now, Relaxed) != now {
                if now {
                    warn!(
                        worker = w,
                        stuck_after_ms = gateway.stuck_after.as_millis() as u64,
                        "a worker is stuck (a script running past its budget?); it gets no new connections"
                    );
                } else {
                    info!(worker = w, "a stuck worker runs again");
                }
            }
        }
        gateway.stuck_workers.store(stuck, Relaxed);
    }
}

/// Accept on `listener` until the dealer goes away, handing each connection over as `wrap`
/// makes it. A failed accept (out of file descriptors, say) backs off, logged once a second.
fn accept_into<L: crate::socket::Accept>(
    listener: L,
    to: mpsc::Sender<ClientConn>,
    wrap: impl Fn(L::Stream) -> io::Result<ClientConn> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = AcceptFailures::default();
        loop {
            match listener.accept().await.and_then(|(s, _)| wrap(s)) {
                Ok(conn) => {
                    failing.recovered();
                    if to.send(conn).await.is_err() {
                        break;
                    }
                }
                Err(e) => tokio::time::sleep(failing.failed(&e)).await,
            }
        }
    })
}

/// A client connection on its way from the acceptor to a worker.
enum ClientConn {
    Unix(std::os::unix::net::UnixStream),
    /// With the listener's TLS, if it has one (the handshake runs on the worker).
    Tcp(std::net::TcpStream, Option<tokio_rustls::TlsAcceptor>),
}

impl ClientConn {
    /// The connection as a stream, after its TLS handshake (within `limit`) on a TLS listener;
    /// `None`, logged, when it cannot be had.
    async fn open(self, limit: Duration) -> Option<Stream> {
        let opened = match self {
            ClientConn::Unix(s) => UnixStream::from_std(s).map(Stream::Unix),
            ClientConn::Tcp(s, None) => tokio::net::TcpStream::from_std(s).map(Stream::Tcp),
            ClientConn::Tcp(s, Some(tls)) => match tokio::net::TcpStream::from_std(s) {
                Ok(s) => {
                    return match crate::stream::accept_tls(&tls, s, limit).await {
                        Ok(s) => Some(s),
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            info!("a TLS client did not finish its handshake in time");
                            None
                        }
                        Err(e) => {
                            info!(error = %e, "a TLS client was refused");
                            None
                        }
                    }
                }
                Err(e) => Err(e),
            },
        };
        opened
            .map_err(|e| warn!(error = %e, "cannot register a client connection"))
            .ok()
    }

    /// Answer with a Docker JSON 503 (after the TLS handshake, on a TLS listener).
    async fn refuse(self, message: String) {
        if let Some(s) = self.open(Duration::from_secs(1)).await {
            refuse(s, message).await
        }
    }
}

/// Answer a connection the gateway cannot serve now with a Docker JSON 503 and close it (its
/// request head is read first, within a second, so that the client sees the answer).
async fn refuse(mut stream: Stream, message: String) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut head)).await;
    let body = serde_json::json!({ "message": message }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Accept failures (out of file descriptors, say): the wait before the next try doubles up to a
/// second, and the log gets one line a second at most, with the count.
#[derive(Default)]
struct AcceptFailures {
    backoff: Duration,
    since_log: u32,
    last_log: Option<std::time::Instant>,
}

impl AcceptFailures {
    fn failed(&mut self, e: &io::Error) -> Duration {
        self.since_log += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            warn!(error = %e, failures = self.since_log, "accept failed; backing off");
            self.since_log = 0;
            self.last_log = Some(std::time::Instant::now());
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.backoff
    }

    fn recovered(&mut self) {
        if !self.backoff.is_zero() {
            info!("accepting connections again");
        }
        self.backoff = Duration::ZERO;
    }
}

/// Counts something open for as long as the guard lives.
struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Gauge<'a> {
    fn up(g: &'a std::sync::atomic::AtomicU64) -> Gauge<'a> {
        g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Gauge(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One client connection: HTTP/1 calls until it closes, then possibly a hijack tunnel.
async fn connection(stream: Stream, worker: Arc<Worker>, mut stop: watch::Receiver<bool>) {
    let gateway = worker.gateway.clone();
    let _open = Gauge::up(&gateway.open_connections);
    let tunnels = TunnelSlot::default();
    let service = {
        let tunnels = tunnels.clone();
        service_fn(move |req| {
            let worker = worker.clone();
            let tunnels = tunnels.clone();
            // Boxed: `poll_without_shutdown` needs an `Unpin` service future.
            Box::pin(async move {
                let res = call::handle(&worker, req, &tunnels).await;
                Ok::<_, std::convert::Infallible>(count_stream(&worker.gateway, res))
            })
        })
    };
    let mut builder = http1::Builder::new();
    // The daemon (Go) writes every header name in canonical Title-Case; so do we, which
    // reproduces its heads exactly without hyper's costly per-message case maps.
    builder.title_case_headers(true);
    // A slow client (slowloris) may not hold a connection by dribbling its request head. Only
    // heads are timed: a streaming answer or a tunnel runs as long as it needs.
    if let Some(t) = gateway.header_timeout {
        builder.timer(TokioTimer::new()).header_read_timeout(t);
    }
    let mut conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut draining = false;
    let done = loop {
        tokio::select! {
            r = poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = stop.changed(), if !draining => {
                draining = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    let pending = tunnels.take();
    match (done, pending) {
        (Ok(()), Some(pending)) => {
            let call_id = pending.call_id;
            let _tunnel = Gauge::up(&gateway.open_tunnels);
            let parts = conn.into_parts();
            match hijack::tunnel(parts.io.into_inner(), parts.read_buf, pending).await {
                Ok(s) => {
                    debug!(
                        call = call_id,
                        client_to_daemon = s.client_to_daemon,
                        daemon_to_client = s.daemon_to_client,
                        "tunnel closed"
                    );
                    if gateway.journal.is_recording() {
                        gateway.journal.stream_ended(
                            call_id,
                            crate::journal::StreamBytes {
                                client_to_daemon: s.client_to_daemon,
                                daemon_to_client: s.daemon_to_client,
                            },
                        );
                    }
                }
                Err(e) => debug!(call = call_id, error = %e, "tunnel ended with an error"),
            }
        }
        (Ok(()), None) => {
            let mut io = conn.into_parts().io.into_inner();
            let _ = io.shutdown().await;
        }
        (Err(e), _) => debug!(error = %e, "client connection ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_never_exposed_off_loopback_in_plain_text() {
        let unix = UpstreamAddr::parse("unix:///run/docker.sock").unwrap();
        let plain = |addr: &str| TcpListen {
            addr: addr.parse().unwrap(),
            tls: None,
        };
        assert!(refuse_exposure(&unix, &[plain("127.0.0.1:2375"), plain("[::1]:2375")]).is_ok());
        for off in ["0.0.0.0:2375", "[::]:2375", "192.0.2.1:2375"] {
            let e = refuse_exposure(&unix, &[plain("127.0.0.1:1"), plain(off)]).unwrap_err();
            assert!(
                e.to_string()
                    .contains("needs --tls-cert, --tls-key and --tls-ca"),
                "{e}"
            );
        }
        let local = UpstreamAddr::parse("tcp://127.0.0.1:2375").unwrap();
        assert!(refuse_exposure(&local, &[]).is_ok());
        let far = UpstreamAddr::parse("tcp://192.0.2.1:2375").unwrap();
        let e = refuse_exposure(&far, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("plain TCP only to a daemon on loopback"),
            "{e}"
        );
    }
}
