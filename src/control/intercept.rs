//! Intercept, as in mitmproxy: calls matching a filter are held before the daemon sees them
//! until someone resumes them (optionally with an edited request) or drops them. It is a hook
//! layer ([`Hooks`]) after the route scripts, so a held call shows what would be sent; with no
//! filter set it is inactive and costs one atomic load per call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::filter::Filter;
use crate::body::{full, Body};
use crate::call::{Call, HookFuture, Hooks};
use crate::error::Error;
use crate::hijack::Hijack;
use crate::journal::CallRecord;
use crate::route::kind::RequestBody;
use crate::route::{query, NormalPath};

/// An edited request for `resume`: every field optional.
#[derive(Debug, Default, Deserialize)]
pub struct Edit {
    pub method: Option<String>,
    /// Path and query; a version prefix is kept as given.
    pub path: Option<String>,
    /// Replaces all request headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// A string is sent as it is; any other JSON (an object, an array) as its JSON text, so an
    /// edit writes `{"body": {"Image": "busybox"}}` rather than an escaped string.
    #[serde(default, deserialize_with = "body_text")]
    pub body: Option<String>,
}

fn body_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    })
}

enum Decision {
    Resume(Edit),
    Drop,
}

struct Held {
    summary: serde_json::Value,
    decide: oneshot::Sender<Decision>,
}

/// The intercept layer.
#[derive(Default)]
pub struct Intercept {
    /// Fast path: no filter set.
    active: AtomicBool,
    filter: Mutex<Option<(String, Arc<Filter>)>>,
    held: Mutex<BTreeMap<u64, Held>>,
}

impl Intercept {
    /// Hold calls matching `filter` from now on. `None` stops intercepting and lets every held
    /// call go on, unedited (nothing is left waiting for a decision nobody will make); how many.
    pub fn set(&self, filter: Option<(String, Filter)>) -> usize {
        let stop = filter.is_none();
        {
            let mut f = self.filter.lock().unwrap_or_else(|e| e.into_inner());
            self.active.store(filter.is_some(), Ordering::Release);
            *f = filter.map(|(t, f)| (t, Arc::new(f)));
        }
        if stop {
            self.resume_all()
        } else {
            0
        }
    }

    /// Let every held call go on, unedited; how many.
    pub fn resume_all(&self) -> usize {
        self.decide_all(|| Decision::Resume(Edit::default()))
    }

    /// Refuse every held call; how many.
    pub fn drop_all(&self) -> usize {
        self.decide_all(|| Decision::Drop)
    }

    fn decide_all(&self, d: impl Fn() -> Decision) -> usize {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        held.into_values()
            .map(|h| h.decide.send(d()).is_ok())
            .filter(|sent| *sent)
            .count()
    }

    /// The filter text in force.
    pub fn filter_text(&self) -> Option<String> {
        self.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(t, _)| t.clone())
    }

    /// Summaries of the held calls.
    pub fn held(&self) -> Vec<serde_json::Value> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|h| h.summary.clone())
            .collect()
    }

    /// Let a held call go on, edited; false if there is no such held call.
    pub fn resume(&self, id: u64, edit: Edit) -> bool {
        self.decide(id, Decision::Resume(edit))
    }

    /// Refuse a held call; false if there is no such held call.
    pub fn drop_call(&self, id: u64) -> bool {
        self.decide(id, Decision::Drop)
    }

    fn decide(&self, id: u64, d: Decision) -> bool {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match held {
            Some(h) => h.decide.send(d).is_ok(),
            None => false,
        }
    }

    fn matching_filter(&self, call: &Call) -> Option<Arc<Filter>> {
        let f = self.filter.lock().unwrap_or_else(|e| e.into_inner());
        let filter = f.as_ref()?.1.clone();
        filter.matches(&probe(call)).then_some(filter)
    }
}

