//! The `json` namespace: JSON that survives a round trip through Lua.
//!
//! A naive Lua JSON hook breaks `docker run` because an empty table has no shape: `"Dns": []`
//! comes back as `{}`. Here decoded arrays carry mlua's array metatable, so `[]` stays `[]`, empty
//! objects stay `{}`, `null` is the `json.null` sentinel (not a hole in the table), and integers
//! are Lua 5.4's 64-bit integers, exact.
//!
//! Bodies go straight between JSON bytes and Lua values, without an intermediate
//! `serde_json::Value`: the JSON hook is the one most often written, and building and dropping a
//! Rust tree on each side was half its cost. Encoding writes object keys in sorted order, so that
//! the same table always gives the same bytes.

use std::cell::RefCell;
use std::ffi::c_void;
use std::fmt;

use mlua::{Lua, LuaSerdeExt, Result, Table, Value};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

/// How deep `json.encode` follows nested tables: as deep as `json.decode` reads (serde_json's
/// limit), far beyond any Docker body, and well within a worker's stack.
const MAX_DEPTH: usize = 128;

/// Options that keep arrays marked and nulls as `json.null`.
fn to_lua_options() -> mlua::SerializeOptions {
    mlua::SerializeOptions::new()
        .set_array_metatable(true)
        .serialize_none_to_null(true)
        .serialize_unit_to_null(true)
}

/// Decode JSON bytes into a Lua value.
pub fn decode(lua: &Lua, bytes: &[u8]) -> Result<Value> {
    let failed = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let out = Build {
        lua,
        failed: &failed,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (out, failed.into_inner()) {
        (Ok(v), _) => Ok(v),
        // The VM's own error (its memory cap), as the VM raised it.
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(mlua::Error::runtime(format!("json.decode: {e}"))),
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

/// Builds Lua values as serde_json reads the bytes. An error of the VM (its memory cap) is kept
/// in `failed`, to be raised as it is rather than as text.
#[derive(Clone, Copy)]
struct Build<'a> {
    lua: &'a Lua,
    failed: &'a RefCell<Option<mlua::Error>>,
}

impl Build<'_> {
    fn vm<T, E: de::Error>(&self, r: Result<T>) -> std::result::Result<T, E> {
        keep(self.failed, r, E::custom)
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

impl<'de> DeserializeSeed<'de> for Build<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::NULL)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Boolean(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Value, E> {
        Ok(Value::Integer(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Value, E> {
        // Beyond Lua's integers, a float (as Lua's own tonumber does).
        Ok(i64::try_from(n).map_or(Value::Number(n as f64), Value::Integer))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> std::result::Result<Value, E> {
        Ok(Value::Number(n))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Value, E> {
        self.vm(self.lua.create_string(s)).map(Value::String)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let t = self.vm(self.lua.create_table())?;
        self.vm(t.set_metatable(Some(self.lua.array_metatable())))?;
        let mut i = 1;
        while let Some(v) = seq.next_element_seed(self)? {
            self.vm(t.raw_set(i, v))?;
            i += 1;
        }
        Ok(Value::Table(t))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let t = self.vm(self.lua.create_table())?;
        while let Some(k) = map.next_key_seed(self)? {
            let v = map.next_value_seed(self)?;
            self.vm(t.raw_set(k, v))?;
        }
        Ok(Value::Table(t))
    }
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
        let mut pairs: Vec<(mlua::String, Value)> = Vec::new();
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
        lua.create_function(|lua, s: mlua::String| decode(lua, &s.as_bytes()))?,
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
