//! The life of one call, top to bottom.
//!
//! ```text
//! accept ─▶ match+pre ─┬─▶ upstream ─▶ post ─▶ reply ─┬─▶ journal
//!                      └─▶ short-circuit reply ───────┘
//! ```
//!
//! [`handle`] is the whole story: it runs the named phases in order, and whatever happens —
//! success, a gateway error, a hook failure — the journal phase runs last. Everything that
//! extends luastrip (Lua route scripts, Powerstrip adapters, helpers) plugs in through the
//! [`Hooks`] trait at the `pre` and `post` phases; nothing else forwards requests.
//! Hijacked calls (attach, exec) end their HTTP life in `reply`, which leaves the daemon side of
//! the tunnel in the connection's [`TunnelSlot`]; see [`crate::hijack`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use tracing::{info, warn};

use crate::body::{full, Body};
use crate::error::Error;
use crate::hijack::{self, Hijack, PendingTunnel, TunnelSlot};
use crate::journal::{epoch_ms, Before, CallError, CallRecord, CallStart, HookRun, Journal};
use crate::route::{kind, query, NormalPath};
use crate::upstream::Upstream;

/// The future a hook returns.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Extension points of the call life. Lua route scripts implement this; the core only calls it.
pub trait Hooks: Send + Sync + 'static {
    /// Whether this layer wants to see calls right now; an inactive layer costs nothing.
    fn active(&self) -> bool {
        true
    }

    /// Match and pre phases: inspect or edit the call, or return a response to answer it without
    /// the daemon. An error fails the call closed: nothing reaches the daemon.
    fn pre<'a>(&'a self, call: &'a mut Call) -> HookFuture<'a, Option<Response<Body>>>;

    /// Post phase: inspect or edit the daemon's response. For streaming and hijacked responses
    /// only the head may change.
    fn post<'a>(&'a self, call: &'a mut Call, res: &'a mut Response<Body>) -> HookFuture<'a, ()>;
}

/// How many times hooks may send a call to another route before it is refused as a loop (nginx
/// stops internal redirects at 10 too).
pub const MAX_REROUTES: usize = 10;

/// A call without an answer after this long is announced to start watchers.
pub const LONG_CALL: std::time::Duration = std::time::Duration::from_secs(1);

/// How much of a buffered request body the journal keeps.
pub const JOURNAL_BODY_CAP: usize = 64 << 10;

/// A body as the journal keeps it: text, at most [`JOURNAL_BODY_CAP`] bytes.
fn journal_body(b: &Bytes) -> String {
    String::from_utf8_lossy(&b[..b.len().min(JOURNAL_BODY_CAP)]).into_owned()
}

/// Shared state of a running gateway.
pub struct Gateway {
    pub upstream: Upstream,
    pub journal: Journal,
    /// Hook layers in order (the control socket's intercept, then route scripts); empty is pure
    /// pass-through, with no per-call hook overhead.
    pub hooks: Vec<Arc<dyn Hooks>>,
    /// Client connections open now (kept by the connection driver, for metrics).
    pub open_connections: AtomicU64,
    /// Hijack tunnels open now (attach, exec, sessions).
    pub open_tunnels: AtomicU64,
    /// How long a client may take to send a request head; `None`: no limit.
    pub header_timeout: Option<std::time::Duration>,
    /// A worker that has not run its event loop for this long is stuck (a script past its
    /// budget, or worse): it gets no new connections until it recovers.
    pub stuck_after: std::time::Duration,
    /// Workers stuck now (kept by the acceptor, for metrics).
    pub stuck_workers: AtomicU64,
    /// Most client connections served at once; more get a 503.
    pub max_connections: usize,
    /// How long the daemon may take to answer a call that is not a stream (`None`: forever).
    pub upstream_timeout: Option<std::time::Duration>,
    next_id: AtomicU64,
}

