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

use mlua::{Lua, Result, Table, Value};

use super::{exchange, Services};
use crate::upstream::Upstream;

/// Install `docker` as a global, with this VM's own pool of daemon connections. Without an
/// upstream (`luastrip check`) calls fail clearly.
pub fn register(lua: &Lua, services: &Services) -> Result<()> {
    let upstream = services.upstream.clone().map(Upstream::new);
    let body_limit = services.limits.body;
    let t = lua.create_table()?;
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
