//! The sandbox: what a route script cannot reach (processes, files, bytecode, the garbage
//! collector) and `require`, limited to the bundled `luastrip.*` modules and modules under the
//! scripts directory.

use std::path::PathBuf;

use mlua::{Function, Lua, Table, Value};

/// Remove what a route script must not reach: processes, files, bytecode.
pub fn sandbox(lua: &Lua, scripts_dir: PathBuf) -> mlua::Result<()> {
    let g = lua.globals();
    for name in ["dofile", "loadfile", "collectgarbage"] {
        g.set(name, Value::Nil)?;
    }
    g.set("require", require_fn(lua, scripts_dir)?)?;
    if let Ok(os) = g.get::<Table>("os") {
        let safe = lua.create_table()?;
        for name in ["time", "clock", "date", "difftime"] {
            safe.set(name, os.get::<Value>(name)?)?;
        }
        g.set("os", safe)?;
    }
    // `load` of text only: no precompiled bytecode.
    let load: Function = g.get("load")?;
    g.set(
        "load",
        lua.create_function(
            move |_, (chunk, name, _mode, env): (Value, Value, Value, Value)| {
                load.call::<mlua::MultiValue>((chunk, name, "t", env))
            },
        )?,
    )?;
    Ok(())
}

/// Lua modules bundled into the binary, `require`-able as `luastrip.*`.
const BUNDLED: &[(&str, &str)] = &[(
    "luastrip.policy",
    include_str!("../../stdlib/luastrip/policy.lua"),
)];

/// `require(name)` limited to the bundled `luastrip.*` modules and `name.lua` files under the
/// scripts directory (`a.b` is `a/b.lua`). Each module runs once per VM; errors name `file:line`.
fn require_fn(lua: &Lua, dir: PathBuf) -> mlua::Result<Function> {
    let loaded = lua.create_table()?;
    lua.create_function(move |lua, name: String| {
        if let Some(v) = loaded.raw_get::<Option<Value>>(name.as_str())? {
            return Ok(v);
        }
        let valid = !name.is_empty()
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return Err(mlua::Error::runtime(format!(
                "require {name:?}: module names are letters, digits, '_', '-' and '.'"
            )));
        }
        let (chunk_name, src) = match BUNDLED.iter().find(|(n, _)| *n == name) {
            Some((n, src)) => (
                format!("@stdlib/{}.lua", n.replace('.', "/")),
                src.to_string(),
            ),
            None => {
                let path = dir.join(format!("{}.lua", name.replace('.', "/")));
                let src = std::fs::read_to_string(&path).map_err(|e| {
                    mlua::Error::runtime(format!(
                        "require {name:?}: no bundled module and cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                (format!("@{}", path.display()), src)
            }
        };
        let value: Value = lua.load(src).set_name(chunk_name).call(name.as_str())?;
        let value = if value.is_nil() {
            Value::Boolean(true)
        } else {
            value
        };
        loaded.raw_set(name.as_str(), value.clone())?;
        Ok(value)
    })
}
