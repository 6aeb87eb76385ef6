//! The control socket: HTTP/JSON on a Unix socket (mode 0600 — it can reload the scripts and run
//! code in the gateway, `POST /eval`) for watching and steering a running gateway. `luastrip repl` and curl
//! are its clients.
//!
//! | call | answer |
//! |---|---|
//! | `GET /calls?filter=F&limit=N` | the last N (default 100) matching call records, oldest first |
//! | `GET /calls/{id}` | one call record: heads, status, timings, hooks run, error |
//! | `GET /tail?filter=F` | NDJSON: every matching call record as the call finishes, and calls still unanswered after a second as they start |
//! | `GET /routes` | every hook: phase, pattern, `file:line`, hits, errors, p50/p99 time |
//! | `GET /metrics` | Prometheus text: calls by method/status, errors by source, hooks, streams, and the helpers' gauges (`luastrip_cluster_reachable`) |
//! | `POST /reload` | reload scripts and `adapters.yml`; a failure keeps the old routes |
//! | `POST /intercept` | hold calls matching the filter in the body (empty or `off`: stop, and let every held call go on) |
//! | `GET /intercepted` | the held calls |
//! | `POST /intercepted/{id}/resume` | let it go on, edited by an optional JSON body (method, path, headers, body) |
//! | `POST /intercepted/{id}/drop` | refuse it: the client gets a 403 Docker error |
//! | `POST /intercepted/all/resume`, `…/all/drop` | the same for every held call |
//! | `POST /replay/{id}` | send a journaled call again through the gateway (optional JSON edit) |
//! | `GET /record` | the files calls are being recorded to: file, calls written, calls dropped |
//! | `POST /record` | start recording every call to the file named in the body (absolute path; appended, mode 0600, secrets redacted) |
//! | `POST /record/stop` | stop recording to the file in the body, or (empty body) to every file but `--journal`'s |
//! | `POST /eval` | run the Lua chunk in the body in a gateway VM (same globals as hooks) → `{result, printed}` (what `print` wrote) |
//!
//! It hangs off the journal and the script engine; it never forwards Docker calls itself.

pub mod client;
pub mod filter;
pub mod intercept;
pub mod stats;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, watch};

use crate::call::Gateway;
use crate::lua::Engine;

type ControlBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the control socket can see and steer.
pub struct Control {
    pub gateway: Arc<Gateway>,
    /// The script engine, when scripts or adapters are loaded.
    pub engine: Option<Arc<Engine>>,
    /// Aggregates following the journal.
    pub stats: stats::Stats,
    /// The intercept hook layer (installed in the gateway too).
    pub intercept: Arc<intercept::Intercept>,
    /// The gateway's listen socket: replays go through it, so they take every phase again.
    pub listen: std::path::PathBuf,
    /// What `record` leaves out of the files it writes.
    pub redactor: crate::journal::record::Redactor,
    /// Gauges the helpers add to `/metrics` (the cluster store's reachability).
    pub gauges: Vec<Gauge>,
}

