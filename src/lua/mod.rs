//! Lua route scripts: the engine behind `luastrip serve --scripts PATH`.
//!
//! The engine implements [`crate::call::Hooks`]: in the pre phase it runs the matching
//! `route.pre` hooks and `route.endpoint` handlers, in the post phase the `route.post` hooks.
//! Scripts see the call as a `req` table and the answer as a `res` table (DESIGN §3); what they
//! change is applied back to the call.
//!
//! # VMs and threads
//!
//! One Lua VM per worker thread, created lazily on that thread from the loaded sources and rebuilt
//! when the scripts are reloaded (a generation number). luastrip's workers are single-threaded
//! runtimes (see [`crate::serve`]), so a VM is only ever entered from its own thread: no lock is
//! contended and both cores run scripts. What VMs share lives outside them ([`Services`]): the
//! `store`, and the daemon address each VM opens its own `docker.*` connection pool to.
//!
//! # Limits
//!
//! Each hook runs under a wall-clock budget checked every 1000 Lua instructions, and each VM under
//! a memory cap. A hook that throws or exceeds a limit fails the call closed: a 500 Docker JSON
//! error naming `file:line` and the reason, and nothing reaches the daemon.
//!
//! # Namespaces
//!
//! One module per Lua global, each with `register(&Lua)`, wired in [`build_vm`]'s list.

pub mod budget;
pub mod docker;
pub mod exchange;
pub mod http;
pub mod json;
pub mod log;
pub mod powerstrip;
pub mod reload;
pub mod route;
pub mod store;

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use mlua::{Function, Lua, LuaOptions, LuaSerdeExt, StdLib, Table, Value};

use crate::call::{full, Body, Call, HookFuture, Hooks};
use crate::error::Error;
use crate::journal::HookRun;
use crate::route::NormalPath;
use crate::upstream::{Upstream, UpstreamAddr};
use route::{Hook, Phase, Registry};

/// Limits applied to scripts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one hook call.
    pub hook_time: Duration,
    /// Memory cap of one VM.
    pub vm_memory: usize,
    /// Largest request or response body a hook may read.
    pub body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hook_time: Duration::from_millis(100),
            vm_memory: 64 << 20,
            body: 16 << 20,
        }
    }
}

/// What every VM's namespaces are connected to.
#[derive(Clone)]
pub struct Services {
    /// The daemon for `docker.*`; `None` for `luastrip check`.
    pub upstream: Option<UpstreamAddr>,
    /// The `store` shared by all VMs.
    pub store: Arc<store::Store>,
    /// `--powerstrip-config`: Powerstrip's `adapters.yml`, re-read on every reload.
    pub adapters_file: Option<PathBuf>,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            upstream: None,
            store: Arc::new(store::Store::memory()),
            adapters_file: None,
        }
    }
}

/// Script sources, in load order, and the checked `adapters.yml`.
#[derive(Debug, Clone)]
pub struct Scripts {
    /// The `--scripts` path, for reloads; `None` with only `--powerstrip-config`.
    pub root: Option<PathBuf>,
    pub files: Vec<(PathBuf, String)>,
    /// Adapter chains from `--powerstrip-config`; they run after the scripts' hooks.
    pub adapters: Option<crate::powerstrip::config::Config>,
}

