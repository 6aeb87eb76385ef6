//! Portable volumes: the storage half of luastrip. A volume is a named dataset on this host
//! (behind the [`VolumeBackend`] trait; ZFS is the first backend) that can be snapshotted,
//! rolled back, and moved to another host (Flocker's two-phase push, [`push`]). Which host owns a
//! volume, under which epoch, and how far a push has gone are recorded in the [`Cluster`] store
//! ([`owner`]); a copy that is not the volume is read-only (Flocker's rule, so that copies cannot
//! diverge and break an incremental receive).
//!
//! [`Volumes`] is the helper's state. It lives outside the Lua VMs (they are rebuilt per worker
//! and per reload) and is shared by the `zfs.*` Lua namespace, `GET /luastrip/volumes`, the
//! volume plugin ([`crate::plugin::volume`]) and the peer listener ([`peers`]).

pub mod config;
pub mod endpoint;
pub mod name;
pub mod owner;
pub mod peers;
pub mod push;
pub mod replicate;
pub mod swarm;
pub mod zfs;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncRead;

use crate::cluster::{Cluster, ClusterError};
use crate::upstream::Upstream;
use crate::Error;
use name::{Tag, VolumeName};
use owner::{owner_key, Ownership};

pub use config::Config;

pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A volume as the backend sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendVolume {
    pub name: VolumeName,
    /// The backend's own name for it (for ZFS, the dataset).
    pub id: String,
    /// Where it is mounted on this host: what a container binds.
    pub mountpoint: PathBuf,
    /// When it was created (Unix seconds).
    pub created: u64,
    /// Bytes it uses.
    pub used: u64,
    pub read_only: bool,
    /// The ownership epoch this copy was given when this host became its owner ([`owner`]);
    /// `None` if it never was (a received copy, or a volume made before epochs).
    pub epoch: Option<u64>,
}

/// A snapshot of a volume. The `guid` identifies the same snapshot on every host it was sent
/// to, whatever its tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub tag: String,
    pub guid: String,
    pub created: u64,
    pub used: u64,
}

/// A replication stream being produced by the backend (`zfs send`): read `reader` to its end,
/// then [`Producer::finish`] tells whether the stream was whole.
pub struct ByteStream {
    pub reader: Box<dyn AsyncRead + Send + Sync + Unpin>,
    pub producer: Producer,
}

/// The process that makes a [`ByteStream`].
pub struct Producer {
    child: tokio::process::Child,
    what: String,
}

impl ByteStream {
    pub fn new(
        reader: impl AsyncRead + Send + Sync + Unpin + 'static,
        child: tokio::process::Child,
        what: String,
    ) -> Self {
        ByteStream {
            reader: Box::new(reader),
            producer: Producer { child, what },
        }
    }
}

impl Producer {
    /// Wait for the producer to exit; an error names it and what it said.
    pub async fn finish(self) -> Result<(), Error> {
        let out = self
            .child
            .wait_with_output()
            .await
            .map_err(|e| helper(format!("{}: {e}", self.what)))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(helper(format!(
                "{}: {}",
                self.what,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Where volumes live. Implementations: [`zfs::Zfs`]. Every operation names a checked volume,
/// and `create` is idempotent (the same name gives the same volume).
pub trait VolumeBackend: Send + Sync + 'static {
    /// The backend's name, as `--volume-backend` takes it.
    fn kind(&self) -> &'static str;
    /// The volume, created if missing; `true` if this call created it.
    fn create<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, (BackendVolume, bool)>;
    fn get<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, Option<BackendVolume>>;
    fn list(&self) -> BackendFuture<'_, Vec<BackendVolume>>;
    fn snapshot<'a>(&'a self, name: &'a VolumeName, tag: &'a Tag) -> BackendFuture<'a, Snapshot>;
    /// Oldest first.
    fn snapshots<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, Vec<Snapshot>>;
    fn rollback<'a>(
        &'a self,
        name: &'a VolumeName,
        tag: &'a Tag,
        destroy_newer: bool,
    ) -> BackendFuture<'a, ()>;
    fn set_read_only<'a>(&'a self, name: &'a VolumeName, on: bool) -> BackendFuture<'a, ()>;
    /// The changes from `since` (or everything, without it) up to the snapshot `to`.
    fn send<'a>(
        &'a self,
        name: &'a VolumeName,
        since: Option<&'a Tag>,
        to: &'a Tag,
    ) -> BackendFuture<'a, ByteStream>;
    /// Apply a stream made by `send` on another host.
    fn receive<'a>(
        &'a self,
        name: &'a VolumeName,
        stream: Box<dyn AsyncRead + Send + Unpin + 'a>,
    ) -> BackendFuture<'a, ()>;
    /// The volume and its snapshots.
    fn destroy<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, ()>;
    /// One snapshot.
    fn destroy_snapshot<'a>(&'a self, name: &'a VolumeName, tag: &'a Tag) -> BackendFuture<'a, ()>;
    /// Place (or, with `on` false, release) luastrip's hold on a snapshot: a held snapshot cannot
    /// be destroyed. Holding twice, or releasing what is not held, is not an error.
    fn hold<'a>(&'a self, name: &'a VolumeName, tag: &'a Tag, on: bool) -> BackendFuture<'a, ()>;
    /// Record on the volume itself the ownership epoch this host holds it under.
    fn set_epoch<'a>(&'a self, name: &'a VolumeName, epoch: u64) -> BackendFuture<'a, ()>;
}

