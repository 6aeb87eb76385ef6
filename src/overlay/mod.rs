//! Overlay IPs: the networking half of luastrip. Every container gets an address of its own on a
//! Linux bridge, with the interface in place before its process runs, and keeps it for as long
//! as the container exists.
//!
//! The design has two faces, as every helper does (`docs/architecture.md`):
//!
//! * **The plugin face.** luastrip serves libnetwork's remote NetworkDriver and IpamDriver
//!   ([`crate::plugin::network`]), so dockerd itself calls `Join` before *every* start of a
//!   container on an overlay network — restart-policy restarts, restarts at daemon boot and
//!   starts sent to dockerd directly included — and the interface (`ethwe0`) exists, addressed,
//!   before the process does. [`link`] does the Linux side with `ip` by argv.
//! * **The socket face.** [`Overlay`] is what scripts drive (`overlay.*` in Lua, and the
//!   `luastrip.weave` module that reads `WEAVE_CIDR` from a create body): it allocates an
//!   address for an *owner* (a token the create carries in a label, handed to the container's
//!   ID once it exists), makes sure the Docker network for its subnet exists, and the create is
//!   rewritten onto that network with the address fixed, so that dockerd asks for that very
//!   address at every start. [`guard`] keeps clients from reaching around the allocator.
//!
//! Allocations live in the [`crate::cluster::Cluster`] store ([`ipam`]), outside the Lua VMs:
//! never handed out twice, kept across gateway and daemon restarts, released when the container
//! is destroyed (the [`events`] follower, which also reconciles after every reconnect), and held
//! back for a grace period after release. With the store shared and `--overlay-underlay`, the
//! [`peers`] follower makes the other registered hosts this bridge's VXLAN peers.
//!
//! An address allocated for an *identity* (a container's name, compose's service and number, or
//! a label: [`ipam::identity`]) is not the container's but the identity's: the same identity
//! created again on any host takes it over, it is held for a while after its container is
//! removed, and the [`fdb`] follower points every host's VXLAN at its new host at once.

pub mod config;
pub mod events;
pub mod fdb;
pub mod guard;
pub mod ipam;
pub mod link;
pub mod peers;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;

use crate::cluster::{Cluster, ClusterError};
use crate::upstream::Upstream;
use crate::Error;
use ipam::{Cidr, Held, Holder, Ipam};

/// The label a container carries naming the owner of its overlay addresses.
pub const OWNER_LABEL: &str = "luastrip.overlay.owner";

/// The endpoint option (`EndpointsConfig.NET.DriverOpts`) carrying an owner's claim on its
/// address: set by luastrip only (a client that sets it is refused), kept by dockerd with the
/// container, and handed to the driver's `CreateEndpoint` at every start, which refuses an
/// owner's address to an endpoint without the claim ([`ipam::Ipam::endpoint_may_take`]).
pub const CLAIM_OPTION: &str = "luastrip.overlay.claim";

/// The driver option naming a network's bridge.
pub const BRIDGE_OPTION: &str = "luastrip.bridge";

fn helper(reason: impl Into<String>) -> Error {
    Error::Helper {
        helper: "overlay".into(),
        reason: reason.into(),
    }
}

/// A Docker network of the overlay driver.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub cidr: String,
    pub bridge: String,
}

/// An address held by an owner, with the network it is on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Allocation {
    /// `10.2.1.5/24`
    pub address: String,
    /// Just the address: `10.2.1.5`.
    pub ip: String,
    /// The Docker network for its subnet.
    pub network: String,
    /// The claim the container's endpoint must carry ([`CLAIM_OPTION`]) for dockerd to be given
    /// the address; `None` for an address recorded before claims were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

impl Allocation {
    /// The endpoint config that asks for this address (`EndpointsConfig.NET` of a create,
    /// `EndpointConfig` of a connect): the address fixed, and the claim on it.
    pub fn endpoint_config(&self) -> serde_json::Value {
        let mut ep = json!({ "IPAMConfig": { "IPv4Address": self.ip } });
        if let Some(c) = &self.claim {
            ep["DriverOpts"] = json!({ CLAIM_OPTION: c });
        }
        ep
    }
}

