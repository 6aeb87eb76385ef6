//! Path normalisation: one spelling per Docker endpoint.
//!
//! The daemon's router matches on the *decoded, cleaned* path and accepts an optional
//! `/v{version}` prefix, so `/v1.41//containers/./create`, `/containers%2Fcreate` and
//! `/containers/create/` all reach the same handler. A hook that matched on the raw spelling could
//! be bypassed by any of them. So routes match on the normalised path, and the gateway forwards
//! exactly that normalised path (re-encoded, with the client's version prefix put back): what the
//! hooks saw is what the daemon executes.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters that must stay percent-encoded inside one path segment on the wire.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A request path split into the Docker API version and the normalised route path.
///
/// The fields are private so that the invariant holds for every value: the path starts with `/`
/// and never ends with one (except the root itself), is decoded, has no empty, `.` or `..`
/// segments and no NUL byte. The only ways to get one are [`NormalPath::parse`] and
/// [`NormalPath::root`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// `"1.41"` for `/v1.41/...`, `None` for unversioned calls.
    version: Option<String>,
    path: String,
}

/// Why a path cannot be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(
        "the request target {0:?} is not a path: send an origin-form target such as /v1.41/info"
    )]
    NotAbsolute(String),
    #[error("the request path {0:?} is not valid UTF-8 once percent-decoded")]
    NotUtf8(String),
    #[error("the request path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("{0:?} is not an API version such as 1.41")]
    BadVersion(String),
}

impl NormalPath {
    /// `/`, unversioned.
    pub fn root() -> Self {
        NormalPath {
            version: None,
            path: "/".to_string(),
        }
    }

    /// The API version of a `/v1.41/...` path.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The normalised route path (no version prefix): what routes match on.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The same path with this API version (`None`: unversioned).
    pub fn with_version(mut self, version: Option<String>) -> Result<Self, PathError> {
        if let Some(v) = &version {
            if !is_version_number(v) {
                return Err(PathError::BadVersion(v.clone()));
            }
        }
        self.version = version;
        Ok(self)
    }

    /// Normalise a raw request path (without the query string).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute(raw.to_string()));
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8(raw.to_string()))?;
        if decoded.contains('\0') {
            return Err(PathError::Nul(raw.to_string()));
        }
        let mut segments: Vec<&str> = Vec::new();
        for seg in decoded.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        let version = match segments.first() {
            Some(first) if is_version(first) => {
                let v = first[1..].to_string();
                segments.remove(0);
                Some(v)
            }
            _ => None,
        };
        let mut path = String::with_capacity(decoded.len());
        for seg in &segments {
            path.push('/');
            path.push_str(seg);
        }
        if path.is_empty() {
            path.push('/');
        }
        Ok(NormalPath { version, path })
    }

    /// The path to send to the daemon: the client's version prefix and the normalised path,
    /// percent-encoded where the wire needs it.
    pub fn to_wire(&self) -> String {
        let mut out = String::with_capacity(self.path.len() + 8);
        if let Some(v) = &self.version {
            out.push_str("/v");
            out.push_str(v);
        }
        if self.path == "/" {
            if out.is_empty() {
                out.push('/');
            }
            return out;
        }
        for seg in self.path[1..].split('/') {
            out.push('/');
            out.extend(utf8_percent_encode(seg, SEGMENT));
        }
        out
    }
}

impl std::fmt::Display for NormalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

/// Docker's router accepts `/v{version:[0-9.]+}` as the prefix.
pub(crate) fn is_version(seg: &str) -> bool {
    seg.strip_prefix('v').is_some_and(is_version_number)
}