/// A gauge for `/metrics`: its name, its help line, and how to read it now.
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub read: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// Serve the control socket until `stop` turns true.
pub async fn serve(
    listener: crate::socket::Listener,
    control: Arc<Control>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let accept = UnixListener::from_std(listener.std_listener().try_clone()?)?;
    let handler = move |req, ()| {
        let control = control.clone();
        async move { route(&control, req).await }
    };
    crate::socket::serve_http("control", accept, handler, stop).await;
    drop(listener);
    Ok(())
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<ControlBody> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut res = Response::new(Full::new(Bytes::from(body)).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn message(status: StatusCode, m: &str) -> Response<ControlBody> {
    json(status, &serde_json::json!({ "message": m }))
}

async fn route(control: &Control, req: Request<Incoming>) -> Response<ControlBody> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let journal = &control.gateway.journal;
    let param = |name: &str| crate::route::query::first(&query, name).map(|v| v.into_owned());
    let filter = match param("filter").filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(text) => match filter::Filter::parse(&text) {
            Ok(f) => Some(f),
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({
                        "message": e.to_string(),
                        "position": e.position,
                        "caret": e.caret(&text),
                    }),
                )
            }
        },
    };
    match (req.method().clone(), segs.as_slice()) {
        (Method::GET, ["calls"]) => {
            let limit = param("limit")
                .map(|n| n.parse::<usize>())
                .unwrap_or(Ok(100));
            match limit {
                Ok(n) => {
                    let all = journal.recent(usize::MAX);
                    let records = client::select(all.iter().map(|r| &**r), filter.as_ref(), n);
                    json(StatusCode::OK, &records)
                }
                Err(_) => message(StatusCode::BAD_REQUEST, "limit must be a number"),
            }
        }
        (Method::GET, ["calls", id]) => match id.parse::<u64>().ok().and_then(|id| journal.get(id))
        {
            Some(rec) => json(StatusCode::OK, &*rec),
            None => message(
                StatusCode::NOT_FOUND,
                &format!("no call {id} in the journal"),
            ),
        },
        (Method::GET, ["tail"]) => tail(
            journal.subscribe(),
            journal.subscribe_starts(),
            journal.subscribe_helper_events(),
            filter,
        ),
        (Method::GET, ["routes"]) => match &control.engine {
            None => json(StatusCode::OK, &Vec::<()>::new()),
            Some(engine) => {
                let list: Vec<_> = engine
                    .routes()
                    .into_iter()
                    .map(|(phase, pattern, location)| {
                        let st = control.stats.route(phase, &pattern, &location);
                        serde_json::json!({
                            "phase": phase, "pattern": pattern, "location": location,
                            "hits": st.hits, "errors": st.errors,
                            "p50_us": st.quantile(0.5), "p99_us": st.quantile(0.99),
                        })
                    })
                    .collect();
                json(StatusCode::OK, &list)
            }
        },
        (Method::GET, ["metrics"]) => {
            use std::fmt::Write as _;
            let mut text = control.stats.prometheus();
            let g = &control.gateway;
            for (name, help, v) in [
                (
                    "luastrip_open_connections",
                    "Client connections open now.",
                    &g.open_connections,
                ),
                (
                    "luastrip_open_tunnels",
                    "Hijacked sessions (attach, exec) open now.",
                    &g.open_tunnels,
                ),
                (
                    "luastrip_workers_stuck",
                    "Workers whose event loop has not run for longer than a hook may (they get no new connections).",
                    &g.stuck_workers,
                ),
            ] {
                let _ = writeln!(
                    text,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                    v.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
            for g in &control.gauges {
                let _ = writeln!(
                    text,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                    (g.read)(),
                    name = g.name,
                    help = g.help
                );
            }
            let mut res = Response::new(Full::new(Bytes::from(text)).boxed());
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            res
        }
        (Method::POST, ["reload"]) => match &control.engine {
            None => message(StatusCode::CONFLICT, "no scripts or adapters are loaded"),
            Some(engine) => match engine.reload().await {
                Ok(n) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "reloaded": true, "routes": n }),
                ),
                Err(e) => message(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
            },
        },
        (Method::POST, ["intercept"]) => {
            let text = match body_text(req).await {
                Ok(t) => t,
                Err(res) => return res,
            };
            if text.is_empty() || text == "off" {
                let released = control.intercept.set(None);
                return json(
                    StatusCode::OK,
                    &serde_json::json!({ "intercept": null, "released": released }),
                );
            }
            match filter::Filter::parse(&text) {
                Ok(f) => {
                    control.intercept.set(Some((text.clone(), f)));
                    json(StatusCode::OK, &serde_json::json!({ "intercept": text }))
                }
                Err(e) => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"message": e.to_string(), "position": e.position, "caret": e.caret(&text)}),
                ),
            }
        }
        (Method::GET, ["intercepted"]) => json(
            StatusCode::OK,
            &serde_json::json!({ "filter": control.intercept.filter_text(), "held": control.intercept.held() }),
        ),
        (Method::POST, ["intercepted", "all", action]) => {
            let n = match *action {
                "resume" => control.intercept.resume_all(),
                "drop" => control.intercept.drop_all(),
                other => {
                    return message(
                        StatusCode::NOT_FOUND,
                        &format!("no action {other:?} (resume, drop)"),
                    )
                }
            };
            json(
                StatusCode::OK,
                &serde_json::json!({ "done": action, "calls": n }),
            )
        }
        (Method::POST, ["intercepted", id, action]) => {
            let Ok(id) = id.parse::<u64>() else {
                return message(StatusCode::BAD_REQUEST, "the call id must be a number");
            };
            let done = match *action {
                "drop" => control.intercept.drop_call(id),
                "resume" => match read_edit(req).await {
                    Ok(edit) => control.intercept.resume(id, edit),
                    Err(res) => return res,
                },
                other => {
                    return message(
                        StatusCode::NOT_FOUND,
                        &format!("no action {other:?} (resume, drop)"),
                    )
                }
            };
            if done {
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "id": id, "done": action }),
                )
            } else {
                message(StatusCode::NOT_FOUND, &format!("call {id} is not held"))
            }
        }
        (Method::POST, ["replay", id]) => {
            let Some(rec) = id.parse::<u64>().ok().and_then(|id| journal.get(id)) else {
                return message(
                    StatusCode::NOT_FOUND,
                    &format!("no call {id} in the journal"),
                );
            };
            let edit = match read_edit(req).await {
                Ok(edit) => edit,
                Err(res) => return res,
            };
            match replay(control, &rec, edit).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err((status, m)) => message(status, &m),
            }
        }
        (Method::GET, ["record"]) => json(StatusCode::OK, &journal.recordings()),
        (Method::POST, ["record"]) => {
            let file = match body_text(req).await {
                Ok(f) => f,
                Err(res) => return res,
            };
            let path = std::path::Path::new(&file);
            if !path.is_absolute() {
                return message(
                    StatusCode::BAD_REQUEST,
                    &format!("record needs an absolute path, not {file:?}"),
                );
            }
            let recorder = match crate::journal::record::Recorder::open(
                path,
                control.redactor.clone(),
                None,
            ) {
                Ok(r) => r,
                Err(e) => {
                    return message(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot record to {file}: {e}"),
                    )
                }
            };
            match journal.record_to(recorder, false) {
                Ok(status) => json(StatusCode::OK, &status),
                Err(m) => message(StatusCode::CONFLICT, &m),
            }
        }
        (Method::POST, ["record", "stop"]) => {
            let file = match body_text(req).await {
                Ok(f) => f,
                Err(res) => return res,
            };
            let which = (!file.is_empty()).then(|| std::path::PathBuf::from(&file));
            let stopped = journal.stop_recording(which.as_deref());
            if stopped.is_empty() && which.is_some() {
                return message(
                    StatusCode::NOT_FOUND,
                    &format!("{file} is not being recorded (record lists what is)"),
                );
            }
            json(StatusCode::OK, &stopped)
        }
        (Method::POST, ["eval"]) => {
            let Some(engine) = &control.engine else {
                return message(
                    StatusCode::CONFLICT,
                    "no scripts are loaded (start with --scripts)",
                );
            };
            let code = match req.into_body().collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(e) => return message(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match engine.eval(&code).await {
                Ok((v, printed)) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "result": v, "printed": printed }),
                ),
                Err(e) => message(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
            }
        }
        (_, _) => message(StatusCode::NOT_FOUND, &format!("no control call {path}")),
    }
}

