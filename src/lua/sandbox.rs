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

/// Make what scripts find in the VM read-only: every global the VM was built with (`string`,
/// `route`, `json`, `pcall`, …) can be neither replaced nor changed, so that one script cannot
/// weaken another's policy (say, by replacing `string.sub`). Library tables are handed out as
/// read-only proxies; `rawset` refuses them; the strings' metatable is hidden. Scripts may still
/// make globals of their own. Call last while the VM is built, before any script runs.
pub fn protect_builtins(lua: &Lua) -> mlua::Result<()> {
    lua.load(
        r#"
        local G, next, setmetatable, getmetatable, error, tostring, type, rawset =
          _G, next, setmetatable, getmetatable, error, tostring, type, rawset
        local builtins = {}
        local protected = setmetatable({}, { __mode = "k" })
        local function readonly(t, name)
          local proxy = setmetatable({}, {
            __index = t,
            __newindex = function(_, k)
              error("luastrip: " .. name .. "." .. tostring(k) .. " is built in and read-only", 2)
            end,
            __pairs = function() return next, t, nil end,
            __len = function() return #t end,
            __metatable = false,
          })
          protected[proxy] = true
          return proxy
        end
        local names = {}
        for k in next, G do names[#names + 1] = k end
        for _, k in ipairs(names) do
          local v = G[k]
          if type(v) == "table" and v ~= G then v = readonly(v, tostring(k)) end
          builtins[k] = v
          G[k] = nil
        end
        builtins._G = G
        builtins.rawset = function(t, k, v)
          if protected[t] or (t == G and builtins[k] ~= nil) then
            error("luastrip: built-in tables and globals are read-only", 2)
          end
          return rawset(t, k, v)
        end
        getmetatable("").__metatable = false
        setmetatable(G, {
          __index = builtins,
          __newindex = function(t, k, v)
            if builtins[k] ~= nil then
              error("luastrip: the global " .. tostring(k) .. " is built in and cannot be replaced", 2)
            end
            rawset(t, k, v)
          end,
          __pairs = function()
            local all = {}
            for k, v in next, builtins do all[k] = v end
            for k, v in next, G do all[k] = v end
            return next, all, nil
          end,
          __metatable = false,
        })
        "#,
    )
    .set_name("=luastrip")
    .exec()
}

/// Lua modules bundled into the binary, `require`-able as `luastrip.*`.
const BUNDLED: &[(&str, &str)] = &[
    (
        "luastrip.policy",
        include_str!("../../stdlib/luastrip/policy.lua"),
    ),
    (
        "luastrip.flocker",
        include_str!("../../stdlib/luastrip/flocker.lua"),
    ),
    (
        "luastrip.weave",
        include_str!("../../stdlib/luastrip/weave.lua"),
    ),
];

/// `require(name)` limited to the bundled `luastrip.*` modules and `name.lua` files under the
/// scripts directory (`a.b` is `a/b.lua`). Each module runs once per VM; errors name `file:line`.
fn require_fn(lua: &Lua, dir: PathBuf) -> mlua::Result<Function> {
    let loaded = lua.create_table()?;
    lua.create_function(move |lua, name: String| {
        if let Some(v) = loaded.raw_get::<Option<Value>>(name.as_str())? {
            return Ok(v);
        }
        // Each dot-separated part is a file or directory name under the scripts directory: no
        // empty part (a leading '.' would make the path absolute), no '..'.
        let valid = !name.is_empty()
            && name.split('.').all(|part| !part.is_empty())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return Err(mlua::Error::runtime(format!(
                "require {name:?}: module names are parts of letters, digits, '_' and '-' \
                 separated by single dots (\"lib.util\" is lib/util.lua in the scripts directory)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_stays_inside_the_scripts_directory() {
        let lua = Lua::new();
        let dir = std::env::temp_dir().join(format!("luastrip-require-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        sandbox(&lua, dir.clone()).unwrap();
        for name in [
            ".tmp.x",
            "..etc.passwd",
            "a..b",
            "a.",
            "/etc/passwd",
            "a/b",
            "",
        ] {
            let e = lua
                .load(format!("return require({name:?})"))
                .exec()
                .unwrap_err();
            assert!(e.to_string().contains("module names"), "{name}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn built_ins_cannot_be_replaced_or_changed() {
        let lua = Lua::new();
        lua.globals()
            .set("route", lua.create_table().unwrap())
            .unwrap();
        protect_builtins(&lua).unwrap();
        for attack in [
            "string.sub = function() return '' end",
            "string = {}",
            "rawset(string, 'sub', function() return '' end)",
            "rawset(_G, 'string', {})",
            "getmetatable('').__index.sub = function() return '' end",
            "setmetatable(string, {})",
            "setmetatable(_G, {})",
            "route.pre = nil",
            "pcall = function() end",
            "table.insert = print",
        ] {
            let out = lua.load(attack).exec();
            assert!(out.is_err(), "{attack} was allowed");
        }
        // Everything still works, and scripts keep globals of their own.
        lua.load(
            r#"
            assert(("abc"):sub(2, 2) == "b" and string.sub("abc", 1, 1) == "a")
            helper = function() return 1 end
            assert(helper() == 1)
            local n = 0
            for k in pairs(string) do n = n + 1 end
            assert(n > 10, "pairs over a library")
            local seen = false
            for k in pairs(_G) do if k == "string" then seen = true end end
            assert(seen, "pairs over _G shows the built-ins")
            "#,
        )
        .exec()
        .unwrap();
    }
}
