//! Gateways talk to each other to move volumes: a small HTTP API on `--peer-listen`, guarded by a
//! shared token (`--peer-token-file`, sent as `Authorization: Bearer …`; a missing or wrong
//! token is a 401, and the token is never logged), and a client for the peers named with
//! `--peer NAME=http://HOST:PORT`. With `--peer-tls-cert`, `--peer-tls-key` and `--peer-tls-ca`
//! it is mutual TLS instead (`NAME=https://HOST:PORT`): each side shows a certificate the CA
//! signed and verifies the other's, so neither the token nor the volumes cross the network in
//! the clear, and only holders of such a certificate reach the API at all.
//!
//! The API (all under `/luastrip/peer/v1/volumes/NAME/`):
//! * `GET snapshots` — the volume's snapshots here (`[]` if there is no such volume);
//! * `PUT stream?tag=T&guid=G&from=HOST&epoch=N[&standby=1]` — a replication stream (the body)
//!   to receive from the owner `HOST` at epoch `N` (refused unless the cluster's record says
//!   `HOST` owns it at `N` and is moving it here, or, with `standby=1`, names this host its
//!   standby); answered once the snapshot `T` is here with guid `G`;
//! * `POST claim` (`{"from": HOST, "epoch": N, "guid": G}`) — take ownership from `HOST`, once
//!   the record says `HOST` is cutting it over here at epoch `N` with snapshot `G`, and this
//!   copy has it;
//! * `POST push?to=PEER` — push the volume (owned here) to `PEER`: how a gateway asks the owner
//!   for a volume it needs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::name::{Tag, VolumeName};
use super::owner::Handoff;
use super::{helper, Snapshot, Volumes};
use crate::stream::Stream;
use crate::Error;

/// How long a peer may take to answer a call that is not a stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

type PeerBody = BoxBody<Bytes, std::io::Error>;

/// The peers this gateway knows, and the token they share.
pub struct Peers {
    token: String,
    /// Name → `host:port`.
    peers: BTreeMap<String, String>,
    /// TLS to the peers (mutual), when configured.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The shared store, where the other gateways' `--peer-url`s are.
    cluster: Option<Arc<dyn crate::cluster::Cluster>>,
}

/// How a peer is written: `NAME=http://HOST:PORT`, or `https://` with TLS.
fn form(tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("NAME={scheme}://HOST:PORT")
}

/// `http://HOST:PORT` (`https://` with TLS) as `HOST:PORT`.
pub fn address(url: &str, tls: bool) -> Result<String, String> {
    let scheme = if tls { "https" } else { "http" };
    url.strip_prefix(&format!("{scheme}://"))
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| {
            a.rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok())
        })
        .map(str::to_string)
        .ok_or_else(|| {
            if tls {
                format!("with --peer-tls-* the peers are {}", form(tls))
            } else {
                format!(
                    "use {} (https:// needs --peer-tls-cert, --peer-tls-key and --peer-tls-ca)",
                    form(tls)
                )
            }
        })
}