/// A volume as luastrip shows it (Lua, `GET /luastrip/volumes`).
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    /// The backend's name for it (for ZFS, the dataset).
    pub dataset: String,
    pub mountpoint: String,
    /// Unix seconds.
    pub created: u64,
    /// Whether this call created it (only for `zfs.volume`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
    /// The gateway that owns it (`--host-name`); `null` if no one has claimed it.
    pub owner: Option<String>,
    /// The owner record's epoch (it grows by one at every handoff).
    pub epoch: Option<u64>,
    /// Whether this host's copy is the volume (this gateway owns it, at the record's epoch):
    /// only that copy is writable.
    pub owned: bool,
    /// Why this copy is not the volume, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The record gives the volume to this host, but at another epoch than this copy's: the
    /// copy is stale, and no move brings the volume (it is nowhere else).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// A push under way.
    #[serde(skip_serializing_if = "Option::is_none", rename = "move")]
    pub moving: Option<owner::Move>,
    /// Its owner was forgotten.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub orphaned: bool,
    /// Where its owner sends it on a schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<owner::Standby>,
    pub read_only: bool,
    /// Bytes used.
    pub size: u64,
    pub snapshots: Vec<Snapshot>,
}

/// The volume helper: a backend, the cluster store, and this gateway's name.
pub struct Volumes {
    backend: Arc<dyn VolumeBackend>,
    cluster: Arc<dyn Cluster>,
    host: String,
    /// The daemon, to tell whether a container uses a volume.
    upstream: Upstream,
    /// Other gateways, for moving volumes (`--peer`).
    peers: Option<Arc<peers::Peers>>,
    /// Per volume: held (written) while a push cuts over, so that calls that need the volume
    /// wait (and then see where it went) instead of writing to a copy that is going away.
    holds: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Where progress goes besides the log: the journal's helper events (`tail`).
    events: Option<crate::journal::HelperEvents>,
    /// Containers whose volume a push is cutting over, or has moved away.
    moves: std::sync::Mutex<std::collections::HashMap<ContainerRef, ContainerMove>>,
    /// The volumes this process is pushing now (a move recorded for any other is a leftover).
    pushing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The mounts dockerd holds through the volume plugin, by volume: mount IDs, each counted
    /// from `Mount` to `Unmount` ([`Volumes::mount_for_docker`]).
    docker_mounts:
        std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
    /// The replication loops ([`replicate`]), by volume.
    replicas: std::sync::Mutex<std::collections::HashMap<String, tokio::task::JoinHandle<()>>>,
}

/// A container as the daemon lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    pub name: String,
    pub id: String,
}

impl std::fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The volume a container's push concerns, and its cut-over lock.
#[derive(Clone)]
struct ContainerMove {
    volume: VolumeName,
    hold: Arc<tokio::sync::RwLock<()>>,
}

pub use push::{PushOptions, PushReport};

pub(crate) fn helper(reason: impl Into<String>) -> Error {
    Error::Helper {
        helper: "zfs".into(),
        reason: reason.into(),
    }
}

fn cluster_error(e: ClusterError) -> Error {
    helper(e.to_string())
}

impl Volumes {
    pub fn new(
        backend: Arc<dyn VolumeBackend>,
        cluster: Arc<dyn Cluster>,
        host: String,
        upstream: Upstream,
    ) -> Self {
        Volumes {
            backend,
            cluster,
            host,
            upstream,
            peers: None,
            holds: Default::default(),
            docker_mounts: Default::default(),
            events: None,
            moves: Default::default(),
            pushing: Default::default(),
            replicas: Default::default(),
        }
    }