/// What an owner asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Want {
    /// Any free address of the default range (`--overlay-range`, else `--overlay-cidr`).
    Default,
    /// Any free address of this subnet.
    Net(Cidr),
    /// This address, on the network of this subnet.
    Ip(Ipv4Addr, Cidr),
}

impl Want {
    /// `10.2.1.5/24` (an address), `net:10.2.1.0/24` (a subnet) or `net:default`; `ip:` may
    /// prefix an address. An address without `/prefix` is one of the default range.
    pub fn parse(s: &str, default: Cidr) -> Result<Want, Error> {
        let s = s.trim();
        if let Some(net) = s.strip_prefix("net:") {
            return if net == "default" {
                Ok(Want::Default)
            } else {
                Cidr::parse(net).map(Want::Net)
            };
        }
        let s = s.strip_prefix("ip:").unwrap_or(s);
        let (addr, cidr) = match s.split_once('/') {
            Some((addr, prefix)) => {
                let bad = || helper(format!("{s:?} is not an IPv4 address with a /prefix"));
                let a: Ipv4Addr = addr.parse().map_err(|_| bad())?;
                let prefix: u8 = prefix.parse().map_err(|_| bad())?;
                (a, Cidr::containing(a, prefix)?)
            }
            None => {
                let a: Ipv4Addr = s
                    .parse()
                    .map_err(|_| helper(format!("{s:?} is not an IPv4 address or CIDR")))?;
                (a, default)
            }
        };
        if !cidr.holds(addr) {
            return Err(helper(format!("{addr} is not a host address of {cidr}")));
        }
        Ok(Want::Ip(addr, cidr))
    }
}

pub use config::Config;

/// How the helper is set up (the `--overlay-*` flags), checked.
pub struct Settings {
    /// `--network-plugin`: the driver name of overlay networks.
    pub plugin: String,
    /// `--overlay-bridge`.
    pub bridge: String,
    /// `--overlay-cidr`: the default network's subnet.
    pub cidr: Cidr,
    /// `--overlay-network`: the default network's name, and the prefix of the others'.
    pub network: String,
    /// `--overlay-range`: the part of `cidr` this host picks addresses from.
    pub range: Option<Cidr>,
    /// `--overlay-peer` or `--overlay-underlay`: the VXLAN device of `bridge`, if there are
    /// (or may be) other hosts.
    pub vxlan: Option<Vxlan>,
    /// `--overlay-underlay`: this host's address on the underlay, published in its cluster
    /// registration so that the others make it their VXLAN peer ([`peers`]).
    pub underlay: Option<Ipv4Addr>,
}

/// The overlay bridge's way to the other hosts: one VXLAN device (`lsx<vni>`) on the bridge,
/// with an all-zero FDB entry per peer, so that broadcasts (ARP) and unknown destinations go to
/// every peer and replies are learned (static unicast, head-end replication).
#[derive(Debug, Clone)]
pub struct Vxlan {
    pub vni: u32,
    pub peers: Vec<Ipv4Addr>,
}

impl Vxlan {
    /// The device's name.
    pub fn device(&self) -> String {
        format!("lsx{}", self.vni)
    }
}

/// The MTU of endpoints on a bridge with VXLAN: Ethernet's 1500 less VXLAN's 50 bytes.
pub const VXLAN_MTU: u32 = 1450;

impl Settings {
    /// The VXLAN of `bridge`, if it is the overlay bridge and there are peers.
    pub fn vxlan_of(&self, bridge: &str) -> Option<&Vxlan> {
        self.vxlan.as_ref().filter(|_| bridge == self.bridge)
    }
}

/// The overlay helper. Shared by every VM, the plugin drivers and the events follower.
pub struct Overlay {
    pub ipam: Ipam,
    cluster: Arc<dyn Cluster>,
    pub settings: Settings,
    upstream: Upstream,
    /// Networks known to exist, by name.
    networks: Mutex<HashMap<String, Network>>,
    /// One network creation at a time (many concurrent creates want the same network).
    creating: Arc<tokio::sync::Mutex<()>>,
    events: Option<crate::journal::HelperEvents>,
    /// The VXLAN peers the cluster's hosts say (besides `--overlay-peer`), by [`peers`].
    learned: Mutex<Vec<Ipv4Addr>>,
}

