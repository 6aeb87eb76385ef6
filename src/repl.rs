//! `luastrip repl`: a rustyline front end on the control socket ([`crate::control`]).
//!
//! Every command is one HTTP call on a fresh connection, so when the gateway goes away the REPL
//! says so and simply works again once it is back. `-c COMMAND` runs one command and exits
//! (non-zero if it failed), for scripts and tests.
//!
//! Commands: `calls [FILTER]`, `show ID [diff|json]`, `tail [FILTER]` (until Ctrl-C), `routes`, `reload`,
//! `intercept`, `resume`, `drop`, `edit`, `replay`, `stats`, `help`, `quit` (or `exit`); anything
//! else is Lua evaluated in the gateway (`= expr` prints a value, `nil` too). A line that starts
//! with a plain word and is neither, or is one lone word (`rotues`: as Lua, an expression whose
//! value nobody asked for), is an unknown command, and the nearest command is suggested. Lua that
//! is not finished yet (`for i = 1, 3 do`) continues on the next line under a `...>` prompt, as
//! `lua` and Python do; Ctrl-C abandons it. A session that turned intercept on turns it off when
//! it ends.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::control::client::{read_body, refusal, Flows};

const HELP: &str = "\
calls [FILTER]   recent calls (filter: ~m METHOD ~u REGEX ~s 4.. ~h REGEX ~e ~r ROUTE, ! & | ( ))
show ID          one call in full: status, timings, what the hooks changed, hooks, heads,
                 pretty bodies, error (`show ID diff`: only the changes; `show ID json`: raw)
