//! The `http` namespace: hooks call external HTTP services (policy servers, adapters, webhooks).
//!
//! `http.request{ method, url, headers, body, timeout }` returns `{ status, headers, body,
//! json() }`, like `docker.request`. URLs are `http://host:port/path?query` or, for a service on a
//! Unix socket, `unix:///path/to.sock:/path?query` (the socket path ends at the first `:`). Each
//! VM keeps idle connections per service ([`Outbound`]); the wait is async and not charged to the
//! hook's budget; `timeout` (seconds, default 10) bounds connect, send and the whole response.

use mlua::{Lua, Result, Table};

use super::{exchange, Services};
use crate::outbound::{Outbound, Url};

/// Install `http` as a global, with this VM's own connection pools.
pub fn register(lua: &Lua, services: &Services) -> Result<()> {
    let body_limit = services.limits.body;
    let client = Outbound::new();
    let t = lua.create_table()?;
    t.set(
        "request",
        lua.create_async_function(move |lua, opts: Table| {
            let client = client.clone();
            async move { request(&lua, &client, body_limit, opts).await }
        })?,
    )?;
    lua.globals().set("http", t)
}

async fn request(lua: &Lua, client: &Outbound, limit: usize, opts: Table) -> Result<Table> {
    let url: String = opts
        .get::<Option<String>>("url")?
        .ok_or_else(|| mlua::Error::runtime("http.request: url is required"))?;
    let what = format!("http.request {url}");
    let err = |m: String| mlua::Error::runtime(format!("{what}: {m}"));
    let url = Url::parse(&url).map_err(err)?;
    let req = exchange::build(lua, &opts, &url.path, &url.host).map_err(err)?;
    exchange::finish(lua, &opts, 10.0, limit, &what, |timeout| async move {
        client.send(&url, req, timeout).await
    })
    .await
}