impl Gateway {
    /// A pass-through gateway to `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Gateway {
            upstream,
            journal: Journal::new(1024, crate::journal::DEFAULT_BYTE_CAP),
            hooks: Vec::new(),
            open_connections: AtomicU64::new(0),
            open_tunnels: AtomicU64::new(0),
            header_timeout: None,
            stuck_after: std::time::Duration::from_secs(2),
            stuck_workers: AtomicU64::new(0),
            max_connections: 4096,
            upstream_timeout: None,
            next_id: AtomicU64::new(1),
        }
    }

    /// How many calls have started so far.
    pub fn calls_started(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }

    /// Number the next call after `id` (the journal of an earlier run was restored), unless
    /// calls have gone further already.
    pub fn continue_ids_after(&self, id: u64) {
        self.next_id.fetch_max(id + 1, Ordering::Relaxed);
    }

    /// Add a hook layer; layers run in the order they were added.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks.push(hooks);
        self
    }
}

/// What one worker thread owns besides the shared [`Gateway`]: its own upstream connection pool,
/// so that no call waits on another thread (the threading model is in [`crate::serve`]).
pub struct Worker {
    pub gateway: Arc<Gateway>,
    /// This thread's pool of daemon connections.
    pub upstream: Upstream,
    /// Which worker this is (0-based); hook layers keep per-worker state by it (a Lua VM each).
    pub index: usize,
}

impl Worker {
    /// Must be created on the thread that will use it.
    pub fn new(gateway: Arc<Gateway>, index: usize) -> Self {
        let upstream = gateway.upstream.fork();
        Worker {
            gateway,
            upstream,
            index,
        }
    }
}

/// One call as it moves through the phases. Hooks read and edit it.
pub struct Call {
    pub id: u64,
    /// The worker serving the call ([`Worker::index`]).
    pub worker: usize,
    /// The request head; `method` is upper-cased, `uri` is what the client sent (its query is
    /// what is forwarded).
    pub head: http::request::Parts,
    /// The normalised path that routes match and that is forwarded.
    pub path: NormalPath,
    /// The request body; taken by the upstream phase.
    pub body: Option<Body>,
    pub hijack: Hijack,
    /// Hooks that ran, for the journal.
    pub hooks: Vec<HookRun>,
    /// Per-layer state carried from a layer's pre phase to its post phase, one typed value per
    /// layer (the Lua engine keeps its `req` table here, so that `req.ctx` reaches post hooks).
    pub state: http::Extensions,
    /// The request body as forwarded, when a hook buffered it anyway (never buffered for the
    /// journal alone); journaled up to [`JOURNAL_BODY_CAP`] for `show` and replay.
    pub buffered_body: Option<Bytes>,
    /// The response body, when a post hook buffered it (non-streaming responses only).
    pub buffered_response: Option<Bytes>,
    /// The call as it came in and the daemon's answer as it came back, for the journal's
    /// before/after ([`Before`]); `None` when no hook layer is active.
    received: Option<Received>,
    started: Instant,
    upstream_us: Option<u64>,
}

/// What a call was before the hooks touched it.
struct Received {
    method: Method,
    /// Path and query as sent.
    raw: String,
    headers: HeaderMap,
    /// The client's body, once a layer has read it.
    body: Option<Bytes>,
    /// The daemon's status and headers, before post hooks.
    response: Option<(StatusCode, HeaderMap)>,
    /// The daemon's body, once a post layer has read it.
    response_body: Option<Bytes>,
}

