//! `luastrip init DIR`: a scripts directory a new user can start from, with the editor set up.
//!
//! An installed luastrip has no source tree beside it, so the type stubs an editor needs are
//! written into the directory too (`.luastrip/types/`), and `.luarc.json` points the Lua
//! language server (LuaLS, or EmmyLua's checker) at them: completion and checks with no set-up.
//! Besides them: the commented default script, a `*_test.lua` that `luastrip test DIR` runs, and
//! a README that says what to do next. Nothing that exists is overwritten.

use std::path::{Path, PathBuf};

/// What `init` writes, relative to DIR, and its text.
const FILES: &[(&str, &str)] = &[
    ("default.lua", include_str!("../scripts/default.lua")),
    ("default_test.lua", DEFAULT_TEST),
    (".luarc.json", LUARC),
    ("README.md", README),
    (
        ".luastrip/types/luastrip.lua",
        include_str!("../stdlib/types/luastrip.lua"),
    ),
    (
        ".luastrip/types/luastrip.policy.lua",
        include_str!("../stdlib/types/luastrip.policy.lua"),
    ),
    (
        ".luastrip/types/luastrip.flocker.lua",
        include_str!("../stdlib/types/luastrip.flocker.lua"),
    ),
    (
        ".luastrip/types/luastrip.weave.lua",
        include_str!("../stdlib/types/luastrip.weave.lua"),
    ),
    (
        ".luastrip/types/luastrip.test.lua",
        include_str!("../stdlib/types/luastrip.test.lua"),
    ),
];

/// The editor's settings: Lua 5.4, luastrip's globals and modules from the stubs.
pub const LUARC: &str = r#"{
  "$schema": "https://raw.githubusercontent.com/LuaLS/vscode-lua/master/setting/schema.json",
  "runtime.version": "Lua 5.4",
  "workspace.library": [".luastrip/types"],
  "workspace.checkThirdParty": false,
  "diagnostics.libraryFiles": "Disable"
}
"#;

const DEFAULT_TEST: &str = r#"-- Test cases for the scripts in this directory: `luastrip test .` runs every *_test.lua
-- file against a gateway with the scripts loaded, with no dockerd (the daemon's answer is what
-- each call says). The assertions are luastrip.test's: t.request, t.eq, t.ok, t.match.
local t = require("luastrip.test")

t.case("a create passes through unchanged", function()
  local res = t.request {
    method = "POST",
    path = "/v1.41/containers/create",
    json = { Image = "busybox", Cmd = { "true" } },
    daemon = { status = 201, json = { Id = "0123456789ab", Warnings = json.array() } },
  }
  t.eq(res.status, 201)
  t.eq(res.json.Id, "0123456789ab")
  local forwarded = assert(res.forwarded, "the call did not reach the daemon")
  t.eq(forwarded.json.Image, "busybox")
end)
"#;

const README: &str = r#"# luastrip route scripts

Every `*.lua` file here (but `*_test.lua`) is a route script, loaded in name order:

```sh
luastrip check .                    # load them, list the routes, flag mistakes
luastrip test .                     # run the *_test.lua cases (no dockerd needed)
luastrip serve --scripts . --listen unix:///run/luastrip.sock --upstream unix:///var/run/docker.sock
```

`default.lua` explains hooks in its comments. Your editor completes and checks the scripts with
the Lua language server (LuaLS): `.luarc.json` points it at the type stubs in `.luastrip/types/`.
`luastrip --help` lists every command; luastrip's README, docs/scripts.md and docs/lua-api.md (in its source)
describe the whole Lua API, the bundled modules (`luastrip.policy`, `luastrip.flocker`,
`luastrip.weave`) and the helpers.
"#;

/// Write the scaffold into `dir` (made if missing). Refuses, before writing anything, if one of
/// the files exists (a symbolic link too, even one that points nowhere); each file is created
/// new (`O_EXCL`), so nothing is ever written through a link. Returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let targets: Vec<PathBuf> = FILES.iter().map(|(name, _)| dir.join(name)).collect();
    if let Some(there) = targets.iter().find(|p| p.symlink_metadata().is_ok()) {
        return Err(format!(
            "{} exists; init writes only into a new or empty scripts directory and never \
             overwrites",
            there.display()
        ));
    }
    for ((_, text), path) in FILES.iter().zip(&targets) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(targets)
}
