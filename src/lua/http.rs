//! The `http` namespace: hooks call external HTTP services (policy servers, adapters, webhooks).
//!
//! `http.request{ method, url, headers, body, timeout }` returns `{ status, headers, body,
//! json() }`, like `docker.request`. URLs are `http://host:port/path?query` or, for a service on a
//! Unix socket, `unix:///path/to.sock:/path?query` (the socket path ends at the first `:`). Each
//! call opens its own HTTP/1.1 connection; the wait is async and not charged to the hook's
//! budget; `timeout` (seconds, default 10) bounds connect, send and the whole response.

use ::http::Request;
use hyper_util::rt::TokioIo;
use mlua::{Lua, Result, Table};

use super::exchange;

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
    let what = format!("http.request {url}");
    let err = |m: String| mlua::Error::runtime(format!("{what}: {m}"));
    let (target, path) = parse_url(&url).map_err(err)?;
    let host = match &target {
        Target::Tcp { host, .. } => host.as_str(),
        Target::Unix { .. } => "localhost",
    };
    let req = exchange::build(lua, &opts, &path, host).map_err(err)?;
    exchange::finish(lua, &opts, 10.0, limit, &what, async move {
        match &target {
            Target::Tcp { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                send(TokioIo::new(s), req).await
            }
            Target::Unix { socket } => {
                let s = tokio::net::UnixStream::connect(socket.as_str())
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                send(TokioIo::new(s), req).await
            }
        }
    })
    .await
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
