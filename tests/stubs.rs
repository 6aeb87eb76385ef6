//! The type stubs an editor uses (`stdlib/types`), checked with the scripts that lean on them.
//!
//! lua-language-server is in none of the registries this project can reach; EmmyLua's checker
//! (`emmylua_check`, from crates.io) reads the same LuaLS annotations and `.luarc.json`, so it
//! stands in for `lua-language-server --check`: the examples, the bundled modules, the stubs
//! themselves and a directory `luastrip init` made must check with no error or warning, and a
//! script that misuses the API must not.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The version `tools/test.sh` installs.
const EMMYLUA_CHECK: &str = "0.25.1";

fn checker() -> String {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("emmylua_check").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`emmylua_check` is missing. Install it with: cargo install emmylua_check --version \
         {EMMYLUA_CHECK} --locked   (or run the README's test command, which installs it)"
    );
    "emmylua_check".into()
}

/// The errors and warnings (LSP severity 1 and 2) `emmylua_check` reports for `workspace`, as
/// `file:line: code: message` lines.
fn problems(workspace: &Path, config: Option<&Path>) -> Vec<String> {
    let mut cmd = Command::new(checker());
    cmd.args(["--output-format", "json"]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = support::output(cmd.arg(workspace));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "emmylua_check gave no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut found = Vec::new();
    for file in report.as_array().unwrap() {
        for d in file["diagnostics"].as_array().unwrap() {
            if d["severity"].as_u64().is_some_and(|s| s <= 2) {
                found.push(format!(
                    "{}:{}: {}: {}",
                    file["file"].as_str().unwrap_or("?"),
                    d["range"]["start"]["line"].as_u64().unwrap_or(0) + 1,
                    d["code"].as_str().unwrap_or("?"),
                    d["message"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    found
}

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn the_examples_modules_and_stubs_check_clean() {
    // The examples, with their own .luarc.json (the layout `luastrip init` makes).
    let found = problems(&repo("examples/scripts"), None);
    assert!(found.is_empty(), "{found:#?}");
    // The stubs themselves.
    let found = problems(&repo("stdlib/types"), None);
    assert!(found.is_empty(), "{found:#?}");
    // The bundled modules, against the stubs.
    let dir = support::temp_dir("emmy");
    let config = dir.join("luarc.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "runtime.version": "Lua 5.4",
            "workspace.library": [repo("stdlib/types")],
        })
        .to_string(),
    )
    .unwrap();
    let found = problems(&repo("stdlib/luastrip"), Some(&config));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn a_new_scripts_directory_checks_clean_and_misuse_is_caught() {
    let dir = support::temp_dir("emmyinit").join("scripts");
    let out = support::output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .arg("init")
            .arg(&dir),
    );
    assert!(out.status.success(), "{out:?}");
    let found = problems(&dir, None);
    assert!(found.is_empty(), "{found:#?}");
    // The stubs are what the checker reads: a field req does not have, a misspelt helper and
    // an unknown global are each reported.
    std::fs::write(
        dir.join("wrong.lua"),
        "route.pre(\"POST /containers/create\", function(req)\n  local n = req.nosuchfield\n  \
         return n\nend)\nundefined_global_here()\n",
    )
    .unwrap();
    let found = problems(&dir, None).join("\n");
    assert!(
        found.contains("wrong.lua:2: undefined-field")
            && found.contains("wrong.lua:5: undefined-global"),
        "{found}"
    );
}
