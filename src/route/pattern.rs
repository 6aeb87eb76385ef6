//! Route patterns: `"METHOD /path"` as route scripts write them (DESIGN §3).
//!
//! `METHOD` is an HTTP method or `*`. Path segments are literals, `{name}` (one segment, captured),
//! `*` (one segment) or `**` (the rest: zero or more segments, only last). Patterns never carry the
//! `/v1.41` prefix: they match the normalised path from [`super::path`].

use std::fmt;

/// One parsed path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Star,
    Rest,
}

/// A parsed `"METHOD /path"` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Upper-case method; `None` for `*`.
    method: Option<String>,
    segments: Vec<Segment>,
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
            Some(method.to_ascii_uppercase())
        } else {
            return Err(err("the method must be letters or *"));
        };
        if !path.starts_with('/') {
            return Err(err("the path must start with '/'"));
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
        for (i, seg) in raw.iter().enumerate() {
            let parsed = match *seg {
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
                    Segment::Param(name.to_string())
                }
                s if s.contains(['{', '}', '*']) => {
                    return Err(err("'{', '}' and '*' must fill a whole segment"))
                }
                s => Segment::Literal(s.to_string()),
            };
            segments.push(parsed);
        }
        Ok(Pattern {
            method,
            segments,
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
            }
        }
        if segs.next().is_some() {
            return None;
        }
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
            m("GET /images/{x}/**", "GET", "/images/busybox/json"),
            Some(vec![("x".into(), "busybox".into())])
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
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
