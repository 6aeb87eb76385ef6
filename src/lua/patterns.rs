//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` with a bounded amount of work.
//!
//! Lua's pattern matcher runs in C, where the instruction hook that enforces a hook's time budget
//! never fires: `("a"):rep(40):find(("a-"):rep(40) .. "b")` backtracks for hours and pins a worker.
//! These are the same functions, with Lua 5.4's semantics (classes, sets, `%b`, `%f`, captures,
//! position captures, back references, anchors, `gsub` with string, table or function
//! replacements), written in Rust with a step counter: every `CHECK_EVERY` steps the hook's
//! budget is checked, so a pattern overruns its budget by a few milliseconds at most. The
//! differential test below runs them side by side with Lua's own.

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::budget;

/// Lua's limits: captures per pattern, and nested matcher calls ("pattern too complex").
const MAX_CAPTURES: usize = 32;
const MAX_DEPTH: usize = 200;
/// How many matcher steps run between two checks of the hook's budget.
const CHECK_EVERY: u64 = 1 << 14;

const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;

/// Why matching stopped early.
enum Stop {
    /// A malformed pattern or capture index (Lua's message).
    Pattern(String),
    /// The hook's budget ran out (the error to raise).
    Budget(mlua::Error),
}

type Step<T> = Result<T, Stop>;

fn bad<T>(msg: impl Into<String>) -> Step<T> {
    Err(Stop::Pattern(msg.into()))
}

struct Matcher<'a> {
    lua: &'a Lua,
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, isize); MAX_CAPTURES],
    depth: usize,
    steps: u64,
}

impl<'a> Matcher<'a> {
    fn new(lua: &'a Lua, src: &'a [u8], pat: &'a [u8]) -> Self {
        Matcher {
            lua,
            src,
            pat,
            level: 0,
            capture: [(0, 0); MAX_CAPTURES],
            depth: MAX_DEPTH,
            steps: 0,
        }
    }

