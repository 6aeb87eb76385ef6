//! Docker's plugin protocol, served by luastrip: calls that dockerd makes itself (restart-policy
//! restarts, restarts at daemon boot, swarm tasks) never pass through a socket proxy, so each
//! helper also has a plugin face that dockerd calls directly.
//!
//! One server per plugin name, on `DIR/NAME.sock` (`/run/docker/plugins` by default, where dockerd
//! discovers plugins). It answers `Plugin.Activate` with the interfaces of the drivers it holds
//! and hands every `/Driver.Method` call to the driver that implements it; anything else is a
//! 404. Bodies are JSON (`application/vnd.docker.plugins.v1.2+json`), read up to 1 MiB.
//!
//! Drivers: [`volume::VolumeDriver`] (`VolumeDriver.*`), [`network::NetworkDriver`]
//! (`NetworkDriver.*`, libnetwork's remote driver) and [`network::IpamDriver`] (`IpamDriver.*`,
//! libnetwork's remote IPAM). Drivers given the same plugin name share one
//! socket.

pub mod network;
pub mod volume;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::debug;

/// The content type of Docker's plugin protocol.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Largest request body a plugin call may send.
const BODY_CAP: usize = 1 << 20;

pub type DriverFuture<'a> = Pin<Box<dyn Future<Output = Value> + Send + 'a>>;

/// One plugin interface (`VolumeDriver`, `NetworkDriver`, `IpamDriver`).
pub trait Driver: Send + Sync + 'static {
    /// The interface name, as `Plugin.Activate` lists it.
    fn implements(&self) -> &'static str;

    /// Answer `/<implements>.<method>` with `body`; `None` if the method is unknown. Errors are
    /// the protocol's own (`{"Err": "..."}` with a 200).
    fn call<'a>(&'a self, method: &'a str, body: Value) -> Option<DriverFuture<'a>>;
}

/// Make dockerd load the volume plugin `name`, whose socket is up, now and after every restart of
/// dockerd, until `stop`. dockerd discovers a plugin of the plugin directory only when something
/// asks for it, and until then a swarm node does not report it, so swarm schedules no task that
/// mounts its volumes there (moby#23619: a service waited for someone to run `docker volume
/// ls` on a fresh node). Listing volumes loads every volume plugin whose socket is in the
/// directory, as `docker volume ls` does. The daemon's events stream says when it restarted.
pub async fn announce(
    upstream: crate::upstream::Upstream,
    name: String,
    mut stop: watch::Receiver<bool>,
) {
    let announcer = Arc::new(Announcer {
        upstream: upstream.clone(),
        name,
    });
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    crate::events::follow(upstream, announcer, stopped).await
}

/// The events follower of [`announce`].
struct Announcer {
    upstream: crate::upstream::Upstream,
    name: String,
}

impl crate::events::Follower for Announcer {
    fn name(&self) -> &'static str {
        "volume plugin announcer"
    }

    fn filters(&self) -> Option<String> {
        Some(r#"{"type":["daemon"]}"#.into())
    }

    fn opened(&self) -> crate::events::FollowFuture<'_> {
        Box::pin(async {
            match self.upstream.get_json("/volumes").await {
                Ok(_) => {
                    tracing::info!(plugin = %self.name, "dockerd has loaded the volume plugin")
                }
                Err(e) => tracing::warn!(plugin = %self.name, error = %e,
                    "cannot make dockerd load the volume plugin (it loads it at first use)"),
            }
        })
    }

    fn event<'a>(&'a self, _: &'a Value) -> crate::events::FollowFuture<'a> {
        Box::pin(async {})
    }
}

/// Serve `drivers` on `listener` until `stop` turns true.
pub async fn serve(
    listener: UnixListener,
    drivers: Vec<Arc<dyn Driver>>,
    stop: watch::Receiver<bool>,
) {
    let drivers = Arc::new(drivers);
    let handler = move |req, ()| {
        let drivers = drivers.clone();
        async move { handle(&drivers, req).await }
    };
    crate::socket::serve_http("plugin", listener, handler, stop).await
}

/// A volume or network driver's error answer (`{"Err": …}`, with a 200, as the protocol wants).
pub(crate) fn err(e: impl std::fmt::Display) -> Value {
    json!({ "Err": e.to_string() })
}

/// An IPAM driver's error answer: libnetwork reads IPAM answers' `Error`, not `Err`.
pub(crate) fn ipam_err(e: impl std::fmt::Display) -> Value {
    json!({ "Error": e.to_string() })
}

/// What to tell dockerd of a helper's error: its reason, without luastrip's prefix.
pub(crate) fn reason(e: crate::Error) -> String {
    match e {
        crate::Error::Helper { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(v.to_string())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}

async fn handle(drivers: &[Arc<dyn Driver>], req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "Err": format!("{} /{path}: plugin calls are POST", req.method()) }),
        );
    }
    let body = match Limited::new(req.into_body(), BODY_CAP).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &json!({ "Err": format!("/{path}: cannot read the body: {e}") }),
            )
        }
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    &json!({ "Err": format!("/{path}: the body is not JSON: {e}") }),
                )
            }
        }
    };
    debug!(call = %path, "plugin call");
    if path == "Plugin.Activate" {
        let implements: Vec<&str> = drivers.iter().map(|d| d.implements()).collect();
        return reply(StatusCode::OK, &json!({ "Implements": implements }));
    }
    if let Some((interface, method)) = path.split_once('.') {
        if let Some(d) = drivers.iter().find(|d| d.implements() == interface) {
            if let Some(answer) = d.call(method, body) {
                let started = std::time::Instant::now();
                let answer = answer.await;
                debug!(call = %path, duration_us = started.elapsed().as_micros() as u64,
                    err = answer["Err"].as_str().unwrap_or_default(), "plugin call answered");
                return reply(StatusCode::OK, &answer);
            }
        }
    }
    reply(
        StatusCode::NOT_FOUND,
        &json!({ "Err": format!("/{path}: no such plugin method") }),
    )
}
