//! The `luastrip` command: parse flags, set up logging, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use luastrip::control::client::Flows;
use luastrip::lua::Limits;
use luastrip::serve::{self, Config};
use luastrip::upstream::UpstreamAddr;

#[derive(Parser)]
#[command(
    name = "luastrip",
    version,
    about = "A drop-in docker.sock scripted in Lua"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway in front of the Docker daemon.
    Serve(Box<ServeArgs>),
    /// Watch and steer a running gateway through its control socket.
    Repl {
        #[command(flatten)]
        flows: FlowArgs,
        /// Run one command and exit (e.g. -c 'calls ~m POST').
        #[arg(short = 'c')]
        command: Option<String>,
    },
    /// A full-screen console on a running gateway (or a recorded file): live flows, details,
    /// what the hooks changed, intercept, edit, replay, export as curl.
    Console {
        #[command(flatten)]
        flows: FlowArgs,
    },
    /// Test route scripts without a dockerd: replay a recording through them (the daemon's
    /// answers taken from it) and report what they change, deny and fail on; run the
    /// *_test.lua cases beside them. Exits 1 on a script error, a failed case, or a report
    /// that differs from --expect.
    Test {
        /// A script file, or a directory of *.lua files (as serve --scripts).
        scripts: PathBuf,
        /// A recording (serve --record, record start) to replay through the scripts.
        #[arg(long)]
        against: Option<PathBuf>,
        /// The saved report to compare with.
        #[arg(long, requires = "against")]
        expect: Option<PathBuf>,
        /// Save the report to --expect instead of comparing with it.
        #[arg(long, requires = "expect")]
        update: bool,
    },
    /// Make a scripts directory to start from: the commented default script, a *_test.lua,
    /// the type stubs and .luarc.json for the editor, and a README.
    Init {
        /// The directory (made if missing); existing files are never overwritten.
        dir: PathBuf,
    },
    /// The cluster's hosts, read from the store the gateways share (--cluster, or
    /// --cluster-file).
    Cluster {
        #[command(flatten)]
        store: ClusterArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Load route scripts (or Powerstrip's adapters.yml) and report errors without serving;
    /// also flags reply tables with keys the gateway would ignore.
    Check {
        /// A script file, a directory of *.lua files, or an adapters.yml.
        path: PathBuf,
    },
}

/// Where the REPL and the console find their flows.
#[derive(clap::Args)]
struct FlowArgs {
    /// The control socket of the gateway. Defaults to the gateway's, from its --listen.
    #[arg(long, env = "LUASTRIP_CONTROL")]
    control: Option<String>,
    /// The gateway's listen socket: its control socket is beside it, with the extension .ctl
    /// (as `serve` makes it); exported curl commands use it.
    #[arg(
        long,
        env = "LUASTRIP_LISTEN",
        default_value = "unix:///run/luastrip.sock",
        value_delimiter = ','
    )]
    listen: Vec<String>,
    /// Read the calls recorded in this file (serve --record, record start) instead of a
    /// gateway: calls and show work, read-only.
    #[arg(long, short = 'f', conflicts_with = "control")]
    file: Option<PathBuf>,
}

