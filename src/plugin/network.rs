//! The libnetwork remote network driver face of the overlay helper: with
//! `docker network create -d NAME --subnet 10.50.0.0/24 n` and `docker run --network n`, dockerd
//! calls `Join` before every start of the container — including restart-policy restarts and
//! starts that never pass through luastrip — so the interface exists, addressed, before the
//! process does. `Join` hands dockerd a veth end (`SrcName`) with `DstPrefix: "ethwe"`, so it
//! shows in the container as `ethwe0` (dockerd appends the index), and disables the gateway
//! service (no `eth0` on a shared `docker_gwbridge`).
//!
//! Before `Join`, at the same every start, dockerd calls `CreateEndpoint` with the address its
//! IPAM gave and the endpoint's options: an owner's address is refused there to an endpoint
//! that does not carry the owner's claim ([`CLAIM_OPTION`]), so a network reference that meant
//! another network at create cannot bring a container onto the overlay with another's address.
//! The endpoint's MAC is made from its address ([`crate::overlay::mac_of`]), and an identity's
//! endpoint is recorded until `DeleteEndpoint`, so that its address does not move to another
//! host while it runs ([`crate::overlay::ipam::identity`]).
//!
//! A network's bridge (`-o luastrip.bridge=NAME`, default `--overlay-bridge`) holds its
//! endpoints' host ends; it is recorded in the cluster store at `CreateNetwork` (so a `Join` after
//! a gateway restart finds it), made if missing, and removed with the last network on it, once
//! nothing is attached to it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{err, ipam_err, reason, Driver, DriverFuture};
use crate::overlay::ipam::{Cidr, Holder};
use crate::overlay::{link, Overlay, BRIDGE_OPTION, CLAIM_OPTION};

pub struct NetworkDriver {
    overlay: Arc<Overlay>,
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
    pub fn new(overlay: Arc<Overlay>) -> Self {
        NetworkDriver { overlay }
    }

    async fn create_network(&self, body: Value) -> Value {
        let Some(id) = body["NetworkID"].as_str() else {
            return err("CreateNetwork names no NetworkID");
        };
        // `docker network create -o luastrip.bridge=NAME`: dockerd passes driver options here.
        let bridge = body["Options"]["com.docker.network.generic"][BRIDGE_OPTION]
            .as_str()
            .unwrap_or(&self.overlay.settings.bridge)
            .to_string();
        let made = async {
            self.overlay.ensure_bridge(&bridge).await?;
            self.overlay.set_bridge(id, &bridge).await
        };
        match made.await {
            Ok(()) => json!({}),
            Err(e) => err(reason(e)),
        }
    }

    async fn delete_network(&self, body: Value) -> Value {
        let id = body["NetworkID"].as_str().unwrap_or_default();
        let (bridge, shared) = match self.overlay.drop_network(id).await {
            Ok(b) => b,
            Err(e) => return err(reason(e)),
        };
        // The bridge (and its VXLAN) goes with its last network, once nothing is attached.
        if !shared {
            if let Err(e) = self.overlay.remove_bridge_if_unused(&bridge).await {
                return err(reason(e));
            }
        }
        json!({})
    }

    /// Before every start (and every connect): the address comes from the network's IPAM, and
    /// nothing is added to the interface, but an owner's address is refused to an endpoint
    /// that does not carry the owner's claim ([`CLAIM_OPTION`]). dockerd then gives the
    /// address back (the owner keeps it) and the start fails with this message.
    async fn create_endpoint(&self, body: Value) -> Value {
        let address = body["Interface"]["Address"].as_str().unwrap_or_default();
        if address.is_empty() {
            return json!({ "Interface": {} });
        }
        let parsed = address.split_once('/').and_then(|(a, p)| {
            let a: Ipv4Addr = a.parse().ok()?;
            let pool = Cidr::containing(a, p.parse().ok()?).ok()?;
            Some((pool, a))
        });
        let Some((pool, a)) = parsed else {
            return err(format!("CreateEndpoint: bad Interface.Address {address:?}"));
        };
        let claim = body["Options"][CLAIM_OPTION].as_str();
        let endpoint = body["EndpointID"].as_str();
        if let Err(e) = self
            .overlay
            .ipam
            .endpoint_may_take(&pool, a, claim, endpoint)
            .await
        {
            return err(reason(e));
        }
        // The MAC follows the address (unless the client chose one), so that a container
        // moved to another host keeps both: its peers' ARP entries stay right.
        let given = body["Interface"]["MacAddress"]
            .as_str()
            .is_some_and(|m| !m.is_empty());
        if given {
            json!({ "Interface": {} })
        } else {
            json!({ "Interface": { "MacAddress": crate::overlay::mac_of(a) } })
        }
    }

    /// After every stop (and every disconnect): an identity's address is free to move.
    async fn delete_endpoint(&self, body: Value) -> Value {
        let endpoint = body["EndpointID"].as_str().unwrap_or_default();
        match self.overlay.ipam.endpoint_gone(endpoint).await {
            Ok(()) => json!({}),
            Err(e) => err(reason(e)),
        }
    }

    async fn join(&self, body: Value) -> Value {
        let endpoint = body["EndpointID"].as_str().unwrap_or_default();
        let Some((host, peer)) = veth_names(endpoint) else {
            return err(format!("Join: bad EndpointID {endpoint:?}"));
        };
        let network = body["NetworkID"].as_str().unwrap_or_default();
        let bridge = match self.overlay.bridge_of(network).await {
            Ok(b) => b,
            Err(e) => return err(reason(e)),
        };
        // Made again if it went (a host reboot; the daemon keeps its networks).
        if let Err(e) = self.overlay.ensure_bridge(&bridge).await {
            return err(reason(e));
        }
        let mtu = self.overlay.mtu_of(&bridge);
        match link::add_veth(&host, &peer, &bridge, mtu).await {
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
            "CreateEndpoint" => Box::pin(self.create_endpoint(body)),
            "DeleteEndpoint" => Box::pin(self.delete_endpoint(body)),
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
    overlay: Arc<Overlay>,
}

impl IpamDriver {
    pub fn new(overlay: Arc<Overlay>) -> Self {
        IpamDriver { overlay }
    }

    fn request_pool(&self, body: &Value) -> Value {
        if body["V6"].as_bool() == Some(true) {
            return ipam_err("IPv6 pools are not supported by luastrip's IPAM");
        }
        let pool = match body["Pool"].as_str().filter(|p| !p.is_empty()) {
            None => self.overlay.settings.cidr,
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
        let holder = match body["Options"]["RequestAddressType"].as_str() {
            Some("com.docker.network.gateway") => Holder::Gateway,
            _ => Holder::Endpoint,
        };
        match self.overlay.ipam.allocate(&pool, want, holder).await {
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
        match self.overlay.ipam.release(&pool, a).await {
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