impl Overlay {
    pub fn new(
        cluster: Arc<dyn Cluster>,
        host: String,
        grace: std::time::Duration,
        settings: Settings,
        upstream: Upstream,
    ) -> Self {
        Overlay {
            ipam: Ipam::new(cluster.clone(), host, grace).with_range(settings.range),
            cluster,
            settings,
            upstream,
            networks: Mutex::default(),
            creating: Arc::new(tokio::sync::Mutex::new(())),
            events: None,
            learned: Mutex::new(Vec::new()),
        }
    }

    /// The same, announcing what it does on `events` (the journal's helper events).
    pub fn with_events(mut self, events: crate::journal::HelperEvents) -> Self {
        self.events = Some(events);
        self
    }

    fn announce(&self, message: String, fields: serde_json::Value) {
        crate::journal::announce(self.events.as_ref(), "overlay", message, fields);
    }

    /// The name of the network for `cidr`: `--overlay-network` (`luastrip`) for the default,
    /// else `luastrip-10.2.1.0-24`.
    pub fn network_name(&self, cidr: &Cidr) -> String {
        let base = &self.settings.network;
        if *cidr == self.settings.cidr {
            base.clone()
        } else {
            format!("{base}-{}-{}", cidr.network, cidr.prefix)
        }
    }

    /// The Docker network `name` (default: from the CIDR) with subnet `cidr` (default: the
    /// `--overlay-cidr`) on `bridge`, created if missing. An existing network with that name
    /// must have that subnet; a new subnet must not overlap another overlay network's.
    pub async fn network(
        &self,
        name: Option<&str>,
        cidr: Option<Cidr>,
        bridge: Option<&str>,
    ) -> Result<Network, Error> {
        let cidr = cidr.unwrap_or(self.settings.cidr);
        let name = name.map_or_else(|| self.network_name(&cidr), str::to_string);
        let bridge = bridge.unwrap_or(&self.settings.bridge).to_string();
        link::check_name("bridge", &bridge)?;
        if !link::plain_name(&name, 64) {
            return Err(helper(format!(
                "network name {name:?}: letters, digits, - _ . (starting with a letter or digit)"
            )));
        }
        if let Some(n) = self.known(&name) {
            return same(n, &cidr, &bridge);
        }
        let _one = self.creating.lock().await;
        // Every overlay network the daemon has: the one asked for, and the subnets in use.
        let listed = self
            .upstream
            .get_json(&format!(
                "/networks?{}",
                crate::route::query::encode([(
                    "filters",
                    json!({ "driver": { self.settings.plugin.as_str(): true } })
                        .to_string()
                        .as_str()
                )])
            ))
            .await?;
        for n in listed.as_array().into_iter().flatten() {
            let (Some(n_name), Some(id)) = (n["Name"].as_str(), n["Id"].as_str()) else {
                continue;
            };
            let Some(subnet) = n["IPAM"]["Config"][0]["Subnet"].as_str() else {
                continue;
            };
            let n_cidr = Cidr::parse(subnet)?;
            let network = Network {
                name: n_name.into(),
                id: id.into(),
                cidr: n_cidr.to_string(),
                bridge: n["Options"][BRIDGE_OPTION]
                    .as_str()
                    .unwrap_or(&self.settings.bridge)
                    .into(),
            };
            self.remember(network.clone());
            if n_name == name {
                return same(network, &cidr, &bridge);
            }
            if n_cidr.overlaps(&cidr) {
                return Err(helper(format!(
                    "{cidr} overlaps {n_cidr}, the subnet of overlay network {n_name}: \
                     overlay subnets must not overlap (their addresses share one space)"
                )));
            }
        }
        let body = json!({
            "Name": name,
            "CheckDuplicate": true,
            "Driver": self.settings.plugin,
            "Options": { BRIDGE_OPTION: bridge },
            "IPAM": { "Driver": self.settings.plugin, "Config": [{ "Subnet": cidr.to_string() }] },
            "Labels": { "luastrip.overlay": "1" },
        });
        let (status, answer) = self.upstream.post_json("/networks/create", &body).await?;
        if !status.is_success() {
            return Err(helper(format!(
                "cannot create the Docker network {name} ({cidr}): {}",
                answer["message"].as_str().unwrap_or_default()
            )));
        }
        let network = Network {
            name: name.clone(),
            id: answer["Id"].as_str().unwrap_or_default().into(),
            cidr: cidr.to_string(),
            bridge,
        };
        self.announce(
            format!("network {name} ({cidr}) created"),
            json!({ "event": "network", "network": name, "cidr": cidr.to_string() }),
        );
        self.remember(network.clone());
        Ok(network)
    }