fn is_version_number(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> (Option<String>, String) {
        let n = NormalPath::parse(raw).unwrap();
        (n.version, n.path)
    }

    #[test]
    fn every_spelling_of_create_is_one_path() {
        for raw in [
            "/containers/create",
            "/v1.41/containers/create",
            "//containers/create",
            "/v1.41//containers/create",
            "/containers/create/",
            "/containers/./create",
            "/containers/x/../create",
            "/%63ontainers/create",
            "/containers%2Fcreate",
            "/v1.41/containers/create//",
            "/./v1.41/containers/create",
        ] {
            assert_eq!(norm(raw).1, "/containers/create", "{raw}");
        }
    }

    #[test]
    fn version_prefix_is_split_off() {
        assert_eq!(norm("/v1.41/_ping"), (Some("1.41".into()), "/_ping".into()));
        assert_eq!(norm("/_ping"), (None, "/_ping".into()));
        assert_eq!(norm("/v1/info"), (Some("1".into()), "/info".into()));
        // Not a version: letters after the v.
        assert_eq!(norm("/version"), (None, "/version".into()));
        assert_eq!(norm("/v/info"), (None, "/v/info".into()));
        assert_eq!(norm("/"), (None, "/".into()));
        assert_eq!(norm("/v1.41"), (Some("1.41".into()), "/".into()));
        assert_eq!(norm("/v1.41/"), (Some("1.41".into()), "/".into()));
    }

    #[test]
    fn dot_dot_cannot_climb_above_the_root() {
        assert_eq!(norm("/../../containers/json").1, "/containers/json");
        // ..climbing out of the version prefix lands on the unversioned path
        assert_eq!(
            norm("/v1.41/../containers/json"),
            (None, "/containers/json".into())
        );
    }

    #[test]
    fn bad_paths_are_errors() {
        assert!(matches!(
            NormalPath::parse("containers/json"),
            Err(PathError::NotAbsolute(_))
        ));
        assert!(matches!(
            NormalPath::parse("/%ff"),
            Err(PathError::NotUtf8(_))
        ));
        assert!(matches!(
            NormalPath::parse("/a%00b"),
            Err(PathError::Nul(_))
        ));
    }

    #[test]
    fn wire_form_keeps_the_version_and_encodes_what_must_be() {
        let n = NormalPath::parse("/v1.41//containers/./create/").unwrap();
        assert_eq!(n.to_wire(), "/v1.41/containers/create");
        let n = NormalPath::parse("/images/my%20image/json").unwrap();
        assert_eq!(n.path, "/images/my image/json");
        assert_eq!(n.to_wire(), "/images/my%20image/json");
        // A literal "%2F" text (sent as %252F) stays literal text on the wire.
        let n = NormalPath::parse("/images/a%252Fb/json").unwrap();
        assert_eq!(n.path, "/images/a%2Fb/json");
        assert_eq!(n.to_wire(), "/images/a%252Fb/json");
        // Image references keep their slashes and colons.
        let n = NormalPath::parse("/v1.41/images/library/busybox:latest/json").unwrap();
        assert_eq!(n.to_wire(), "/v1.41/images/library/busybox:latest/json");
        assert_eq!(NormalPath::parse("/").unwrap().to_wire(), "/");
        assert_eq!(NormalPath::parse("/v1.41/").unwrap().to_wire(), "/v1.41");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000, failure_persistence: None, ..Default::default()
        })]

        /// Whatever the client sends: no panic; a parsed path keeps its invariant, its wire form
        /// is a valid request target that parses back to the same path (what hooks saw is what
        /// is forwarded), and patterns match it without panicking.
        #[test]
        fn any_target_normalises_without_panic(raw in "(/|%2[fF]|%2[eE]|\\.|v1\\.41|[a-z]|%[0-9a-fA-F]{2}|%|\\PC){0,40}") {
            if let Ok(p) = NormalPath::parse(&raw) {
                proptest::prop_assert!(p.as_str().starts_with('/'));
                proptest::prop_assert!(p.as_str() == "/" || !p.as_str().ends_with('/'));
                proptest::prop_assert!(!p.as_str().contains("//"));
                let wire = p.to_wire();
                proptest::prop_assert!(wire.parse::<http::Uri>().is_ok(), "{}", wire);
                let again = NormalPath::parse(&wire).unwrap();
                proptest::prop_assert_eq!(&again, &p);
                for pat in ["* /**", "POST /containers/{id}/start", "GET /images/*/json", "* /"] {
                    let _ = crate::route::Pattern::parse(pat).unwrap().matches("GET", p.as_str());
                }
                let _ = crate::route::kind::response_streams(&http::Method::POST, p.as_str(), "");
                let _ = crate::hijack::Hijack::classify(&http::Method::POST, p.as_str(), &http::HeaderMap::new());
            }
        }
    }
}