tail [FILTER]    calls as they finish, until Ctrl-C
routes           every hook with its file:line, hits, errors and p50/p99 time
record           the files every call is being recorded to
record start F   record every call to file F (NDJSON, secrets redacted), for `luastrip test`
record stop [F]  stop recording to F, or to every file
stats            the gateway's metrics (calls by status, errors by source, open sessions …)
reload           reload scripts and adapters.yml
intercept F      hold calls matching F before the daemon sees them, until `intercept off`
intercept off    stop holding, and let every held call go on (quitting the REPL does it too)
intercepted      the held calls
resume ID [JSON] let a held call go on, optionally edited ({\"path\": …, \"body\": {…}})
resume all       let every held call go on
drop ID|all      refuse a held call, or all (the client gets a 403)
edit ID          edit a held call in $EDITOR (method, path, headers, body), then let it go on
replay ID [JSON] send a journaled call again, optionally edited ({\"body\": …})
help             this text
quit, exit       leave
anything else    Lua, run in the gateway (= expr prints a value), e.g. = store.get(\"pings\")";

/// The words that are REPL commands rather than Lua.
const COMMANDS: &[&str] = &[
    "calls",
    "show",
    "tail",
    "routes",
    "reload",
    "intercept",
    "intercepted",
    "resume",
    "drop",
    "edit",
    "replay",
    "stats",
    "record",
    "help",
    "quit",
    "exit",
];

/// The prompts: a new line, and a line that continues unfinished Lua.
const PROMPT: &str = "luastrip> ";
const CONTINUE: &str = "     ...> ";

/// Tab completion (commands, call ids, Lua globals and table keys from the live VM) and
/// multi-line Lua input (a chunk that ends too early continues on the next line).
struct Helper {
    control: Arc<Flows>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Helper {
    fn lua_keys(&self, table: &str) -> Vec<String> {
        let code = format!(
            "local t = {table}; local r = {{}}; if type(t) == 'table' then for k in pairs(t) do \
             if type(k) == 'string' then r[#r + 1] = k end end end; table.sort(r); return json.array(r)"
        );
        self.rt
            .block_on(self.control.call(Method::POST, "/eval", &code))
            .ok()
            .and_then(|v| v["result"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect()
    }
}

/// Where the word being completed starts: after the last character that cannot be part of a Lua
/// name path (`store.get`), a byte index on a character boundary whatever the input holds.
fn word_start(before: &str) -> usize {
    before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

impl rustyline::completion::Completer for Helper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = line.get(..pos).unwrap_or(line);
        let start = word_start(before);
        let word = &before[start..];
        if before.starts_with("show ")
            || before.starts_with("resume ")
            || before.starts_with("drop ")
        {
            let path = if before.starts_with("show ") {
                "/calls?limit=50"
            } else {
                "/intercepted"
            };
            let v = self
                .rt
                .block_on(self.control.call(Method::GET, path, ""))
                .unwrap_or_default();
            let list = if before.starts_with("show ") {
                v
            } else {
                v["held"].clone()
            };
            let ids = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_u64().map(|i| i.to_string()))
                .filter(|i| i.starts_with(word))
                .collect();
            return Ok((start, ids));
        }
        let mut out: Vec<String> = Vec::new();
        if start == 0 {
            out.extend(
                COMMANDS
                    .iter()
                    .filter(|c| c.starts_with(word))
                    .map(|c| c.to_string()),
            );
        }
        let (table, key) = match word.rfind('.') {
            Some(i) => (&word[..i], &word[i + 1..]),
            None => ("_G", word),
        };
        let prefix = if table == "_G" {
            String::new()
        } else {
            format!("{table}.")
        };
        out.extend(
            self.lua_keys(table)
                .into_iter()
                .filter(|k| k.starts_with(key))
                .map(|k| format!("{prefix}{k}")),
        );
        out.sort();
        out.dedup();
        Ok((start, out))
    }
}

/// Every line is taken as typed: the loop in [`run`] keeps an unfinished Lua block and asks for
/// the rest under its own prompt.
impl rustyline::validate::Validator for Helper {}

impl rustyline::hint::Hinter for Helper {
    type Hint = String;
}

impl rustyline::highlight::Highlighter for Helper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        default: bool,
    ) -> Cow<'b, str> {
        // Colour only on a terminal that asked for none of NO_COLOR.
        if default && std::env::var_os("NO_COLOR").is_none() {
            Cow::Owned(format!("\x1b[1;36m{prompt}\x1b[0m"))
        } else {
            Cow::Borrowed(prompt)
        }
    }
}

impl rustyline::Helper for Helper {}

/// What a line that is not a REPL command is, as Lua.
#[derive(Debug, PartialEq)]
enum LuaInput {
    /// It compiles, as an expression or as a chunk.
    Complete,
    /// It could still become Lua: it fails only at its end (`for i = 1, 3 do`, `= (40 +`).
    Unfinished,
    /// It is not Lua.
    Broken,
}

/// Lua's own test: compile the line as an expression (`= expr`, or a bare expression) and as a
/// chunk; a chunk that fails only at `<eof>` is unfinished.
fn lua_input(input: &str) -> LuaInput {
    let lua = mlua::Lua::new();
    let compiles = |src: &str| lua.load(src).into_function();
    let forms = match input.trim().strip_prefix('=') {
        Some(e) => vec![format!("return {e}")],
        None => vec![format!("return {input}"), input.to_string()],
    };
    let errors: Vec<String> = forms
        .iter()
        .filter_map(|f| compiles(f).err().map(|e| e.to_string()))
        .collect();
    if errors.len() < forms.len() {
        LuaInput::Complete
    } else if errors.iter().any(|e| e.contains("near <eof>")) {
        LuaInput::Unfinished
    } else {
        LuaInput::Broken
    }
}

/// Lua's reserved words: a line starting with one is Lua, never a command.
const LUA_KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

/// A mistyped command: a line that starts with a plain word (not a command, not a Lua keyword)
/// and is not Lua, or is that one word alone (`rotues`, `clear`), which Lua would read as an
/// expression nobody asked the value of (`= name` asks for it).
fn unknown_command(line: &str) -> Option<&str> {
    let word = line.split_whitespace().next()?;
    let plain = word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain || LUA_KEYWORDS.contains(&word) || COMMANDS.contains(&word) {
        return None;
    }
    (line.trim() == word || lua_input(line) == LuaInput::Broken).then_some(word)
}

/// The command nearest to a mistyped `word` (a letter or two off, or two swapped), if any.
fn nearest_command(word: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2 && *d < c.len())
        .min()
        .map(|(_, c)| c)
}

/// Where log lines go while an interactive REPL owns the terminal: printed above its prompt,
/// never through half-typed input (`serve --repl`).
static PRINTER: std::sync::Mutex<Option<Box<dyn rustyline::ExternalPrinter + Send>>> =
    std::sync::Mutex::new(None);

/// While a REPL session intercepts, each call as it is held is announced above the prompt
/// (with what can be done with it); stopped when dropped.
struct HeldNotices {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeldNotices {
    fn start(flows: Arc<Flows>) -> HeldNotices {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let mut seen = std::collections::BTreeSet::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(v) = rt.block_on(flows.call(Method::GET, "/intercepted", "")) {
                    for h in v["held"].as_array().into_iter().flatten() {
                        let Some(id) = h["id"].as_u64() else { continue };
                        if seen.insert(id) {
                            // One write: the printer prints each write as a line.
                            let line = format!(
                                "held {id}: {} {}  (resume {id} | edit {id} | drop {id})\n",
                                h["method"].as_str().unwrap_or(""),
                                h["raw"].as_str().unwrap_or("")
                            );
                            let _ = LogWriter.write_all(line.as_bytes());
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        });
        HeldNotices {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HeldNotices {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The log writer of `luastrip`: stderr, or above the REPL's prompt while one runs. One log
/// line is one write (tracing's formatter writes each event whole).
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut printer = PRINTER.lock().unwrap_or_else(|e| e.into_inner());
        match printer.as_mut() {
            Some(p) => {
                let line = String::from_utf8_lossy(buf);
                p.print(line.trim_end_matches('\n').to_string())
                    .map_err(std::io::Error::other)?;
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Run the REPL on `flows` (a gateway's control socket, or a recorded file): one `command`, or
/// interactively.
/// Output goes to `out`. Returns whether the (last) command succeeded.
pub fn run(flows: Flows, command: Option<&str>, out: &mut dyn Write) -> Result<bool, String> {
    let flows = Arc::new(flows);
    let control = &*flows;
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?,
    );
    if let Some(cmd) = command {
        return Ok(rt.block_on(execute(control, cmd, out)));
    }
    let mut editor: rustyline::Editor<Helper, rustyline::history::DefaultHistory> =
        rustyline::Editor::new().map_err(|e| e.to_string())?;
    editor.set_helper(Some(Helper {
        control: flows.clone(),
        rt: rt.clone(),
    }));
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".luastrip_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    if let Ok(p) = editor.create_external_printer() {
        *PRINTER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(p));
    }
    let _ = writeln!(
        out,
        "luastrip repl on {} — help for commands",
        control.describe()
    );
    let mut ok = true;
    // Whether this session turned intercept on: quitting turns it off again, so that no client
    // of the gateway is left waiting on a REPL that is gone.
    let mut intercepting = false;
    let mut notices: Option<HeldNotices> = None;
    // An unfinished Lua block, kept until the line that finishes it.
    let mut block = String::new();
    loop {
        let prompt = if block.is_empty() { PROMPT } else { CONTINUE };
        match editor.readline(prompt) {
            Ok(line) => {
                if block.is_empty() && line.trim().is_empty() {
                    continue;
                }
                if !block.is_empty() {
                    block.push('\n');
                }
                block.push_str(&line);
                let first = block.split_whitespace().next().unwrap_or("");
                if !COMMANDS.contains(&first) && lua_input(&block) == LuaInput::Unfinished {
                    continue;
                }
                let text = std::mem::take(&mut block);
                let line = text.trim();
                let _ = editor.add_history_entry(line);
                if line == "quit" || line == "exit" {
                    break;
                }
                ok = rt.block_on(execute(control, line, out));
                if let Some(f) = line.strip_prefix("intercept") {
                    let f = f.trim();
                    if ok && !f.is_empty() && line.starts_with("intercept ") {
                        intercepting = f != "off";
                        notices = intercepting.then(|| HeldNotices::start(flows.clone()));
                    }
                }
            }
            // Ctrl-C abandons an unfinished block (or the line being typed), as `lua` does.
            Err(rustyline::error::ReadlineError::Interrupted) => block.clear(),
            Err(_) => break,
        }
    }
    drop(notices);
    if intercepting {
        rt.block_on(execute(control, "intercept off", out));
    }
    *PRINTER.lock().unwrap_or_else(|e| e.into_inner()) = None;
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(ok)
}

/// Run one command; print its result; return whether it succeeded.
async fn execute(control: &Flows, line: &str, out: &mut dyn Write) -> bool {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    // A path segment (a call id as typed).
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let result = match word {
        "help" => {
            let _ = writeln!(out, "{HELP}");
            return true;
        }
        "calls" => control
            .call(
                Method::GET,
                &format!(
                    "/calls?{}",
                    crate::route::query::encode([("limit", "50"), ("filter", rest)])
                ),
                "",
            )
            .await
            .map(|v| print_calls(&v, out)),
        "show" => {
            let (id, view) = match rest.rsplit_once(' ') {
                Some((id, v @ ("json" | "diff"))) => (id.trim(), v),
                _ => (rest, ""),
            };
            control
                .call(Method::GET, &format!("/calls/{}", enc(id)), "")
                .await
                .map(|v| match view {
                    "json" => print_json(&v, out),
                    "diff" => print_diff(&v, out, true),
                    _ => print_call(&v, out),
                })
        }
        "routes" => control.call(Method::GET, "/routes", "").await.map(|v| {
            for r in v.as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "{:8} {:40} {}{}",
                    r["phase"].as_str().unwrap_or(""),
                    r["pattern"].as_str().unwrap_or(""),
                    r["location"].as_str().unwrap_or(""),
                    match r["hits"].as_u64() {
                        Some(h) if h > 0 => format!(
                            "  hits {h} errors {} p50 {}us p99 {}us",
                            r["errors"], r["p50_us"], r["p99_us"]
                        ),
                        _ => String::new(),
                    }
                );
            }
        }),
        "stats" => stats(control, out).await,
        "record" => record(control, rest, out).await,
        "reload" => control.call(Method::POST, "/reload", "").await.map(|v| {
            let _ = writeln!(out, "reloaded: {} routes", v["routes"]);
        }),
        "tail" => {
            let q = crate::route::query::encode([("filter", rest)]);
            tail(control, &format!("/tail?{q}"), out).await
        }
        "intercept" => control
            .call(Method::POST, "/intercept", rest)
            .await
            .map(|v| {
                let _ = match v["intercept"].as_str() {
                    Some(f) => writeln!(
                        out,
                        "intercepting {f}: matching calls wait in `intercepted` until resumed \
                         or dropped; `intercept off` lets them all go on"
                    ),
                    None => writeln!(
                        out,
                        "not intercepting; {} held call(s) let go on",
                        v["released"].as_u64().unwrap_or(0)
                    ),
                };
            }),
        "intercepted" => control
            .call(Method::GET, "/intercepted", "")
            .await
            .map(|v| {
                for h in v["held"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "{:>6}  {:6} {}",
                        h["id"],
                        h["method"].as_str().unwrap_or(""),
                        h["raw"].as_str().unwrap_or("")
                    );
                }
            }),
        "edit" => edit(control, rest, out).await,
        "replay" => {
            let (id, edit) = rest.split_once(' ').unwrap_or((rest, ""));
            control
                .call(Method::POST, &format!("/replay/{}", enc(id)), edit)
                .await
                .map(|v| print_json(&v, out))
        }
        "resume" | "drop" if rest == "all" => control
            .call(Method::POST, &format!("/intercepted/all/{word}"), "")
            .await
            .map(|v| {
                let _ = writeln!(out, "{word}: {} held call(s)", v["calls"]);
            }),
        "resume" | "drop" => {
            let (id, edit) = rest.split_once(' ').unwrap_or((rest, ""));
            control
                .call(
                    Method::POST,
                    &format!("/intercepted/{}/{word}", enc(id)),
                    edit,
                )
                .await
                .map(|_| {
                    let _ = writeln!(out, "{word}: {id}");
                })
        }
        // Leaving is the interactive loop's; under -c there is nothing to leave.
        "quit" | "exit" => Ok(()),
        _ => match unknown_command(line) {
            Some(w) => Err(match nearest_command(w) {
                Some(c) => format!(
                    "unknown command {w:?}: did you mean {c}? (help lists them; Lua runs as a statement, or = expr)"
                ),
                None => format!(
                    "unknown command {w:?} (help lists them; Lua runs as a statement, or = expr)"
                ),
            }),
            None => control.call(Method::POST, "/eval", line).await.map(|v| {
                let _ = write!(out, "{}", v["printed"].as_str().unwrap_or_default());
                if !v["result"].is_null() {
                    print_json(&v["result"], out);
                } else if line.trim_start().starts_with('=') {
                    let _ = writeln!(out, "nil");
                }
            }),
        },
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            // Later lines (a filter's caret) keep their column under the first line's text.
            let _ = writeln!(out, "error: {}", e.replace('\n', "\n       "));
            false
        }
    }
}

fn print_json(v: &Value, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

/// `2026-11-25 05:20:31.123 UTC` from milliseconds since the epoch.
fn utc(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year}-{month:02}-{day:02} {h:02}:{m:02}:{sec:02}.{milli:03} UTC")
}

/// A body as a person reads it: pretty JSON if it is JSON, else the text.
fn readable_body(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_string()),
        Err(_) => body.to_string(),
    }
}

/// One call record, readable: the line, timings, hooks, heads, bodies (pretty JSON), error.
fn print_call(c: &Value, out: &mut dyn Write) {
    let ms = |us: &Value| us.as_u64().map(|u| format!("{:.1} ms", u as f64 / 1000.0));
    let status = match (c["status"].as_u64(), c["cancelled"].as_bool()) {
        (Some(s), _) => {
            http::StatusCode::from_u16(s as u16).map_or(s.to_string(), |st| st.to_string())
        }
        (None, Some(true)) => "cancelled (the client went away)".into(),
        _ => "no answer yet".into(),
    };
    let _ = writeln!(
        out,
        "call {}  {} {}  → {status}  in {}{}",
        c["id"],
        c["method"].as_str().unwrap_or(""),
        c["raw"].as_str().unwrap_or(""),
        ms(&c["duration_us"]).unwrap_or_default(),
        ms(&c["upstream_us"])
            .map(|d| format!(" (daemon {d})"))
            .unwrap_or_default()
    );
    let mut notes = vec![utc(c["started_ms"].as_u64().unwrap_or(0))];
    if let Some(r) = c["replay_of"].as_u64() {
        notes.push(format!("replay of call {r}"));
    }
    if c["hijack"].as_str().is_some_and(|h| h != "no") {
        notes.push(format!("hijacked ({})", c["hijack"].as_str().unwrap_or("")));
    }
    if c["streaming"].as_bool() == Some(true) {
        notes.push("streamed answer".into());
    }
    if let Some(b) = c.get("stream_bytes").filter(|b| b.is_object()) {
        notes.push(format!(
            "carried {} bytes to the client, {} to the daemon",
            b["daemon_to_client"], b["client_to_daemon"]
        ));
    }
    let _ = writeln!(out, "  {}", notes.join(", "));
    if let Some(e) = c["error"]["message"].as_str() {
        let _ = writeln!(
            out,
            "error ({}): {e}",
            c["error"]["source"].as_str().unwrap_or("")
        );
    }
    print_diff(c, out, false);
    let hooks = c["hooks"].as_array().cloned().unwrap_or_default();
    if !hooks.is_empty() {
        let _ = writeln!(out, "hooks:");
        for h in hooks {
            let _ = writeln!(
                out,
                "  {:5} {:32} {}  {}us{}",
                h["phase"].as_str().unwrap_or(""),
                h["route"].as_str().unwrap_or(""),
                h["location"].as_str().unwrap_or(""),
                h["duration_us"],
                h["error"]
                    .as_str()
                    .map(|e| format!("  ! {e}"))
                    .unwrap_or_default()
            );
        }
    }
    for (title, heads, body) in [
        ("request", "request_headers", "request_body"),
        ("response", "response_headers", "response_body"),
    ] {
        let pairs = c[heads].as_array().cloned().unwrap_or_default();
        if !pairs.is_empty() {
            let _ = writeln!(out, "{title} headers:");
            for p in pairs {
                let _ = writeln!(
                    out,
                    "  {}: {}",
                    p[0].as_str().unwrap_or(""),
                    p[1].as_str().unwrap_or("")
                );
            }
        }
        if let Some(b) = c[body].as_str().filter(|b| !b.trim().is_empty()) {
            let _ = writeln!(out, "{title} body:");
            for line in readable_body(b).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
}

/// What the hooks changed on a call ([`crate::journal::diff`]); `always` says so when nothing did.
fn print_diff(c: &Value, out: &mut dyn Write, always: bool) {
    let Ok(rec) = serde_json::from_value::<crate::journal::CallRecord>(c.clone()) else {
        return;
    };
    let changes = crate::journal::diff::changes(&rec);
    if changes.is_empty() {
        if always {
            let _ = writeln!(out, "the hooks changed nothing");
        }
        return;
    }
    let _ = writeln!(out, "changed by hooks:");
    for c in changes {
        let _ = writeln!(out, "  {c}");
    }
}

fn print_calls(v: &Value, out: &mut dyn Write) {
    for c in v.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>6}  {:6} {:>3} {:>8}us  {}{}{}",
            c["id"].as_u64().unwrap_or(0),
            c["method"].as_str().unwrap_or(""),
            c["status"]
                .as_u64()
                .map_or("-".to_string(), |s| s.to_string()),
            c["duration_us"].as_u64().unwrap_or(0),
            c["raw"].as_str().unwrap_or(""),
            c["error"]["message"]
                .as_str()
                .map(|m| format!("  ! {m}"))
                .unwrap_or_default(),
            c["replay_of"]
                .as_u64()
                .map(|r| format!("  (replay of {r})"))
                .unwrap_or_default()
        );
    }
}

/// The metrics, without Prometheus' comment lines.
async fn stats(control: &Flows, out: &mut dyn Write) -> Result<(), String> {
    let bytes = read_body(control.send(Method::GET, "/metrics", "").await?).await?;
    for line in String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// `record` (what is being recorded), `record start FILE`, `record stop [FILE]`. A relative
/// FILE is taken from the REPL's directory, not the gateway's.
async fn record(control: &Flows, rest: &str, out: &mut dyn Write) -> Result<(), String> {
    let (verb, file) = rest.split_once(' ').unwrap_or((rest, ""));
    let file = match file.trim() {
        "" => String::new(),
        f => std::path::absolute(f)
            .map_err(|e| format!("{f}: {e}"))?
            .display()
            .to_string(),
    };
    let v = match verb {
        "" => control.call(Method::GET, "/record", "").await?,
        "start" if file.is_empty() => return Err("record start FILE".into()),
        "start" => Value::Array(vec![control.call(Method::POST, "/record", &file).await?]),
        "stop" => control.call(Method::POST, "/record/stop", &file).await?,
        other => {
            return Err(format!(
                "record {other:?}? record, record start FILE, record stop [FILE]"
            ))
        }
    };
    let files = v.as_array().cloned().unwrap_or_default();
    if files.is_empty() {
        let _ = writeln!(out, "not recording");
    }
    for f in files {
        let _ = writeln!(
            out,
            "{} {}: {} calls written{}",
            if verb == "stop" {
                "stopped"
            } else {
                "recording"
            },
            f["file"].as_str().unwrap_or(""),
            f["written"],
            match f["dropped"].as_u64() {
                Some(n) if n > 0 => format!(", {n} dropped (the disk fell behind)"),
                _ => String::new(),
            }
        );
    }
    Ok(())
}

/// Open a held call in `$VISUAL` / `$EDITOR` (default vi) as JSON, then resume it as edited.
async fn edit(control: &Flows, id: &str, out: &mut dyn Write) -> Result<(), String> {
    let v = control.call(Method::GET, "/intercepted", "").await?;
    let held = v["held"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["id"].as_u64().is_some_and(|n| n.to_string() == id))
        .ok_or_else(|| format!("call {id} is not held"))?;
    let edited = crate::control::client::edit_held(held)?;
    control
        .call(Method::POST, &format!("/intercepted/{id}/resume"), &edited)
        .await?;
    let _ = writeln!(out, "resumed {id} as edited");
    Ok(())
}

/// Print calls as they finish until Ctrl-C.
async fn tail(control: &Flows, path: &str, out: &mut dyn Write) -> Result<(), String> {
    let res = control.send(Method::GET, path, "").await?;
    let status = res.status();
    if !status.is_success() {
        let v = serde_json::from_slice(&read_body(res).await?).unwrap_or(Value::Null);
        return Err(refusal(&v, status));
    }
    let mut body = res.into_body();
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            frame = body.frame() => match frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        pending.extend_from_slice(data);
                        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=i).collect();
                            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                                if v["event"] == "helper" {
                                    let _ = writeln!(
                                        out,
                                        "{:>6}  {:6}   {}",
                                        "",
                                        v["helper"].as_str().unwrap_or(""),
                                        v["message"].as_str().unwrap_or("")
                                    );
                                } else if v["event"] == "start" {
                                    let _ = writeln!(
                                        out,
                                        "{:>6}  {:6}   … started  {}",
                                        v["id"].as_u64().unwrap_or(0),
                                        v["method"].as_str().unwrap_or(""),
                                        v["raw"].as_str().unwrap_or("")
                                    );
                                } else {
                                    print_calls(&Value::Array(vec![v]), out);
                                }
                                let _ = out.flush();
                            }
                        }
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the gateway closed the stream".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::word_start;

    #[test]
    fn epoch_milliseconds_read_as_utc() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(super::utc(1_795_000_000_123), "2026-11-18 11:06:40.123 UTC");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn unfinished_lua_continues_and_a_typo_is_an_unknown_command() {
        use super::{lua_input, unknown_command, LuaInput};
        for unfinished in ["for i = 1, 3 do", "= (40 +", "function f()", "x = {"] {
            assert_eq!(lua_input(unfinished), LuaInput::Unfinished, "{unfinished}");
        }
        for complete in ["x = 1", "= 1 + 1", "store.get('a')", "for i = 1, 3 do end"] {
            assert_eq!(lua_input(complete), LuaInput::Complete, "{complete}");
        }
        assert_eq!(unknown_command("bogus command"), Some("bogus"));
        assert_eq!(unknown_command("shwo 3"), Some("shwo"));
        // One lone word is a command or a typo, never Lua worth running.
        for typo in ["rotues", "clear", "  routs  "] {
            assert_eq!(unknown_command(typo), Some(typo.trim()), "{typo}");
        }
        for lua in [
            "x = 1",
            "local x = ",
            "return 1 +",
            "if x then",
            "1 + ",
            "= x",
            "f()",
        ] {
            assert_eq!(unknown_command(lua), None, "{lua}");
        }
        for command in ["routes", "exit", "quit", "show 3"] {
            assert_eq!(unknown_command(command), None, "{command}");
        }
        assert_eq!(super::nearest_command("rotues"), Some("routes"));
        assert_eq!(super::nearest_command("shwo"), Some("show"));
        assert_eq!(super::nearest_command("clear"), None);
        assert_eq!(super::nearest_command("x"), None);
    }

    #[test]
    fn completion_finds_words_after_non_ascii_input() {
        assert_eq!(word_start("store.ge"), 0);
        assert_eq!(word_start("= store.ge"), 2);
        // Multi-byte characters before the word: a byte index on a boundary, no panic.
        assert_eq!(word_start("x = \"€\" .. store.ge"), "x = \"€\" .. ".len());
        assert_eq!(word_start("→st"), "→".len());
        assert_eq!(word_start("ünï"), 0);
        assert_eq!(word_start("€"), "€".len());
        assert_eq!(word_start(""), 0);
    }
}
