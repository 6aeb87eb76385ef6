//! The `route` namespace: scripts register hooks with `route.pre`, `route.post` and
//! `route.endpoint`. Registration only records the pattern, the function and where it was
//! registered (`file:line`); the engine matches calls against them.

use mlua::{Function, Lua, Result};

use crate::route::Pattern;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
    Endpoint,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
            Phase::Endpoint => "endpoint",
        }
    }
}

/// What a hook matches: a route pattern, or a Powerstrip glob from `adapters.yml`.
#[derive(Debug, Clone)]
pub enum Matcher {
    Route(Pattern),
    Glob(crate::powerstrip::config::Glob),
}

impl Matcher {
    /// Match a method and normalised path; captured params for route patterns.
    pub fn matches(&self, method: &str, path: &str) -> Option<crate::route::Params> {
        match self {
            Matcher::Route(p) => p.matches(method, path),
            Matcher::Glob(g) => g.matches(method, path).then(Vec::new),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Route(p) => p.fmt(f),
            Matcher::Glob(g) => f.write_str(&g.text),
        }
    }
}

/// One registered hook.
pub struct Hook {
    pub phase: Phase,
    pub matcher: Matcher,
    pub func: Function,
    /// `file:line` of the `route.*` call, for errors, the journal and `routes`.
    pub location: String,
}

/// Hooks registered while the scripts load, in load order (kept in the VM's app data).
#[derive(Default)]
pub struct Registry(pub Vec<Hook>);

/// Install `route` as a global.
pub fn register(lua: &Lua, _: &super::Services) -> Result<()> {
    let route = lua.create_table()?;
    for phase in [Phase::Pre, Phase::Post, Phase::Endpoint] {
        route.set(
            phase.as_str(),
            lua.create_function(move |lua, (pattern, func): (String, Function)| {
                let pattern = Pattern::parse(&pattern).map_err(mlua::Error::runtime)?;
                let location = super::errors::current_location(lua).unwrap_or_default();
                let mut reg = lua.app_data_mut::<Registry>().ok_or_else(|| {
                    mlua::Error::runtime("routes can only be added while scripts load")
                })?;
                reg.0.push(Hook {
                    phase,
                    matcher: Matcher::Route(pattern),
                    func,
                    location,
                });
                Ok(())
            })?,
        )?;
    }
    lua.globals().set("route", route)
}
