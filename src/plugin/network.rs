//! The libnetwork remote network driver face of the overlay helper: with
//! `docker network create -d NAME --subnet 10.50.0.0/24 n` and `docker run --network n`, dockerd
//! calls `Join` before every start of the container — including restart-policy restarts and
//! starts that never pass through luastrip — so the interface exists, addressed, before the
//! process does. `Join` hands dockerd a veth end (`SrcName`) with `DstPrefix: "ethwe"`, so it
//! shows in the container as `ethwe0` (dockerd appends the index), and disables the gateway
//! service (no `eth0` on a shared `docker_gwbridge`).
//!
//! One bridge (`--overlay-bridge`) holds every endpoint's host end; it is made when the first
//! network is created (or at a join, after a restart) and removed with the last network, once
//! nothing is attached to it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{err, ipam_err, reason, Driver, DriverFuture};
use crate::overlay::ipam::{Cidr, Ipam};
use crate::overlay::link;

pub struct NetworkDriver {
    bridge: String,
    /// The networks created with this driver (their IDs).
    networks: Mutex<BTreeSet<String>>,
}

/// The host end and the container end of an endpoint's veth pair: short, checked names from the
/// endpoint ID (a hex string from dockerd).
fn veth_names(endpoint: &str) -> Option<(String, String)> {
    if endpoint.len() < 10 || !endpoint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let short = &endpoint[..10];
    Some((format!("lsv{short}"), format!("lsc{short}")))
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
        // The set is this process's: after a restart it forgets older networks, so the bridge
        // only goes when nothing is attached to it either.
        if last {
            match link::has_ports(&self.bridge).await {
                Ok(false) => {
                    if let Err(e) = link::delete(&self.bridge).await {
                        return err(reason(e));
                    }
                }
                Ok(true) => {}
                Err(e) => return err(reason(e)),
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

/// libnetwork's remote IPAM driver: addresses from luastrip's allocator, through the cluster
/// store, so that no address is handed out twice (also by two workers or two gateways sharing
/// the store) and allocations survive restarts. `docker network create -d NAME --ipam-driver
/// NAME --subnet …`; a network without a subnet gets the `--overlay-cidr` range. IPv4 only.
pub struct IpamDriver {
    ipam: Ipam,
    default: Cidr,
}

impl IpamDriver {
    pub fn new(ipam: Ipam, default: Cidr) -> Self {
        IpamDriver { ipam, default }
    }

    fn request_pool(&self, body: &Value) -> Value {
        if body["V6"].as_bool() == Some(true) {
            return ipam_err("IPv6 pools are not supported by luastrip's IPAM");
        }
        let pool = match body["Pool"].as_str().filter(|p| !p.is_empty()) {
            None => self.default,
            Some(p) => match Cidr::parse(p) {
                Ok(c) => c,
                Err(e) => return ipam_err(reason(e)),
            },
        };
        json!({ "PoolID": pool.to_string(), "Pool": pool.to_string(), "Data": {} })
    }

    async fn request_address(&self, body: Value) -> Value {
        let pool = match Cidr::parse(body["PoolID"].as_str().unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => return ipam_err(reason(e)),
        };
        let want = match body["Address"].as_str().filter(|a| !a.is_empty()) {
            None => None,
            Some(a) => match a.parse::<Ipv4Addr>() {
                Ok(a) => Some(a),
                Err(_) => return ipam_err(format!("{a:?} is not an IPv4 address")),
            },
        };
        let what = match body["Options"]["RequestAddressType"].as_str() {
            Some("com.docker.network.gateway") => "gateway",
            _ => "endpoint",
        };
        match self.ipam.allocate(&pool, want, what).await {
            Ok(a) => json!({ "Address": format!("{a}/{}", pool.prefix), "Data": {} }),
            Err(e) => ipam_err(reason(e)),
        }
    }

    async fn release_address(&self, body: Value) -> Value {
        let pool = match Cidr::parse(body["PoolID"].as_str().unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => return ipam_err(reason(e)),
        };
        let Ok(a) = body["Address"]
            .as_str()
            .unwrap_or_default()
            .parse::<Ipv4Addr>()
        else {
            return ipam_err(format!("ReleaseAddress: bad Address {}", body["Address"]));
        };
        match self.ipam.release(&pool, a).await {
            Ok(()) => json!({}),
            Err(e) => ipam_err(reason(e)),
        }
    }
}

impl Driver for IpamDriver {
    fn implements(&self) -> &'static str {
        "IpamDriver"
    }

    fn call<'a>(&'a self, method: &'a str, body: Value) -> Option<DriverFuture<'a>> {
        Some(match method {
            "GetCapabilities" => Box::pin(async { json!({ "RequiresMACAddress": false }) }),
            "GetDefaultAddressSpaces" => Box::pin(async {
                json!({
                    "LocalDefaultAddressSpace": "luastrip-local",
                    "GlobalDefaultAddressSpace": "luastrip-global",
                })
            }),
            "RequestPool" => Box::pin(async move { self.request_pool(&body) }),
            "ReleasePool" => Box::pin(async { json!({}) }),
            "RequestAddress" => Box::pin(self.request_address(body)),
            "ReleaseAddress" => Box::pin(self.release_address(body)),
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