impl Scripts {
    /// Read a file, or every `*.lua` in a directory in name order, and the adapters file.
    pub fn read(root: Option<&Path>, adapters: Option<&Path>) -> Result<Scripts, Error> {
        let adapters = match adapters {
            Some(path) => {
                Some(
                    crate::powerstrip::config::load(path).map_err(|reason| Error::Script {
                        location: path.display().to_string(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        let Some(root) = root else {
            return Ok(Scripts {
                root: None,
                files: Vec::new(),
                adapters,
            });
        };
        let err = |path: &Path, e: std::io::Error| Error::Script {
            location: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        };
        let meta = std::fs::metadata(root).map_err(|e| err(root, e))?;
        let mut paths = Vec::new();
        if meta.is_dir() {
            for entry in std::fs::read_dir(root).map_err(|e| err(root, e))? {
                let p = entry.map_err(|e| err(root, e))?.path();
                if p.extension().is_some_and(|x| x == "lua") && p.is_file() {
                    paths.push(p);
                }
            }
            paths.sort();
        } else {
            paths.push(root.to_path_buf());
        }
        let mut files = Vec::new();
        for p in paths {
            let src = std::fs::read_to_string(&p).map_err(|e| err(&p, e))?;
            files.push((p, src));
        }
        Ok(Scripts {
            root: Some(root.to_path_buf()),
            files,
            adapters,
        })
    }
}

/// A VM with the scripts loaded and their hooks registered.
struct Vm {
    lua: Lua,
    hooks: Vec<Hook>,
    /// Script paths, to find `file:line` in error messages.
    files: Vec<String>,
}

impl Vm {
    /// Hooks of the phases `which` accepts that match the call, in load order, with params.
    fn matching(
        &self,
        call: &Call,
        which: impl Fn(Phase) -> bool,
    ) -> Vec<(&Hook, crate::route::Params)> {
        let method = call.head.method.as_str();
        self.hooks
            .iter()
            .filter(|h| which(h.phase))
            .filter_map(|h| h.matcher.matches(method, &call.path.path).map(|p| (h, p)))
            .collect()
    }
}

/// The route-script engine shared by all workers.
pub struct Engine {
    /// Tells this engine's VMs apart in the per-thread cache.
    id: u64,
    /// Current scripts and their generation; a VM built from an older generation is rebuilt.
    current: RwLock<(u64, Arc<Scripts>)>,
    limits: Limits,
    services: Services,
}

thread_local! {
    /// This thread's VMs, by engine id, with the generation they were built from.
    static VMS: RefCell<HashMap<u64, (u64, Arc<Vm>)>> = RefCell::new(HashMap::new());
}

impl Engine {
    /// Load and check the scripts at `root` and the adapters file; errors name `file:line`.
    pub fn load(root: Option<&Path>, limits: Limits, services: Services) -> Result<Engine, Error> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let scripts = Scripts::read(root, services.adapters_file.as_deref())?;
        build_vm(&scripts, &limits, &services)?;
        Ok(Engine {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            current: RwLock::new((1, Arc::new(scripts))),
            limits,
            services,
        })
    }

    /// Re-read the scripts. On failure the old routes keep serving and the error is returned.
    pub fn reload(&self) -> Result<usize, Error> {
        let root = self.read_current().1.root.clone();
        let scripts = Scripts::read(root.as_deref(), self.services.adapters_file.as_deref())?;
        let vm = build_vm(&scripts, &self.limits, &self.services)?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = (cur.0 + 1, Arc::new(scripts));
        Ok(vm.hooks.len())
    }

    /// Run a Lua chunk in this thread's VM, with the globals hooks see (`store`, `docker`, …).
    /// `= expr` and bare expressions return their value, as in the Lua REPL. The result comes
    /// back as JSON (functions and other non-JSON values as their `tostring`).
    pub async fn eval(&self, code: &str) -> Result<serde_json::Value, Error> {
        let vm = self.vm()?;
        let lua = &vm.lua;
        let code = code.trim();
        let code = code
            .strip_prefix('=')
            .map_or(code.to_string(), |e| format!("return {e}"));
        let func = lua
            .load(format!("return {code}"))
            .set_name("=eval")
            .into_function()
            .or_else(|_| lua.load(code.as_str()).set_name("=eval").into_function())
            .map_err(|e| eval_error(&e))?;
        let values: mlua::MultiValue = budget::call_async(lua, &func, self.limits.hook_time, ())
            .await
            .map_err(|e| eval_error(&e))?;
        let mut out: Vec<serde_json::Value> = Vec::new();
        for v in values {
            let j = match lua.from_value::<serde_json::Value>(v.clone()) {
                Ok(j) => j,
                Err(_) => serde_json::Value::String(
                    v.to_string().unwrap_or_else(|_| v.type_name().to_string()),
                ),
            };
            out.push(j);
        }
        Ok(match out.len() {
            0 => serde_json::Value::Null,
            1 => out.remove(0),
            _ => serde_json::Value::Array(out),
        })
    }

    /// Every registered hook: (phase, pattern, file:line), in load order.
    pub fn routes(&self) -> Result<Vec<(&'static str, String, String)>, Error> {
        let vm = self.vm()?;
        Ok(vm
            .hooks
            .iter()
            .map(|h| (h.phase.as_str(), h.matcher.to_string(), h.location.clone()))
            .collect())
    }

    fn read_current(&self) -> (u64, Arc<Scripts>) {
        let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
        (cur.0, cur.1.clone())
    }

    /// This thread's VM, built on first use and after a reload.
    fn vm(&self) -> Result<Arc<Vm>, Error> {
        let (generation, scripts) = self.read_current();
        if let Some(vm) = VMS.with(|v| {
            v.borrow()
                .get(&self.id)
                .filter(|(g, _)| *g == generation)
                .map(|(_, vm)| vm.clone())
        }) {
            return Ok(vm);
        }
        let vm = Arc::new(build_vm(&scripts, &self.limits, &self.services)?);
        VMS.with(|v| v.borrow_mut().insert(self.id, (generation, vm.clone())));
        Ok(vm)
    }
}

/// An eval error: Lua's own message (`eval:1: ...`) without the traceback.
fn eval_error(e: &mlua::Error) -> Error {
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("runtime error: ")
        .trim_start_matches("syntax error: ")
        .to_string();
    Error::Script {
        location: "eval".into(),
        reason: first,
    }
}

/// Create a sandboxed VM, install the namespaces, run the scripts, collect their hooks.
fn build_vm(scripts: &Scripts, limits: &Limits, services: &Services) -> Result<Vm, Error> {
    let files: Vec<String> = scripts
        .files
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let lua_err = |e: mlua::Error| script_error(&e, &files, "", limits);
    let lua = Lua::new_with(
        StdLib::TABLE
            | StdLib::STRING
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::COROUTINE
            | StdLib::OS,
        LuaOptions::default(),
    )
    .map_err(lua_err)?;
    let scripts_dir = match &scripts.root {
        Some(root) if root.is_dir() => root.clone(),
        Some(root) => root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        None => PathBuf::from("."),
    };
    sandbox(&lua, scripts_dir).map_err(lua_err)?;
    // The namespaces scripts see, one module each.
    json::register(&lua).map_err(lua_err)?;
    log::register(&lua).map_err(lua_err)?;
    route::register(&lua).map_err(lua_err)?;
    store::register(&lua, services.store.clone()).map_err(lua_err)?;
    docker::register(
        &lua,
        services.upstream.clone().map(Upstream::new),
        limits.body,
    )
    .map_err(lua_err)?;
    http::register(&lua, limits.body).map_err(lua_err)?;
    powerstrip::register(&lua, limits.body).map_err(lua_err)?;

    lua.set_memory_limit(limits.vm_memory).map_err(lua_err)?;
    let meta = object_meta(&lua).map_err(lua_err)?;
    lua.set_app_data(ObjectMeta(meta));
    lua.set_app_data(Registry::default());
    for (path, src) in &scripts.files {
        let shown = path.display().to_string();
        lua.load(src.as_str())
            .set_name(format!("@{shown}"))
            .into_function()
            .and_then(|f| budget::call_sync(&lua, &f, limits.hook_time))
            .map_err(|e| script_error(&e, &files, &shown, limits))?;
    }
    let mut hooks = lua.remove_app_data::<Registry>().unwrap_or_default().0;
    if let Some(config) = &scripts.adapters {
        adapter_hooks(&lua, config, &mut hooks).map_err(lua_err)?;
    }
    Ok(Vm { lua, hooks, files })
}

/// Hooks for the chains of an `adapters.yml`, made with the same `powerstrip.adapter` scripts use.
fn adapter_hooks(
    lua: &Lua,
    config: &crate::powerstrip::config::Config,
    hooks: &mut Vec<Hook>,
) -> mlua::Result<()> {
    let adapter: Function = lua.globals().get::<Table>("powerstrip")?.get("adapter")?;
    for e in &config.endpoints {
        let chains = [(Phase::Pre, &e.pre), (Phase::Post, &e.post)];
        for (phase, urls) in chains {
            for url in urls {
                hooks.push(Hook {
                    phase,
                    matcher: route::Matcher::Glob(e.glob.clone()),
                    func: adapter.call(url.as_str())?,
                    location: format!("{}:{}", config.file, e.line),
                });
            }
        }
    }
    Ok(())
}

/// Remove what a route script must not reach: processes, files, bytecode.
fn sandbox(lua: &Lua, scripts_dir: PathBuf) -> mlua::Result<()> {
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

/// `file:line` of the Lua code calling into Rust right now.
pub(crate) fn current_location(lua: &Lua) -> Option<String> {
    lua.inspect_stack(1, |d| {
        let src = d.source();
        let file = src.short_src.as_deref().unwrap_or("?").to_string();
        match d.current_line() {
            Some(line) => format!("{file}:{line}"),
            None => file,
        }
    })
}

/// Turn a Lua error into [`Error::Script`] with the best `file:line` available: the first
/// position in one of our script files mentioned by the message or its traceback, else
/// `fallback` (where the hook was registered).
fn script_error(e: &mlua::Error, files: &[String], fallback: &str, limits: &Limits) -> Error {
    let text = e.to_string();
    // A Powerstrip adapter that failed is the adapter's fault, not the script's.
    if let Some((adapter, reason)) = text
        .split_once(powerstrip::FAILED_MARK)
        .and_then(|(_, rest)| rest.split_once(" failed: "))
    {
        return Error::Adapter {
            adapter: adapter.to_string(),
            reason: reason.lines().next().unwrap_or("").to_string(),
        };
    }
    let location = find_location(&text, files).unwrap_or_else(|| fallback.to_string());
    let reason = if text.contains(budget::EXCEEDED) {
        format!(
            "hook exceeded its time budget of {} ms",
            limits.hook_time.as_millis()
        )
    } else if matches!(root_cause(e), mlua::Error::MemoryError(_)) {
        format!(
            "script exceeded the VM memory cap of {} MiB",
            limits.vm_memory >> 20
        )
    } else {
        let first = text.lines().next().unwrap_or("").trim();
        let first = first
            .trim_start_matches("runtime error: ")
            .trim_start_matches("syntax error: ")
            .trim_start_matches("callback error: ");
        // Drop a leading "file:line:" that we report separately.
        let first = match &find_location(first, files) {
            Some(loc) if first.starts_with(loc.as_str()) => {
                first[loc.len()..].trim_start_matches(':').trim()
            }
            _ => first,
        };
        if first.is_empty() {
            text.clone()
        } else {
            first.to_string()
        }
    };
    Error::Script { location, reason }
}

fn root_cause(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_cause(cause),
        mlua::Error::WithContext { cause, .. } => root_cause(cause),
        e => e,
    }
}

/// The first `path.lua:line` in `text`: one of `files` (the scripts), or any other Lua file
/// (a `require`d module, a bundled `stdlib/` one).
fn find_location(text: &str, files: &[String]) -> Option<String> {
    let mut from = 0;
    while let Some(i) = text[from..].find(".lua:") {
        let end_of_name = from + i + 4;
        let digits: String = text[end_of_name + 1..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if !digits.is_empty() {
            let start = text[..end_of_name]
                .rfind(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '[')
                .map_or(0, |j| j + 1);
            let name = &text[start..end_of_name];
            // Prefer the full path of a script when Lua shortened it ("...ts/x.lua").
            let name = files
                .iter()
                .find(|f| f.ends_with(name.trim_start_matches("...")))
                .map(String::as_str)
                .unwrap_or(name);
            return Some(format!("{name}:{digits}"));
        }
        from = end_of_name;
    }
    None
}

/// The hooks' per-call state kept on the [`Call`] between pre and post: the `req` table, so that
/// `req.ctx` reaches the post hooks.
struct CallState {
    req: Table,
}

impl Hooks for Engine {
    fn pre<'a>(&'a self, call: &'a mut Call) -> HookFuture<'a, Option<Response<Body>>> {
        Box::pin(async move {
            let vm = self.vm()?;
            let matched = vm.matching(call, |p| p != Phase::Post);
            let wants_post = !vm.matching(call, |p| p == Phase::Post).is_empty();
            if matched.is_empty() && !wants_post {
                return Ok(None);
            }
            let body = if !matched.is_empty() && request_body_is_json(call) {
                Some(buffer_request_body(call, self.limits.body).await?)
            } else {
                None
            };
            let lua = &vm.lua;
            let le = |e: mlua::Error| script_error(&e, &vm.files, "", &self.limits);
            let req = new_req(lua, call, body.as_ref()).map_err(le)?;
            let mut answer = None;
            for (hook, params) in &matched {
                set_params(lua, &req, params).map_err(le)?;
                let t = Instant::now();
                let out =
                    budget::call_async::<Value>(lua, &hook.func, self.limits.hook_time, &req).await;
                let run = |error: Option<String>| HookRun {
                    phase: hook.phase.as_str(),
                    route: hook.matcher.to_string(),
                    location: hook.location.clone(),
                    duration_us: t.elapsed().as_micros() as u64,
                    error,
                };
                let out = match out {
                    Ok(v) => v,
                    Err(e) => {
                        let err = script_error(&e, &vm.files, &hook.location, &self.limits);
                        call.hooks.push(run(Some(err.to_string())));
                        return Err(err);
                    }
                };
                call.hooks.push(run(None));
                match out {
                    Value::Nil if hook.phase == Phase::Endpoint => {
                        return Err(Error::Script {
                            location: hook.location.clone(),
                            reason: "the endpoint returned no response table".into(),
                        })
                    }
                    Value::Nil => {}
                    v => {
                        answer = Some(response_from_lua(lua, v).map_err(|e| Error::Script {
                            location: hook.location.clone(),
                            reason: e,
                        })?);
                        break;
                    }
                }
            }
            apply_req(call, &req, body).map_err(le)?;
            call.hook_state = Some(Box::new(CallState { req }) as Box<dyn Any + Send + Sync>);
            Ok(answer)
        })
    }

    fn post<'a>(&'a self, call: &'a mut Call, res: &'a mut Response<Body>) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let vm = self.vm()?;
            let matched = vm.matching(call, |p| p == Phase::Post);
            if matched.is_empty() {
                return Ok(());
            }
            let lua = &vm.lua;
            let le = |e: mlua::Error| script_error(&e, &vm.files, "", &self.limits);
            let streaming = response_is_streaming(res, self.limits.body);
            let body = if streaming {
                None
            } else {
                let b = std::mem::replace(res.body_mut(), full(Bytes::new()));
                let bytes = b
                    .collect()
                    .await
                    .map_err(|e| Error::Daemon {
                        upstream: "daemon".into(),
                        reason: format!("reading the response body: {e}"),
                    })?
                    .to_bytes();
                *res.body_mut() = full(bytes.clone());
                Some(bytes)
            };
            let req = match call
                .hook_state
                .take()
                .and_then(|s| s.downcast::<CallState>().ok())
            {
                Some(s) => s.req,
                None => new_req(lua, call, None).map_err(le)?,
            };
            let res_t = new_res(lua, res, body.as_ref(), streaming).map_err(le)?;
            for (hook, params) in &matched {
                set_params(lua, &req, params).map_err(le)?;
                let t = Instant::now();
                let out = budget::call_async::<()>(
                    lua,
                    &hook.func,
                    self.limits.hook_time,
                    (&req, &res_t),
                )
                .await;
                let error = out
                    .err()
                    .map(|e| script_error(&e, &vm.files, &hook.location, &self.limits));
                call.hooks.push(HookRun {
                    phase: "post",
                    route: hook.matcher.to_string(),
                    location: hook.location.clone(),
                    duration_us: t.elapsed().as_micros() as u64,
                    error: error.as_ref().map(|e| e.to_string()),
                });
                if let Some(e) = error {
                    return Err(e);
                }
            }
            call.buffered_response = apply_res(res, &res_t, body, streaming).map_err(le)?;
            Ok(())
        })
    }
}

/// JSON bodies (Docker's API bodies) are buffered for hooks; tar streams (build, load, import,
/// archives) stay streamed.
fn request_body_is_json(call: &Call) -> bool {
    match call.head.headers.get(header::CONTENT_TYPE) {
        Some(ct) => ct
            .to_str()
            .map(|ct| {
                let ct = ct.split(';').next().unwrap_or("").trim();
                ct.eq_ignore_ascii_case("application/json") || ct.ends_with("+json")
            })
            .unwrap_or(false),
        // No type: a small API call (or one trying to hide its body); hooks see it.
        None => true,
    }
}

async fn buffer_request_body(call: &mut Call, cap: usize) -> Result<Bytes, Error> {
    let body = call.body.take().unwrap_or_else(|| full(Bytes::new()));
    match Limited::new(body, cap).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the {} MiB a script may read (--body-limit-mb)",
                cap >> 20
            ),
        )),
        Err(e) => Err(Error::client(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn response_is_streaming(res: &Response<Body>, cap: usize) -> bool {
    if res.status() == StatusCode::SWITCHING_PROTOCOLS
        || crate::hijack::is_stream_content_type(res.headers())
    {
        return true;
    }
    match res
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => n > cap,
        None => !hyper::body::Body::is_end_stream(res.body()),
    }
}

/// The `req` table of DESIGN §3.
fn new_req(lua: &Lua, call: &Call, body: Option<&Bytes>) -> mlua::Result<Table> {
    let req = lua.create_table_with_capacity(0, 8)?;
    req.raw_set("id", call.id)?;
    req.raw_set("method", call.head.method.as_str())?;
    req.raw_set("path", call.path.path.as_str())?;
    req.raw_set("version", call.path.version.as_deref())?;
    if let Some(b) = body {
        req.raw_set("body", lua.create_string(b)?)?;
    }
    let lazy = Lazy {
        headers: call.head.headers.clone(),
        query: Some(call.query().unwrap_or("").to_string()),
    };
    req.raw_set(lazy_key(), lua.create_userdata(lazy)?)?;
    add_json_methods(lua, &req)?;
    Ok(req)
}

/// The `res` table of DESIGN §3.
fn new_res(
    lua: &Lua,
    res: &Response<Body>,
    body: Option<&Bytes>,
    streaming: bool,
) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 6)?;
    t.raw_set("status", res.status().as_u16())?;
    if let Some(b) = body {
        t.raw_set("body", lua.create_string(b)?)?;
    }
    t.raw_set("streaming", streaming)?;
    let lazy = Lazy {
        headers: res.headers().clone(),
        query: None,
    };
    t.raw_set(lazy_key(), lua.create_userdata(lazy)?)?;
    add_json_methods(lua, &t)?;
    Ok(t)
}