/// What the filter sees of a call that has not been answered yet.
fn probe(call: &Call) -> CallRecord {
    let mut rec = CallRecord::unfinished(
        call.id,
        call.head.method.as_str(),
        call.path.as_str(),
        &call.head.uri.to_string(),
    );
    rec.version = call.path.version().map(str::to_string);
    rec.hijack = call.hijack;
    rec.hooks = call.hooks.clone();
    rec.request_headers = call.head.headers.clone();
    rec
}

impl Hooks for Intercept {
    fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn pre<'a>(&'a self, call: &'a mut Call) -> HookFuture<'a, Option<Response<Body>>> {
        Box::pin(async move {
            if self.matching_filter(call).is_none() {
                return Ok(None);
            }
            let (tx, rx) = oneshot::channel();
            // Holding a call is the operator asking to see it: a JSON body is read (up to
            // HELD_BODY_CAP) so that it can be shown and edited; other bodies stay streams.
            let body = hold_body(call).await?;
            let headers: BTreeMap<String, String> = call
                .head
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let summary = serde_json::json!({
                "id": call.id,
                "method": call.head.method.as_str(),
                "path": call.path.as_str(),
                "raw": call.head.uri.to_string(),
                "hijack": call.hijack != Hijack::No,
                "headers": headers,
                "body": body,
            });
            self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(
                call.id,
                Held {
                    summary,
                    decide: tx,
                },
            );
            // A call whose client goes away while held leaves the list with it.
            let _listed = Unlist {
                held: &self.held,
                id: call.id,
            };
            match rx.await {
                Ok(Decision::Resume(edit)) => apply(call, edit).map(|()| None),
                Ok(Decision::Drop) | Err(_) => Err(Error::client(
                    StatusCode::FORBIDDEN,
                    "call dropped at the control socket (intercept)",
                )),
            }
        })
    }

    fn post<'a>(&'a self, _call: &'a mut Call, _res: &'a mut Response<Body>) -> HookFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// Removes a held call from the list when its wait ends, however it ends.
struct Unlist<'a> {
    held: &'a Mutex<BTreeMap<u64, Held>>,
    id: u64,
}

impl Drop for Unlist<'_> {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Largest body a held call shows for editing.
const HELD_BODY_CAP: usize = 1 << 20;

/// Read a held call's JSON body so it can be shown; `None` for stream bodies (left streaming).
async fn hold_body(call: &mut Call) -> Result<Option<String>, Error> {
    let json = call.request_body_kind() == RequestBody::Json;
    if !json || call.hijack != Hijack::No {
        return Ok(None);
    }
    let Some(body) = call.body.take() else {
        return Ok(None);
    };
    let bytes = crate::body::read_to_cap(body, HELD_BODY_CAP)
        .await
        .map_err(|e| {
            Error::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("held call body: {e}"),
            )
        })?;
    let bytes = call.adopt_json_body(bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn apply(call: &mut Call, edit: Edit) -> Result<(), Error> {
    let bad = |m: String| Error::client(StatusCode::BAD_REQUEST, format!("intercept edit: {m}"));
    if let Some(m) = edit.method {
        call.head.method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad(format!("{m:?} is not a method")))?;
    }
    if let Some(p) = edit.path {
        let uri: http::Uri = p.parse().map_err(|e| bad(format!("path {p:?}: {e}")))?;
        call.path = NormalPath::parse(uri.path()).map_err(|e| bad(e.to_string()))?;
        query::validate(uri.query().unwrap_or("")).map_err(|e| bad(e.to_string()))?;
        call.head.uri = uri;
    }
    if let Some(h) = edit.headers {
        let mut map = HeaderMap::new();
        for (k, v) in h {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(format!("header {k:?}")))?;
            let value = HeaderValue::from_str(&v).map_err(|_| bad(format!("value of {k:?}")))?;
            map.insert(name, value);
        }
        call.head.headers = map;
    }
    if let Some(b) = edit.body {
        call.head.headers.remove(http::header::TRANSFER_ENCODING);
        call.head
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        call.body = Some(full(Bytes::from(b)));
    }
    Ok(())
}