    fn known(&self, name: &str) -> Option<Network> {
        let nets = self.networks.lock().unwrap_or_else(|e| e.into_inner());
        nets.get(name).cloned()
    }

    fn remember(&self, n: Network) {
        let mut nets = self.networks.lock().unwrap_or_else(|e| e.into_inner());
        nets.insert(n.name.clone(), n);
    }

    /// A network was removed on the daemon: forget it (it is made again when next needed).
    pub fn forget(&self, name_or_id: &str) {
        let mut nets = self.networks.lock().unwrap_or_else(|e| e.into_inner());
        nets.retain(|name, n| name != name_or_id && n.id != name_or_id);
    }

    /// Give `owner` an address: the network for it exists when this returns. An identity
    /// ([`ipam::is_identity`]) that holds an address of that subnet (on any host) has it moved
    /// here ([`Ipam::take_over`]).
    pub async fn allocate(&self, owner: &str, want: Want) -> Result<Allocation, Error> {
        check_owner(owner)?;
        let (cidr, addr) = match want {
            Want::Default => (self.settings.cidr, None),
            Want::Net(c) => (c, None),
            Want::Ip(a, c) => (c, Some(a)),
        };
        let network = self.network(None, Some(cidr), None).await?;
        let mut moved = None;
        if ipam::is_identity(owner) {
            for held in self.ipam.held_by(owner).await? {
                let same_pool = held.pool == cidr.to_string();
                if same_pool && addr.is_none_or(|a| a == held.address) {
                    if let Some(claim) = self.ipam.take_over(owner, &cidr, held.address).await? {
                        moved = Some((held.address, claim));
                        break;
                    }
                }
            }
        }
        let (a, claim) = match moved {
            Some((a, claim)) => (a, Some(claim)),
            None => {
                let a = self
                    .ipam
                    .allocate(&cidr, addr, Holder::Owner(owner))
                    .await?;
                (a, self.ipam.owned_claim(&cidr, a, owner).await?)
            }
        };
        let allocation = Allocation {
            address: format!("{a}/{}", cidr.prefix),
            ip: a.to_string(),
            network: network.name,
            claim,
        };
        self.announce(
            format!("{owner}: {} on {}", allocation.address, allocation.network),
            json!({ "event": "allocate", "owner": owner, "address": allocation.address }),
        );
        Ok(allocation)
    }

    fn allocation(&self, held: Held) -> Result<Allocation, Error> {
        let cidr = Cidr::parse(&held.pool)?;
        Ok(Allocation {
            address: format!("{}/{}", held.address, cidr.prefix),
            ip: held.address.to_string(),
            network: self.network_name(&cidr),
            claim: held.claim,
        })
    }

    /// What `owner` holds.
    pub async fn addresses(&self, owner: &str) -> Result<Vec<Allocation>, Error> {
        check_owner(owner)?;
        let held = self.ipam.held_by(owner).await?;
        held.into_iter().map(|h| self.allocation(h)).collect()
    }

    /// Release what `owner` holds (its container is gone); what was released.
    pub async fn release(&self, owner: &str, why: &str) -> Result<Vec<Allocation>, Error> {
        check_owner(owner)?;
        let released: Vec<Allocation> = self
            .ipam
            .release_owner(owner)
            .await?
            .into_iter()
            .map(|h| self.allocation(h))
            .collect::<Result<_, _>>()?;
        if !released.is_empty() {
            let list: Vec<&str> = released.iter().map(|a| a.address.as_str()).collect();
            self.announce(
                format!("{owner}: released {} ({why})", list.join(", ")),
                json!({ "event": "release", "owner": owner, "addresses": list, "why": why }),
            );
        }
        Ok(released)
    }

