//! The volume helper's hook layer, in the pre phase:
//! * `GET /luastrip/volumes` (and `/luastrip/volumes/NAME`): the volumes on this host, their
//!   owner, size and snapshots, for `curl --unix-socket` and the console; never forwarded;
//! * calls on a container whose volume a push is cutting over wait for the cut-over; once the
//!   volume has moved away, starting the container here again is refused with where it went.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Response, StatusCode};

use super::Volumes;
use crate::body::{full, Body};
use crate::call::{Call, HookFuture, Hooks};
use crate::error::json_message;

pub struct VolumesEndpoint(pub Arc<Volumes>);

const PREFIX: &str = "/luastrip/volumes";

impl Hooks for VolumesEndpoint {
    fn pre<'a>(&'a self, call: &'a mut Call) -> HookFuture<'a, Option<Response<Body>>> {
        Box::pin(async move {
            let path = call.path.as_str();
            if let Some(rest) = path.strip_prefix("/containers/") {
                if self.0.has_moves() {
                    let (container, action) = rest.split_once('/').unwrap_or((rest, ""));
                    if call.head.method == Method::DELETE && action.is_empty() {
                        self.0.container_removed(container);
                    } else {
                        let starts_it = call.head.method == Method::POST
                            && matches!(action, "start" | "restart" | "unpause");
                        self.0.container_call(container, starts_it).await?;
                    }
                }
                return Ok(None);
            }
            let Some(rest) = path.strip_prefix(PREFIX) else {
                return Ok(None);
            };
            let one = match rest {
                "" | "/" => None,
                r if r.starts_with('/') => Some(r[1..].to_string()),
                _ => return Ok(None),
            };
            if call.head.method != Method::GET && call.head.method != Method::HEAD {
                return Ok(Some(json_message(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("luastrip: {PREFIX} is read-only; use GET"),
                )));
            }
            let value = match one {
                None => serde_json::to_value(self.0.list().await?),
                Some(name) => {
                    let name = Volumes::name(&name)?;
                    match self
                        .0
                        .list()
                        .await?
                        .into_iter()
                        .find(|v| v.name == name.as_str())
                    {
                        Some(v) => serde_json::to_value(v),
                        None => {
                            return Ok(Some(json_message(
                                StatusCode::NOT_FOUND,
                                &format!("luastrip: no volume {name} on this host"),
                            )))
                        }
                    }
                }
            }
            .map_err(|e| crate::Error::Internal(format!("volumes as JSON: {e}")))?;
            let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
            body.push(b'\n');
            let mut res = Response::new(full(body));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(Some(res))
        })
    }

    fn post<'a>(&'a self, _: &'a mut Call, _: &'a mut Response<Body>) -> HookFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}