impl Call {
    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.head.uri.query()
    }

    /// What the request body is, by route ([`kind::request_body`]).
    pub fn request_body_kind(&self) -> kind::RequestBody {
        kind::request_body(&self.head.method, self.path.as_str())
    }

    /// Whether `res` streams on after its head: an upgrade, one of Docker's stream content types,
    /// or a streaming route ([`kind::response_streams`]). Every layer asks this, never the
    /// framing.
    pub fn response_is_stream(&self, res: &Response<Body>) -> bool {
        res.status() == StatusCode::SWITCHING_PROTOCOLS
            || hijack::is_stream_content_type(res.headers())
            || kind::response_streams(
                &self.head.method,
                self.path.as_str(),
                self.query().unwrap_or(""),
            )
    }

    /// A layer read the client's whole JSON body (`sent`): it becomes the call's body as dockerd
    /// will read it ([`crate::route::json::canonical`]: the same bytes when they are canonical),
    /// returned and forwarded, and `sent` is kept as received. What Go's decoder could read two
    /// ways is a 400 naming the key.
    pub fn adopt_json_body(&mut self, sent: Bytes) -> Result<Bytes, Error> {
        let seen =
            crate::route::json::canonical(self.head.method.as_str(), self.path.as_str(), &sent)?
                .map_or_else(|| sent.clone(), Bytes::from);
        self.note_received_body(&sent);
        self.replace_body(seen.clone());
        Ok(seen)
    }

    /// The call's whole JSON body (at most `cap` bytes), read as dockerd will read it
    /// ([`Call::adopt_json_body`]); `None` without one. A body that is not JSON is a 400.
    pub async fn read_json_body(&mut self, cap: usize) -> Result<Option<serde_json::Value>, Error> {
        let Some(body) = self.body.take() else {
            return Ok(None);
        };
        let bytes = crate::body::read_to_cap(body, cap)
            .await
            .map_err(|e| Error::client(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {e}")))?;
        let bytes = self.adopt_json_body(bytes)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::client(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        })
    }

    /// Whether the daemon answers this call only when something happens: a stream, or a stop or
    /// restart that waits for the container (as long as the client asked).
    fn waits_on_the_daemon(&self) -> bool {
        let path = self.path.as_str();
        kind::response_streams(&self.head.method, path, self.query().unwrap_or(""))
            || (self.head.method == Method::POST
                && (path.ends_with("/stop") || path.ends_with("/restart")))
    }

    /// A layer has read the client's body: keep it as received (for the journal's before/after),
    /// unless a layer before it had already replaced it.
    pub fn note_received_body(&mut self, bytes: &Bytes) {
        if let Some(r) = self.received.as_mut() {
            if r.body.is_none() && self.buffered_body.is_none() {
                r.body = Some(bytes.clone());
            }
        }
    }

    /// A post layer has read the daemon's body: keep it as the daemon sent it, unless a layer
    /// before it had already replaced it.
    pub fn note_daemon_body(&mut self, bytes: &Bytes) {
        if let Some(r) = self.received.as_mut() {
            if r.response_body.is_none() && self.buffered_response.is_none() {
                r.response_body = Some(bytes.clone());
            }
        }
    }

    /// What the hooks changed, comparing what came in with what went on (see [`Before`]).
    fn before(&self, res: Option<&Response<Body>>) -> Option<Box<Before>> {
        let r = self.received.as_ref()?;
        let mut b = Before::default();
        if r.method != self.head.method {
            b.method = Some(r.method.to_string());
        }
        let raw = self.path_and_query();
        if r.raw != raw {
            b.raw = Some(r.raw.clone());
        }
        if !same_heads(&r.headers, &self.head.headers) {
            b.request_headers = Some(r.headers.clone());
        }
        if let Some(body) = &r.body {
            // What the client sent, whenever a layer changed it: also when a later hook refused
            // the call, so that the record (and an export "as the client sent it") is the
            // client's, not the edit.
            if self.buffered_body.as_ref().is_some_and(|b| b != body) {
                b.request_body = Some(journal_body(body));
            }
        }
        if let (Some((status, headers)), Some(res)) = (&r.response, res) {
            if *status != res.status() {
                b.status = Some(status.as_u16());
            }
            if !same_heads(headers, res.headers()) {
                b.response_headers = Some(headers.clone());
            }
            if let Some(body) = &r.response_body {
                if self.buffered_response.as_ref().is_some_and(|b| b != body) {
                    b.response_body = Some(journal_body(body));
                }
            }
        }
        (!b.is_empty()).then(|| Box::new(b))
    }

    /// Path and query as the call stands (what the journal's `raw` shows).
    fn path_and_query(&self) -> String {
        self.head
            .uri
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_else(|| self.head.uri.to_string())
    }

    /// Replace the request body that is forwarded (and journaled) with `bytes`.
    pub fn replace_body(&mut self, bytes: Bytes) {
        self.head.headers.remove(header::TRANSFER_ENCODING);
        self.head
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        self.buffered_body = Some(bytes.clone());
        self.body = Some(crate::body::full(bytes));
    }

    /// Replace the query string that is forwarded.
    pub fn set_query(&mut self, query: &str) -> Result<(), Error> {
        let path = self.head.uri.path();
        let pq = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        self.head.uri = pq.parse().map_err(|e| {
            Error::client(StatusCode::BAD_REQUEST, format!("bad query {query:?}: {e}"))
        })?;
        Ok(())
    }
}

