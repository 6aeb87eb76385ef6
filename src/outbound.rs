//! Requests luastrip makes to HTTP services other than the daemon: `http.request` in scripts and
//! Powerstrip adapters.
//!
//! URLs are `http://host:port/path?query` or, for a service on a Unix socket,
//! `unix:///path/to.sock:/path?query` (the socket path ends at the first `:`). Each request opens
//! its own HTTP/1.1 connection; callers bound the whole exchange with a timeout.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::call::Body;

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
}

/// Connect to `url`'s service and send `req` on a fresh HTTP/1.1 connection.
pub async fn send(url: &Url, req: Request<Body>) -> Result<Response<Incoming>, String> {
    match &url.target {
        Target::Tcp { addr } => {
            let s = tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            exchange(TokioIo::new(s), req).await
        }
        Target::Unix { socket } => {
            let s = tokio::net::UnixStream::connect(socket.as_str())
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            exchange(TokioIo::new(s), req).await
        }
    }
}

async fn exchange<I>(io: I, req: Request<Body>) -> Result<Response<Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
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
        assert!(Url::parse("unix://rel.sock:/x").is_err());
    }
}
