//! Who owns a volume, and under which epoch: the record `volumes/NAME` in the cluster store.
//!
//! The record is `{"owner": HOST, "epoch": N}`, and while a push moves the volume it also says
//! where to and how far (`"move": {"to", "step", "guid"}`). It changes only by compare-and-swap,
//! so of two gateways acting on one volume exactly one wins.
//!
//! The **epoch** is the fencing token etcd's documentation asks for: it is 1 when a gateway
//! first claims a name and grows by one at every handoff. The owner's copy carries the epoch it
//! was given (on the volume itself: the ZFS property `luastrip:epoch`), and every receive, claim,
//! rollback and mount checks that the epoch it acts under is still the record's. A handoff
//! replayed from an old epoch, or a copy restored from an old state, is refused.
//!
//! A push records its steps here (`sending`, then `cut-over` with the guid of the last
//! snapshot), so that a gateway killed at any step leaves exactly one owner, and its successor
//! finishes or rolls back the move when it starts ([`Volumes::settle_all`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::name::VolumeName;
use super::{helper, BackendVolume, Volumes};
use crate::cluster::{now_s, ClusterError, Record};
use crate::Error;

/// A volume's record in the cluster store, as read (untrusted: a record that does not parse is
/// an error naming its key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ownership {
    /// The gateway (`--host-name`) whose copy is the volume.
    pub owner: String,
    /// Grows by one at every handoff; 0 in records made before epochs.
    #[serde(default)]
    pub epoch: u64,
    /// The push under way, if any.
    #[serde(default, rename = "move", skip_serializing_if = "Option::is_none")]
    pub moving: Option<Move>,
    /// Its owner was forgotten (`luastrip cluster forget`): nobody takes it by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub orphaned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned_at: Option<u64>,
    /// The forgotten owner a gateway adopted it from ([`Volumes::adopt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<String>,
    /// The host the owner sends it to on a schedule ([`super::replicate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<Standby>,
    /// Given to `owner` by `luastrip cluster adopt` ([`adopt_for`]): its gateway takes its copy
    /// as the volume at this epoch when it next sees the record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopting: bool,
}

/// `luastrip cluster adopt VOLUME [--host HOST]`: give an orphaned volume (its owner forgotten)
/// to `host` (by default its standby), at the next epoch. The record says `adopting`: that
/// host's gateway takes its copy as the volume when it next sees the record (at start, or at
/// the next mount). The new record.
pub async fn adopt_for(
    cluster: &dyn crate::cluster::Cluster,
    name: &VolumeName,
    host: Option<&str>,
) -> Result<Ownership, String> {
    let key = owner_key(name);
    let Some(r) = cluster.get(&key).await.map_err(|e| e.to_string())? else {
        return Err(format!("no volume {name} is known to the cluster"));
    };
    let o = Ownership::parse(&key, &r.value).map_err(|e| e.to_string())?;
    if !o.orphaned {
        return Err(format!(
            "volume {name} is owned by {} (epoch {}), which is not forgotten: forget it first \
             (luastrip cluster forget {})",
            o.owner, o.epoch, o.owner
        ));
    }
    let host = match (host, &o.standby) {
        (Some(h), _) => h.to_string(),
        (None, Some(s)) => s.host.clone(),
        (None, None) => {
            return Err(format!(
                "volume {name} has no standby: name the host whose copy is to be the volume \
                 (--host)"
            ))
        }
    };
    let mut next = Ownership::new(&host, o.epoch + 1);
    next.adopted_from = Some(o.owner.clone());
    next.adopting = true;
    match cluster.swap(&key, next.value(), r.revision).await {
        Ok(_) => Ok(next),
        Err(ClusterError::Conflict { .. }) => Err(format!(
            "volume {name}: its record changed meanwhile (adopted elsewhere?)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// A volume's standby host, and how often the owner sends it the volume (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standby {
    pub host: String,
    pub every: u64,
}

/// A push under way, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    /// The gateway it goes to.
    pub to: String,
    pub step: Step,
    /// The last snapshot (set at the cut-over): the receiver takes the volume only with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// When the push began (Unix seconds).
    #[serde(default)]
    pub since: u64,
}

/// How far a push has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Step 1: copying while the owner's copy is still written. The owner may roll it back.
    Sending,
    /// Step 2: the owner's copy is read-only and its last snapshot is `guid`; the receiver takes
    /// the volume once it has that snapshot, unless the owner rolls the move back first.
    CutOver,
}

/// Who acts on a volume's stream or claim: the owner that sends, under its epoch; `standby`
/// when it sends a replica to its standby rather than moving the volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub from: String,
    pub epoch: u64,
    pub standby: bool,
}

