//! The Docker volume plugin face of the volume helper: `docker volume create -d NAME db`,
//! `docker run -v db:/data --volume-driver NAME` and `--mount type=volume,volume-driver=NAME`
//! use the same volumes as the `/flocker/NAME` binds, and dockerd asks for them itself on every
//! start, including the starts that never pass through luastrip's socket.
//!
//! `Mount`/`Unmount` are counted per mount ID, in the volume helper
//! ([`Volumes::mount_for_docker`]): `Remove` refuses a volume that dockerd has mounted (or that
//! any container's mounts name, so the answer survives a luastrip restart), and a push of the
//! volume counts each mount as a user, so a container dockerd is starting with it is never left
//! on a copy that moved away.
//! `docker volume create -d NAME -o standby=HOST [-o every=SECONDS] db` also makes HOST the
//! volume's standby ([`crate::volumes::replicate`]).
//!
//! **A volume follows its container** (`--volume-follow`, a site's choice: whoever may run
//! containers on this host may then take a volume another host does not use). With the cluster
//! store shared (scope `global`), a volume another live gateway owns moves here when this host's
//! dockerd wants it — a swarm task rescheduled here, or `docker run` on this host — as Flocker's
//! two-phase push mapped onto the calls dockerd makes ([`crate::volumes::push`]):
//!
//! * `Create` (which swarm's new node sends while the old task still runs) asks the owner to
//!   push the volume here: step 1, the bulk copy, runs while the old container writes;
//! * the owner's cut-over (step 2) waits for its last container using the volume to stop by
//!   itself — the old task, stopped by swarm, whose `Unmount` comes then — never stopping it;
//! * `Mount` here waits for the move to land (at most [`MOUNT_WAIT`], below dockerd's 30 s for
//!   a plugin call) and returns the volume. If the owner's container does not stop within
//!   [`RELEASE_WAIT`], the move fails and `Mount` says which container on which host holds it:
//!   a volume is never taken from under a running container.
//!
//! A stale copy (its epoch behind the owner record's: see [`crate::volumes::owner`]) is refused,
//! and so is a volume owned elsewhere without `--volume-follow`, naming its owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::{err, reason, Driver, DriverFuture};
use crate::volumes::name::VolumeName;
use crate::volumes::owner::Ownership;
use crate::volumes::Volumes;

/// How long the owner's cut-over waits for its containers that use the volume to stop.
pub const RELEASE_WAIT: Duration = Duration::from_secs(20);

/// How long `Mount` waits for a volume moving here.
pub const MOUNT_WAIT: Duration = Duration::from_secs(25);

/// A move of a volume to this host: `None` while it runs, then how it ended.
type Pulling = watch::Receiver<Option<Result<(), String>>>;

pub struct VolumeDriver {
    volumes: Arc<Volumes>,
    /// Moves of volumes to this host, by volume.
    pulls: Mutex<HashMap<String, Pulling>>,
    /// `--volume-follow`: volumes move here when dockerd mounts them.
    follow: bool,
}

/// Options `docker volume create -o` may pass: a standby host the volume is sent to, and how
/// often (seconds, default 30): `-o standby=h2 -o every=30` ([`Volumes::replicate`]).
const OPTIONS: &[&str] = &["standby", "every"];

impl VolumeDriver {
    pub fn new(volumes: Arc<Volumes>, follow: bool) -> Self {
        VolumeDriver {
            volumes,
            pulls: Mutex::new(HashMap::new()),
            follow,
        }
    }

    /// Whether `v` should move here when dockerd wants it: owned by another gateway, through a
    /// shared cluster store, and not refused for another reason (stale, orphaned).
    fn movable(&self, v: &crate::volumes::VolumeInfo) -> bool {
        self.follow
            && self.volumes.cluster_wide()
            && !v.owned
            && !v.orphaned
            && v.owner.as_deref().is_some_and(|o| o != self.volumes.host())
    }

