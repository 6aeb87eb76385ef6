//! JSON bodies as dockerd reads them, checked before any hook sees them.
//!
//! dockerd decodes bodies with Go's `encoding/json`, which a hook's view (serde, Lua tables) does
//! not share:
//!
//! * a key matches a struct field **case-insensitively**, with Unicode simple folding (`ſ` is
//!   `s`, the Kelvin sign `K` is `k`): `"hostconfig"` is `HostConfig` to dockerd, and nothing to
//!   a hook that reads `spec.HostConfig`;
//! * a **repeated key** merges into the same struct (`"HostConfig":{…},"HostConfig":{…}`), where
//!   serde keeps only the last;
//! * the create body still has a **legacy place** for HostConfig fields: its top level;
//! * the decoder stops after the first JSON value, and accepts invalid UTF-8.
//!
//! Where dockerd's reading is unambiguous, luastrip **canonicalises** ([`canonical`]): the hooks
//! see the body as dockerd will act on it, and that very body is what is forwarded. Real clients
//! need this: docker-py sends `CPURealtimePeriod` (dockerd's field is `CpuRealtimePeriod`) and
//! `Runtime` at the top level of a create body.
//!
//! * outside free-form maps (`Labels`, `Options`, `DriverOpts`, …, whose keys are the user's), a
//!   key that differs from one of Docker's field names only in ASCII case is renamed to it;
//! * in `POST /containers/create`, HostConfig fields at the top level (the wrapper's deprecated
//!   place, and its `Cpuset`) are merged into `HostConfig` exactly as dockerd's `getHostConfig`
//!   does: with no inner `HostConfig` (absent or `null`) the top-level fields are the HostConfig;
//!   with one, only `Memory`, `MemorySwap`, `CpuShares`, `CpusetCpus` and `VolumeDriver` are
//!   copied into it where it has them zero, and the rest are ignored; then `Cpuset` fills
//!   `CpusetCpus` if that is still empty. The top-level copies are then removed.
//!
//! What two readers could read differently is **refused** with a 400 naming the key:
//!
//! * a body that is not exactly one JSON value in UTF-8;
//! * a key repeated in one object, exactly or once folded (Go merges or overwrites; serde keeps
//!   the last);
//! * a key written with escapes (`"Privil\u0065ged"`) or with a character that folds to ASCII
//!   (`ſ`, the Kelvin sign).
//!
//! Keys that are not Docker fields at all pass: dockerd ignores them. The JSON values in a
//! `POST /build` query ([`check_query`]) are refused rather than renamed, since the query is
//! forwarded as the client wrote it.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("the body is not valid JSON ({0}); dockerd would read it differently")]
    Syntax(String),
    #[error("the key {key:?} appears twice in {at} (dockerd merges repeated keys)")]
    Repeated { at: String, key: String },
    #[error(
        "the key {key:?} in {at} is spelled with escapes or characters that fold to other \
         letters; write it plainly"
    )]
    Disguised { at: String, key: String },
    #[error(
        "the key {key:?} in {at} is not Docker's field name {field:?} (dockerd matches field \
         names case-insensitively); spell it {field:?}"
    )]
    Folded {
        at: String,
        key: String,
        field: &'static str,
    },
}

/// Check a JSON API body of `method path` (see the module docs). An empty body passes.
pub fn check(method: &str, path: &str, body: &[u8]) -> Result<(), JsonError> {
    canonical(method, path, body).map(|_| ())
}

/// A JSON API body of `method path` as dockerd will read it (see the module docs): `None` when
/// it is canonical already (every real client's body, and no copy is made), else the canonical
/// body, which is what the hooks see and the daemon gets. What could be read two ways is an
/// error. An empty body passes.
pub fn canonical(method: &str, path: &str, body: &[u8]) -> Result<Option<Vec<u8>>, JsonError> {
    let create = method == "POST" && path == "/containers/create";
    let scan = scan_value(body, Context::Struct, create, is_swarm_route(path), true)?;
    if scan.renames.is_empty() && !scan.legacy {
        return Ok(None);
    }
    let mut text = String::with_capacity(body.len());
    let mut from = 0;
    // Keys hold no escapes (those were refused), so a rename is a plain splice.
    let body = std::str::from_utf8(body).expect("checked UTF-8");
    for (start, end, field) in &scan.renames {
        text.push_str(&body[from..*start]);
        text.push_str(field);
        from = *end;
    }
    text.push_str(&body[from..]);
    if scan.legacy {
        text = merge_legacy_host_config(&text)?;
    }
    Ok(Some(text.into_bytes()))
}

/// The HostConfig fields dockerd copies from the top level of a create body into an inner
/// `HostConfig` that has them zero (`getHostConfig`); it ignores the others there.
const COPIED_INTO_INNER: &[&str] = &[
    "Memory",
    "MemorySwap",
    "CpuShares",
    "CpusetCpus",
    "VolumeDriver",
];

/// Whether a JSON value's text is Go's zero for the fields in [`COPIED_INTO_INNER`] (or `null`,
/// which leaves a field zero).
fn is_zero(v: &str) -> bool {
    matches!(v, "0" | "-0" | "\"\"" | "null")
}