impl Ownership {
    fn new(owner: &str, epoch: u64) -> Self {
        Ownership {
            owner: owner.to_string(),
            epoch,
            moving: None,
            orphaned: false,
            orphaned_at: None,
            adopted_from: None,
            standby: None,
            adopting: false,
        }
    }

    /// Read a record of `key`.
    pub fn parse(key: &str, value: &Value) -> Result<Self, Error> {
        serde_json::from_value(value.clone()).map_err(|e| {
            helper(format!(
                "cluster record {key} is not a volume's owner record: {e}"
            ))
        })
    }

    fn value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The epoch a copy carries (0 for one that never had one: volumes made before epochs).
fn local_epoch(v: &BackendVolume) -> u64 {
    v.epoch.unwrap_or(0)
}

pub(crate) fn owner_key(name: &VolumeName) -> String {
    format!("volumes/{name}")
}

fn store(e: ClusterError) -> Error {
    helper(e.to_string())
}

/// Whether this host's copy `v` is the volume under `record`: the record names this host, with
/// the epoch the copy was given. The reason when it is not.
pub fn fenced(host: &str, v: &BackendVolume, record: &Ownership) -> Option<String> {
    let name = &v.name;
    if record.owner != host {
        return Some(format!(
            "volume {name} is owned by {} (epoch {}){}",
            record.owner,
            record.epoch,
            if record.orphaned {
                ", which was forgotten: adopt it (zfs.adopt) to take this copy as the volume"
            } else {
                ""
            }
        ));
    }
    if local_epoch(v) != record.epoch {
        return Some(format!(
            "volume {name}: this copy is at epoch {}, but the cluster gives the volume to {host} at \
             epoch {}: it is stale (restored from an older state?) and stays read-only",
            local_epoch(v),
            record.epoch
        ));
    }
    None
}

impl Volumes {
    /// The owner record of `name` and its revision, if any.
    pub async fn ownership(&self, name: &VolumeName) -> Result<Option<(Ownership, u64)>, Error> {
        let key = owner_key(name);
        match self.cluster.get(&key).await.map_err(store)? {
            None => Ok(None),
            Some(r) => Ok(Some((Ownership::parse(&key, &r.value)?, r.revision))),
        }
    }

    /// The owner recorded for `name`, if any.
    pub(crate) async fn owner(&self, name: &VolumeName) -> Result<Option<String>, Error> {
        Ok(self.ownership(name).await?.map(|(o, _)| o.owner))
    }

    /// Claim `name` (its copy here exists) for this gateway at epoch 1, unless it has an owner
    /// already; the record as it is now, its revision, and whether this call claimed it.
    pub(crate) async fn claim(&self, name: &VolumeName) -> Result<(Ownership, u64, bool), Error> {
        let key = owner_key(name);
        if let Some((o, rev)) = self.ownership(name).await? {
            return Ok((o, rev, false));
        }
        // The copy carries its epoch before the record names it: a crash between the two
        // leaves a copy at epoch 1 that nobody owns, which the next claim takes.
        self.backend.set_epoch(name, 1).await?;
        let mine = Ownership::new(&self.host, 1);
        match self.cluster.create(&key, mine.value()).await {
            Ok(rev) => Ok((mine, rev, true)),
            Err(ClusterError::Conflict {
                current: Some(r), ..
            }) => Ok((Ownership::parse(&key, &r.value)?, r.revision, false)),
            Err(e) => Err(store(e)),
        }
    }

    /// Replace the record of `name` read at `revision` with `next`: `Err` with the record as it
    /// is now when it moved on.
    pub(super) async fn swap_owner(
        &self,
        name: &VolumeName,
        next: &Ownership,
        revision: u64,
    ) -> Result<Result<u64, Option<Record>>, Error> {
        match self
            .cluster
            .swap(&owner_key(name), next.value(), revision)
            .await
        {
            Ok(r) => Ok(Ok(r)),
            Err(ClusterError::Conflict { current, .. }) => Ok(Err(current)),
            Err(e) => Err(store(e)),
        }
    }

