//! The `json` namespace: JSON that survives a round trip through Lua.
//!
//! A naive Lua JSON hook breaks `docker run` because an empty table has no shape: `"Dns": []`
//! comes back as `{}`. Here decoded arrays carry mlua's array metatable, so `[]` stays `[]`, empty
//! objects stay `{}`, `null` is the `json.null` sentinel (not a hole in the table), and integers
//! are Lua 5.4's 64-bit integers, exact.
//!
//! Bodies go between JSON bytes and Lua values without an intermediate `serde_json::Value`: the
//! JSON hook is the one most often written, and building and dropping a Rust tree on each side
//! was half its cost. Decoding reads the bytes into a flat list of tokens, then builds the tables
//! in one protected call into the VM (the only raw Lua C API in luastrip, see [`decode`]).
//! Encoding writes object keys in sorted order, so that the same table always gives the same
//! bytes.

use std::cell::RefCell;
use std::ffi::c_void;
use std::fmt;

use mlua::{ffi, Lua, LuaSerdeExt, Result, Table, Value};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

/// How deep `json.encode` follows nested tables: as deep as `json.decode` reads (serde_json's
/// limit), far beyond any Docker body, and well within a worker's stack.
const MAX_DEPTH: usize = 128;

/// Options that keep arrays marked and nulls as `json.null`.
fn to_lua_options() -> mlua::serde::SerializeOptions {
    mlua::serde::SerializeOptions::new()
        .set_array_metatable(true)
        .serialize_none_to_null(true)
        .serialize_unit_to_null(true)
}

/// Decode JSON bytes into a Lua value.
///
/// In two steps: the bytes are read into a flat list of [`Tok`]ens (serde_json's parser, its
/// errors and its nesting limit), then the tables are built from that list in one protected call
/// into the VM ([`build`]). Building them through mlua's API cost a protected call per string
/// and per field, most of a JSON hook's time.
pub fn decode(lua: &Lua, bytes: &[u8]) -> Result<Value> {
    let toks = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Toks(&toks)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| mlua::Error::runtime(format!("json.decode: {e}")))?;
    let toks = toks.into_inner();
    // SAFETY: `build` only calls the Lua C API on the stack it is given, with room checked
    // first; a Lua error it raises (out of memory) unwinds only through frames that own nothing
    // to drop (indices and a borrowed slice) to the protected call `exec_raw` makes.
    unsafe {
        lua.exec_raw::<Value>(lua.array_metatable(), |state| {
            let array_mt = ffi::lua_gettop(state);
            let mut at = 0;
            build(state, &toks, &mut at, array_mt);
            ffi::lua_remove(state, array_mt);
        })
    }
}

/// One piece of a JSON text, in document order: a container is its length, then its items (an
/// object's as key, value, key, value…).
enum Tok<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(std::borrow::Cow<'a, str>),
    Array(usize),
    Object(usize),
}

/// Pushes on `state` the value that starts at `toks[*at]`, and moves `at` past it. Arrays get
/// `array_mt` (the stack index of the VM's array metatable).
///
/// # Safety
/// `state` is a running Lua state inside a protected call; `toks` is a whole value as [`Toks`]
/// writes it (at most serde_json's 128 levels deep).
unsafe fn build(state: *mut ffi::lua_State, toks: &[Tok], at: &mut usize, array_mt: i32) {
    // A table, a key and a value per level at most: room for this level and the next.
    ffi::luaL_checkstack(state, 4, c"JSON nested too deep".as_ptr());
    let tok = &toks[*at];
    *at += 1;
    match tok {
        Tok::Null => ffi::lua_pushlightuserdata(state, std::ptr::null_mut()),
        Tok::Bool(b) => ffi::lua_pushboolean(state, i32::from(*b)),
        Tok::Int(n) => ffi::lua_pushinteger(state, *n),
        Tok::Float(f) => ffi::lua_pushnumber(state, *f),
        Tok::Str(s) => {
            ffi::lua_pushlstring(state, s.as_ptr().cast(), s.len());
        }
        Tok::Array(n) => {
            ffi::lua_createtable(state, i32::try_from(*n).unwrap_or(i32::MAX), 0);
            ffi::lua_pushvalue(state, array_mt);
            ffi::lua_setmetatable(state, -2);
            for i in 1..=*n {
                build(state, toks, at, array_mt);
                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer);
            }
        }
        Tok::Object(n) => {
            ffi::lua_createtable(state, 0, i32::try_from(*n).unwrap_or(i32::MAX));
            for _ in 0..*n {
                build(state, toks, at, array_mt);
                build(state, toks, at, array_mt);
                ffi::lua_rawset(state, -3);
            }
        }
    }
}