/// `text` (a canonical create body with HostConfig fields at its top level) with them merged into
/// `HostConfig` as dockerd's `getHostConfig` does (see the module docs).
fn merge_legacy_host_config(text: &str) -> Result<String, JsonError> {
    let pairs = object_pairs(text)?;
    let mut inner: Option<&str> = None;
    let mut cpuset: Option<&str> = None;
    let mut legacy: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &pairs {
        match *k {
            "HostConfig" => inner = Some(v),
            k if k.eq_ignore_ascii_case("Cpuset") => cpuset = Some(v),
            k if is_host_config_field(k) => legacy.push((k, v)),
            _ => {}
        }
    }
    let mut hc: Option<Vec<(String, String)>> = match inner {
        // Not an object: dockerd refuses the body, and so it stays as it is.
        Some(v) if v != "null" && !v.starts_with('{') => return Ok(text.to_string()),
        Some(v) if v.starts_with('{') => {
            let mut hc: Vec<(String, String)> = object_pairs(v)?
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (k, v) in &legacy {
                if !COPIED_INTO_INNER.contains(k) || is_zero(v) {
                    continue;
                }
                match hc.iter_mut().find(|(hk, _)| hk == k) {
                    Some((_, hv)) if is_zero(hv) => *hv = v.to_string(),
                    Some(_) => {}
                    None => hc.push((k.to_string(), v.to_string())),
                }
            }
            Some(hc)
        }
        // No inner HostConfig: the top-level fields are the HostConfig, if there are any.
        _ if legacy.is_empty() => None,
        _ => Some(
            legacy
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    };
    if let (Some(hc), Some(c)) = (hc.as_mut(), cpuset) {
        if !is_zero(c) {
            match hc.iter_mut().find(|(k, _)| k == "CpusetCpus") {
                Some((_, v)) if is_zero(v) => *v = c.to_string(),
                Some(_) => {}
                None => hc.push(("CpusetCpus".into(), c.to_string())),
            }
        }
    }
    let render = |pairs: &mut dyn Iterator<Item = (&str, &str)>| {
        let mut out = String::from("{");
        for (i, (k, v)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(k);
            out.push_str("\":");
            out.push_str(v);
        }
        out.push('}');
        out
    };
    let hc_text = hc.map(|hc| render(&mut hc.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    let mut top: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &pairs {
        match *k {
            "HostConfig" => top.push((k, hc_text.as_deref().unwrap_or(v))),
            k if k.eq_ignore_ascii_case("Cpuset") => {}
            k if is_host_config_field(k) => {}
            _ => top.push((k, v)),
        }
    }
    if inner.is_none() {
        if let Some(h) = hc_text.as_deref() {
            top.push(("HostConfig", h));
        }
    }
    Ok(render(&mut top.into_iter()))
}

/// The key/value pairs of the JSON object `text` (checked already), keys as written (without
/// escapes) and values as their text.
fn object_pairs(text: &str) -> Result<Vec<(&str, &str)>, JsonError> {
    let mut p = Parser::new(text, false, false);
    let mut pairs = Vec::new();
    p.ws();
    if !p.eat(b'{') {
        return Err(p.err("expected an object"));
    }
    p.ws();
    if p.eat(b'}') {
        return Ok(pairs);
    }
    loop {
        p.ws();
        let (key, _) = p.string()?;
        p.ws();
        if !p.eat(b':') {
            return Err(p.err("expected ':'"));
        }
        p.ws();
        let start = p.i;
        p.value(&mut Vec::new(), Context::Map, false)?;
        pairs.push((key, &text[start..p.i]));
        p.ws();
        if p.eat(b'}') {
            return Ok(pairs);
        }
        if !p.eat(b',') {
            return Err(p.err("expected ',' or '}'"));
        }
    }
}

/// Check the JSON values `POST /build` carries in its query (`buildargs`, `labels`: maps;
/// `ulimits`, `cachefrom`: lists), as [`check`] does bodies. Other routes have none.
pub fn check_query(method: &str, path: &str, pairs: &[(String, String)]) -> Result<(), JsonError> {
    if method != "POST" || path != "/build" {
        return Ok(());
    }
    for (k, v) in pairs {
        let ctx = match k.as_str() {
            "buildargs" | "labels" => Context::Map,
            "ulimits" | "cachefrom" => Context::Struct,
            _ => continue,
        };
        scan_value(v.as_bytes(), ctx, false, false, false).map_err(|e| match e {
            JsonError::Syntax(m) => JsonError::Syntax(format!("in the query parameter {k}: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

/// What canonicalising a body takes: keys to rename, and whether HostConfig fields stand at the
/// top of a create body.
#[derive(Default)]
struct Scan {
    /// (start, end, field): the key's text between its quotes, and Docker's spelling of it.
    renames: Vec<(usize, usize, &'static str)>,
    legacy: bool,
}

/// Check `body` as dockerd reads it; with `rename`, keys in another ASCII case are noted for
/// renaming rather than refused.
fn scan_value(
    body: &[u8],
    ctx: Context,
    create: bool,
    swarm: bool,
    rename: bool,
) -> Result<Scan, JsonError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| JsonError::Syntax(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    if is_blank(body) {
        return Ok(Scan::default());
    }
    let mut p = Parser::new(text, swarm, rename);
    p.ws();
    p.value(&mut Vec::new(), ctx, create)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(JsonError::Syntax(format!(
            "more data after the JSON value at byte {}",
            p.i
        )));
    }
    Ok(p.scan)
}

/// Whether a body is empty but for JSON's white space (space, tab, CR, LF: not Rust's or Unicode's
/// wider idea of it). Such a body is no body.
pub fn is_blank(body: &[u8]) -> bool {
    body.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Whether an object's keys are Docker field names or the user's own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Struct,
    Map,
}

/// How deep bodies may nest (Go's decoder allows 10000; Docker bodies need a dozen).
const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    /// The body (valid UTF-8), and the same as bytes.
    text: &'a str,
    s: &'a [u8],
    i: usize,
    depth: usize,
    /// The body is a swarm spec (see [`SWARM_SPELLINGS`]).
    swarm: bool,
    /// Rename keys in another case (else refuse them).
    rename: bool,
    scan: Scan,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, swarm: bool, rename: bool) -> Self {
        Parser {
            text,
            s: text.as_bytes(),
            i: 0,
            depth: 0,
            swarm,
            rename,
            scan: Scan::default(),
        }
    }

    fn err(&self, what: &str) -> JsonError {
        JsonError::Syntax(format!("{what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(
        &mut self,
        at: &mut Vec<&'a str>,
        ctx: Context,
        create: bool,
    ) -> Result<(), JsonError> {
        match self.s.get(self.i) {
            Some(b'{') => self.object(at, ctx, create),
            Some(b'[') => {
                self.enter()?;
                self.i += 1;
                self.ws();
                if !self.eat(b']') {
                    loop {
                        self.ws();
                        self.value(at, ctx, false)?;
                        self.ws();
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.err("expected ',' or ']'"));
                        }
                    }
                }
                self.depth -= 1;
                Ok(())
            }
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a JSON value")),
        }
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        Ok(())
    }

    fn object(
        &mut self,
        at: &mut Vec<&'a str>,
        ctx: Context,
        create: bool,
    ) -> Result<(), JsonError> {
        self.enter()?;
        self.i += 1;
        let mut seen = Seen::new();
        let mut buf = [0u8; FOLD_MAX];
        self.ws();
        if !self.eat(b'}') {
            loop {
                self.ws();
                if self.s.get(self.i) != Some(&b'"') {
                    return Err(self.err("expected a key"));
                }
                let key_start = self.i + 1;
                let (key, escaped) = self.string()?;
                let here = || display_path(at);
                let folded = fold(key, &mut buf);
                if escaped || key.chars().any(folds_to_ascii) {
                    return Err(JsonError::Disguised {
                        at: here(),
                        key: key.to_string(),
                    });
                }
                // Two keys Go would read as one: exact repeats, and (in structs) folded repeats.
                let slot = Slot {
                    key,
                    folded: ctx == Context::Struct && foldable(key),
                };
                if !seen.insert(slot) {
                    return Err(JsonError::Repeated {
                        at: here(),
                        key: key.to_string(),
                    });
                }
                // The key as dockerd reads it: Docker's spelling of a field written in another
                // case (renamed in the canonical body), or the key itself.
                let mut name = key;
                if ctx == Context::Struct {
                    if let Some(field) = folded.and_then(|f| field_for(f, self.swarm)) {
                        if field != key {
                            if !self.rename {
                                return Err(JsonError::Folded {
                                    at: here(),
                                    key: key.to_string(),
                                    field,
                                });
                            }
                            self.scan
                                .renames
                                .push((key_start, key_start + key.len(), field));
                            name = field;
                        }
                    }
                }
                if create && at.is_empty() && is_host_config_field(name) {
                    self.scan.legacy = true;
                }
                self.ws();
                if !self.eat(b':') {
                    return Err(self.err("expected ':'"));
                }
                self.ws();
                let inner = if ctx == Context::Struct && is_map_field(at, name) {
                    Context::Map
                } else {
                    Context::Struct
                };
                at.push(name);
                self.value(at, inner, false)?;
                at.pop();
                self.ws();
                if self.eat(b'}') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(self.err("expected ',' or '}'"));
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// A string; returns its text (escapes left as written) and whether it had escapes.
    fn string(&mut self) -> Result<(&'a str, bool), JsonError> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match self.s.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                        Some(b'u') => {
                            let hex = self.s.get(self.i + 2..self.i + 6);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("bad \\u escape"));
                            }
                            self.i += 6;
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                Some(&b) if b < 0x20 => return Err(self.err("control character in a string")),
                Some(_) => self.i += 1,
            }
        }
        // Both ends are at ASCII quotes, so the slice is whole characters.
        let text = &self.text[start..self.i];
        self.i += 1;
        Ok((text, escaped))
    }

    fn literal(&mut self, word: &str) -> Result<(), JsonError> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        self.eat(b'-');
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.s.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - from
        };
        match self.s.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err("bad number")),
        }
        if self.eat(b'.') && digits(self) == 0 {
            return Err(self.err("bad number"));
        }
        if self.s.get(self.i).is_some_and(|b| *b == b'e' || *b == b'E') {
            self.i += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if digits(self) == 0 {
                return Err(self.err("bad number"));
            }
        }
        debug_assert!(self.i > start);
        Ok(())
    }
}

fn display_path(at: &[&str]) -> String {
    if at.is_empty() {
        "the body".to_string()
    } else {
        at.join(".")
    }
}

/// Characters outside ASCII that Go's field matching folds onto ASCII letters.
fn folds_to_ascii(c: char) -> bool {
    matches!(c, '\u{017F}' | '\u{212A}')
}

/// One character as Go's field matching compares it: ASCII upper-cased, `ſ` as `S`, the Kelvin
/// sign as `K`; `None` for any other non-ASCII character (a key with one never matches a field).
fn fold_char(c: char) -> Option<u8> {
    match c {
        '\u{017F}' => Some(b'S'),
        '\u{212A}' => Some(b'K'),
        c if c.is_ascii() => Some(c.to_ascii_uppercase() as u8),
        _ => None,
    }
}

/// Whether every character of `key` folds (see [`fold_char`]).
fn foldable(key: &str) -> bool {
    key.chars().all(|c| fold_char(c).is_some())
}

/// Longer than any Docker field name: a key this long folded never matches one.
const FOLD_MAX: usize = 64;

/// A key as Go's field matching compares it (see [`fold_char`]), written into `buf`. `None` for
/// keys that can never match a field name: with other non-ASCII characters, or too long.
fn fold<'b>(key: &str, buf: &'b mut [u8; FOLD_MAX]) -> Option<&'b str> {
    let mut n = 0;
    for c in key.chars() {
        *buf.get_mut(n)? = fold_char(c)?;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// A key in the set of one object's keys: `folded` keys (in structs, where every character
/// folds) are equal when they fold alike, as Go would read them as one field; others when they
/// are the same text.
struct Slot<'a> {
    key: &'a str,
    folded: bool,
}

impl Slot<'_> {
    /// The key's characters as compared: folded to bytes (every one folds) or as they are.
    fn chars(&self) -> impl Iterator<Item = u32> + '_ {
        let folded = self.folded;
        self.key.chars().map(move |c| match fold_char(c) {
            Some(b) if folded => u32::from(b),
            _ => u32::from(c),
        })
    }
}

