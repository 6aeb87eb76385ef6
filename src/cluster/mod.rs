//! What several hosts must agree on (who owns a volume, the overlay's address allocations, and
//! which gateways are alive) goes through one small interface with compare-and-swap semantics, so that two
//! gateways racing for the same record cannot both win: [`Cluster::create`] only if the key is
//! absent, [`Cluster::swap`] only if the record is still at the revision the caller read.
//!
//! The revisions behave as etcd's `mod_revision` (one counter for the whole store, bumped by
//! every write), so an etcd implementation drops in behind the same trait. [`local::LocalCluster`]
//! is the embedded default: one JSON file on this host, written atomically.

pub mod local;

use std::future::Future;
use std::pin::Pin;

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
}