/// Serve one call. Never fails: errors become Docker JSON replies.
pub async fn handle(
    worker: &Worker,
    req: Request<Incoming>,
    tunnels: &TunnelSlot,
) -> Response<Body> {
    let gw = &*worker.gateway;
    let started = Instant::now();
    let started_at = SystemTime::now();
    let id = gw.next_id.fetch_add(1, Ordering::Relaxed);
    let (head, body) = req.into_parts();

    // The call as received is kept for the hooks' before/after, and for recordings.
    let keep = gw.hooks.iter().any(|h| h.active()) || gw.journal.is_recording();
    let (call, accepted) = accept(id, worker.index, head, body, started, keep);
    // The journal phase runs even when hyper drops this future because the client went away.
    let mut record = Journaling {
        gw,
        started_at,
        call: Some(call),
    };
    let call = record
        .call
        .as_mut()
        .expect("the call is journaled only at the end");
    let result = match accepted {
        Ok(()) if gw.journal.start_watchers() > 0 => {
            // Someone tails starts: a call still unanswered after LONG_CALL is announced then.
            let start = CallStart {
                id,
                started_ms: epoch_ms(started_at),
                method: call.head.method.to_string(),
                raw: call.head.uri.to_string(),
                path: call.path.to_string(),
            };
            let running = phases(worker, call, tunnels);
            tokio::pin!(running);
            tokio::select! {
                r = &mut running => r,
                _ = tokio::time::sleep(LONG_CALL) => {
                    gw.journal.announce_start(start);
                    running.await
                }
            }
        }
        Ok(()) => phases(worker, call, tunnels).await,
        Err(e) => Err(e),
    };
    let (mut res, err) = match result {
        Ok(res) => (res, None),
        Err(err) => (err.to_response(), Some(err)),
    };
    // Answered before its body was read (a deny, an endpoint, an error): the rest is read and
    // dropped in the background, so that the client finishes sending and then reads the answer.
    if let Some(Either::Left(body)) = record.call.as_mut().and_then(|c| c.body.take()) {
        linger(body);
    }
    let streaming = record.finish(&res, err);
    if streaming && gw.journal.is_recording() {
        // The connection driver counts what the stream carries, for the recording.
        res.extensions_mut().insert(CountStream(id));
    }
    res
}

/// How much of an unread request body [`linger`] reads, and for how long, before it lets the
/// connection close (nginx's lingering close reads for up to 30 s).
const LINGER_BYTES: usize = 64 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Read and drop what is left of a request body that the call was answered without. Closing a
/// connection with unread data resets it: a client still sending (a `docker build` context, an
/// image to load) would see a broken pipe instead of the answer, such as a policy's refusal.
fn linger(mut body: Incoming) {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let read = async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, read).await;
    });
}

/// On a streamed answer while calls are recorded: count its bytes for call `.0`
/// ([`crate::journal::Journal::stream_ended`]).
#[derive(Debug, Clone, Copy)]
pub struct CountStream(pub u64);

/// accept → match+pre → upstream → post → reply.
async fn phases(
    worker: &Worker,
    call: &mut Call,
    tunnels: &TunnelSlot,
) -> Result<Response<Body>, Error> {
    let gw = &*worker.gateway;
    let recording = gw.journal.is_recording();
    if recording {
        keep_request_body(call).await?;
    }
    if let Some(mut answer) = pre(gw, call).await? {
        // A hook's own answer (a deny, an endpoint) is journaled with its body, so that `show`
        // displays the message and `~b` finds it.
        if let Either::Right(full_body) = answer.body_mut() {
            let Ok(collected) = http_body_util::BodyExt::collect(std::mem::take(full_body)).await;
            let bytes = collected.to_bytes();
            call.buffered_response = Some(bytes.clone());
            *answer.body_mut() = crate::body::full(bytes);
        }
        return Ok(answer);
    }
    let mut res = upstream(&worker.upstream, call, gw.upstream_timeout).await?;
    if recording {
        keep_response_body(call, &mut res).await?;
    }
    if let Some(r) = call.received.as_mut() {
        let mut headers = res.headers().clone();
        strip_hop_by_hop(&mut headers);
        r.response = Some((res.status(), headers));
    }
    for hooks in gw.hooks.iter().filter(|h| h.active()) {
        hooks.post(call, &mut res).await?;
    }
    Ok(reply(call, res, tunnels))
}

