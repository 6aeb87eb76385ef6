//! Addresses bound to an identity, not to a container ID, so that a container recreated on
//! another host gets its address back: what Weave's users asked for from 2015 (weave#599), and
//! what failed there with "address is owned by other peer" (weave#2358).
//!
//! An identity is an owner spelled `name:NAME` (the container's name), `compose:PROJECT:SERVICE:N`
//! (compose's labels) or `label:VALUE` (the label [`IDENTITY_LABEL`]); [`identity_of`] reads it
//! from a create. Its address record is the cluster's, not a host's:
//!
//! * **Moved by the next create.** A create of the same identity on any host takes the address
//!   over ([`Ipam::take_over`]): the record names the new host and a new claim, so the container
//!   left behind (`docker-compose stop` keeps it) is refused the address at its next start by
//!   the claim check. A create that then fails gives the address back as it was.
//! * **One container at a time.** The plugin face records the endpoint using the address at
//!   every start and forgets it at every stop; while one is recorded on a live host, a take-over
//!   is refused, naming the host and the container.
//! * **Held after removal.** When the container is removed, the address stays the identity's
//!   for the hold (`--overlay-hold-s`, 60 s): the same identity gets it back on any host, and
//!   another owner asking for it is refused, naming the holder. Then it is free.
//! * **Located.** `overlay/located/POOL/ADDRESS` names the host an identity's address lives on,
//!   so that every host's VXLAN forwarding follows a move at once ([`crate::overlay::fdb`]).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tracing::info;

use super::{helper, key, pool_and_address, pool_key, store, Cidr, Held, Ipam, PREFIX};
use crate::cluster::{hosts, now_s, ClusterError, Record};
use crate::Error;

/// The index of identities' addresses: `overlay/identities/IDENTITY/POOL/ADDRESS`.
pub(super) const IDENTITIES: &str = "overlay/identities/";

/// Which host an identity's address lives on: `overlay/located/POOL/ADDRESS` (`{"host"}`).
pub const LOCATED: &str = "overlay/located/";

/// The endpoint using an identity's address: `overlay/endpoints/ENDPOINT` (`{"key"}`), so that
/// `DeleteEndpoint`, which names only the endpoint, finds the address.
const ENDPOINTS: &str = "overlay/endpoints/";

/// How long an identity's address is held after its container is removed, by default.
pub const HOLD: Duration = Duration::from_secs(60);

/// A label naming a container's identity explicitly (before compose's labels and its name).
pub const IDENTITY_LABEL: &str = "luastrip.overlay.identity";

/// A take-over less than this old whose container is not made yet is a create on its way.
const PENDING_S: u64 = 60;

const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";
const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";

/// Whether `owner` is an identity (not a container ID, a name a script chose, or a token).
pub fn is_identity(owner: &str) -> bool {
    ["name:", "compose:", "label:"]
        .iter()
        .any(|p| owner.starts_with(p))
}

/// The identity of a container being created, from its labels and its name (the create's
/// `?name=`): [`IDENTITY_LABEL`], else compose's project, service and number (not for
/// `docker-compose run`'s one-off containers), else the name. `None` for an unnamed container.
pub fn identity_of(labels: &Value, name: Option<&str>) -> Result<Option<String>, Error> {
    let label = |k: &str| labels[k].as_str().filter(|v| !v.is_empty());
    let oneoff = label(COMPOSE_ONEOFF).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let identity = if let Some(v) = label(IDENTITY_LABEL) {
        format!("label:{v}")
    } else if let (Some(p), Some(s), Some(n), false) = (
        label(COMPOSE_PROJECT),
        label(COMPOSE_SERVICE),
        label(COMPOSE_NUMBER),
        oneoff,
    ) {
        format!("compose:{p}:{s}:{n}")
    } else if let Some(n) = name
        .map(|n| n.trim_start_matches('/'))
        .filter(|n| !n.is_empty())
    {
        format!("name:{n}")
    } else {
        return Ok(None);
    };
    crate::overlay::check_owner(&identity).map_err(|_| {
        helper(format!(
            "{identity:?} cannot be an overlay identity: 1-128 letters, digits, - _ . : \
             (name the container, or set the label {IDENTITY_LABEL})"
        ))
    })?;
    Ok(Some(identity))
}

