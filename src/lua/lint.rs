//! What `luastrip check` can tell about a script without running it: reply tables a hook
//! returns with keys the gateway would ignore.
//!
//! `return { status = 403, message = "no" }` loads and runs, and the client gets a bare 403 that
//! the docker CLI reports as a confusing error about API versions: the author meant
//! `json = { message = "no" }`. At run time such a table is a script error
//! ([`super::message::response_from_lua`]); this finds the ones written out after a `return` at
//! check time. It reads tokens, not a syntax tree (Lua offers none), so it looks only at table
//! constructors that follow `return` directly and have a `status` key: a table with a `status`
//! that is returned for another purpose is the one case it could flag wrongly.

use super::message::RESPONSE_KEYS;

/// A finding: the 1-based line of the table's `{`, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    /// `{ ( [` and `} ) ]`.
    Open(u8),
    Close(u8),
    /// A single `=` (assignment or field), not `==`.
    Assign,
    /// `,` or `;`.
    Separator,
    /// Anything else: strings, numbers, operators.
    Other,
}

/// Lua's tokens with their lines; strings and comments are skipped whole (their lines counted).
fn tokens(src: &str) -> Vec<(usize, Token)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // The length of a long bracket's level (`[==[` → Some(2)) opening at `at`, if one does.
    let long_open = |at: usize| -> Option<usize> {
        let mut j = at + 1;
        while j < b.len() && b[j] == b'=' {
            j += 1;
        }
        (j < b.len() && b[at] == b'[' && b[j] == b'[').then_some(j - at - 1)
    };
    // Skip a long bracket of `level` that opened at `at`; returns the index after it.
    let skip_long = |at: usize, level: usize, line: &mut usize| -> usize {
        let close: Vec<u8> = std::iter::once(b']')
            .chain(std::iter::repeat_n(b'=', level))
            .chain(std::iter::once(b']'))
            .collect();
        let mut j = at + level + 2;
        while j < b.len() {
            if b[j..].starts_with(&close) {
                return j + close.len();
            }
            if b[j] == b'\n' {
                *line += 1;
            }
            j += 1;
        }
        b.len()
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                if let Some(level) = long_open(i + 2) {
                    i = skip_long(i + 2, level, &mut line);
                } else {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
            }
            b'"' | b'\'' => {
                let start = line;
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    if i < b.len() && b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push((start, Token::Other));
            }
            b'[' if long_open(i).is_some() => {
                let start = line;
                let level = long_open(i).unwrap_or(0);
                i = skip_long(i, level, &mut line);
                out.push((start, Token::Other));
            }
            b'{' | b'(' | b'[' => {
                out.push((line, Token::Open(c)));
                i += 1;
            }
            b'}' | b')' | b']' => {
                out.push((line, Token::Close(c)));
                i += 1;
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                out.push((line, Token::Other));
                i += 2;
            }
            b'=' => {
                out.push((line, Token::Assign));
                i += 1;
            }
            b'~' | b'<' | b'>' if b.get(i + 1) == Some(&b'=') => {
                out.push((line, Token::Other));
                i += 2;
            }
            b',' | b';' => {
                out.push((line, Token::Separator));
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push((line, Token::Name(src[start..i].to_string())));
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push((line, Token::Other));
            }
            _ => {
                out.push((line, Token::Other));
                i += 1;
            }
        }
    }
    out
}