/// Reads a JSON value into [`Tok`]s.
#[derive(Clone, Copy)]
struct Toks<'a, 'v>(&'v RefCell<Vec<Tok<'a>>>);

impl<'a> Toks<'a, '_> {
    fn push(&self, t: Tok<'a>) {
        self.0.borrow_mut().push(t);
    }

    /// Begin a container; [`Toks::close`] writes its length.
    fn open(&self, t: Tok<'a>) -> usize {
        let mut v = self.0.borrow_mut();
        v.push(t);
        v.len() - 1
    }

    fn close(&self, at: usize, n: usize) {
        let mut v = self.0.borrow_mut();
        match &mut v[at] {
            Tok::Array(len) | Tok::Object(len) => *len = n,
            _ => unreachable!("a container's length goes on its own token"),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Toks<'de, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Toks<'de, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.push(Tok::Null);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<(), E> {
        self.push(Tok::Bool(b));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<(), E> {
        self.push(Tok::Int(n));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<(), E> {
        // Beyond Lua's integers, a float (as Lua's own tonumber does).
        self.push(i64::try_from(n).map_or(Tok::Float(n as f64), Tok::Int));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> std::result::Result<(), E> {
        self.push(Tok::Float(n));
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> std::result::Result<(), E> {
        self.push(Tok::Str(std::borrow::Cow::Borrowed(s)));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<(), E> {
        self.push(Tok::Str(std::borrow::Cow::Owned(s.to_string())));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<(), E> {
        self.push(Tok::Str(std::borrow::Cow::Owned(s)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let at = self.open(Tok::Array(0));
        let mut n = 0;
        while seq.next_element_seed(self)?.is_some() {
            n += 1;
        }
        self.close(at, n);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let at = self.open(Tok::Object(0));
        let mut n = 0;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
            n += 1;
        }
        self.close(at, n);
        Ok(())
    }
}

/// A Rust value as Lua sees JSON (arrays marked, `null` as `json.null`), for namespaces that
/// hand back records.
pub fn to_lua<T: serde::Serialize + ?Sized>(lua: &Lua, v: &T) -> Result<Value> {
    lua.to_value_with(v, to_lua_options())
}

/// Encode a Lua value as JSON bytes.
pub fn encode(lua: &Lua, value: Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    write(
        lua,
        &value,
        "json.encode",
        &mut serde_json::Serializer::new(&mut out),
    )?;
    Ok(out)
}

/// A Lua value as a `serde_json::Value`, by the rules of [`encode`] (for `store` and the REPL);
/// errors name `what`.
pub fn to_json(lua: &Lua, value: &Value, what: &str) -> Result<serde_json::Value> {
    write(lua, value, what, serde_json::value::Serializer)
}

fn write<S: Serializer>(lua: &Lua, value: &Value, what: &str, s: S) -> Result<S::Ok> {
    let failed = RefCell::new(None);
    let path = RefCell::new(Vec::new());
    let written = Out {
        v: value,
        array: lua.array_metatable().to_pointer(),
        path: &path,
        failed: &failed,
    }
    .serialize(s);
    match (written, failed.into_inner()) {
        (Ok(v), _) => Ok(v),
        // The VM's own error, as the VM raised it.
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(mlua::Error::runtime(format!("{what}: {e}"))),
    }
}

/// A VM error met while converting, kept in `failed` (to be raised as the VM raised it) and
/// passed on to serde as text.
fn keep<T, E>(
    failed: &RefCell<Option<mlua::Error>>,
    r: Result<T>,
    custom: fn(String) -> E,
) -> std::result::Result<T, E> {
    r.map_err(|e| {
        let msg = e.to_string();
        *failed.borrow_mut() = Some(e);
        custom(msg)
    })
}

/// Writes a Lua value as JSON: a table with the array mark or a non-empty sequence part is an
/// array (of its sequence), any other table an object whose keys must be strings; `nil` and
/// `json.null` are `null`. Functions, coroutines, userdata, cycles, strings that are not UTF-8
/// and nesting past [`MAX_DEPTH`] are refused.
struct Out<'a> {
    v: &'a Value,
    /// The VM's array metatable (`json.array()`, decoded arrays).
    array: *const c_void,
    /// The tables being written, outermost first: a cycle is one met again.
    path: &'a RefCell<Vec<*const c_void>>,
    failed: &'a RefCell<Option<mlua::Error>>,
}

impl Out<'_> {
    fn vm<T, E: ser::Error>(&self, r: Result<T>) -> std::result::Result<T, E> {
        keep(self.failed, r, E::custom)
    }

    fn nested<'b>(&'b self, v: &'b Value) -> Out<'b> {
        Out {
            v,
            array: self.array,
            path: self.path,
            failed: self.failed,
        }
    }

    fn table<S: Serializer>(&self, t: &Table, s: S) -> std::result::Result<S::Ok, S::Error> {
        let len = t.raw_len();
        if len > 0 || t.metatable().is_some_and(|m| m.to_pointer() == self.array) {
            let mut seq = s.serialize_seq(Some(len))?;
            for i in 1..=len {
                let v: Value = self.vm(t.raw_get(i))?;
                seq.serialize_element(&self.nested(&v))?;
            }
            return seq.end();
        }
        let mut pairs: Vec<(mlua::LuaString, Value)> = Vec::new();
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = self.vm(pair)?;
            match k {
                Value::String(k) => pairs.push((k, v)),
                other => {
                    return Err(ser::Error::custom(format!(
                        "an object key must be a string, not {} (or mark the table json.array())",
                        other.type_name()
                    )))
                }
            }
        }
        // Each key's bytes fetched once (a fetch goes through the VM's lock), then sorted.
        let keys: Vec<mlua::BorrowedBytes> = pairs.iter().map(|(k, _)| k.as_bytes()).collect();
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_unstable_by(|a, b| keys[*a].cmp(&keys[*b]));
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for i in order {
            let k = std::str::from_utf8(&keys[i])
                .map_err(|_| ser::Error::custom("an object key is not valid UTF-8"))?;
            map.serialize_entry(k, &self.nested(&pairs[i].1))?;
        }
        map.end()
    }
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.v {
            Value::Nil => s.serialize_unit(),
            Value::LightUserData(p) if p.0.is_null() => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Integer(n) => s.serialize_i64(*n),
            Value::Number(n) => s.serialize_f64(*n),
            Value::String(text) => match text.to_str() {
                Ok(text) => s.serialize_str(&text),
                Err(_) => Err(ser::Error::custom(
                    "a string is not valid UTF-8 (JSON strings are text)",
                )),
            },
            Value::Table(t) => {
                let ptr = t.to_pointer();
                if self.path.borrow().contains(&ptr) {
                    return Err(ser::Error::custom("a table contains itself"));
                }
                if self.path.borrow().len() >= MAX_DEPTH {
                    return Err(ser::Error::custom(format!(
                        "tables nested deeper than {MAX_DEPTH} levels"
                    )));
                }
                self.path.borrow_mut().push(ptr);
                let out = self.table(t, s);
                self.path.borrow_mut().pop();
                out
            }
            other => Err(ser::Error::custom(format!(
                "cannot encode a {} as JSON",
                other.type_name()
            ))),
        }
    }
}

/// Install `json` as a global.
pub fn register(lua: &Lua, _: &super::Services) -> Result<()> {
    let json = lua.create_table()?;
    json.set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| decode(lua, &s.as_bytes()))?,
    )?;
    json.set(
        "encode",
        lua.create_function(|lua, v: Value| lua.create_string(encode(lua, v)?))?,
    )?;
    json.set("null", Value::NULL)?;
    json.set(
        "array",
        lua.create_function(|lua, t: Option<Table>| {
            let t = match t {
                Some(t) => t,
                None => lua.create_table()?,
            };
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    json.set(
        "object",
        lua.create_function(|lua, t: Option<Table>| {
            let t = match t {
                Some(t) => t,
                None => lua.create_table()?,
            };
            // Drop the array marker if the table had one: empty tables encode as objects.
            t.set_metatable(None)?;
            Ok(t)
        })?,
    )?;
    lua.globals().set("json", json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(lua: &Lua, text: &str) -> serde_json::Value {
        let v = decode(lua, text.as_bytes()).unwrap();
        serde_json::from_slice(&encode(lua, v).unwrap()).unwrap()
    }

    #[test]
    fn the_docker_cli_create_body_survives() {
        let lua = Lua::new();
        register(&lua, &crate::lua::Services::default()).unwrap();
        let body = include_str!("../../tests/fixtures/create-body.json");
        let want: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(round_trip(&lua, body), want);
        let got = round_trip(&lua, body);
        assert_eq!(got["HostConfig"]["Dns"], serde_json::json!([]));
        assert_eq!(got["Volumes"], serde_json::json!({}));
        assert_eq!(got["Entrypoint"], serde_json::Value::Null);
    }

    #[test]
    fn edge_values() {
        let lua = Lua::new();
        register(&lua, &crate::lua::Services::default()).unwrap();
        let text = r#"{"big":9007199254740993,"neg":-9223372036854775808,"f":1.5,"e":[],"o":{},"n":null,"nested":[[],{}],"s":"\u00e9\n"}"#;
        assert_eq!(
            round_trip(&lua, text),
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }

    #[test]
    fn lua_side_helpers() {
        let lua = Lua::new();
        register(&lua, &crate::lua::Services::default()).unwrap();
        let out: String = lua
            .load(
                r#"
                local t = json.decode('{"Dns":[],"Labels":{}}')
                t.Labels["a"] = "b"
                t.Extra = json.array()
                t.Obj = json.object()
                t.Null = json.null
                return json.encode(t)
            "#,
            )
            .eval()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Dns":[],"Labels":{"a":"b"},"Extra":[],"Obj":{},"Null":null})
        );
        let err = lua.load("json.decode('{nope')").exec().unwrap_err();
        assert!(err.to_string().contains("json.decode"), "{err}");
        let err = lua.load("json.encode({f = print})").exec().unwrap_err();
        assert!(err.to_string().contains("json.encode"), "{err}");
    }

    #[test]
    fn what_json_cannot_hold_is_refused_clearly() {
        let lua = Lua::new();
        register(&lua, &crate::lua::Services::default()).unwrap();
        let refused = |code: &str| {
            let e = lua
                .load(format!("return json.encode({code})"))
                .eval::<String>()
                .unwrap_err()
                .to_string();
            assert!(e.contains("json.encode: "), "{code}: {e}");
            e
        };
        // Nesting deep enough to overflow the stack of a recursive encoder.
        let e =
            refused("(function() local t = {} for i = 1, 200000 do t = { t } end return t end)()");
        assert!(e.contains("nested deeper than 128"), "{e}");
        assert!(refused("(function() local t = {} t.me = t return t end)()")
            .contains("contains itself"));
        assert!(refused("{ [true] = 1 }").contains("key must be a string, not boolean"));
        assert!(refused("{ [1.5] = 1 }").contains("key must be a string, not number"));
        assert!(refused("{ s = '\\xff' }").contains("not valid UTF-8"));
        assert!(refused("{ f = print }").contains("cannot encode a function"));
        assert!(refused("{ co = coroutine.create(print) }").contains("cannot encode a thread"));
        // A table shared by two fields is not a cycle.
        let out: String = lua
            .load("local x = { 1 } return json.encode({ b = x, a = x, c = { z = 1, y = json.null } })")
            .eval()
            .unwrap();
        // Keys in sorted order, the same bytes every time.
        assert_eq!(out, r#"{"a":[1],"b":[1],"c":{"y":null,"z":1}}"#);
    }

    #[test]
    fn decoding_keeps_numbers_exact_and_the_vm_cap_typed() {
        let lua = Lua::new();
        register(&lua, &crate::lua::Services::default()).unwrap();
        let (big, small, huge, f): (i64, i64, f64, f64) = lua
            .load(
                r#"local t = json.decode('[9223372036854775807, -9223372036854775808, 18446744073709551615, 0.1]')
                return t[1], t[2], t[3], t[4]"#,
            )
            .eval()
            .unwrap();
        assert_eq!(
            (big, small, huge, f),
            (i64::MAX, i64::MIN, u64::MAX as f64, 0.1)
        );
        let e = lua.load("json.decode('[1] x')").exec().unwrap_err();
        assert!(
            e.to_string().contains("json.decode: trailing characters"),
            "{e}"
        );
        // Past the VM's memory cap, the error is the VM's own (fatal to the hook), not text.
        let capped = Lua::new();
        register(&capped, &crate::lua::Services::default()).unwrap();
        capped
            .set_memory_limit(capped.used_memory() + (1 << 20))
            .unwrap();
        let body = format!(
            "[{}]",
            vec![r#"{"k":"0123456789abcdef"}"#; 100_000].join(",")
        );
        let e = decode(&capped, body.as_bytes()).unwrap_err();
        assert!(crate::lua::errors::is_memory_error(&e), "{e:?}");
    }

    #[test]
    fn decoding_at_any_depth_or_memory_cap_ends_cleanly() {
        let lua = Lua::new();
        // As deep as serde_json reads (128 levels), arrays and objects mixed.
        let deep = |n: usize| format!("{}1{}", r#"[{"a":"#.repeat(n), "}]".repeat(n));
        let v = decode(&lua, deep(63).as_bytes()).unwrap();
        assert_eq!(encode(&lua, v).unwrap(), deep(63).into_bytes());
        let e = decode(&lua, deep(200).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        // Out of memory at every stage of building (a table, a string, a store): the VM's own
        // error each time, and the VM goes on.
        let body = format!(
            "[{}]",
            vec![r#"{"key":"0123456789abcdef","n":[1,2,{"x":null}]}"#; 2_000].join(",")
        );
        let base = lua.used_memory();
        let mut failed = 0;
        for extra in (4..400).step_by(7) {
            lua.set_memory_limit(base + extra * 1024).unwrap();
            if let Err(e) = decode(&lua, body.as_bytes()) {
                assert!(crate::lua::errors::is_memory_error(&e), "{e:?}");
                failed += 1;
            }
            lua.set_memory_limit(0).unwrap();
            lua.gc_collect().unwrap();
            let n: i64 = lua.load("return 40 + 2").eval().unwrap();
            assert_eq!(n, 42);
        }
        assert!(failed > 10, "{failed}");
        // With room, the same body decodes.
        assert!(decode(&lua, body.as_bytes()).is_ok());
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            (-1e15f64..1e15).prop_map(|f| serde_json::json!(f)),
            r"\PC{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[A-Za-z_]{1,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 1000, failure_persistence: None, ..Default::default()
        })]

        /// JSON → Lua → JSON is exact: empty arrays stay arrays, empty objects objects, nulls
        /// nulls, 64-bit integers exact.
        #[test]
        fn json_survives_a_round_trip_through_lua(v in any_json()) {
            let lua = Lua::new();
            let bytes = serde_json::to_vec(&v).unwrap();
            let back = encode(&lua, decode(&lua, &bytes).unwrap()).unwrap();
            let again: serde_json::Value = serde_json::from_slice(&back).unwrap();
            proptest::prop_assert_eq!(again, v);
        }
    }
}
