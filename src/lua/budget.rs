//! Time budgets for Lua code: every hook (and every script while it loads) runs under a deadline
//! that a VM-wide instruction hook checks every 1000 instructions.
//!
//! The hook is global to the VM, so a coroutine a script makes itself (`coroutine.wrap`,
//! `coroutine.create`) is checked as well as the hook's own. It charges the budget of the hook
//! being run right now: a VM is only ever entered from its worker's thread, one poll at a time,
//! and [`call_async`] marks its budget as current for the length of each poll.
//!
//! Once a budget is spent it stays spent: every later check raises again, and the sandbox's
//! `pcall`, `xpcall` and `coroutine.resume` re-raise the error instead of returning it
//! ([`install`]), so a script cannot catch its way past its budget (nor past the memory cap).
//!
//! The budget counts time spent running Lua, not time spent waiting for the daemon: the async
//! API functions (`docker.*`, `http.*`, reading the body) call [`pause`] around their await, which
//! moves the deadline by the time waited.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::{FromLuaMulti, Function, HookTriggers, IntoLuaMulti, Lua, ThreadStatus, Value, VmState};

use super::errors::raise;
use crate::error::Error;

/// The budget of one hook run.
struct Budget {
    deadline: Mutex<Instant>,
    limit: Duration,
    /// Set once the deadline has passed; it never clears.
    spent: AtomicBool,
}

impl Budget {
    fn new(limit: Duration) -> Arc<Budget> {
        Arc::new(Budget {
            deadline: Mutex::new(Instant::now() + limit),
            limit,
            spent: AtomicBool::new(false),
        })
    }

    fn exceeded(&self) -> bool {
        if self.spent.load(Ordering::Relaxed) {
            return true;
        }
        let over = Instant::now() > *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if over {
            self.spent.store(true, Ordering::Relaxed);
        }
        over
    }

    fn error(&self, location: String) -> mlua::Error {
        raise(Error::Script {
            location,
            reason: format!(
                "hook exceeded its time budget of {} ms",
                self.limit.as_millis()
            ),
        })
    }
}

/// The budget of the hook running in this VM right now (VM app data).
#[derive(Default)]
struct Current(Mutex<Option<Arc<Budget>>>);

fn current(lua: &Lua) -> Option<Arc<Budget>> {
    lua.app_data_ref::<Current>()
        .and_then(|c| c.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

fn set_current(lua: &Lua, budget: Option<Arc<Budget>>) -> Option<Arc<Budget>> {
    match lua.app_data_ref::<Current>() {
        Some(c) => std::mem::replace(&mut *c.0.lock().unwrap_or_else(|e| e.into_inner()), budget),
        None => None,
    }
}

/// Install the VM-wide budget hook and the catch-proof `pcall`, `xpcall` and `coroutine.resume`.
/// Call once, while the VM is built, before any script runs.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    lua.set_app_data(Current::default());
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(1000),
        |lua, debug| match current(lua) {
            Some(b) if b.exceeded() => {
                // Name the line that was running, so the error points into the loop.
                let src = debug.source();
                let file = src.short_src.as_deref().unwrap_or("?");
                let line = debug.current_line().unwrap_or(0);
                Err(b.error(format!("{file}:{line}")))
            }
            _ => Ok(VmState::Continue),
        },
    )?;
    // `fatal(ok, err)` raises when the error a protected call caught must not be caught: the
    // hook's budget is spent, or the VM ran out of memory (Lua reports that as its own constant
    // message; a script raising the same text only fails its own call).
    let fatal = lua.create_function(|lua, (ok, err): (bool, Value)| {
        if !ok {
            if let Value::Error(e) = &err {
                // The budget error as raised, naming the line that was running.
                let over_budget = matches!(super::errors::typed(e), Some(Error::Script { .. }));
                if over_budget || super::errors::is_memory_error(e) {
                    return Err((**e).clone());
                }
            }
            if let Value::String(s) = &err {
                if s.as_bytes().as_ref() == b"not enough memory" {
                    return Err(mlua::Error::MemoryError("not enough memory".into()));
                }
            }
        }
        match current(lua) {
            Some(b) if b.exceeded() => Err(b.error(script_location(lua))),
            _ => Ok(()),
        }
    })?;
    lua.load(
        r#"
        local fatal, pcall, xpcall, resume = ...
        local function pass(ok, ...)
          fatal(ok, (...))
          return ok, ...
        end
        _G.pcall = function(...) return pass(pcall(...)) end
        _G.xpcall = function(...) return pass(xpcall(...)) end
        coroutine.resume = function(...) return pass(resume(...)) end
        "#,
    )
    .set_name("=luastrip")
    .call::<()>((
        fatal,
        lua.globals().get::<Function>("pcall")?,
        lua.globals().get::<Function>("xpcall")?,
        lua.globals()
            .get::<mlua::Table>("coroutine")?
            .get::<Function>("resume")?,
    ))
}