    fn reset(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    /// Count a step; every CHECK_EVERY steps, stop if the hook's budget is spent.
    fn step(&mut self) -> Step<()> {
        self.steps += 1;
        if self.steps % CHECK_EVERY == 0 {
            budget::check(self.lua).map_err(Stop::Budget)?;
        }
        Ok(())
    }

    /// The pattern byte at `p`; 0 past the end (as C's terminating NUL).
    fn p(&self, p: usize) -> u8 {
        self.pat.get(p).copied().unwrap_or(0)
    }

    fn s(&self, s: usize) -> u8 {
        self.src.get(s).copied().unwrap_or(0)
    }

    fn class_end(&self, mut p: usize) -> Step<usize> {
        let c = self.p(p);
        p += 1;
        match c {
            b'%' => {
                if p >= self.pat.len() {
                    return bad("malformed pattern (ends with '%')");
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return bad("malformed pattern (missing ']')");
                    }
                    let c = self.p(p);
                    p += 1;
                    if c == b'%' && p < self.pat.len() {
                        p += 1;
                    }
                    if self.p(p) == b']' {
                        break;
                    }
                }
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    /// Whether `c` is in `[...]` at `p` (the `[`) .. `ec` (the `]`).
    fn bracket(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.p(p) == b'%' {
                p += 1;
                if class(c, self.p(p)) {
                    return sig;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.p(p - 2) <= c && c <= self.p(p) {
                    return sig;
                }
            } else if self.p(p) == c {
                return sig;
            }
        }
        !sig
    }

    fn single(&self, s: usize, p: usize, ep: usize) -> bool {
        if s >= self.src.len() {
            return false;
        }
        let c = self.src[s];
        match self.p(p) {
            b'.' => true,
            b'%' => class(c, self.p(p + 1)),
            b'[' => self.bracket(c, p, ep - 1),
            pc => pc == c,
        }
    }

    fn balance(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return bad("malformed pattern (missing arguments to '%b')");
        }
        if s >= self.src.len() || self.src[s] != self.p(p) {
            return Ok(None);
        }
        let (b, e) = (self.p(p), self.p(p + 1));
        let mut cont = 1;
        let mut s = s + 1;
        while s < self.src.len() {
            self.step()?;
            let c = self.src[s];
            if c == e {
                cont -= 1;
                if cont == 0 {
                    return Ok(Some(s + 1));
                }
            } else if c == b {
                cont += 1;
            }
            s += 1;
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        let mut i = 0;
        while self.single(s + i, p, ep) {
            self.step()?;
            i += 1;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Step<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return bad("too many captures");
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        let Some(l) = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CAP_UNFINISHED)
        else {
            return bad("invalid pattern capture");
        };
        self.capture[l].1 = (s - self.capture[l].0) as isize;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].1 = CAP_UNFINISHED;
        }
        Ok(r)
    }

    fn check_capture(&self, l: u8) -> Step<usize> {
        let l = l as isize - b'1' as isize;
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CAP_UNFINISHED {
            return bad(format!("invalid capture index %{}", l + 1));
        }
        Ok(l as usize)
    }

    fn match_capture(&self, s: usize, l: u8) -> Step<Option<usize>> {
        let l = self.check_capture(l)?;
        let (init, len) = self.capture[l];
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    /// Match the pattern from `p` against the subject from `s`; the end of the match, if any.
    fn do_match(&mut self, mut s: usize, mut p: usize) -> Step<Option<usize>> {
        if self.depth == 0 {
            return bad("pattern too complex");
        }
        self.depth -= 1;
        let r = loop {
            self.step()?;
            if p == self.pat.len() {
                break Some(s);
            }
            match self.p(p) {
                b'(' => {
                    break if self.p(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)?
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)?
                    };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => {
                    break (s == self.src.len()).then_some(s);
                }
                b'%' if self.p(p + 1) == b'b' => match self.balance(s, p + 2)? {
                    Some(e) => {
                        s = e;
                        p += 4;
                    }
                    None => break None,
                },
                b'%' if self.p(p + 1) == b'f' => {
                    p += 2;
                    if self.p(p) != b'[' {
                        return bad("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.s(s - 1) };
                    if !self.bracket(previous, p, ep - 1) && self.bracket(self.s(s), p, ep - 1) {
                        p = ep;
                    } else {
                        break None;
                    }
                }
                b'%' if self.p(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.p(p + 1))? {
                        Some(e) => {
                            s = e;
                            p += 2;
                        }
                        None => break None,
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.p(ep);
                    if !self.single(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        break None;
                    }
                    match suffix {
                        b'?' => match self.do_match(s + 1, ep + 1)? {
                            Some(r) => break Some(r),
                            None => p = ep + 1,
                        },
                        b'+' => break self.max_expand(s + 1, p, ep)?,
                        b'*' => break self.max_expand(s, p, ep)?,
                        b'-' => break self.min_expand(s, p, ep)?,
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        };
        self.depth += 1;
        Ok(r)
    }

    /// Capture `i` of a match `s..e` (the whole match when there are no captures).
    fn capture_value(&self, i: usize, s: usize, e: usize) -> Step<Capture> {
        if i >= self.level {
            if i != 0 {
                return bad(format!("invalid capture index %{}", i + 1));
            }
            return Ok(Capture::Text(s, e));
        }
        let (init, len) = self.capture[i];
        match len {
            CAP_UNFINISHED => bad("unfinished capture"),
            CAP_POSITION => Ok(Capture::Position(init + 1)),
            len => Ok(Capture::Text(init, init + len as usize)),
        }
    }

    /// The captures of a match as Lua values (`whole`: the match itself when there are none).
    fn captures(&self, whole: Option<(usize, usize)>) -> Step<Vec<Capture>> {
        let n = if self.level == 0 && whole.is_some() {
            1
        } else {
            self.level
        };
        let (s, e) = whole.unwrap_or((0, 0));
        (0..n).map(|i| self.capture_value(i, s, e)).collect()
    }
}

enum Capture {
    Text(usize, usize),
    Position(usize),
}

impl Capture {
    fn to_lua(&self, lua: &Lua, src: &[u8]) -> mlua::Result<Value> {
        Ok(match self {
            Capture::Text(s, e) => Value::String(lua.create_string(&src[*s..*e])?),
            Capture::Position(p) => Value::Integer(*p as i64),
        })
    }
}

/// `ctype.h` classes in the C locale: ASCII only.
fn class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return cl == c,
    };
    if cl.is_ascii_uppercase() {
        !res
    } else {
        res
    }
}

/// Lua's `posrelatI`: a 1-based start position, negative from the end, clamped to 1.
fn start_at(init: Option<i64>, len: usize) -> usize {
    let len = len as i64;
    match init.unwrap_or(1) {
        i if i > 0 => i as usize,
        0 => 1,
        i if i < -len => 1,
        i => (len + i + 1) as usize,
    }
}

fn no_specials(p: &[u8]) -> bool {
    !p.iter().any(|b| b"^$*+?.([%-".contains(b))
}

fn raise(stop: Stop, what: &str) -> mlua::Error {
    match stop {
        Stop::Pattern(m) => mlua::Error::runtime(format!("bad argument to '{what}': {m}")),
        Stop::Budget(e) => e,
    }
}

fn values(lua: &Lua, caps: &[Capture], src: &[u8]) -> mlua::Result<MultiValue> {
    caps.iter().map(|c| c.to_lua(lua, src)).collect()
}

fn find_aux(
    lua: &Lua,
    (s, p, init, plain): (mlua::LuaString, mlua::LuaString, Option<i64>, Option<bool>),
    find: bool,
) -> mlua::Result<MultiValue> {
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let init = start_at(init, src.len()) - 1;
    if init > src.len() {
        return Ok(MultiValue::from_iter([Value::Nil]));
    }
    let what = if find { "find" } else { "match" };
    if find && (plain.unwrap_or(false) || no_specials(&pat)) {
        let hit = if pat.is_empty() {
            Some(0)
        } else {
            src[init..].windows(pat.len()).position(|w| w == &pat[..])
        };
        return Ok(match hit {
            Some(i) => MultiValue::from_iter([
                Value::Integer((init + i + 1) as i64),
                Value::Integer((init + i + pat.len()) as i64),
            ]),
            None => MultiValue::from_iter([Value::Nil]),
        });
    }
    let anchor = pat.first() == Some(&b'^');
    let body = if anchor { &pat[1..] } else { &pat[..] };
    let mut m = Matcher::new(lua, &src, body);
    let mut s1 = init;
    loop {
        m.reset();
        if let Some(e) = m.do_match(s1, 0).map_err(|x| raise(x, what))? {
            if find {
                let caps = m.captures(None).map_err(|x| raise(x, what))?;
                let mut out = vec![Value::Integer((s1 + 1) as i64), Value::Integer(e as i64)];
                out.extend(values(lua, &caps, &src)?);
                return Ok(MultiValue::from_iter(out));
            }
            let caps = m.captures(Some((s1, e))).map_err(|x| raise(x, what))?;
            return values(lua, &caps, &src);
        }
        s1 += 1;
        if s1 > src.len() || anchor {
            break;
        }
    }
    Ok(MultiValue::from_iter([Value::Nil]))
}

fn gmatch(
    lua: &Lua,
    (s, p, init): (mlua::LuaString, mlua::LuaString, Option<i64>),
) -> mlua::Result<Function> {
    let src = s.as_bytes().to_vec();
    let pat = p.as_bytes().to_vec();
    let init = start_at(init, src.len()) - 1;
    let state = std::sync::Mutex::new((init.min(src.len() + 1), None::<usize>));
    lua.create_function(move |lua, ()| {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut m = Matcher::new(lua, &src, &pat);
        let mut from = st.0;
        while from <= src.len() {
            m.reset();
            let e = m.do_match(from, 0).map_err(|x| raise(x, "gmatch"))?;
            if let Some(e) = e.filter(|e| Some(*e) != st.1) {
                *st = (e, Some(e));
                let caps = m
                    .captures(Some((from, e)))
                    .map_err(|x| raise(x, "gmatch"))?;
                return values(lua, &caps, &src);
            }
            from += 1;
        }
        st.0 = src.len() + 1;
        Ok(MultiValue::new())
    })
}

fn gsub(
    lua: &Lua,
    (s, p, repl, max): (mlua::LuaString, mlua::LuaString, Value, Option<i64>),
) -> mlua::Result<(Value, i64)> {
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    match &repl {
        Value::String(_)
        | Value::Integer(_)
        | Value::Number(_)
        | Value::Table(_)
        | Value::Function(_) => {}
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #3 to 'gsub' (string/function/table expected, got {})",
                other.type_name()
            )))
        }
    }
    let repl_text = match &repl {
        Value::Table(_) | Value::Function(_) => None,
        v => Some(
            lua.coerce_string(v.clone())?
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default(),
        ),
    };
    let max = max.unwrap_or(src.len() as i64 + 1);
    let anchor = pat.first() == Some(&b'^');
    let body = if anchor { &pat[1..] } else { &pat[..] };
    let mut m = Matcher::new(lua, &src, body);
    let mut out: Vec<u8> = Vec::with_capacity(src.len());
    let (mut at, mut last, mut n, mut changed) = (0usize, None::<usize>, 0i64, false);
    while n < max {
        m.reset();
        let e = m.do_match(at, 0).map_err(|x| raise(x, "gsub"))?;
        if let Some(e) = e.filter(|e| Some(*e) != last) {
            n += 1;
            changed |= add_value(lua, &m, &mut out, at, e, &repl, repl_text.as_deref())?;
            at = e;
            last = Some(e);
        } else if at < src.len() {
            out.push(src[at]);
            at += 1;
        } else {
            break;
        }
        if anchor {
            break;
        }
    }
    if !changed {
        return Ok((Value::String(s), n));
    }
    out.extend_from_slice(&src[at..]);
    Ok((Value::String(lua.create_string(&out)?), n))
}