impl FlowArgs {
    /// The gateway's Unix socket: the `--listen` that is not `tcp://`.
    fn socket(&self) -> PathBuf {
        self.listen
            .iter()
            .find(|l| !l.starts_with("tcp://"))
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), |l| unix_path(l))
    }

    /// A recorded file, the `--control` socket, or the control socket beside `--listen`.
    fn flows(&self) -> Result<Flows, String> {
        Ok(match (&self.file, &self.control) {
            (Some(f), _) => Flows::open(f)?,
            (None, Some(c)) => Flows::Live(unix_path(c)),
            (None, None) => Flows::Live(serve::control_path_for(&self.socket())),
        })
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where clients connect (set DOCKER_HOST to it): a Unix socket, and TCP addresses for tools
    /// that cannot use one (repeat, or separate with commas). tcp:// is plain on loopback
    /// only; any other address needs --tls-cert, --tls-key and --tls-ca. The Unix socket
    /// (/run/luastrip.sock unless one is given) is always served; the control socket sits
    /// beside it.
    #[arg(
        long,
        env = "LUASTRIP_LISTEN",
        default_value = "unix:///run/luastrip.sock",
        value_delimiter = ','
    )]
    listen: Vec<String>,
    /// The certificate (PEM) TCP listeners present.
    #[arg(long, env = "LUASTRIP_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "LUASTRIP_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs client certificates: TCP clients must present one (dockerd's
    /// --tlsverify).
    #[arg(long, env = "LUASTRIP_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The Docker daemon: unix:///path or tcp://HOST:PORT. Defaults to DOCKER_HOST, then
    /// unix:///var/run/docker.sock. TCP uses TLS when DOCKER_TLS_VERIFY or DOCKER_CERT_PATH is
    /// set or an --upstream-tls-* flag is given (as the docker CLI); plain TCP only to loopback.
    #[arg(long, env = "LUASTRIP_UPSTREAM")]
    upstream: Option<String>,
    /// The CA (PEM) that signed the daemon's certificate. Default: ca.pem in DOCKER_CERT_PATH
    /// (or ~/.docker with DOCKER_TLS_VERIFY), as the docker CLI reads it.
    #[arg(long, env = "LUASTRIP_UPSTREAM_TLS_CA")]
    upstream_tls_ca: Option<PathBuf>,
    /// The client certificate (PEM) shown to the daemon. Default: cert.pem there.
    #[arg(long, env = "LUASTRIP_UPSTREAM_TLS_CERT")]
    upstream_tls_cert: Option<PathBuf>,
    /// Its key (PEM). Default: key.pem there.
    #[arg(long, env = "LUASTRIP_UPSTREAM_TLS_KEY")]
    upstream_tls_key: Option<PathBuf>,
    /// Permission bits of the listen socket, in octal.
    #[arg(long, env = "LUASTRIP_SOCKET_MODE", default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Group that owns the listen socket (name or gid). Default: docker, where that group
    /// exists (as docker.sock has it), else the process's; "" keeps the process's.
    #[arg(long, env = "LUASTRIP_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// Worker threads (each a single-threaded runtime); 0 means one per core.
    #[arg(long, env = "LUASTRIP_THREADS", default_value_t = 0)]
    threads: usize,
    /// Lua route scripts: a file, or a directory of *.lua files loaded in name order.
    #[arg(long, env = "LUASTRIP_SCRIPTS")]
    scripts: Option<PathBuf>,
    /// Powerstrip's adapters.yml: adapter chains by endpoint glob (run after the scripts' hooks).
    #[arg(long, env = "LUASTRIP_POWERSTRIP_CONFIG")]
    powerstrip_config: Option<PathBuf>,
    /// Control socket for `luastrip repl` and curl (mode 0600). Defaults to the listen path with
    /// its extension replaced by .ctl (/run/luastrip.sock → /run/luastrip.ctl).
    #[arg(long, env = "LUASTRIP_CONTROL")]
    control: Option<String>,
    /// Run the REPL on this terminal too; quitting it stops the gateway. Logs default to warn.
    #[arg(long)]
    repl: bool,
    /// Persist the scripts' `store` in this JSON file.
    #[arg(long, env = "LUASTRIP_STATE")]
    state: Option<PathBuf>,
    /// Most the scripts' `store` may hold, in MiB (keys plus their JSON).
    #[arg(long, env = "LUASTRIP_STORE_LIMIT_MB", default_value_t = 64)]
    store_limit_mb: usize,
    /// Seconds a client may take to send a request head (slow clients are disconnected);
    /// 0 turns the limit off. Streams and tunnels are not timed once their head is read.
    #[arg(long, env = "LUASTRIP_HEADER_TIMEOUT_S", default_value_t = 30)]
    header_timeout_s: u64,
    /// Milliseconds after which a worker whose event loop has not run counts as stuck: it gets
    /// no new connections, and shows in the log and in /metrics. Default: twice the hook budget
    /// plus a second.
    #[arg(long, env = "LUASTRIP_STUCK_AFTER_MS")]
    stuck_after_ms: Option<u64>,
    /// Most client connections served at once; more get a Docker JSON 503.
    #[arg(long, env = "LUASTRIP_MAX_CONNECTIONS", default_value_t = serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds the daemon may take to answer a call that is not a stream (streams, attach,
    /// exec, wait, stop and restart are not timed); 0 turns the limit off.
    #[arg(long, env = "LUASTRIP_UPSTREAM_TIMEOUT_S", default_value_t = 300)]
    upstream_timeout_s: u64,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    volumes: VolumeArgs,
    /// Serve libnetwork's remote network driver as this name (docker network create -d NAME):
    /// containers on such networks get an `ethwe0` on the overlay bridge before they run.
    #[arg(long, env = "LUASTRIP_NETWORK_PLUGIN")]
    network_plugin: Option<String>,
    /// The bridge overlay endpoints join.
    #[arg(long, env = "LUASTRIP_OVERLAY_BRIDGE", default_value = "luastrip0")]
    overlay_bridge: String,
    /// The overlay's default range, for networks created without a subnet.
    #[arg(long, env = "LUASTRIP_OVERLAY_CIDR", default_value = "10.32.0.0/12")]
    overlay_cidr: String,
    /// Seconds a released overlay address is held back from new containers (so that peers of
    /// a container that just went do not reach a stranger); asking for it by value still works.
    #[arg(long, env = "LUASTRIP_OVERLAY_GRACE_S", default_value_t = 30)]
    overlay_grace_s: u64,
    /// Seconds an identity's overlay address (a named container's, a compose service
    /// container's) stays its own after the container is removed: recreated on any host within
    /// them, it gets the same address; others asking for it are refused.
    #[arg(long, env = "LUASTRIP_OVERLAY_HOLD_S", default_value_t = 60)]
    overlay_hold_s: u64,
    /// The default overlay network's name; the network of another subnet is NAME-10.2.1.0-24.
    #[arg(long, env = "LUASTRIP_OVERLAY_NETWORK", default_value = "luastrip")]
    overlay_network: String,
    /// The part of --overlay-cidr this host picks addresses from (each host its own, until the
    /// hosts share one cluster store); addresses asked for by value may be anywhere in it.
    #[arg(long, env = "LUASTRIP_OVERLAY_RANGE")]
    overlay_range: Option<String>,
    /// Another host's address: the overlay bridge gets a VXLAN device that floods to every peer
    /// (static unicast, head-end replication), so containers on all hosts share one network.
    /// Repeat it, or separate addresses with commas.
    #[arg(long, env = "LUASTRIP_OVERLAY_PEER", value_delimiter = ',')]
    overlay_peer: Vec<std::net::Ipv4Addr>,
    /// This host's IPv4 address on the underlay. With --cluster, each gateway publishes it in
    /// its registration and takes the other hosts' as its VXLAN peers, which follow the hosts
    /// that come and go: no --overlay-peer needed.
    #[arg(long, env = "LUASTRIP_OVERLAY_UNDERLAY")]
    overlay_underlay: Option<std::net::Ipv4Addr>,
    /// The VXLAN network identifier shared by the hosts of one overlay (UDP port 4789).
    #[arg(long, env = "LUASTRIP_OVERLAY_VNI", default_value_t = 4242,
          value_parser = clap::value_parser!(u32).range(1..16_777_216))]
    overlay_vni: u32,
    /// Where dockerd discovers plugin sockets.
    #[arg(
        long,
        env = "LUASTRIP_PLUGIN_DIR",
        default_value = "/run/docker/plugins"
    )]
    plugin_dir: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// This gateway's name among its peers. Defaults to the machine's host name.
    #[arg(long, env = "LUASTRIP_HOST_NAME")]
    host_name: Option<String>,
    /// Keep the journal in this file (NDJSON, secrets redacted): the calls of the last run are
    /// back in `calls` after a restart, and ids go on from them. The file rotates to FILE.1 at
    /// 16 MiB.
    #[arg(long, env = "LUASTRIP_JOURNAL")]
    journal: Option<PathBuf>,
    /// Record every call to this file from the start (NDJSON, appended, secrets redacted), for
    /// `luastrip test --against`, `repl --file` and `console --file`.
    #[arg(long, env = "LUASTRIP_RECORD")]
    record: Option<PathBuf>,
    /// Environment names (a regular expression) whose values recordings leave out, in `Env`
    /// lists, build args and plugin settings.
    #[arg(long, env = "LUASTRIP_REDACT_ENV", default_value = luastrip::journal::record::DEFAULT_REDACT_ENV)]
    redact_env: String,
}