/// Reply tables after `return` with keys the gateway ignores, or with both `json` and `body`.
pub fn reply_tables(src: &str) -> Vec<Finding> {
    struct Frame {
        kind: u8,
        line: usize,
        returned: bool,
        keys: Vec<String>,
    }
    let toks = tokens(src);
    let mut stack: Vec<Frame> = Vec::new();
    let mut found = Vec::new();
    for (n, (line, tok)) in toks.iter().enumerate() {
        let prev = n.checked_sub(1).map(|p| &toks[p].1);
        match tok {
            Token::Open(kind) => stack.push(Frame {
                kind: *kind,
                line: *line,
                returned: *kind == b'{' && prev == Some(&Token::Name("return".into())),
                keys: Vec::new(),
            }),
            Token::Close(_) => {
                let Some(frame) = stack.pop() else { continue };
                if !frame.returned || !frame.keys.iter().any(|k| k == "status") {
                    continue;
                }
                if let Some(k) = frame
                    .keys
                    .iter()
                    .find(|k| !RESPONSE_KEYS.contains(&k.as_str()))
                {
                    found.push(Finding {
                        line: frame.line,
                        message: format!(
                            "this response table has the key {k:?}, which the gateway ignores: \
                             a response is {{ status = N, json = T }} or {{ status = N, body = S, \
                             headers = H }}{}",
                            if k == "message" {
                                " (a Docker error is json = { message = \"…\" })"
                            } else {
                                ""
                            }
                        ),
                    });
                } else if frame.keys.iter().any(|k| k == "json")
                    && frame.keys.iter().any(|k| k == "body")
                {
                    found.push(Finding {
                        line: frame.line,
                        message: "this response table has both json and body: give one".into(),
                    });
                }
            }
            Token::Name(name) => {
                // A field `name = …` of the innermost open table.
                let starts_field = matches!(prev, Some(Token::Open(b'{')) | Some(Token::Separator));
                let assigned = toks.get(n + 1).map(|t| &t.1) == Some(&Token::Assign);
                if let Some(frame) = stack.last_mut() {
                    if frame.kind == b'{' && starts_field && assigned {
                        frame.keys.push(name.clone());
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// What `luastrip check PATH` found: the routes, and what the scripts get wrong that loading
/// them cannot tell.
pub struct Report {
    /// (phase, pattern, `file:line`) of every hook.
    pub routes: Vec<(&'static str, String, String)>,
    /// (`file:line`, finding).
    pub findings: Vec<(String, String)>,
}

/// Load PATH as `serve` would — a script, a directory of scripts, or (by its `.yml`/`.yaml`
/// name) Powerstrip's `adapters.yml` — and look for reply tables with ignored keys.
pub fn check(path: &std::path::Path) -> Result<Report, crate::Error> {
    let yaml = path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("yml") || x.eq_ignore_ascii_case("yaml"));
    if yaml {
        let services = super::Services {
            adapters_file: Some(path.to_path_buf()),
            ..Default::default()
        };
        let engine = super::Engine::load(None, 1, services)?;
        return Ok(Report {
            routes: engine.routes(),
            findings: Vec::new(),
        });
    }
    let engine = super::Engine::load(Some(path), 1, super::Services::default())?;
    let scripts = super::Scripts::read(Some(path), None)?;
    let findings = scripts
        .files
        .iter()
        .flat_map(|(file, src)| {
            reply_tables(src)
                .into_iter()
                .map(move |f| (format!("{}:{}", file.display(), f.line), f.message))
        })
        .collect();
    Ok(Report {
        routes: engine.routes(),
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_tables_with_ignored_keys_are_found() {
        let src = r#"
route.pre("POST /containers/create", function(req)
  -- return { status = 403, message = "in a comment" }
  local s = "return { status = 403, message = 'in a string' }"
  local t = [[
    return { status = 1, message = 2 }
  ]]
  if req.query.x == "1" then
    return { status = 403, json = { message = "fine", status = 3, extra = 4 } }
  end
  local other = { status = "ok", note = "not returned" }
  if f(a, b) then return {status=403,
      message = "no"} end
  return { status = 200, json = {}, body = "x" }
end)
"#;
        let found = reply_tables(src);
        assert_eq!(
            found.iter().map(|f| f.line).collect::<Vec<_>>(),
            vec![12, 14],
            "{found:?}"
        );
        assert!(found[0].message.contains("\"message\""));
        assert!(found[0].message.contains("json = { message"));
        assert!(found[1].message.contains("both json and body"));
    }

    #[test]
    fn correct_replies_and_other_tables_pass() {
        let src = r#"
return { status = 403, json = { message = "no" } }
return { status = 200, body = "ok", headers = { ["Content-Type"] = "text/plain" } }
return { name = "x", message = "not a reply: no status" }
local x = { [==[ long ]==], status = f{ a = 1 }, k = (a == b) }
"#;
        assert_eq!(reply_tables(src), vec![]);
    }
}
