//! The `json` namespace: JSON that survives a round trip through Lua.
//!
//! A naive Lua JSON hook breaks `docker run` because an empty table has no shape: `"Dns": []`
//! comes back as `{}`. Here decoded arrays carry mlua's array metatable, so `[]` stays `[]`, empty
//! objects stay `{}`, `null` is the `json.null` sentinel (not a hole in the table), and integers
//! are Lua 5.4's 64-bit integers, exact.

use mlua::{Lua, LuaSerdeExt, Result, Table, Value};

/// Options that keep arrays marked and nulls as `json.null`.
fn to_lua_options() -> mlua::SerializeOptions {
    mlua::SerializeOptions::new()
        .set_array_metatable(true)
        .serialize_none_to_null(true)
        .serialize_unit_to_null(true)
}

/// Options for encoding: refuse functions and cycles rather than silently dropping them.
fn from_lua_options() -> mlua::DeserializeOptions {
    mlua::DeserializeOptions::new()
        .deny_unsupported_types(true)
        .deny_recursive_tables(true)
        .encode_empty_tables_as_array(false)
}

/// Decode JSON bytes into a Lua value.
pub fn decode(lua: &Lua, bytes: &[u8]) -> Result<Value> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| mlua::Error::runtime(format!("json.decode: {e}")))?;
    lua.to_value_with(&v, to_lua_options())
}

/// A Rust value as Lua sees JSON (arrays marked, `null` as `json.null`), for namespaces that
/// hand back records.
pub fn to_lua<T: serde::Serialize + ?Sized>(lua: &Lua, v: &T) -> Result<Value> {
    lua.to_value_with(v, to_lua_options())
}

/// Encode a Lua value as JSON bytes.
pub fn encode(lua: &Lua, value: Value) -> Result<Vec<u8>> {
    let v: serde_json::Value = lua
        .from_value_with(value, from_lua_options())
        .map_err(|e| mlua::Error::runtime(format!("json.encode: {e}")))?;
    serde_json::to_vec(&v).map_err(|e| mlua::Error::runtime(format!("json.encode: {e}")))
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
