//! Hijacked connections: `docker attach`, `exec`, `run -i`, BuildKit sessions.
//!
//! Docker turns an HTTP connection into a raw byte pipe in two ways:
//!
//! * current clients send `Connection: Upgrade` + `Upgrade: tcp` (or `h2c`) and get
//!   `HTTP/1.1 101 UPGRADED`;
//! * old clients send no Upgrade header to `POST /containers/{id}/attach` or
//!   `POST /exec/{id}/start` and get `200 OK` with `Content-Type: application/vnd.docker.raw-stream`,
//!   after which the connection is raw in both directions.
//!
//! Toward the daemon both become a normal hyper upgrade: for old clients the gateway adds
//! `Upgrade: tcp` to the forwarded request ([`Hijack::Legacy`]), so the daemon answers `101` and
//! hyper's client hands us the connection through [`hyper::upgrade::on`]. Toward the client, hyper's
//! `with_upgrades()` only releases the socket after a `101`, so for both kinds the connection driver
//! in [`crate::serve`] does what hyper's `UpgradeableConnection` does internally: it polls the
//! connection with `poll_without_shutdown`, then takes the socket and the bytes hyper already read
//! past the request head back with `into_parts`. The call phases leave the daemon side of the
//! tunnel in the connection's [`TunnelSlot`] when they reply; [`tunnel`] then forwards the early
//! bytes and copies both directions with `copy_bidirectional`, which half-closes each direction on
//! its own EOF and keeps the other one flowing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{copy_bidirectional, AsyncWriteExt};

/// How a call may turn into a raw tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hijack {
    /// An ordinary request/response call.
    No,
    /// The client asked for `Upgrade: tcp` / `h2c` / `websocket`; a `101` passes through unchanged.
    Upgrade,
    /// An old client hijacking attach / exec start without an Upgrade header.
    Legacy,
}

impl Hijack {
    /// Classify a request by its headers and normalised route.
    pub fn classify(method: &Method, path: &str, headers: &HeaderMap) -> Hijack {
        if headers.contains_key(header::UPGRADE) {
            return Hijack::Upgrade;
        }
        if crate::route::kind::is_hijack_route(method, path) {
            return Hijack::Legacy;
        }
        Hijack::No
    }

    /// Adjust the headers sent to the daemon so that it answers a hijack with `101`.
    pub fn prepare_upstream(self, headers: &mut HeaderMap) {
        if self == Hijack::Legacy {
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        }
    }
}

/// `true` for Docker's stream content types (raw and, from API 1.42, multiplexed).
pub fn is_stream_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct.split(';').next().unwrap_or("").trim();
            ct.eq_ignore_ascii_case("application/vnd.docker.raw-stream")
                || ct.eq_ignore_ascii_case("application/vnd.docker.multiplexed-stream")
        })
        .unwrap_or(false)
}

/// Per client connection: the daemon side of a tunnel, left here by the reply phase and picked up
/// by the connection driver once hyper has written the reply head.
#[derive(Clone, Default)]
pub struct TunnelSlot(Arc<Mutex<Option<PendingTunnel>>>);

/// A tunnel waiting for the client side to be released.
pub struct PendingTunnel {
    /// The call this tunnel belongs to, for logs.
    pub call_id: u64,
    /// Resolves to the daemon connection once hyper's client has seen the `101`.
    pub upstream: OnUpgrade,
}

impl TunnelSlot {
    /// Leave a tunnel for the driver.
    pub fn put(&self, pending: PendingTunnel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending);
    }

    /// Take the tunnel, if the last call left one.
    pub fn take(&self) -> Option<PendingTunnel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Byte counts of a finished tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelStats {
    pub client_to_daemon: u64,
    pub daemon_to_client: u64,
}

/// Run a tunnel to its end: forward `early` (bytes the client sent right after its request head),
/// then copy both ways with half-close.
pub async fn tunnel<S>(
    mut client: S,
    early: Bytes,
    pending: PendingTunnel,
) -> std::io::Result<TunnelStats>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let upgraded = pending
        .upstream
        .await
        .map_err(|e| std::io::Error::other(format!("daemon upgrade failed: {e}")))?;
    let mut daemon = TokioIo::new(upgraded);
    if !early.is_empty() {
        daemon.write_all(&early).await?;
    }
    let (up, down) = copy_bidirectional(&mut client, &mut daemon).await?;
    Ok(TunnelStats {
        client_to_daemon: up + early.len() as u64,
        daemon_to_client: down,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        let none = HeaderMap::new();
        let mut up = HeaderMap::new();
        up.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        assert_eq!(
            Hijack::classify(&Method::POST, "/containers/abc/attach", &none),
            Hijack::Legacy
        );
        assert_eq!(
            Hijack::classify(&Method::POST, "/exec/abc/start", &none),
            Hijack::Legacy
        );
        assert_eq!(
            Hijack::classify(&Method::POST, "/exec/abc/start", &up),
            Hijack::Upgrade
        );
        assert_eq!(
            Hijack::classify(&Method::POST, "/session", &up),
            Hijack::Upgrade
        );
        assert_eq!(
            Hijack::classify(&Method::POST, "/exec/abc/resize", &none),
            Hijack::No
        );
        assert_eq!(
            Hijack::classify(&Method::GET, "/containers/abc/attach/ws", &none),
            Hijack::No
        );
        assert_eq!(
            Hijack::classify(&Method::GET, "/containers/json", &none),
            Hijack::No
        );
    }

    #[test]
    fn stream_content_types() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.docker.multiplexed-stream"),
        );
        assert!(is_stream_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.docker.raw-stream; charset=x"),
        );
        assert!(is_stream_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_stream_content_type(&h));
    }
}