    /// The move of `name` here: the one under way, else a new one, asked of its owner.
    fn pull(&self, name: &VolumeName) -> Pulling {
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pulls.get(name.as_str()) {
            if p.borrow().is_none() {
                return p.clone();
            }
        }
        let (tx, rx) = watch::channel(None);
        pulls.insert(name.to_string(), rx.clone());
        let (volumes, name) = (self.volumes.clone(), name.clone());
        tokio::spawn(async move {
            let timeout = RELEASE_WAIT + Duration::from_secs(600);
            let moved = volumes
                .pull_when_released(&name, Some(RELEASE_WAIT), timeout)
                .await;
            let _ = tx.send(Some(moved.map(drop).map_err(reason)));
        });
        rx
    }

    /// Wait (at most [`MOUNT_WAIT`]) for `name` to move here; what is wrong if it did not.
    async fn arrived(&self, name: &VolumeName, owner: &str) -> Result<(), String> {
        let mut pulling = self.pull(name);
        let done = tokio::time::timeout(MOUNT_WAIT, pulling.wait_for(Option::is_some)).await;
        match done {
            Ok(Ok(r)) => r.clone().unwrap_or(Ok(())),
            Ok(Err(_)) => Err(format!("volume {name}: its move from {owner} ended unseen")),
            Err(_) => Err(format!(
                "volume {name} is still moving here from {owner} after {} s; the next \
                 attempt finds it here once it has landed",
                MOUNT_WAIT.as_secs()
            )),
        }
    }

    fn name(body: &Value) -> Result<crate::volumes::name::VolumeName, String> {
        let name = body["Name"]
            .as_str()
            .ok_or("the call names no volume (Name)")?;
        Volumes::name(name).map_err(reason)
    }