impl PartialEq for Slot<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.folded, other.folded) {
            (false, false) => self.key == other.key,
            (true, true) if self.key.is_ascii() && other.key.is_ascii() => {
                self.key.eq_ignore_ascii_case(other.key)
            }
            (true, true) => self.chars().eq(other.chars()),
            _ => false,
        }
    }
}

impl Eq for Slot<'_> {}

impl std::hash::Hash for Slot<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        if !self.folded {
            return self.key.hash(h);
        }
        // Every character folds to one byte: hash those, a buffer at a time.
        let mut buf = [0u8; FOLD_MAX];
        let mut n = 0;
        for c in self.chars() {
            if n == buf.len() {
                h.write(&buf);
                n = 0;
            }
            buf[n] = c as u8;
            n += 1;
        }
        h.write(&buf[..n]);
        h.write_u8(0xff);
    }
}

/// The keys one object has had so far: a short list, then (past [`Seen::FEW`]) a hash set.
enum Seen<'a> {
    Few(Vec<Slot<'a>>),
    Many(HashSet<Slot<'a>>),
}

impl<'a> Seen<'a> {
    const FEW: usize = 12;

    fn new() -> Self {
        Seen::Few(Vec::new())
    }

    /// Add `slot`; false if the object already had it.
    fn insert(&mut self, slot: Slot<'a>) -> bool {
        match self {
            Seen::Few(list) if list.contains(&slot) => false,
            Seen::Few(list) if list.len() < Self::FEW => {
                list.push(slot);
                true
            }
            Seen::Few(list) => {
                let mut set: HashSet<Slot<'a>> = HashSet::with_capacity(4 * Self::FEW);
                set.extend(list.drain(..));
                set.insert(slot);
                *self = Seen::Many(set);
                true
            }
            Seen::Many(set) => set.insert(slot),
        }
    }
}

/// The Docker field name `folded` (see [`fold`]) stands for, if any.
fn field_for(folded: &str, swarm: bool) -> Option<&'static str> {
    let spelled = |f: &&&str| f.len() == folded.len() && f.eq_ignore_ascii_case(folded);
    if swarm {
        // Swarm's structs spell a few fields their own way (`NanoCPUs`, not `NanoCpus`).
        if let Some(f) = SWARM_SPELLINGS.iter().find(spelled) {
            return Some(f);
        }
    }
    static BY_FOLD: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    let by_fold = BY_FOLD.get_or_init(|| {
        let mut m = HashMap::new();
        for f in FIELDS.iter().chain(HOST_CONFIG) {
            // The first spelling listed wins, as a search of the lists in order would find.
            m.entry(f.to_ascii_uppercase()).or_insert(*f);
        }
        m
    });
    by_fold.get(folded).copied()
}

