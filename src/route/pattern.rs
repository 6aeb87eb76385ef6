//! Route patterns: `"METHOD /path"` as route scripts write them (DESIGN §3).
//!
//! `METHOD` is an HTTP method or `*`. Path segments are literals, `{name}` (one segment, captured),
//! `*` (one segment) or `**` (the rest: zero or more segments, only last). Patterns never carry the
//! `/v1.41` prefix: they match the normalised path from [`super::path`].
//!
//! Routes follow dockerd's own: an image, plugin or distribution name spans slashes
//! (`reg.example:5000/team/bb:1`), as dockerd's `{name:.*}` does, so in a pattern under
//! `/images/`, `/plugins/` or `/distribution/` the first `{param}` captures one or more segments:
//! `DELETE /images/{name}` matches `docker rmi reg.example:5000/team/bb:1` with
//! `req.params.name = "reg.example:5000/team/bb:1"`.
//!
//! Mistakes that would make a pattern never match are refused with the reason: an Express-style
//! `:id` segment, a query string, a method HTTP does not have.

use std::fmt;

/// One parsed path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// A name that spans slashes (images, plugins, distribution): one or more segments.
    Name(String),
    Star,
    Rest,
}

/// Methods a pattern may name (plus `*`).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// A parsed `"METHOD /path"` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Upper-case method; `None` for `*`.
    method: Option<String>,
    segments: Vec<Segment>,
    /// Where a spanning name is, if the pattern has one.
    name_at: Option<usize>,
    /// The text the user wrote, for error messages and listings.
    source: String,
}

/// Why a pattern string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad route pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// Captured `{name}` segments, in pattern order.
pub type Params = Vec<(String, String)>;

impl Pattern {
    /// Parse `"METHOD /path"`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |reason: &str| PatternError {
            pattern: text.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = text.split_whitespace();
        let (method, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(p), None) => (m, p),
            _ => {
                return Err(err(
                    "expected \"METHOD /path\", e.g. \"POST /containers/create\"",
                ))
            }
        };
        let method = if method == "*" {
            None
        } else if method.bytes().all(|b| b.is_ascii_alphabetic()) {
            let m = method.to_ascii_uppercase();
            if !METHODS.contains(&m.as_str()) {
                return Err(err(&format!(
                    "{method:?} is not an HTTP method (GET, HEAD, POST, PUT, DELETE, … or *)"
                )));
            }
            Some(m)
        } else {
            return Err(err("the method must be letters or *"));
        };
        if !path.starts_with('/') {
            return Err(err("the path must start with '/'"));
        }
        if path.contains('?') {
            return Err(err(
                "patterns match the path only, never a query string; read req.query in the hook",
            ));
        }
        let mut segments = Vec::new();
        let raw: Vec<&str> = path[1..].split('/').filter(|s| !s.is_empty()).collect();
        if let Some(first) = raw.first() {
            if first.starts_with('v')
                && first[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && first.len() > 1
            {
                return Err(err(
                    "patterns never carry the version prefix; the version is in req.version",
                ));
            }
        }
        let spans = matches!(
            raw.first(),
            Some(&"images") | Some(&"plugins") | Some(&"distribution")
        );
        for (i, seg) in raw.iter().enumerate() {
            let parsed = match *seg {
                s if s.starts_with(':') => {
                    return Err(err(&format!(
                        "{s:?} is not a parameter here; write {{{}}}",
                        &s[1..]
                    )))
                }
                "**" if i + 1 == raw.len() => Segment::Rest,
                "**" => return Err(err("'**' may only be the last segment")),
                "*" => Segment::Star,
                s if s.starts_with('{') && s.ends_with('}') => {
                    let name = &s[1..s.len() - 1];
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(err("a {name} must be letters, digits or _"));
                    }
                    let spanning = spans && !segments.iter().any(|s| matches!(s, Segment::Name(_)));
                    if spanning {
                        Segment::Name(name.to_string())
                    } else {
                        Segment::Param(name.to_string())
                    }
                }
                s if s.contains(['{', '}', '*']) => {
                    return Err(err("'{', '}' and '*' must fill a whole segment"))
                }
                s => Segment::Literal(s.to_string()),
            };
            segments.push(parsed);
        }
        let name_at = segments.iter().position(|s| matches!(s, Segment::Name(_)));
        if name_at.is_some_and(|k| segments[k..].contains(&Segment::Rest)) {
            return Err(err(
                "'**' cannot follow an image or plugin {name}, which already spans slashes",
            ));
        }
        Ok(Pattern {
            method,
            segments,
            name_at,
            source: text.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Match a method and a normalised path; on success return the captured params.
    pub fn matches(&self, method: &str, path: &str) -> Option<Params> {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return None;
            }
        }
        if let Some(k) = self.name_at {
            return self.matches_spanning(k, path);
        }
        let mut params = Vec::new();
        let mut segs = path.split('/').filter(|s| !s.is_empty());
        for want in &self.segments {
            match want {
                Segment::Rest => return Some(params),
                Segment::Literal(l) => {
                    if segs.next()? != l {
                        return None;
                    }
                }
                Segment::Star => {
                    segs.next()?;
                }
                Segment::Param(name) => params.push((name.clone(), segs.next()?.to_string())),
                Segment::Name(_) => return None,
            }
        }
        if segs.next().is_some() {
            return None;
        }
        Some(params)
    }
}