    /// Whether its owners are recorded in a store many hosts share: the volume plugin then
    /// reports its volumes as global (the same name is the same volume on every host).
    pub fn cluster_wide(&self) -> bool {
        self.cluster.distributed()
    }

    /// The same, announcing its progress (pushes) on `events`.
    pub fn with_events(mut self, events: crate::journal::HelperEvents) -> Self {
        self.events = Some(events);
        self
    }

    /// Tell the log and the journal's watchers what a long operation is doing.
    fn note(&self, message: String, fields: serde_json::Value) {
        crate::journal::announce(self.events.as_ref(), "zfs", message, fields);
    }

    /// The same, able to move volumes to and from `peers`.
    pub fn with_peers(mut self, peers: peers::Peers) -> Self {
        self.peers = Some(Arc::new(peers));
        self
    }

    pub fn peers(&self) -> Option<&peers::Peers> {
        self.peers.as_deref()
    }

    /// The cut-over lock of `name`.
    fn hold(&self, name: &VolumeName) -> Arc<tokio::sync::RwLock<()>> {
        self.holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn backend(&self) -> &dyn VolumeBackend {
        &*self.backend
    }

    /// Check a volume name as a Lua or HTTP caller gave it.
    pub fn name(s: &str) -> Result<VolumeName, Error> {
        VolumeName::parse(s).map_err(helper)
    }

    /// Check a snapshot tag.
    pub fn tag(s: &str) -> Result<Tag, Error> {
        Tag::parse(s).map_err(helper)
    }

    async fn info(
        &self,
        v: BackendVolume,
        new: bool,
        record: Option<Ownership>,
    ) -> Result<VolumeInfo, Error> {
        let snapshots = self.backend.snapshots(&v.name).await?;
        let refused = record
            .as_ref()
            .and_then(|o| owner::fenced(&self.host, &v, o));
        Ok(VolumeInfo {
            owned: record.is_some() && refused.is_none(),
            stale: refused.is_some() && record.as_ref().is_some_and(|o| o.owner == self.host),
            epoch: record.as_ref().map(|o| o.epoch),
            refused,
            moving: record.as_ref().and_then(|o| o.moving.clone()),
            orphaned: record.as_ref().is_some_and(|o| o.orphaned),
            standby: record.as_ref().and_then(|o| o.standby.clone()),
            owner: record.map(|o| o.owner),
            name: v.name.to_string(),
            dataset: v.id,
            mountpoint: v.mountpoint.display().to_string(),
            created: v.created,
            new,
            read_only: v.read_only,
            size: v.used,
            snapshots,
        })
    }

    /// The volume `name`, created (and claimed for this gateway) if missing; the same name
    /// gives the same volume. A copy that is not the volume (owned by another gateway, or
    /// stale: see [`owner::fenced`]) is made read-only.
    pub async fn volume(&self, name: &VolumeName) -> Result<VolumeInfo, Error> {
        // Wait while a push cuts this volume over; then answer as it is afterwards.
        let hold = self.hold(name);
        let _cutting = hold.read().await;
        self.volume_unheld(name).await
    }

    /// dockerd mounts `name` for its mount `id` (the volume plugin's `Mount`): the volume as
    /// [`Volumes::volume`] gives it, recorded as mounted here when this host owns it, in one
    /// step that no cut-over interleaves with. A push counts these mounts as users of the volume
    /// ([`Volumes::users`]), so a container dockerd is starting with the volume (mounted, not yet
    /// running) is never left on a copy that is going away.
    pub async fn mount_for_docker(&self, name: &VolumeName, id: &str) -> Result<VolumeInfo, Error> {
        let hold = self.hold(name);
        let _cutting = hold.read().await;
        let v = self.volume_unheld(name).await?;
        if v.owned {
            self.docker_mounts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name.to_string())
                .or_default()
                .insert(id.to_string());
        }
        Ok(v)
    }

    /// dockerd lets go of its mount `id` of `name` (the volume plugin's `Unmount`).
    pub fn unmount_for_docker(&self, name: &VolumeName, id: &str) {
        let mut mounts = self.docker_mounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = mounts.get_mut(name.as_str()) {
            ids.remove(id);
            if ids.is_empty() {
                mounts.remove(name.as_str());
            }
        }
    }

