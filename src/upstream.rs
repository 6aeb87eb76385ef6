//! The Docker daemon side: pooled HTTP/1 connections to the daemon's Unix socket.
//!
//! hyper-util's pooled client does the bookkeeping a proxy gets wrong by hand: a connection goes
//! back to the pool only once its response body is finished, a connection the daemon closed is
//! dropped, and a `101` response hands its connection over to [`hyper::upgrade::on`] instead of
//! the pool. This module only adds the Unix-socket connector and maps connection failures to
//! [`Error::DaemonUnreachable`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::error::Error;
use crate::outbound::{unix_authority, UnixConnector};

/// Where the daemon listens, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    /// The socket path.
    pub path: PathBuf,
}

impl UpstreamAddr {
    /// Parse `unix:///path` or a bare absolute path.
    pub fn parse(addr: &str) -> Result<Self, String> {
        let path = if let Some(p) = addr.strip_prefix("unix://") {
            p
        } else if addr.starts_with('/') {
            addr
        } else {
            return Err(format!(
                "unsupported Docker daemon address {addr:?}: luastrip talks to the daemon over a \
                 Unix socket; use unix:///path/to/docker.sock"
            ));
        };
        if !path.starts_with('/') {
            return Err(format!("the socket path in {addr:?} must be absolute"));
        }
        Ok(UpstreamAddr { path: path.into() })
    }
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unix://{}", self.path.display())
    }
}

/// A pooled client for the daemon socket. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    client: Client<UnixConnector, Body>,
    addr: Arc<UpstreamAddr>,
    /// `http://<socket path in hex>`: the URI authority the connector reads the path from.
    authority: Arc<str>,
}

impl Upstream {
    /// A client for the daemon at `addr`. Connections are opened lazily.
    pub fn new(addr: UpstreamAddr) -> Self {
        let connector = UnixConnector;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Idle pooled connections only; an open stream is never timed out.
            .pool_idle_timeout(Duration::from_secs(60))
            // Per worker thread. A burst of concurrent calls opens more; they close afterwards
            // instead of pinning buffers (and daemon file descriptors) while idle.
            .pool_max_idle_per_host(32)
            // The client's own Host header goes through untouched.
            .set_host(false)
            .build(connector);
        Upstream {
            client,
            authority: unix_authority(&addr.path).into(),
            addr: Arc::new(addr),
        }
    }

    /// A client for the same daemon with a pool of its own, for one worker thread: its
    /// connections are driven on that thread and never contended by another.
    pub fn fork(&self) -> Upstream {
        Upstream::new((*self.addr).clone())
    }

    /// The daemon address, for messages.
    pub fn addr(&self) -> &UpstreamAddr {
        &self.addr
    }

    /// Send one request to the daemon. `req`'s URI must be origin-form (`/v1.41/...?...`).
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, Error> {
        // The pooled client wants an absolute URI; its authority names the socket and is never
        // sent (the client's Host header goes through).
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let mut abs = String::with_capacity(pq.len() + self.authority.len());
        abs.push_str(&self.authority);
        abs.push_str(pq);
        *req.uri_mut() = abs
            .parse()
            .map_err(|e| Error::Internal(format!("cannot build the upstream URI: {e}")))?;
        self.client.request(req).await.map_err(|e| self.error(e))
    }

