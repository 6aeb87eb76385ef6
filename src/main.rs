//! The `luastrip` command: parse flags, set up logging, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use luastrip::call::Gateway;
use luastrip::lua::store::Store;
use luastrip::lua::{Engine, Limits, Services};
use luastrip::serve::{self, ListenOptions};
use luastrip::upstream::{Upstream, UpstreamAddr};

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
    Serve(ServeArgs),
    /// Watch and steer a running gateway through its control socket.
    Repl {
        /// The control socket of the gateway.
        #[arg(
            long,
            env = "LUASTRIP_CONTROL",
            default_value = "unix:///run/luastrip.ctl"
        )]
        control: String,
        /// Run one command and exit (e.g. -c 'calls ~m POST').
        #[arg(short = 'c')]
        command: Option<String>,
    },
    /// Load route scripts and report errors without serving.
    Check {
        /// A script file, or a directory of *.lua files.
        path: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Socket clients connect to (set DOCKER_HOST to it).
    #[arg(
        long,
        env = "LUASTRIP_LISTEN",
        default_value = "unix:///run/luastrip.sock"
    )]
    listen: String,
    /// The Docker daemon socket. Defaults to DOCKER_HOST, then unix:///var/run/docker.sock.
    #[arg(long, env = "LUASTRIP_UPSTREAM")]
    upstream: Option<String>,
    /// Permission bits of the listen socket, in octal.
    #[arg(long, env = "LUASTRIP_SOCKET_MODE", default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Group that owns the listen socket (name or gid), e.g. docker.
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
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(clap::Args)]
struct LimitArgs {
    /// Wall-clock budget of one hook call, in milliseconds.
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
    // With the REPL on the same terminal, per-call log lines would bury the prompt.
    let default_level = match &cli.command {
        Command::Serve(a) if a.repl => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUASTRIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => match serve_cmd(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("luastrip: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Repl { control, command } => {
            let path = PathBuf::from(control.strip_prefix("unix://").unwrap_or(&control));
            let stdout = std::io::stdout();
            match luastrip::repl::run(&path, command.as_deref(), &mut stdout.lock()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("luastrip repl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { path } => {
            let engine = Engine::load(Some(&path), Limits::default(), Services::default());
            match engine.and_then(|engine| engine.routes()) {
                Ok(routes) => {
                    println!("{}: ok, {} routes", path.display(), routes.len());
                    for (phase, pattern, location) in routes {
                        println!("  {phase:8} {pattern:40} {location}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve_cmd(args: ServeArgs) -> Result<(), String> {
    let listen = args
        .listen
        .strip_prefix("unix://")
        .unwrap_or(&args.listen)
        .to_string();
    if !listen.starts_with('/') {
        return Err(format!(
            "--listen {:?}: use unix:///absolute/path.sock",
            args.listen
        ));
    }
    let upstream = args
        .upstream
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
    let upstream = UpstreamAddr::parse(&upstream).map_err(|e| format!("--upstream: {e}"))?;
    let store = match &args.state {
        Some(path) => Store::open(path)?,
        None => Store::memory(),
    };
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // This runtime is worker 0; serve starts the others (see the serve module's docs).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        // Handlers first: once the socket exists, SIGTERM must mean a clean shutdown.
        let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
        // Scripts and adapters load before the socket appears: a broken script never leaves a
        // socket behind, and the first client already gets the hooks.
        let mut gateway = Gateway::new(Upstream::new(upstream.clone()));
        let mut engine_for_control = None;
        let mut watchers = Vec::new();
        if args.scripts.is_some() || args.powerstrip_config.is_some() {
            let services = Services {
                upstream: Some(upstream),
                store: Arc::new(store),
                adapters_file: args.powerstrip_config.clone(),
            };
            let engine = Engine::load(args.scripts.as_deref(), args.limits.limits(), services);
            let engine = Arc::new(engine.map_err(|e| e.to_string())?);
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
            tokio::spawn(reload_on_sighup(engine.clone(), hup));
            // Kept alive until serve returns.
            for path in args.scripts.iter().chain(args.powerstrip_config.iter()) {
                let w = luastrip::lua::reload::watch(engine.clone(), path)
                    .map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
                watchers.push(w);
            }
            engine_for_control = Some(engine.clone());
            gateway = gateway.with_hooks(engine);
        }
        // Intercept runs after the scripts: a held call shows what would be sent.
        let intercept = Arc::new(luastrip::control::intercept::Intercept::default());
        let gateway = Arc::new(gateway.with_hooks(intercept.clone()));
        // One shutdown for the gateway and its control socket (and `--repl`'s quit).
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let on_signal = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = on_signal.send(true);
        });
        let control_path = args
            .control
            .as_deref()
            .map(|c| c.strip_prefix("unix://").unwrap_or(c).to_string())
            .unwrap_or_else(|| {
                PathBuf::from(&listen)
                    .with_extension("ctl")
                    .display()
                    .to_string()
            });
        let control_listener = serve::bind(&ListenOptions {
            path: PathBuf::from(&control_path),
            mode: 0o600,
            group: None,
        })
        .map_err(|e| format!("--control: {e}"))?;
        let control = Arc::new(luastrip::control::Control {
            stats: luastrip::control::stats::Stats::follow(&gateway.journal),
            gateway: gateway.clone(),
            engine: engine_for_control,
            intercept,
            listen: PathBuf::from(&listen),
        });
        let control_task = tokio::spawn(luastrip::control::serve(
            control_listener,
            control,
            stop_rx.clone(),
        ));
        // Last: the listen socket appears once everything behind it is ready.
        let listener = serve::bind(&ListenOptions {
            path: PathBuf::from(&listen),
            mode: args.socket_mode,
            group: args.socket_group,
        })
        .map_err(|e| e.to_string())?;
        let mut stopped = stop_rx;
        let gateway_shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if args.repl {
            // The REPL blocks on the terminal: its own thread, talking to our control socket.
            let ctl = PathBuf::from(&control_path);
            let on_quit = stop_tx.clone();
            std::thread::spawn(move || {
                let stdout = std::io::stdout();
                if let Err(e) = luastrip::repl::run(&ctl, None, &mut stdout.lock()) {
                    tracing::error!(error = %e, "the REPL failed");
                }
                let _ = on_quit.send(true);
            });
        }
        let served = serve::run_gateway(listener, gateway, threads, gateway_shutdown).await;
        let _ = control_task.await;
        drop(watchers);
        served.map_err(|e| e.to_string())
    })
}

/// Reload the scripts on every SIGHUP; a failing reload keeps the old routes.
async fn reload_on_sighup(engine: Arc<Engine>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        match engine.reload() {
            Ok(n) => tracing::info!(routes = n, "scripts reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the previous scripts keep serving")
            }
        }
    }
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
