//! What `docker.*` and `http.*` share: an options table (`method`, `headers`, `body`,
//! `timeout`) becomes a request, and the answer becomes a result table `{ status, headers, body,
//! json() }`. The wait is bounded by `timeout` and not charged to the hook's time budget.

use std::future::Future;
use std::time::Duration;

use ::http::{header, HeaderValue, Method, Request, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use mlua::{Lua, Table, Value};

use super::message::{headers_table, set_object_meta};
use super::{budget, json};
use crate::body::{full, Body};

/// Build the request for `target` (`/path?query`) from `opts`. A table `body` is sent as JSON.
pub fn build(lua: &Lua, opts: &Table, target: &str, host: &str) -> Result<Request<Body>, String> {
    let method: String = opts
        .get::<Option<String>>("method")
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| "GET".into());
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{method:?} is not a method"))?;
    let mut json_body = false;
    let body = match opts.get::<Value>("body").map_err(|e| e.to_string())? {
        Value::Nil => Bytes::new(),
        Value::String(s) => Bytes::copy_from_slice(&s.as_bytes()),
        v @ Value::Table(_) => {
            json_body = true;
            Bytes::from(json::encode(lua, v).map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "body must be a string or table, not {}",
                other.type_name()
            ))
        }
    };
    let mut builder = Request::builder().method(method).uri(target);
    if let Some(h) = opts
        .get::<Option<Table>>("headers")
        .map_err(|e| e.to_string())?
    {
        for pair in h.pairs::<String, String>() {
            let (k, v) = pair.map_err(|e| e.to_string())?;
            builder = builder.header(k, v);
        }
    }
    let len = body.len();
    let mut req = builder
        .body(full(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let headers = req.headers_mut();
    if !headers.contains_key(header::HOST) {
        headers.insert(
            header::HOST,
            HeaderValue::from_str(host).map_err(|e| e.to_string())?,
        );
    }
    if json_body && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(req)
}

/// Await `send(timeout)`, read the whole body (up to `limit`), all within `opts.timeout`
/// seconds (`default_s` if unset), and return the result table. Errors are prefixed with `what`.
pub async fn finish<S, F>(
    lua: &Lua,
    opts: &Table,
    default_s: f64,
    limit: usize,
    what: &str,
    send: S,
) -> mlua::Result<Table>
where
    S: FnOnce(Duration) -> F,
    F: Future<Output = Result<Response<Incoming>, String>>,
{
    let err = |m: String| mlua::Error::runtime(format!("{what}: {m}"));
    let timeout = Duration::from_secs_f64(
        opts.get::<Option<f64>>("timeout")?
            .unwrap_or(default_s)
            .max(0.001),
    );
    let exchange = async {
        let (parts, body) = send(timeout).await?.into_parts();
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, bytes))
    };
    let (parts, bytes) = budget::pause(lua, tokio::time::timeout(timeout, exchange))
        .await
        .map_err(|_| err(format!("no complete answer within {timeout:?}")))?
        .map_err(err)?;
    let out = lua.create_table()?;
    out.set("status", parts.status.as_u16())?;
    out.set("headers", headers_table(lua, &parts.headers)?)?;
    out.set("body", lua.create_string(&bytes)?)?;
    set_object_meta(lua, &out)?;
    Ok(out)
}