    /// Refuse a change to `name` unless this host's copy is the volume (see [`fenced`]) and no
    /// push is cutting it over.
    pub(crate) async fn must_own(&self, name: &VolumeName, doing: &str) -> Result<(), Error> {
        let v = self.existing(name).await?;
        let Some((o, _)) = self.ownership(name).await? else {
            return Ok(());
        };
        if let Some(why) = fenced(&self.host, &v, &o) {
            return Err(helper(format!("cannot {doing}: {why}")));
        }
        if let Some(m) = o.moving.filter(|m| m.step == Step::CutOver) {
            return Err(helper(format!(
                "cannot {doing} volume {name}: it is being handed over to {}",
                m.to
            )));
        }
        Ok(())
    }

    /// Check a stream or a claim a peer sends for `name` against the record: `from` must own it
    /// at `epoch` and be moving it here (and, for a claim, be cutting it over with `guid`).
    pub(crate) async fn check_handoff(
        &self,
        name: &VolumeName,
        by: &Handoff,
        guid: Option<&str>,
    ) -> Result<(Ownership, u64), Error> {
        let Some((o, rev)) = self.ownership(name).await? else {
            return Err(helper(format!(
                "volume {name}: {} sends it, but the cluster has no record of it",
                by.from
            )));
        };
        let stale = |why: String| {
            Error::client(
                http::StatusCode::CONFLICT,
                format!(
                    "luastrip: refused a handoff of volume {name} from {} at epoch {}: {why}",
                    by.from, by.epoch
                ),
            )
        };
        if o.owner != by.from || o.epoch != by.epoch {
            return Err(stale(format!(
                "the cluster gives it to {} at epoch {} (a stale or replayed handoff)",
                o.owner, o.epoch
            )));
        }
        if by.standby && guid.is_none() {
            return match &o.standby {
                Some(s) if s.host == self.host => Ok((o, rev)),
                _ => Err(stale("this host is not its standby".into())),
            };
        }
        let Some(m) = &o.moving else {
            return Err(stale("no move of it is under way".into()));
        };
        if m.to != self.host {
            return Err(stale(format!("it is being moved to {}, not here", m.to)));
        }
        if let Some(guid) = guid {
            if m.step != Step::CutOver || m.guid.as_deref() != Some(guid) {
                return Err(stale(format!(
                    "the move is at {:?} with snapshot {}, not cut over at {guid}",
                    m.step,
                    m.guid.as_deref().unwrap_or("(none yet)")
                )));
            }
        }
        Ok((o, rev))
    }

    /// Take `name` from `by.from`: the record must say it is being cut over to this host at
    /// `by.epoch` with snapshot `guid`, and this copy must have that snapshot. Idempotent: a
    /// claim sent again after it took effect succeeds.
    pub async fn take_ownership(
        &self,
        name: &VolumeName,
        by: &Handoff,
        guid: &str,
    ) -> Result<(), Error> {
        crate::failpoint::hit("volumes.claim.before");
        let v = self.existing(name).await?;
        let next_epoch = by.epoch + 1;
        if let Some((o, _)) = self.ownership(name).await? {
            if o.owner == self.host && o.epoch == next_epoch && local_epoch(&v) == next_epoch {
                return self.took(name, by, guid).await;
            }
        }
        let (_, rev) = self.check_handoff(name, by, Some(guid)).await?;
        let snaps = self.backend.snapshots(name).await?;
        if !snaps.iter().any(|s| s.guid == guid) {
            return Err(helper(format!(
                "volume {name}: cannot take it over, this copy lacks snapshot {guid}"
            )));
        }
        // The copy carries the new epoch before the record gives it the volume (a crash between
        // the two leaves a copy whose epoch is ahead of a record that does not name this host:
        // still read-only, and the owner's rollback wins).
        self.backend.set_epoch(name, next_epoch).await?;
        let mine = Ownership::new(&self.host, next_epoch);
        if let Err(now) = self.swap_owner(name, &mine, rev).await? {
            let now = now
                .map(|r| Ownership::parse(&owner_key(name), &r.value))
                .transpose()?;
            return Err(helper(format!(
                "volume {name}: the move was rolled back meanwhile (the record is now {})",
                now.map_or("gone".into(), |o| format!(
                    "{}'s at epoch {}",
                    o.owner, o.epoch
                ))
            )));
        }
        crate::failpoint::hit("volumes.claim.after");
        self.took(name, by, guid).await
    }

