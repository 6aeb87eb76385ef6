//! The filter language of `calls`, `tail` and the REPL, after mitmproxy's:
//!
//! | filter | matches calls … |
//! |---|---|
//! | `~m METHOD` | with that method (any case) |
//! | `~u REGEX` | whose path and query (as sent) match |
//! | `~s CODE`, `~s 4..` | with that status, or in that range (`4..` is 400–499, `20.` 200–209) |
//! | `~h REGEX` | with a request or response header line (`name: value`) matching |
//! | `~b REGEX` | whose journaled request or response body (when a hook buffered it) or error message matches |
//! | `~e` | that ended in a gateway, script or adapter error |
//! | `~r ROUTE` | that a hook registered on exactly that pattern ran on |
//! | `WORD` | whose normalised path contains the word |
//!
//! combined with `!`, `&` (also by juxtaposition), `|` and parentheses. A parse error carries the
//! byte position, so it can be shown with a caret under the bad spot.

use regex::Regex;

use crate::journal::CallRecord;

/// A parsed filter.
#[derive(Debug)]
pub enum Filter {
    Method(String),
    Url(Regex),
    Status { lo: u16, hi: u16 },
    Header(Regex),
    Body(Regex),
    Error,
    Route(String),
    Word(String),
    Not(Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// Why a filter does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad filter at position {position}: {reason}")]
pub struct FilterError {
    /// Byte offset into the filter text.
    pub position: usize,
    pub reason: String,
}

impl FilterError {
    /// The filter text with a caret under the bad position.
    pub fn caret(&self, text: &str) -> String {
        // The position is a byte offset; the caret goes under that character.
        let column = text
            .get(..self.position)
            .map_or(self.position, |before| before.chars().count());
        format!("{text}\n{}^ {}", " ".repeat(column), self.reason)
    }
}

impl Filter {
    /// Parse a filter expression.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut p = Parser { text, pos: 0 };
        let f = p.or()?;
        p.skip_ws();
        if p.pos < text.len() {
            return Err(p.error("unexpected input (an unmatched ')'?)"));
        }
        Ok(f)
    }

    /// Whether a journaled call matches.
    pub fn matches(&self, c: &CallRecord) -> bool {
        match self {
            Filter::Method(m) => c.method.eq_ignore_ascii_case(m),
            Filter::Url(r) => r.is_match(&c.raw),
            Filter::Status { lo, hi } => c.status.is_some_and(|s| (*lo..=*hi).contains(&s)),
            Filter::Header(r) => c
                .request_headers
                .iter()
                .chain(c.response_headers.iter())
                .any(|(k, v)| {
                    r.is_match(&format!("{}: {}", k, String::from_utf8_lossy(v.as_bytes())))
                }),
            Filter::Body(r) => {
                c.request_body.as_deref().is_some_and(|b| r.is_match(b))
                    || c.response_body.as_deref().is_some_and(|b| r.is_match(b))
                    || c.error.as_ref().is_some_and(|e| r.is_match(&e.message))
            }
            Filter::Error => c.error.is_some(),
            Filter::Route(route) => c.hooks.iter().any(|h| h.route == *route),
            Filter::Word(w) => c.path.contains(w.as_str()),
            Filter::Not(f) => !f.matches(c),
            Filter::And(a, b) => a.matches(c) && b.matches(c),
            Filter::Or(a, b) => a.matches(c) || b.matches(c),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> FilterError {
        FilterError {
            position: self.pos,
            reason: reason.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        // By characters: Unicode white space (U+2029, say) is more than one byte.
        while let Some(c) = self.text[self.pos..]
            .chars()
            .next()
            .filter(|c| c.is_whitespace())
        {
            self.pos += c.len_utf8();
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.text[self.pos..].chars().next()
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.peek() == Some('|') {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some('&') => {
                    self.pos += 1;
                }
                // Juxtaposition is "and", as in mitmproxy.
                Some(c) if c != '|' && c != ')' => {}
                _ => return Ok(left),
            }
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        match self.peek() {
            None => Err(self.error("a filter was expected here")),
            Some('!') => {
                self.pos += 1;
                Ok(Filter::Not(Box::new(self.unary()?)))
            }
            Some('(') => {
                self.pos += 1;
                let f = self.or()?;
                if self.peek() != Some(')') {
                    return Err(self.error("')' expected"));
                }
                self.pos += 1;
                Ok(f)
            }
            Some('~') => self.operator(),
            Some(c) if c == ')' || c == '&' || c == '|' => {
                Err(self.error("a filter was expected here"))
            }
            Some(_) => Ok(Filter::Word(self.word()?.1)),
        }
    }

    /// A bare or quoted word; returns (start, text).
    fn word(&mut self) -> Result<(usize, String), FilterError> {
        self.skip_ws();
        let start = self.pos;
        let rest = &self.text[self.pos..];
        if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let end = rest[1..]
                .find(q)
                .ok_or_else(|| self.error("unclosed quote"))?;
            self.pos += end + 2;
            return Ok((start, rest[1..end + 1].to_string()));
        }
        let len = rest
            .find(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '&' || c == '|')
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("a value was expected here"));
        }
        self.pos += len;
        Ok((start, rest[..len].to_string()))
    }

    /// A regular expression: quoted, or up to white space, `&`, `|` or an unmatched `)`, with
    /// its own groups kept whole (`(?i)not.allowed`, `(create|start)`) and `\` escaping.
    fn regex_word(&mut self) -> Result<(usize, String), FilterError> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        if rest.starts_with(['"', '\'']) {
            return self.word();
        }
        let start = self.pos;
        let (mut depth, mut escaped, mut len) = (0usize, false, rest.len());
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '(' => depth += 1,
                ')' if depth > 0 => depth -= 1,
                c if depth == 0 && (c.is_whitespace() || matches!(c, ')' | '&' | '|')) => {
                    len = i;
                    break;
                }
                _ => {}
            }
        }
        if len == 0 {
            return Err(self.error("a value was expected here"));
        }
        self.pos += len;
        Ok((start, rest[..len].to_string()))
    }

    fn regex(&mut self) -> Result<Regex, FilterError> {
        let (start, w) = self.regex_word()?;
        Regex::new(&w).map_err(|e| FilterError {
            position: start,
            reason: format!(
                "bad regular expression: {}",
                e.to_string().lines().last().unwrap_or("")
            ),
        })
    }

    fn operator(&mut self) -> Result<Filter, FilterError> {
        let start = self.pos;
        let rest = &self.text[self.pos + 1..];
        let name_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        self.pos += 1 + name_len;
        Ok(match name {
            "m" => Filter::Method(self.word()?.1),
            "u" => Filter::Url(self.regex()?),
            "h" => Filter::Header(self.regex()?),
            "b" => Filter::Body(self.regex()?),
            "e" => Filter::Error,
            "r" => Filter::Route(self.word()?.1),
            "s" => {
                let (at, w) = self.word()?;
                status_range(&w).ok_or(FilterError {
                    position: at,
                    reason: format!("{w:?} is not a status (404) or a range (4.., 20.)"),
                })?
            }
            _ => {
                return Err(FilterError {
                    position: start,
                    reason: format!("unknown operator ~{name} (try ~m ~u ~s ~h ~b ~e ~r)"),
                })
            }
        })
    }
}