/// What `req` / `res` build only when a script first looks: most hooks never read the headers,
/// and turning every header into Lua strings (then checking them for edits) dominated a trivial
/// hook's cost. Kept in the table under [`lazy_key`].
struct Lazy {
    headers: HeaderMap,
    /// The raw query string; `None` for `res` (which has no query and no ctx).
    query: Option<String>,
}

impl mlua::UserData for Lazy {}

/// A key no script can spell: a light userdata.
fn lazy_key() -> mlua::LightUserData {
    static KEY: u8 = 0;
    mlua::LightUserData(std::ptr::addr_of!(KEY) as *mut std::ffi::c_void)
}

/// The metatable giving `req`, `res` and API results their `json()` / `set_json()` methods;
/// made once per VM (app data) rather than two closures per call.
struct ObjectMeta(Table);

fn object_meta(lua: &Lua) -> mlua::Result<Table> {
    let methods = lua.create_table()?;
    methods.set(
        "json",
        lua.create_function(|lua, this: Table| {
            match this.get::<Option<mlua::String>>("body")? {
                // No body or an empty one decodes to nil, so `req:json() or {}` works.
                Some(b) if !b.as_bytes().iter().all(u8::is_ascii_whitespace) => {
                    json::decode(lua, &b.as_bytes())
                }
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    methods.set(
        "set_json",
        lua.create_function(|lua, (this, v): (Table, Value)| {
            this.set("body", lua.create_string(json::encode(lua, v)?)?)
        })?,
    )?;
    let index = lua.create_function(move |lua, (t, k): (Table, Value)| {
        let Value::String(k) = k else {
            return Ok(Value::Nil);
        };
        let k = k.to_str()?;
        let method: Value = methods.raw_get(&*k)?;
        if !method.is_nil() {
            return Ok(method);
        }
        let Some(lazy) = t.raw_get::<Option<mlua::AnyUserData>>(lazy_key())? else {
            return Ok(Value::Nil);
        };
        let lazy = lazy.borrow::<Lazy>()?;
        let built = match (&*k, &lazy.query) {
            ("headers", _) => headers_table(lua, &lazy.headers)?,
            ("query", Some(q)) => query_table(lua, &query_pairs(q))?,
            ("ctx", Some(_)) | ("params", Some(_)) => lua.create_table()?,
            _ => return Ok(Value::Nil),
        };
        t.raw_set(&*k, &built)?;
        Ok(Value::Table(built))
    })?;
    let mt = lua.create_table()?;
    mt.set("__index", index)?;
    Ok(mt)
}

/// Give `t` the `json()` / `set_json()` methods.
fn add_json_methods(lua: &Lua, t: &Table) -> mlua::Result<()> {
    let mt = match lua.app_data_ref::<ObjectMeta>() {
        Some(m) => m.0.clone(),
        None => return Err(mlua::Error::runtime("luastrip: VM without object methods")),
    };
    t.set_metatable(Some(mt))
}

/// `req.params` for the hook about to run (an empty table is made on first access).
fn set_params(lua: &Lua, req: &Table, params: &crate::route::Params) -> mlua::Result<()> {
    if params.is_empty() {
        return req.raw_set("params", Value::Nil);
    }
    let t = lua.create_table_with_capacity(0, params.len())?;
    for (k, v) in params {
        t.raw_set(k.as_str(), v.as_str())?;
    }
    req.raw_set("params", t)
}

/// Header names are lower-case in scripts (as in OpenResty's `ngx.req.get_headers()`);
/// repeated headers are joined with ", ".
fn headers_table(lua: &Lua, headers: &HeaderMap) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        t.set(name.as_str(), joined)?;
    }
    Ok(t)
}

/// Decoded `key=value` pairs of a query string (a repeated key: the last one wins, as in the
/// Lua table).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode_component(k), decode_component(v));
        pairs.retain(|(old, _)| *old != k);
        pairs.push((k, v));
    }
    pairs
}

