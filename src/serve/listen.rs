//! The listening side: one acceptor deals client connections to thread-per-core workers, each
//! serving its connections' calls through the [`crate::call`] driver.
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

use super::{count_stream, SHUTDOWN_GRACE};
use crate::call::{self, Gateway, Worker};
use crate::hijack::{self, TunnelSlot};
use crate::socket::Listener;
use crate::stream::Stream;

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
