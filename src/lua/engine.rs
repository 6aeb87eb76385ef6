//! The engine: script generations and the Lua VMs that run them.
//!
//! # VMs and threads
//!
//! A generation is one reading of the scripts with one VM per worker thread, plus one for the
//! control socket's `eval`. A worker only ever enters its own VM, so no lock is contended and both
//! cores run scripts; a call keeps the VM it started with from its pre to its post phase, even
//! across a reload. What VMs share lives outside them ([`Services`]): the `store`, the daemon
//! address each VM opens its own `docker.*` pool to, and the helpers' state (volumes, overlay,
//! adapter addresses).
//!
//! # Reload
//!
//! [`Engine::reload`] reads the files and builds every VM of the new generation on a blocking
//! thread, never on a worker; reloads are serialised, so an older reading is never installed over
//! a newer one; and the new generation replaces the old one only once all its VMs have loaded.
//! If any fails, every worker keeps the old one and the error (with `file:line`) is returned.

use std::path::Path;
use std::sync::{Arc, RwLock};

use mlua::{Function, Lua, LuaOptions, StdLib, Table};

use super::errors::{eval_error, script_error};
use super::route::{self, Hook, Phase, Registry};
use super::{budget, message, patterns, sandbox, Limits, Scripts, Services, NAMESPACES};
use crate::call::Call;
use crate::error::Error;

/// A VM with the scripts loaded and their hooks registered.
pub struct Vm {
    pub(crate) lua: Lua,
    pub(crate) hooks: Vec<Hook>,
    /// `docker.on_event` handlers, run in the control socket's VM only.
    pub(crate) events: Vec<super::docker::EventHandler>,
    /// Script paths, to find `file:line` in error messages.
    pub(crate) files: Vec<String>,
    /// The scripts directory with a trailing `/`: clients are shown paths below it.
    pub(crate) root: String,
}

impl Vm {
    /// Hooks of the phases `which` accepts that match the call, in load order, with params.
    pub(crate) fn matching(
        &self,
        call: &Call,
        which: impl Fn(Phase) -> bool,
    ) -> Vec<(&Hook, crate::route::Params)> {
        let method = call.head.method.as_str();
        self.hooks
            .iter()
            .filter(|h| which(h.phase))
            .filter_map(|h| {
                h.matcher
                    .matches(method, call.path.as_str())
                    .map(|p| (h, p))
            })
            .collect()
    }

    /// `file:line` as clients are shown it: below the scripts directory.
    pub(crate) fn shown(&self, location: &str) -> String {
        match location.strip_prefix(self.root.as_str()) {
            Some(rel) if !self.root.is_empty() => rel.to_string(),
            _ => location.to_string(),
        }
    }

    /// Turn a Lua error into the call's error (see [`script_error`]). Clients are shown the
    /// script's path below the scripts directory, never the server's layout; the log has it
    /// whole.
    pub(crate) fn error(&self, e: &mlua::Error, fallback: &str, limits: &Limits) -> Error {
        match script_error(e, &self.files, fallback, limits) {
            Error::Script { location, reason } => {
                let shown = self.shown(&location);
                if shown != location {
                    tracing::warn!(script = %location, %reason, "script error");
                }
                Error::Script {
                    location: shown,
                    reason,
                }
            }
            other => other,
        }
    }
}

/// One reading of the scripts, loaded in every VM.
struct Generation {
    number: u64,
    root: Option<std::path::PathBuf>,
    /// One per worker, then the control socket's.
    vms: Vec<Arc<Vm>>,
}

/// The route-script engine shared by all workers.
pub struct Engine {
    current: RwLock<Arc<Generation>>,
    /// Held while a reload reads and builds, so that reloads are serialised.
    reloading: tokio::sync::Mutex<()>,
    /// How many workers have a VM each.
    workers: usize,
    pub(crate) services: Arc<Services>,
    /// The current generation's number, for those that wait for a reload.
    generations: tokio::sync::watch::Sender<u64>,
}