/// The record saying where an identity's address lives.
pub(super) fn located(pool: &Cidr, a: Ipv4Addr) -> String {
    format!("{LOCATED}{}/{a}", pool_key(pool))
}

/// An identity's address held after its container was removed, as `cluster hosts` and
/// `overlay.held()` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeldFor {
    pub identity: String,
    pub address: Ipv4Addr,
    pub pool: String,
    pub host: String,
    /// Seconds until it is free.
    pub left_s: u64,
}

/// What the record of an identity's address was before a take-over: what a failed create
/// gives back.
fn before(v: &Value) -> Value {
    let mut p = json!({});
    for f in ["host", "claim", "container", "removed_at", "at"] {
        if !v[f].is_null() {
            p[f] = v[f].clone();
        }
    }
    p
}

impl Ipam {
    /// When the hold on an identity's address ends, if its container was removed.
    fn hold_ends(&self, v: &Value) -> Option<u64> {
        v["removed_at"]
            .as_u64()
            .map(|t| t.saturating_add(self.hold.as_secs()))
    }

    /// Whether `v` is an identity's address whose hold has ended: free.
    pub(super) fn hold_ended(&self, v: &Value) -> bool {
        self.hold_ends(v).is_some_and(|end| end <= now_s())
    }

    /// Who holds a held address, for a refusal.
    pub(super) fn held_for(&self, v: &Value) -> String {
        let left = self
            .hold_ends(v)
            .unwrap_or_default()
            .saturating_sub(now_s());
        format!(
            "held for {}, whose container was removed on host {}; free in {left} s, or \
             recreate that identity to have it again",
            v["owner"].as_str().unwrap_or_default(),
            v["host"].as_str().unwrap_or_default()
        )
    }