    /// After the record gave `name` to this host: the copy becomes writable, the handoff's
    /// snapshot is kept as the next push's base.
    async fn took(&self, name: &VolumeName, by: &Handoff, guid: &str) -> Result<(), Error> {
        self.backend.set_read_only(name, false).await?;
        let snaps = self.backend.snapshots(name).await?;
        if let Some(at) = snaps.iter().position(|s| s.guid == guid) {
            self.keep_base_and_prune(name, &snaps[at], &snaps[..at])
                .await;
        }
        self.note(
            format!(
                "push: {name} taken over from {}; {} owns it now (epoch {})",
                by.from,
                self.host,
                by.epoch + 1
            ),
            serde_json::json!({ "volume": name.as_str(), "from": by.from, "step": "claimed", "epoch": by.epoch + 1 }),
        );
        Ok(())
    }

    /// Record a step of a push of `name` to `to` in its record (read as `o` at `rev`): `Sending`
    /// as the push begins, `CutOver` with the last snapshot's `guid`. The record as written,
    /// and its revision.
    pub(crate) async fn record_step(
        &self,
        name: &VolumeName,
        (o, rev): (&Ownership, u64),
        to: &str,
        step: Step,
        guid: Option<&str>,
    ) -> Result<(Ownership, u64), Error> {
        let mut next = o.clone();
        next.moving = Some(Move {
            to: to.to_string(),
            step,
            guid: guid.map(str::to_string),
            since: o.moving.as_ref().map_or_else(now_s, |m| m.since),
        });
        match self.swap_owner(name, &next, rev).await? {
            Ok(rev) => Ok((next, rev)),
            Err(_) => Err(helper(format!(
                "volume {name}: its record changed during the push (another push?)"
            ))),
        }
    }

    /// End a push of `name` to `to` that did not complete, unless the receiver took the volume
    /// meanwhile (its claim's answer lost): `true` if this host still owns it (the move is
    /// rolled back and the copy writable again), `false` if `to` owns it now.
    pub(crate) async fn end_failed_move(&self, name: &VolumeName, to: &str) -> Result<bool, Error> {
        loop {
            let Some((o, rev)) = self.ownership(name).await? else {
                return Err(helper(format!(
                    "volume {name}: its record vanished during the push"
                )));
            };
            if o.owner == to {
                return Ok(false);
            }
            if o.owner != self.host {
                return Err(helper(format!(
                    "volume {name}: {} owns it now, not this host nor {to}",
                    o.owner
                )));
            }
            if o.moving.is_some() {
                let mut back = o.clone();
                back.moving = None;
                if self.swap_owner(name, &back, rev).await?.is_err() {
                    continue;
                }
            }
            let v = self.existing(name).await?;
            if fenced(&self.host, &v, &o).is_none() {
                self.backend.set_read_only(name, false).await?;
            }
            return Ok(true);
        }
    }

