//! The `docker` namespace: hooks call the daemon themselves, e.g. to inspect an image before a
//! create. Calls go straight to the upstream daemon (not back through the hooks), are async — the
//! hook's coroutine waits, the worker thread serves other calls meanwhile — and the wait is not
//! charged to the hook's time budget.
//!
//! `docker.request{ method, path, query, headers, body, timeout }` returns
//! `{ status, headers, body, json() }`; `docker.get(path)` and `docker.post(path, body)` are
//! shorthands. A table `body` is sent as JSON. The whole response body is read (up to the body
//! limit), so do not use it for streams such as `/events`; `timeout` (seconds, default 30) bounds
//! every call.
//!
//! `docker.image_ref(name)` reads an image reference as Docker does: `{ registry, repository,
//! tag, digest, name, familiar, canonical }` (`busybox` is `docker.io/library/busybox`, familiar
//! `busybox`, canonical `docker.io/library/busybox:latest`), or nil and Docker's reason.
//!
//! `docker.on_event(filter, fn)` is for the daemon's events: while a script has such a handler, a
//! background task follows `/events` ([`super::on_event`]) and calls `fn(event)` once per
//! matching event, in order, in one VM (the control socket's), under the hook budget. `filter`
//! is nil (every event) or a table of dockerd's filters, each a string or a list:
//! `{ type = "container", event = { "start", "die" }, label = "team=db" }`.

use std::collections::BTreeMap;

use mlua::{Function, Lua, Result, Table, Value};

use super::{exchange, Services};
use crate::upstream::Upstream;

/// One `docker.on_event` handler.
pub struct EventHandler {
    pub filter: crate::events::Filter,
    pub func: Function,
    /// `file:line` of the `docker.on_event` call, for errors.
    pub location: String,
}

/// Event handlers registered while the scripts load, in load order (kept in the VM's app data).
#[derive(Default)]
pub struct EventRegistry(pub Vec<EventHandler>);

/// A filter table: each key a string or a list of strings.
fn event_filter(v: Value) -> Result<crate::events::Filter> {
    let t = match v {
        Value::Nil => return Ok(crate::events::Filter::default()),
        Value::Table(t) => t,
        other => {
            return Err(mlua::Error::runtime(format!(
                "docker.on_event: the filter is a table or nil, not a {}",
                other.type_name()
            )))
        }
    };
    let mut by = BTreeMap::new();
    for pair in t.pairs::<String, Value>() {
        let (k, v) = pair?;
        let values = match v {
            Value::String(s) => vec![s.to_str()?.to_string()],
            Value::Table(list) => list.sequence_values::<String>().collect::<Result<_>>()?,
            other => {
                return Err(mlua::Error::runtime(format!(
                    "docker.on_event: filter {k:?} is a string or a list of strings, not a {}",
                    other.type_name()
                )))
            }
        };
        by.insert(k, values);
    }
    crate::events::Filter::new(by)
        .map_err(|e| mlua::Error::runtime(format!("docker.on_event: {e}")))
}

/// Install `docker` as a global, with this VM's own pool of daemon connections. Without an
/// upstream (`luastrip check`) calls fail clearly.
pub fn register(lua: &Lua, services: &Services) -> Result<()> {
    let upstream = services.upstream.clone().map(Upstream::new);
    let body_limit = services.limits.body;
    let t = lua.create_table()?;
    crate::image_ref::warm();
    t.set(
        "image_ref",
        lua.create_function(|lua, name: String| match crate::image_ref::parse(&name) {
            Ok(r) => {
                let out = lua.create_table()?;
                out.set("registry", r.registry.as_str())?;
                out.set("repository", r.repository.as_str())?;
                out.set("tag", r.tag.as_deref())?;
                out.set("digest", r.digest.as_deref())?;
                out.set("name", r.name())?;
                out.set("familiar", r.familiar_name())?;
                out.set("canonical", r.canonical())?;
                Ok((Value::Table(out), None))
            }
            Err(why) => Ok((Value::Nil, Some(why))),
        })?,
    )?;
    let up = upstream.clone();
    t.set(
        "request",
        lua.create_async_function(move |lua, opts: Table| {
            let up = up.clone();
            async move { request(&lua, up, body_limit, opts).await }
        })?,
    )?;
    let up = upstream.clone();
    t.set(
        "get",
        lua.create_async_function(move |lua, path: String| {
            let up = up.clone();
            async move {
                let opts = lua.create_table()?;
                opts.set("path", path)?;
                request(&lua, up, body_limit, opts).await
            }
        })?,
    )?;
    let up = upstream;
    t.set(
        "post",
        lua.create_async_function(move |lua, (path, body): (String, Value)| {
            let up = up.clone();
            async move {
                let opts = lua.create_table()?;
                opts.set("method", "POST")?;
                opts.set("path", path)?;
                opts.set("body", body)?;
                request(&lua, up, body_limit, opts).await
            }
        })?,
    )?;
    t.set(
        "on_event",
        lua.create_function(|lua, (filter, func): (Value, Function)| {
            let filter = event_filter(filter)?;
            let location = super::errors::current_location(lua).unwrap_or_default();
            let mut reg = lua.app_data_mut::<EventRegistry>().ok_or_else(|| {
                mlua::Error::runtime(
                    "docker.on_event: handlers can only be added while scripts load",
                )
            })?;
            reg.0.push(EventHandler {
                filter,
                func,
                location,
            });
            Ok(())
        })?,
    )?;
    lua.globals().set("docker", t)
}

async fn request(
    lua: &Lua,
    upstream: Option<Upstream>,
    limit: usize,
    opts: Table,
) -> Result<Table> {
    let err = |m: String| mlua::Error::runtime(format!("docker.request: {m}"));
    let upstream = upstream.ok_or_else(|| err("no daemon here (luastrip check)".into()))?;
    let path: String = opts
        .get::<Option<String>>("path")?
        .ok_or_else(|| err("path is required".into()))?;
    if !path.starts_with('/') {
        return Err(err(format!("path {path:?} must start with '/'")));
    }
    let mut target = path;
    match opts.get::<Value>("query")? {
        Value::Nil => {}
        Value::String(s) => {
            target.push('?');
            target.push_str(&s.to_str()?);
        }
        Value::Table(q) => {
            let q = super::message::encode_query(&q)?;
            if !q.is_empty() {
                target.push('?');
                target.push_str(&q);
            }
        }
        other => {
            return Err(err(format!(
                "query must be a string or table, not {}",
                other.type_name()
            )))
        }
    }
    let req = exchange::build(lua, &opts, &target, "docker").map_err(err)?;
    let what = format!("docker.request {target}");
    exchange::finish(lua, &opts, 30.0, limit, &what, |_| async move {
        upstream.send(req).await.map_err(|e| e.to_string())
    })
    .await
}
