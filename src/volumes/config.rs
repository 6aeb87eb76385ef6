//! How the volume helper is set up (the `--volume-backend`, `--zfs-*` and `--peer*` flags),
//! checked and built into [`Volumes`] here, so that `serve` only wires what the helper built.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::peers::Peers;
use super::{VolumeBackend, Volumes};
use crate::cluster::Cluster;
use crate::error::ConfigError;
use crate::tls::TlsFiles;
use crate::upstream::{Upstream, UpstreamAddr};

/// The volume helper's flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--volume-backend`: `zfs`.
    pub backend: String,
    /// `--zfs-pool`.
    pub zfs_pool: Option<String>,
    /// `--zfs-root`: volumes are `POOL/ROOT/NAME`.
    pub zfs_root: String,
    /// `--zfs-timeout-s`: the bound on one `zfs` command.
    pub zfs_timeout: Duration,
    /// `--volume-plugin`: also serve the Docker volume plugin protocol under this name.
    pub plugin: Option<String>,
    /// `--volume-follow`: a volume owned by another gateway moves here when this host's dockerd
    /// mounts it through the plugin (a swarm task moved here, a `docker run`).
    pub follow: bool,
    /// `--peer NAME=http://HOST:PORT`: other gateways volumes move to and from.
    pub peers: Vec<String>,
    /// `--peer-listen HOST:PORT`: serve the peer API here.
    pub peer_listen: Option<String>,
    /// `--peer-url`: how the other gateways reach this one's peer API; published in its
    /// cluster registration, so that with a shared store no `--peer` names it.
    pub peer_url: Option<String>,
    /// `--peer-token-file`: the token peers share.
    pub peer_token_file: Option<PathBuf>,
    /// `--peer-tls-cert`, `--peer-tls-key`, `--peer-tls-ca`: mutual TLS between peers.
    pub peer_tls: TlsFiles,
}

/// The peer API's listener, bound, and its TLS (mutual) if configured.
pub struct PeerListener {
    pub listener: tokio::net::TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Config {
    /// The helper these flags describe, on `cluster`: its backend checked now (a missing `zfs`
    /// command or pool is a start-up error naming the flag), its peers and their TLS read.
    pub async fn open(
        &self,
        cluster: Arc<dyn Cluster>,
        host_name: &str,
        upstream: &UpstreamAddr,
    ) -> Result<Volumes, ConfigError> {
        let backend: Arc<dyn VolumeBackend> = match self.backend.as_str() {
            "zfs" => {
                let pool = self.zfs_pool.as_deref().ok_or_else(|| {
                    ConfigError("--volume-backend zfs needs --zfs-pool POOL".into())
                })?;
                Arc::new(
                    super::zfs::Zfs::open(pool, &self.zfs_root, self.zfs_timeout)
                        .await
                        .map_err(|e| ConfigError(e.to_string()))?,
                )
            }
            other => {
                return Err(ConfigError(format!(
                    "--volume-backend {other:?}: the backends are: zfs"
                )))
            }
        };
        let peers = match &self.peer_token_file {
            Some(file) => {
                let token = Peers::read_token(file).map_err(ConfigError)?;
                let tls = match self.peer_tls()? {
                    true => Some(
                        crate::tls::client_config(&self.peer_tls, "--peer-tls")
                            .map_err(ConfigError)?,
                    ),
                    false => None,
                };
                let peers = Peers::new(&self.peers, token, tls).map_err(ConfigError)?;
                if let Some(url) = &self.peer_url {
                    super::peers::address(url, self.peer_tls()?)
                        .map_err(|e| ConfigError(format!("--peer-url {url:?}: {e}")))?;
                }
                // With a store many hosts share, peers not named are looked up there.
                Some(match cluster.distributed() {
                    true => peers.with_cluster(cluster.clone()),
                    false => peers,
                })
            }
            None if !self.peers.is_empty()
                || self.peer_listen.is_some()
                || self.peer_url.is_some() =>
            {
                return Err(ConfigError(
                    "--peer, --peer-listen and --peer-url need --peer-token-file (the token \
                     peers share)"
                        .into(),
                ))
            }
            None => None,
        };
        info!(
            backend = backend.kind(),
            host = host_name,
            "volume helper ready"
        );
        let volumes = Volumes::new(
            backend,
            cluster,
            host_name.to_string(),
            Upstream::new(upstream.clone()),
        );
        Ok(match peers {
            Some(p) => volumes.with_peers(p),
            None => volumes,
        })
    }

    /// `--peer-listen`, bound, with its TLS; `None` without the flag.
    pub async fn peer_listener(&self) -> Result<Option<PeerListener>, ConfigError> {
        let Some(addr) = &self.peer_listen else {
            return Ok(None);
        };
        let tls = match self.peer_tls()? {
            true => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(&self.peer_tls, "--peer-tls")
                    .map_err(ConfigError)?
                    .config,
            )),
            false => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ConfigError(format!("--peer-listen {addr}: {e}")))?;
        info!(listen = %addr, tls = tls.is_some(), "serving the peer API");
        Ok(Some(PeerListener { listener, tls }))
    }

    /// Whether the peer API runs over TLS: none, or all three of `--peer-tls-cert`,
    /// `--peer-tls-key` and `--peer-tls-ca` (mutual: each side verifies the other's certificate
    /// against the CA).
    fn peer_tls(&self) -> Result<bool, ConfigError> {
        let files = &self.peer_tls;
        match (&files.cert, &files.key, &files.ca) {
            (None, None, None) => Ok(false),
            (Some(_), Some(_), Some(_)) => Ok(true),
            _ => Err(ConfigError(
                "--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together (mutual TLS)".into(),
            )),
        }
    }
}