    /// Finish or roll back a move of `name` that a gateway before this one left (it was killed
    /// mid-push), and make this copy's read-only flag match the record. Run at start-up for every
    /// volume here, and before a push when the record shows a move no push here is making.
    pub async fn settle(&self, name: &VolumeName) -> Result<(), Error> {
        let Some(v) = self.backend.get(name).await? else {
            return Ok(());
        };
        let Some((o, rev)) = self.ownership(name).await? else {
            return Ok(());
        };
        match &o.moving {
            // This host was sending it: finish a cut-over if the receiver takes it, else roll back.
            Some(m) if o.owner == self.host => {
                let to = m.to.clone();
                let mut taken = false;
                if let (Step::CutOver, Some(guid), Some(peers)) = (m.step, &m.guid, &self.peers) {
                    let by = Handoff {
                        from: self.host.clone(),
                        epoch: o.epoch,
                        standby: false,
                    };
                    match peers.claim(&to, name, &by, guid).await {
                        Ok(()) => taken = true,
                        Err(e) => {
                            warn!(volume = %name, to = %to, error = %e, "an unfinished push: the receiver did not take the volume; rolling it back")
                        }
                    }
                }
                let kept = !taken && self.end_failed_move(name, &to).await?;
                if !kept {
                    self.backend.set_read_only(name, true).await?;
                }
                info!(volume = %name, to = %to, kept, "an unfinished push settled");
                self.note(
                    format!(
                        "push: an unfinished move of {name} to {to} {}",
                        if kept { "was rolled back; it stays here" } else { "was finished; it is there now" }
                    ),
                    serde_json::json!({ "volume": name.as_str(), "to": to, "step": "settled", "kept": kept }),
                );
                Ok(())
            }
            // This host was receiving it, and has the last snapshot: take it.
            Some(m)
                if m.to == self.host
                    && m.step == Step::CutOver
                    && self
                        .backend
                        .snapshots(name)
                        .await?
                        .iter()
                        .any(|s| Some(&s.guid) == m.guid.as_ref()) =>
            {
                let by = Handoff {
                    from: o.owner.clone(),
                    epoch: o.epoch,
                    standby: false,
                };
                let guid = m.guid.clone().unwrap_or_default();
                match self.take_ownership(name, &by, &guid).await {
                    Ok(()) => Ok(()),
                    // The sender rolled it back first: it stays there.
                    Err(e) => {
                        info!(volume = %name, error = %e, "an unfinished push to here was not taken");
                        self.align(name, &v, &o).await
                    }
                }
            }
            // Given to this host by `luastrip cluster adopt`: its copy is the volume now.
            None if o.adopting && o.owner == self.host => {
                let o = self.unorphan(name, &v, o, rev).await?;
                let v = self.existing(name).await?;
                self.align(name, &v, &o).await
            }
            _ => self.align(name, &v, &o).await,
        }
    }

    /// Make this copy writable exactly when it is the volume (see [`fenced`]).
    async fn align(
        &self,
        name: &VolumeName,
        v: &BackendVolume,
        o: &Ownership,
    ) -> Result<(), Error> {
        let read_only = fenced(&self.host, v, o).is_some()
            || o.moving.as_ref().is_some_and(|m| m.step == Step::CutOver);
        if v.read_only != read_only {
            warn!(volume = %name, read_only, owner = %o.owner, epoch = o.epoch, "this copy's read-only flag did not match the cluster's record: set");
            self.backend.set_read_only(name, read_only).await?;
        }
        Ok(())
    }

    /// [`Volumes::settle`] every volume here (pushes this process makes are left alone).
    pub async fn settle_all(&self) -> Result<(), Error> {
        for v in self.backend.list().await? {
            if self.is_pushing(&v.name) {
                continue;
            }
            if let Err(e) = self.settle(&v.name).await {
                warn!(volume = %v.name, error = %e, "cannot settle the volume's record yet");
                return Err(e);
            }
        }
        Ok(())
    }

