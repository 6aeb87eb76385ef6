//! Which gateways are alive, and what each holds: the cluster's list of hosts.
//!
//! Each gateway registers `hosts/alive/NAME` under a lease ([`TTL`], kept alive every third of
//! it) and keeps `hosts/known/NAME` (its peer URL, underlay address, version, when it registered
//! and when it was last seen alive). A lease carries liveness only: what a host holds (volumes,
//! addresses) is in records of their own, never under its lease, so a host cut off from the
//! store loses nothing by its lease expiring, and nobody takes what it holds until an operator
//! forgets it ([`forget`]).
//!
//! A second gateway that registers a name whose lease is alive is refused. A gateway that
//! crashed left its lease behind: one restarting under its name on the same machine sees that
//! the process that registered it is gone (the registration names its boot, PID namespace,
//! PID and start time) and takes the name at once; elsewhere it waits up to [`TTL`] for that
//! lease to expire before it gives up.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{now_s, Cluster, ClusterError, Lease};

/// How long a gateway's registration outlives its last keep-alive.
pub const TTL: Duration = Duration::from_secs(10);

/// How often `hosts/known/NAME` records that the host is still alive (its `seen_at`).
const SEEN_EVERY: Duration = Duration::from_secs(30);

const ALIVE: &str = "hosts/alive/";
const KNOWN: &str = "hosts/known/";

/// What a gateway tells the others about itself.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// `--host-name`.
    pub name: String,
    /// Where the other gateways reach its peer API (`--peer-url`), if it serves one.
    pub peer: Option<String>,
    /// Its underlay address for VXLAN, if it runs the overlay between hosts.
    pub underlay: Option<Ipv4Addr>,
    /// `--overlay-hold-s`, if it runs the overlay: how long it holds an identity's address
    /// after its container is removed.
    pub hold_s: Option<u64>,
    /// luastrip's version.
    pub version: String,
}

impl HostInfo {
    fn record(&self, since: u64) -> Value {
        json!({
            "name": self.name,
            "peer": self.peer,
            "underlay": self.underlay.map(|a| a.to_string()),
            "hold_s": self.hold_s,
            "version": self.version,
            "since": since,
        })
    }
}

/// This process, as a registration names it: enough for a gateway on the same machine to tell
/// that the process is gone. `None` where `/proc` does not say.
fn this_process() -> Option<Value> {
    let pid = std::process::id();
    Some(json!({
        "boot": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim(),
        "pidns": std::fs::read_link("/proc/self/ns/pid").ok()?.display().to_string(),
        "pid": pid,
        "start": start_time(pid)?,
    }))
}

/// When process `pid` started (clock ticks since boot: `/proc/PID/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Whether the registration `held` was made by a process of this machine's boot and PID
/// namespace that no longer runs: a gateway that crashed, whose lease has not expired yet.
fn left_by_a_dead_process(held: &Value) -> bool {
    let (Some(me), Some(them)) = (this_process(), held.get("process")) else {
        return false;
    };
    if me["boot"] != them["boot"] || me["pidns"] != them["pidns"] {
        return false;
    }
    let (Some(pid), Some(start)) = (them["pid"].as_u64(), them["start"].as_u64()) else {
        return false;
    };
    u32::try_from(pid).is_ok_and(|pid| start_time(pid) != Some(start))
}

/// Why a gateway could not register.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A live gateway holds the name.
    #[error(
        "the host name {name} is held by a live gateway (registered {ago} s ago, version \
         {version}): give this gateway another --host-name, or stop that one"
    )]
    Taken {
        name: String,
        ago: u64,
        version: String,
    },
    /// The store did not answer.
    #[error("{0}")]
    Store(#[from] ClusterError),
}

/// A registration this gateway holds.
pub struct Registration {
    cluster: Arc<dyn Cluster>,
    info: HostInfo,
    lease: Lease,
}

