//! Standby replicas: the owner of a volume sends it to a standby host on a schedule, so that a
//! copy at most one period old survives the owner's host. Flocker never had this: with ZFS, the
//! only copy of a volume was on the node that died.
//!
//! `zfs.replicate(name, host, { every = 30 })` records `"standby": {"host", "every"}` in the
//! owner record ([`super::owner`]) and starts a loop here: every `every` seconds a `repl-*`
//! snapshot, sent incrementally from the newest snapshot both sides have, under the owner's
//! epoch (the standby takes a replica stream only from the owner the record names, at its
//! epoch, for itself as the standby). Older `repl-*` snapshots are pruned on both sides. When the
//! owner's host is lost, an operator forgets it (`luastrip cluster forget`) and adopts the
//! volume on the standby (`zfs.adopt`): at most one period (and one send) is lost, and the old
//! owner, if it comes back, is fenced by the epoch.
//!
//! The loop lives outside the Lua VMs and stops by itself when this host no longer owns the
//! volume, or the record names another standby. A gateway restarted starts the loops of the
//! volumes it owns again ([`super::owner`]'s settling).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::name::{Tag, VolumeName};
use super::owner::{fenced, Handoff, Standby};
use super::{helper, Volumes};
use crate::Error;

/// What one round did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    pub volume: String,
    pub to: String,
    pub snapshot: String,
    pub bytes: u64,
    pub ms: u64,
}

impl Volumes {
    /// Make `to` the standby of `name` (owned here), sent to every `every`; `None` stops the
    /// replication. The first round runs before this returns (its error is this call's).
    pub async fn replicate(
        self: &Arc<Self>,
        name: &VolumeName,
        to: Option<&str>,
        every: Duration,
    ) -> Result<Option<Round>, Error> {
        let v = self.existing(name).await?;
        let (o, rev, _) = self.claim(name).await?;
        if let Some(why) = fenced(&self.host, &v, &o) {
            return Err(helper(format!("cannot replicate: {why}")));
        }
        if to == Some(self.host.as_str()) {
            return Err(helper(format!(
                "volume {name}: {} is this gateway",
                self.host
            )));
        }
        if every < Duration::from_secs(1) {
            return Err(helper("replicate: every must be at least 1 second"));
        }
        let mut next = o.clone();
        next.standby = to.map(|host| Standby {
            host: host.to_string(),
            every: every.as_secs(),
        });
        self.swap_owner(name, &next, rev).await?.map_err(|_| {
            helper(format!(
                "volume {name}: its record changed meanwhile; try again"
            ))
        })?;
        self.stop_replica(name);
        let Some(to) = to else {
            return Ok(None);
        };
        let round = self.replicate_once(name, to).await?;
        self.start_replica(name, to, every);
        Ok(round)
    }

    /// Start the loop of `name` to `to` (the first round after `every`).
    pub(super) fn start_replica(self: &Arc<Self>, name: &VolumeName, to: &str, every: Duration) {
        let (me, name2, to) = (self.clone(), name.clone(), to.to_string());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match me.replicate_once(&name2, &to).await {
                    Ok(Some(_)) => {}
                    // No longer this host's to send: stop.
                    Ok(None) => return,
                    Err(e) => {
                        warn!(volume = %name2, to = %to, error = %e, "replication round failed; the next one tries again")
                    }
                }
            }
        });
        let old = self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), task);
        if let Some(old) = old {
            old.abort();
        }
    }

    fn stop_replica(&self, name: &VolumeName) {
        if let Some(task) = self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name.as_str())
        {
            task.abort();
        }
    }

    /// One round: `None` if this host no longer owns `name` or `to` is no longer its standby
    /// (the loop ends).
    async fn replicate_once(&self, name: &VolumeName, to: &str) -> Result<Option<Round>, Error> {
        let Some(v) = self.backend.get(name).await? else {
            return Ok(None);
        };
        let Some((o, _)) = self.ownership(name).await? else {
            return Ok(None);
        };
        if fenced(&self.host, &v, &o).is_some()
            || o.standby.as_ref().map(|s| s.host.as_str()) != Some(to)
        {
            info!(volume = %name, to, "replication ends: the volume is not this host's, or has another standby");
            return Ok(None);
        }
        if self.is_pushing(name) {
            return Ok(Some(Round {
                volume: name.to_string(),
                to: to.to_string(),
                snapshot: String::new(),
                bytes: 0,
                ms: 0,
            }));
        }
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| helper("no peers: start luastrip with --peer or --peer-url"))?;
        let t = std::time::Instant::now();
        let (_, base_tag) = self.newest_common(peers, to, name).await?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let tag = Tag::parse(&format!("repl-{stamp}")).map_err(helper)?;
        let snap = self.backend.snapshot(name, &tag).await?;
        let by = Handoff {
            from: self.host.clone(),
            epoch: o.epoch,
            standby: true,
        };
        let bytes = self
            .send_to(name, to, &by, base_tag.as_ref(), &snap)
            .await?;
        self.keep_only_base(name, &snap).await?;
        let ms = t.elapsed().as_millis() as u64;
        self.note(
            format!(
                "replicate: {name} → {to}: {:.1} KB in {ms} ms ({})",
                bytes as f64 / 1e3,
                snap.tag
            ),
            json!({ "volume": name.as_str(), "to": to, "step": "replica", "bytes": bytes, "ms": ms }),
        );
        Ok(Some(Round {
            volume: name.to_string(),
            to: to.to_string(),
            snapshot: snap.tag,
            bytes,
            ms,
        }))
    }

    /// The loops of the volumes this host owns with a standby, after a restart.
    pub(super) async fn restart_replicas(self: &Arc<Self>) -> Result<(), Error> {
        for v in self.backend.list().await? {
            if let Some((o, _)) = self.ownership(&v.name).await? {
                if let (None, Some(s)) = (fenced(&self.host, &v, &o), &o.standby) {
                    self.start_replica(&v.name, &s.host, Duration::from_secs(s.every.max(1)));
                }
            }
        }
        Ok(())
    }
}