    /// [`Volumes::settle_all`], then the replication loops restarted, once the store answers (tried again every few seconds until it
    /// does, or until `stop`): the background service a gateway with volumes runs at start.
    pub async fn settle_at_start(
        self: std::sync::Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let settled = match self.settle_all().await {
                // Then the replication loops of the volumes owned here.
                Ok(()) => self.restart_replicas().await,
                Err(e) => Err(e),
            };
            match settled {
                Ok(()) => return,
                Err(_) => tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(3)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                },
            }
        }
    }

    /// Take `name`, orphaned when its owner was forgotten, with this host's copy as the volume
    /// from now on (at the next epoch). Refused while its owner is not forgotten.
    pub async fn adopt(&self, name: &VolumeName) -> Result<Ownership, Error> {
        self.existing(name).await?;
        let Some((o, rev)) = self.ownership(name).await? else {
            return Err(helper(format!(
                "volume {name} has no owner: zfs.volume claims it"
            )));
        };
        if !o.orphaned {
            return Err(helper(format!(
                "volume {name} is owned by {} (epoch {}), which is not forgotten: move it here \
                 (zfs.pull), or forget {} first (luastrip cluster forget)",
                o.owner, o.epoch, o.owner
            )));
        }
        let epoch = o.epoch + 1;
        self.backend.set_epoch(name, epoch).await?;
        let mut mine = Ownership::new(&self.host, epoch);
        mine.adopted_from = Some(o.owner.clone());
        if self.swap_owner(name, &mine, rev).await?.is_err() {
            return Err(helper(format!(
                "volume {name}: its record changed meanwhile (adopted elsewhere?)"
            )));
        }
        self.backend.set_read_only(name, false).await?;
        self.note(
            format!("{name} adopted from the forgotten {}: {} owns it at epoch {epoch}", o.owner, self.host),
            serde_json::json!({ "volume": name.as_str(), "from": o.owner, "epoch": epoch, "step": "adopted" }),
        );
        Ok(mine)
    }

    /// A record orphaned while this host was forgotten, whose copy here is still the volume:
    /// this host's again. A record that `luastrip cluster adopt` gave this host: its copy is the
    /// volume from now on, at the record's epoch.
    pub(crate) async fn unorphan(
        &self,
        name: &VolumeName,
        v: &BackendVolume,
        o: Ownership,
        rev: u64,
    ) -> Result<Ownership, Error> {
        if o.adopting && o.owner == self.host {
            self.backend.set_epoch(name, o.epoch).await?;
            let mut mine = o.clone();
            mine.adopting = false;
            return match self.swap_owner(name, &mine, rev).await? {
                Ok(_) => {
                    info!(volume = %name, epoch = o.epoch, "adopted here (luastrip cluster adopt): this copy is the volume");
                    self.note(
                        format!("{name} adopted from the forgotten {}: {} owns it at epoch {}", o.adopted_from.as_deref().unwrap_or("?"), self.host, o.epoch),
                        serde_json::json!({ "volume": name.as_str(), "epoch": o.epoch, "step": "adopted" }),
                    );
                    Ok(mine)
                }
                Err(now) => match now {
                    Some(r) => Ownership::parse(&owner_key(name), &r.value),
                    None => Ok(o),
                },
            };
        }
        if !o.orphaned || fenced(&self.host, v, &o).is_some() {
            return Ok(o);
        }
        let mut mine = o.clone();
        mine.orphaned = false;
        mine.orphaned_at = None;
        match self.swap_owner(name, &mine, rev).await? {
            Ok(_) => {
                info!(volume = %name, "this host was forgotten and is back: its orphaned volume is its own again");
                Ok(mine)
            }
            Err(now) => match now {
                Some(r) => Ownership::parse(&owner_key(name), &r.value),
                None => Ok(o),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owner_records_are_read_strictly() {
        let o = Ownership::parse("volumes/db", &json!({ "owner": "h1" })).unwrap();
        assert_eq!((o.owner.as_str(), o.epoch, o.moving), ("h1", 0, None));
        let o = Ownership::parse(
            "volumes/db",
            &json!({ "owner": "h1", "epoch": 3, "move": { "to": "h2", "step": "cut-over", "guid": "77" } }),
        )
        .unwrap();
        assert_eq!(o.moving.as_ref().unwrap().step, Step::CutOver);
        assert_eq!(Ownership::parse("k", &o.value()).unwrap(), o);
        for bad in [
            json!("h1"),
            json!({}),
            json!({ "owner": 7 }),
            json!({ "owner": "h1", "epoch": -1 }),
            json!({ "owner": "h1", "epoch": "2" }),
            json!({ "owner": "h1", "move": { "to": "h2", "step": "flying" } }),
            json!({ "owner": "h1", "ownr": "h2" }),
        ] {
            let e = Ownership::parse("volumes/db", &bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("cluster record volumes/db"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_the_copy_at_the_records_epoch_is_the_volume() {
        let v = |epoch| BackendVolume {
            name: VolumeName::parse("db").unwrap(),
            id: "p/db".into(),
            mountpoint: "/p/db".into(),
            created: 0,
            used: 0,
            read_only: false,
            epoch,
        };
        let at = |owner: &str, epoch| Ownership::new(owner, epoch);
        assert_eq!(fenced("h1", &v(Some(3)), &at("h1", 3)), None);
        assert_eq!(
            fenced("h1", &v(None), &at("h1", 0)),
            None,
            "made before epochs"
        );
        let e = fenced("h1", &v(Some(2)), &at("h1", 3)).unwrap();
        assert!(e.contains("at epoch 2") && e.contains("stale"), "{e}");
        let e = fenced("h1", &v(Some(3)), &at("h2", 4)).unwrap();
        assert!(e.contains("owned by h2 (epoch 4)"), "{e}");
    }
}
