//! The `zfs` namespace: scripts drive the volume helper ([`crate::volumes::Volumes`]), which
//! lives outside the VMs. Every function is async (the `zfs` commands run while the worker serves
//! other calls) and the wait is not charged to the hook's budget. Without `--volume-backend`
//! each function fails with an error that says how to configure one.
//!
//! `zfs.volume(name)` → `{ name, dataset, mountpoint, created, new, owner, owned, read_only,
//! size, snapshots }`, created if missing; `zfs.volumes()`; `zfs.snapshot(name, tag?)`;
//! `zfs.snapshots(name)`; `zfs.rollback(name, tag, { destroy_newer = false })`;
//! `zfs.destroy(name)`; `zfs.push(name, peer)` → `{ step1_bytes, step1_ms, step2_bytes,
//! step2_ms, base, snapshot }`; `zfs.pull(name, { timeout = 300 })` (ask the owner to push here;
//! `nil` when it is already here); `zfs.replicate(name, host, { every = 30 })` (send it to a
//! standby on a schedule; `host` nil stops); `zfs.adopt(name)` (take a volume whose owner was
//! forgotten, with this host's copy).

use std::future::Future;
use std::sync::Arc;

use mlua::{Lua, Result, Table, Value};

use super::errors::raise;
use super::json::to_lua;
use super::Services;
use crate::volumes::Volumes;
use crate::Error;

fn not_configured() -> mlua::Error {
    raise(Error::Helper {
        helper: "zfs".into(),
        reason: "no volume backend: start luastrip with --volume-backend zfs --zfs-pool POOL"
            .into(),
    })
}

/// Register `name` as an async function on the volume helper, outside the budget.
fn add<A, F, Fut>(
    lua: &Lua,
    t: &Table,
    name: &str,
    volumes: &Option<Arc<Volumes>>,
    f: F,
) -> Result<()>
where
    A: mlua::FromLuaMulti + Send + 'static,
    F: Fn(Lua, Arc<Volumes>, A) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Value>> + Send + 'static,
{
    super::helper_fn::add(lua, t, name, volumes, not_configured, f)
}

fn helper<T>(r: std::result::Result<T, Error>) -> Result<T> {
    r.map_err(raise)
}

/// Install `zfs` as a global.
pub fn register(lua: &Lua, services: &Services) -> Result<()> {
    let t = lua.create_table()?;
    let v = &services.volumes;
    add(lua, &t, "volume", v, |lua, vols, name: String| async move {
        let name = helper(Volumes::name(&name))?;
        to_lua(&lua, &helper(vols.volume(&name).await)?)
    })?;
    add(lua, &t, "volumes", v, |lua, vols, (): ()| async move {
        to_lua(&lua, &helper(vols.list().await)?)
    })?;
    add(
        lua,
        &t,
        "snapshot",
        v,
        |lua, vols, (name, tag): (String, Option<String>)| async move {
            let name = helper(Volumes::name(&name))?;
            let tag = tag.map(|t| helper(Volumes::tag(&t))).transpose()?;
            to_lua(&lua, &helper(vols.snapshot(&name, tag).await)?)
        },
    )?;
    add(
        lua,
        &t,
        "snapshots",
        v,
        |lua, vols, name: String| async move {
            let name = helper(Volumes::name(&name))?;
            to_lua(&lua, &helper(vols.snapshots(&name).await)?)
        },
    )?;
    add(
        lua,
        &t,
        "rollback",
        v,
        |_, vols, (name, tag, opts): (String, String, Option<Table>)| async move {
            let name = helper(Volumes::name(&name))?;
            let tag = helper(Volumes::tag(&tag))?;
            let destroy_newer = match &opts {
                Some(o) => o.get::<Option<bool>>("destroy_newer")?.unwrap_or(false),
                None => false,
            };
            helper(vols.rollback(&name, &tag, destroy_newer).await)?;
            Ok(Value::Boolean(true))
        },
    )?;
    add(
        lua,
        &t,
        "push",
        v,
        |lua, vols, (name, peer, opts): (String, String, Option<Table>)| async move {
            let name = helper(Volumes::name(&name))?;
            let mut push = crate::volumes::PushOptions::default();
            if let Some(o) = &opts {
                push.stop = o.get::<Option<bool>>("stop")?.unwrap_or(false);
                if let Some(t) = o.get::<Option<u32>>("stop_timeout")? {
                    push.stop_timeout = t;
                }
            }
            let opts = push;
            let report = helper(vols.push(&name, &peer, opts).await)?;
            to_lua(&lua, &report)
        },
    )?;
    add(
        lua,
        &t,
        "pull",
        v,
        |lua, vols, (name, opts): (String, Option<Table>)| async move {
            let name = helper(Volumes::name(&name))?;
            let secs = match &opts {
                Some(o) => o.get::<Option<f64>>("timeout")?.unwrap_or(300.0),
                None => 300.0,
            };
            let timeout = std::time::Duration::try_from_secs_f64(secs.max(0.0))
                .map_err(|e| mlua::Error::runtime(format!("zfs.pull: timeout: {e}")))?;
            match helper(vols.pull(&name, timeout).await)? {
                Some(report) => to_lua(&lua, &report),
                None => Ok(Value::Nil),
            }
        },
    )?;
    add(
        lua,
        &t,
        "replicate",
        v,
        |lua, vols, (name, host, opts): (String, Option<String>, Option<Table>)| async move {
            let name = helper(Volumes::name(&name))?;
            let every = match &opts {
                Some(o) => o.get::<Option<f64>>("every")?.unwrap_or(30.0),
                None => 30.0,
            };
            let every = std::time::Duration::try_from_secs_f64(every.max(0.0))
                .map_err(|e| mlua::Error::runtime(format!("zfs.replicate: every: {e}")))?;
            match helper(vols.replicate(&name, host.as_deref(), every).await)? {
                Some(round) => to_lua(&lua, &round),
                None => Ok(Value::Nil),
            }
        },
    )?;
    add(lua, &t, "adopt", v, |lua, vols, name: String| async move {
        let name = helper(Volumes::name(&name))?;
        helper(vols.adopt(&name).await)?;
        to_lua(&lua, &helper(vols.volume(&name).await)?)
    })?;
    add(lua, &t, "destroy", v, |_, vols, name: String| async move {
        let name = helper(Volumes::name(&name))?;
        helper(vols.destroy(&name).await)?;
        Ok(Value::Boolean(true))
    })?;
    lua.globals().set("zfs", t)
}