impl Engine {
    /// Load and check the scripts at `root` and the adapters file, with a VM for each of
    /// `workers` workers; errors name `file:line`.
    pub fn load(root: Option<&Path>, workers: usize, services: Services) -> Result<Engine, Error> {
        let services = Arc::new(services);
        let workers = workers.max(1);
        let generation = build_generation(root, workers, &services, 1)?;
        Ok(Engine {
            current: RwLock::new(Arc::new(generation)),
            reloading: tokio::sync::Mutex::new(()),
            workers,
            services,
            generations: tokio::sync::watch::channel(1).0,
        })
    }

    /// The limits every hook runs under.
    pub fn limits(&self) -> &Limits {
        &self.services.limits
    }

    /// Re-read the scripts and build the new generation off the workers. On failure the old
    /// routes keep serving everywhere and the error is returned. Returns the number of routes.
    pub async fn reload(&self) -> Result<usize, Error> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.generation();
        let (root, workers, services) = (old.root.clone(), self.workers, self.services.clone());
        let next = old.number + 1;
        let built = tokio::task::spawn_blocking(move || {
            build_generation(root.as_deref(), workers, &services, next)
        })
        .await
        .map_err(|e| Error::Internal(format!("the reload thread failed: {e}")))??;
        let routes = built.vms[0].hooks.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built);
        self.generations.send_replace(next);
        Ok(routes)
    }

    fn generation(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The VM of worker `worker` in the current generation.
    pub(crate) fn vm(&self, worker: usize) -> Arc<Vm> {
        let g = self.generation();
        g.vms[worker.min(self.workers - 1)].clone()
    }

    /// The control socket's VM.
    fn control_vm(&self) -> Arc<Vm> {
        let g = self.generation();
        g.vms[self.workers].clone()
    }

    /// Run a Lua chunk in the control socket's VM, with the globals hooks see (`store`,
    /// `docker`, …). `= expr` and bare expressions return their value, as in the Lua REPL. The
    /// result comes back as JSON (functions and other non-JSON values as their `tostring`).
    pub async fn eval(&self, code: &str) -> Result<(serde_json::Value, String), Error> {
        let vm = self.control_vm();
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
        lua.set_app_data(super::log::Printed::default());
        let ran = budget::call_async(lua, &func, self.limits().hook_time, ()).await;
        let printed = lua
            .remove_app_data::<super::log::Printed>()
            .unwrap_or_default()
            .0;
        let values: mlua::MultiValue = ran.map_err(|e| eval_error(&e))?;
        let mut out: Vec<serde_json::Value> = Vec::new();
        for v in values {
            let j = match super::json::to_json(lua, &v, "eval") {
                Ok(j) => j,
                Err(_) => serde_json::Value::String(
                    v.to_string().unwrap_or_else(|_| v.type_name().to_string()),
                ),
            };
            out.push(j);
        }
        let result = match out.len() {
            0 => serde_json::Value::Null,
            1 => out.remove(0),
            _ => serde_json::Value::Array(out),
        };
        Ok((result, printed))
    }

    /// A receiver that sees every reload.
    pub fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generations.subscribe()
    }

    /// Whether the scripts have `docker.on_event` handlers.
    pub fn has_event_handlers(&self) -> bool {
        !self.control_vm().events.is_empty()
    }

    /// Run the `docker.on_event` handlers matching `ev`, in load order, in the control socket's
    /// VM, each under the hook budget. A failing handler is logged with `file:line`; the others
    /// still run.
    pub async fn on_event(&self, ev: &serde_json::Value) {
        let vm = self.control_vm();
        for h in vm.events.iter().filter(|h| h.filter.matches(ev)) {
            let ran = match super::json::to_lua(&vm.lua, ev) {
                Ok(arg) => {
                    budget::call_async::<()>(&vm.lua, &h.func, self.limits().hook_time, arg).await
                }
                Err(e) => Err(e),
            };
            match ran {
                Ok(()) => {
                    tracing::debug!(location = %h.location, action = ?ev["Action"], "event handler ran")
                }
                Err(e) => {
                    let err = vm.error(&e, &h.location, self.limits());
                    tracing::warn!(location = %h.location, error = %err, "a docker.on_event handler failed");
                }
            }
        }
    }

    /// Every registered hook: (phase, pattern, file:line), in load order.
    pub fn routes(&self) -> Vec<(&'static str, String, String)> {
        let vm = self.control_vm();
        vm.hooks
            .iter()
            .map(|h| (h.phase.as_str(), h.matcher.to_string(), h.location.clone()))
            .collect()
    }
}

