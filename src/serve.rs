//! The listening side: the Unix socket clients connect to, one task per client connection, and a
//! clean shutdown.
//!
//! [`bind`] makes the socket appear only when it is ready: it binds under a temporary name, sets
//! mode and group, then renames it into place, so a client never sees a socket with the wrong
//! permissions or one nobody accepts on. A socket file left by a crashed run is replaced; one that
//! a live process answers on is refused. [`run`] accepts connections until the shutdown future
//! resolves, then removes the socket, lets in-flight calls finish (up to [`SHUTDOWN_GRACE`]) and
//! returns.
//!
//! # Threads
//!
//! luastrip runs thread-per-core: `threads` workers, each a single-threaded Tokio runtime with its
//! own upstream pool ([`Worker`]) and Lua VM. One acceptor deals client connections to the workers
//! round-robin; from then on a call, its daemon connection and its tunnel all live on that
//! worker's thread, so the hot path has no cross-thread hand-off (only each new connection
//! crosses once). Measured (see `bench/RESULTS.md`): on a 2-core machine a
//! work-stealing runtime spent 44 % of its samples in the kernel's wake-up and context-switch
//! paths and served 35k pass-through calls/s; thread-per-core serves about 50k.

use std::future::{poll_fn, Future};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::call::{self, Gateway, Worker};
use crate::hijack::{self, TunnelSlot};
use crate::upstream::Upstream;

/// How long in-flight calls (and open streams) may run on after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub path: PathBuf,
    /// Permission bits of the socket file, e.g. `0o660`.
    pub mode: u32,
    /// Group name or numeric gid to own the socket (e.g. `docker`); `None` keeps ours.
    pub group: Option<String>,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "{path} is in use: a running process answers on it (stop it, or choose another --listen)"
    )]
    InUse { path: String },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
    #[error("no such group {0:?} for --socket-group")]
    NoGroup(String),
    #[error("cannot set up {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A bound, ready listen socket. Dropping it removes the socket file if it is still ours.
pub struct Listener {
    /// A std listener, so that every worker runtime can register its own clone.
    inner: std::os::unix::net::UnixListener,
    path: PathBuf,
    /// Inode of our socket file, so we never remove a successor's socket.
    ino: u64,
}

impl Listener {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bound socket, for a server that accepts on it itself (the control socket).
    pub fn std_listener(&self) -> &std::os::unix::net::UnixListener {
        &self.inner
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).map(|m| m.ino()).ok() == Some(self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind the listen socket (see the module docs).
pub fn bind(opts: &ListenOptions) -> Result<Listener, BindError> {
    let path = &opts.path;
    let shown = path.display().to_string();
    let io_err = |source| BindError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket { path: shown })
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse { path: shown }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                info!(path = %shown, "replacing a stale socket left by an earlier run");
            }
            Err(e) => return Err(io_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let gid = match &opts.group {
        None => None,
        Some(g) => Some(lookup_group(g)?),
    };
    let tmp = temp_name(path);
    let _ = std::fs::remove_file(&tmp);
    let inner = std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err)?;
    let ready = (|| {
        inner.set_nonblocking(true)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opts.mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::metadata(path).map(|m| m.ino())
    })();
    match ready {
        Ok(ino) => Ok(Listener {
            inner,
            path: path.clone(),
            ino,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_err(e))
        }
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}~", std::process::id()));
    PathBuf::from(name)
}

fn lookup_group(group: &str) -> Result<u32, BindError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(BindError::NoGroup(group.to_string())),
    }
}

/// Serve a pass-through gateway to `upstream` until `shutdown` resolves, on one worker per core.
pub async fn run(
    listener: Listener,
    upstream: Upstream,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_gateway(
        listener,
        Arc::new(Gateway::new(upstream)),
        threads,
        shutdown,
    )
    .await
}

/// Serve `gateway` (pass-through or with hooks) on `threads` workers until `shutdown` resolves.
/// The calling runtime is one of the workers; the others get a thread and a runtime each.
pub async fn run_gateway(
    listener: Listener,
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    let mut others = Vec::new();
    for n in 1..threads.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        workers.push(tx);
        let gateway = gateway.clone();
        let stop = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("luastrip-worker-{n}"))
            .spawn(move || -> io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(worker(rx, gateway, stop))
            })?;
        others.push(thread);
    }
    // This runtime is a worker too.
    let (tx, rx) = mpsc::unbounded_channel();
    workers.push(tx);
    let mine = tokio::spawn(worker(rx, gateway, stop_rx));

    // One acceptor deals connections round-robin: a shared accept would let one worker win
    // most of them and leave the other core idle.
    let accept = UnixListener::from_std(listener.inner.try_clone()?)?;
    let mut next = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept.accept() => match accepted.and_then(|(s, _)| s.into_std()) {
                Ok(stream) => {
                    let _ = workers[next].send(stream);
                    next = (next + 1) % workers.len();
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    info!("shutting down: no new connections; finishing calls in flight");
    // Remove the socket first so that no client connects to a gateway that is going away.
    drop(accept);
    drop(listener);
    drop(workers);
    let _ = stop_tx.send(true);
    let mut result = mine.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    for t in others {
        let joined = tokio::task::spawn_blocking(move || t.join())
            .await
            .map_err(io::Error::other)
            .and_then(|r| r.unwrap_or_else(|_| Err(io::Error::other("a worker thread panicked"))));
        if result.is_ok() {
            result = joined;
        }
    }
    result
}

/// One worker: serve the connections dealt to it on this thread until told to stop, then give
/// calls in flight up to [`SHUTDOWN_GRACE`].
async fn worker(
    mut incoming: mpsc::UnboundedReceiver<std::os::unix::net::UnixStream>,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let worker = Arc::new(Worker::new(gateway));
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            stream = incoming.recv() => match stream {
                Some(stream) => match UnixStream::from_std(stream) {
                    Ok(stream) => {
                        tracker.spawn(connection(stream, worker.clone(), stop.clone()));
                    }
                    Err(e) => warn!(error = %e, "cannot register a client connection"),
                },
                None => break,
            }
        }
    }
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
async fn connection(stream: UnixStream, worker: Arc<Worker>, mut stop: watch::Receiver<bool>) {
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
                Ok::<_, std::convert::Infallible>(call::handle(&worker, req, &tunnels).await)
            })
        })
    };
    let mut conn = http1::Builder::new()
        // The daemon (Go) writes every header name in canonical Title-Case; so do we, which
        // reproduces its heads exactly without hyper's costly per-message case maps.
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
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
                Ok(s) => debug!(
                    call = call_id,
                    client_to_daemon = s.client_to_daemon,
                    daemon_to_client = s.daemon_to_client,
                    "tunnel closed"
                ),
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