/// A body's declared length, when it is at most [`JOURNAL_BODY_CAP`]: what a recording keeps
/// (a body without a length, or a longer one, is never held back; it is recorded as heads).
fn recordable_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= JOURNAL_BODY_CAP)
}

/// While calls are recorded: a JSON request body with a known, small length is read before the
/// hooks, so that the recording has it (`luastrip test` replays it). The hooks get the same
/// bytes; nothing else changes.
async fn keep_request_body(call: &mut Call) -> Result<(), Error> {
    if call.request_body_kind() != kind::RequestBody::Json || call.hijack != Hijack::No {
        return Ok(());
    }
    let Some(len) = recordable_length(&call.head.headers) else {
        return Ok(());
    };
    let Some(body) = call.body.take() else {
        return Ok(());
    };
    let bytes = crate::body::read_to_cap(body, len).await.map_err(|e| {
        Error::client(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )
    })?;
    call.note_received_body(&bytes);
    call.body = Some(full(bytes));
    Ok(())
}

/// While calls are recorded: the daemon's answer, when it is not a stream and its length is
/// known and small, is read before the post hooks so that the recording has it.
async fn keep_response_body(call: &mut Call, res: &mut Response<Body>) -> Result<(), Error> {
    if call.response_is_stream(res) {
        return Ok(());
    }
    let Some(len) = recordable_length(res.headers()) else {
        return Ok(());
    };
    let body = std::mem::replace(res.body_mut(), full(Bytes::new()));
    let bytes = crate::body::read_to_cap(body, len)
        .await
        .map_err(|e| Error::Daemon {
            upstream: "daemon".into(),
            reason: format!("reading the response body: {e}"),
        })?;
    call.note_daemon_body(&bytes);
    *res.body_mut() = full(bytes);
    Ok(())
}

/// match+pre: every active layer's pre hooks, in order. A hook that sends the call to another
/// route (method or path) has the new route's hooks run too: the whole chain runs again on the
/// new route, as nginx's internal redirects do, at most [`MAX_REROUTES`] times. The hijack class
/// is then taken from the request as it will be sent.
async fn pre(gw: &Gateway, call: &mut Call) -> Result<Option<Response<Body>>, Error> {
    let mut seen = vec![format!("{} {}", call.head.method, call.path)];
    loop {
        let route = (call.head.method.clone(), call.path.clone());
        for hooks in gw.hooks.iter().filter(|h| h.active()) {
            if let Some(answer) = hooks.pre(call).await? {
                return Ok(Some(answer));
            }
        }
        if (&call.head.method, &call.path) == (&route.0, &route.1) {
            break;
        }
        seen.push(format!("{} {}", call.head.method, call.path));
        if seen.len() > MAX_REROUTES {
            return Err(Error::Script {
                location: "route rewrites".into(),
                reason: format!(
                    "hooks rewrote the call {MAX_REROUTES} times without settling (a loop?): {}",
                    seen.join(" → ")
                ),
            });
        }
    }
    call.hijack = Hijack::classify(&call.head.method, call.path.as_str(), &call.head.headers);
    Ok(None)
}

