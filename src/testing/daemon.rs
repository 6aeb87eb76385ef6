//! The daemon `luastrip test` puts behind the gateway: it answers each call with the answer the
//! recording (or a `*_test.lua` case) gives for it, and keeps what the gateway forwarded, so that
//! scripts are tested through every real phase without a dockerd.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{full, Body};
use crate::route::NormalPath;

/// What the daemon answers to one call.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The call it answers (method, path without version); another call gets a 502 saying so.
    /// `None`: whatever call comes.
    pub call: Option<(Method, String)>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A call as the daemon received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The answer to give next, and what came in.
#[derive(Default)]
pub struct Recorded {
    next: Mutex<Option<Answer>>,
    received: Mutex<Option<Received>>,
}

impl Recorded {
    /// Answer the next matching call with `answer` (`None`: nothing is recorded for it).
    pub fn expect(&self, answer: Option<Answer>) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = answer;
        *self.received.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// What the gateway forwarded since the last [`Recorded::expect`], if anything.
    pub fn received(&self) -> Option<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serve one request from the gateway.
    pub async fn answer(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (head, body) = req.into_parts();
        let path = NormalPath::parse(head.uri.path())
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|_| head.uri.path().to_string());
        if path == "/_ping" && head.method == Method::GET {
            return reply(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"OK"));
        }
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let next = self.next.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match next {
            Some(a)
                if a.call
                    .as_ref()
                    .is_none_or(|(m, p)| *m == head.method && *p == path) =>
            {
                *self.received.lock().unwrap_or_else(|e| e.into_inner()) = Some(Received {
                    method: head.method.to_string(),
                    target: head
                        .uri
                        .path_and_query()
                        .map_or_else(|| path.clone(), |pq| pq.to_string()),
                    headers: head.headers,
                    body,
                });
                reply(a.status, a.headers, a.body)
            }
            Some(Answer {
                call: Some((m, p)), ..
            }) => json_error(format!(
                "luastrip test: the recording answers {m} {p}, not {} {path} (a hook's own \
                 daemon call, or a hook that sent the call elsewhere)",
                head.method
            )),
            Some(_) => unreachable!("an answer for any call matches"),
            None => json_error(format!(
                "luastrip test: no daemon answer was recorded for {} {} (a hook answered it \
                 when it was recorded)",
                head.method, path
            )),
        }
    }
}

fn reply(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    for h in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        res.headers_mut().remove(h);
    }
    res
}

fn json_error(message: String) -> Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "message": message }).to_string();
    reply(StatusCode::BAD_GATEWAY, headers, Bytes::from(body))
}