/// Register `info.name`: refused while a live gateway holds it (after waiting up to [`TTL`] for
/// a lease a crashed gateway left behind).
pub async fn register(
    cluster: Arc<dyn Cluster>,
    info: HostInfo,
) -> Result<Registration, RegisterError> {
    let deadline = tokio::time::Instant::now() + TTL + Duration::from_secs(2);
    let mut waited = false;
    loop {
        match try_register(&cluster, &info).await {
            Err(RegisterError::Taken { .. }) if tokio::time::Instant::now() < deadline => {
                if !waited {
                    info!(
                        host = %info.name,
                        "the host name is registered already: waiting up to {} s for that \
                         registration to expire (a gateway that stopped without leaving?)",
                        TTL.as_secs()
                    );
                    waited = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

async fn try_register(
    cluster: &Arc<dyn Cluster>,
    info: &HostInfo,
) -> Result<Registration, RegisterError> {
    let lease = cluster.grant(TTL).await?;
    let now = now_s();
    let alive = format!("{ALIVE}{}", info.name);
    let mut value = info.record(now);
    value["process"] = this_process().unwrap_or(Value::Null);
    loop {
        match cluster.create_leased(&alive, value.clone(), lease).await {
            Ok(_) => break,
            Err(ClusterError::Conflict {
                current: Some(r), ..
            }) if left_by_a_dead_process(&r.value) => {
                info!(host = %info.name, "the registration under this name was left by a gateway of this machine that is gone: taking it over");
                match cluster.delete(&alive, r.revision).await {
                    Ok(()) | Err(ClusterError::Conflict { .. }) => continue,
                    Err(e) => {
                        let _ = cluster.revoke(lease).await;
                        return Err(e.into());
                    }
                }
            }
            Err(ClusterError::Conflict { current, .. }) => {
                let _ = cluster.revoke(lease).await;
                let held = current.map(|r| r.value).unwrap_or_default();
                return Err(RegisterError::Taken {
                    name: info.name.clone(),
                    ago: now.saturating_sub(held["since"].as_u64().unwrap_or(now)),
                    version: held["version"].as_str().unwrap_or("?").to_string(),
                });
            }
            Err(e) => {
                let _ = cluster.revoke(lease).await;
                return Err(e.into());
            }
        }
    }
    let registration = Registration {
        cluster: cluster.clone(),
        info: info.clone(),
        lease,
    };
    registration.seen(Some(now)).await?;
    info!(host = %info.name, ttl_s = TTL.as_secs(), "registered in the cluster");
    Ok(registration)
}

impl Registration {
    /// Record in `hosts/known/NAME` that this host is alive now (and registered at `since`,
    /// else when the record says).
    async fn seen(&self, since: Option<u64>) -> Result<(), ClusterError> {
        let key = format!("{KNOWN}{}", self.info.name);
        loop {
            let current = self.cluster.get(&key).await?;
            let registered = since
                .or_else(|| current.as_ref().and_then(|r| r.value["since"].as_u64()))
                .unwrap_or_else(now_s);
            let mut value = self.info.record(registered);
            value["seen_at"] = json!(now_s());
            let written = match current {
                None => self.cluster.create(&key, value).await,
                Some(r) => self.cluster.swap(&key, value, r.revision).await,
            };
            match written {
                Ok(_) => return Ok(()),
                Err(ClusterError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Keep the registration alive until `stop`, then end it (the name is free at once). A
    /// lease that expired while the store was out of reach is taken out again.
    async fn keep_alive_until(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TTL / 3);
        let mut last_seen = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let kept = match self.cluster.keep_alive(self.lease).await {
                Ok(true) => Ok(()),
                Ok(false) => {
                    warn!(host = %self.info.name, "the registration expired (the store was out of reach?): registering again");
                    match try_register(&self.cluster, &self.info).await {
                        Ok(again) => {
                            self.lease = again.lease;
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match kept {
                Ok(()) if failing => {
                    info!(host = %self.info.name, "the registration is kept alive again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    warn!(host = %self.info.name, error = %e, "cannot keep the registration alive");
                    failing = true;
                }
                Err(_) => {}
            }
            if !failing && last_seen.elapsed() >= SEEN_EVERY && self.seen(None).await.is_ok() {
                last_seen = tokio::time::Instant::now();
            }
        }
        let _ = self.seen(None).await;
        if let Err(e) = self.cluster.revoke(self.lease).await {
            warn!(host = %self.info.name, error = %e, "cannot end the registration; it expires by itself");
        }
    }
}

/// Register `info` now, for `serve`: a name a live gateway holds is an error; a store that does
/// not answer is not (the gateway starts, and registers once the store answers, in [`keep`]).
pub async fn join(
    cluster: Arc<dyn Cluster>,
    info: &HostInfo,
) -> Result<Option<Registration>, RegisterError> {
    match register(cluster, info.clone()).await {
        Ok(r) => Ok(Some(r)),
        Err(RegisterError::Store(e)) => {
            warn!(host = %info.name, error = %e, "cannot register in the cluster yet: trying again until the store answers");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Until `stop`: register if [`join`] could not, then keep the registration alive, and end it
/// at `stop`.
pub async fn keep(
    cluster: Arc<dyn Cluster>,
    info: HostInfo,
    joined: Option<Registration>,
    mut stop: watch::Receiver<bool>,
) {
    let registration = match joined {
        Some(r) => r,
        None => loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match try_register(&cluster, &info).await {
                Ok(r) => break r,
                Err(RegisterError::Taken { .. }) => {
                    tracing::error!(host = %info.name, "another live gateway registered this host name meanwhile: this gateway stays unregistered; give it another --host-name")
                }
                Err(RegisterError::Store(_)) => {}
            }
        },
    };
    registration.keep_alive_until(stop).await
}

/// The live hosts' underlay addresses, but `me`'s, and the highest revision among them (for
/// [`Cluster::changed`]).
pub async fn underlays(
    cluster: &dyn Cluster,
    me: &str,
) -> Result<(Vec<Ipv4Addr>, u64), ClusterError> {
    let (by_host, newest) = underlays_by_host(cluster).await?;
    let peers = by_host
        .into_iter()
        .filter(|(name, _)| name != me)
        .map(|(_, a)| a)
        .collect();
    Ok((peers, newest))
}

/// Whether the host `name` is alive (its registration's lease is).
pub async fn is_alive(cluster: &dyn Cluster, name: &str) -> Result<bool, ClusterError> {
    Ok(cluster.get(&format!("{ALIVE}{name}")).await?.is_some())
}

/// The live hosts' underlay addresses by name, and the highest revision among them.
pub async fn underlays_by_host(
    cluster: &dyn Cluster,
) -> Result<(std::collections::HashMap<String, Ipv4Addr>, u64), ClusterError> {
    let alive = cluster.list(ALIVE).await?;
    let newest = alive.iter().map(|(_, r)| r.revision).max().unwrap_or(0);
    let by = alive
        .iter()
        .filter_map(|(k, r)| {
            let a = r.value["underlay"].as_str()?.parse().ok()?;
            Some((k[ALIVE.len()..].to_string(), a))
        })
        .collect();
    Ok((by, newest))
}

/// The `--peer-url` a live host gives, if it is alive and gives one.
pub async fn peer_url(cluster: &dyn Cluster, name: &str) -> Result<Option<String>, ClusterError> {
    Ok(cluster
        .get(&format!("{ALIVE}{name}"))
        .await?
        .and_then(|r| r.value["peer"].as_str().map(str::to_string)))
}

/// The prefix the live hosts are under, for [`Cluster::changed`].
pub const ALIVE_PREFIX: &str = ALIVE;

/// A host as `luastrip cluster hosts` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostStatus {
    pub name: String,
    /// Its lease is alive.
    pub alive: bool,
    /// Alive: since it registered. Gone: since it was last seen alive (to within 30 s).
    pub since: u64,
    pub version: String,
    pub peer: Option<String>,
    pub underlay: Option<String>,
    /// The volumes it owns.
    pub volumes: Vec<String>,
    /// The overlay addresses recorded as its own.
    pub addresses: Vec<String>,
    /// Its `--overlay-hold-s`, if it runs the overlay.
    pub hold_s: Option<u64>,
    /// Its identities' addresses held after their containers were removed:
    /// `10.32.0.5 name:db 42 s`.
    pub held: Vec<String>,
}

/// Every host the store knows, alive or gone, with what each holds.
pub async fn list(cluster: &dyn Cluster) -> Result<Vec<HostStatus>, ClusterError> {
    let alive = cluster.list(ALIVE).await?;
    let known = cluster.list(KNOWN).await?;
    let volumes = cluster.list("volumes/").await?;
    let addresses = cluster.list("overlay/addresses/").await?;
    let mut names: Vec<String> = known
        .iter()
        .map(|(k, _)| k[KNOWN.len()..].to_string())
        .chain(alive.iter().map(|(k, _)| k[ALIVE.len()..].to_string()))
        .collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|name| {
            let live = alive.iter().find(|(k, _)| k[ALIVE.len()..] == name);
            let seen = known.iter().find(|(k, _)| k[KNOWN.len()..] == name);
            let info = live
                .or(seen)
                .map(|(_, r)| r.value.clone())
                .unwrap_or_default();
            let since = match (live, seen) {
                (Some((_, r)), _) => r.value["since"].as_u64(),
                (None, Some((_, r))) => r.value["seen_at"].as_u64(),
                (None, None) => None,
            };
            let hold_s = info["hold_s"].as_u64();
            HostStatus {
                hold_s,
                held: addresses
                    .iter()
                    .filter(|(_, r)| r.value["host"].as_str() == Some(&name))
                    .filter_map(|(k, r)| {
                        let end = r.value["removed_at"].as_u64()? + hold_s.unwrap_or(60);
                        let left = end
                            .checked_sub(crate::cluster::now_s())
                            .filter(|l| *l > 0)?;
                        let a = k.rsplit('/').next()?;
                        Some(format!("{a} {} {left} s", r.value["owner"].as_str()?))
                    })
                    .collect(),
                alive: live.is_some(),
                since: since.unwrap_or_default(),
                version: info["version"].as_str().unwrap_or_default().to_string(),
                peer: info["peer"].as_str().map(str::to_string),
                underlay: info["underlay"].as_str().map(str::to_string),
                volumes: volumes
                    .iter()
                    .filter(|(_, r)| r.value["owner"].as_str() == Some(&name))
                    .map(|(k, _)| k["volumes/".len()..].to_string())
                    .collect(),
                addresses: addresses
                    .iter()
                    .filter(|(_, r)| {
                        r.value["host"].as_str() == Some(&name) && !r.value["holder"].is_null()
                    })
                    .filter_map(|(k, _)| k.rsplit('/').next().map(str::to_string))
                    .collect(),
                name,
            }
        })
        .collect())
}

/// What `forget` did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Forgotten {
    pub name: String,
    /// Addresses given back to the pool.
    pub addresses: Vec<String>,
    /// Volumes now orphaned: no host owns them, and none takes them by itself.
    pub orphaned: Vec<String>,
}

/// Forget a host that is gone: refused while its lease is alive, and until it has been gone for
/// `grace`. Its addresses go back to the pool; its volumes become orphaned (never taken
/// automatically: there may be no copy anywhere else). Each record changes by compare-and-swap,
/// and the host's record is deleted at the revision read first, so of two `forget`s racing,
/// exactly one acts.
pub async fn forget(
    cluster: &dyn Cluster,
    name: &str,
    grace: Duration,
) -> Result<Forgotten, String> {
    let store = |e: ClusterError| e.to_string();
    if let Some(r) = cluster
        .get(&format!("{ALIVE}{name}"))
        .await
        .map_err(store)?
    {
        let version = r.value["version"].as_str().unwrap_or("?").to_string();
        return Err(format!(
            "{name} is alive (its registration holds; version {version}): stop its gateway, or \
             wait until its registration expires ({} s after it stops answering)",
            TTL.as_secs()
        ));
    }
    let key = format!("{KNOWN}{name}");
    let Some(known) = cluster.get(&key).await.map_err(store)? else {
        return Err(format!(
            "no host {name} is known to the cluster (see `luastrip cluster hosts`)"
        ));
    };
    let gone = now_s().saturating_sub(known.value["seen_at"].as_u64().unwrap_or_default());
    if gone < grace.as_secs() {
        return Err(format!(
            "{name} was last seen alive {gone} s ago: forget it once it has been gone for {} s \
             (--grace-s)",
            grace.as_secs()
        ));
    }
    // The one actor: whoever marks the host's record as being forgotten, at the revision read
    // (a forget that stopped half-way is taken up again by the next).
    let mut forgetting = known.value.clone();
    if forgetting["forgetting"].is_null() {
        forgetting["forgetting"] = json!(now_s());
        if let Err(e) = cluster.swap(&key, forgetting, known.revision).await {
            return Err(match e {
                ClusterError::Conflict { .. } => format!(
                    "{name} changed meanwhile (another forget, or it came back): see `luastrip \
                     cluster hosts`"
                ),
                e => e.to_string(),
            });
        }
    }
    let mut out = Forgotten {
        name: name.to_string(),
        addresses: Vec::new(),
        orphaned: Vec::new(),
    };
    for (k, r) in cluster.list("overlay/addresses/").await.map_err(store)? {
        if r.value["host"].as_str() != Some(name) || r.value["holder"].is_null() {
            continue;
        }
        let released = json!({ "host": name, "released_at": now_s(), "forgotten": true });
        if cluster.swap(&k, released, r.revision).await.is_ok() {
            out.addresses
                .push(k.rsplit('/').next().unwrap_or_default().to_string());
        }
    }
    // Its owners' index of addresses (overlay/owners/NAME/…) points at nothing now.
    for (k, r) in cluster
        .list(&format!("overlay/owners/{name}/"))
        .await
        .map_err(store)?
    {
        let _ = cluster.delete(&k, r.revision).await;
    }
    // The blocks it picked addresses in are free for any host to claim.
    for (k, r) in cluster.list("overlay/blocks/").await.map_err(store)? {
        if r.value["host"].as_str() == Some(name) {
            // Changed meanwhile: another host claimed it.
            let _ = cluster.delete(&k, r.revision).await;
        }
    }
    for (k, r) in cluster.list("volumes/").await.map_err(store)? {
        if r.value["owner"].as_str() != Some(name) {
            continue;
        }
        let mut v = r.value.clone();
        v["orphaned"] = json!(true);
        v["orphaned_at"] = json!(now_s());
        if cluster.swap(&k, v, r.revision).await.is_ok() {
            out.orphaned.push(k["volumes/".len()..].to_string());
        }
    }
    // Done: the host is no longer known (it registers afresh if it comes back).
    if let Some(r) = cluster.get(&key).await.map_err(store)? {
        cluster.delete(&key, r.revision).await.map_err(store)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_left_by_a_dead_process_only_if_this_machine_says_so() {
        let me = this_process().expect("/proc says who this process is");
        let held = |process: Value| json!({ "name": "h1", "process": process });
        assert!(
            !left_by_a_dead_process(&held(me.clone())),
            "this process runs"
        );
        // A process of this boot that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut dead = me.clone();
        dead["pid"] = json!(pid);
        assert!(left_by_a_dead_process(&held(dead.clone())));
        // A PID reused by another process: its start time differs.
        let mut reused = me.clone();
        reused["start"] = json!(me["start"].as_u64().unwrap() + 1);
        assert!(left_by_a_dead_process(&held(reused)));
        // Another boot or another PID namespace: this machine cannot tell, so it waits.
        for (field, other) in [("boot", "another-boot"), ("pidns", "pid:[1]")] {
            let mut elsewhere = dead.clone();
            elsewhere[field] = json!(other);
            assert!(!left_by_a_dead_process(&held(elsewhere)), "{field}");
        }
        assert!(
            !left_by_a_dead_process(&json!({ "name": "h1" })),
            "an older gateway's"
        );
    }
}