/// `--host-name`, or the machine's host name.
/// A `unix://` address or a plain path, as a path.
fn unix_path(s: &str) -> PathBuf {
    PathBuf::from(s.strip_prefix("unix://").unwrap_or(s))
}

fn host_name(given: Option<String>) -> Result<String, String> {
    let host_name = match given {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| format!("cannot read the host name ({e}); pass --host-name"))?,
    };
    if host_name.is_empty()
        || host_name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("--host-name {host_name:?}: a name without spaces"));
    }
    Ok(host_name)
}

/// Where the cluster store is: the local file, or etcd (`serve` and `cluster` alike).
#[derive(clap::Args)]
struct ClusterArgs {
    /// The local cluster store: what the helpers must agree on (volume owners, overlay
    /// addresses), one JSON file shared by the gateways of this machine.
    #[arg(
        long,
        env = "LUASTRIP_CLUSTER_FILE",
        default_value = "/var/lib/luastrip/cluster.json"
    )]
    cluster_file: PathBuf,
    /// The cluster store on etcd v3 instead of the file: etcd://HOST:PORT[,HOST:PORT…], its
    /// members (docs/cluster.md).
    #[arg(long, env = "LUASTRIP_CLUSTER")]
    cluster: Option<String>,
    /// Every key luastrip keeps in etcd starts with this.
    #[arg(long, env = "LUASTRIP_CLUSTER_PREFIX", default_value = "/luastrip/")]
    cluster_prefix: String,
    /// The CA that signs etcd's server certificates (TLS to etcd).
    #[arg(long, env = "LUASTRIP_CLUSTER_CA")]
    cluster_ca: Option<PathBuf>,
    /// This gateway's client certificate for etcd (with --cluster-key).
    #[arg(long, env = "LUASTRIP_CLUSTER_CERT")]
    cluster_cert: Option<PathBuf>,
    /// The private key of --cluster-cert.
    #[arg(long, env = "LUASTRIP_CLUSTER_KEY")]
    cluster_key: Option<PathBuf>,
}

