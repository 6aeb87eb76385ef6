//! The `overlay` namespace: scripts drive the overlay helper ([`crate::overlay::Overlay`]),
//! which lives outside the VMs. Every function is async and not charged to the hook's budget.
//! Without `--network-plugin` each fails with an error that says how to configure it.
//!
//! * `overlay.network{ name?, cidr?, bridge? }` → `{ name, id, cidr, bridge }`: the Docker
//!   network of the overlay driver for that subnet (default `--overlay-cidr`), created if missing.
//! * `overlay.allocate(owner, want?)` → `"10.32.0.5/12", { address, ip, network, claim }`: an address
//!   for `owner` (a container name or ID, or a token from `overlay.new_owner()` that the container
//!   carries in its `luastrip.overlay.owner` label). `want` is a `WEAVE_CIDR` entry
//!   (`"10.2.1.5/24"`, `"ip:…"`, `"net:10.2.1.0/24"`, `"net:default"`) or a table
//!   `{ ip = "10.2.1.5/24" }` / `{ net = "10.2.1.0/24" }`; nil is the default range. The
//!   endpoint that is to have the address carries `claim` in its `DriverOpts`, under
//!   `overlay.claim_option`: without it, dockerd is refused the address at start.
//! * `overlay.addresses(container)` → `{ { address, ip, network }, … }`.
//! * `overlay.release(container)` → what was released.
//! * `overlay.attach(container, addr?)` → `"10.32.0.5/12"`: allocate (or reuse) and connect a
//!   created or running container to the network; the interface appears at once.
//! * `overlay.detach(container, addr?)`: disconnect it and release the address (all of its
//!   addresses when `addr` is nil).
//! * `overlay.new_owner()` → a fresh owner token; `overlay.owner_label` is the label's name,
//!   `overlay.claim_option` the endpoint option's.
//! * `overlay.identity(labels, name?)` → `"compose:app:db:1"`, `"name:db"`, `"label:v"` or nil:
//!   the identity of a container created with these labels and that name
//!   ([`crate::overlay::ipam::identity`]); as an owner, its address follows it to any host.
//!   `overlay.identity_label` is the label that names one explicitly.
//! * `overlay.held()` → `{ { identity, address, pool, host, left_s }, … }`: identities'
//!   addresses held after their containers were removed; `overlay.hold_s()` is how long.

use mlua::{Lua, MultiValue, Result, Table, Value};

use super::errors::raise;
use super::json::to_lua;
use super::Services;
use crate::overlay::{Allocation, Overlay, Want, CLAIM_OPTION, OWNER_LABEL};
use crate::Error;

fn not_configured() -> mlua::Error {
    raise(Error::Helper {
        helper: "overlay".into(),
        reason: "no overlay: start luastrip with --network-plugin NAME (and --overlay-cidr)".into(),
    })
}

fn helper<T>(r: std::result::Result<T, Error>) -> Result<T> {
    r.map_err(raise)
}

fn bad(reason: String) -> mlua::Error {
    raise(Error::Helper {
        helper: "overlay".into(),
        reason,
    })
}

/// A `want` argument: nil, a `WEAVE_CIDR` entry, or `{ ip = … }` / `{ net = … }`.
fn want(o: &Overlay, v: Value) -> Result<Want> {
    let default = o.settings.cidr;
    match v {
        Value::Nil => Ok(Want::Default),
        Value::String(s) => helper(Want::parse(&s.to_str()?, default)),
        Value::Table(t) => {
            let ip: Option<String> = t.get("ip")?;
            let net: Option<String> = t.get("net")?;
            match (ip, net) {
                (Some(ip), None) => helper(Want::parse(&ip, default)).and_then(|w| match w {
                    Want::Ip(..) => Ok(w),
                    _ => Err(bad(format!("ip = {ip:?} is not an address"))),
                }),
                (None, Some(net)) => helper(Want::parse(&format!("net:{net}"), default)),
                (None, None) => Ok(Want::Default),
                (Some(_), Some(_)) => Err(bad("give ip or net, not both".into())),
            }
        }
        other => Err(bad(format!(
            "want: a string or a table, not a {}",
            other.type_name()
        ))),
    }
}

/// The owner behind `container`: itself if it holds addresses (a name a script chose), else
/// the container's full ID (a name or short ID given by the script).
async fn resolve(o: &Overlay, container: &str) -> std::result::Result<String, Error> {
    crate::overlay::check_owner(container)?;
    if !o.ipam.held_by(container).await?.is_empty() {
        return Ok(container.to_string());
    }
    Ok(o.owner_of(container)
        .await?
        .unwrap_or_else(|| container.to_string()))
}

