//! The overlay helper's hook layer. It runs before the route scripts, so that no client reaches
//! around the allocator, whatever scripts are loaded:
//!
//! * an address asked for by value on a network of luastrip's IPAM (`docker run --network
//!   luastrip --ip 10.32.0.5`, `docker network connect --ip …`) is refused while another
//!   container holds it; a free one becomes the container's own, kept across stop/start as
//!   dockerd keeps a `--ip` address, and released when the container is destroyed;
//! * the owner label ([`OWNER_LABEL`]) and the endpoint option [`CLAIM_OPTION`] are luastrip's:
//!   a create or connect that sets either is refused; an address made a container's own here
//!   has its claim written into the endpoint that asks for it, which the plugin face checks at
//!   every start;
//! * `docker network create` with luastrip's IPAM must not overlap another of its subnets, and
//!   luastrip's driver takes luastrip's IPAM (filled in when left out, refused when another is
//!   named), and luastrip's IPAM serves only its driver, so every address on an overlay bridge
//!   is one the allocator knows and checks at start; a network of another driver may neither
//!   sit on luastrip's bridges nor overlap its ranges; no network is named as a luastrip network
//!   is named, or as a prefix of its ID;
//! * once a create succeeds, the owner token it carried (set here, or by a script such as
//!   `luastrip.weave`) is handed to the new container's ID: ownership follows the container, and
//!   the label copied into another container, or baked into an image, owns nothing. An identity
//!   (`luastrip.weave` allocates for one) stays the owner, and records the container.
//!
//! Bodies are read as dockerd reads them ([`Call::adopt_json_body`]) before anything is decided.

use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tracing::warn;

use super::ipam::{Cidr, Holder, Taken};
use super::{Overlay, CLAIM_OPTION, OWNER_LABEL};
use crate::body::{full, Body};
use crate::call::{Call, HookFuture, Hooks};
use crate::Error;

pub struct Guard(pub Arc<Overlay>);

/// What a call's pre phase leaves for its post phase.
#[derive(Clone, Default)]
struct State {
    /// Held while a client's network create is on its way (no two pass the overlap check).
    _networks: Option<Arc<tokio::sync::OwnedMutexGuard<()>>>,
    /// Addresses this call made a container's own: given back if the daemon refuses the call.
    claimed: Vec<(String, Cidr, Ipv4Addr)>,
}

/// The largest body this layer reads (create, connect and network bodies are a few KiB).
const BODY_CAP: usize = 4 << 20;

/// A subnet as a network create gives it, read only to compare with luastrip's ranges: any
/// prefix /0 to /32, host bits ignored (dockerd takes `10.7.1.5/24` as `10.7.1.0/24`). `None`
/// for IPv6; an error for what is not a subnet at all.
fn subnet_for_overlap(s: &str) -> Option<Result<Cidr, Error>> {
    if s.contains(':') {
        return None;
    }
    let parsed = s.split_once('/').and_then(|(a, p)| {
        let a: Ipv4Addr = a.parse().ok()?;
        let p: u8 = p.parse().ok().filter(|p| *p <= 32)?;
        let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
        Some(Cidr {
            network: Ipv4Addr::from(u32::from(a) & mask),
            prefix: p,
        })
    });
    Some(parsed.ok_or_else(|| bad(format!("the subnet {s:?} is not an IPv4 or IPv6 subnet"))))
}

/// An endpoint config must not carry a claim ([`CLAIM_OPTION`]): luastrip sets it, for the
/// address it gave. A claim copied from another container's `docker inspect` would take that
/// container's address at the next start.
fn refuse_client_claim(ep: &Value, net: &str) -> Result<(), Error> {
    if ep["DriverOpts"].get(CLAIM_OPTION).is_none() {
        return Ok(());
    }
    Err(bad(format!(
        "the endpoint option {CLAIM_OPTION} (on network {net}) is set by luastrip, not by \
         clients: it says which container an overlay address belongs to"
    )))
}