/// Fail if the running hook's budget is spent: for work done in Rust on a script's behalf (the
/// pattern functions), which the instruction hook does not see.
pub fn check(lua: &Lua) -> mlua::Result<()> {
    match current(lua) {
        Some(b) if b.exceeded() => {
            Err(b.error(super::errors::current_location(lua).unwrap_or_else(|| "?".into())))
        }
        _ => Ok(()),
    }
}

/// `file:line` of the innermost script code on the stack (not luastrip's own wrappers).
fn script_location(lua: &Lua) -> String {
    (1..32)
        .find_map(|level| {
            lua.inspect_stack(level, |d| {
                let src = d.source();
                let file = src.short_src.as_deref().unwrap_or("?");
                let line = d.current_line()?;
                (file != "luastrip" && file != "[C]").then(|| format!("{file}:{line}"))
            })
            .flatten()
        })
        .unwrap_or_else(|| "?".into())
}

/// Marks `budget` as the VM's current one while the inner future is polled.
struct Budgeted<'a, F> {
    lua: &'a Lua,
    budget: Arc<Budget>,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for Budgeted<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = set_current(self.lua, Some(self.budget.clone()));
        let out = self.fut.as_mut().poll(cx);
        set_current(self.lua, before);
        out
    }
}

/// Run `func(args)` as a coroutine under `limit`; it may await async API functions.
pub async fn call_async<R: FromLuaMulti>(
    lua: &Lua,
    func: &Function,
    limit: Duration,
    args: impl IntoLuaMulti,
) -> mlua::Result<R> {
    let thread = lua.create_thread(func.clone())?;
    let fut = thread.into_async::<R>(args)?;
    Budgeted {
        lua,
        budget: Budget::new(limit),
        fut: Box::pin(fut),
    }
    .await
}

/// Run `func()` to completion without awaiting (script loading): async API calls are refused.
pub fn call_sync(lua: &Lua, func: &Function, limit: Duration) -> mlua::Result<()> {
    let thread = lua.create_thread(func.clone())?;
    let before = set_current(lua, Some(Budget::new(limit)));
    let result = thread.resume::<()>(());
    set_current(lua, before);
    let suspended = thread.status() == ThreadStatus::Resumable;
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
    let budget = current(lua);
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

    fn vm() -> Lua {
        let lua = Lua::new();
        install(&lua).unwrap();
        lua
    }

    #[tokio::test]
    async fn a_hook_dropped_mid_wait_leaves_no_budget_behind() {
        let lua = vm();
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
        assert!(current(&lua).is_none());
    }

    #[tokio::test]
    async fn no_script_escapes_its_budget() {
        let lua = vm();
        for (what, code) in [
            ("plain loop", "return function() while true do end end"),
            (
                "pcall in a loop",
                "return function() while true do pcall(function() while true do end end) end end",
            ),
            (
                "xpcall in a loop",
                "return function() while true do xpcall(function() while true do end end, function(e) return e end) end end",
            ),
            (
                "coroutine.wrap",
                "return function() coroutine.wrap(function() while true do end end)() end",
            ),
            (
                "coroutine.resume in a loop",
                "return function() while true do coroutine.resume(coroutine.create(function() while true do end end)) end end",
            ),
            (
                "pcall of coroutine.wrap",
                "return function() while true do pcall(coroutine.wrap(function() while true do end end)) end end",
            ),
        ] {
            let hook: Function = lua.load(code).eval().unwrap();
            let t = Instant::now();
            let out = tokio::time::timeout(
                Duration::from_secs(5),
                call_async::<()>(&lua, &hook, Duration::from_millis(50), ()),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: still running after 5 s"));
            let e = out.expect_err(what);
            assert!(
                matches!(super::super::errors::typed(&e), Some(Error::Script { reason, .. }) if reason.contains("time budget")),
                "{what}: {e}"
            );
            assert!(t.elapsed() < Duration::from_millis(500), "{what}: {:?}", t.elapsed());
        }
        // An ordinary error is still caught as usual.
        let hook: Function = lua
            .load(
                "return function() local ok, e = pcall(error, 'x') assert(not ok and e == 'x') end",
            )
            .eval()
            .unwrap();
        call_async::<()>(&lua, &hook, Duration::from_millis(50), ())
            .await
            .unwrap();
    }
}