/// Add the replacement of the match `s..e` to `out`; whether it changed anything.
fn add_value(
    lua: &Lua,
    m: &Matcher<'_>,
    out: &mut Vec<u8>,
    s: usize,
    e: usize,
    repl: &Value,
    text: Option<&[u8]>,
) -> mlua::Result<bool> {
    let src = m.src;
    if let Some(news) = text {
        let mut i = 0;
        while i < news.len() {
            if news[i] != b'%' {
                out.push(news[i]);
                i += 1;
                continue;
            }
            i += 1;
            match news.get(i).copied() {
                Some(b'%') => out.push(b'%'),
                Some(b'0') => out.extend_from_slice(&src[s..e]),
                Some(d) if d.is_ascii_digit() => {
                    match m
                        .capture_value((d - b'1') as usize, s, e)
                        .map_err(|x| raise(x, "gsub"))?
                    {
                        Capture::Text(a, b) => out.extend_from_slice(&src[a..b]),
                        Capture::Position(p) => out.extend_from_slice(p.to_string().as_bytes()),
                    }
                }
                _ => {
                    return Err(mlua::Error::runtime(
                        "invalid use of '%' in replacement string",
                    ))
                }
            }
            i += 1;
        }
        return Ok(true);
    }
    let value: Value = match repl {
        Value::Function(f) => {
            let caps = m.captures(Some((s, e))).map_err(|x| raise(x, "gsub"))?;
            f.call::<Value>(values(lua, &caps, src)?)?
        }
        Value::Table(t) => {
            let key = m.capture_value(0, s, e).map_err(|x| raise(x, "gsub"))?;
            t.get::<Value>(key.to_lua(lua, src)?)?
        }
        _ => Value::Nil,
    };
    match value {
        Value::Nil | Value::Boolean(false) => {
            out.extend_from_slice(&src[s..e]);
            Ok(false)
        }
        v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
            let text = lua
                .coerce_string(v)?
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default();
            out.extend_from_slice(&text);
            Ok(true)
        }
        other => Err(mlua::Error::runtime(format!(
            "invalid replacement value (a {})",
            other.type_name()
        ))),
    }
}