    async fn create(&self, body: Value) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        let opt = |k: &str| body["Opts"][k].as_str().map(str::to_string);
        if let Some(opts) = body["Opts"].as_object() {
            if let Some(k) = opts.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
                return err(format!(
                    "volume {name}: unknown option {k:?} (this driver takes: {})",
                    OPTIONS.join(", ")
                ));
            }
        }
        let every = match opt("every").map(|e| e.parse::<u64>()) {
            None => 30,
            Some(Ok(s)) if opt("standby").is_some() => s,
            Some(Ok(_)) => return err(format!("volume {name}: every= goes with standby=HOST")),
            Some(Err(_)) => {
                return err(format!(
                    "volume {name}: every= is a whole number of seconds"
                ))
            }
        };
        let v = match self.volumes.volume(&name).await {
            Ok(v) => v,
            Err(e) => return err(reason(e)),
        };
        // Swarm's new node creates the volume while the old task runs: the copy starts now.
        if self.movable(&v) {
            drop(self.pull(&name));
        }
        if let Some(host) = opt("standby") {
            let every = std::time::Duration::from_secs(every);
            if let Err(e) = self.volumes.replicate(&name, Some(&host), every).await {
                return err(reason(e));
            }
        }
        json!({ "Err": "" })
    }

    /// `Get` and `Path`: the copy here; else, for a volume moving here (a move this dockerd's
    /// `Create` or `Mount` began), the volume as the cluster records it, with an empty
    /// `Mountpoint` until it has landed. Once dockerd has been told a volume exists, it never
    /// hears "no volume" for it while it moves: dockerd takes that as gone, and for a
    /// `-v NAME:/data` without a driver it then makes a *local* volume of that name, whose empty
    /// directory the container uses instead of the data. (This happened to the demo's `db` in
    /// the moment the first copy arriving here replaced the empty placeholder `Create` made.)
    async fn get(&self, body: Value, full: bool) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        let here = match self.volumes.backend().get(&name).await {
            Ok(v) => v,
            Err(e) => return err(reason(e)),
        };
        let (mountpoint, status) = match here {
            Some(v) => (
                v.mountpoint.display().to_string(),
                json!({ "dataset": v.id, "read_only": v.read_only }),
            ),
            None => match self.moving_here(&name).await {
                Ok(Some(o)) => (
                    String::new(),
                    json!({ "owner": o.owner, "epoch": o.epoch, "moving_here": true }),
                ),
                Ok(None) => return err(format!("no volume {name}")),
                Err(e) => return err(e),
            },
        };
        if full {
            json!({
                "Volume": { "Name": name.as_str(), "Mountpoint": mountpoint, "Status": status },
                "Err": "",
            })
        } else {
            json!({ "Mountpoint": mountpoint, "Err": "" })
        }
    }

    /// The owner record of `name` if a move of it here has begun (its copy may be landing).
    async fn moving_here(&self, name: &VolumeName) -> Result<Option<Ownership>, String> {
        let begun = self
            .pulls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name.as_str());
        if !begun {
            return Ok(None);
        }
        match self.volumes.ownership(name).await {
            Ok(r) => Ok(r.map(|(o, _)| o)),
            Err(e) => Err(reason(e)),
        }
    }

    async fn list(&self) -> Value {
        match self.volumes.backend().list().await {
            Ok(vols) => json!({
                "Volumes": vols
                    .iter()
                    .map(|v| json!({ "Name": v.name.as_str(), "Mountpoint": v.mountpoint }))
                    .collect::<Vec<_>>(),
                "Err": "",
            }),
            Err(e) => err(reason(e)),
        }
    }

    async fn mount(&self, body: Value) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        let id = body["ID"].as_str().unwrap_or_default().to_string();
        let mut v = match self.volumes.mount_for_docker(&name, &id).await {
            Ok(v) => v,
            Err(e) => return err(reason(e)),
        };
        if self.movable(&v) {
            let owner = v.owner.clone().unwrap_or_default();
            let waiting = std::time::Instant::now();
            if let Err(why) = self.arrived(&name, &owner).await {
                return err(why);
            }
            tracing::info!(volume = %name, from = %owner,
                waited_ms = waiting.elapsed().as_millis() as u64,
                "the volume moved here: mounted");
            v = match self.volumes.mount_for_docker(&name, &id).await {
                Ok(v) => v,
                Err(e) => return err(reason(e)),
            };
        }
        if !v.owned {
            return err(match &v.refused {
                Some(why) => format!("{why}; move it here first"),
                None => format!("volume {name} has no owner here; move it here first"),
            });
        }
        json!({ "Mountpoint": v.mountpoint, "Err": "" })
    }

    fn unmount(&self, body: Value) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        self.volumes
            .unmount_for_docker(&name, body["ID"].as_str().unwrap_or_default());
        json!({ "Err": "" })
    }

    async fn remove(&self, body: Value) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        let mounted = self.volumes.docker_mounts(&name);
        if mounted > 0 {
            return err(format!(
                "volume {name} is mounted by {mounted} container(s); remove them first"
            ));
        }
        match self.volumes.destroy(&name).await {
            Ok(()) => {
                // Gone from this dockerd: no longer answered as moving here.
                let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
                if pulls
                    .get(name.as_str())
                    .is_some_and(|p| p.borrow().is_some())
                {
                    pulls.remove(name.as_str());
                }
                json!({ "Err": "" })
            }
            Err(e) => err(reason(e)),
        }
    }
}

impl Driver for VolumeDriver {
    fn implements(&self) -> &'static str {
        "VolumeDriver"
    }

    fn call<'a>(&'a self, method: &'a str, body: Value) -> Option<DriverFuture<'a>> {
        Some(match method {
            "Create" => Box::pin(self.create(body)),
            "Remove" => Box::pin(self.remove(body)),
            "Mount" => Box::pin(self.mount(body)),
            "Unmount" => Box::pin(async move { self.unmount(body) }),
            "Path" => Box::pin(self.get(body, false)),
            "Get" => Box::pin(self.get(body, true)),
            "List" => Box::pin(self.list()),
            "Capabilities" => Box::pin(async move {
                let scope = if self.volumes.cluster_wide() {
                    "global"
                } else {
                    "local"
                };
                json!({ "Capabilities": { "Scope": scope } })
            }),
            _ => return None,
        })
    }
}
