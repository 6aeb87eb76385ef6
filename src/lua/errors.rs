//! Lua errors to [`Error`]. luastrip's own Lua functions raise typed errors
//! (`mlua::Error::external(Error::…)`: a failing adapter, a budget overrun, a body over the limit)
//! and they come back out unchanged; anything else a script raised becomes [`Error::Script`] with
//! the best `file:line` available.

use mlua::Lua;

use super::Limits;
use crate::error::Error;

/// A typed luastrip error, to raise inside Lua.
pub fn raise(e: Error) -> mlua::Error {
    mlua::Error::external(e)
}

/// The luastrip error inside `e`, if one of our functions raised it.
pub fn typed(e: &mlua::Error) -> Option<&Error> {
    match e {
        mlua::Error::CallbackError { cause, .. } => typed(cause),
        mlua::Error::WithContext { cause, .. } => typed(cause),
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<Error>(),
        _ => None,
    }
}

/// An eval error: Lua's own message (`eval:1: ...`) without the traceback.
pub fn eval_error(e: &mlua::Error) -> Error {
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

/// Turn a Lua error into an [`Error`]: a typed luastrip error as it was raised (an adapter's
/// failure stays the adapter's), else [`Error::Script`] with the best `file:line` available: the
/// first position in one of our script files mentioned by the message or its traceback, else
/// `fallback` (where the hook was registered).
pub fn script_error(e: &mlua::Error, files: &[String], fallback: &str, limits: &Limits) -> Error {
    if let Some(err) = typed(e) {
        return match err {
            // Lua shortens long paths ("...ts/x.lua:6"): give the script's full path.
            Error::Script { location, reason } => Error::Script {
                location: find_location(location, files).unwrap_or_else(|| location.clone()),
                reason: reason.clone(),
            },
            other => other.clone(),
        };
    }
    let text = e.to_string();
    let location = find_location(&text, files).unwrap_or_else(|| fallback.to_string());
    let reason = if is_memory_error(e) {
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

/// Whether `e` is the VM running out of its memory cap.
pub fn is_memory_error(e: &mlua::Error) -> bool {
    matches!(root_cause(e), mlua::Error::MemoryError(_))
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
