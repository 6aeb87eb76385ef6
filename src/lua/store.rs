//! The `store` namespace: a small key/value store shared by every call and every VM.
//!
//! Values are anything JSON can hold. With `--state FILE` the store is loaded at start-up and
//! written after every change (to a temporary file, then renamed over the old one, so a crash
//! never leaves half a file). A file that cannot be parsed is a start-up error, never silently
//! emptied.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mlua::{Lua, LuaSerdeExt, Result, Value};
use serde_json::Value as Json;

/// The shared store.
pub struct Store {
    map: Mutex<BTreeMap<String, Json>>,
    /// Where it persists, if anywhere.
    path: Option<PathBuf>,
}

impl Store {
    /// An in-memory store.
    pub fn memory() -> Store {
        Store {
            map: Mutex::new(BTreeMap::new()),
            path: None,
        }
    }

    /// A store persisted at `path`; loads the file if it exists.
    pub fn open(path: &Path) -> std::result::Result<Store, String> {
        let map = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<BTreeMap<String, Json>>(&bytes).map_err(|e| {
                format!(
                    "--state {}: not a luastrip state file ({e}); move it away to start empty",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("--state {}: {e}", path.display())),
        };
        Ok(Store {
            map: Mutex::new(map),
            path: Some(path.to_path_buf()),
        })
    }

    /// Read a value.
    pub fn get(&self, key: &str) -> Option<Json> {
        self.lock().get(key).cloned()
    }

    /// Change the map under the lock and persist the result.
    fn update<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Json>) -> std::result::Result<R, String>,
    ) -> std::result::Result<R, String> {
        let mut map = self.lock();
        let r = f(&mut map)?;
        if let Some(path) = &self.path {
            persist(path, &map).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Json>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn persist(path: &Path, map: &BTreeMap<String, Json>) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(map)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn to_json(lua: &Lua, v: Value) -> Result<Json> {
    lua.from_value_with(
        v,
        mlua::DeserializeOptions::new()
            .deny_unsupported_types(true)
            .deny_recursive_tables(true),
    )
    .map_err(|e| mlua::Error::runtime(format!("store: values must be JSON-able: {e}")))
}

fn to_lua(lua: &Lua, v: &Json) -> Result<Value> {
    lua.to_value_with(
        v,
        mlua::SerializeOptions::new()
            .set_array_metatable(true)
            .serialize_none_to_null(true)
            .serialize_unit_to_null(true),
    )
}

/// Install `store` as a global backed by `store`.
pub fn register(lua: &Lua, services: &super::Services) -> Result<()> {
    let store = services.store.clone();
    let t = lua.create_table()?;
    let s = store.clone();
    t.set(
        "get",
        lua.create_function(move |lua, key: String| match s.get(&key) {
            Some(v) => to_lua(lua, &v),
            None => Ok(Value::Nil),
        })?,
    )?;
    let s = store.clone();
    t.set(
        "set",
        lua.create_function(move |lua, (key, v): (String, Value)| {
            let v = if v.is_nil() {
                None
            } else {
                Some(to_json(lua, v)?)
            };
            s.update(|m| {
                match v {
                    Some(v) => m.insert(key, v),
                    None => m.remove(&key),
                };
                Ok(())
            })
            .map_err(mlua::Error::runtime)
        })?,
    )?;
    let s = store.clone();
    t.set(
        "incr",
        lua.create_function(move |_, (key, n): (String, Option<i64>)| {
            let n = n.unwrap_or(1);
            s.update(|m| {
                let cur = match m.get(&key) {
                    None => 0,
                    Some(v) => v
                        .as_i64()
                        .ok_or_else(|| format!("store.incr: {key:?} holds {v}, not an integer"))?,
                };
                let next = cur
                    .checked_add(n)
                    .ok_or_else(|| format!("store.incr: {key:?} would overflow"))?;
                m.insert(key.clone(), Json::from(next));
                Ok(next)
            })
            .map_err(mlua::Error::runtime)
        })?,
    )?;
    let s = store.clone();
    t.set(
        "del",
        lua.create_function(move |_, key: String| {
            s.update(|m| Ok(m.remove(&key).is_some()))
                .map_err(mlua::Error::runtime)
        })?,
    )?;
    let s = store;
    t.set(
        "keys",
        lua.create_function(move |lua, prefix: Option<String>| {
            let prefix = prefix.unwrap_or_default();
            let keys: Vec<String> = s
                .lock()
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            let t = lua.create_sequence_from(keys)?;
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    lua.globals().set("store", t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shared_between_vms_and_persisted() {
        let dir = std::env::temp_dir().join(format!("luastrip-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let store = Arc::new(Store::open(&path).unwrap());
        let (a, b) = (Lua::new(), Lua::new());
        let services = crate::lua::Services {
            store: store.clone(),
            ..Default::default()
        };
        register(&a, &services).unwrap();
        register(&b, &services).unwrap();
        a.load("store.incr('calls'); store.set('cfg', {list = {1, 2}, empty = {}, n = 1})")
            .exec()
            .unwrap();
        let n: i64 = b.load("return store.incr('calls', 5)").eval().unwrap();
        assert_eq!(n, 6);
        let keys: Vec<String> = b.load("return store.keys('c')").eval().unwrap();
        assert_eq!(keys, vec!["calls", "cfg"]);
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.get("calls"), Some(Json::from(6)));
        assert_eq!(
            reopened.get("cfg"),
            Some(serde_json::json!({"list": [1, 2], "empty": {}, "n": 1}))
        );
        a.load("store.set('cfg', nil); store.del('calls')")
            .exec()
            .unwrap();
        assert!(Store::open(&path).unwrap().get("cfg").is_none());
        let err = a
            .load("store.set('x', 'a'); store.incr('x')")
            .exec()
            .unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
        std::fs::write(&path, b"{not json").unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(err.contains("not a luastrip state file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
