//! Swarm services that mount the volume plugin's volumes, in the pre phase. A volume is one
//! container's at a time: it moves to the node of a new task when the old task lets it go. A
//! service updated (or rolled back) `start-first` starts the new task while the old one runs, so
//! the new one would wait for a volume that is not let go, or take it from under a writer: REX-Ray's
//! users lost data to a forced takeover, and MongoDB failed on a double mount. So a service
//! create or update whose tasks mount one of the plugin's volumes and whose update or rollback
//! order is `start-first` is refused, saying to use `stop-first` (swarm's default). Bodies are
//! read as dockerd reads them ([`Call::read_json_body`]), so no spelling of a key slips by.

use http::{Method, Response, StatusCode};
use serde_json::Value;

use crate::body::Body;
use crate::call::{Call, HookFuture, Hooks};
use crate::Error;

/// The largest service body read (a spec is a few KiB).
const BODY_CAP: usize = 4 << 20;

/// Refuses `start-first` services on the volume plugin `plugin`'s volumes.
pub struct SwarmGuard {
    pub plugin: String,
}

impl SwarmGuard {
    /// Why the service `spec` may not run on the plugin's volumes, if it may not.
    fn refusal(&self, spec: &Value) -> Option<String> {
        let mounts = spec["TaskTemplate"]["ContainerSpec"]["Mounts"].as_array()?;
        let volume = mounts.iter().find(|m| {
            m["Type"].as_str() == Some("volume")
                && m["VolumeOptions"]["DriverConfig"]["Name"].as_str() == Some(&self.plugin)
        })?;
        let order = |config: &str| spec[config]["Order"].as_str() == Some("start-first");
        let (which, flag) = if order("UpdateConfig") {
            ("update", "--update-order")
        } else if order("RollbackConfig") {
            ("rollback", "--rollback-order")
        } else {
            return None;
        };
        Some(format!(
            "service {}: its tasks mount the volume {} of the volume plugin {}, and its {which} \
             order is start-first: a new task would start while the old one still has the \
             volume, which goes to one container at a time. Use {flag} stop-first (swarm's \
             default): the volume moves to the new task's node when the old task stops",
            spec["Name"].as_str().unwrap_or("(unnamed)"),
            volume["Source"].as_str().unwrap_or_default(),
            self.plugin
        ))
    }
}

impl Hooks for SwarmGuard {
    fn pre<'a>(&'a self, call: &'a mut Call) -> HookFuture<'a, Option<Response<Body>>> {
        Box::pin(async move {
            if call.head.method != Method::POST {
                return Ok(None);
            }
            let path = call.path.as_str();
            let service = path == "/services/create"
                || path
                    .strip_prefix("/services/")
                    .and_then(|r| r.strip_suffix("/update"))
                    .is_some_and(|id| !id.is_empty() && !id.contains('/'));
            if !service {
                return Ok(None);
            }
            let Some(spec) = call.read_json_body(BODY_CAP).await? else {
                return Ok(None);
            };
            match self.refusal(&spec) {
                Some(why) => Err(Error::client(StatusCode::BAD_REQUEST, why)),
                None => Ok(None),
            }
        })
    }

    fn post<'a>(&'a self, _: &'a mut Call, _: &'a mut Response<Body>) -> HookFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_first_is_refused_only_on_the_plugins_volumes() {
        let guard = SwarmGuard {
            plugin: "lsv".into(),
        };
        let spec = |driver: &str, update: &str, rollback: &str| {
            json!({
                "Name": "db",
                "TaskTemplate": { "ContainerSpec": { "Mounts": [
                    { "Type": "bind", "Source": "/srv", "Target": "/srv" },
                    { "Type": "volume", "Source": "data", "Target": "/data",
                      "VolumeOptions": { "DriverConfig": { "Name": driver } } },
                ] } },
                "UpdateConfig": { "Order": update },
                "RollbackConfig": { "Order": rollback },
            })
        };
        let why = guard
            .refusal(&spec("lsv", "start-first", "stop-first"))
            .unwrap();
        assert!(
            why.contains("service db") && why.contains("--update-order stop-first"),
            "{why}"
        );
        let why = guard
            .refusal(&spec("lsv", "stop-first", "start-first"))
            .unwrap();
        assert!(why.contains("--rollback-order stop-first"), "{why}");
        assert_eq!(
            guard.refusal(&spec("lsv", "stop-first", "stop-first")),
            None
        );
        assert_eq!(
            guard.refusal(&spec("local", "start-first", "start-first")),
            None
        );
        assert_eq!(guard.refusal(&json!({ "Name": "x" })), None);
    }
}
