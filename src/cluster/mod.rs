//! What several hosts must agree on (who owns a volume, the overlay's address allocations, and
//! which gateways are alive) goes through one small interface with compare-and-swap semantics, so that two
//! gateways racing for the same record cannot both win: [`Cluster::create`] only if the key is
//! absent, [`Cluster::swap`] only if the record is still at the revision the caller read.
//!
//! The revisions behave as etcd's `mod_revision` (one counter for the whole store, bumped by
//! every write), as etcd's are: [`etcd::EtcdCluster`] (`--cluster etcd://…`) is the store for
//! many hosts, and [`local::LocalCluster`] the embedded default, one JSON file on this host,
//! written atomically. [`open`] opens the one the flags name.

pub mod etcd;
pub mod hosts;
pub mod local;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tracing::info;

use crate::error::ConfigError;

use serde_json::Value;

/// A record as stored: its value and the revision of its last write.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub value: Value,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    /// The compare failed: the key exists (create) or moved on from the revision read (swap,
    /// delete). `current` is the record as it is now, if any.
    #[error("cluster record {key} changed meanwhile")]
    Conflict {
        key: String,
        current: Option<Record>,
    },
    /// The store could not be read or written.
    #[error("cluster store: {0}")]
    Store(String),
}

pub type ClusterFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send + 'a>>;

/// The cluster store. Keys are `/`-separated paths such as `volumes/db`.
pub trait Cluster: Send + Sync + 'static {
    /// The record at `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> ClusterFuture<'a, Option<Record>>;

    /// Every record whose key starts with `prefix`, in key order.
    fn list<'a>(&'a self, prefix: &'a str) -> ClusterFuture<'a, Vec<(String, Record)>>;

    /// Create `key` with `value` if it does not exist; its new revision.
    fn create<'a>(&'a self, key: &'a str, value: Value) -> ClusterFuture<'a, u64>;

    /// Replace `key`'s value if its revision is still `revision`; the new revision.
    fn swap<'a>(&'a self, key: &'a str, value: Value, revision: u64) -> ClusterFuture<'a, u64>;

    /// Delete `key` if its revision is still `revision`.
    fn delete<'a>(&'a self, key: &'a str, revision: u64) -> ClusterFuture<'a, ()>;

    /// A lease of `ttl`: records created under it ([`Cluster::create_leased`]) exist while it is
    /// kept alive, and go when it expires. Leases carry liveness only (a gateway is up), never
    /// an allocation or an ownership: a host cut off would go on using what it holds while the
    /// others reused it.
    fn grant(&self, ttl: std::time::Duration) -> ClusterFuture<'_, Lease>;

    /// Keep `lease` alive for another `ttl`; `false` if it has expired (its records are gone).
    fn keep_alive(&self, lease: Lease) -> ClusterFuture<'_, bool>;

    /// [`Cluster::create`], with the record under `lease`.
    fn create_leased<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        lease: Lease,
    ) -> ClusterFuture<'a, u64>;

    /// End `lease` now: its records go.
    fn revoke(&self, lease: Lease) -> ClusterFuture<'_, ()>;

    /// Wait until a record under `prefix` changes after revision `after` (the highest revision
    /// the caller's last list showed), or `wait` passes: followers list again then. A break
    /// loses nothing: the next wait starts from `after` again. This default polls; etcd
    /// watches.
    fn changed<'a>(
        &'a self,
        prefix: &'a str,
        after: u64,
        wait: std::time::Duration,
    ) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            let seen = |records: &[(String, Record)]| {
                let newest = records.iter().map(|(_, r)| r.revision).max().unwrap_or(0);
                (records.len(), newest)
            };
            let first = seen(&self.list(prefix).await?);
            let until = tokio::time::Instant::now() + wait;
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let now = seen(&self.list(prefix).await?);
                if now != first || now.1 > after {
                    return Ok(());
                }
            }
            Ok(())
        })
    }

    /// Whether the store is shared by many hosts (etcd), not one machine's (the file).
    fn distributed(&self) -> bool {
        false
    }

    /// Whether the store answered its last operation (for `/metrics`).
    fn reachable(&self) -> bool {
        true
    }
}

/// Seconds since the epoch, as records carry times.
pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A lease's ID, as the store gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease(pub i64);

/// Where the cluster store is (the `--cluster*` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--cluster-file`: the local store, one JSON file shared by the gateways of this machine.
    pub file: PathBuf,
    /// `--cluster etcd://…`: etcd instead of the file.
    pub etcd: Option<etcd::Config>,
}

/// The store `config` names, opened: etcd (connected lazily: it may be down at start-up), else
/// the local file (its directory made if missing; a file that is not a cluster file refused
/// now).
pub async fn open(config: &Config) -> Result<Arc<dyn Cluster>, ConfigError> {
    if let Some(e) = &config.etcd {
        let cluster = etcd::EtcdCluster::connect(e)
            .await
            .map_err(|e| ConfigError(format!("--cluster: {e}")))?;
        info!(cluster = %e.endpoints.join(","), prefix = %e.prefix, "cluster store: etcd");
        return Ok(Arc::new(cluster));
    }
    let file = &config.file;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ConfigError(format!("--cluster-file {}: {e}", file.display())))?;
    }
    let cluster =
        local::LocalCluster::open(file).map_err(|e| ConfigError(format!("--cluster-file: {e}")))?;
    info!(cluster = %file.display(), "cluster store ready");
    Ok(Arc::new(cluster))
}
