//! The `log` namespace: scripts log through luastrip's own structured logger (`tracing`), so
//! their lines carry the call id and land wherever the gateway's logs go.
//!
//! Lua's `print` goes the same way (a gateway's stdout is nobody's terminal), except while the
//! control socket's `eval` runs a REPL line: then it is captured ([`Printed`]) and shown in the
//! REPL.

use mlua::{Lua, MultiValue, Result, Table, Value};

/// What `print` wrote while an `eval` ran (set in the VM's app data for the duration).
#[derive(Default)]
pub struct Printed(pub String);

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
    lua.globals().set(
        "print",
        lua.create_function(|lua, args: MultiValue| {
            let line = args
                .iter()
                .map(|v| v.to_string().unwrap_or_else(|_| v.type_name().to_string()))
                .collect::<Vec<_>>()
                .join("\t");
            match lua.app_data_mut::<Printed>() {
                Some(mut out) => {
                    out.0.push_str(&line);
                    out.0.push('\n');
                }
                None => {
                    let script = super::errors::current_location(lua).unwrap_or_default();
                    tracing::info!(target: "luastrip::script", script, "{line}");
                }
            }
            Ok(())
        })?,
    )?;
    lua.globals().set("log", log)
}
