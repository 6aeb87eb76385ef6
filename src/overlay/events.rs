//! The events follower: a background task that follows the daemon's `/events` stream, so that
//! what happens on the daemon directly (a `docker rm` sent to dockerd, a `--rm` container ending,
//! a network removed) reaches the overlay helper. A container's addresses are released when it
//! is destroyed; a removed network is forgotten.
//!
//! A stream can break (the daemon restarts, the gateway was down). So the follower reconciles
//! fully at start-up and after every reconnect: each owner whose container no longer exists has
//! its addresses released, and the stream is reopened with `since=` the last event seen, so no
//! event in between is missed (Weave's #2536: addresses leaked by missed events).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Overlay, OWNER_LABEL};
use crate::Error;

/// An allocation younger than this may be a create on its way to the daemon: reconciling
/// leaves it alone.
const PENDING: Duration = Duration::from_secs(60);

/// Follow the daemon's events until `stop`, reconciling at start and after each reconnect.
pub async fn follow(overlay: Arc<Overlay>, mut stop: watch::Receiver<bool>) {
    let mut since: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        // The stream is opened before reconciling: what happens meanwhile is in it.
        let opened_at = now_since();
        let stream = tokio::select! {
            s = open(&overlay, since.as_deref().unwrap_or(&opened_at)) => s,
            _ = stop.wait_for(|s| *s) => return,
        };
        match stream {
            Ok(body) => {
                backoff = Duration::from_millis(200);
                if let Err(e) = reconcile(&overlay).await {
                    warn!(helper = "overlay", error = %e, "reconciling with the daemon failed");
                }
                tokio::select! {
                    last = read(&overlay, body) => {
                        since = last.or(since).or(Some(opened_at));
                        debug!(helper = "overlay", ?since, "the events stream ended; reconnecting");
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Err(e) => {
                debug!(helper = "overlay", error = %e, "cannot follow the daemon's events");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn now_since() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

async fn open(overlay: &Overlay, since: &str) -> Result<hyper::body::Incoming, Error> {
    let filters = r#"{"type":["container","network"]}"#;
    let path = format!(
        "/events?{}",
        crate::route::query::encode([("since", since), ("filters", filters)])
    );
    let req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, "docker")
        .body(crate::body::full(bytes::Bytes::new()))
        .map_err(|e| Error::Internal(format!("cannot build GET /events: {e}")))?;
    let res = overlay.upstream().send(req).await?;
    if !res.status().is_success() {
        return Err(Error::Internal(format!("GET /events: {}", res.status())));
    }
    Ok(res.into_body())
}

/// Handle events until the stream ends; the `since=` to resume from.
async fn read(overlay: &Overlay, mut body: hyper::body::Incoming) -> Option<String> {
    let mut pending: Vec<u8> = Vec::new();
    let mut last = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        // One JSON object per line; a line can arrive in pieces.
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(t) = ev["timeNano"].as_u64() {
                last = Some(format!("{}.{:09}", t / 1_000_000_000, t % 1_000_000_000));
            }
            handle(overlay, &ev).await;
        }
        if pending.len() > 1 << 20 {
            warn!(helper = "overlay", "an event over 1 MiB: dropped");
            pending.clear();
        }
    }
    last
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
                if let Err(e) = overlay.release(owner, "container destroyed").await {
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
    if owners.is_empty() {
        return Ok(0);
    }
    let containers = overlay
        .upstream()
        .get_json("/containers/json?all=1")
        .await?;
    let mut alive: HashSet<String> = HashSet::new();
    for c in containers.as_array().into_iter().flatten() {
        if let Some(id) = c["Id"].as_str() {
            alive.insert(id.to_string());
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