/// Fields swarm's structs (services, tasks) spell differently from the container's.
const SWARM_SPELLINGS: &[&str] = &["NanoCPUs", "TTY", "HealthCheck"];

/// Whether `path` takes swarm's structs (services, swarm, nodes, secrets, configs).
fn is_swarm_route(path: &str) -> bool {
    let first = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
    matches!(
        first,
        "services" | "swarm" | "nodes" | "secrets" | "configs" | "tasks"
    )
}

/// Whether the object under `key` (at `parent`) is a free-form map: its keys are the user's
/// (label names, option names, paths, ports, network names), not Docker's field names.
fn is_map_field(parent: &[&str], key: &str) -> bool {
    match key {
        "Labels" | "Options" | "DriverOpts" | "Sysctls" | "StorageOpt" | "Tmpfs" | "Volumes"
        | "ExposedPorts" | "PortBindings" | "Annotations" | "EndpointsConfig" | "AuxAddress"
        | "AuxiliaryAddresses" | "BuildArgs" | "Filters" | "Args" => true,
        // LogConfig.Config / LogDriver's options are a map; every other "Config" is a struct.
        "Config" => parent
            .last()
            .is_some_and(|p| *p == "LogConfig" || *p == "LogDriver"),
        _ => false,
    }
}

/// HostConfig fields dockerd still reads at the top level of a create body (its legacy place).
fn is_host_config_field(key: &str) -> bool {
    let mut buf = [0u8; FOLD_MAX];
    let Some(folded) = fold(key, &mut buf) else {
        return false;
    };
    static BY_FOLD: OnceLock<HashSet<String>> = OnceLock::new();
    let by_fold =
        BY_FOLD.get_or_init(|| HOST_CONFIG.iter().map(|f| f.to_ascii_uppercase()).collect());
    by_fold.contains(folded) || folded == "CPUSET"
}