    /// How many mounts of `name` dockerd holds through the volume plugin.
    pub fn docker_mounts(&self, name: &VolumeName) -> usize {
        self.docker_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name.as_str())
            .map_or(0, |ids| ids.len())
    }

    /// [`Volumes::volume`], with the cut-over lock already taken by the caller.
    async fn volume_unheld(&self, name: &VolumeName) -> Result<VolumeInfo, Error> {
        let (mut v, new) = self.backend.create(name).await?;
        let (record, rev, claimed) = self.claim(name).await?;
        if claimed {
            v.epoch = Some(record.epoch);
        }
        let adopted = record.adopting && record.owner == self.host;
        let record = self.unorphan(name, &v, record, rev).await?;
        if adopted && !record.adopting {
            v.epoch = Some(record.epoch);
        }
        let should_be_read_only = owner::fenced(&self.host, &v, &record).is_some();
        if v.read_only != should_be_read_only {
            self.backend
                .set_read_only(name, should_be_read_only)
                .await?;
            v.read_only = should_be_read_only;
        }
        self.info(v, new, Some(record)).await
    }

    /// Every volume on this host.
    pub async fn list(&self) -> Result<Vec<VolumeInfo>, Error> {
        let mut out = Vec::new();
        for v in self.backend.list().await? {
            let record = self.ownership(&v.name).await?.map(|(o, _)| o);
            out.push(self.info(v, false, record).await?);
        }
        Ok(out)
    }

    async fn existing(&self, name: &VolumeName) -> Result<BackendVolume, Error> {
        self.backend
            .get(name)
            .await?
            .ok_or_else(|| helper(format!("no volume {name} on this host")))
    }

    /// Snapshot `name` as `tag` (default: `luastrip-<unix ms>`).
    pub async fn snapshot(&self, name: &VolumeName, tag: Option<Tag>) -> Result<Snapshot, Error> {
        self.existing(name).await?;
        let tag = match tag {
            Some(t) => t,
            None => Tag::parse(&format!(
                "luastrip-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            ))
            .map_err(helper)?,
        };
        self.backend.snapshot(name, &tag).await
    }

    pub async fn snapshots(&self, name: &VolumeName) -> Result<Vec<Snapshot>, Error> {
        self.existing(name).await?;
        self.backend.snapshots(name).await
    }

    /// Roll `name` back to `tag`. Newer snapshots are in the way: refused unless
    /// `destroy_newer`, which destroys them (as `zfs rollback -r`).
    pub async fn rollback(
        &self,
        name: &VolumeName,
        tag: &Tag,
        destroy_newer: bool,
    ) -> Result<(), Error> {
        self.existing(name).await?;
        self.must_own(name, "roll back").await?;
        let snaps = self.backend.snapshots(name).await?;
        let Some(at) = snaps.iter().position(|s| s.tag == tag.as_str()) else {
            return Err(helper(format!("volume {name} has no snapshot {tag}")));
        };
        let newer: Vec<&str> = snaps[at + 1..].iter().map(|s| s.tag.as_str()).collect();
        if !newer.is_empty() && !destroy_newer {
            return Err(helper(format!(
                "volume {name}: snapshots newer than {tag} ({}) would be destroyed; \
                 pass {{ destroy_newer = true }} to roll back anyway",
                newer.join(", ")
            )));
        }
        self.backend.rollback(name, tag, destroy_newer).await
    }

    /// Destroy `name` and its snapshots on this host; refused while a container (running or
    /// not) uses it. If this gateway owned it, the claim goes too.
    pub async fn destroy(&self, name: &VolumeName) -> Result<(), Error> {
        let v = self.existing(name).await?;
        if let Some(user) = self.used_by(&v).await? {
            return Err(helper(format!(
                "volume {name} is used by container {user}; remove the container first"
            )));
        }
        self.backend.destroy(name).await?;
        // The claim goes with the copy that was the volume (not with a stale one).
        if let Some((o, rev)) = self.ownership(name).await? {
            if owner::fenced(&self.host, &v, &o).is_none() {
                self.cluster
                    .delete(&owner_key(name), rev)
                    .await
                    .map_err(cluster_error)?;
            }
        }
        Ok(())
    }

    /// The first container (name or ID) whose mounts include the volume's mountpoint.
    async fn used_by(&self, v: &BackendVolume) -> Result<Option<String>, Error> {
        self.container_using(v, true).await
    }

    /// The first container (running ones only, unless `all`) whose mounts include the volume.
    async fn container_using(&self, v: &BackendVolume, all: bool) -> Result<Option<String>, Error> {
        Ok(self
            .containers_using(v, all)
            .await?
            .into_iter()
            .next()
            .map(|c| c.name))
    }

    /// Who has the volume on this host: the running containers whose mounts include it, and,
    /// while dockerd holds plugin mounts of it, the containers it is starting or has paused with
    /// it too (their mount is live before they run). Mounts with no such container found are
    /// named as what they are (a user without an ID, which nothing can stop).
    async fn users(&self, v: &BackendVolume) -> Result<Vec<ContainerRef>, Error> {
        let mounts = self.docker_mounts(&v.name);
        if mounts == 0 {
            return self.containers_using(v, false).await;
        }
        let mut users = self
            .containers_using_where(v, "/containers/json?all=1", |c| {
                matches!(
                    c["State"].as_str(),
                    Some("running" | "created" | "restarting" | "paused")
                )
            })
            .await?;
        if users.is_empty() {
            users.push(ContainerRef {
                name: format!("a container dockerd mounted it for ({mounts} mount(s))"),
                id: String::new(),
            });
        }
        Ok(users)
    }

    /// The containers (running ones only unless `all`) whose mounts include the volume: its
    /// mountpoint (a bind, `/flocker/NAME`), or the volume by name through a volume plugin
    /// (dockerd lists those without a source).
    async fn containers_using(
        &self,
        v: &BackendVolume,
        all: bool,
    ) -> Result<Vec<ContainerRef>, Error> {
        let path = if all {
            "/containers/json?all=1"
        } else {
            "/containers/json"
        };
        self.containers_using_where(v, path, |_| true).await
    }

    /// The containers of the list at `path` that `keep` keeps and whose mounts include the
    /// volume.
    async fn containers_using_where(
        &self,
        v: &BackendVolume,
        path: &str,
        keep: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Vec<ContainerRef>, Error> {
        // A pool of its own: this may run on any worker's thread.
        let containers = self.upstream.fork().get_json(path).await?;
        let mountpoint = v.mountpoint.display().to_string();
        let inside = format!("{mountpoint}/");
        Ok(containers
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| keep(c))
            .filter(|c| {
                c["Mounts"].as_array().into_iter().flatten().any(|m| {
                    let by_path = m["Source"]
                        .as_str()
                        .is_some_and(|s| s == mountpoint || s.starts_with(&inside));
                    let by_plugin = m["Type"].as_str() == Some("volume")
                        && m["Name"].as_str() == Some(v.name.as_str())
                        && m["Driver"].as_str().is_some_and(|d| d != "local");
                    by_path || by_plugin
                })
            })
            .filter_map(|c| {
                let id = c["Id"].as_str()?.to_string();
                let name = c["Names"][0]
                    .as_str()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| id[..id.len().min(12)].to_string());
                Some(ContainerRef { name, id })
            })
            .collect())
    }

    /// Calls on a container that used a volume being cut over (or moved away) by a push: held
    /// until the cut-over ends, then refused if they would run the container here again.
    /// `container` is as the client named it (name, ID or ID prefix).
    pub async fn container_call(&self, container: &str, starts_it: bool) -> Result<(), Error> {
        let state = {
            let moves = self.moves.lock().unwrap_or_else(|e| e.into_inner());
            moves
                .iter()
                .find(|(c, _)| {
                    c.name == container || (container.len() >= 3 && c.id.starts_with(container))
                })
                .map(|(_, s)| s.clone())
        };
        let Some(state) = state else {
            return Ok(());
        };
        // Wait for the cut-over (if one is under way) to end.
        drop(state.hold.read().await);
        let moved = self.owner(&state.volume).await?;
        if starts_it && moved.as_deref() != Some(self.host.as_str()) {
            return Err(Error::client(
                http::StatusCode::CONFLICT,
                format!(
                    "luastrip: container {container} used volume {}, which moved to {}; run the \
                     container there",
                    state.volume,
                    moved.as_deref().unwrap_or("another gateway")
                ),
            ));
        }
        Ok(())
    }

    /// Whether any container's volume is being (or has been) moved away.
    pub fn has_moves(&self) -> bool {
        !self
            .moves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Forget a removed container.
    pub fn container_removed(&self, container: &str) {
        self.moves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c, _| {
                !(c.name == container || (container.len() >= 3 && c.id.starts_with(container)))
            });
    }

    /// Stop a container (for a push's cut-over), as `docker stop -t` does: `timeout` seconds,
    /// then killed.
    async fn stop_container(&self, name: &str, timeout: u32) -> Result<(), Error> {
        let path = format!("/containers/{name}/stop?t={timeout}");
        self.upstream.fork().post_empty(&path).await.map(|_| ())
    }
}