/// A request body as trimmed text.
async fn body_text(req: Request<Incoming>) -> Result<String, Response<ControlBody>> {
    match req.into_body().collect().await {
        Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).trim().to_string()),
        Err(e) => Err(message(StatusCode::BAD_REQUEST, &e.to_string())),
    }
}

/// An optional JSON edit (method, path, headers, body) from a request body; empty is no edit.
async fn read_edit(req: Request<Incoming>) -> Result<intercept::Edit, Response<ControlBody>> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| message(StatusCode::BAD_REQUEST, &e.to_string()))?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(intercept::Edit::default());
    }
    serde_json::from_slice(&body).map_err(|e| {
        message(
            StatusCode::BAD_REQUEST,
            &format!("the edit is not JSON: {e}"),
        )
    })
}

/// What the filter sees of a call that has started but not finished.
fn probe(start: &crate::journal::CallStart) -> crate::journal::CallRecord {
    let mut rec =
        crate::journal::CallRecord::unfinished(start.id, &start.method, &start.path, &start.raw);
    rec.started_ms = start.started_ms;
    rec
}

/// Send a journaled call again, through the gateway's own socket.
async fn replay(
    control: &Control,
    rec: &crate::journal::CallRecord,
    edit: intercept::Edit,
) -> Result<serde_json::Value, (StatusCode, String)> {
    if rec.hijack != crate::hijack::Hijack::No {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "call {} was a hijacked session; it cannot be replayed",
                rec.id
            ),
        ));
    }
    let had_body = rec
        .request_headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || rec.request_headers.contains_key(header::TRANSFER_ENCODING);
    let body = match (edit.body, &rec.request_body) {
        (Some(b), _) => b,
        (None, Some(b)) => b.clone(),
        (None, None) if had_body => {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "the body of call {} streamed through and was not journaled; give one: {{\"body\": \"...\"}}",
                    rec.id
                ),
            ))
        }
        (None, None) => String::new(),
    };
    let method = edit.method.unwrap_or_else(|| rec.method.clone());
    let path = edit.path.unwrap_or_else(|| rec.raw.clone());
    let mut builder = Request::builder()
        .method(method.as_str())
        .uri(path.as_str());
    match edit.headers {
        Some(h) => {
            for (k, v) in h {
                builder = builder.header(k, v);
            }
        }
        None => {
            for (k, v) in &rec.request_headers {
                if k != header::CONTENT_LENGTH
                    && k != header::TRANSFER_ENCODING
                    && k != header::CONNECTION
                {
                    builder = builder.header(k, v);
                }
            }
        }
    }
    let len = body.len();
    let mut req = builder
        .body(crate::body::full(Bytes::from(body)))
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad replay: {e}")))?;
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    req.headers_mut()
        .entry(header::HOST)
        .or_insert(HeaderValue::from_static("docker"));
    req.headers_mut()
        .insert(crate::journal::REPLAY_HEADER, HeaderValue::from(rec.id));
    let url = crate::outbound::Url::parse(&format!("unix://{}:{path}", control.listen.display()))
        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let res = crate::outbound::Outbound::new()
        .send(&url, req, std::time::Duration::from_secs(60))
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("replay failed: {e}")))?;
    let status = res.status().as_u16();
    let bytes = http_body_util::Limited::new(res.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                format!("reading the replayed answer: {e}"),
            )
        })?
        .to_bytes();
    let body = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(serde_json::json!({ "replayed": rec.id, "status": status, "body": body }))
}