    /// Record that an identity's address `a` lives on this host.
    pub(super) async fn locate(&self, pool: &Cidr, a: Ipv4Addr) -> Result<(), Error> {
        let k = located(pool, a);
        let v = json!({ "host": self.host });
        loop {
            let r = match self.cluster.get(&k).await.map_err(store)? {
                None => self.cluster.create(&k, v.clone()).await,
                Some(r) if r.value == v => return Ok(()),
                Some(r) => self.cluster.swap(&k, v.clone(), r.revision).await,
            };
            match r {
                Ok(_) => return Ok(()),
                Err(ClusterError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
    }

    /// Change the record `k` with `f` (`None`: leave it), by compare-and-swap, reading again
    /// after a conflict. Whether it changed.
    async fn update(&self, k: &str, f: impl Fn(&Value) -> Option<Value>) -> Result<bool, Error> {
        loop {
            let Some(r) = self.cluster.get(k).await.map_err(store)? else {
                return Ok(false);
            };
            let Some(v) = f(&r.value) else {
                return Ok(false);
            };
            match self.cluster.swap(k, v, r.revision).await {
                Ok(_) => return Ok(true),
                Err(ClusterError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
    }

    /// Move `identity`'s address `a` to this host, for a container about to be created: the
    /// record names this host and a new claim (the one the create carries), and keeps what it
    /// was, for [`Ipam::release_owner`] to give back if the create fails. Refused while a
    /// container uses the address on a live host, or another live host is creating one.
    /// `Ok(None)`: the identity does not hold `a` (any more).
    pub async fn take_over(
        &self,
        identity: &str,
        pool: &Cidr,
        a: Ipv4Addr,
    ) -> Result<Option<String>, Error> {
        let k = key(pool, a);
        loop {
            let Some(r) = self.cluster.get(&k).await.map_err(store)? else {
                return Ok(None);
            };
            let v = &r.value;
            if v["holder"].as_str() != Some("owner") || v["owner"].as_str() != Some(identity) {
                return Ok(None);
            }
            let host = v["host"].as_str().unwrap_or_default().to_string();
            let here = host == self.host;
            let alive = here
                || hosts::is_alive(self.cluster.as_ref(), &host)
                    .await
                    .map_err(store)?;
            let container = v["container"].as_str().map(super::short).unwrap_or("-");
            if v["endpoint"].is_string() && alive {
                return Err(helper(format!(
                    "{a} is the overlay address of {identity}, in use by container {container} \
                     on host {host}: stop or remove that container first (an identity's \
                     address goes to one container at a time)"
                )));
            }
            let pending = v["container"].is_null()
                && v["removed_at"].is_null()
                && v["at"].as_u64().unwrap_or_default() + PENDING_S > now_s();
            if pending && !here && alive {
                return Err(helper(format!(
                    "{a} is the overlay address of {identity}, whose container is being \
                     created on host {host}: refused"
                )));
            }
            // A create tried again here (after a pull) keeps what was there before the first.
            let previous = if here && pending && v["previous"].is_object() {
                v["previous"].clone()
            } else {
                before(v)
            };
            let claim = crate::overlay::random_hex(16)?;
            let new = json!({
                "host": self.host,
                "holder": "owner",
                "owner": identity,
                "at": now_s(),
                "claim": claim,
                "previous": previous,
            });
            match self.cluster.swap(&k, new, r.revision).await {
                Ok(_) => {
                    self.locate(pool, a).await?;
                    if !here {
                        info!(helper = "overlay", identity, address = %a, from = %host,
                            "an identity's address moved to this host");
                    }
                    return Ok(Some(claim));
                }
                Err(ClusterError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
    }

    /// Give back an identity's address that a create failed to use: as it was before this
    /// host took it over. `false` if it was not taken over (a new allocation: freed instead).
    pub(super) async fn restore(&self, k: &str, r: &Record) -> Result<bool, Error> {
        let Some(previous) = r.value["previous"].as_object() else {
            return Ok(false);
        };
        if !r.value["container"].is_null() {
            return Ok(false);
        }
        let mut v = Value::Object(previous.clone());
        v["holder"] = json!("owner");
        v["owner"] = r.value["owner"].clone();
        match self.cluster.swap(k, v.clone(), r.revision).await {
            Ok(_) => {}
            Err(ClusterError::Conflict { .. }) => return Ok(true),
            Err(e) => return Err(store(e)),
        }
        if let Some((pool, a)) = k.strip_prefix(PREFIX).and_then(pool_and_address) {
            let loc = located(&pool, a);
            if let Some(host) = v["host"].as_str() {
                let r = self.cluster.get(&loc).await.map_err(store)?;
                if let Some(r) = r {
                    let _ = self
                        .cluster
                        .swap(&loc, json!({ "host": host }), r.revision)
                        .await;
                }
            }
        }
        Ok(true)
    }

    /// The container `container` now has what `identity` holds on this host.
    pub async fn bind(&self, identity: &str, container: &str) -> Result<usize, Error> {
        let mut bound = 0;
        for (k, r, _) in self.owned(identity).await? {
            if r.value["host"].as_str() != Some(self.host.as_str()) {
                continue;
            }
            let changed = self
                .update(&k, |v| {
                    (v["owner"].as_str() == Some(identity)).then(|| {
                        let mut v = v.clone();
                        v["container"] = json!(container);
                        if let Some(o) = v.as_object_mut() {
                            o.remove("previous");
                        }
                        v
                    })
                })
                .await?;
            bound += usize::from(changed);
        }
        Ok(bound)
    }

    /// `container`, which had `identity`'s addresses on this host, was removed: they stay the
    /// identity's for the hold. What is held.
    pub async fn hold_after_removal(
        &self,
        identity: &str,
        container: &str,
    ) -> Result<Vec<Held>, Error> {
        let mut held = Vec::new();
        for (k, r, h) in self.owned(identity).await? {
            let ours = r.value["host"].as_str() == Some(self.host.as_str())
                && r.value["container"].as_str() == Some(container);
            if ours && self.mark_removed(&k, Some(container)).await? {
                held.push(h);
            }
        }
        Ok(held)
    }

    /// Start the hold of the address at `k` (if still `container`'s, when given).
    async fn mark_removed(&self, k: &str, container: Option<&str>) -> Result<bool, Error> {
        let host = self.host.clone();
        self.update(k, |v| {
            let same = v["host"].as_str() == Some(host.as_str())
                && container.is_none_or(|c| v["container"].as_str() == Some(c))
                && v["removed_at"].is_null();
            same.then(|| {
                let mut v = v.clone();
                v["removed_at"] = json!(now_s());
                if let Some(o) = v.as_object_mut() {
                    o.remove("endpoint");
                }
                v
            })
        })
        .await
    }

    /// dockerd started an endpoint with an identity's address (its claim checked): record it,
    /// so that no other host takes the address while it runs.
    pub(super) async fn endpoint_started(&self, k: &str, endpoint: &str) -> Result<(), Error> {
        let e = format!("{ENDPOINTS}{endpoint}");
        let entry = json!({ "key": k });
        match self.cluster.create(&e, entry.clone()).await {
            Ok(_) => {}
            Err(ClusterError::Conflict {
                current: Some(r), ..
            }) => {
                let _ = self.cluster.swap(&e, entry, r.revision).await;
            }
            Err(e) => return Err(store(e)),
        }
        self.update(k, |v| {
            (v["endpoint"].as_str() != Some(endpoint)).then(|| {
                let mut v = v.clone();
                v["endpoint"] = json!(endpoint);
                v
            })
        })
        .await?;
        Ok(())
    }

    /// dockerd deleted `endpoint` (its container stopped or left the network): the identity's
    /// address it used is free to move.
    pub async fn endpoint_gone(&self, endpoint: &str) -> Result<(), Error> {
        let e = format!("{ENDPOINTS}{endpoint}");
        let Some(r) = self.cluster.get(&e).await.map_err(store)? else {
            return Ok(());
        };
        if let Some(k) = r.value["key"].as_str().filter(|k| k.starts_with(PREFIX)) {
            self.update(k, |v| {
                (v["endpoint"].as_str() == Some(endpoint)).then(|| {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("endpoint");
                    }
                    v
                })
            })
            .await?;
        }
        match self.cluster.delete(&e, r.revision).await {
            Ok(()) | Err(ClusterError::Conflict { .. }) => Ok(()),
            Err(e) => Err(store(e)),
        }
    }

    /// Every identity's address record (each once), with its key.
    async fn identity_records(&self) -> Result<Vec<(String, Record)>, Error> {
        let mut keys: Vec<String> = Vec::new();
        for (entry, _) in self.cluster.list(IDENTITIES).await.map_err(store)? {
            let tail = &entry[IDENTITIES.len()..];
            let Some((_, rest)) = tail.split_once('/') else {
                continue;
            };
            if let Some((pool, a)) = pool_and_address(rest) {
                keys.push(key(&pool, a));
            }
        }
        keys.sort();
        keys.dedup();
        let mut out = Vec::new();
        for k in keys {
            if let Some(r) = self.cluster.get(&k).await.map_err(store)? {
                let identity = r.value["owner"].as_str().is_some_and(super::is_identity);
                if identity && r.value["holder"].as_str() == Some("owner") {
                    out.push((k, r));
                }
            }
        }
        Ok(out)
    }

    /// Bring this host's identities' records in line with the daemon (at start, and after the
    /// events stream broke): `alive` holds the IDs, names and owner labels of its containers,
    /// `running` the IDs of those running. A removed container's addresses are held; a hold
    /// that has ended frees its address; an endpoint of a container not running is forgotten.
    pub async fn settle_identities(
        &self,
        alive: &HashSet<String>,
        running: &HashSet<String>,
    ) -> Result<usize, Error> {
        let mut changed = 0;
        for (k, r) in self.identity_records().await? {
            let v = &r.value;
            if v["host"].as_str() != Some(self.host.as_str()) {
                continue;
            }
            if self.hold_ended(v) {
                self.free(&k, r).await?;
                changed += 1;
                continue;
            }
            let container = v["container"].as_str();
            let identity = v["owner"].as_str().unwrap_or_default();
            let old = v["at"].as_u64().unwrap_or_default() + PENDING_S <= now_s();
            let gone = match container {
                Some(c) => !alive.contains(c),
                None => old && !alive.contains(identity),
            };
            if v["removed_at"].is_null() && gone {
                changed += usize::from(self.mark_removed(&k, container).await?);
            } else if v["endpoint"].is_string() && container.is_none_or(|c| !running.contains(c)) {
                let ep = v["endpoint"].as_str().unwrap_or_default().to_string();
                self.endpoint_gone(&ep).await?;
                // An endpoint whose entry was lost: forgotten all the same.
                self.update(&k, |v| {
                    v["endpoint"].is_string().then(|| {
                        let mut v = v.clone();
                        if let Some(o) = v.as_object_mut() {
                            o.remove("endpoint");
                        }
                        v
                    })
                })
                .await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The identities' addresses held now after their containers were removed.
    pub async fn held(&self) -> Result<Vec<HeldFor>, Error> {
        let now = now_s();
        let mut out = Vec::new();
        for (k, r) in self.identity_records().await? {
            let Some(end) = self.hold_ends(&r.value).filter(|e| *e > now) else {
                continue;
            };
            let Some((pool, address)) = k.strip_prefix(PREFIX).and_then(pool_and_address) else {
                continue;
            };
            out.push(HeldFor {
                identity: r.value["owner"].as_str().unwrap_or_default().to_string(),
                address,
                pool: pool.to_string(),
                host: r.value["host"].as_str().unwrap_or_default().to_string(),
                left_s: end - now,
            });
        }
        Ok(out)
    }

    /// Where each identity's address lives (address, host), and the newest revision among
    /// them (for [`crate::cluster::Cluster::changed`]).
    pub async fn located(&self) -> Result<(Vec<(Ipv4Addr, String)>, u64), Error> {
        let all = self.cluster.list(LOCATED).await.map_err(store)?;
        let newest = all.iter().map(|(_, r)| r.revision).max().unwrap_or(0);
        let out = all
            .iter()
            .filter_map(|(k, r)| {
                let (_, a) = pool_and_address(&k[LOCATED.len()..])?;
                Some((a, r.value["host"].as_str()?.to_string()))
            })
            .collect();
        Ok((out, newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::local::LocalCluster;
    use crate::cluster::Cluster;
    use crate::overlay::ipam::Holder;
    use std::sync::Arc;

    #[test]
    fn an_identity_is_a_label_else_compose_labels_else_the_name() {
        let id = |labels: Value, name: Option<&str>| identity_of(&labels, name).unwrap();
        let compose = json!({
            COMPOSE_PROJECT: "app", COMPOSE_SERVICE: "db", COMPOSE_NUMBER: "1"
        });
        assert_eq!(
            id(compose.clone(), Some("app_db_1")).as_deref(),
            Some("compose:app:db:1")
        );
        let mut labelled = compose.clone();
        labelled[IDENTITY_LABEL] = json!("primary-db");
        assert_eq!(id(labelled, None).as_deref(), Some("label:primary-db"));
        // `docker-compose run` makes one-off containers with the service's labels.
        let mut oneoff = compose;
        oneoff[COMPOSE_ONEOFF] = json!("True");
        assert_eq!(
            id(oneoff, Some("app_db_run_3f2a")).as_deref(),
            Some("name:app_db_run_3f2a")
        );
        assert_eq!(id(json!(null), Some("/db")).as_deref(), Some("name:db"));
        assert_eq!(id(json!({}), None), None);
        assert_eq!(id(json!({}), Some("")), None);
        let e = identity_of(&json!({ IDENTITY_LABEL: "a b" }), None).unwrap_err();
        assert!(
            e.to_string().contains("cannot be an overlay identity"),
            "{e}"
        );
        assert!(is_identity("name:db") && is_identity("compose:a:b:1"));
        assert!(!is_identity("ow-0123") && !is_identity("db") && !is_identity(&"a".repeat(64)));
    }

    /// An identity's address moves with it between hosts, never from under a running
    /// container; a failed create gives it back; removed, it is held for the identity only.
    #[tokio::test]
    async fn an_identitys_address_follows_it_and_is_held_after_removal() {
        let cluster: Arc<dyn Cluster> = Arc::new(LocalCluster::memory());
        let host = |h: &str| Ipam::new(cluster.clone(), h.into(), Duration::ZERO).with_hold(HOLD);
        let (h1, h2) = (host("h1"), host("h2"));
        cluster
            .create("hosts/alive/h1", json!({ "name": "h1" }))
            .await
            .unwrap();
        let pool = Cidr::parse("10.9.0.0/24").unwrap();
        let db = "name:db";
        let a = h1.allocate(&pool, None, Holder::Owner(db)).await.unwrap();
        let claim1 = h1.owned_claim(&pool, a, db).await.unwrap().unwrap();
        assert_eq!(h1.bind(db, "c1").await.unwrap(), 1);
        h1.endpoint_may_take(&pool, a, Some(&claim1), Some("ep1"))
            .await
            .unwrap();
        assert_eq!(h1.located().await.unwrap().0, vec![(a, "h1".to_string())]);

        // Running on h1: h2 may not take it.
        let e = h2.take_over(db, &pool, a).await.unwrap_err().to_string();
        assert!(e.contains("in use by container c1 on host h1"), "{e}");
        // Stopped (dockerd deletes the endpoint): it moves, with a new claim.
        h1.endpoint_gone("ep1").await.unwrap();
        let claim2 = h2.take_over(db, &pool, a).await.unwrap().unwrap();
        assert_ne!(claim2, claim1);
        assert_eq!(h1.located().await.unwrap().0, vec![(a, "h2".to_string())]);
        // The container left on h1 is refused it at its next start.
        let e = h1
            .endpoint_may_take(&pool, a, Some(&claim1), Some("ep2"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("has moved to host h2"), "{e}");
        // A stranger asking for it by value (no claim) is refused as one, not told it moved.
        let e = h1
            .endpoint_may_take(&pool, a, None, Some("ep3"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "overlay address of {db}, and this endpoint was not given it"
            )),
            "{e}"
        );
        // The create on h2 failed: the address goes back as it was.
        assert_eq!(h2.release_owner(db).await.unwrap().len(), 1);
        assert_eq!(h1.located().await.unwrap().0, vec![(a, "h1".to_string())]);
        h1.endpoint_may_take(&pool, a, Some(&claim1), None)
            .await
            .unwrap();
        // Moved for good: created on h2, then removed there.
        let claim3 = h2.take_over(db, &pool, a).await.unwrap().unwrap();
        h2.bind(db, "c2").await.unwrap();
        let r = cluster.get(&key(&pool, a)).await.unwrap().unwrap();
        assert!(r.value["previous"].is_null(), "{r:?}");
        h2.endpoint_may_take(&pool, a, Some(&claim3), Some("ep3"))
            .await
            .unwrap();
        h2.endpoint_gone("ep3").await.unwrap();
        // A destroy of the old container on h1 changes nothing: it is not the holder.
        assert!(h1.hold_after_removal(db, "c1").await.unwrap().is_empty());
        assert_eq!(h2.hold_after_removal(db, "c2").await.unwrap().len(), 1);
        let held = h1.held().await.unwrap();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(
            (held[0].identity.as_str(), held[0].host.as_str()),
            (db, "h2")
        );
        assert!(held[0].left_s > 55 && held[0].left_s <= 60, "{held:?}");
        // Held: refused to another identity by value, and not picked for anyone.
        let e = h1
            .allocate(&pool, Some(a), Holder::Owner("name:web"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("held for name:db, whose container was removed on host h2"),
            "{e}"
        );
        let picked = h1
            .allocate(&pool, None, Holder::Owner("name:web"))
            .await
            .unwrap();
        assert_ne!(picked, a);
        // The identity, created again on h1, has it back.
        assert!(h1.take_over(db, &pool, a).await.unwrap().is_some());
        assert!(h1.held().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_hold_ends_and_the_address_is_free() {
        let cluster: Arc<dyn Cluster> = Arc::new(LocalCluster::memory());
        let ipam =
            Ipam::new(cluster.clone(), "h1".into(), Duration::ZERO).with_hold(Duration::ZERO);
        let pool = Cidr::parse("10.9.0.0/30").unwrap();
        let a = ipam
            .allocate(&pool, None, Holder::Owner("name:db"))
            .await
            .unwrap();
        ipam.bind("name:db", "c1").await.unwrap();
        ipam.hold_after_removal("name:db", "c1").await.unwrap();
        // Its hold has ended: the lowest free address again.
        assert_eq!(
            ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap(),
            a
        );
        // Its identity's take-over finds it gone.
        assert_eq!(ipam.take_over("name:db", &pool, a).await.unwrap(), None);
    }

    /// Reconciling: a container removed while the gateway was away has its address held; an
    /// endpoint of a container that is not running is forgotten; an ended hold is freed.
    #[tokio::test]
    async fn reconciling_holds_frees_and_forgets_endpoints() {
        let cluster: Arc<dyn Cluster> = Arc::new(LocalCluster::memory());
        let ipam = Ipam::new(cluster.clone(), "h1".into(), Duration::ZERO);
        let pool = Cidr::parse("10.9.0.0/24").unwrap();
        let mut claims = Vec::new();
        for (n, id) in [("name:a", "ca"), ("name:b", "cb")] {
            let a = ipam.allocate(&pool, None, Holder::Owner(n)).await.unwrap();
            ipam.bind(n, id).await.unwrap();
            let c = ipam.owned_claim(&pool, a, n).await.unwrap().unwrap();
            ipam.endpoint_may_take(&pool, a, Some(&c), Some(&format!("ep{id}")))
                .await
                .unwrap();
            claims.push(a);
        }
        // ca is gone; cb exists but is stopped.
        let alive: HashSet<String> = ["cb".to_string()].into();
        assert_eq!(
            ipam.settle_identities(&alive, &HashSet::new())
                .await
                .unwrap(),
            2
        );
        let rec = |a: Ipv4Addr| {
            let cluster = cluster.clone();
            async move { cluster.get(&key(&pool, a)).await.unwrap().unwrap().value }
        };
        let (ra, rb) = (rec(claims[0]).await, rec(claims[1]).await);
        assert!(
            ra["removed_at"].is_u64() && ra["endpoint"].is_null(),
            "{ra}"
        );
        assert!(
            rb["removed_at"].is_null() && rb["endpoint"].is_null(),
            "{rb}"
        );
        // A hold that has ended is freed.
        let ended =
            Ipam::new(cluster.clone(), "h1".into(), Duration::ZERO).with_hold(Duration::ZERO);
        assert_eq!(
            ended
                .settle_identities(&alive, &HashSet::new())
                .await
                .unwrap(),
            1
        );
        assert!(rec(claims[0]).await["holder"].is_null());
        assert_eq!(ended.located().await.unwrap().0.len(), 1);
    }
}
