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
//! # Layout
//!
//! * this file — [`Config`], [`run`] (the wiring) and the background set ([`Background`]);
//!   each helper builds itself in its own folder ([`crate::cluster::open`],
//!   [`crate::volumes::Config::open`], [`crate::overlay::Config::open`]);
//! * `checks` — what is refused or warned about at start-up (an API exposed off loopback in
//!   plain text, a gateway forwarding to itself, an unreachable daemon), and the process limits;
//! * `listen` — the acceptor, the thread-per-core workers and the connection driver.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::call::{self, Gateway};
use crate::control::{self, intercept::Intercept, Control};
use crate::lua::{store::Store, Engine, Limits, Services};
use crate::socket::{bind, BindError, ListenOptions};
use crate::upstream::{Upstream, UpstreamAddr};

mod checks;
mod listen;

use checks::{
    give_back_memory_when_idle, raise_fd_limit, refuse_exposure, refuse_self_forwarding,
    warn_unless_daemon_answers,
};
pub use listen::run_gateway;

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
    pub volumes: Option<crate::volumes::Config>,
    /// The overlay helper's network driver, if configured (`--network-plugin`).
    pub overlay: Option<crate::overlay::Config>,
    /// `--plugin-dir`: where dockerd looks for plugin sockets.
    pub plugin_dir: PathBuf,
    /// The cluster store (volume owners, overlay addresses): `--cluster-file`, or etcd with
    /// `--cluster`.
    pub cluster: crate::cluster::Config,
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
            cluster: crate::cluster::Config {
                file: PathBuf::from("/var/lib/luastrip/cluster.json"),
                etcd: None,
            },
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
    Config(#[from] crate::error::ConfigError),
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
    // What the helpers must agree on, opened once for all of them; each helper builds itself.
    let cluster: Option<Arc<dyn crate::cluster::Cluster>> =
        if config.volumes.is_some() || config.overlay.is_some() {
            Some(crate::cluster::open(&config.cluster).await?)
        } else {
            None
        };
    // This gateway in the cluster's list of hosts: a name a live gateway holds stops the start.
    if let Some(cluster) = &cluster {
        let info = crate::cluster::hosts::HostInfo {
            name: config.host_name.clone(),
            peer: config.volumes.as_ref().and_then(|v| v.peer_url.clone()),
            underlay: config.overlay.as_ref().and_then(|o| o.underlay),
            hold_s: config.overlay.as_ref().map(|o| o.hold.as_secs()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let joined = crate::cluster::hosts::join(cluster.clone(), &info)
            .await
            .map_err(|e| StartError::Helper(format!("--host-name: {e}")))?;
        let cluster = cluster.clone();
        background.spawn("cluster registration", move |stop| {
            crate::cluster::hosts::keep(cluster, info, joined, stop)
        });
    }
    let volumes = match (&config.volumes, &cluster) {
        (Some(v), Some(cluster)) => Some(Arc::new(
            v.open(cluster.clone(), &config.host_name, &config.upstream)
                .await?
                .with_events(gateway.journal.helper_events()),
        )),
        _ => None,
    };
    if let Some(volumes) = &volumes {
        // Moves a gateway before this one left half-way (it was killed): finished or rolled
        // back, and every copy's read-only flag as the records say.
        let volumes = volumes.clone();
        background.spawn("volume records settle", move |stop| {
            volumes.settle_at_start(stop)
        });
    }
    let overlay = match (&config.overlay, &cluster) {
        (Some(o), Some(cluster)) => {
            let overlay = Arc::new(
                o.open(cluster.clone(), &config.host_name, &config.upstream)
                    .await?
                    .with_events(gateway.journal.helper_events()),
            );
            let follower = overlay.clone();
            background.spawn("overlay events follower", move |stop| {
                crate::overlay::events::follow(follower, stop)
            });
            // VXLAN peers from the cluster's hosts, when this host has an underlay address,
            // and every host's VXLAN following identities' addresses to their hosts.
            if overlay.settings.underlay.is_some() {
                let me = config.host_name.clone();
                let (o, c, m) = (overlay.clone(), cluster.clone(), me.clone());
                background.spawn("overlay peers follower", move |stop| {
                    crate::overlay::peers::follow(o, c, m, stop)
                });
                let (o, c) = (overlay.clone(), cluster.clone());
                background.spawn("overlay FDB follower", move |stop| {
                    crate::overlay::fdb::follow(o, c, me, stop)
                });
            }
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
    // Swarm services on the volume plugin's volumes update stop-first.
    if let Some(plugin) = config.volumes.as_ref().and_then(|v| v.plugin.clone()) {
        gateway = gateway.with_hooks(Arc::new(crate::volumes::swarm::SwarmGuard { plugin }));
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
                crate::plugin::volume::VolumeDriver::new(v.clone(), cfg.follow),
            ));
        }
    }
    for (name, drivers) in plugins {
        let volume = drivers.iter().any(|d| d.implements() == "VolumeDriver");
        serve_plugin(&background, &name, &config.plugin_dir, drivers)?;
        // dockerd loads a volume plugin now, not at its first use (swarm sees it at once).
        if volume {
            let upstream = Upstream::new(config.upstream.clone());
            background.spawn("volume plugin announcer", move |stop| {
                crate::plugin::announce(upstream, name, stop)
            });
        }
    }
    if let (Some(v), Some(cfg)) = (&volumes, &config.volumes) {
        if let Some(peer) = cfg.peer_listener().await? {
            let v = v.clone();
            background.spawn("peer listener", move |stop| {
                crate::volumes::peers::serve(peer.listener, peer.tls, v, stop)
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
        gauges: cluster
            .iter()
            .map(|c| {
                let c = c.clone();
                control::Gauge {
                    name: "luastrip_cluster_reachable",
                    help: "1 while the cluster store answers (etcd: its last operation found a member that answered), 0 while it does not.",
                    read: Box::new(move || u64::from(c.reachable())),
                }
            })
            .collect(),
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
