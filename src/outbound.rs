//! Requests luastrip makes to HTTP services other than the daemon: `http.request` in scripts,
//! Powerstrip adapters, the control socket's replays and the REPL.
//!
//! URLs are `http://host:port/path?query` or, for a service on a Unix socket,
//! `unix:///path/to.sock:/path?query` (the socket path ends at the first `:`). An [`Outbound`]
//! keeps idle connections per service (hyper-util's pooled client: one pool for TCP, one for Unix
//! sockets), opens new ones within [`CONNECT_TIMEOUT`], and bounds each whole exchange with the
//! caller's timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::UnixStream;

use crate::body::Body;

/// How long opening a connection to a service may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled HTTP/1.1 client for services (cheap to clone; clones share the pools). Make one per
/// thread that uses it, so that its connections are driven where they are used.
#[derive(Clone)]
pub struct Outbound {
    tcp: Client<HttpConnector, Body>,
    unix: Client<UnixConnector, Body>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::new()
    }
}

impl Outbound {
    /// A client with empty pools.
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(8)
                .set_host(false);
            b
        };
        Outbound {
            tcp: builder().build(http),
            unix: builder().build(UnixConnector),
        }
    }

    /// Send `req` (its URI is replaced by `url`'s target) and wait for the response head, all
    /// within `timeout`. The caller reads the body (and bounds that too).
    pub async fn send(
        &self,
        url: &Url,
        mut req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, String> {
        let abs = match &url.target {
            Target::Tcp { addr } => format!("http://{addr}{}", url.path),
            Target::Unix { socket } => {
                format!("{}{}", unix_authority(socket.as_ref()), url.path)
            }
        };
        *req.uri_mut() = abs.parse().map_err(|e| format!("bad URL: {e}"))?;
        let sent = match &url.target {
            Target::Tcp { .. } => self.tcp.request(req),
            Target::Unix { .. } => self.unix.request(req),
        };
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(format!("no reply within {timeout:?}")),
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => Err(describe(&e)),
        }
    }
}

/// The innermost cause of a client error ("Connection refused (os error 111)"), with what failed.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut reason = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        reason = s.to_string();
        src = s.source();
    }
    if e.is_connect() {
        format!("cannot connect: {reason}")
    } else {
        reason
    }
}

/// A socket path as a URI host: hex, so that any path makes a valid authority (and a pool key).
fn hex(path: &str) -> String {
    path.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `http://<path in hex>`: the scheme and authority of a URI that [`UnixConnector`] connects to
/// `path` for.
pub fn unix_authority(path: &std::path::Path) -> String {
    format!("http://{}", hex(&path.to_string_lossy()))
}

fn unhex(host: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..host.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(host.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Connects to the Unix socket named (in hex) by the URI's host ([`unix_authority`]).
#[derive(Clone)]
pub struct UnixConnector;

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let path = uri.host().and_then(unhex);
        Box::pin(async move {
            let path = path.ok_or_else(|| io::Error::other("no socket path in the URI"))?;
            let connect = UnixStream::connect(path);
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(s) => Ok(TokioIo::new(s?)),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        })
    }
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Tcp { addr: String },
    Unix { socket: String },
}

/// A parsed service URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    target: Target,
    /// The request target: `/path?query`.
    pub path: String,
    /// What to send as `Host`.
    pub host: String,
}

impl Url {
    /// Parse an `http://` or `unix://` URL.
    pub fn parse(url: &str) -> Result<Url, String> {
        if let Some(rest) = url.strip_prefix("unix://") {
            let (socket, path) = match rest.find(':') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, "/"),
            };
            if !socket.starts_with('/') || !path.starts_with('/') {
                return Err(format!("{url:?}: use unix:///path/to.sock:/request/path"));
            }
            return Ok(Url {
                target: Target::Unix {
                    socket: socket.into(),
                },
                path: path.into(),
                host: "localhost".into(),
            });
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// and unix:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let addr = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Url {
            target: Target::Tcp { addr },
            path: path.into(),
            host: authority.into(),
        })
    }

    /// The container an adapter URL names, and its port: a bare host name — no dot, not
    /// `localhost`, not an address — as Powerstrip's `adapters.yml` named adapter containers
    /// through Docker links (`http://weave/extension`).
    pub fn container(&self) -> Option<(&str, u16)> {
        let Target::Tcp { addr } = &self.target else {
            return None;
        };
        let (host, port) = addr.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let bare = !host.is_empty()
            && host != "localhost"
            && !host.contains(['.', ':', '['])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && host.parse::<std::net::IpAddr>().is_err();
        bare.then_some((host, port))
    }

    /// The same URL sent to `ip` instead (the `Host` header stays what the URL says).
    pub fn at(&self, ip: std::net::IpAddr, port: u16) -> Url {
        Url {
            target: Target::Tcp {
                addr: std::net::SocketAddr::new(ip, port).to_string(),
            },
            path: self.path.clone(),
            host: self.host.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
        assert_eq!(
            u.target,
            Target::Tcp {
                addr: "127.0.0.1:8080".into()
            }
        );
        assert_eq!(
            (u.path.as_str(), u.host.as_str()),
            ("/hook?x=1", "127.0.0.1:8080")
        );
        let u = Url::parse("http://localhost").unwrap();
        assert_eq!(
            u.target,
            Target::Tcp {
                addr: "localhost:80".into()
            }
        );
        assert_eq!(u.path, "/");
        let u = Url::parse("unix:///run/a.sock:/v1/hook").unwrap();
        assert_eq!(
            u.target,
            Target::Unix {
                socket: "/run/a.sock".into()
            }
        );
        assert_eq!(u.path, "/v1/hook");
        assert_eq!(Url::parse("unix:///run/a.sock").unwrap().path, "/");
        assert!(Url::parse("https://example.com/").is_err());
        // Bare names are containers; addresses, localhost and DNS names are not.
        assert_eq!(
            Url::parse("http://weave/extension").unwrap().container(),
            Some(("weave", 80))
        );
        assert_eq!(
            Url::parse("http://my_adapter-2:9000/x")
                .unwrap()
                .container(),
            Some(("my_adapter-2", 9000))
        );
        for not in [
            "http://localhost:9000/",
            "http://127.0.0.1:9000/",
            "http://adapter.example:80/",
            "http://[::1]:80/",
            "unix:///run/a.sock:/x",
        ] {
            assert_eq!(Url::parse(not).unwrap().container(), None, "{not}");
        }
        let at = Url::parse("http://weave/extension")
            .unwrap()
            .at("10.2.1.5".parse().unwrap(), 80);
        assert_eq!(
            at.target,
            Target::Tcp {
                addr: "10.2.1.5:80".into()
            }
        );
        assert_eq!(
            (at.host.as_str(), at.path.as_str()),
            ("weave", "/extension")
        );
        assert!(Url::parse("unix://rel.sock:/x").is_err());
        assert_eq!(
            unhex(&hex("/run/a b.sock")).as_deref(),
            Some("/run/a b.sock")
        );
    }
}
