//! The libnetwork remote network driver face of the overlay helper: with
//! `docker network create -d NAME --subnet 10.50.0.0/24 n` and `docker run --network n`, dockerd
//! calls `Join` before every start of the container — including restart-policy restarts and
//! starts that never pass through luastrip — so the interface exists, addressed, before the
//! process does. `Join` hands dockerd a veth end (`SrcName`) with `DstPrefix: "ethwe"`, so it
//! shows in the container as `ethwe0` (dockerd appends the index), and disables the gateway
//! service (no `eth0` on a shared `docker_gwbridge`).
//!
//! One bridge (`--overlay-bridge`) holds every endpoint's host end; it is made when the first
//! network is created and removed with the last one.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{Driver, DriverFuture};
use crate::overlay::link;

pub struct NetworkDriver {
    bridge: String,
    /// The networks created with this driver (their IDs).
    networks: Mutex<BTreeSet<String>>,
}

/// The host end and the container end of an endpoint's veth pair: short, checked names from the
/// endpoint ID (a hex string from dockerd).
fn veth_names(endpoint: &str) -> Option<(String, String)> {
    let short: String = endpoint.chars().take(10).collect();
    if short.len() < 10 || !short.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((format!("lsv{short}"), format!("lsc{short}")))
}

fn err(e: impl std::fmt::Display) -> Value {
    json!({ "Err": e.to_string() })
}

fn reason(e: crate::Error) -> String {
    match e {
        crate::Error::Helper { reason, .. } => reason,
        other => other.to_string(),
    }
}

impl NetworkDriver {
    pub fn new(bridge: String) -> Self {
        NetworkDriver {
            bridge,
            networks: Mutex::new(BTreeSet::new()),
        }
    }

    async fn create_network(&self, body: Value) -> Value {
        let Some(id) = body["NetworkID"].as_str() else {
            return err("CreateNetwork names no NetworkID");
        };
        if let Err(e) = link::ensure_bridge(&self.bridge).await {
            return err(reason(e));
        }
        self.networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
        json!({})
    }

    async fn delete_network(&self, body: Value) -> Value {
        let id = body["NetworkID"].as_str().unwrap_or_default();
        let last = {
            let mut nets = self.networks.lock().unwrap_or_else(|e| e.into_inner());
            nets.remove(id);
            nets.is_empty()
        };
        if last {
            if let Err(e) = link::delete(&self.bridge).await {
                return err(reason(e));
            }
        }
        json!({})
    }

    async fn join(&self, body: Value) -> Value {
        let endpoint = body["EndpointID"].as_str().unwrap_or_default();
        let Some((host, peer)) = veth_names(endpoint) else {
            return err(format!("Join: bad EndpointID {endpoint:?}"));
        };
        // A restart of the gateway forgets networks; the bridge must exist for any join.
        if let Err(e) = link::ensure_bridge(&self.bridge).await {
            return err(reason(e));
        }
        match link::add_veth(&host, &peer, &self.bridge).await {
            Ok(()) => json!({
                "InterfaceName": { "SrcName": peer, "DstPrefix": "ethwe" },
                "DisableGatewayService": true,
            }),
            Err(e) => err(reason(e)),
        }
    }

    async fn leave(&self, body: Value) -> Value {
        let endpoint = body["EndpointID"].as_str().unwrap_or_default();
        let Some((host, _)) = veth_names(endpoint) else {
            return err(format!("Leave: bad EndpointID {endpoint:?}"));
        };
        match link::delete(&host).await {
            Ok(()) => json!({}),
            Err(e) => err(reason(e)),
        }
    }
}

impl Driver for NetworkDriver {
    fn implements(&self) -> &'static str {
        "NetworkDriver"
    }

    fn call<'a>(&'a self, method: &'a str, body: Value) -> Option<DriverFuture<'a>> {
        Some(match method {
            "GetCapabilities" => {
                Box::pin(async { json!({ "Scope": "local", "ConnectivityScope": "local" }) })
            }
            "CreateNetwork" => Box::pin(self.create_network(body)),
            "DeleteNetwork" => Box::pin(self.delete_network(body)),
            // The address comes from the network's IPAM; nothing to add to the interface.
            "CreateEndpoint" => Box::pin(async { json!({ "Interface": {} }) }),
            "DeleteEndpoint" => Box::pin(async { json!({}) }),
            "EndpointOperInfo" => Box::pin(async { json!({ "Value": {} }) }),
            "Join" => Box::pin(self.join(body)),
            "Leave" => Box::pin(self.leave(body)),
            "DiscoverNew"
            | "DiscoverDelete"
            | "ProgramExternalConnectivity"
            | "RevokeExternalConnectivity" => Box::pin(async { json!({}) }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::veth_names;

    #[test]
    fn veth_names_come_only_from_hex_endpoint_ids() {
        assert_eq!(
            veth_names("0123456789abcdef0123"),
            Some(("lsv0123456789".into(), "lsc0123456789".into()))
        );
        for bad in ["", "0123", "-123456789abc", "0123456789 /x", "zzzzzzzzzzzz"] {
            assert_eq!(veth_names(bad), None, "{bad:?}");
        }
    }
}
