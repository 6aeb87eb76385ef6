//! `*_test.lua`: test cases for route scripts, in Lua, run by `luastrip test` against the real
//! gateway ([`super::Harness`]) with the scripts loaded. The assertion API is the
//! `luastrip.test` module (`docs/lua-api.md`, stubs in `stdlib/types`):
//!
//! ```lua
//! local t = require("luastrip.test")
//! t.case("privileged containers are denied", function()
//!   local res = t.request { method = "POST", path = "/v1.43/containers/create",
//!                           json = { Image = "busybox", HostConfig = { Privileged = true } } }
//!   t.eq(res.status, 403)
//!   t.match(res.json.message, "privileged")
//!   t.eq(res.forwarded, nil)            -- the daemon never saw it
//! end)
//! ```
//!
//! Each file runs in a VM of its own (not a gateway VM: cases drive the gateway from outside,
//! as a client would), its cases in order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mlua::{Lua, Table, Value};

use super::daemon::Answer;
use super::Harness;

/// The Lua half of `luastrip.test`: cases and assertions (errors point at the caller's line).
const PRELUDE: &str = r#"
local t, cases = {}, {}
local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v)
    if ok then return s end
  end
  return tostring(v)
end
local function same(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
local function say(msg, text) return (msg and (msg .. ": ") or "") .. text end
function t.case(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then
    error("t.case(name, function) expected", 2)
  end
  cases[#cases + 1] = { name = name, fn = fn }
end
function t.eq(got, want, msg)
  if not same(got, want) then error(say(msg, "expected " .. show(want) .. ", got " .. show(got)), 2) end
end
function t.ok(v, msg)
  if not v then error(say(msg, "expected a true value, got " .. show(v)), 2) end
  return v
end
function t.match(s, pattern, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    error(say(msg, show(s) .. " does not match " .. show(pattern)), 2)
  end
end
t.request = __luastrip_request
__luastrip_request = nil
return t, cases
"#;

/// The `*_test.lua` files that go with `scripts`: in the directory, or beside the file
/// (`policy.lua` → `policy_test.lua`).
pub fn find(scripts: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(scripts).map_err(|e| format!("{}: {e}", scripts.display()))?;
    if !meta.is_dir() {
        let stem = scripts
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let beside = scripts.with_file_name(format!("{stem}_test.lua"));
        return Ok(beside.is_file().then_some(beside).into_iter().collect());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(scripts).map_err(|e| format!("{}: {e}", scripts.display()))? {
        let p = entry.map_err(|e| e.to_string())?.path();
        if p.is_file()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("_test.lua"))
        {
            found.push(p);
        }
    }
    found.sort();
    Ok(found)
}

/// Run every case of every file; whether all passed.
pub async fn run(h: &Arc<Harness>, files: &[PathBuf], out: &mut dyn Write) -> Result<bool, String> {
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let _ = writeln!(out, "{}", file.display());
        match cases_of(h, file) {
            Err(e) => {
                failed += 1;
                let _ = writeln!(out, "  FAIL  (loading) {e}");
            }
            Ok((_lua, cases)) => {
                for (name, f) in cases {
                    match f.call_async::<()>(()).await {
                        Ok(()) => {
                            passed += 1;
                            let _ = writeln!(out, "  ok    {name}");
                        }
                        Err(e) => {
                            failed += 1;
                            let _ = writeln!(out, "  FAIL  {name}: {}", root_message(&e));
                        }
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} cases, {passed} passed, {failed} failed",
        passed + failed
    );
    Ok(failed == 0)
}

/// A VM with `luastrip.test`, the file run in it, and the cases it declared.
fn cases_of(h: &Arc<Harness>, file: &Path) -> Result<(Lua, Vec<(String, mlua::Function)>), String> {
    let lua = Lua::new();
    let le = |e: mlua::Error| root_message(&e);
    crate::lua::json::register(&lua, &crate::lua::Services::default()).map_err(le)?;
    lua.globals()
        .set(
            "__luastrip_request",
            request_fn(&lua, h.clone()).map_err(le)?,
        )
        .map_err(le)?;
    let (module, cases): (Table, Table) = lua
        .load(PRELUDE)
        .set_name("=luastrip.test")
        .eval()
        .map_err(le)?;
    let preload: Table = lua
        .globals()
        .get::<Table>("package")
        .and_then(|p| p.get("preload"))
        .map_err(le)?;
    let loader = lua
        .create_function(move |_, ()| Ok(module.clone()))
        .map_err(le)?;
    preload.set("luastrip.test", loader).map_err(le)?;
    let src = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    lua.load(&src)
        .set_name(format!("@{}", file.display()))
        .exec()
        .map_err(le)?;
    let mut all = Vec::new();
    for case in cases.sequence_values::<Table>() {
        let case = case.map_err(le)?;
        all.push((case.get("name").map_err(le)?, case.get("fn").map_err(le)?));
    }
    Ok((lua, all))
}

/// `t.request{method, path, headers, body | json, daemon = {status, headers, body | json}}`:
/// one call through the gateway, the daemon answering as `daemon` says (default 200 `{}`).
/// Returns `{status, headers, body, json, forwarded = {method, path, headers, body, json}}`,
/// `forwarded` being nil when the daemon never saw the call.
fn request_fn(lua: &Lua, h: Arc<Harness>) -> mlua::Result<mlua::Function> {
    lua.create_async_function(move |lua, spec: Table| {
        let h = h.clone();
        async move {
            let method: String = spec
                .get::<Option<String>>("method")?
                .unwrap_or_else(|| "GET".into());
            let path: String = spec
                .get::<Option<String>>("path")?
                .ok_or_else(|| mlua::Error::runtime("t.request needs a path"))?;
            let mut headers = headers_from(spec.get("headers")?)?;
            let body = body_from(&lua, &spec, &mut headers)?;
            let daemon: Option<Table> = spec.get("daemon")?;
            let mut answer_headers = HeaderMap::new();
            let (status, answer_body) = match &daemon {
                Some(d) => {
                    answer_headers = headers_from(d.get("headers")?)?;
                    let status: u16 = d.get::<Option<u16>>("status")?.unwrap_or(200);
                    (status, body_from(&lua, d, &mut answer_headers)?)
                }
                None => {
                    answer_headers.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    (200, Bytes::from_static(b"{}"))
                }
            };
            h.daemon.expect(Some(Answer {
                call: None,
                status: StatusCode::from_u16(status)
                    .map_err(|_| mlua::Error::runtime(format!("daemon.status {status}?")))?,
                headers: answer_headers,
                body: answer_body,
            }));
            let (status, rheaders, rbody) = h
                .send(&method, &path, &headers, body)
                .await
                .map_err(mlua::Error::runtime)?;
            let res = message(&lua, &rheaders, &rbody)?;
            res.set("status", status.as_u16())?;
            if let Some(f) = h.daemon.received() {
                let fwd = message(&lua, &f.headers, &f.body)?;
                fwd.set("method", f.method)?;
                fwd.set("path", f.target)?;
                res.set("forwarded", fwd)?;
            }
            Ok(res)
        }
    })
}

/// `{headers, body, json}` of a message (json nil unless the body is JSON).
fn message(lua: &Lua, headers: &HeaderMap, body: &Bytes) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let ht = lua.create_table()?;
    for (k, v) in headers {
        ht.set(
            k.as_str(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )?;
    }
    t.set("headers", ht)?;
    t.set("body", lua.create_string(body)?)?;
    if let Ok(v) = crate::lua::json::decode(lua, body) {
        t.set("json", v)?;
    }
    Ok(t)
}

fn headers_from(t: Option<Table>) -> mlua::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    let Some(t) = t else { return Ok(h) };
    for pair in t.pairs::<String, String>() {
        let (k, v) = pair?;
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| mlua::Error::runtime(format!("{k:?} is not a header name")))?;
        let value = HeaderValue::from_str(&v)
            .map_err(|_| mlua::Error::runtime(format!("the value of {k} is not a header value")))?;
        h.append(name, value);
    }
    Ok(h)
}

/// `json` (encoded, with its content type) or `body` (as is) of a request or answer table.
fn body_from(lua: &Lua, t: &Table, headers: &mut HeaderMap) -> mlua::Result<Bytes> {
    match t.get::<Value>("json")? {
        Value::Nil => Ok(t
            .get::<Option<mlua::LuaString>>("body")?
            .map(|s| Bytes::copy_from_slice(&s.as_bytes()))
            .unwrap_or_default()),
        v => {
            headers
                .entry(http::header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            Ok(Bytes::from(crate::lua::json::encode(lua, v)?))
        }
    }
}

/// The message of a Lua error without mlua's wrapping and tracebacks.
fn root_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_message(cause),
        mlua::Error::RuntimeError(m) | mlua::Error::SyntaxError { message: m, .. } => m.clone(),
        other => other.to_string(),
    }
}
