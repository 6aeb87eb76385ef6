//! Time budgets for Lua code: every hook (and every script while it loads) runs in its own
//! coroutine with an instruction hook that checks a deadline every 1000 instructions.
//!
//! The budget counts time spent running Lua, not time spent waiting for the daemon: the async
//! API functions (`docker.*`) call [`pause`] around their await, which moves the deadline of the
//! coroutine that called them by the time waited. Each coroutine has its own deadline, because
//! on one worker thread several calls' hooks may be suspended in the same VM at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlua::{FromLuaMulti, Function, HookTriggers, IntoLuaMulti, Lua, ThreadStatus, VmState};

use super::errors::raise;
use crate::error::Error;

/// The deadline of one running coroutine.
struct Budget {
    deadline: Mutex<Instant>,
}

/// Running coroutines' budgets, by coroutine pointer (VM app data).
#[derive(Default)]
struct Budgets(HashMap<usize, Arc<Budget>>);

/// A coroutine running `func` under `limit`, registered so that [`pause`] can find it.
fn start(lua: &Lua, func: &Function, limit: Duration) -> mlua::Result<(mlua::Thread, usize)> {
    let thread = lua.create_thread(func.clone())?;
    let budget = Arc::new(Budget {
        deadline: Mutex::new(Instant::now() + limit),
    });
    let b = budget.clone();
    thread.set_hook(
        HookTriggers::new().every_nth_instruction(1000),
        move |_, debug| {
            if Instant::now() > *b.deadline.lock().unwrap_or_else(|e| e.into_inner()) {
                // Name the line that was running, so the error points into the loop.
                let src = debug.source();
                let file = src.short_src.as_deref().unwrap_or("?");
                let line = debug.current_line().unwrap_or(0);
                Err(raise(Error::Script {
                    location: format!("{file}:{line}"),
                    reason: format!("hook exceeded its time budget of {} ms", limit.as_millis()),
                }))
            } else {
                Ok(VmState::Continue)
            }
        },
    )?;
    let key = thread.to_pointer() as usize;
    if lua.app_data_ref::<Budgets>().is_none() {
        lua.set_app_data(Budgets::default());
    }
    if let Some(mut all) = lua.app_data_mut::<Budgets>() {
        all.0.insert(key, budget);
    }
    Ok((thread, key))
}

/// Unregisters a coroutine's budget when its run ends, however it ends (a call whose client went
/// away drops the run mid-way).
struct Registered<'a> {
    lua: &'a Lua,
    key: usize,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(mut all) = self.lua.app_data_mut::<Budgets>() {
            all.0.remove(&self.key);
        }
    }
}

/// How many coroutines have a budget registered now (0 when no hook runs).
pub fn registered(lua: &Lua) -> usize {
    lua.app_data_ref::<Budgets>().map_or(0, |all| all.0.len())
}

/// Run `func(args)` as a coroutine under `limit`; it may await async API functions.
pub async fn call_async<R: FromLuaMulti>(
    lua: &Lua,
    func: &Function,
    limit: Duration,
    args: impl IntoLuaMulti,
) -> mlua::Result<R> {
    let (thread, key) = start(lua, func, limit)?;
    let _registered = Registered { lua, key };
    thread.into_async::<R>(args)?.await
}

/// Run `func()` to completion without awaiting (script loading): async API calls are refused.
pub fn call_sync(lua: &Lua, func: &Function, limit: Duration) -> mlua::Result<()> {
    let (thread, key) = start(lua, func, limit)?;
    let registered = Registered { lua, key };
    let result = thread.resume::<()>(());
    let suspended = thread.status() == ThreadStatus::Resumable;
    drop(registered);
    result?;
    if suspended {
        return Err(mlua::Error::runtime(
            "scripts cannot call docker.* or yield while they load; do it inside a hook",
        ));
    }
    Ok(())
}

/// Await `fut` from an async API function without charging the wait to the calling hook.
pub async fn pause<F: Future>(lua: &Lua, fut: F) -> F::Output {
    let key = lua.current_thread().to_pointer() as usize;
    let budget = lua
        .app_data_ref::<Budgets>()
        .and_then(|all| all.0.get(&key).cloned());
    let t = Instant::now();
    let out = fut.await;
    if let Some(b) = budget {
        *b.deadline.lock().unwrap_or_else(|e| e.into_inner()) += t.elapsed();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hook_dropped_mid_wait_leaves_no_budget_behind() {
        let lua = Lua::new();
        let wait = lua
            .create_async_function(|_, ()| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
            .unwrap();
        lua.globals().set("wait", wait).unwrap();
        let hook: Function = lua.load("return function() wait() end").eval().unwrap();
        let run = call_async::<()>(&lua, &hook, Duration::from_secs(1), ());
        // The client goes away: the hook's future is dropped while it waits.
        assert!(tokio::time::timeout(Duration::from_millis(20), run)
            .await
            .is_err());
        assert_eq!(registered(&lua), 0);
    }
}