/// No network may be named as a luastrip network is named, or as a prefix of its ID: dockerd
/// looks a network up by its ID, then its name, then an ID prefix, again at every start, so a
/// namesake takes the references meant for the luastrip network (create on the namesake, past
/// the checks of luastrip's addresses; remove it; start on the overlay).
fn refuse_namesake(spec: &Value, ours: &[Value]) -> Result<(), Error> {
    let name = spec["Name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Ok(());
    }
    for n in ours {
        let (their_name, id) = (
            n["Name"].as_str().unwrap_or_default(),
            n["Id"].as_str().unwrap_or_default(),
        );
        if name == their_name || id.starts_with(name) {
            let what = if name == their_name { "name" } else { "ID" };
            return Err(conflict(format!(
                "{name:?} is the {what} of luastrip's network {their_name} ({}): a second \
                 network of that name would take the references to it",
                &id[..id.len().min(12)]
            )));
        }
    }
    Ok(())
}

/// Put the claim on an address in the endpoint config that asks for it.
fn set_claim(ep: &mut Value, claim: Option<String>) {
    let Some(claim) = claim else { return };
    if !ep["DriverOpts"].is_object() {
        ep["DriverOpts"] = json!({});
    }
    ep["DriverOpts"][CLAIM_OPTION] = json!(claim);
}

fn bad(message: String) -> Error {
    Error::client(StatusCode::BAD_REQUEST, message)
}

fn conflict(message: String) -> Error {
    Error::client(StatusCode::CONFLICT, message)
}

/// The call's JSON body, read once and checked as dockerd reads it; `None` when empty.
async fn json_body(call: &mut Call) -> Result<Option<Value>, Error> {
    call.read_json_body(BODY_CAP).await
}

/// The address `ip` and the subnet of `network` it is in.
fn address_in(ip: &str, subnets: &[Cidr], network: &str) -> Result<(Cidr, Ipv4Addr), Error> {
    let a: Ipv4Addr = ip
        .parse()
        .map_err(|_| bad(format!("{ip:?} is not an IPv4 address")))?;
    subnets
        .iter()
        .find(|c| c.holds(a))
        .map(|c| (*c, a))
        .ok_or_else(|| bad(format!("{a} is not a host address of network {network}")))
}

impl Guard {
    /// Whether `a` may be given to `owner` (`None`: a container not created yet).
    async fn check_free(
        &self,
        cidr: &Cidr,
        a: Ipv4Addr,
        network: &str,
        owner: Option<&str>,
    ) -> Result<bool, Error> {
        match self.0.ipam.taken(cidr, a).await? {
            None => Ok(true),
            Some(Taken::Owner(o)) if Some(o.as_str()) == owner => Ok(false),
            Some(Taken::Owner(_)) => Err(conflict(format!(
                "{a} on network {network} is another container's overlay address; \
                 ask for a free one, or for none and luastrip picks one"
            ))),
            Some(Taken::Endpoint | Taken::Gateway) => {
                Err(conflict(format!("{a} on network {network} is in use")))
            }
        }
    }