    /// One call of luastrip's own to the daemon (the helpers'): `method path` with an optional
    /// JSON body; the status and the answer's bytes (up to 64 MiB).
    async fn exchange(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(http::StatusCode, bytes::Bytes), Error> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, "docker");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .body(crate::body::full(bytes::Bytes::from(bytes)))
            .map_err(|e| Error::Internal(format!("cannot build {method} {path}: {e}")))?;
        let res = self.send(req).await?;
        let status = res.status();
        let answer = crate::body::read_to_cap(res.into_body(), 64 << 20)
            .await
            .map_err(|e| Error::Daemon {
                upstream: self.addr.to_string(),
                reason: format!("{method} {path}: {e}"),
            })?;
        Ok((status, answer))
    }

    fn refused(&self, what: &str, status: http::StatusCode, v: &serde_json::Value) -> Error {
        Error::Daemon {
            upstream: self.addr.to_string(),
            reason: format!(
                "{what}: {status}: {}",
                v["message"].as_str().unwrap_or_default()
            ),
        }
    }

    /// GET `path` from the daemon and parse its JSON answer; `None` for a 404 (no such object).
    /// Any other non-2xx answer is an error carrying the daemon's message.
    pub async fn get_json_found(&self, path: &str) -> Result<Option<serde_json::Value>, Error> {
        let (status, body) = self.exchange(http::Method::GET, path, None).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::Daemon {
            upstream: self.addr.to_string(),
            reason: format!("GET {path}: not JSON: {e}"),
        })?;
        match status {
            s if s.is_success() => Ok(Some(v)),
            http::StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.refused(&format!("GET {path}"), s, &v)),
        }
    }

    /// GET `path` from the daemon and parse its JSON answer, for luastrip's own questions to
    /// the daemon (the helpers'). A non-2xx answer is an error carrying the daemon's message.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, Error> {
        self.get_json_found(path)
            .await?
            .ok_or_else(|| Error::Daemon {
                upstream: self.addr.to_string(),
                reason: format!("GET {path}: 404 Not Found"),
            })
    }

    /// POST `body` as JSON to `path`, for luastrip's own calls to the daemon (a helper creating
    /// a network); the status and the JSON answer (`null` when there is none).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(http::StatusCode, serde_json::Value), Error> {
        let (status, answer) = self.exchange(http::Method::POST, path, Some(body)).await?;
        Ok((status, serde_json::from_slice(&answer).unwrap_or_default()))
    }

    /// POST `path` with no body, for luastrip's own calls to the daemon (a helper stopping a
    /// container). A 2xx or 304 is success; anything else is an error with the daemon's message.
    pub async fn post_empty(&self, path: &str) -> Result<http::StatusCode, Error> {
        let (status, body) = self.exchange(http::Method::POST, path, None).await?;
        if status.is_success() || status == http::StatusCode::NOT_MODIFIED {
            return Ok(status);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(self.refused(&format!("POST {path}"), status, &v))
    }

    fn error(&self, e: hyper_util::client::legacy::Error) -> Error {
        use std::error::Error as _;
        let mut reason = String::new();
        let mut src = e.source();
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        if reason.is_empty() {
            reason = e.to_string();
        }
        if client_body_failed(&e) {
            // The client's streamed body broke off (a client killed mid-upload, `docker build
            // … | head`): the client went away, the daemon did nothing wrong.
            Error::client(
                CLIENT_CLOSED_REQUEST,
                format!("the client went away while sending its request body: {reason}"),
            )
        } else if e.is_connect() {
            Error::DaemonUnreachable {
                upstream: self.addr.to_string(),
                reason,
            }
        } else {
            Error::Daemon {
                upstream: self.addr.to_string(),
                reason,
            }
        }
    }
}

/// nginx's status for a client that went away before its call was done: nobody reads it, but
/// the journal, the log and the metrics tell it apart from the daemon's errors.
pub const CLIENT_CLOSED_REQUEST: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => panic!("499 is a valid status"),
};

/// Whether sending failed because the request body — the client's own stream, passed through —
/// failed: hyper reports that as a user error whose cause is the client connection's error.
fn client_body_failed(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                return h
                    .source()
                    .is_some_and(|c| c.is::<hyper::Error>() || c.is::<std::io::Error>());
            }
        }
        src = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            UpstreamAddr::parse("unix:///var/run/docker.sock")
                .unwrap()
                .path,
            PathBuf::from("/var/run/docker.sock")
        );
        assert_eq!(
            UpstreamAddr::parse("/tmp/d.sock").unwrap().to_string(),
            "unix:///tmp/d.sock"
        );
        assert!(UpstreamAddr::parse("tcp://127.0.0.1:2375")
            .unwrap_err()
            .contains("Unix socket"));
        assert!(UpstreamAddr::parse("unix://rel.sock").is_err());
    }
}
