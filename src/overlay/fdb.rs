//! VXLAN forwarding that follows an identity's address to its new host. An identity's address
//! keeps its MAC ([`super::mac_of`]) when its container is recreated on another host, so the
//! other hosts' VXLAN devices, which learned where that MAC lives, would go on sending to the old
//! host until the entry ages out (300 s) or the container happens to speak first. This follower
//! reads where each identity's address lives (`overlay/located/`, written when an identity
//! takes its address, [`super::ipam::identity`]) and the hosts' underlay addresses, and points
//! the MAC at the right host at once: on the other hosts, an FDB entry to its underlay (dynamic,
//! so that traffic still corrects it); on its own host, no entry through the VXLAN device, so
//! the bridge finds the local port. It lists, then waits for a change of either (an etcd watch)
//! and lists again.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{ipam, link, mac_of, Overlay};
use crate::cluster::{hosts, Cluster};
use crate::Error;

/// How long one wait for a change lasts before everything is listed again anyway.
const RELIST: Duration = Duration::from_secs(30);

/// Where an address's frames go from this host.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// Its container is on this host.
    Here,
    /// To this underlay address.
    Peer(Ipv4Addr),
}

/// Follow the identities' addresses until `stop`: `me` is this gateway's host name.
pub async fn follow(
    overlay: Arc<Overlay>,
    cluster: Arc<dyn Cluster>,
    me: String,
    mut stop: watch::Receiver<bool>,
) {
    let Some(device) = overlay.settings.vxlan.as_ref().map(super::Vxlan::device) else {
        return;
    };
    let mut applied: HashMap<Ipv4Addr, Via> = HashMap::new();
    let mut failing = false;
    loop {
        let seen = async {
            let (located, newest) = overlay.ipam.located().await?;
            let (underlays, hosts_newest) = hosts::underlays_by_host(cluster.as_ref())
                .await
                .map_err(|e| Error::Helper {
                    helper: "overlay".into(),
                    reason: e.to_string(),
                })?;
            if link::exists(&device).await {
                apply(&device, &me, &located, &underlays, &mut applied).await;
            } else {
                applied.clear();
            }
            Ok::<_, Error>((newest, hosts_newest))
        };
        let after = match seen.await {
            Ok(a) => {
                failing = false;
                Some(a)
            }
            Err(e) => {
                if !failing {
                    warn!(helper = "overlay", error = %e, "cannot read where identities live");
                    failing = true;
                }
                None
            }
        };
        let waited = async {
            match after {
                Some((located, alive)) => {
                    tokio::select! {
                        r = cluster.changed(ipam::identity::LOCATED, located, RELIST) => {
                            if r.is_err() {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                        }
                        _ = cluster.changed(hosts::ALIVE_PREFIX, alive, RELIST) => {}
                    }
                }
                None => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        };
        tokio::select! {
            _ = waited => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Make `device`'s entries say what `located` says; `applied` is what was done before.
async fn apply(
    device: &str,
    me: &str,
    located: &[(Ipv4Addr, String)],
    underlays: &HashMap<String, Ipv4Addr>,
    applied: &mut HashMap<Ipv4Addr, Via>,
) {
    let mut now: HashMap<Ipv4Addr, Via> = HashMap::new();
    for (a, host) in located {
        let via = if host == me {
            Via::Here
        } else if let Some(u) = underlays.get(host) {
            Via::Peer(*u)
        } else {
            // A host without an underlay, or gone: flooding and learning find it.
            continue;
        };
        now.insert(*a, via);
        if applied.get(a) == Some(&via) {
            continue;
        }
        let mac = mac_of(*a);
        match via {
            Via::Here => link::fdb_forget(device, &mac).await,
            Via::Peer(u) => {
                if let Err(e) = link::fdb_point(device, &mac, u).await {
                    warn!(helper = "overlay", address = %a, error = %e, "cannot point the VXLAN at its host");
                    now.remove(a);
                    continue;
                }
            }
        }
        debug!(helper = "overlay", address = %a, via = ?via, "VXLAN entry for an identity's address");
    }
    for (a, via) in applied.iter() {
        if !now.contains_key(a) && matches!(via, Via::Peer(_)) {
            link::fdb_forget(device, &mac_of(*a)).await;
        }
    }
    *applied = now;
}