    async fn create(&self, call: &mut Call) -> Result<(), Error> {
        let Some(mut spec) = json_body(call).await? else {
            return Ok(());
        };
        if !spec["Labels"][OWNER_LABEL].is_null() {
            return Err(bad(format!(
                "the label {OWNER_LABEL} is set by luastrip, not by clients: it says whose \
                 overlay addresses a container holds"
            )));
        }
        let mut wanted = Vec::new();
        for (net, ep) in spec["NetworkingConfig"]["EndpointsConfig"]
            .as_object()
            .into_iter()
            .flatten()
        {
            refuse_client_claim(ep, net)?;
            if let Some(ip) = ep["IPAMConfig"]["IPv4Address"].as_str() {
                if !ip.is_empty() {
                    wanted.push((net.clone(), ip.to_string()));
                }
            }
        }
        let mut token: Option<String> = None;
        for (net, ip) in wanted {
            let Some(subnets) = self.0.ours(&net).await? else {
                continue;
            };
            let (cidr, a) = address_in(&ip, &subnets, &net)?;
            let owner = match &token {
                Some(t) => t.clone(),
                None => token.insert(super::new_owner()?).clone(),
            };
            let claimed = match self.check_free(&cidr, a, &net, None).await {
                Ok(_) => self
                    .0
                    .ipam
                    .allocate(&cidr, Some(a), Holder::Owner(&owner))
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            let claim = match claimed {
                Ok(()) => self.0.ipam.owned_claim(&cidr, a, &owner).await,
                Err(e) => Err(e),
            };
            match claim {
                Ok(claim) => set_claim(
                    &mut spec["NetworkingConfig"]["EndpointsConfig"][&net],
                    claim,
                ),
                Err(e) => {
                    self.0.release(&owner, "create refused").await?;
                    return Err(e);
                }
            }
        }
        if let Some(t) = token {
            if !spec["Labels"].is_object() {
                spec["Labels"] = json!({});
            }
            spec["Labels"][OWNER_LABEL] = json!(t);
            call.replace_body(Bytes::from(spec.to_string()));
        }
        Ok(())
    }

    async fn network_create(&self, call: &mut Call) -> Result<(), Error> {
        let Some(mut spec) = json_body(call).await? else {
            return Ok(());
        };
        let plugin = self.0.settings.plugin.as_str();
        let ipam = spec["IPAM"]["Driver"].as_str().unwrap_or_default();
        // dockerd's default driver is the bridge.
        let driver = spec["Driver"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("bridge")
            .to_string();
        // One at a time from here to the daemon's answer: no two creates pass the checks
        // against each other. One listing serves every check.
        let lock = self.0.networks_lock().await;
        let ours = self.luastrip_networks().await?;
        refuse_namesake(&spec, &ours)?;
        if driver != plugin {
            // Whatever its IPAM, another driver never sits on luastrip's bridges; with its own
            // IPAM too, it stays out of luastrip's ranges.
            self.foreign_bridge(&spec, &ours).await?;
            if ipam == plugin {
                return Err(bad(format!(
                    "luastrip's IPAM serves networks of luastrip's driver only (-d {plugin}): \
                     only there is a container's own address checked at every start, so that \
                     no other container is given it; not the {driver} driver"
                )));
            }
            self.foreign_ranges(&spec, &ours)?;
        } else {
            if ipam != plugin {
                if !matches!(ipam, "" | "default") {
                    return Err(bad(format!(
                        "a network of the {plugin} driver takes its addresses from luastrip's \
                         allocator, not from the IPAM driver {ipam}: leave out --ipam-driver"
                    )));
                }
                // `docker network create -d luastrip`: the addresses come from luastrip's
                // allocator.
                if !spec["IPAM"].is_object() {
                    spec["IPAM"] = json!({});
                }
                spec["IPAM"]["Driver"] = json!(plugin);
                call.replace_body(Bytes::from(spec.to_string()));
            }
            self.own_ranges(&spec, &ours)?;
        }
        call.state.insert(State {
            _networks: Some(Arc::new(lock)),
            ..State::default()
        });
        Ok(())
    }

    /// A network of luastrip's allocator must not overlap another of its subnets (the
    /// addresses of all of them share one space).
    fn own_ranges(&self, spec: &Value, ours: &[Value]) -> Result<(), Error> {
        let plugin = self.0.settings.plugin.as_str();
        let mut subnets = Vec::new();
        for c in spec["IPAM"]["Config"].as_array().into_iter().flatten() {
            if let Some(s) = c["Subnet"].as_str() {
                subnets.push(Cidr::parse(s)?);
            }
        }
        if subnets.is_empty() {
            subnets.push(self.0.settings.cidr);
        }
        for n in ours {
            if n["IPAM"]["Driver"].as_str() != Some(plugin) {
                continue;
            }
            for theirs in n["IPAM"]["Config"].as_array().into_iter().flatten() {
                let Some(Ok(theirs)) = theirs["Subnet"].as_str().map(Cidr::parse) else {
                    continue;
                };
                if let Some(mine) = subnets.iter().find(|c| c.overlaps(&theirs)) {
                    return Err(conflict(format!(
                        "{mine} overlaps {theirs}, the subnet of network {}: the subnets of \
                         luastrip's allocator must not overlap (their addresses share one space)",
                        n["Name"].as_str().unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The networks of luastrip's driver or IPAM, as the daemon lists them.
    async fn luastrip_networks(&self) -> Result<Vec<Value>, Error> {
        let plugin = self.0.settings.plugin.as_str();
        let listed = self.0.upstream().get_json("/networks").await?;
        Ok(listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["Driver"].as_str() == Some(plugin) || n["IPAM"]["Driver"].as_str() == Some(plugin)
            })
            .cloned()
            .collect())
    }

    /// A network of another driver (whatever its IPAM) must not sit on luastrip's bridges
    /// (`com.docker.network.bridge.name`, a macvlan's or ipvlan's `parent`, a VLAN on one of them,
    /// `parent=luastrip0.10`): its containers would be on the overlay with no allocator knowing.
    async fn foreign_bridge(&self, spec: &Value, ours: &[Value]) -> Result<(), Error> {
        let mut bridges = vec![self.0.settings.bridge.clone()];
        bridges.extend(ours.iter().filter_map(|n| {
            n["Options"][super::BRIDGE_OPTION]
                .as_str()
                .map(str::to_string)
        }));
        for option in ["com.docker.network.bridge.name", "parent"] {
            let Some(iface) = spec["Options"][option].as_str() else {
                continue;
            };
            let base = iface.split('.').next().unwrap_or(iface);
            let marked = super::link::check_name("interface", base).is_ok()
                && super::link::exists(base).await
                && super::link::made_here(base).await.unwrap_or(false);
            if marked || bridges.iter().any(|b| b == base) {
                return Err(conflict(format!(
                    "{iface} is on luastrip's overlay bridge {base}: a network of another driver \
                     (-o {option}={iface}) would put its containers on the overlay, around \
                     luastrip's allocator"
                )));
            }
        }
        Ok(())
    }

    /// A network of another driver and IPAM must not take addresses from luastrip's ranges
    /// (`--overlay-cidr`, and the subnets of luastrip's networks): it would hand them out with no
    /// allocator knowing.
    fn foreign_ranges(&self, spec: &Value, ours: &[Value]) -> Result<(), Error> {
        let mut ranges = vec![(self.0.settings.cidr, "--overlay-cidr".to_string())];
        for n in ours {
            for c in n["IPAM"]["Config"].as_array().into_iter().flatten() {
                if let Some(Some(Ok(cidr))) = c["Subnet"].as_str().map(subnet_for_overlap) {
                    let name = n["Name"].as_str().unwrap_or_default();
                    ranges.push((cidr, format!("network {name}")));
                }
            }
        }
        for c in spec["IPAM"]["Config"].as_array().into_iter().flatten() {
            // IPv6 subnets are none of luastrip's.
            let Some(subnet) = c["Subnet"].as_str().and_then(subnet_for_overlap) else {
                continue;
            };
            let subnet = subnet?;
            if let Some((theirs, whose)) = ranges.iter().find(|(r, _)| r.overlaps(&subnet)) {
                return Err(conflict(format!(
                    "{}/{} overlaps {theirs} ({whose}), luastrip's overlay addresses: a network \
                     of another driver there would hand them out around luastrip's allocator",
                    subnet.network, subnet.prefix
                )));
            }
        }
        Ok(())
    }

    async fn connect(&self, call: &mut Call, net: &str) -> Result<(), Error> {
        let Some(mut spec) = json_body(call).await? else {
            return Ok(());
        };
        refuse_client_claim(&spec["EndpointConfig"], net)?;
        let ip = spec["EndpointConfig"]["IPAMConfig"]["IPv4Address"]
            .as_str()
            .unwrap_or_default();
        let container = spec["Container"].as_str().unwrap_or_default();
        if ip.is_empty() || container.is_empty() {
            return Ok(());
        }
        let Some(subnets) = self.0.ours(net).await? else {
            return Ok(());
        };
        let (cidr, a) = address_in(ip, &subnets, net)?;
        // No such container: dockerd says so.
        let Some(owner) = self.0.owner_of(container).await? else {
            return Ok(());
        };
        if self.check_free(&cidr, a, net, Some(&owner)).await? {
            self.0
                .ipam
                .allocate(&cidr, Some(a), Holder::Owner(&owner))
                .await?;
            call.state.insert(State {
                claimed: vec![(owner.clone(), cidr, a)],
                ..State::default()
            });
        }
        // New or held before (connected again), the endpoint carries the claim on it.
        let claim = self.0.ipam.owned_claim(&cidr, a, &owner).await?;
        set_claim(&mut spec["EndpointConfig"], claim);
        call.replace_body(Bytes::from(spec.to_string()));
        Ok(())
    }

    /// After a create: the owner token goes to the new container, or is given back.
    async fn created(&self, call: &mut Call, res: &mut Response<Body>) -> Result<(), Error> {
        let Some(sent) = &call.buffered_body else {
            return Ok(());
        };
        let spec: Value = serde_json::from_slice(sent).unwrap_or_default();
        let Some(token) = spec["Labels"][OWNER_LABEL].as_str() else {
            return Ok(());
        };
        if !res.status().is_success() {
            // Logged, not failed: the daemon's answer is what the client gets.
            if let Err(e) = self.0.release(token, "create refused").await {
                warn!(helper = "overlay", token, error = %e, "cannot release addresses");
            }
            return Ok(());
        }
        let body = std::mem::replace(res.body_mut(), full(Bytes::new()));
        let bytes = crate::body::read_to_cap(body, BODY_CAP)
            .await
            .map_err(|e| Error::Daemon {
                upstream: "dockerd".into(),
                reason: format!("the create's answer: {e}"),
            })?;
        *res.body_mut() = full(bytes.clone());
        call.note_daemon_body(&bytes);
        call.buffered_response = Some(bytes.clone());
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let Some(id) = answer["Id"].as_str() else {
            warn!(helper = "overlay", token, "a create answered without an Id");
            return Ok(());
        };
        // Logged, not failed: the container exists; until handed over, its label owns them.
        // An identity keeps them: the container is recorded as the one that has them now.
        let handed = if super::ipam::is_identity(token) {
            self.0.ipam.bind(token, id).await
        } else {
            self.0.ipam.rekey(token, id).await
        };
        if let Err(e) = handed {
            warn!(helper = "overlay", token, error = %e, "cannot hand addresses to the container");
        }
        Ok(())
    }
}

impl Hooks for Guard {
    fn pre<'a>(&'a self, call: &'a mut Call) -> HookFuture<'a, Option<Response<Body>>> {
        Box::pin(async move {
            if call.head.method != Method::POST {
                return Ok(None);
            }
            let path = call.path.as_str().to_string();
            if path == "/containers/create" {
                self.create(call).await?;
            } else if path == "/networks/create" {
                self.network_create(call).await?;
            } else if let Some(net) = path
                .strip_prefix("/networks/")
                .and_then(|r| r.strip_suffix("/connect"))
            {
                self.connect(call, net).await?;
            }
            Ok(None)
        })
    }

    fn post<'a>(&'a self, call: &'a mut Call, res: &'a mut Response<Body>) -> HookFuture<'a, ()> {
        Box::pin(async move {
            if call.head.method != Method::POST {
                return Ok(());
            }
            if call.path.as_str() == "/containers/create" {
                return self.created(call, res).await;
            }
            let state = call.state.remove::<State>().unwrap_or_default();
            if !res.status().is_success() {
                for (owner, cidr, a) in state.claimed {
                    if let Err(e) = self.0.ipam.release_one(&owner, &cidr, a).await {
                        warn!(helper = "overlay", owner, error = %e, "cannot release {a}");
                    }
                }
            }
            Ok(())
        })
    }
}