fn allocation(lua: &Lua, a: &Allocation) -> Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::String(lua.create_string(&a.address)?),
        to_lua(lua, a)?,
    ]))
}

/// Install `overlay` as a global.
pub fn register(lua: &Lua, services: &Services) -> Result<()> {
    use super::helper_fn::add;
    let t = lua.create_table()?;
    let h = &services.overlay;
    let n = not_configured;
    t.set("owner_label", OWNER_LABEL)?;
    t.set("claim_option", CLAIM_OPTION)?;
    t.set(
        "identity_label",
        crate::overlay::ipam::identity::IDENTITY_LABEL,
    )?;
    t.set(
        "new_owner",
        lua.create_function(|_, ()| helper(crate::overlay::new_owner()))?,
    )?;
    t.set(
        "identity",
        lua.create_function(|lua, (labels, name): (Value, Option<String>)| {
            let labels = match labels {
                Value::Nil => serde_json::Value::Null,
                v => super::json::to_json(lua, &v, "labels")?,
            };
            let id = helper(crate::overlay::ipam::identity_of(&labels, name.as_deref()))?;
            Ok(id)
        })?,
    )?;
    add(lua, &t, "held", h, n, |lua, o, ()| async move {
        to_lua(&lua, &helper(o.ipam.held().await)?)
    })?;
    add(lua, &t, "hold_s", h, n, |_, o, ()| async move {
        Ok(o.ipam.hold().as_secs())
    })?;
    add(
        lua,
        &t,
        "network",
        h,
        n,
        |lua, o, opts: Option<Table>| async move {
            let (name, cidr, bridge) = match &opts {
                Some(t) => (
                    t.get::<Option<String>>("name")?,
                    t.get::<Option<String>>("cidr")?,
                    t.get::<Option<String>>("bridge")?,
                ),
                None => (None, None, None),
            };
            let cidr = cidr
                .map(|c| helper(crate::overlay::ipam::Cidr::parse(&c)))
                .transpose()?;
            let net = helper(o.network(name.as_deref(), cidr, bridge.as_deref()).await)?;
            to_lua(&lua, &net)
        },
    )?;
    add(
        lua,
        &t,
        "allocate",
        h,
        n,
        |lua, o, (owner, w): (String, Value)| async move {
            let w = want(&o, w)?;
            let a = helper(o.allocate(&owner, w).await)?;
            allocation(&lua, &a)
        },
    )?;
    add(
        lua,
        &t,
        "addresses",
        h,
        n,
        |lua, o, container: String| async move {
            let owner = helper(resolve(&o, &container).await)?;
            to_lua(&lua, &helper(o.addresses(&owner).await)?)
        },
    )?;
    add(
        lua,
        &t,
        "release",
        h,
        n,
        |lua, o, container: String| async move {
            let owner = helper(resolve(&o, &container).await)?;
            to_lua(&lua, &helper(o.release(&owner, "overlay.release").await)?)
        },
    )?;
    add(
        lua,
        &t,
        "attach",
        h,
        n,
        |lua, o, (container, w): (String, Value)| async move {
            let owner = helper(resolve(&o, &container).await)?;
            let w = want(&o, w)?;
            let a = helper(o.allocate(&owner, w).await)?;
            if let Err(e) = o.attach(&container, &a).await {
                // Nothing attached: give back what this call took (not an address held before).
                let _ = o.release_one(&owner, &a.address).await;
                return Err(raise(e));
            }
            allocation(&lua, &a)
        },
    )?;
    add(
        lua,
        &t,
        "detach",
        h,
        n,
        |lua, o, (container, addr): (String, Option<String>)| async move {
            let owner = helper(resolve(&o, &container).await)?;
            let held = helper(o.addresses(&owner).await)?;
            let chosen: Vec<&Allocation> = held
                .iter()
                .filter(|a| addr.as_deref().is_none_or(|x| x == a.address || x == a.ip))
                .collect();
            if chosen.is_empty() {
                return Err(bad(format!(
                    "{container} holds no overlay address{}",
                    addr.map(|a| format!(" {a}")).unwrap_or_default()
                )));
            }
            for a in &chosen {
                helper(o.detach(&container, &a.network).await)?;
                helper(o.release_one(&owner, &a.address).await)?;
            }
            to_lua(&lua, &chosen)
        },
    )?;
    lua.globals().set("overlay", t)
}
