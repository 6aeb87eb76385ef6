//! The Docker volume plugin face of the volume helper: `docker volume create -d NAME db`,
//! `docker run -v db:/data --volume-driver NAME` and `--mount type=volume,volume-driver=NAME`
//! use the same volumes as the `/flocker/NAME` binds, and dockerd asks for them itself on every
//! start, including the starts that never pass through luastrip's socket.
//!
//! `Mount`/`Unmount` are counted per container ID: `Remove` refuses a volume that a container
//! has mounted (or that any container's mounts name, so the answer survives a luastrip restart).
//! `docker volume create -d NAME -o standby=HOST [-o every=SECONDS] db` also makes HOST the
//! volume's standby ([`crate::volumes::replicate`]).
//!
//! A volume owned by another gateway is refused at `Mount` with its owner's name, and so is a
//! stale copy (its epoch behind the owner record's: see [`crate::volumes::owner`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{err, reason, Driver, DriverFuture};
use crate::volumes::Volumes;

pub struct VolumeDriver {
    volumes: Arc<Volumes>,
    /// Container IDs that have each volume mounted.
    mounts: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

/// Options `docker volume create -o` may pass: a standby host the volume is sent to, and how
/// often (seconds, default 30): `-o standby=h2 -o every=30` ([`Volumes::replicate`]).
const OPTIONS: &[&str] = &["standby", "every"];

impl VolumeDriver {
    pub fn new(volumes: Arc<Volumes>) -> Self {
        VolumeDriver {
            volumes,
            mounts: Mutex::new(BTreeMap::new()),
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
        if let Err(e) = self.volumes.volume(&name).await {
            return err(reason(e));
        }
        if let Some(host) = opt("standby") {
            let every = std::time::Duration::from_secs(every);
            if let Err(e) = self.volumes.replicate(&name, Some(&host), every).await {
                return err(reason(e));
            }
        }
        json!({ "Err": "" })
    }

    async fn get(&self, body: Value, full: bool) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        match self.volumes.backend().get(&name).await {
            Ok(Some(v)) if full => json!({
                "Volume": {
                    "Name": name.as_str(),
                    "Mountpoint": v.mountpoint,
                    "Status": { "dataset": v.id, "read_only": v.read_only },
                },
                "Err": "",
            }),
            Ok(Some(v)) => json!({ "Mountpoint": v.mountpoint, "Err": "" }),
            Ok(None) => err(format!("no volume {name}")),
            Err(e) => err(reason(e)),
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
        let v = match self.volumes.volume(&name).await {
            Ok(v) => v,
            Err(e) => return err(reason(e)),
        };
        if !v.owned {
            return err(match &v.refused {
                Some(why) => format!("{why}; move it here first"),
                None => format!("volume {name} has no owner here; move it here first"),
            });
        }
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .insert(id);
        json!({ "Mountpoint": v.mountpoint, "Err": "" })
    }

    fn unmount(&self, body: Value) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        let id = body["ID"].as_str().unwrap_or_default();
        let mut mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = mounts.get_mut(name.as_str()) {
            ids.remove(id);
            if ids.is_empty() {
                mounts.remove(name.as_str());
            }
        }
        json!({ "Err": "" })
    }

    async fn remove(&self, body: Value) -> Value {
        let name = match Self::name(&body) {
            Ok(n) => n,
            Err(e) => return err(e),
        };
        let mounted = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name.as_str())
            .map_or(0, |ids| ids.len());
        if mounted > 0 {
            return err(format!(
                "volume {name} is mounted by {mounted} container(s); remove them first"
            ));
        }
        match self.volumes.destroy(&name).await {
            Ok(()) => json!({ "Err": "" }),
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
