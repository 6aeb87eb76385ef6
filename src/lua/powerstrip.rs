//! The `powerstrip` namespace: `powerstrip.adapter(url, opts)` returns a hook function, so
//! Powerstrip adapters and Lua hooks mix in one chain:
//!
//! ```lua
//! route.pre("POST /containers/create", powerstrip.adapter("http://127.0.0.1:9000/adapter"))
//! route.post("POST /containers/create", powerstrip.adapter("unix:///run/a.sock:/hook", { timeout = 5 }))
//! ```
//!
//! As a pre hook it sends the request (JSON bodies only; non-JSON bodies such as build contexts
//! skip it and stream untouched) and applies the adapter's Method, Request and Body. As a post
//! hook it sends the response and applies Code, ContentType and Body; streaming and hijacked
//! responses skip it. A failing adapter raises an error naming it, which fails the call closed.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Result, Table, Value};

use super::errors::raise;
use super::{budget, message, Services};
use crate::error::Error;
use crate::outbound::Outbound;
use crate::powerstrip::{Adapter, ClientRequest, ServerResponse};
use crate::route::{query, NormalPath};

/// Install `powerstrip` as a global; this VM's adapters share one connection pool.
pub fn register(lua: &Lua, services: &Services) -> Result<()> {
    let body_limit = services.limits.body;
    let client = Outbound::new();
    // Adapter containers are looked up through the daemon (this VM's own pool), and looked up
    // again after a reload.
    services.adapter_addresses.forget(None);
    let containers = services
        .upstream
        .clone()
        .map(|addr| crate::powerstrip::Containers {
            daemon: crate::upstream::Upstream::new(addr),
            overlay_network: services
                .overlay
                .as_ref()
                .map(|o| o.settings.network.clone()),
            known: services.adapter_addresses.clone(),
        });
    let t = lua.create_table()?;
    t.set(
        "adapter",
        lua.create_function(move |lua, (url, opts): (String, Option<Table>)| {
            let timeout = match &opts {
                Some(o) => o.get::<Option<f64>>("timeout")?.unwrap_or(10.0),
                None => 10.0,
            };
            let mut adapter = Adapter::new(
                &url,
                client.clone(),
                Duration::from_secs_f64(timeout.max(0.001)),
                body_limit,
            )
            .map_err(|e| mlua::Error::runtime(format!("powerstrip.adapter: {e}")))?;
            adapter.containers = containers.clone();
            let adapter = Arc::new(adapter);
            lua.create_async_function(move |lua, (req, res): (Table, Option<Table>)| {
                let adapter = adapter.clone();
                async move {
                    // The adapter's own failure, typed: the call fails closed as an adapter error.
                    let failed = |reason: String| {
                        raise(Error::Adapter {
                            adapter: adapter.url.clone(),
                            reason,
                        })
                    };
                    match res {
                        None => {
                            // Stream bodies (build contexts, tar uploads) skip pre-hooks.
                            if message::read_body(&lua, &req).await?.is_none() {
                                return Ok(());
                            }
                            let client = client_request(&req)?;
                            let modified = budget::pause(&lua, adapter.pre(&client))
                                .await
                                .map_err(failed)?;
                            apply_request(&lua, &req, &modified).map_err(|e| failed(e.to_string()))
                        }
                        Some(res) => {
                            if res.get::<bool>("streaming")? {
                                return Ok(());
                            }
                            let client = client_request(&req)?;
                            let server = server_response(&res)?;
                            let modified = budget::pause(&lua, adapter.post(&client, &server))
                                .await
                                .map_err(failed)?;
                            res.set("status", modified.code)?;
                            let headers: Table = res.get("headers")?;
                            headers.set("content-type", modified.content_type)?;
                            res.set("body", lua.create_string(&modified.body)?)
                        }
                    }
                }
            })
        })?,
    )?;
    lua.globals().set("powerstrip", t)
}

/// `req` as Powerstrip's ClientRequest: the path with the client's version prefix and query.
fn client_request(req: &Table) -> Result<ClientRequest> {
    let method: String = req.get("method")?;
    let path: String = req.get("path")?;
    let version: Option<String> = req.get("version")?;
    let mut request = match version {
        Some(v) => format!("/v{v}{path}"),
        None => path,
    };
    let query = message::encode_query(&req.get::<Table>("query")?)?;
    if !query.is_empty() {
        request.push('?');
        request.push_str(&query);
    }
    let body = req
        .get::<Option<mlua::LuaString>>("body")?
        .map(|b| String::from_utf8_lossy(&b.as_bytes()).into_owned())
        .filter(|b| !b.is_empty());
    Ok(ClientRequest {
        method,
        request,
        body,
    })
}

fn server_response(res: &Table) -> Result<ServerResponse> {
    let headers: Table = res.get("headers")?;
    Ok(ServerResponse {
        content_type: headers
            .get::<Option<String>>("content-type")?
            .unwrap_or_default(),
        body: res
            .get::<Option<mlua::LuaString>>("body")?
            .map(|b| String::from_utf8_lossy(&b.as_bytes()).into_owned())
            .unwrap_or_default(),
        code: res.get("status")?,
    })
}

/// Apply a ModifiedClientRequest: method, path (with version) and query, body.
fn apply_request(lua: &Lua, req: &Table, m: &ClientRequest) -> Result<()> {
    req.set("method", m.method.to_ascii_uppercase())?;
    let (path, query) = m.request.split_once('?').unwrap_or((&m.request, ""));
    query::validate(query).map_err(mlua::Error::runtime)?;
    let np = NormalPath::parse(path).map_err(mlua::Error::runtime)?;
    req.set("path", np.as_str())?;
    req.set("version", np.version())?;
    let q = lua.create_table()?;
    for (k, v) in query::pairs(query) {
        if q.raw_get::<Value>(k.as_str())?.is_nil() {
            q.set(k, v)?;
        }
    }
    req.set("query", q)?;
    match &m.body {
        Some(b) => req.set("body", lua.create_string(b)?)?,
        None => req.set("body", Value::Nil)?,
    }
    Ok(())
}
