//! The engine as a hook layer ([`Hooks`]): which hooks match a call, running them in load order
//! under their budgets, and failing the call closed when one fails.
//!
//! In the pre phase the call's `req` table is built (its body moves in, read only if a hook asks),
//! the matching `route.pre` / `route.endpoint` hooks run, and the edits are applied back to the
//! call. The table and the VM stay with the call (`CallState`, in [`Call::state`]) for the post
//! phase, so that `req.ctx` reaches post hooks. When a hook sends the call to another route, the
//! core runs the pre phase again on the new route; `req.ctx` carries over.

use std::sync::Arc;
use std::time::Instant;

use ::http::{Response, StatusCode};
use bytes::Bytes;
use mlua::{Table, Value};

use super::engine::{Engine, Vm};
use super::route::Phase;
use super::{budget, message};
use crate::body::{full, read_to_cap, Body, ReadError};
use crate::call::{Call, HookFuture, Hooks};
use crate::error::Error;
use crate::journal::HookRun;
use crate::route::kind::RequestBody;

/// What the engine keeps on a call between its pre and post phases.
#[derive(Clone)]
struct CallState {
    vm: Arc<Vm>,
    req: Table,
}

impl Hooks for Engine {
    fn pre<'a>(&'a self, call: &'a mut Call) -> HookFuture<'a, Option<Response<Body>>> {
        Box::pin(async move {
            let earlier = call.state.remove::<CallState>();
            let vm = match &earlier {
                Some(s) => s.vm.clone(),
                None => self.vm(call.worker),
            };
            let matched = vm.matching(call, |p| p != Phase::Post);
            let wants_post = !vm.matching(call, |p| p == Phase::Post).is_empty();
            if matched.is_empty() && !wants_post {
                return Ok(None);
            }
            let limits = self.limits();
            let lua = &vm.lua;
            let le = |e: mlua::Error| vm.error(&e, "", limits);
            let req = message::new_req(lua, call, limits.body).map_err(le)?;
            if let Some(earlier) = earlier {
                // A second pass after a rewrite: the call's context goes on.
                let ctx: Value = earlier.req.raw_get("ctx").map_err(le)?;
                req.raw_set("ctx", ctx).map_err(le)?;
            }
            if wants_post && call.request_body_kind() == RequestBody::Json {
                // Post hooks run after the body has gone to the daemon: read it now for them.
                message::read_body(lua, &req).await.map_err(le)?;
            }
            let mut answer = None;
            for (hook, params) in &matched {
                message::set_params(lua, &req, params).map_err(le)?;
                let t = Instant::now();
                let out =
                    budget::call_async::<Value>(lua, &hook.func, limits.hook_time, &req).await;
                let run = |error: Option<String>| HookRun {
                    phase: hook.phase.as_str().to_string(),
                    route: hook.matcher.to_string(),
                    location: hook.location.clone(),
                    duration_us: t.elapsed().as_micros() as u64,
                    error,
                };
                let out = match out {
                    Ok(v) => v,
                    Err(e) => {
                        let err = vm.error(&e, &hook.location, limits);
                        call.hooks.push(run(Some(err.to_string())));
                        return Err(err);
                    }
                };
                call.hooks.push(run(None));
                match out {
                    Value::Nil if hook.phase == Phase::Endpoint => {
                        return Err(Error::Script {
                            location: vm.shown(&hook.location),
                            reason: "the endpoint returned no response table".into(),
                        })
                    }
                    Value::Nil => {}
                    v => {
                        answer = Some(message::response_from_lua(lua, v).map_err(|e| {
                            Error::Script {
                                location: vm.shown(&hook.location),
                                reason: e,
                            }
                        })?);
                        break;
                    }
                }
            }
            message::apply_req(lua, call, &req).map_err(le)?;
            call.state.insert(CallState {
                vm: vm.clone(),
                req,
            });
            Ok(answer)
        })
    }

    fn post<'a>(&'a self, call: &'a mut Call, res: &'a mut Response<Body>) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let state = call.state.get::<CallState>().cloned();
            let vm = match &state {
                Some(s) => s.vm.clone(),
                None => self.vm(call.worker),
            };
            let matched = vm.matching(call, |p| p == Phase::Post);
            if matched.is_empty() {
                return Ok(());
            }
            let limits = self.limits();
            let lua = &vm.lua;
            let le = |e: mlua::Error| vm.error(&e, "", limits);
            let streaming = call.response_is_stream(res);
            let body = if streaming {
                None
            } else {
                let bytes = read_response(call, res, limits.body).await?;
                *res.body_mut() = full(bytes.clone());
                Some(bytes)
            };
            let req = match state {
                Some(s) => s.req,
                None => message::new_req(lua, call, limits.body).map_err(le)?,
            };
            let res_t = message::new_res(lua, res, body.as_ref(), streaming).map_err(le)?;
            for (hook, params) in &matched {
                message::set_params(lua, &req, params).map_err(le)?;
                let t = Instant::now();
                let out =
                    budget::call_async::<()>(lua, &hook.func, limits.hook_time, (&req, &res_t))
                        .await;
                let error = out.err().map(|e| vm.error(&e, &hook.location, limits));
                call.hooks.push(HookRun {
                    phase: "post".into(),
                    route: hook.matcher.to_string(),
                    location: hook.location.clone(),
                    duration_us: t.elapsed().as_micros() as u64,
                    error: error.as_ref().map(|e| e.to_string()),
                });
                if let Some(e) = error {
                    return Err(e);
                }
            }
            call.buffered_response =
                message::apply_res(res, &res_t, body, streaming).map_err(le)?;
            Ok(())
        })
    }
}

/// Read a whole (non-stream) response for post hooks, however the daemon framed it, up to the
/// body limit; beyond it the call fails with a 502 naming the limit.
async fn read_response(
    call: &mut Call,
    res: &mut Response<Body>,
    cap: usize,
) -> Result<Bytes, Error> {
    let body = std::mem::replace(res.body_mut(), full(Bytes::new()));
    match read_to_cap(body, cap).await {
        Ok(bytes) => {
            call.note_daemon_body(&bytes);
            Ok(bytes)
        }
        Err(ReadError::TooLarge) => Err(Error::client(
            StatusCode::BAD_GATEWAY,
            format!(
                "the daemon's answer to {} {} is larger than the {} MiB a post hook may read \
                 (--body-limit-mb)",
                call.head.method,
                call.path,
                cap >> 20
            ),
        )),
        Err(ReadError::Broken(e)) => Err(Error::Daemon {
            upstream: "daemon".into(),
            reason: format!("reading the response body: {e}"),
        }),
    }
}