/// Replace the pattern functions of the VM's `string` table (and so the strings' methods).
/// Call while the VM is built, before the built-ins are made read-only.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let string: Table = lua.globals().get("string")?;
    string.set(
        "find",
        lua.create_function(|lua, args| find_aux(lua, args, true))?,
    )?;
    string.set(
        "match",
        lua.create_function(
            |lua, (s, p, init): (mlua::LuaString, mlua::LuaString, Option<i64>)| {
                find_aux(lua, (s, p, init, None), false)
            },
        )?,
    )?;
    string.set("gmatch", lua.create_function(gmatch)?)?;
    string.set("gsub", lua.create_function(gsub)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A VM with Lua's own functions kept as `lua_find` … and ours installed.
    fn vm() -> Lua {
        let lua = Lua::new();
        lua.load(
            "lua_find, lua_match, lua_gmatch, lua_gsub = string.find, string.match, string.gmatch, string.gsub",
        )
        .exec()
        .unwrap();
        install(&lua).unwrap();
        budget::install(&lua, usize::MAX).unwrap();
        lua
    }

    #[test]
    fn known_cases() {
        let lua = vm();
        lua.load(
            r#"
            assert(("hello world"):find("o w") == 5)
            assert(("hello world"):find("l+") == 3)
            assert(select(2, ("hello world"):find("l+")) == 4)
            assert(("key = value"):match("^(%w+)%s*=%s*(%w+)$") == "key")
            assert(select(2, ("key = value"):match("^(%w+)%s*=%s*(%w+)$")) == "value")
            assert(("THE (quick) fox"):find("%((%a+)%)") == 5)
            assert(("f(a(b)c)d"):match("%b()") == "(a(b)c)")
            assert(("THE (quick) fox"):gsub("%f[%a]%a+", "X") == "X (X) X")
            assert(("abc"):gsub("", "-") == "-a-b-c-")
            assert(("hello"):gsub("l", { l = "L" }) == "heLLo")
            assert(("hello"):gsub("(h)(e)", "%2%1") == "ehllo")
            assert(("x = 1, y = 2"):gsub("(%w+) = (%w+)", function(k, v) return v .. "=" .. k end) == "1=x, 2=y")
            assert(("abc"):match("()b()") == 2)
            local t = {}
            for k, v in ("a=1, b=2"):gmatch("(%w+)=(%w+)") do t[#t + 1] = k .. v end
            assert(table.concat(t, ",") == "a1,b2")
            assert(("aaa"):match("(a)%1") == "a")
            assert(("a.b"):find(".", 1, true) == 2)
            assert(not pcall(string.find, "a", "(%"))
            assert(not pcall(string.find, "a", string.rep("(", 40)))
            "#,
        )
        .exec()
        .unwrap();
    }

    #[tokio::test]
    async fn backtracking_stops_at_the_hook_budget() {
        let lua = vm();
        let hook: Function = lua
            .load(r#"return function() return string.rep("a", 40):find(string.rep("a-", 40) .. "b") end"#)
            .eval()
            .unwrap();
        let t = Instant::now();
        let out = budget::call_async::<()>(&lua, &hook, Duration::from_millis(50), ()).await;
        let e = out.unwrap_err();
        assert!(e.to_string().contains("time budget"), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 3000, failure_persistence: None, ..Default::default()
        })]

        /// Our functions and Lua's give the same results (or both fail) on any small input.
        #[test]
        fn same_as_lua(
            subject in "[ab().%\\[\\]^$ -]{0,12}",
            pattern in proptest::collection::vec(proptest::sample::select(vec![
                "a", "b", ".", "%a", "%A", "%s", "%%", "%(", "[ab]", "[^a]", "[a-c]", "[%a]", "[]]",
                "*", "+", "-", "?", "(", ")", "()", "%1", "%b()", "%f[a]", "^", "$", "%", "[", "]",
            ]), 0..8),
            repl in proptest::sample::select(vec!["x", "%0", "%1", "%%", "%2", "<%1>", "%"]),
            init in -4i64..6,
        ) {
            let lua = vm();
            let pattern: String = pattern.concat();
            let g = lua.globals();
            g.set("S", subject.as_str()).unwrap();
            g.set("P", pattern.as_str()).unwrap();
            g.set("R", repl).unwrap();
            g.set("I", init).unwrap();
            let both: (String, String) = lua.load(r##"
                local function run(find, match, gmatch, gsub)
                  local out = {}
                  local function add(ok, ...)
                    if not ok then out[#out + 1] = "error" return end
                    local n = select("#", ...)
                    local parts = {}
                    for i = 1, n do parts[i] = tostring((select(i, ...))) end
                    out[#out + 1] = table.concat(parts, "|")
                  end
                  add(pcall(find, S, P, I))
                  add(pcall(match, S, P, I))
                  add(pcall(gsub, S, P, R))
                  add(pcall(gsub, S, P, function(...) return "[" .. table.concat({...}, ",") .. "]" end))
                  add(pcall(function()
                    local r = {}
                    for a, b in gmatch(S, P, I) do r[#r + 1] = tostring(a) .. "/" .. tostring(b) end
                    return table.concat(r, ";")
                  end))
                  return table.concat(out, "\n")
                end
                return run(string.find, string.match, string.gmatch, string.gsub),
                       run(lua_find, lua_match, lua_gmatch, lua_gsub)
            "##).eval().unwrap();
            proptest::prop_assert_eq!(&both.0, &both.1, "subject {:?} pattern {:?}", subject, pattern);
        }
    }
}
