//! What the hooks changed on a call, as lines people can read: the REPL's `show ID diff`, the
//! console's diff tab and `luastrip test` all print [`changes`] of a [`CallRecord`].
//!
//! Heads are compared header by header; JSON bodies field by field, named by their path
//! (`HostConfig.Privileged`, `Env[2]`, `Labels["com.example.team"]`), so that a label a hook
//! injected reads as one added line rather than a rewritten 2 KB body. Bodies that are not JSON
//! are shown whole, before and after.

use std::fmt;

use http::HeaderMap;
use serde_json::Value;

use super::CallRecord;

/// Which side of the call a change is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// One change: `what` went from `before` to `after` (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub side: Side,
    /// `method`, `target`, `status`, `header x-name`, `body` or `body HostConfig.Memory`.
    pub what: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Request => "request",
            Side::Response => "response",
        };
        match (&self.before, &self.after) {
            (None, Some(a)) => write!(f, "+ {side} {}: {a}", self.what),
            (Some(b), None) => write!(f, "- {side} {}: {b}", self.what),
            (Some(b), Some(a)) => write!(f, "~ {side} {}: {b} → {a}", self.what),
            (None, None) => write!(f, "= {side} {}", self.what),
        }
    }
}

/// Everything the hooks and adapters changed on `rec`, request first. A call a hook answered
/// itself gets one line saying so (the daemon never saw it).
pub fn changes(rec: &CallRecord) -> Vec<Change> {
    let mut out = Vec::new();
    let none = super::Before::default();
    let b = rec.before.as_deref().unwrap_or(&none);
    let mut push = |side, what: String, before: Option<String>, after: Option<String>| {
        out.push(Change {
            side,
            what,
            before,
            after,
        })
    };
    if let Some(m) = &b.method {
        push(
            Side::Request,
            "method".into(),
            Some(m.clone()),
            Some(rec.method.clone()),
        );
    }
    if let Some(r) = &b.raw {
        push(
            Side::Request,
            "target".into(),
            Some(r.clone()),
            Some(rec.raw.clone()),
        );
    }
    let mut all = Vec::new();
    if let Some(h) = &b.request_headers {
        heads(Side::Request, h, &rec.request_headers, &mut all);
    }
    if let Some(body) = &b.request_body {
        bodies(
            Side::Request,
            body,
            rec.request_body.as_deref().unwrap_or(""),
            &mut all,
        );
    }
    let answered_by_hook = rec.upstream_us.is_none()
        && rec.status.is_some()
        && rec.error.is_none()
        && !rec.hooks.is_empty();
    if answered_by_hook {
        let by = rec
            .hooks
            .last()
            .map(|h| h.location.as_str())
            .unwrap_or("a hook");
        all.push(Change {
            side: Side::Response,
            what: "answer".into(),
            before: None,
            after: Some(format!(
                "{} from {by}; the daemon was not asked",
                rec.status.unwrap_or(0)
            )),
        });
    }
    if let Some(s) = b.status {
        all.push(Change {
            side: Side::Response,
            what: "status".into(),
            before: Some(s.to_string()),
            after: rec.status.map(|s| s.to_string()),
        });
    }
    if let Some(h) = &b.response_headers {
        heads(Side::Response, h, &rec.response_headers, &mut all);
    }
    if let Some(body) = &b.response_body {
        bodies(
            Side::Response,
            body,
            rec.response_body.as_deref().unwrap_or(""),
            &mut all,
        );
    }
    out.extend(all);
    out
}

/// Header by header, in name order; framing headers are not changes of their own.
fn heads(side: Side, before: &HeaderMap, after: &HeaderMap, out: &mut Vec<Change>) {
    let mut names: Vec<&str> = before
        .keys()
        .chain(after.keys())
        .map(|k| k.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if matches!(name, "content-length" | "transfer-encoding" | "connection") {
            continue;
        }
        let join = |h: &HeaderMap| {
            let v: Vec<String> = h
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (!v.is_empty()).then(|| v.join(", "))
        };
        let (b, a) = (join(before), join(after));
        if b != a {
            out.push(Change {
                side,
                what: format!("header {name}"),
                before: b,
                after: a,
            });
        }
    }
}