/// accept: number the call, normalise its path and check its query, classify hijacks. A call
/// that cannot be served as sent is still returned (with the root path and its raw target), so
/// that it is journaled like any other.
fn accept(
    id: u64,
    worker: usize,
    mut head: http::request::Parts,
    body: Incoming,
    started: Instant,
    keep_received: bool,
) -> (Call, Result<(), Error>) {
    // Methods are case-sensitive on the wire; a lower-case "post" must not dodge a POST route.
    if head.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        match Method::from_bytes(head.method.as_str().to_ascii_uppercase().as_bytes()) {
            Ok(m) => head.method = m,
            Err(_) => unreachable!("an upper-cased valid method is valid"),
        }
    }
    let bad = |e: &dyn std::fmt::Display| Error::client(StatusCode::BAD_REQUEST, e.to_string());
    // An absolute-form target (http://host/path) is routed by its path, as Go's server does; an
    // authority-form one (host:port) or `*` has no path and is refused, as Go refuses it.
    let (path, mut accepted) = match NormalPath::parse(head.uri.path()) {
        Ok(p) => (p, Ok(())),
        Err(e) => (NormalPath::root(), Err(bad(&e))),
    };
    if let (Ok(()), Some(q)) = (&accepted, head.uri.query()) {
        let checked = query::validate(q).map_err(|e| bad(&e)).and_then(|()| {
            // Build options carry JSON in the query: checked as bodies are.
            if head.method != Method::POST || path.as_str() != "/build" {
                return Ok(());
            }
            let pairs = query::pairs(q);
            crate::route::json::check_query(head.method.as_str(), path.as_str(), &pairs)
                .map_err(|e| bad(&e))
        });
        if let Err(e) = checked {
            accepted = Err(e);
        }
    }
    let hijack = Hijack::classify(&head.method, path.as_str(), &head.headers);
    let received = keep_received.then(|| Received {
        method: head.method.clone(),
        raw: head
            .uri
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_else(|| head.uri.to_string()),
        headers: head.headers.clone(),
        body: None,
        response: None,
        response_body: None,
    });
    let call = Call {
        id,
        worker,
        head,
        path,
        body: Some(Either::Left(body)),
        hijack,
        hooks: Vec::new(),
        state: http::Extensions::new(),
        buffered_body: None,
        buffered_response: None,
        received,
        started,
        upstream_us: None,
    };
    (call, accepted)
}

/// upstream: send the (possibly edited) call to the daemon, return its response head. A call that
/// is not a stream (nor a stop or restart, which wait as long as the client asked) gets its head
/// within `timeout`.
async fn upstream(
    upstream: &Upstream,
    call: &mut Call,
    timeout: Option<std::time::Duration>,
) -> Result<Response<Body>, Error> {
    let timeout = timeout.filter(|_| call.hijack == Hijack::No && !call.waits_on_the_daemon());
    let mut pq = call.path.to_wire();
    if let Some(q) = call.head.uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    let mut req = Request::new(call.body.take().unwrap_or_else(|| full(Bytes::new())));
    *req.method_mut() = call.head.method.clone();
    *req.uri_mut() = pq
        .parse()
        .map_err(|e| Error::client(StatusCode::BAD_REQUEST, format!("bad request target: {e}")))?;
    *req.headers_mut() = call.head.headers.clone();
    *req.extensions_mut() = std::mem::take(&mut call.head.extensions);
    if call.hijack == Hijack::No {
        strip_hop_by_hop(req.headers_mut());
    } else {
        remove_framing(req.headers_mut());
        call.hijack.prepare_upstream(req.headers_mut());
    }
    let t = Instant::now();
    let res = match timeout {
        None => upstream.send(req).await?,
        Some(limit) => tokio::time::timeout(limit, upstream.send(req))
            .await
            .map_err(|_| Error::DaemonTimeout {
                upstream: upstream.addr().to_string(),
                what: format!("{} {}", call.head.method, call.path),
                after_s: limit.as_secs(),
            })??,
    };
    call.upstream_us = Some(t.elapsed().as_micros() as u64);
    Ok(res.map(Either::Left))
}

/// reply: shape the daemon's response for the client; hand hijacks to the connection driver.
fn reply(call: &Call, mut res: Response<Body>, tunnels: &TunnelSlot) -> Response<Body> {
    if res.status() == StatusCode::SWITCHING_PROTOCOLS && call.hijack != Hijack::No {
        let upstream = hyper::upgrade::on(&mut res);
        tunnels.put(PendingTunnel {
            call_id: call.id,
            upstream,
        });
        let (mut parts, _) = res.into_parts();
        if call.hijack == Hijack::Legacy {
            // The old client expects the daemon's non-upgrade answer: 200 + raw stream. The
            // connection ends as HTTP here; the driver takes the socket back for the tunnel.
            parts.status = StatusCode::OK;
            parts.extensions.remove::<hyper::ext::ReasonPhrase>();
            parts.headers.remove(header::UPGRADE);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Response::from_parts(parts, full(Bytes::new()));
    }
    strip_hop_by_hop(res.headers_mut());
    res
}

/// The journal phase, as a guard: [`Journaling::finish`] records the answered call; a call whose
/// future is dropped first (the client went away) is recorded when the guard drops, with no
/// status and the hooks that had run.
struct Journaling<'a> {
    gw: &'a Gateway,
    started_at: SystemTime,
    call: Option<Call>,
}

