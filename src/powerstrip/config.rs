//! `adapters.yml`, Powerstrip's configuration format, read strictly:
//!
//! ```yaml
//! version: 1
//! endpoints:
//!   "POST /*/containers/create":
//!     pre: [adder, labeller]
//!     post: [logger]
//! adapters:
//!   adder: http://127.0.0.1:9000/adapter
//! ```
//!
//! Powerstrip silently ignored mistakes; here duplicate keys, unknown keys, undefined adapters,
//! endpoints with neither `pre` nor `post`, and anything that is not a mapping are errors naming
//! the file and line. Endpoint globs match like Powerstrip's `fnmatch` over `"METHOD /path"`
//! (no query; `*` matches anything, `/` included; `?` one character), where a leading `/*/`
//! stands for the version prefix — so an unversioned call matches it too, and a glob written
//! without a version matches versioned calls.

use std::path::Path;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::outbound::Url;

/// One parsed `endpoints` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub glob: Glob,
    /// Line of the endpoint key, for errors and listings.
    pub line: usize,
    /// Adapter URLs in chain order.
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// A checked `adapters.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file, as given, for `file:line` in messages.
    pub file: String,
    pub endpoints: Vec<Endpoint>,
}

/// A Powerstrip endpoint glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// As written in the file.
    pub text: String,
    /// Upper-case method glob.
    method: String,
    /// Path glob without the version part.
    path: String,
}

impl Glob {
    /// Parse `"METHOD /path"`.
    pub fn parse(text: &str) -> Result<Glob, String> {
        let (method, path) = text
            .split_once(' ')
            .filter(|(m, p)| !m.is_empty() && (p.starts_with('/') || p.starts_with('*')))
            .ok_or_else(|| format!("endpoint {text:?} is not \"METHOD /path\""))?;
        // "/*/..." and "/v1.41/..." stand for the version prefix, which routes never carry.
        let path = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((first, rest)) if first == "*" || crate::route::path::is_version(first) => {
                format!("/{rest}")
            }
            _ => path.to_string(),
        };
        Ok(Glob {
            text: text.to_string(),
            method: method.to_ascii_uppercase(),
            path,
        })
    }

    /// Match a method and a normalised path.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        fnmatch(
            self.method.as_bytes(),
            method.to_ascii_uppercase().as_bytes(),
        ) && fnmatch(self.path.as_bytes(), path.as_bytes())
    }
}

/// Shell-style matching: `*` any run of bytes, `?` any one byte, everything else literal.
fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A YAML node with the line it starts on.
#[derive(Debug)]
enum Node {
    Scalar(String, usize),
    Seq(Vec<Node>, usize),
    Map(Vec<(String, usize, Node)>, usize),
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Scalar(_, l) | Node::Seq(_, l) | Node::Map(_, l) => *l,
        }
    }
}

/// Builds [`Node`]s from parser events, refusing duplicate keys and aliases.
#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<(String, usize)>)>,
    root: Option<Node>,
    error: Option<String>,
}

impl Builder {
    fn add(&mut self, node: Node) {
        if self.error.is_some() {
            return;
        }
        let Some((parent, pending)) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match parent {
            Node::Seq(items, _) => items.push(node),
            Node::Map(entries, _) => match pending.take() {
                None => match node {
                    Node::Scalar(key, line) => *pending = Some((key, line)),
                    other => {
                        self.error = Some(format!(
                            "line {}: mapping keys must be plain values",
                            other.line()
                        ))
                    }
                },
                Some((key, line)) => {
                    if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == key) {
                        self.error = Some(format!(
                            "line {line}: duplicate key {key:?} (first at line {first})"
                        ));
                        return;
                    }
                    entries.push((key, line, node));
                }
            },
            Node::Scalar(..) => unreachable!("scalars have no children"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(v, ..) => self.add(Node::Scalar(v, line)),
            Event::SequenceStart(..) => self.stack.push((Node::Seq(Vec::new(), line), None)),
            Event::MappingStart(..) => self.stack.push((Node::Map(Vec::new(), line), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.add(node);
                }
            }
            Event::Alias(_) if self.error.is_none() => {
                self.error = Some(format!("line {line}: YAML aliases are not supported here"))
            }
            _ => {}
        }
    }
}