    /// The container `container` of `identity` was removed: its addresses are held for the
    /// hold (`--overlay-hold-s`).
    pub async fn hold(&self, identity: &str, container: &str) -> Result<(), Error> {
        let held = self.ipam.hold_after_removal(identity, container).await?;
        if !held.is_empty() {
            let list: Vec<String> = held.iter().map(|h| h.address.to_string()).collect();
            let hold = self.ipam.hold().as_secs();
            self.announce(
                format!(
                    "{identity}: {} held for {hold} s (container removed)",
                    list.join(", ")
                ),
                json!({ "event": "hold", "owner": identity, "addresses": list, "hold_s": hold }),
            );
        }
        Ok(())
    }

    /// Release one address of `owner`; whether it held it.
    pub async fn release_one(&self, owner: &str, address: &str) -> Result<bool, Error> {
        check_owner(owner)?;
        let Want::Ip(a, cidr) = Want::parse(address, self.settings.cidr)? else {
            return Err(helper(format!("{address:?} is not an address")));
        };
        self.ipam.release_one(owner, &cidr, a).await
    }

    /// Connect the existing container `container` to `allocation`'s network with that address
    /// (dockerd calls the driver's `Join`: the interface appears at once in a running container).
    pub async fn attach(&self, container: &str, allocation: &Allocation) -> Result<(), Error> {
        let body = json!({
            "Container": container,
            "EndpointConfig": allocation.endpoint_config(),
        });
        let path = format!("/networks/{}/connect", allocation.network);
        let (status, answer) = self.upstream.post_json(&path, &body).await?;
        if !status.is_success() {
            return Err(helper(format!(
                "cannot attach {container} to {} with {}: {}",
                allocation.network,
                allocation.address,
                answer["message"].as_str().unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Disconnect `container` from `network` (its address stays allocated to its owner).
    pub async fn detach(&self, container: &str, network: &str) -> Result<(), Error> {
        let body = json!({ "Container": container, "Force": true });
        let path = format!("/networks/{network}/disconnect");
        let (status, answer) = self.upstream.post_json(&path, &body).await?;
        if !status.is_success() {
            return Err(helper(format!(
                "cannot detach {container} from {network}: {}",
                answer["message"].as_str().unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The owner of a container's addresses: its full ID (a create's owner token is handed to
    /// the ID once the container exists, [`guard`]). `None` if there is no such container.
    pub async fn owner_of(&self, container: &str) -> Result<Option<String>, Error> {
        check_owner(container)?;
        let path = format!("/containers/{container}/json");
        let c = self.upstream.get_json_found(&path).await?;
        Ok(c.and_then(|c| c["Id"].as_str().map(str::to_string)))
    }

    /// The Docker network `reference` (a name, an ID or an ID's prefix, resolved by dockerd as
    /// it resolves them) if it takes its addresses from luastrip's IPAM or uses its driver:
    /// its subnets. `None` for other networks and for no such network.
    pub async fn ours(&self, reference: &str) -> Result<Option<Vec<Cidr>>, Error> {
        if !link::plain_name(reference, 128) {
            return Err(Error::client(
                http::StatusCode::BAD_REQUEST,
                format!("{reference:?} is not a network name or ID"),
            ));
        }
        let path = format!("/networks/{reference}");
        let Some(n) = self.upstream.get_json_found(&path).await? else {
            return Ok(None);
        };
        let plugin = Some(self.settings.plugin.as_str());
        if n["Driver"].as_str() != plugin && n["IPAM"]["Driver"].as_str() != plugin {
            return Ok(None);
        }
        let subnets = n["IPAM"]["Config"].as_array().into_iter().flatten();
        Ok(Some(
            subnets
                .filter_map(|c| c["Subnet"].as_str().and_then(|s| Cidr::parse(s).ok()))
                .collect(),
        ))
    }

    /// Held while a network is being made (by a script, or a client's `network create` that
    /// [`guard`] checked for overlaps): one at a time, so two cannot both pass the check.
    pub async fn networks_lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.creating.clone().lock_owned().await
    }

    /// The VXLAN peers now: `--overlay-peer`, and the hosts the cluster says.
    pub fn vxlan_peers(&self) -> Vec<Ipv4Addr> {
        let mut all = self
            .settings
            .vxlan
            .as_ref()
            .map(|v| v.peers.clone())
            .unwrap_or_default();
        for p in self
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if !all.contains(p) {
                all.push(*p);
            }
        }
        all
    }

    /// Take `peers` as the hosts the cluster says; whether they changed.
    fn learn_peers(&self, mut peers: Vec<Ipv4Addr>) -> bool {
        peers.sort();
        peers.dedup();
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if *learned == peers {
            return false;
        }
        *learned = peers;
        true
    }

    /// Record the bridge of the network `id` (the driver's `CreateNetwork`), so that a `Join`
    /// after a gateway restart finds it.
    pub async fn set_bridge(&self, id: &str, bridge: &str) -> Result<(), Error> {
        link::check_name("bridge", bridge)?;
        let k = format!("overlay/networks/{id}");
        let v = json!({ "bridge": bridge });
        match self.cluster.create(&k, v.clone()).await {
            Ok(_) => Ok(()),
            Err(ClusterError::Conflict {
                current: Some(r), ..
            }) => self
                .cluster
                .swap(&k, v, r.revision)
                .await
                .map(|_| ())
                .map_err(|e| helper(e.to_string())),
            Err(e) => Err(helper(e.to_string())),
        }
    }

    /// The bridge of the network `id`: recorded at its creation, else `--overlay-bridge`.
    pub async fn bridge_of(&self, id: &str) -> Result<String, Error> {
        let k = format!("overlay/networks/{id}");
        let r = self
            .cluster
            .get(&k)
            .await
            .map_err(|e| helper(e.to_string()))?;
        Ok(
            r.and_then(|r| r.value["bridge"].as_str().map(str::to_string))
                .unwrap_or_else(|| self.settings.bridge.clone()),
        )
    }

    /// Forget the network `id` (the driver's `DeleteNetwork`); its bridge, and whether another
    /// network still uses that bridge.
    pub async fn drop_network(&self, id: &str) -> Result<(String, bool), Error> {
        let bridge = self.bridge_of(id).await?;
        let k = format!("overlay/networks/{id}");
        let store = |e: ClusterError| helper(e.to_string());
        if let Some(r) = self.cluster.get(&k).await.map_err(store)? {
            match self.cluster.delete(&k, r.revision).await {
                Ok(()) | Err(ClusterError::Conflict { .. }) => {}
                Err(e) => return Err(store(e)),
            }
        }
        let others = self
            .cluster
            .list("overlay/networks/")
            .await
            .map_err(store)?;
        let shared = others
            .iter()
            .any(|(_, r)| r.value["bridge"].as_str() == Some(bridge.as_str()));
        Ok((bridge, shared))
    }

    /// The bridge `bridge` made and up, with its VXLAN device and peers when it is the overlay
    /// bridge and there are peers. Called at every `CreateNetwork` and `Join` (so a reboot or a
    /// changed `--overlay-peer` is caught up) and at start-up.
    pub async fn ensure_bridge(&self, bridge: &str) -> Result<(), Error> {
        link::ensure_bridge(bridge, bridge == self.settings.bridge).await?;
        if let Some(v) = self.settings.vxlan_of(bridge) {
            link::ensure_vxlan(&v.device(), v.vni, &self.vxlan_peers(), bridge).await?;
        }
        Ok(())
    }

    /// Remove the bridge `bridge` (and its VXLAN device) if no endpoint is attached to it and
    /// luastrip made it: a bridge (or any link) luastrip did not make is never deleted.
    pub async fn remove_bridge_if_unused(&self, bridge: &str) -> Result<(), Error> {
        if !link::exists(bridge).await || !link::made_here(bridge).await? {
            return Ok(());
        }
        let vxlan = self.settings.vxlan_of(bridge).map(Vxlan::device);
        let ports = link::ports(bridge).await?;
        if ports.iter().any(|p| Some(p) != vxlan.as_ref()) {
            return Ok(());
        }
        if let Some(v) = &vxlan {
            link::delete(v).await?;
        }
        link::delete(bridge).await
    }

    /// The MTU of an endpoint on `bridge`: less than Ethernet's where VXLAN carries it.
    pub fn mtu_of(&self, bridge: &str) -> Option<u32> {
        self.settings.vxlan_of(bridge).map(|_| VXLAN_MTU)
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

fn same(n: Network, cidr: &Cidr, bridge: &str) -> Result<Network, Error> {
    if n.cidr != cidr.to_string() {
        return Err(helper(format!(
            "network {} exists with subnet {}, not {cidr}",
            n.name, n.cidr
        )));
    }
    if n.bridge != bridge {
        return Err(helper(format!(
            "network {} exists on bridge {}, not {bridge}",
            n.name, n.bridge
        )));
    }
    Ok(n)
}

/// The MAC of an overlay endpoint with address `a`: locally administered, `02:4c:` and the
/// address's four bytes, so that it follows the address to another host (overlay subnets do
/// not overlap, so no two endpoints share one).
pub fn mac_of(a: Ipv4Addr) -> String {
    let [w, x, y, z] = a.octets();
    format!("02:4c:{w:02x}:{x:02x}:{y:02x}:{z:02x}")
}

/// A fresh owner token (`ow-` and 16 hex digits), for a container not created yet: it carries
/// the token in its [`OWNER_LABEL`] until the create succeeds and the token is handed to its ID.
pub fn new_owner() -> Result<String, Error> {
    Ok(format!("ow-{}", random_hex(8)?))
}

/// `bytes` random bytes from the kernel, in hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| helper(format!("cannot read /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// An owner is a container name or ID, or a token: 1-128 of letters, digits, `-_.:`.
pub fn check_owner(owner: &str) -> Result<(), Error> {
    let ok = !owner.is_empty()
        && owner.len() <= 128
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(helper(format!(
            "owner {owner:?}: 1-128 letters, digits, - _ . : (a container name or ID)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weave_cidr_entries_parse_as_weave_reads_them() {
        let default = Cidr::parse("10.32.0.0/12").unwrap();
        let ip = |a: &str, c: &str| Want::Ip(a.parse().unwrap(), Cidr::parse(c).unwrap());
        assert_eq!(
            Want::parse("10.2.1.5/24", default).unwrap(),
            ip("10.2.1.5", "10.2.1.0/24")
        );
        assert_eq!(
            Want::parse("ip:10.2.1.5/24", default).unwrap(),
            ip("10.2.1.5", "10.2.1.0/24")
        );
        assert_eq!(
            Want::parse("10.32.0.9", default).unwrap(),
            ip("10.32.0.9", "10.32.0.0/12")
        );
        assert_eq!(
            Want::parse("net:10.2.1.0/24", default).unwrap(),
            Want::Net(Cidr::parse("10.2.1.0/24").unwrap())
        );
        assert_eq!(Want::parse("net:default", default).unwrap(), Want::Default);
        for (bad, why) in [
            ("10.2.1.0/24", "not a host address of 10.2.1.0/24"),
            ("10.2.1.255/24", "not a host address"),
            ("10.2.1.5", "not a host address of 10.32.0.0/12"),
            ("10.2.1.5/33", "/30 or shorter"),
            ("net:10.2.1.5/24", "host bits are set"),
            ("bogus", "not an IPv4 address or CIDR"),
            ("ip:1.2.3/8", "not an IPv4 address with a /prefix"),
        ] {
            let e = Want::parse(bad, default).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn owners_are_checked() {
        for bad in ["", "a b", "a/b", "../x", &"x".repeat(129)] {
            assert!(check_owner(bad).is_err(), "{bad:?}");
        }
        check_owner("ow-0123abcd").unwrap();
        check_owner("3f2a9c").unwrap();
    }
}