/// Field by field when both are JSON, else the whole bodies.
fn bodies(side: Side, before: &str, after: &str, out: &mut Vec<Change>) {
    let parse = |s: &str| serde_json::from_str::<Value>(s).ok();
    match (parse(before), parse(after)) {
        (Some(b), Some(a)) => json(side, "", &b, &a, out),
        _ if before != after => out.push(Change {
            side,
            what: "body".into(),
            before: (!before.is_empty()).then(|| short(before)),
            after: (!after.is_empty()).then(|| short(after)),
        }),
        _ => {}
    }
}

/// A JSON value on one line, cut at 200 characters.
fn short(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}… ({} bytes)", &s[..i], s.len()),
        None => s.to_string(),
    }
}

fn json(side: Side, path: &str, before: &Value, after: &Value, out: &mut Vec<Change>) {
    if before == after {
        return;
    }
    let what = |p: &str| {
        if p.is_empty() {
            "body".to_string()
        } else {
            format!("body {p}")
        }
    };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                let p = key_path(path, k);
                match a.get(k) {
                    Some(av) => json(side, &p, bv, av, out),
                    None => out.push(Change {
                        side,
                        what: what(&p),
                        before: Some(short(&bv.to_string())),
                        after: None,
                    }),
                }
            }
            for (k, av) in a {
                if !b.contains_key(k) {
                    out.push(Change {
                        side,
                        what: what(&key_path(path, k)),
                        before: None,
                        after: Some(short(&av.to_string())),
                    });
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                json(side, &format!("{path}[{i}]"), bv, av, out);
            }
        }
        _ => out.push(Change {
            side,
            what: what(path),
            before: Some(short(&before.to_string())),
            after: Some(short(&after.to_string())),
        }),
    }
}

/// `Parent.Key`, or `Parent["odd key"]` for a key that is not a plain word.
fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::from(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Before;

    fn rec() -> CallRecord {
        let mut r = CallRecord::unfinished(1, "POST", "/containers/create", "/containers/create");
        r.status = Some(201);
        r.upstream_us = Some(10);
        r
    }

    #[test]
    fn json_bodies_differ_field_by_field() {
        let mut r = rec();
        r.request_body = Some(
            r#"{"Image":"busybox","Labels":{"com.example.team":"db"},"HostConfig":{"Memory":1024},"Env":["A=1","B=3"]}"#
                .into(),
        );
        r.before = Some(Box::new(Before {
            request_body: Some(
                r#"{"Image":"busybox","Labels":{},"HostConfig":{"Memory":0,"Privileged":false},"Env":["A=1","B=2"]}"#
                    .into(),
            ),
            ..Before::default()
        }));
        let lines: Vec<String> = changes(&r).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "~ request body Env[1]: \"B=2\" → \"B=3\"",
                "~ request body HostConfig.Memory: 0 → 1024",
                "- request body HostConfig.Privileged: false",
                "+ request body Labels[\"com.example.team\"]: \"db\"",
            ]
        );
    }

    #[test]
    fn heads_targets_and_text_bodies() {
        let mut r = rec();
        r.raw = "/containers/create?name=b".into();
        r.request_headers
            .insert("x-team", http::HeaderValue::from_static("db"));
        r.response_body = Some("plain after".into());
        r.before = Some(Box::new(Before {
            raw: Some("/containers/create?name=a".into()),
            request_headers: Some(HeaderMap::new()),
            status: Some(200),
            response_body: Some("plain before".into()),
            ..Before::default()
        }));
        let lines: Vec<String> = changes(&r).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "~ request target: /containers/create?name=a → /containers/create?name=b",
                "+ request header x-team: db",
                "~ response status: 200 → 201",
                "~ response body: plain before → plain after",
            ]
        );
    }

    #[test]
    fn an_answer_from_a_hook_says_so() {
        let mut r = rec();
        r.upstream_us = None;
        r.status = Some(403);
        r.hooks.push(crate::journal::HookRun {
            phase: "pre".into(),
            route: "POST /containers/create".into(),
            location: "deny.lua:4".into(),
            duration_us: 3,
            error: None,
        });
        let lines: Vec<String> = changes(&r).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            lines,
            vec!["+ response answer: 403 from deny.lua:4; the daemon was not asked"]
        );
        assert!(changes(&rec()).is_empty());
    }
}
