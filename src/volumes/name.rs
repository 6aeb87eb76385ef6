//! Names that reach `zfs` arguments: volume names and snapshot tags. They are checked here,
//! before any command runs, so that no name can become an option (`-r`), a path (`a/b`, `..`),
//! another dataset's snapshot (`@`) or an argument split (spaces).

use std::fmt;

/// The longest volume name or snapshot tag.
pub const MAX_LEN: usize = 64;

/// A checked volume name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most [`MAX_LEN`] bytes, no `..`.
/// (Docker's own volume names allow the same characters.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeName(String);

/// A checked snapshot tag, by the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

fn check(what: &str, s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad {what} {s:?}: {why}"));
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > MAX_LEN {
        return bad(&format!("longer than {MAX_LEN} bytes"));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or a digit");
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!(
            "{c:?} is not allowed (use letters, digits, _ . -)"
        ));
    }
    if s.contains("..") {
        return bad("\"..\" is not allowed");
    }
    Ok(())
}

impl VolumeName {
    pub fn parse(s: &str) -> Result<Self, String> {
        check("volume name", s).map(|_| VolumeName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Tag {
    pub fn parse(s: &str) -> Result<Self, String> {
        check("snapshot tag", s).map(|_| Tag(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for (name, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("a@b", "'@'"),
            ("..", "start with"),
            ("a..b", "\"..\""),
            ("a b", "' '"),
            ("-r", "start with"),
            (".hidden", "start with"),
            ("a\nb", "'\\n'"),
            ("é", "start with"),
        ] {
            let e = VolumeName::parse(name).unwrap_err();
            assert!(e.contains(why), "{name:?}: {e}");
        }
        assert!(VolumeName::parse(&"a".repeat(65))
            .unwrap_err()
            .contains("longer than 64"));
        for ok in ["db", "db-1", "a.b_c", "0", &"a".repeat(64)] {
            VolumeName::parse(ok).unwrap();
        }
    }

    proptest! {
        #[test]
        fn an_accepted_name_is_one_plain_argument(s in "\\PC{0,70}") {
            if let Ok(n) = VolumeName::parse(&s) {
                let n = n.as_str();
                prop_assert!(!n.starts_with('-'));
                prop_assert!(!n.contains('/') && !n.contains('@') && !n.contains(".."));
                prop_assert!(n.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