impl Journaling<'_> {
    /// journal: always last. One record and one log line per call. Whether the answer's body
    /// is a stream.
    fn finish(mut self, res: &Response<Body>, err: Option<Error>) -> bool {
        let Some(call) = self.call.take() else {
            return false;
        };
        let streaming = call.response_is_stream(res);
        // A hijacked call's bytes are the tunnel's, counted by the connection driver.
        let body_streams = streaming && call.hijack == Hijack::No;
        journal(self.gw, call, self.started_at, Some(res), streaming, err);
        body_streams
    }
}

impl Drop for Journaling<'_> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let err = Error::client(
                StatusCode::BAD_REQUEST,
                "the client went away before the answer; the call was cancelled",
            );
            journal(self.gw, call, self.started_at, None, false, Some(err));
        }
    }
}

fn journal(
    gw: &Gateway,
    call: Call,
    started_at: SystemTime,
    res: Option<&Response<Body>>,
    streaming: bool,
    err: Option<Error>,
) {
    let duration_us = call.started.elapsed().as_micros() as u64;
    let status = res.map(|r| r.status().as_u16());
    match &err {
        None => info!(
            call = call.id,
            method = %call.head.method,
            path = %call.path,
            status,
            duration_us,
            "call"
        ),
        Some(e) => warn!(
            call = call.id,
            method = %call.head.method,
            path = %call.path,
            status,
            duration_us,
            source = ?e.source_kind(),
            error = %e,
            "call failed"
        ),
    }
    let cancelled = res.is_none();
    let before = call.before(res);
    let replay_of = call
        .head
        .headers
        .get(crate::journal::REPLAY_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    gw.journal.record(CallRecord {
        id: call.id,
        started_ms: epoch_ms(started_at),
        method: call.head.method.to_string(),
        path: call.path.to_string(),
        raw: call.path_and_query(),
        version: call.path.version().map(str::to_string),
        status,
        cancelled,
        duration_us,
        upstream_us: call.upstream_us,
        hijack: call.hijack,
        streaming,
        hooks: call.hooks,
        error: err.map(|e| CallError {
            source: e.source_kind(),
            message: e.to_string(),
        }),
        request_headers: call.head.headers,
        request_body: call
            .buffered_body
            .as_ref()
            .or(call.received.as_ref().and_then(|r| r.body.as_ref()))
            .map(journal_body),
        response_headers: res.map(|r| r.headers().clone()).unwrap_or_default(),
        response_body: call
            .buffered_response
            .as_ref()
            .or(call
                .received
                .as_ref()
                .and_then(|r| r.response_body.as_ref()))
            .map(journal_body),
        replay_of,
        before,
        stream_bytes: None,
    });
}

/// Whether two heads are the same but for framing and hop-by-hop headers, which follow the body
/// and the connection rather than the hooks.
fn same_heads(a: &HeaderMap, b: &HeaderMap) -> bool {
    let strip = |h: &HeaderMap| {
        let mut h = h.clone();
        strip_hop_by_hop(&mut h);
        h.remove(header::CONTENT_LENGTH);
        h
    };
    a == b || strip(a) == strip(b)
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1). hyper frames each side
/// itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION).cloned() {
        if let Ok(list) = conn.to_str() {
            for name in list.split(',') {
                let name = name.trim();
                if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
                    headers.remove(name);
                }
            }
        }
    }
    for h in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    remove_framing(headers);
}

/// Body framing is hyper's job on each side; a stale Transfer-Encoding would contradict it.
fn remove_framing(headers: &mut HeaderMap) {
    headers.remove(header::TRANSFER_ENCODING);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_named_ones_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Foo"),
        );
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
