//! The Docker daemon side: pooled HTTP/1 connections to the daemon, on its Unix socket or over
//! TCP (with TLS, as the docker CLI's `DOCKER_HOST=tcp://…:2376` with `DOCKER_TLS_VERIFY`).
//!
//! hyper-util's pooled client does the bookkeeping a proxy gets wrong by hand: a connection goes
//! back to the pool only once its response body is finished, a connection the daemon closed is
//! dropped, and a `101` response hands its connection over to [`hyper::upgrade::on`] instead of
//! the pool. This module only adds the connector ([`DaemonConnector`]) and maps connection
//! failures to [`Error::DaemonUnreachable`].

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixStream};

use crate::body::Body;
use crate::error::Error;
use crate::outbound::CONNECT_TIMEOUT;
use crate::stream::Stream;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAt {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

/// Where the daemon listens, as given on the command line, and the TLS to reach it with.
#[derive(Debug, Clone)]
pub struct UpstreamAddr {
    pub at: DaemonAt,
    /// TLS for a TCP daemon (its certificate verified); `None`: plain.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl PartialEq for UpstreamAddr {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.tls.is_some() == other.tls.is_some()
    }
}

impl UpstreamAddr {
    /// Parse `unix:///path`, a bare absolute path, or `tcp://HOST:PORT` (plain until
    /// [`UpstreamAddr::with_tls`]).
    pub fn parse(addr: &str) -> Result<Self, String> {
        if let Some(rest) = addr.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| format!("{addr:?}: use tcp://HOST:PORT"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{addr:?} has no host"));
            }
            return Ok(UpstreamAddr {
                at: DaemonAt::Tcp {
                    host: host.to_string(),
                    port,
                },
                tls: None,
            });
        }
        let path = if let Some(p) = addr.strip_prefix("unix://") {
            p
        } else if addr.starts_with('/') {
            addr
        } else {
            return Err(format!(
                "unsupported Docker daemon address {addr:?}: use unix:///path/to/docker.sock or \
                 tcp://HOST:PORT"
            ));
        };
        if !path.starts_with('/') {
            return Err(format!("the socket path in {addr:?} must be absolute"));
        }
        Ok(UpstreamAddr {
            at: DaemonAt::Unix(path.into()),
            tls: None,
        })
    }

    /// The same daemon over TLS (TCP only).
    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The daemon's socket path, if it listens on one.
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.at {
            DaemonAt::Unix(p) => Some(p),
            DaemonAt::Tcp { .. } => None,
        }
    }

    /// Whether plain TCP to this daemon stays on this machine (loopback).
    pub fn is_loopback(&self) -> bool {
        match &self.at {
            DaemonAt::Unix(_) => true,
            DaemonAt::Tcp { host, .. } => {
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            DaemonAt::Unix(p) => write!(f, "unix://{}", p.display()),
            DaemonAt::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            DaemonAt::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// Connects to the one daemon of an [`UpstreamAddr`], whatever the URI says (its authority only
/// keys the pool).
#[derive(Clone)]
pub struct DaemonConnector(Arc<UpstreamAddr>);

impl tower_service::Service<Uri> for DaemonConnector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let addr = self.0.clone();
        Box::pin(async move {
            let connect = async {
                match &addr.at {
                    DaemonAt::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
                    DaemonAt::Tcp { host, port } => {
                        let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                        let _ = tcp.set_nodelay(true);
                        let Some(tls) = &addr.tls else {
                            return Ok(Stream::Tcp(tcp));
                        };
                        let name = rustls::pki_types::ServerName::try_from(host.clone())
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                        tokio_rustls::TlsConnector::from(tls.clone())
                            .connect(name, tcp)
                            .await
                            .map(|s| Stream::Tls(Box::new(s.into())))
                    }
                }
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(s) => Ok(TokioIo::new(s?)),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        })
    }
}

/// A pooled client for the daemon. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    client: Client<DaemonConnector, Body>,
    addr: Arc<UpstreamAddr>,
    /// The URI authority requests carry for the pooled client (never sent: the client's Host
    /// header goes through).
    authority: Arc<str>,
}

impl Upstream {
    /// A client for the daemon at `addr`. Connections are opened lazily.
    pub fn new(addr: UpstreamAddr) -> Self {
        let addr = Arc::new(addr);
        let connector = DaemonConnector(addr.clone());
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
            authority: "http://docker".into(),
            addr,
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
                .unix_path(),
            Some(Path::new("/var/run/docker.sock"))
        );
        let tcp = UpstreamAddr::parse("tcp://127.0.0.1:2376").unwrap();
        assert_eq!(
            tcp.at,
            DaemonAt::Tcp {
                host: "127.0.0.1".into(),
                port: 2376
            }
        );
        assert!(tcp.is_loopback() && tcp.unix_path().is_none());
        assert_eq!(tcp.to_string(), "tcp://127.0.0.1:2376");
        assert!(!UpstreamAddr::parse("tcp://10.1.2.3:2376")
            .unwrap()
            .is_loopback());
        assert_eq!(
            UpstreamAddr::parse("tcp://[::1]:2375").unwrap().to_string(),
            "tcp://[::1]:2375"
        );
        assert!(UpstreamAddr::parse("tcp://host").is_err());
        assert_eq!(
            UpstreamAddr::parse("/tmp/d.sock").unwrap().to_string(),
            "unix:///tmp/d.sock"
        );
        assert!(UpstreamAddr::parse("http://127.0.0.1:2375")
            .unwrap_err()
            .contains("tcp://HOST:PORT"));
        assert!(UpstreamAddr::parse("unix://rel.sock").is_err());
    }
}