/// Read the scripts and build `workers` + 1 VMs from them; all or nothing.
fn build_generation(
    root: Option<&Path>,
    workers: usize,
    services: &Services,
    number: u64,
) -> Result<Generation, Error> {
    let scripts = Scripts::read(root, services.adapters_file.as_deref())?;
    let vms = (0..=workers)
        .map(|_| build_vm(&scripts, services).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Generation {
        number,
        root: scripts.root,
        vms,
    })
}

/// Create a sandboxed VM, install the namespaces, run the scripts, collect their hooks.
fn build_vm(scripts: &Scripts, services: &Services) -> Result<Vm, Error> {
    let limits = &services.limits;
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
    sandbox::sandbox(&lua, scripts.dir()).map_err(lua_err)?;
    budget::install(&lua, limits.vm_memory).map_err(lua_err)?;
    patterns::install(&lua).map_err(lua_err)?;
    for (_name, register) in NAMESPACES {
        register(&lua, services).map_err(lua_err)?;
    }
    message::install_object_meta(&lua).map_err(lua_err)?;
    budget::meter(&lua).map_err(lua_err)?;
    // Last: what scripts find from here on is read-only.
    sandbox::protect_builtins(&lua).map_err(lua_err)?;
    lua.set_memory_limit(limits.vm_memory).map_err(lua_err)?;
    lua.set_app_data(Registry::default());
    lua.set_app_data(super::docker::EventRegistry::default());
    for (path, src) in &scripts.files {
        let shown = path.display().to_string();
        lua.load(src.as_str())
            .set_name(format!("@{shown}"))
            .into_function()
            .and_then(|f| budget::call_sync(&lua, &f, limits.hook_time))
            .map_err(|e| script_error(&e, &files, &shown, limits))?;
    }
    let mut hooks = lua.remove_app_data::<Registry>().unwrap_or_default().0;
    let events = lua
        .remove_app_data::<super::docker::EventRegistry>()
        .unwrap_or_default()
        .0;
    if let Some(config) = &scripts.adapters {
        adapter_hooks(&lua, config, &mut hooks).map_err(lua_err)?;
    }
    let root = scripts.dir().display().to_string();
    Ok(Vm {
        lua,
        hooks,
        events,
        files,
        root: if root.is_empty() {
            String::new()
        } else {
            format!("{}/", root.trim_end_matches('/'))
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function of every luastrip namespace a script can reach has its LuaLS stub, so
    /// an editor completes and checks all of it (a new API function without a stub fails here).
    #[tokio::test(flavor = "current_thread")]
    async fn every_namespace_function_has_a_stub() {
        let stubs = include_str!("../../stdlib/types/luastrip.lua");
        let engine = Engine::load(None, 1, Services::default()).unwrap();
        let (names, _) = engine
            .eval(
                "local out = {}
                 for _, ns in ipairs({'route', 'json', 'log', 'store', 'docker', 'http',
                                      'powerstrip', 'zfs', 'overlay'}) do
                   for k, v in pairs(_G[ns]) do
                     if type(v) == 'function' then out[#out + 1] = ns .. '.' .. k end
                   end
                 end
                 table.sort(out)
                 return out",
            )
            .await
            .unwrap();
        let names: Vec<String> = serde_json::from_value(names).unwrap();
        assert!(names.len() > 30, "{names:?}");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| {
                !stubs.contains(&format!("function {n}(")) && !stubs.contains(&format!("{n} = "))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "no stub in stdlib/types/luastrip.lua for {missing:?}"
        );
    }
}