/// NDJSON of every call record as it is journaled, and of long calls as they start (lines with
/// `"event": "start"`). A watcher that falls behind is told how many records it missed instead
/// of slowing the gateway.
fn tail(
    rx: broadcast::Receiver<Arc<crate::journal::CallRecord>>,
    starts: broadcast::Receiver<Arc<crate::journal::CallStart>>,
    events: broadcast::Receiver<Arc<crate::journal::HelperEvent>>,
    filter: Option<filter::Filter>,
) -> Response<ControlBody> {
    let filter = Arc::new(filter);
    let stream = futures_util::stream::unfold(
        (rx, starts, events),
        move |(mut rx, mut starts, mut events)| {
            let filter = filter.clone();
            async move {
                let keep = |rec: &crate::journal::CallRecord| {
                    (*filter).as_ref().is_none_or(|f| f.matches(rec))
                };
                let mut line = loop {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(rec) if !keep(&rec) => continue,
                            Ok(rec) => break serde_json::to_vec(&*rec).unwrap_or_default(),
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                break serde_json::to_vec(&serde_json::json!({ "missed": n })).unwrap_or_default()
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        s = starts.recv() => match s {
                            Ok(start) if !keep(&probe(&start)) => continue,
                            Ok(start) => {
                                let mut v = serde_json::to_value(&*start).unwrap_or_default();
                                v["event"] = serde_json::json!("start");
                                break serde_json::to_vec(&v).unwrap_or_default();
                            }
                            Err(_) => continue,
                        },
                        e = events.recv() => match e {
                            Ok(event) => {
                                let mut v = serde_json::to_value(&*event).unwrap_or_default();
                                v["event"] = serde_json::json!("helper");
                                break serde_json::to_vec(&v).unwrap_or_default();
                            }
                            Err(_) => continue,
                        },
                    }
                };
                line.push(b'\n');
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
                    (rx, starts, events),
                ))
            }
        },
    );
    let mut res = Response::new(StreamBody::new(stream).boxed());
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    res
}