fn query_table(lua: &Lua, pairs: &[(String, String)]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, pairs.len())?;
    for (k, v) in pairs {
        t.raw_set(k.as_str(), v.as_str())?;
    }
    Ok(t)
}

fn decode_component(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether a script's headers table still says what `orig` says (names are lower-case in Lua,
/// repeated headers joined with ", ").
fn headers_unchanged(t: &Table, orig: &HeaderMap) -> mlua::Result<bool> {
    let mut n = 0;
    for pair in t.pairs::<mlua::String, mlua::String>() {
        let (k, v) = pair?;
        n += 1;
        let k = k.as_bytes();
        let Ok(name) = HeaderName::from_bytes(&k) else {
            return Ok(false);
        };
        let mut values = orig.get_all(&name).iter();
        let same = match (values.next(), values.next()) {
            (Some(one), None) => one.as_bytes() == &v.as_bytes()[..],
            (Some(_), Some(_)) => {
                let joined = orig
                    .get_all(&name)
                    .iter()
                    .map(|x| String::from_utf8_lossy(x.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ");
                joined.as_bytes() == &v.as_bytes()[..]
            }
            (None, _) => false,
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(n == orig.keys_len())
}

/// Whether a script's query table still holds exactly `orig`.
fn query_unchanged(t: &Table, orig: &[(String, String)]) -> mlua::Result<bool> {
    let mut n = 0;
    for pair in t.pairs::<mlua::String, mlua::String>() {
        let (k, v) = pair?;
        n += 1;
        let same = orig.iter().any(|(ok, ov)| {
            ok.as_bytes() == &k.as_bytes()[..] && ov.as_bytes() == &v.as_bytes()[..]
        });
        if !same {
            return Ok(false);
        }
    }
    Ok(n == orig.len())
}

fn string_pairs(t: Option<Table>) -> mlua::Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    if let Some(t) = t {
        for pair in t.pairs::<String, String>() {
            v.push(pair?);
        }
    }
    v.sort();
    Ok(v)
}

/// Whether `now` (a Lua `body` field) differs from the body the hooks were given.
fn body_changed(now: &Option<mlua::String>, given: Option<&Bytes>) -> bool {
    match (now, given) {
        (Some(n), Some(g)) => n.as_bytes()[..] != g[..],
        (None, None) => false,
        _ => true,
    }
}

/// Apply a pre hook's edits of `req` to the call: only what differs from the call.
fn apply_req(call: &mut Call, req: &Table, body: Option<Bytes>) -> mlua::Result<()> {
    let method: String = req.raw_get("method")?;
    if method != call.head.method.as_str() {
        let m = method.to_ascii_uppercase();
        call.head.method = Method::from_bytes(m.as_bytes())
            .map_err(|_| mlua::Error::runtime(format!("req.method {m:?} is not a method")))?;
    }
    let path: String = req.raw_get("path")?;
    let version: Option<String> = req.raw_get("version")?;
    if path != call.path.path || version != call.path.version {
        let mut np = NormalPath::parse(&path).map_err(mlua::Error::runtime)?;
        if np.version.is_none() {
            np.version = version;
        }
        call.path = np;
    }
    // Headers and query exist in the table only if a script looked at them.
    let query = match req.raw_get::<Option<Table>>("query")? {
        Some(qt) if !query_unchanged(&qt, &query_pairs(call.query().unwrap_or("")))? => Some(qt),
        _ => None,
    };
    if let Some(qt) = query {
        let q = encode_query(&qt)?;
        let pq = if q.is_empty() {
            call.head.uri.path().to_string()
        } else {
            format!("{}?{q}", call.head.uri.path())
        };
        call.head.uri = pq
            .parse()
            .map_err(|e| mlua::Error::runtime(format!("req.query: {e}")))?;
    }
    if let Some(ht) = req.raw_get::<Option<Table>>("headers")? {
        if !headers_unchanged(&ht, &call.head.headers)? {
            call.head.headers = header_map(&string_pairs(Some(ht))?)?;
        }
    }
    let now: Option<mlua::String> = req.raw_get("body")?;
    let new_body = if body_changed(&now, body.as_ref()) {
        Some(
            now.map(|n| Bytes::copy_from_slice(&n.as_bytes()))
                .unwrap_or_default(),
        )
    } else {
        body
    };
    if let Some(b) = new_body {
        set_length(&mut call.head.headers, b.len());
        call.buffered_body = Some(b.clone());
        call.body = Some(full(b));
    }
    Ok(())
}

/// Apply post hooks' edits of `res`: only what differs. Streaming responses keep their body.
/// Returns the body the client gets, when it is not a stream.
fn apply_res(
    res: &mut Response<Body>,
    t: &Table,
    body: Option<Bytes>,
    streaming: bool,
) -> mlua::Result<Option<Bytes>> {
    let status: u16 = t.raw_get("status")?;
    if status != res.status().as_u16() {
        *res.status_mut() = StatusCode::from_u16(status).map_err(|_| {
            mlua::Error::runtime(format!("res.status {status} is not a status code"))
        })?;
    }
    if let Some(ht) = t.raw_get::<Option<Table>>("headers")? {
        if !headers_unchanged(&ht, res.headers())? {
            *res.headers_mut() = header_map(&string_pairs(Some(ht))?)?;
        }
    }
    if !streaming {
        let now: Option<mlua::String> = t.raw_get("body")?;
        let sent = if body_changed(&now, body.as_ref()) {
            let b = now
                .map(|b| Bytes::copy_from_slice(&b.as_bytes()))
                .unwrap_or_default();
            set_length(res.headers_mut(), b.len());
            Some(b)
        } else {
            body
        };
        if let Some(b) = &sent {
            *res.body_mut() = full(b.clone());
        }
        return Ok(sent);
    }
    Ok(None)
}

fn header_map(pairs: &[(String, String)]) -> mlua::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| mlua::Error::runtime(format!("bad header name {k:?}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| mlua::Error::runtime(format!("bad value for header {k:?}")))?;
        h.append(name, value);
    }
    Ok(h)
}

fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// A query table as a query string (`a=1&b=x%20y`), keys sorted; empty for an empty table.
fn encode_query(t: &Table) -> mlua::Result<String> {
    Ok(string_pairs(Some(t.clone()))?
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&"))
}

fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Turn a hook's response table into a response: `{status=, json=}` or
/// `{status=, body=, headers=}`.
fn response_from_lua(lua: &Lua, v: Value) -> Result<Response<Body>, String> {
    let t = match v {
        Value::Table(t) => t,
        other => {
            return Err(format!(
                "a hook must return nil or a response table, not a {}",
                other.type_name()
            ))
        }
    };
    let status: u16 = t
        .get::<Option<u16>>("status")
        .map_err(|e| format!("response status: {e}"))?
        .unwrap_or(200);
    let status =
        StatusCode::from_u16(status).map_err(|_| format!("{status} is not a status code"))?;
    let mut headers = match t
        .get::<Option<Table>>("headers")
        .map_err(|e| e.to_string())?
    {
        Some(h) => header_map(&string_pairs(Some(h)).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?,
        None => HeaderMap::new(),
    };
    let json_v: Value = t.get("json").map_err(|e| e.to_string())?;
    let body = if !json_v.is_nil() {
        let mut b = json::encode(lua, json_v).map_err(|e| e.to_string())?;
        b.push(b'\n');
        if !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Bytes::from(b)
    } else {
        match t
            .get::<Option<mlua::String>>("body")
            .map_err(|e| e.to_string())?
        {
            Some(s) => Bytes::copy_from_slice(&s.as_bytes()),
            None => Bytes::new(),
        }
    };
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Ok(res)
}
