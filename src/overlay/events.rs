//! The events follower: a background task that follows the daemon's `/events` stream, so that
//! what happens on the daemon directly (a `docker rm` sent to dockerd, a `--rm` container ending,
//! a network removed) reaches the overlay helper. A container's addresses are released when it
//! is destroyed; a removed network is forgotten.
//!
//! A stream can break (the daemon restarts, the gateway was down). So the follower reconciles
//! fully at start-up and after every reconnect: each owner whose container no longer exists has
//! its addresses released, and the stream is reopened with `since=` the last event seen, so no
//! event in between is missed (Weave's #2536: addresses leaked by missed events). An identity's
//! addresses are not released but held ([`super::ipam::identity`]); reconciling holds those of
//! removed containers, frees those whose hold has ended, and forgets the endpoints of stopped
//! ones.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Overlay, OWNER_LABEL};
use crate::events::{FollowFuture, Follower};
use crate::Error;

/// An allocation younger than this may be a create on its way to the daemon: reconciling
/// leaves it alone.
const PENDING: Duration = Duration::from_secs(60);

/// Follow the daemon's events until `stop`, reconciling at start and after each reconnect.
pub async fn follow(overlay: Arc<Overlay>, mut stop: watch::Receiver<bool>) {
    let upstream = overlay.upstream().clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    crate::events::follow(upstream, Arc::new(Releaser(overlay)), stopped).await
}

/// The overlay's side of the events stream.
struct Releaser(Arc<Overlay>);

impl Follower for Releaser {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn filters(&self) -> Option<String> {
        Some(r#"{"type":["container","network"]}"#.into())
    }

    fn opened(&self) -> FollowFuture<'_> {
        Box::pin(async {
            if let Err(e) = reconcile(&self.0).await {
                warn!(helper = "overlay", error = %e, "reconciling with the daemon failed");
            }
        })
    }

    fn event<'a>(&'a self, ev: &'a Value) -> FollowFuture<'a> {
        Box::pin(handle(&self.0, ev))
    }
}

async fn handle(overlay: &Overlay, ev: &Value) {
    let attrs = &ev["Actor"]["Attributes"];
    let id = ev["Actor"]["ID"].as_str().unwrap_or_default();
    match (ev["Type"].as_str(), ev["Action"].as_str()) {
        (Some("container"), Some("destroy")) => {
            // The owner may be its ID, its name (what a script allocated for) or, for a create
            // not yet handed over, its label's token.
            let owners = [
                attrs[OWNER_LABEL].as_str(),
                Some(id),
                attrs["name"].as_str(),
            ];
            // A name spelled like a container ID is not taken for one: a container named after
            // another's ID must not release that one's addresses.
            let name_is_an_id =
                |o: &&str| o.len() == 64 && o.bytes().all(|b| b.is_ascii_hexdigit());
            let owners = [
                owners[0],
                owners[1],
                owners[2].filter(|n| !name_is_an_id(n)),
            ];
            for owner in owners.into_iter().flatten().filter(|o| !o.is_empty()) {
                if super::check_owner(owner).is_err() {
                    continue;
                }
                let done = if super::ipam::is_identity(owner) {
                    overlay.hold(owner, id).await
                } else {
                    overlay
                        .release(owner, "container destroyed")
                        .await
                        .map(drop)
                };
                if let Err(e) = done {
                    warn!(helper = "overlay", owner, error = %e, "cannot release addresses");
                }
            }
        }
        (Some("network"), Some("destroy")) => {
            overlay.forget(id);
            if let Some(name) = attrs["name"].as_str() {
                overlay.forget(name);
            }
        }
        _ => {}
    }
}

/// Release the addresses of every owner whose container is gone.
pub async fn reconcile(overlay: &Overlay) -> Result<usize, Error> {
    let owners = overlay.ipam.owners(PENDING).await?;
    let containers = overlay
        .upstream()
        .get_json("/containers/json?all=1")
        .await?;
    let mut alive: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    for c in containers.as_array().into_iter().flatten() {
        if let Some(id) = c["Id"].as_str() {
            alive.insert(id.to_string());
            if c["State"].as_str() == Some("running") {
                running.insert(id.to_string());
            }
        }
        for name in c["Names"].as_array().into_iter().flatten() {
            if let Some(n) = name.as_str() {
                alive.insert(n.trim_start_matches('/').to_string());
            }
        }
        if let Some(owner) = c["Labels"][OWNER_LABEL].as_str() {
            alive.insert(owner.to_string());
        }
    }
    let settled = overlay.ipam.settle_identities(&alive, &running).await?;
    if settled > 0 {
        info!(
            helper = "overlay",
            settled, "reconciled: identities' addresses held, freed or stopped"
        );
    }
    let mut released = 0;
    for owner in owners.keys().filter(|o| !alive.contains(*o)) {
        released += overlay.release(owner, "no such container").await?.len();
    }
    if released > 0 {
        info!(
            helper = "overlay",
            released, "reconciled: released the addresses of gone containers"
        );
    }
    Ok(released)
}