/// `404` → 404..=404; `4..` → 400..=499; `20.` → 200..=209.
fn status_range(w: &str) -> Option<Filter> {
    if w.len() != 3 || !w.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if !w.chars().all(|c| c.is_ascii_digit() || c == '.') || w.trim_end_matches('.').contains('.') {
        return None;
    }
    let lo: u16 = w.replace('.', "0").parse().ok()?;
    let hi: u16 = w.replace('.', "9").parse().ok()?;
    Some(Filter::Status { lo, hi })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hijack::Hijack;
    use crate::journal::{CallError, HookRun};
    use http::{HeaderMap, HeaderValue};

    fn call(method: &str, raw: &str, path: &str, status: u16) -> CallRecord {
        let mut req = HeaderMap::new();
        req.insert(
            "user-agent",
            HeaderValue::from_static("Docker-Client/28.2.2 (linux)"),
        );
        CallRecord {
            id: 1,
            started_ms: 0,
            method: method.into(),
            path: path.into(),
            raw: raw.into(),
            version: None,
            status: Some(status),
            cancelled: false,
            duration_us: 1,
            upstream_us: None,
            hijack: Hijack::No,
            streaming: false,
            hooks: vec![HookRun {
                phase: "pre".into(),
                route: "POST /containers/create".into(),
                location: "x.lua:1".into(),
                duration_us: 1,
                error: None,
            }],
            error: (status >= 500).then(|| CallError {
                source: crate::error::Source::Script,
                message: "luastrip: script error at x.lua:4: boom".into(),
            }),
            request_headers: req,
            request_body: Some(r#"{"Image":"busybox"}"#.into()),
            response_headers: HeaderMap::new(),
            response_body: None,
            replay_of: None,
            before: None,
            stream_bytes: None,
        }
    }

    fn m(f: &str, c: &CallRecord) -> bool {
        Filter::parse(f)
            .unwrap_or_else(|e| panic!("{}", e.caret(f)))
            .matches(c)
    }

    #[test]
    fn operators() {
        let create = call(
            "POST",
            "/v1.41/containers/create?name=web",
            "/containers/create",
            201,
        );
        let failed = call(
            "POST",
            "/v1.41/containers/create",
            "/containers/create",
            500,
        );
        let ping = call("GET", "/_ping", "/_ping", 200);
        assert!(m("~m post", &create) && !m("~m GET", &create));
        assert!(m("~u name=web", &create) && !m("~u name=db", &create));
        assert!(m("~s 201", &create) && m("~s 2..", &create) && m("~s 20.", &create));
        assert!(!m("~s 4..", &create) && m("~s 5..", &failed));
        assert!(m("~h Docker-Client", &create));
        assert!(m("~e", &failed) && !m("~e", &create));
        assert!(m("~b boom", &failed));
        assert!(m("~b busybox", &create) && !m("~b alpine", &create));
        assert!(m("~r 'POST /containers/create'", &create));
        assert!(m("containers", &create) && !m("containers", &ping));
    }

    #[test]
    fn combinators() {
        let create = call(
            "POST",
            "/v1.41/containers/create",
            "/containers/create",
            201,
        );
        let ping = call("GET", "/_ping", "/_ping", 200);
        assert!(m("~m POST & ~s 2..", &create));
        assert!(m("~m POST ~s 2..", &create), "juxtaposition is and");
        assert!(m("~m GET | ~m POST", &create));
        assert!(m("!~m GET", &create) && !m("!~m GET", &ping));
        assert!(m("!(~m GET | ~s 4..)", &create));
        assert!(m("(~m GET | containers) & !~e", &create));
        // A regular expression keeps its own groups and flags; an outer group still closes.
        assert!(m("~b (?i)BUSYBOX", &create) && !m("~b (?i)alpine", &create));
        assert!(m("~u (create|start) & ~m POST", &create));
        assert!(m("(~m GET | ~u (crea)te)", &create));
        assert!(m(r"~u containers\/create", &create));
    }

    #[test]
    fn errors_point_at_the_problem() {
        for (f, at) in [
            ("~m POST & ", 10),
            ("~x foo", 0),
            ("~s 2x0", 3),
            ("(~m GET", 7),
            ("~m GET )", 7),
            ("~u (", 3),
            ("~m", 2),
            ("| ~m GET", 0),
            ("~u \"abc", 3),
        ] {
            let e = Filter::parse(f).unwrap_err();
            assert_eq!(e.position, at, "{}", e.caret(f));
        }
        let e = Filter::parse("~s 2x0").unwrap_err();
        assert_eq!(e.caret("~s 2x0").lines().nth(1).unwrap().find('^'), Some(3));
    }

    #[test]
    fn unicode_white_space_is_skipped_whole() {
        // Found by the property test below: U+2029 is white space of three bytes.
        assert!(Filter::parse("\u{2029}~m GET").is_ok());
        assert!(Filter::parse("~u ~u]^\u{2029}").is_ok());
        let e = Filter::parse("\u{2029}~x").unwrap_err();
        assert_eq!(
            e.caret("\u{2029}~x").lines().nth(1).unwrap().find('^'),
            Some(1)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000, failure_persistence: None, ..Default::default()
        })]

        /// Any text: a filter or an error whose caret points inside the text; never a panic.
        #[test]
        fn any_filter_text_parses_or_points_at_its_mistake(
            text in r"([~!&|() ]|~[musbhre]|[a-zA-Z0-9./*?{}\[\]-]|\PC){0,24}"
        ) {
            let c = call("POST", "/v1.41/containers/create?name=x", "/containers/create", 201);
            match Filter::parse(&text) {
                Ok(f) => {
                    let _ = f.matches(&c);
                }
                Err(e) => {
                    proptest::prop_assert!(e.position <= text.len(), "{:?}", e);
                    proptest::prop_assert!(text.is_char_boundary(e.position), "{:?}", e);
                    let caret = e.caret(&text);
                    let column = caret.lines().nth(1).unwrap_or("").find('^').unwrap_or(0);
                    proptest::prop_assert_eq!(column, text[..e.position].chars().count());
                }
            }
        }
    }
}