/// Fields of `HostConfig` (with its embedded `Resources`), as dockerd 20.10+ reads them.
const HOST_CONFIG: &[&str] = &[
    "Binds",
    "ContainerIDFile",
    "LogConfig",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "AutoRemove",
    "VolumeDriver",
    "VolumesFrom",
    "ConsoleSize",
    "Annotations",
    "CapAdd",
    "CapDrop",
    "CgroupnsMode",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "IpcMode",
    "Cgroup",
    "Links",
    "OomScoreAdj",
    "PidMode",
    "Privileged",
    "PublishAllPorts",
    "ReadonlyRootfs",
    "SecurityOpt",
    "StorageOpt",
    "Tmpfs",
    "UTSMode",
    "UsernsMode",
    "ShmSize",
    "Sysctls",
    "Runtime",
    "Isolation",
    "CpuShares",
    "Memory",
    "NanoCpus",
    "CgroupParent",
    "BlkioWeight",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpusetCpus",
    "CpusetMems",
    "Devices",
    "DeviceCgroupRules",
    "DeviceRequests",
    "KernelMemory",
    "KernelMemoryTCP",
    "MemoryReservation",
    "MemorySwap",
    "MemorySwappiness",
    "OomKillDisable",
    "PidsLimit",
    "Ulimits",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
    "Mounts",
    "MaskedPaths",
    "ReadonlyPaths",
    "Init",
];