impl Peers {
    /// `peers` are `NAME=http://HOST:PORT` (`https://` with `tls`); the token is the first line
    /// of `token_file`.
    pub fn new(
        peers: &[String],
        token: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Peers, String> {
        if token.len() < 16 {
            return Err("--peer-token-file: the token must be at least 16 characters".into());
        }
        let mut map = BTreeMap::new();
        for p in peers {
            let (name, url) = p
                .split_once('=')
                .ok_or_else(|| format!("--peer {p:?}: use {}", form(tls.is_some())))?;
            VolumeName::parse(name).map_err(|e| format!("--peer {p:?}: {e}"))?;
            let addr = address(url, tls.is_some()).map_err(|e| format!("--peer {p:?}: {e}"))?;
            map.insert(name.to_string(), addr);
        }
        Ok(Peers {
            token,
            peers: map,
            tls,
            cluster: None,
        })
    }

    /// Peers not named by `--peer` are looked up in the cluster's hosts (their `--peer-url`).
    pub fn with_cluster(mut self, cluster: Arc<dyn crate::cluster::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Read the token from `path` (its first line). A file that others than its owner may read
    /// or write is refused: whoever reads the token can push streams to this host.
    pub fn read_token(path: &std::path::Path) -> Result<String, String> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("--peer-token-file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "--peer-token-file {}: mode {:o} lets others than its owner read or change the \
                 token (whoever has it can push volumes here): chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--peer-token-file {}: {e}", path.display()))?;
        Ok(text.lines().next().unwrap_or("").trim().to_string())
    }

    /// Where `peer` is: `--peer`, else its registration in the cluster (`--peer-url`).
    async fn addr(&self, peer: &str) -> Result<String, Error> {
        if let Some(a) = self.peers.get(peer) {
            return Ok(a.clone());
        }
        if let Some(cluster) = &self.cluster {
            let url = crate::cluster::hosts::peer_url(cluster.as_ref(), peer)
                .await
                .map_err(|e| helper(e.to_string()))?;
            return match url {
                Some(url) => address(&url, self.tls.is_some())
                    .map_err(|e| helper(format!("peer {peer}: its --peer-url {url:?}: {e}"))),
                None => Err(helper(format!(
                    "no peer {peer:?}: no live gateway of that name gives a --peer-url in the \
                     cluster, and no --peer names it"
                ))),
            };
        }
        Err(helper(format!(
            "no peer {peer:?}: name it with --peer {peer}=http://HOST:PORT (known: {})",
            self.peers.keys().cloned().collect::<Vec<_>>().join(", ")
        )))
    }

    /// A connection to a peer at `addr` (`host:port`): TCP, then TLS when configured, the peer's
    /// certificate verified against `--peer-tls-ca` for `host`.
    async fn connect(&self, addr: &str) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await?;
        Ok(Stream::Tls(Box::new(s.into())))
    }

    /// One call to `peer`: a fresh connection (pushes are rare and long), the body streamed.
    async fn call(
        &self,
        peer: &str,
        method: Method,
        path: &str,
        body: PeerBody,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        let addr = self.addr(peer).await?;
        let addr = addr.as_str();
        let fail = |why: String| helper(format!("peer {peer} ({addr}): {method} {path}: {why}"));
        let exchange = async {
            let stream = tokio::time::timeout(Duration::from_secs(5), self.connect(addr))
                .await
                .map_err(|_| fail("cannot connect within 5 s".into()))?
                .map_err(|e| fail(format!("cannot connect: {e}")))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, addr)
                .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
                .body(body)
                .map_err(|e| fail(e.to_string()))?;
            let res = send
                .send_request(req)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let status = res.status();
            let bytes = crate::body::read_to_cap(res.into_body(), 16 << 20)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !status.is_success() {
                let msg = v["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| status.to_string());
                return Err(fail(msg));
            }
            Ok(v)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| fail(format!("no answer within {t:?}")))?,
            None => exchange.await,
        }
    }

    fn empty() -> PeerBody {
        Full::new(Bytes::new())
            .map_err(|e: Infallible| match e {})
            .boxed()
    }

    /// The snapshots `peer` has of `name`.
    pub async fn snapshots(&self, peer: &str, name: &VolumeName) -> Result<Vec<Snapshot>, Error> {
        let path = format!("/luastrip/peer/v1/volumes/{name}/snapshots");
        let v = self
            .call(peer, Method::GET, &path, Self::empty(), Some(CALL_TIMEOUT))
            .await?;
        serde_json::from_value::<Vec<SnapshotWire>>(v)
            .map(|s| s.into_iter().map(Into::into).collect())
            .map_err(|e| helper(format!("peer {peer}: bad snapshot list: {e}")))
    }

    /// Stream `stream` to `peer` as `name`'s snapshot `tag` (guid `guid`).
    pub async fn send_stream(
        &self,
        peer: &str,
        name: &VolumeName,
        tag: &Tag,
        guid: &str,
        by: &Handoff,
        stream: impl AsyncRead + Send + Sync + 'static,
    ) -> Result<(), Error> {
        let frames = tokio_util::io::ReaderStream::new(stream).map_ok(Frame::data);
        let body = BodyExt::boxed(StreamBody::new(frames));
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("tag", tag.as_str())
            .append_pair("guid", guid)
            .append_pair("from", &by.from)
            .append_pair("epoch", &by.epoch.to_string())
            .append_pair("standby", if by.standby { "1" } else { "0" })
            .finish();
        let path = format!("/luastrip/peer/v1/volumes/{name}/stream?{query}");
        self.call(peer, Method::PUT, &path, body, None)
            .await
            .map(|_| ())
    }

