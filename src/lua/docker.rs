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

use std::time::Duration;

use ::http::{header, HeaderValue, Method, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use mlua::{Lua, Result, Table, Value};

use super::{budget, headers_table, json};
use crate::call::full;
use crate::upstream::Upstream;

/// Install `docker` as a global. Without an upstream (`luastrip check`) calls fail clearly.
pub fn register(lua: &Lua, upstream: Option<Upstream>, body_limit: usize) -> Result<()> {
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
    let method: String = opts
        .get::<Option<String>>("method")?
        .unwrap_or_else(|| "GET".into());
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| err(format!("{method:?} is not a method")))?;
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
            let mut parts = Vec::new();
            for pair in q.pairs::<String, String>() {
                let (k, v) = pair?;
                parts.push(format!(
                    "{}={}",
                    super::encode_component(&k),
                    super::encode_component(&v)
                ));
            }
            if !parts.is_empty() {
                target.push('?');
                target.push_str(&parts.join("&"));
            }
        }
        other => {
            return Err(err(format!(
                "query must be a string or table, not {}",
                other.type_name()
            )))
        }
    }
    let mut builder = Request::builder().method(method).uri(&target);
    let mut json_body = false;
    let body = match opts.get::<Value>("body")? {
        Value::Nil => Bytes::new(),
        Value::String(s) => Bytes::copy_from_slice(&s.as_bytes()),
        v @ Value::Table(_) => {
            json_body = true;
            Bytes::from(json::encode(lua, v)?)
        }
        other => {
            return Err(err(format!(
                "body must be a string or table, not {}",
                other.type_name()
            )))
        }
    };
    if let Some(h) = opts.get::<Option<Table>>("headers")? {
        for pair in h.pairs::<String, String>() {
            let (k, v) = pair?;
            builder = builder.header(k, v);
        }
    }
    let mut req = builder
        .body(full(body.clone()))
        .map_err(|e| err(format!("bad request: {e}")))?;
    let headers = req.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_static("docker"));
    if json_body && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let timeout = Duration::from_secs_f64(
        opts.get::<Option<f64>>("timeout")?
            .unwrap_or(30.0)
            .max(0.001),
    );
    let call = async {
        let res = upstream.send(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, bytes))
    };
    let (parts, bytes) = budget::pause(lua, tokio::time::timeout(timeout, call))
        .await
        .map_err(|_| err(format!("{target} took longer than {timeout:?}")))?
        .map_err(err)?;
    let out = lua.create_table()?;
    out.set("status", parts.status.as_u16())?;
    out.set("headers", headers_table(lua, &parts.headers)?)?;
    out.set("body", lua.create_string(&bytes)?)?;
    super::add_json_methods(lua, &out)?;
    Ok(out)
}
