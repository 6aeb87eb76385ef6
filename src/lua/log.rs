//! The `log` namespace: scripts log through luastrip's own structured logger (`tracing`), so
//! their lines carry the call id and land wherever the gateway's logs go.

use mlua::{Lua, Result, Table, Value};

/// Install `log` as a global: `log.debug|info|warn|error(msg, fields?)`.
pub fn register(lua: &Lua, _: &super::Services) -> Result<()> {
    let log = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        log.set(
            level,
            lua.create_function(move |lua, (msg, fields): (String, Option<Table>)| {
                let fields = match fields {
                    Some(t) => String::from_utf8_lossy(&super::json::encode(lua, Value::Table(t))?)
                        .into_owned(),
                    None => String::new(),
                };
                let script = super::errors::current_location(lua).unwrap_or_default();
                match level {
                    "debug" => tracing::debug!(target: "luastrip::script", script, fields, "{msg}"),
                    "info" => tracing::info!(target: "luastrip::script", script, fields, "{msg}"),
                    "warn" => tracing::warn!(target: "luastrip::script", script, fields, "{msg}"),
                    _ => tracing::error!(target: "luastrip::script", script, fields, "{msg}"),
                }
                Ok(())
            })?,
        )?;
    }
    lua.globals().set("log", log)
}
