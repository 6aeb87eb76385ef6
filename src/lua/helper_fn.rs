//! What the namespaces that drive a built-in helper (`zfs`, `overlay`) share: each function is
//! async (the helper's commands and daemon calls run while the worker serves other calls), the
//! wait is not charged to the hook's budget, and without the helper configured every function
//! fails with an error saying which flag configures it.

use std::future::Future;
use std::sync::Arc;

use mlua::{Lua, Result, Table};

use super::budget;

/// Register `name` in `t` as an async function running `f` on `helper` (if configured; else the
/// error `missing()` makes), outside the budget.
pub fn add<H, A, R, F, Fut>(
    lua: &Lua,
    t: &Table,
    name: &str,
    helper: &Option<Arc<H>>,
    missing: fn() -> mlua::Error,
    f: F,
) -> Result<()>
where
    H: Send + Sync + 'static,
    A: mlua::FromLuaMulti + Send + 'static,
    R: mlua::IntoLuaMulti + Send + 'static,
    F: Fn(Lua, Arc<H>, A) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let helper = helper.clone();
    t.set(
        name,
        lua.create_async_function(move |lua, args: A| {
            let (helper, f) = (helper.clone(), f.clone());
            async move {
                let h = helper.ok_or_else(missing)?;
                let waiting = lua.clone();
                budget::pause(&waiting, f(lua, h, args)).await
            }
        })?,
    )
}
