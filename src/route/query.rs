//! Query strings as dockerd reads them.
//!
//! dockerd parses the query with Go's `url.ParseQuery` and reads a parameter with `Form.Get`,
//! which takes the **first** of repeated keys. Go drops a pair silently when it contains `;` or a
//! bad `%` escape, and keeps decoded bytes that are not UTF-8 as they are. A hook reading the query
//! any other way could be shown one value while dockerd acts on another, so [`validate`] refuses
//! every query Go would read differently from [`pairs`], before any hook runs; what remains is
//! read with `form_urlencoded` exactly as Go reads it (`+` is a space, pairs split on `&`).

use std::borrow::Cow;

/// Why a query string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "the query string {0:?} contains ';', which dockerd ignores with the pair around it; \
         separate parameters with '&' and escape ';' as %3B"
    )]
    Semicolon(String),
    #[error("the query string {0:?} has a '%' that is not followed by two hex digits")]
    BadEscape(String),
    #[error("the query string {0:?} does not decode to UTF-8")]
    NotUtf8(String),
}

/// Refuse a query that dockerd would read differently from [`pairs`].
pub fn validate(raw: &str) -> Result<(), QueryError> {
    let b = raw.as_bytes();
    if b.contains(&b';') {
        return Err(QueryError::Semicolon(raw.to_string()));
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(QueryError::BadEscape(raw.to_string()));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    // Decoded strictly: form_urlencoded would replace bad UTF-8 with U+FFFD, Go keeps the bytes.
    let decodes = |part: &str| {
        let bytes: Vec<u8> = percent_encoding::percent_decode(part.as_bytes()).collect();
        std::str::from_utf8(&bytes).is_ok()
    };
    if raw.contains('%') && !raw.split(['&', '=']).all(decodes) {
        return Err(QueryError::NotUtf8(raw.to_string()));
    }
    Ok(())
}

/// The decoded `key=value` pairs, in order, repeated keys included.
pub fn pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The value dockerd uses for `key`: the first one.
pub fn first<'a>(raw: &'a str, key: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(raw.as_bytes()).find_map(|(k, v)| (k == key).then_some(v))
}

/// Pairs as a query string (`a=1&b=x+y`); empty for no pairs.
pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Docker's boolean parameters (`httputils.BoolValue`): anything but "", 0, no, false, none.
pub fn bool_value(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_repeated_keys_is_what_dockerd_uses() {
        assert_eq!(first("all=1&all=0", "all").as_deref(), Some("1"));
        assert_eq!(
            pairs("all=1&all=0&x=a+b%21"),
            vec![
                ("all".to_string(), "1".to_string()),
                ("all".to_string(), "0".to_string()),
                ("x".to_string(), "a b!".to_string())
            ]
        );
        assert_eq!(first("a", "a").as_deref(), Some(""));
        assert_eq!(first("=1&&b=2", "b").as_deref(), Some("2"));
    }

    #[test]
    fn what_go_reads_differently_is_refused() {
        assert!(matches!(
            validate("all=1;all=0"),
            Err(QueryError::Semicolon(_))
        ));
        assert!(matches!(validate("a=%zz"), Err(QueryError::BadEscape(_))));
        assert!(matches!(validate("a=%4"), Err(QueryError::BadEscape(_))));
        assert!(matches!(validate("a%=1"), Err(QueryError::BadEscape(_))));
        assert!(matches!(validate("a=%ff"), Err(QueryError::NotUtf8(_))));
        assert!(validate("a=%e2%82%ac&b=%EF%BF%BD&c=+").is_ok());
        assert!(validate("").is_ok());
        assert!(validate("filters=%7B%22label%22%3A%5B%22a%22%5D%7D").is_ok());
    }

    #[test]
    fn encoding_round_trips() {
        let q = encode([("a", "1"), ("b", "x y&z"), ("a", "2")]);
        assert_eq!(q, "a=1&b=x+y%26z&a=2");
        assert_eq!(
            pairs(&q),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x y&z".to_string()),
                ("a".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn docker_booleans() {
        for t in ["1", "true", "True", "yes", "x"] {
            assert!(bool_value(t), "{t}");
        }
        for f in ["", "0", "no", "false", "FALSE", "none"] {
            assert!(!bool_value(f), "{f}");
        }
    }
}