    /// Ask `peer` to take ownership of `name` from `by`, once it has the snapshot `guid`.
    pub async fn claim(
        &self,
        peer: &str,
        name: &VolumeName,
        by: &Handoff,
        guid: &str,
    ) -> Result<(), Error> {
        let body = json!({ "from": by.from, "epoch": by.epoch, "guid": guid }).to_string();
        let body = Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed();
        let path = format!("/luastrip/peer/v1/volumes/{name}/claim");
        self.call(peer, Method::POST, &path, body, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    /// Ask `owner` to push `name` here (`to` is this gateway's name); its push report. With
    /// `release_wait`, the owner's containers keep the volume until they stop by themselves
    /// ([`super::PushOptions::release_wait`]).
    pub async fn request_push(
        &self,
        owner: &str,
        name: &VolumeName,
        to: &str,
        release_wait: Option<Duration>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let mut path = format!("/luastrip/peer/v1/volumes/{name}/push?to={to}");
        if let Some(w) = release_wait {
            path.push_str(&format!("&release_wait_ms={}", w.as_millis()));
        }
        self.call(owner, Method::POST, &path, Self::empty(), Some(timeout))
            .await
    }

    fn authorised(&self, req: &Request<Incoming>) -> bool {
        let want = format!("Bearer {}", self.token);
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Constant time in the token's length: no early exit on the first differing byte.
        got.len() == want.len()
            && got
                .iter()
                .zip(want.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[derive(serde::Deserialize)]
struct SnapshotWire {
    tag: String,
    guid: String,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    used: u64,
}

impl From<SnapshotWire> for Snapshot {
    fn from(s: SnapshotWire) -> Self {
        Snapshot {
            tag: s.tag,
            guid: s.guid,
            created: s.created,
            used: s.used,
        }
    }
}

/// The most a push asked for by a peer waits for the volume's containers to stop.
pub const MAX_RELEASE_WAIT: Duration = Duration::from_secs(60);

/// A push request's `?release_wait_ms=`: the cut-over waits that long for the running
/// containers that use the volume to stop by themselves ([`super::PushOptions::release_wait`]).
fn release_wait(req: &Request<Incoming>) -> Result<Option<Duration>, Error> {
    match query(req, "release_wait_ms") {
        None => Ok(None),
        Some(ms) => match ms.parse::<u64>().map(Duration::from_millis) {
            Ok(d) if d <= MAX_RELEASE_WAIT => Ok(Some(d)),
            _ => Err(helper(format!(
                "release_wait_ms={ms}: a whole number of milliseconds, at most {}",
                MAX_RELEASE_WAIT.as_millis()
            ))),
        },
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(v.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn error_reply(e: Error) -> Response<Full<Bytes>> {
    reply(e.status(), &json!({ "message": e.to_string() }))
}

/// Serve the peer API on `listener` until `stop` turns true; over TLS (mutual: a client must
/// show a certificate the CA signed) when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    volumes: Arc<Volumes>,
    stop: watch::Receiver<bool>,
) {
    let handler = move |req, from| {
        let volumes = volumes.clone();
        async move { handle(&volumes, req, from).await }
    };
    let open = move |tcp: TcpStream| {
        let tls = tls.clone();
        async move {
            match tls {
                None => Ok(Stream::Tcp(tcp)),
                Some(tls) => {
                    crate::stream::accept_tls(&tls, tcp, crate::stream::TLS_HANDSHAKE).await
                }
            }
        }
    };
    crate::socket::serve_http_opened("peer", listener, open, handler, stop).await
}

/// A call without the owner's epoch: from a gateway older than this one, or made by hand.
fn old_peer(call: &str, needs: &str) -> Error {
    Error::client(
        StatusCode::BAD_REQUEST,
        format!(
            "luastrip: a peer {call} needs {needs} (the owner and its epoch); is the sending \
             gateway older than this one? Upgrade every gateway"
        ),
    )
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn handle(
    volumes: &Volumes,
    req: Request<Incoming>,
    from: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let Some(peers) = volumes.peers() else {
        return reply(
            StatusCode::NOT_FOUND,
            &json!({ "message": "luastrip: no peer API here" }),
        );
    };
    if !peers.authorised(&req) {
        warn!(%from, path = req.uri().path(), "peer call refused: missing or wrong token");
        return reply(
            StatusCode::UNAUTHORIZED,
            &json!({ "message": "luastrip: missing or wrong peer token" }),
        );
    }
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/luastrip/peer/v1/volumes/") else {
        return reply(
            StatusCode::NOT_FOUND,
            &json!({ "message": format!("luastrip: no peer call {path}") }),
        );
    };
    let Some((name, op)) = rest.split_once('/') else {
        return reply(
            StatusCode::NOT_FOUND,
            &json!({ "message": format!("luastrip: no peer call {path}") }),
        );
    };
    let name = match Volumes::name(name) {
        Ok(n) => n,
        Err(e) => return error_reply(e),
    };
    debug!(%from, volume = %name, op, "peer call");
    let result = match (req.method().clone(), op) {
        (Method::GET, "snapshots") => volumes.local_snapshots(&name).await.map(|s| json!(s)),
        (Method::PUT, "stream") => {
            let tag = query(&req, "tag").unwrap_or_default();
            let guid = query(&req, "guid").unwrap_or_default();
            let by = query(&req, "from").zip(query(&req, "epoch").and_then(|e| e.parse().ok()));
            let standby = query(&req, "standby").as_deref() == Some("1");
            match (Volumes::tag(&tag), by) {
                (Err(e), _) => Err(e),
                (_, None) => Err(old_peer("stream", "?from=HOST&epoch=N")),
                (Ok(tag), Some((from, epoch))) => {
                    let body = req
                        .into_body()
                        .into_data_stream()
                        .map_err(std::io::Error::other);
                    let reader = tokio_util::io::StreamReader::new(body);
                    let by = Handoff {
                        from,
                        epoch,
                        standby,
                    };
                    volumes
                        .receive(&name, &tag, &guid, &by, Box::new(reader))
                        .await
                        .map(|s| json!(s))
                }
            }
        }
        (Method::POST, "claim") => match crate::body::read_to_cap(req.into_body(), 1 << 20).await {
            Err(e) => Err(helper(format!("claim: {e}"))),
            Ok(b) => {
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                match (v["from"].as_str(), v["epoch"].as_u64(), v["guid"].as_str()) {
                    (Some(from), Some(epoch), Some(guid)) => {
                        let by = Handoff {
                            from: from.to_string(),
                            epoch,
                            standby: false,
                        };
                        volumes
                            .take_ownership(&name, &by, guid)
                            .await
                            .map(|_| json!({ "owner": volumes.host(), "epoch": epoch + 1 }))
                    }
                    _ => Err(old_peer("claim", "{\"from\", \"epoch\", \"guid\"}")),
                }
            }
        },
        (Method::POST, "push") => match (query(&req, "to"), release_wait(&req)) {
            (None, _) => Err(helper("push needs ?to=PEER")),
            (_, Err(e)) => Err(e),
            (Some(to), Ok(release_wait)) => {
                let opts = super::PushOptions {
                    release_wait,
                    ..super::PushOptions::default()
                };
                volumes.push(&name, &to, opts).await.map(|r| json!(r))
            }
        },
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                &json!({ "message": format!("luastrip: no peer call {} {path}", req.method()) }),
            )
        }
    };
    match result {
        Ok(v) => reply(StatusCode::OK, &v),
        Err(e) => error_reply(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn peers_are_named_with_the_scheme_tls_calls_for() {
        let token = || "a-token-of-thirty-two-characters".to_string();
        let plain = Peers::new(&["h2=http://10.0.0.2:7101".into()], token(), None).unwrap();
        assert_eq!(plain.addr("h2").await.unwrap(), "10.0.0.2:7101");
        let e = plain.addr("h3").await.unwrap_err().to_string();
        assert!(e.contains("name it with --peer h3="), "{e}");
        let e = Peers::new(&["h2=https://10.0.0.2:7101".into()], token(), None)
            .err()
            .unwrap();
        assert!(e.contains("https:// needs --peer-tls-cert"), "{e}");
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        let e = Peers::new(
            &["h2=http://10.0.0.2:7101".into()],
            token(),
            Some(tls.clone()),
        )
        .err()
        .unwrap();
        assert!(
            e.contains("with --peer-tls-* the peers are NAME=https://HOST:PORT"),
            "{e}"
        );
        assert!(Peers::new(&["h2=https://10.0.0.2:7101".into()], token(), Some(tls)).is_ok());
    }
}
