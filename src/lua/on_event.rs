//! The scripts' side of the daemon's events: while the loaded scripts have `docker.on_event`
//! handlers, this background task follows `/events` ([`crate::events::follow`]) and hands each
//! event to [`Engine::on_event`], which runs the matching handlers once, in one VM. With no
//! handler (or after a reload that removed the last one) the stream is closed until a reload
//! adds one, so a gateway whose scripts do not ask pays nothing.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use super::engine::Engine;
use crate::events::{FollowFuture, Follower};
use crate::upstream::Upstream;

struct ScriptEvents(Arc<Engine>);

impl Follower for ScriptEvents {
    fn name(&self) -> &'static str {
        "docker.on_event"
    }

    fn event<'a>(&'a self, ev: &'a Value) -> FollowFuture<'a> {
        Box::pin(self.0.on_event(ev))
    }
}

/// Follow the daemon's events for the scripts' handlers until `stop`.
pub async fn follow(engine: Arc<Engine>, upstream: Upstream, mut stop: watch::Receiver<bool>) {
    let mut generations = engine.generations();
    loop {
        while !engine.has_event_handlers() {
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        // Until stopped, or until a reload leaves no handler.
        let (mut reloads, mut stopping) = (engine.generations(), stop.clone());
        let watched = engine.clone();
        let until = async move {
            loop {
                tokio::select! {
                    changed = reloads.changed() => {
                        if changed.is_err() || !watched.has_event_handlers() {
                            return;
                        }
                    }
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        };
        let follower = Arc::new(ScriptEvents(engine.clone()));
        crate::events::follow(upstream.clone(), follower, until).await;
        if *stop.borrow() {
            return;
        }
        generations.mark_unchanged();
    }
}