/// Read and check an `adapters.yml`.
pub fn load(path: &Path) -> Result<Config, String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    parse(&text, &file)
}

/// Check `text` (named `file` in messages).
pub fn parse(text: &str, file: &str) -> Result<Config, String> {
    let err = |line: usize, m: String| format!("{file}:{line}: {m}");
    let mut b = Builder::default();
    Parser::new_from_str(text)
        .load(&mut b, false)
        .map_err(|e| err(e.marker().line(), e.info().to_string()))?;
    if let Some(e) = b.error {
        // "line N: ..." → "file:N: ..."
        let (line, msg) = e
            .strip_prefix("line ")
            .and_then(|r| r.split_once(": "))
            .and_then(|(n, m)| n.parse().ok().map(|n| (n, m.to_string())))
            .unwrap_or((1, e));
        return Err(err(line, msg));
    }
    let Some(Node::Map(top, _)) = b.root else {
        return Err(err(
            1,
            "expected a mapping with version, endpoints and adapters".into(),
        ));
    };
    let mut version = None;
    let mut endpoints_node = None;
    let mut adapters_node = None;
    for (key, line, node) in top {
        match key.as_str() {
            "version" => version = Some((node, line)),
            "endpoints" => endpoints_node = Some((node, line)),
            "adapters" => adapters_node = Some((node, line)),
            other => {
                return Err(err(
                    line,
                    format!("unknown key {other:?} (expected version, endpoints, adapters)"),
                ))
            }
        }
    }
    match version {
        Some((Node::Scalar(v, _), _)) if v == "1" => {}
        Some((n, _)) => return Err(err(n.line(), "only version: 1 is supported".into())),
        None => return Err(err(1, "version: 1 is missing".into())),
    }
    let mut adapters: Vec<(String, String, usize)> = Vec::new();
    match adapters_node {
        Some((Node::Map(entries, _), _)) => {
            for (name, line, node) in entries {
                let Node::Scalar(url, _) = node else {
                    return Err(err(line, format!("adapter {name:?} must be a URL")));
                };
                Url::parse(&url).map_err(|e| err(line, format!("adapter {name:?}: {e}")))?;
                adapters.push((name, url, line));
            }
        }
        Some((n, _)) => {
            return Err(err(
                n.line(),
                "adapters must be a mapping of name: URL".into(),
            ))
        }
        None => {}
    }
    let mut endpoints = Vec::new();
    match endpoints_node {
        Some((Node::Map(entries, _), _)) => {
            for (glob_text, line, node) in entries {
                let glob = Glob::parse(&glob_text).map_err(|e| err(line, e))?;
                let Node::Map(hooks, _) = node else {
                    return Err(err(
                        line,
                        format!("endpoint {glob_text:?} must map pre/post to adapter lists"),
                    ));
                };
                let mut pre = Vec::new();
                let mut post = Vec::new();
                for (kind, kline, list) in hooks {
                    let chain = match kind.as_str() {
                        "pre" => &mut pre,
                        "post" => &mut post,
                        other => {
                            return Err(err(
                                kline,
                                format!("unknown key {other:?} (expected pre, post)"),
                            ))
                        }
                    };
                    let names = match list {
                        Node::Seq(items, _) => items,
                        Node::Scalar(s, l) => vec![Node::Scalar(s, l)],
                        Node::Map(_, l) => {
                            return Err(err(l, format!("{kind} must be a list of adapter names")))
                        }
                    };
                    for n in names {
                        let Node::Scalar(name, nline) = n else {
                            return Err(err(n.line(), "adapter names must be plain values".into()));
                        };
                        let url = adapters
                            .iter()
                            .find(|(a, _, _)| *a == name)
                            .map(|(_, u, _)| u.clone())
                            .ok_or_else(|| {
                                err(
                                    nline,
                                    format!("adapter {name:?} is not defined under adapters"),
                                )
                            })?;
                        chain.push(url);
                    }
                }
                if pre.is_empty() && post.is_empty() {
                    return Err(err(
                        line,
                        format!("endpoint {glob_text:?} has neither pre nor post adapters"),
                    ));
                }
                endpoints.push(Endpoint {
                    glob,
                    line,
                    pre,
                    post,
                });
            }
        }
        Some((n, _)) => return Err(err(n.line(), "endpoints must be a mapping".into())),
        None => {}
    }
    Ok(Config {
        file: file.to_string(),
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"version: 1
endpoints:
  "POST /*/containers/create":
    pre: [adder, adder2]
    post: [adder]
  "GET /*/containers/json":
    post: [adder]
adapters:
  adder: http://127.0.0.1:9000/add
  adder2: unix:///run/a.sock:/hook
"#;

    #[test]
    fn powerstrips_format() {
        let c = parse(GOOD, "adapters.yml").unwrap();
        assert_eq!(c.endpoints.len(), 2);
        let e = &c.endpoints[0];
        assert_eq!(e.line, 3);
        assert_eq!(
            e.pre,
            vec!["http://127.0.0.1:9000/add", "unix:///run/a.sock:/hook"]
        );
        assert_eq!(e.post, vec!["http://127.0.0.1:9000/add"]);
        assert!(e.glob.matches("POST", "/containers/create"));
        assert!(e.glob.matches("post", "/containers/create"));
        assert!(!e.glob.matches("GET", "/containers/create"));
        assert!(!e.glob.matches("POST", "/containers/create/x"));
    }

    #[test]
    fn globs_are_fnmatch() {
        let g = Glob::parse("* /*").unwrap();
        assert!(
            g.matches("GET", "/containers/abc/json"),
            "* crosses slashes like fnmatch"
        );
        let g = Glob::parse("POST /*/containers/*/start").unwrap();
        assert!(g.matches("POST", "/containers/abc/start"));
        let g = Glob::parse("POST /v1.41/containers/create").unwrap();
        assert!(g.matches("POST", "/containers/create"));
        let g = Glob::parse("GET /containers/?bc/json").unwrap();
        assert!(g.matches("GET", "/containers/abc/json"));
        assert!(!g.matches("GET", "/containers/abcd/json"));
        assert!(Glob::parse("POST containers").is_err());
    }

    #[test]
    fn mistakes_name_the_line() {
        for (text, want) in [
            ("version: 1\nversion: 1\n", "adapters.yml:2: duplicate key \"version\" (first at line 1)"),
            ("version: 1\nendpoint: {}\n", "adapters.yml:2: unknown key \"endpoint\""),
            ("version: 1\nendpoints:\n  \"POST /x\":\n    pre: [nope]\n", "adapters.yml:4: adapter \"nope\" is not defined"),
            ("version: 1\nendpoints:\n  \"POST /x\": {}\n", "adapters.yml:3: endpoint \"POST /x\" has neither pre nor post"),
            ("version: 1\nendpoints:\n  \"POST /x\":\n    pre: [a]\n    around: [a]\nadapters:\n  a: http://x/\n", "adapters.yml:5: unknown key \"around\""),
            ("- a\n- b\n", "adapters.yml:1: expected a mapping"),
            ("version: 2\n", "adapters.yml:1: only version: 1"),
            ("version: 1\nadapters:\n  a: ftp://x/\n", "adapters.yml:3: adapter \"a\""),
            ("version: 1\nendpoints: [\n", "adapters.yml:"),
        ] {
            let e = parse(text, "adapters.yml").unwrap_err();
            assert!(e.contains(want), "{text:?}: want {want:?}, got {e:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000, failure_persistence: None, ..Default::default()
        })]

        /// Any YAML-ish text: a config or an error naming the file; never a panic. Globs of a
        /// config match any path without panicking.
        #[test]
        fn any_adapters_file_loads_or_names_its_mistake(
            text in r#"((endpoints|adapters|pre|post|"[A-Z* /]{0,12}"|[a-z]{1,6}|http://[a-z:0-9/]{0,10}|- |: |\n|  |#|&a|\*a|\[|\]|\{|\}|,)){0,30}"#
        ) {
            match parse(&text, "adapters.yml") {
                Ok(config) => {
                    for e in &config.endpoints {
                        let _ = e.glob.matches("POST", "/containers/create");
                    }
                }
                Err(e) => proptest::prop_assert!(e.contains("adapters.yml"), "{}", e),
            }
        }

        #[test]
        fn any_glob_matches_without_panic(glob in r"[*? /a-zA-Z0-9.{}\[\]-]{0,16}", path in "(/[a-z*?.]{0,4}){0,5}") {
            if let Ok(g) = Glob::parse(&glob) {
                let _ = g.matches("GET", &path);
            }
        }
    }
}
