//! The `http` namespace: hooks call external HTTP services (policy servers, adapters, webhooks).
//!
//! `http.request{ method, url, headers, body, timeout }` returns `{ status, headers, body,
//! json() }`, like `docker.request`. URLs are `http://host:port/path?query` or, for a service on a
//! Unix socket, `unix:///path/to.sock:/path?query` (the socket path ends at the first `:`). Each
//! call opens its own HTTP/1.1 connection; the wait is async and not charged to the hook's
//! budget; `timeout` (seconds, default 10) bounds connect, send and the whole response.

use std::time::Duration;

use ::http::{header, HeaderValue, Method, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use mlua::{Lua, Result, Table, Value};

use super::{budget, headers_table, json};
use crate::call::full;

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Tcp { addr: String, host: String },
    Unix { socket: String },
}

/// Split a URL into where to connect and the request target (`/path?query`).
fn parse_url(url: &str) -> std::result::Result<(Target, String), String> {
    if let Some(rest) = url.strip_prefix("unix://") {
        let (socket, path) = match rest.find(':') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, "/"),
        };
        if !socket.starts_with('/') || !path.starts_with('/') {
            return Err(format!("{url:?}: use unix:///path/to.sock:/request/path"));
        }
        return Ok((
            Target::Unix {
                socket: socket.into(),
            },
            path.into(),
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// and unix:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((
        Target::Tcp {
            addr,
            host: authority.into(),
        },
        path.into(),
    ))
}

/// Install `http` as a global.
pub fn register(lua: &Lua, body_limit: usize) -> Result<()> {
    let t = lua.create_table()?;
    t.set(
        "request",
        lua.create_async_function(move |lua, opts: Table| async move {
            request(&lua, body_limit, opts).await
        })?,
    )?;
    lua.globals().set("http", t)
}

async fn request(lua: &Lua, limit: usize, opts: Table) -> Result<Table> {
    let url: String = opts
        .get::<Option<String>>("url")?
        .ok_or_else(|| mlua::Error::runtime("http.request: url is required"))?;
    let err = |m: String| mlua::Error::runtime(format!("http.request {url}: {m}"));
    let (target, path) = parse_url(&url).map_err(err)?;
    let method: String = opts
        .get::<Option<String>>("method")?
        .unwrap_or_else(|| "GET".into());
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| err(format!("{method:?} is not a method")))?;
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
    let mut builder = Request::builder().method(method).uri(&path);
    if let Some(h) = opts.get::<Option<Table>>("headers")? {
        for pair in h.pairs::<String, String>() {
            let (k, v) = pair?;
            builder = builder.header(k, v);
        }
    }
    let mut req = builder
        .body(full(body.clone()))
        .map_err(|e| err(e.to_string()))?;
    let headers = req.headers_mut();
    if !headers.contains_key(header::HOST) {
        let host = match &target {
            Target::Tcp { host, .. } => host.as_str(),
            Target::Unix { .. } => "localhost",
        };
        headers.insert(
            header::HOST,
            HeaderValue::from_str(host).map_err(|e| err(e.to_string()))?,
        );
    }
    if json_body && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let timeout = Duration::from_secs_f64(
        opts.get::<Option<f64>>("timeout")?
            .unwrap_or(10.0)
            .max(0.001),
    );
    let exchange = async {
        let res = match &target {
            Target::Tcp { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                send(TokioIo::new(s), req).await?
            }
            Target::Unix { socket } => {
                let s = tokio::net::UnixStream::connect(socket.as_str())
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                send(TokioIo::new(s), req).await?
            }
        };
        let (parts, body) = res.into_parts();
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
    super::add_json_methods(lua, &out)?;
    Ok(out)
}

/// One request on a fresh HTTP/1.1 connection.
async fn send<I>(
    io: I,
    req: Request<crate::call::Body>,
) -> std::result::Result<::http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hook?x=1").unwrap(),
            (
                Target::Tcp {
                    addr: "127.0.0.1:8080".into(),
                    host: "127.0.0.1:8080".into()
                },
                "/hook?x=1".into()
            )
        );
        assert_eq!(
            parse_url("http://localhost").unwrap().0,
            Target::Tcp {
                addr: "localhost:80".into(),
                host: "localhost".into()
            }
        );
        assert_eq!(
            parse_url("unix:///run/a.sock:/v1/hook").unwrap(),
            (
                Target::Unix {
                    socket: "/run/a.sock".into()
                },
                "/v1/hook".into()
            )
        );
        assert_eq!(parse_url("unix:///run/a.sock").unwrap().1, "/");
        assert!(parse_url("https://example.com/").is_err());
        assert!(parse_url("unix://rel.sock:/x").is_err());
    }
}