impl Pattern {
    /// Match a pattern whose segment `k` is a spanning name: the segments before it and after it
    /// match one to one, the name takes what is between (at least one segment).
    fn matches_spanning(&self, k: usize, path: &str) -> Option<Params> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let after = &self.segments[k + 1..];
        if segs.len() < k + 1 + after.len() {
            return None;
        }
        let name_end = segs.len() - after.len();
        let mut params = Vec::new();
        let one_to_one = self.segments[..k]
            .iter()
            .zip(&segs[..k])
            .chain(after.iter().zip(&segs[name_end..]));
        let mut name = None;
        for (want, got) in one_to_one {
            match want {
                Segment::Literal(l) if l == got => {}
                Segment::Literal(_) => return None,
                Segment::Param(p) => params.push((p.clone(), got.to_string())),
                Segment::Star => {}
                Segment::Name(_) | Segment::Rest => return None,
            }
        }
        if let Segment::Name(n) = &self.segments[k] {
            name = Some((n.clone(), segs[k..name_end].join("/")));
        }
        params.extend(name);
        Some(params)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, method: &str, path: &str) -> Option<Params> {
        Pattern::parse(pattern).unwrap().matches(method, path)
    }

    #[test]
    fn literals_and_methods() {
        assert_eq!(
            m("POST /containers/create", "POST", "/containers/create"),
            Some(vec![])
        );
        assert_eq!(
            m("POST /containers/create", "post", "/containers/create"),
            Some(vec![])
        );
        assert_eq!(
            m("post /containers/create", "POST", "/containers/create"),
            Some(vec![])
        );
        assert_eq!(
            m("GET /containers/create", "POST", "/containers/create"),
            None
        );
        assert_eq!(
            m("* /containers/create", "DELETE", "/containers/create"),
            Some(vec![])
        );
        assert_eq!(
            m("POST /containers/create", "POST", "/containers/create/x"),
            None
        );
        assert_eq!(m("POST /containers/create", "POST", "/containers"), None);
        assert_eq!(m("GET /", "GET", "/"), Some(vec![]));
    }

    #[test]
    fn params_stars_and_rest() {
        assert_eq!(
            m(
                "POST /containers/{id}/start",
                "POST",
                "/containers/abc/start"
            ),
            Some(vec![("id".into(), "abc".into())])
        );
        assert_eq!(
            m("POST /containers/*/start", "POST", "/containers/abc/start"),
            Some(vec![])
        );
        assert_eq!(
            m("POST /containers/*/start", "POST", "/containers/start"),
            None
        );
        assert_eq!(m("* /**", "GET", "/"), Some(vec![]));
        assert_eq!(m("* /**", "GET", "/a/b/c"), Some(vec![]));
        assert_eq!(m("GET /images/**", "GET", "/images"), Some(vec![]));
        assert_eq!(
            m("GET /containers/{x}/**", "GET", "/containers/abc/json"),
            Some(vec![("x".into(), "abc".into())])
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        for bad in [
            "/containers/create",
            "POST containers/create",
            "POST /a/**/b",
            "POST /a/{}/b",
            "POST /a/x*/b",
            "P-ST /a",
            "POST /v1.41/containers/create",
            "POST /a extra",
            "POST /containers/:id/start",
            "GET /containers/json?all=1",
            "FETCH /containers/json",
            "GET /images/{name}/**",
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn image_and_plugin_names_span_slashes_as_in_dockerd() {
        let name = |pattern: &str, method: &str, path: &str| {
            m(pattern, method, path).map(|p| p.into_iter().find(|(k, _)| k == "name").unwrap().1)
        };
        assert_eq!(
            name(
                "DELETE /images/{name}",
                "DELETE",
                "/images/reg.example:5000/team/bb:1"
            )
            .as_deref(),
            Some("reg.example:5000/team/bb:1")
        );
        assert_eq!(
            name("DELETE /images/{name}", "DELETE", "/images/busybox").as_deref(),
            Some("busybox")
        );
        assert_eq!(
            name("POST /images/{name}/tag", "POST", "/images/team/bb:1/tag").as_deref(),
            Some("team/bb:1")
        );
        assert_eq!(name("GET /images/{name}/json", "GET", "/images/json"), None);
        assert_eq!(
            name(
                "POST /plugins/{name}/enable",
                "POST",
                "/plugins/vieux/sshfs:latest/enable"
            )
            .as_deref(),
            Some("vieux/sshfs:latest")
        );
        assert_eq!(
            name(
                "GET /distribution/{name}/json",
                "GET",
                "/distribution/a/b/c/json"
            )
            .as_deref(),
            Some("a/b/c")
        );
        // Elsewhere a {param} is one segment.
        assert_eq!(
            m("DELETE /containers/{id}", "DELETE", "/containers/a/b"),
            None
        );
    }
}