/// Every other field name of the request bodies dockerd decodes into structs: containers
/// (Config, NetworkingConfig, mounts, devices, health checks), exec, update, volumes, networks,
/// plugins, swarm services, secrets and configs. A key that folds to one of these (or to one of
/// [`HOST_CONFIG`]) must be spelled exactly as it.
const FIELDS: &[&str] = &[
    // container.Config
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "ExposedPorts",
    "HostConfig",
    "NetworkingConfig",
    // HealthConfig
    "Test",
    "Interval",
    "Timeout",
    "StartPeriod",
    "StartInterval",
    "Retries",
    // HostConfig and Resources: HOST_CONFIG, searched too
    "Cpuset",
    // RestartPolicy, LogConfig, devices, ulimits, throttles
    "Name",
    "MaximumRetryCount",
    "Type",
    "Config",
    "PathOnHost",
    "PathInContainer",
    "CgroupPermissions",
    "Driver",
    "Count",
    "DeviceIDs",
    "Capabilities",
    "Options",
    "Soft",
    "Hard",
    "Path",
    "Weight",
    "Rate",
    // mount.Mount
    "Source",
    "Target",
    "ReadOnly",
    "Consistency",
    "BindOptions",
    "VolumeOptions",
    "TmpfsOptions",
    "Propagation",
    "NonRecursive",
    "CreateMountpoint",
    "ReadOnlyNonRecursive",
    "ReadOnlyForceRecursive",
    "NoCopy",
    "DriverConfig",
    "Subpath",
    "SizeBytes",
    "Mode",
    // NetworkingConfig, EndpointSettings, IPAM, network connect
    "EndpointsConfig",
    "EndpointConfig",
    "IPAMConfig",
    "Aliases",
    "DriverOpts",
    "GwPriority",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "DNSNames",
    "IPv4Address",
    "IPv6Address",
    "LinkLocalIPs",
    // network create
    "CheckDuplicate",
    "Scope",
    "EnableIPv4",
    "EnableIPv6",
    "IPAM",
    "Internal",
    "Attachable",
    "Ingress",
    "ConfigOnly",
    "ConfigFrom",
    "Network",
    "Subnet",
    "IPRange",
    "AuxAddress",
    "Container",
    "Force",
    // exec
    "Privileged",
    "DetachKeys",
    "Detach",
    // volume create
    "ClusterVolumeSpec",
    // plugins and privileges
    "Description",
    "Value",
    // swarm services, secrets, configs
    "TaskTemplate",
    "ContainerSpec",
    "PluginSpec",
    "NetworkAttachmentSpec",
    "Command",
    "Args",
    "Dir",
    "Groups",
    "Privileges",
    "CredentialSpec",
    "SELinuxContext",
    "Seccomp",
    "AppArmor",
    "NoNewPrivileges",
    "StopGracePeriod",
    "Hosts",
    "DNSConfig",
    "Nameservers",
    "Search",
    "Secrets",
    "Configs",
    "CapabilityAdd",
    "CapabilityDrop",
    "Resources",
    "Limits",
    "Reservations",
    "MemoryBytes",
    "Pids",
    "GenericResources",
    "Condition",
    "Delay",
    "MaxAttempts",
    "Window",
    "Placement",
    "Constraints",
    "Preferences",
    "MaxReplicas",
    "Platforms",
    "Networks",
    "LogDriver",
    "ForceUpdate",
    "UpdateConfig",
    "RollbackConfig",
    "Parallelism",
    "FailureAction",
    "Monitor",
    "MaxFailureRatio",
    "Order",
    "EndpointSpec",
    "Ports",
    "Protocol",
    "TargetPort",
    "PublishedPort",
    "PublishMode",
    "Replicated",
    "Global",
    "ReplicatedJob",
    "GlobalJob",
    "Replicas",
    "File",
    "SecretID",
    "SecretName",
    "ConfigID",
    "ConfigName",
    "UID",
    "GID",
    "Data",
    "Templating",
    // swarm init / join / update
    "ListenAddr",
    "AdvertiseAddr",
    "DataPathAddr",
    "DataPathPort",
    "DefaultAddrPool",
    "ForceNewCluster",
    "SubnetSize",
    "Spec",
    "RemoteAddrs",
    "JoinToken",
    "Orchestration",
    "Raft",
    "Dispatcher",
    "CAConfig",
    "EncryptionConfig",
    "TaskDefaults",
    "AutoLockManagers",
    // container update
    "RestartPolicy",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn create(body: &str) -> Result<(), JsonError> {
        check("POST", "/containers/create", body.as_bytes())
    }

    #[test]
    fn the_docker_cli_create_body_passes() {
        let body = include_str!("../../tests/fixtures/create-body.json");
        assert_eq!(create(body), Ok(()));
        assert_eq!(create(""), Ok(()));
        assert_eq!(create("  \n"), Ok(()));
        // Found by the property test: a vertical tab is not JSON white space.
        assert!(create("\u{b}").is_err());
        assert!(create("\u{c}").is_err());
    }

    /// The canonical body of a create body (the input itself when it is canonical already).
    fn canon(body: &str) -> String {
        match canonical("POST", "/containers/create", body.as_bytes()).unwrap() {
            Some(b) => String::from_utf8(b).unwrap(),
            None => body.to_string(),
        }
    }

    #[test]
    fn keys_in_another_case_are_renamed_to_dockers_spelling() {
        for (sent, seen) in [
            (
                r#"{"Image":"bb","hostconfig":{"Privileged":true}}"#,
                r#"{"Image":"bb","HostConfig":{"Privileged":true}}"#,
            ),
            (
                r#"{"HostConfig":{"privileged":true}}"#,
                r#"{"HostConfig":{"Privileged":true}}"#,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"type":"bind","Source":"/","Target":"/h"}]}}"#,
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/","Target":"/h"}]}}"#,
            ),
            // docker-py's spelling of the realtime scheduler's fields.
            (
                r#"{"HostConfig":{"CPURealtimePeriod":1000, "CPURealtimeRuntime":100}}"#,
                r#"{"HostConfig":{"CpuRealtimePeriod":1000, "CpuRealtimeRuntime":100}}"#,
            ),
            // A renamed map field is a map: its keys are the user's own.
            (
                r#"{"labels":{"privileged":"x"}}"#,
                r#"{"Labels":{"privileged":"x"}}"#,
            ),
        ] {
            assert_eq!(canon(sent), seen, "{sent}");
        }
        // Canonical bodies are not copied.
        assert_eq!(
            canonical(
                "POST",
                "/containers/create",
                br#"{"HostConfig":{"Privileged":true}}"#
            ),
            Ok(None)
        );
        // Two spellings of one field in one object: Go would keep one of them; refused.
        for bad in [
            r#"{"HostConfig":{"PidMode":"","pidmode":"host"}}"#,
            r#"{"HostConfig":{"privileged":false,"PRIVILEGED":true}}"#,
        ] {
            assert!(
                matches!(create(bad), Err(JsonError::Repeated { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        for bad in [
            r#"{"HostConfig":{"Privileged":true},"HostConfig":{"Memory":0}}"#,
            r#"{"HostConfig":{"Privileged":false,"Privileged":true}}"#,
            r#"{"Labels":{"a":"1","a":"2"}}"#,
            r#"{"Image":"a","IMAGE":"b"}"#,
        ] {
            let e = create(bad).unwrap_err();
            assert!(
                matches!(e, JsonError::Repeated { .. } | JsonError::Folded { .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn repeats_are_found_in_large_objects_too() {
        // Past a dozen keys an object's keys move from a list to a hash set: a repeat is found
        // on either side of the move, folded in structs and exact in maps.
        let keys = |n: usize| (0..n).map(|i| format!("\"x{i}\":1,")).collect::<String>();
        for (n, last) in [(5, "X3"), (12, "X3"), (13, "X12"), (40, "X39"), (40, "X0")] {
            let body = format!("{{{}\"{last}\":2}}", keys(n));
            match create(&body) {
                Err(JsonError::Repeated { key, .. }) => assert_eq!(key, last),
                other => panic!("{n} keys, then {last}: {other:?}"),
            }
            // In a map, "X3" and "x3" are two different keys (a label's name is the user's).
            let map = format!(
                "{{\"Labels\":{{{}\"{last}\":\"2\"}}}}",
                keys(n).replace(":1", ":\"1\"")
            );
            assert!(create(&map).is_ok(), "{map}");
            let again = format!(
                "{{\"Labels\":{{{}\"{}\":\"2\"}}}}",
                keys(n).replace(":1", ":\"1\""),
                last.to_lowercase()
            );
            assert!(
                matches!(create(&again), Err(JsonError::Repeated { .. })),
                "{again}"
            );
        }
        assert!(create(&format!("{{{}\"y\":1}}", keys(100))).is_ok());
    }

    #[test]
    fn keys_that_fold_alike_hash_alike() {
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        let long = "k".repeat(FOLD_MAX);
        for (a, b) in [
            ("ſecurityOpt".to_string(), "SECURITYOPT".to_string()),
            ("\u{212A}ey".to_string(), "key".to_string()),
            (format!("{long}ſ"), format!("{}S", long.to_uppercase())),
            (String::new(), String::new()),
        ] {
            let (sa, sb) = (
                Slot {
                    key: &a,
                    folded: true,
                },
                Slot {
                    key: &b,
                    folded: true,
                },
            );
            assert!(sa == sb, "{a} {b}");
            assert_eq!(state.hash_one(&sa), state.hash_one(&sb), "{a} {b}");
        }
    }

    #[test]
    fn disguised_keys_are_refused() {
        for bad in [
            r#"{"HostConfig":{"Privil\u0065ged":true}}"#,
            "{\"HostConfig\":{\"\u{017F}ecurityOpt\":[\"seccomp=unconfined\"]}}",
            "{\"HostConfig\":{\"Sysctls\":{},\"\u{212A}ernelMemory\":1}}",
        ] {
            assert!(
                matches!(create(bad), Err(JsonError::Disguised { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn map_keys_are_the_users_own() {
        assert_eq!(
            create(
                r#"{"Labels":{"name":"x","image":"y","NAME":"z"},"HostConfig":{"LogConfig":{"Type":"json-file","Config":{"max-size":"1m","mode":"x"}}}}"#
            ),
            Ok(())
        );
        assert_eq!(
            create(r#"{"NetworkingConfig":{"EndpointsConfig":{"privileged":{"Aliases":["a"]}}}}"#),
            Ok(())
        );
        // ... but the structs inside a map are still Docker's.
        assert_eq!(
            canon(r#"{"NetworkingConfig":{"EndpointsConfig":{"n":{"aliases":["a"]}}}}"#),
            r#"{"NetworkingConfig":{"EndpointsConfig":{"n":{"Aliases":["a"]}}}}"#
        );
        // Keys that are no Docker field pass: dockerd ignores them.
        assert_eq!(create(r#"{"Image":"bb","luastrip-extra":1}"#), Ok(()));
    }

    #[test]
    fn build_options_in_the_query_are_checked_too() {
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(
            check_query(
                "POST",
                "/build",
                &q("buildargs", r#"{"http_proxy":"x","Name":"y"}"#)
            ),
            Ok(())
        );
        assert!(matches!(
            check_query("POST", "/build", &q("buildargs", r#"{"A":"1","A":"2"}"#)),
            Err(JsonError::Repeated { .. })
        ));
        assert!(matches!(
            check_query(
                "POST",
                "/build",
                &q("ulimits", r#"[{"name":"nofile","Soft":1,"Hard":1}]"#)
            ),
            Err(JsonError::Folded { field: "Name", .. })
        ));
        assert!(check_query("POST", "/build", &q("labels", "{")).is_err());
        assert_eq!(
            check_query("GET", "/containers/json", &q("filters", "{")),
            Ok(())
        );
    }

    #[test]
    fn swarm_specs_keep_their_own_spellings() {
        let service = br#"{"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"bb","TTY":true,"HealthCheck":{"Test":["NONE"]}},"Resources":{"Limits":{"NanoCPUs":1000}}}}"#;
        assert_eq!(check("POST", "/services/create", service), Ok(()));
        // ... and a container's body its own: swarm's spelling there is renamed.
        assert_eq!(
            canon(r#"{"Image":"bb","TTY":true}"#),
            r#"{"Image":"bb","Tty":true}"#
        );
        assert_eq!(
            canon(r#"{"HostConfig":{"NanoCPUs":1}}"#),
            r#"{"HostConfig":{"NanoCpus":1}}"#
        );
        let b = canonical(
            "POST",
            "/services/create",
            br#"{"TaskTemplate":{"ContainerSpec":{"Tty":true}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(b, br#"{"TaskTemplate":{"ContainerSpec":{"TTY":true}}}"#);
    }

    #[test]
    fn host_config_fields_at_the_top_are_merged_as_dockerd_does() {
        for (sent, seen) in [
            // No inner HostConfig: the top-level fields are the HostConfig.
            (
                r#"{"Image":"bb","Privileged":true}"#,
                r#"{"Image":"bb","HostConfig":{"Privileged":true}}"#,
            ),
            (
                r#"{"Image":"bb","Binds":["/:/host"],"HostConfig":null}"#,
                r#"{"Image":"bb","HostConfig":{"Binds":["/:/host"]}}"#,
            ),
            (
                r#"{"pidmode":"host","Image":"bb"}"#,
                r#"{"Image":"bb","HostConfig":{"PidMode":"host"}}"#,
            ),
            // docker-py puts Runtime at the top level, beside an inner HostConfig: dockerd
            // copies only five fields into the inner one and ignores the rest.
            (
                r#"{"Image":"bb","Runtime":"runc","HostConfig":{"NetworkMode":"none"}}"#,
                r#"{"Image":"bb","HostConfig":{"NetworkMode":"none"}}"#,
            ),
            (
                r#"{"Privileged":true,"CapAdd":["ALL"],"HostConfig":{}}"#,
                r#"{"HostConfig":{}}"#,
            ),
            (
                r#"{"Memory":64,"MemorySwap":128,"CpuShares":2,"CpusetCpus":"0","VolumeDriver":"v","HostConfig":{"Memory":0}}"#,
                r#"{"HostConfig":{"Memory":64,"MemorySwap":128,"CpuShares":2,"CpusetCpus":"0","VolumeDriver":"v"}}"#,
            ),
            // The inner one's own values win where they are not zero.
            (
                r#"{"Memory":64,"HostConfig":{"Memory":32}}"#,
                r#"{"HostConfig":{"Memory":32}}"#,
            ),
            // Cpuset fills CpusetCpus last, where it is still empty.
            (
                r#"{"Cpuset":"1","HostConfig":{"CpusetCpus":""}}"#,
                r#"{"HostConfig":{"CpusetCpus":"1"}}"#,
            ),
            (
                r#"{"Cpuset":"1","CpusetCpus":"0","HostConfig":{}}"#,
                r#"{"HostConfig":{"CpusetCpus":"0"}}"#,
            ),
            (
                r#"{"Cpuset":"1","Memory":0}"#,
                r#"{"HostConfig":{"Memory":0,"CpusetCpus":"1"}}"#,
            ),
            // Without any HostConfig, Cpuset alone is ignored.
            (r#"{"Image":"bb","Cpuset":"1"}"#, r#"{"Image":"bb"}"#),
            // A HostConfig that is not an object: dockerd refuses the body; it stays as it is.
            (
                r#"{"Privileged":true,"HostConfig":"x"}"#,
                r#"{"Privileged":true,"HostConfig":"x"}"#,
            ),
        ] {
            assert_eq!(canon(sent), seen, "{sent}");
            // What is canonical stays so.
            assert_eq!(canon(seen), seen, "{seen}");
        }
        // Elsewhere the same keys are plain fields (exec's Privileged, update's Memory).
        assert_eq!(
            canonical(
                "POST",
                "/containers/abc/exec",
                br#"{"Privileged":true,"Cmd":["sh"]}"#
            ),
            Ok(None)
        );
    }

    #[test]
    fn what_go_would_read_differently_is_refused() {
        for bad in [
            &b"{\"Image\":\"bb\"} {\"HostConfig\":{\"Privileged\":true}}"[..],
            b"{\"Image\":\"b\xffb\"}",
            b"{\"Image\":\"bb\",}",
            b"[1,2",
            b"{\"a\":01}",
            b"{\"a\":\"\\x\"}",
        ] {
            assert!(
                matches!(check("POST", "/x", bad), Err(JsonError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(check("POST", "/x", deep.as_bytes()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000, failure_persistence: None, ..Default::default()
        })]

        /// Never a panic; and whatever passes is JSON serde reads too.
        #[test]
        fn any_bytes_are_checked_without_panic(body in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(b"{}[]\":,\\ 0123456789-+.eEtrufalsn".to_vec()),
                proptest::prelude::any::<u8>(),
            ], 0..64)) {
            if let Ok(canon) = canonical("POST", "/containers/create", &body) {
                if !is_blank(&body) {
                    proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
                        "{:?}", String::from_utf8_lossy(&body));
                }
                // A canonical body is JSON, and canonical already.
                if let Some(c) = canon {
                    proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&c).is_ok());
                    proptest::prop_assert_eq!(canonical("POST", "/containers/create", &c), Ok(None));
                }
            }
        }
    }
}