impl ClusterArgs {
    fn config(self) -> Result<luastrip::cluster::Config, String> {
        let etcd = match &self.cluster {
            None if self.cluster_ca.is_some()
                || self.cluster_cert.is_some()
                || self.cluster_key.is_some() =>
            {
                return Err(
                    "--cluster-ca, --cluster-cert and --cluster-key need --cluster etcd://…".into(),
                )
            }
            None => None,
            Some(url) => Some(luastrip::cluster::etcd::Config::parse(
                url,
                &self.cluster_prefix,
                luastrip::tls::TlsFiles {
                    cert: self.cluster_cert,
                    key: self.cluster_key,
                    ca: self.cluster_ca,
                },
            )?),
        };
        Ok(luastrip::cluster::Config {
            file: self.cluster_file,
            etcd,
        })
    }
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// Every host the cluster knows, alive or gone, since when, its version, and what it holds
    /// (volumes, overlay addresses).
    Hosts {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget a host that is gone (its registration expired): its overlay addresses go back to
    /// the pool, and its volumes become orphaned (never taken by another host by itself).
    Forget {
        /// The host's name (`--host-name` of its gateway).
        host: String,
        /// How long the host must have been gone.
        #[arg(long, default_value_t = 60)]
        grace_s: u64,
    },
    /// Give an orphaned volume (its owner forgotten) to a host, at the next epoch: by default to
    /// its standby (`zfs.replicate`). That host's gateway takes its copy as the volume when it
    /// next sees the record (at start, or at the next mount).
    Adopt {
        /// The volume's name.
        volume: String,
        /// The host whose copy is to be the volume (default: the volume's standby).
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(clap::Args)]
struct VolumeArgs {
    /// Turn the volume helper on with this backend (`zfs`): `zfs.*` in scripts and
    /// GET /luastrip/volumes.
    #[arg(long, env = "LUASTRIP_VOLUME_BACKEND")]
    volume_backend: Option<String>,
    /// The ZFS pool volumes live in (with --volume-backend zfs).
    #[arg(long, env = "LUASTRIP_ZFS_POOL")]
    zfs_pool: Option<String>,
    /// The dataset below the pool that holds the volumes: POOL/ROOT/NAME.
    #[arg(long, env = "LUASTRIP_ZFS_ROOT", default_value = "luastrip")]
    zfs_root: String,
    /// The longest one zfs command may run (send and receive excepted) before it is killed and
    /// its call fails with an error naming it.
    #[arg(long, env = "LUASTRIP_ZFS_TIMEOUT_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    zfs_timeout_s: u64,
    /// Also serve the Docker volume plugin protocol as this driver name (docker volume create
    /// -d NAME), on PLUGIN_DIR/NAME.sock.
    #[arg(long, env = "LUASTRIP_VOLUME_PLUGIN")]
    volume_plugin: Option<String>,
    /// With --volume-plugin and the cluster store on etcd: a volume another gateway owns moves
    /// here when this host's dockerd mounts it (a swarm task rescheduled here, docker run -v),
    /// once no container there uses it; without it, such a mount is refused, naming the owner.
    /// Whoever may run containers on this host may then take a volume from another.
    #[arg(long, env = "LUASTRIP_VOLUME_FOLLOW")]
    volume_follow: bool,
    /// Another gateway volumes move to and from: NAME=http://HOST:PORT (repeat for each).
    #[arg(long = "peer", env = "LUASTRIP_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// Serve the peer API (volume pushes) on HOST:PORT.
    #[arg(long, env = "LUASTRIP_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// How the other gateways reach this one's peer API (http://HOST:PORT, https:// with TLS):
    /// with --cluster, published in this gateway's registration, so that the others need no
    /// --peer naming it.
    #[arg(long, env = "LUASTRIP_PEER_URL")]
    peer_url: Option<String>,
    /// A file whose first line is the token peers share (at least 16 characters).
    #[arg(long, env = "LUASTRIP_PEER_TOKEN_FILE")]
    peer_token_file: Option<PathBuf>,
    /// This gateway's certificate for the peer API, shown to peers both ways (mutual TLS; with
    /// --peer-tls-key and --peer-tls-ca, and peers named https://HOST:PORT).
    #[arg(long, env = "LUASTRIP_PEER_TLS_CERT")]
    peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert.
    #[arg(long, env = "LUASTRIP_PEER_TLS_KEY")]
    peer_tls_key: Option<PathBuf>,
    /// The CA that signs every peer's certificate: peers are verified against it both ways.
    #[arg(long, env = "LUASTRIP_PEER_TLS_CA")]
    peer_tls_ca: Option<PathBuf>,
}

impl VolumeArgs {
    fn config(self) -> Result<Option<luastrip::volumes::Config>, String> {
        let Some(backend) = self.volume_backend else {
            if self.zfs_pool.is_some() {
                return Err("--zfs-pool needs --volume-backend zfs".into());
            }
            if self.volume_plugin.is_some() {
                return Err("--volume-plugin needs --volume-backend".into());
            }
            if self.volume_follow {
                return Err("--volume-follow needs --volume-backend and --volume-plugin".into());
            }
            return Ok(None);
        };
        if self.volume_follow && self.volume_plugin.is_none() {
            return Err("--volume-follow needs --volume-plugin".into());
        }
        Ok(Some(luastrip::volumes::Config {
            backend,
            zfs_pool: self.zfs_pool,
            zfs_root: self.zfs_root,
            zfs_timeout: std::time::Duration::from_secs(self.zfs_timeout_s),
            follow: self.volume_follow,
            plugin: self.volume_plugin,
            peers: self.peers,
            peer_listen: self.peer_listen,
            peer_url: self.peer_url,
            peer_token_file: self.peer_token_file,
            peer_tls: luastrip::tls::TlsFiles {
                cert: self.peer_tls_cert,
                key: self.peer_tls_key,
                ca: self.peer_tls_ca,
            },
        }))
    }
}

#[derive(clap::Args)]
struct LimitArgs {
    /// Time budget of one hook call, in milliseconds of running (waits and time off the CPU
    /// are not charged).
    #[arg(long, env = "LUASTRIP_HOOK_TIMEOUT_MS", default_value_t = 100)]
    hook_timeout_ms: u64,
    /// Memory cap of each Lua VM, in MiB.
    #[arg(long, env = "LUASTRIP_VM_MEMORY_MB", default_value_t = 64)]
    vm_memory_mb: usize,
    /// Largest request or response body a hook may read, in MiB (larger: 413).
    #[arg(long, env = "LUASTRIP_BODY_LIMIT_MB", default_value_t = 16)]
    body_limit_mb: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            hook_time: std::time::Duration::from_millis(self.hook_timeout_ms),
            vm_memory: self.vm_memory_mb << 20,
            body: self.body_limit_mb << 20,
        }
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 660"))?;
    if m > 0o7777 {
        return Err(format!("{s:?} is not a file mode"));
    }
    Ok(m)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Check { .. } | Command::Init { .. } | Command::Test { .. }
    ) {
        // A report piped into `head` ends quietly, as other command-line tools do (Rust ignores
        // SIGPIPE, which would make every print after the reader left a panic). The server
        // keeps ignoring it: a client that goes away must not stop the gateway.
        // SAFETY: restoring a signal's default disposition, before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // With the REPL on the same terminal, per-call log lines would bury the prompt.
    let default_level = match &cli.command {
        Command::Serve(a) if a.repl => "warn",
        // The gateway under test would log every replayed call.
        Command::Test { .. } => "warn",
        // What the command prints is the answer; the store's set-up is not news.
        Command::Cluster { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUASTRIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        // Colour only on a terminal (a journal or a log file gets plain text), and never
        // with NO_COLOR set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        // Above the REPL's prompt while one runs (`serve --repl`), else stderr.
        .with_writer(|| luastrip::repl::LogWriter)
        .init();
    match cli.command {
        Command::Serve(args) => match serve_cmd(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("luastrip: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Repl { flows, command } => {
            let flows = match flows.flows() {
                Ok(flows) => flows,
                Err(e) => {
                    eprintln!("luastrip repl: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let stdout = std::io::stdout();
            match luastrip::repl::run(flows, command.as_deref(), &mut stdout.lock()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("luastrip repl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Console { flows } => {
            let socket = flows.socket();
            match flows
                .flows()
                .and_then(|f| luastrip::console::run(f, &socket))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("luastrip console: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Test {
            scripts,
            against,
            expect,
            update,
        } => {
            let opts = luastrip::testing::Options {
                scripts,
                against,
                expect,
                update,
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("luastrip test: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let stdout = std::io::stdout();
            match runtime.block_on(luastrip::testing::run(&opts, &mut stdout.lock())) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("luastrip test: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Init { dir } => match luastrip::scaffold::init(&dir) {
            Ok(files) => {
                for f in files {
                    println!("  wrote {}", f.display());
                }
                println!(
                    "next: luastrip check {d} && luastrip test {d}, then luastrip serve --scripts {d}",
                    d = dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("luastrip init: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Cluster { store, command } => match cluster_cmd(store, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("luastrip cluster: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { path } => match luastrip::lua::lint::check(&path) {
            Ok(report) => {
                let verdict = match report.findings.len() {
                    0 => "ok".to_string(),
                    1 => "1 problem".to_string(),
                    n => format!("{n} problems"),
                };
                println!(
                    "{}: {verdict}, {} routes",
                    path.display(),
                    report.routes.len()
                );
                for (phase, pattern, location) in &report.routes {
                    println!("  {phase:8} {pattern:40} {location}");
                }
                if report.routes.is_empty() {
                    eprintln!(
                        "{}: warning: no routes: a gateway serving this passes every call \
                         through unchecked",
                        path.display()
                    );
                }
                for (location, finding) in &report.findings {
                    eprintln!("{location}: {finding}");
                }
                if report.findings.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The Unix socket `serve` listens on when `--listen` names none.
const DEFAULT_SOCKET: &str = "/run/luastrip.sock";

/// `--listen` values: the one Unix socket (the default if none is named) and the TCP addresses,
/// each with the TLS the flags give (`serve::run` allows plain TCP only on loopback, and any
/// other address only with client certificates verified).
fn listeners(args: &ServeArgs) -> Result<(PathBuf, Vec<serve::TcpListen>), String> {
    let tls_files = luastrip::tls::TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        ca: args.tls_ca.clone(),
    };
    let tls_given = tls_files != luastrip::tls::TlsFiles::default();
    let mut unix = None;
    let mut tcp = Vec::new();
    for l in &args.listen {
        if let Some(rest) = l.strip_prefix("tcp://") {
            tcp.push(tcp_addr(rest).map_err(|e| format!("--listen {l}: {e}"))?);
            continue;
        }
        let path = unix_path(l);
        if !path.is_absolute() || l.contains("://") && !l.starts_with("unix://") {
            return Err(format!(
                "--listen {l:?}: use unix:///absolute/path.sock or tcp://HOST:PORT"
            ));
        }
        if unix.replace(path).is_some() {
            return Err("--listen: one Unix socket at most".into());
        }
    }
    if tls_given && tcp.is_empty() {
        return Err("--tls-cert, --tls-key and --tls-ca are for --listen tcp://…".into());
    }
    let tls = if tls_given {
        Some(luastrip::tls::server_config(&tls_files, "--tls")?)
    } else {
        None
    };
    // Which addresses may go without TLS or client certificates is serve::run's to decide.
    let out = tcp
        .into_iter()
        .map(|addr| serve::TcpListen {
            addr,
            tls: tls.clone(),
        })
        .collect();
    Ok((unix.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)), out))
}

/// `HOST:PORT` of a `tcp://` address: an IP address, or a name (`localhost`) resolved now.
fn tcp_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim_end_matches('/');
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{e} (use HOST:PORT)"))?
        .next()
        .ok_or_else(|| "the name resolves to no address".into())
}

/// TLS to a TCP daemon, as the docker CLI decides it: with DOCKER_TLS_VERIFY or DOCKER_CERT_PATH
/// set, or any --upstream-tls-* flag; files from the flags, else from DOCKER_CERT_PATH (or
/// ~/.docker). Plain TCP is for a daemon on loopback only (`serve::run` refuses it elsewhere).
fn upstream_tls(args: &ServeArgs, upstream: UpstreamAddr) -> Result<UpstreamAddr, String> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let flags = luastrip::tls::TlsFiles {
        cert: args.upstream_tls_cert.clone(),
        key: args.upstream_tls_key.clone(),
        ca: args.upstream_tls_ca.clone(),
    };
    let verify = env("DOCKER_TLS_VERIFY").is_some();
    let cert_path = env("DOCKER_CERT_PATH").map(PathBuf::from).or_else(|| {
        verify
            .then(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .flatten()
    });
    let flagged = flags != luastrip::tls::TlsFiles::default();
    let wanted = flagged || cert_path.is_some();
    if upstream.unix_path().is_some() {
        if flagged {
            return Err("--upstream-tls-* are for --upstream tcp://…".into());
        }
        return Ok(upstream);
    }
    if !wanted {
        // Plain: serve::run refuses it to a daemon off loopback.
        return Ok(upstream);
    }
    let from_env = cert_path
        .as_deref()
        .map(luastrip::tls::TlsFiles::docker_cert_path)
        .unwrap_or_default();
    let files = luastrip::tls::TlsFiles {
        cert: flags.cert.or(from_env.cert),
        key: flags.key.or(from_env.key),
        ca: flags.ca.or(from_env.ca),
    };
    let config = luastrip::tls::client_config(&files, "--upstream-tls")?;
    Ok(upstream.with_tls(config))
}

fn serve_cmd(args: ServeArgs) -> Result<(), String> {
    let (listen, tcp) = listeners(&args)?;
    let upstream = args
        .upstream
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
    let upstream = UpstreamAddr::parse(&upstream).map_err(|e| format!("--upstream: {e}"))?;
    let upstream = upstream_tls(&args, upstream)?;
    let config = Config {
        socket_mode: args.socket_mode,
        // The docker group where it exists (as docker.sock has it); "" keeps the process's.
        socket_group: match args.socket_group {
            None => luastrip::socket::default_group(),
            Some(g) if g.is_empty() => None,
            Some(g) => Some(g),
        },
        threads: args.threads,
        scripts: args.scripts,
        powerstrip_config: args.powerstrip_config,
        control: args
            .control
            .map(|c| PathBuf::from(c.strip_prefix("unix://").unwrap_or(&c))),
        state: args.state,
        store_limit: args.store_limit_mb << 20,
        limits: args.limits.limits(),
        header_timeout: (args.header_timeout_s > 0)
            .then(|| std::time::Duration::from_secs(args.header_timeout_s)),
        stuck_after: args.stuck_after_ms.map(std::time::Duration::from_millis),
        max_connections: args.max_connections,
        upstream_timeout: (args.upstream_timeout_s > 0)
            .then(|| std::time::Duration::from_secs(args.upstream_timeout_s)),
        repl: args.repl,
        volumes: args.volumes.config()?,
        overlay: args.network_plugin.map(|plugin| luastrip::overlay::Config {
            plugin,
            bridge: args.overlay_bridge,
            cidr: args.overlay_cidr,
            grace: std::time::Duration::from_secs(args.overlay_grace_s),
            hold: std::time::Duration::from_secs(args.overlay_hold_s),
            network: args.overlay_network,
            range: args.overlay_range,
            peers: args.overlay_peer,
            vni: args.overlay_vni,
            underlay: args.overlay_underlay,
        }),
        plugin_dir: args.plugin_dir,
        cluster: args.cluster.config()?,
        host_name: host_name(args.host_name)?,
        journal_file: args.journal,
        record: args.record,
        redact_env: args.redact_env,
        tcp,
        ..Config::new(listen, upstream)
    };
    // This runtime accepts connections and runs the background services; serve::run starts the
    // workers on threads of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let served = runtime.block_on(async {
        // Handlers first: once the socket exists, SIGTERM must mean a clean shutdown.
        let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
        serve::run(config, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    // serve::run has waited its grace period; a worker stuck in a script does not hold the exit.
    runtime.shutdown_background();
    served
}

/// `luastrip cluster hosts|forget|adopt`: read (or change) the store the gateways share.
fn cluster_cmd(store: ClusterArgs, command: ClusterCommand) -> Result<(), String> {
    use luastrip::cluster::hosts;
    let config = store.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let cluster = luastrip::cluster::open(&config)
            .await
            .map_err(|e| e.to_string())?;
        match command {
            ClusterCommand::Hosts { json } => {
                let list = hosts::list(cluster.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                if json {
                    let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
                    println!("{text}");
                    return Ok(());
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                println!(
                    "{:<20} {:<6} {:>10}  {:<10} {:>7} {:>9}  PEER",
                    "HOST", "STATE", "SINCE", "VERSION", "VOLUMES", "ADDRESSES"
                );
                for h in list {
                    let ago = now.saturating_sub(h.since);
                    println!(
                        "{:<20} {:<6} {:>10}  {:<10} {:>7} {:>9}  {}",
                        h.name,
                        if h.alive { "alive" } else { "gone" },
                        format!("{ago} s ago"),
                        h.version,
                        h.volumes.len(),
                        h.addresses.len(),
                        h.peer.unwrap_or_else(|| "-".into())
                    );
                    if let Some(hold) = h.hold_s {
                        println!("  overlay hold {hold} s");
                    }
                    for held in &h.held {
                        println!("  held {held} left");
                    }
                }
                Ok(())
            }
            ClusterCommand::Forget { host, grace_s } => {
                let done = hosts::forget(
                    cluster.as_ref(),
                    &host,
                    std::time::Duration::from_secs(grace_s),
                )
                .await?;
                println!(
                    "forgot {}: {} addresses back in the pool, {} volumes orphaned{}",
                    done.name,
                    done.addresses.len(),
                    done.orphaned.len(),
                    if done.orphaned.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", done.orphaned.join(", "))
                    }
                );
                Ok(())
            }
            ClusterCommand::Adopt { volume, host } => {
                let name = luastrip::volumes::Volumes::name(&volume).map_err(|e| e.to_string())?;
                let o =
                    luastrip::volumes::owner::adopt_for(cluster.as_ref(), &name, host.as_deref())
                        .await?;
                println!(
                    "adopted {name}: {} owns it at epoch {} (from the forgotten {}); its gateway \
                     takes its copy as the volume when it next sees the record",
                    o.owner,
                    o.epoch,
                    o.adopted_from.as_deref().unwrap_or("?")
                );
                Ok(())
            }
        }
    })
}

/// Installs SIGINT and SIGTERM handlers now; the future resolves on either signal.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
