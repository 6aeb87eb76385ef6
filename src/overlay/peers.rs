//! VXLAN peers from the cluster: with `--overlay-underlay` and a shared store, each gateway
//! publishes its underlay address in its registration ([`crate::cluster::hosts`]), and this
//! follower makes every other live host a VXLAN peer of the overlay bridge, and drops a host
//! whose registration ended or expired. It lists the hosts, then waits for a change under
//! `hosts/alive/` (an etcd watch from the revision it saw, so no change is missed after a break)
//! and lists again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{link, Overlay};
use crate::cluster::{hosts, Cluster};

/// How long one wait for a change lasts before the hosts are listed again anyway.
const RELIST: Duration = Duration::from_secs(30);

/// Follow the cluster's hosts until `stop`: `me` is this gateway's host name.
pub async fn follow(
    overlay: Arc<Overlay>,
    cluster: Arc<dyn Cluster>,
    me: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        let after = match hosts::underlays(cluster.as_ref(), &me).await {
            Ok((peers, newest)) => {
                if failing {
                    info!(helper = "overlay", "the cluster's hosts can be read again");
                    failing = false;
                }
                if overlay.learn_peers(peers) {
                    let now = overlay.vxlan_peers();
                    info!(helper = "overlay", peers = ?now, "VXLAN peers from the cluster");
                    let bridge = overlay.settings.bridge.clone();
                    if link::exists(&bridge).await {
                        if let Err(e) = overlay.ensure_bridge(&bridge).await {
                            warn!(helper = "overlay", error = %e, "cannot set the VXLAN peers");
                        }
                    }
                }
                Some(newest)
            }
            Err(e) => {
                if !failing {
                    warn!(helper = "overlay", error = %e, "cannot read the cluster's hosts");
                    failing = true;
                }
                None
            }
        };
        let waited = async {
            match after {
                Some(after) => {
                    if cluster
                        .changed(hosts::ALIVE_PREFIX, after, RELIST)
                        .await
                        .is_err()
                    {
                        tokio::time::sleep(Duration::from_secs(2)).await;
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
