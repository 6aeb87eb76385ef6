//! The `store` namespace: a small key/value store shared by every call and every VM.
//!
//! Values are anything JSON can hold. With `--state FILE` the store is loaded at start-up and
//! written after every change (to a temporary file, then renamed over the old one, so a crash
//! never leaves half a file). A file that cannot be parsed is a start-up error, never silently
//! emptied. The store holds at most its cap (`--store-limit-mb`, counted as keys plus their JSON);
//! a `set` or `incr` that would go past it fails, and the store stays as it was.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mlua::{Lua, LuaSerdeExt, Result, Value};
use serde_json::Value as Json;

/// The default cap of a store.
pub const DEFAULT_CAP: usize = 64 << 20;

/// The shared store.
pub struct Store {
    map: Mutex<Inner>,
    /// Where it persists, if anywhere.
    path: Option<PathBuf>,
    /// Most bytes it may hold.
    cap: usize,
}

struct Inner {
    map: BTreeMap<String, Json>,
    /// Sum of [`entry_size`] over the map.
    bytes: usize,
}

/// What an entry counts against the cap: its key and its value as JSON.
fn entry_size(key: &str, v: &Json) -> usize {
    key.len() + serde_json::to_vec(v).map_or(0, |b| b.len())
}

impl Store {
    /// An in-memory store holding at most `cap` bytes.
    pub fn memory(cap: usize) -> Store {
        Store {
            map: Mutex::new(Inner {
                map: BTreeMap::new(),
                bytes: 0,
            }),
            path: None,
            cap,
        }
    }

    /// A store persisted at `path`, holding at most `cap` bytes; loads the file if it exists.
    pub fn open(path: &Path, cap: usize) -> std::result::Result<Store, String> {
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
        let bytes = map.iter().map(|(k, v)| entry_size(k, v)).sum();
        Ok(Store {
            map: Mutex::new(Inner { map, bytes }),
            path: Some(path.to_path_buf()),
            cap,
        })
    }

    /// Read a value.
    pub fn get(&self, key: &str) -> Option<Json> {
        self.lock().map.get(key).cloned()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Change one key under the lock: `f` gets its value and returns the new one (`None`
    /// removes it). A change that would take the store past its cap fails and changes nothing.
    /// The result is persisted.
    fn update<R>(
        &self,
        key: &str,
        f: impl FnOnce(Option<&Json>) -> std::result::Result<(Option<Json>, R), String>,
    ) -> std::result::Result<R, String> {
        let mut inner = self.lock();
        let old = inner.map.get(key);
        let old_size = old.map_or(0, |v| entry_size(key, v));
        let (new, r) = f(old)?;
        let new_size = new.as_ref().map_or(0, |v| entry_size(key, v));
        let total = inner.bytes - old_size + new_size;
        if new_size > old_size && total > self.cap {
            return Err(format!(
                "store: setting {key:?} would hold {total} bytes, over the cap of {} MiB \
                 (--store-limit-mb)",
                self.cap >> 20
            ));
        }
        match new {
            Some(v) => inner.map.insert(key.to_string(), v),
            None => inner.map.remove(key),
        };
        inner.bytes = total;
        if let Some(path) = &self.path {
            persist(path, &inner.map)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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
    super::json::to_json(lua, &v, "store: values must be JSON-able")
}

/// Install `store` as a global backed by `store`.
pub fn register(lua: &Lua, services: &super::Services) -> Result<()> {
    let store = services.store.clone();
    let t = lua.create_table()?;
    let s = store.clone();
    t.set(
        "get",
        lua.create_function(move |lua, key: String| match s.get(&key) {
            Some(v) => super::json::to_lua(lua, &v),
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
            s.update(&key, |_| Ok((v, ())))
                .map_err(mlua::Error::runtime)
        })?,
    )?;
    let s = store.clone();
    t.set(
        "incr",
        lua.create_function(move |_, (key, n): (String, Option<i64>)| {
            let n = n.unwrap_or(1);
            s.update(&key, |cur| {
                let cur = match cur {
                    None => 0,
                    Some(v) => v
                        .as_i64()
                        .ok_or_else(|| format!("store.incr: {key:?} holds {v}, not an integer"))?,
                };
                let next = cur
                    .checked_add(n)
                    .ok_or_else(|| format!("store.incr: {key:?} would overflow"))?;
                Ok((Some(Json::from(next)), next))
            })
            .map_err(mlua::Error::runtime)
        })?,
    )?;
    let s = store.clone();
    t.set(
        "del",
        lua.create_function(move |_, key: String| {
            s.update(&key, |cur| Ok((None, cur.is_some())))
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
                .map
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
        let store = Arc::new(Store::open(&path, DEFAULT_CAP).unwrap());
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
        let reopened = Store::open(&path, DEFAULT_CAP).unwrap();
        assert_eq!(reopened.get("calls"), Some(Json::from(6)));
        assert_eq!(
            reopened.get("cfg"),
            Some(serde_json::json!({"list": [1, 2], "empty": {}, "n": 1}))
        );
        a.load("store.set('cfg', nil); store.del('calls')")
            .exec()
            .unwrap();
        assert!(Store::open(&path, DEFAULT_CAP)
            .unwrap()
            .get("cfg")
            .is_none());
        let err = a
            .load("store.set('x', 'a'); store.incr('x')")
            .exec()
            .unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
        // A table too deep for JSON is refused, not recursed into until the stack overflows.
        let err = a
            .load("local t = {} for i = 1, 200000 do t = { t } end store.set('deep', t)")
            .exec()
            .unwrap_err();
        assert!(err.to_string().contains("nested deeper than 128"), "{err}");
        std::fs::write(&path, b"{not json").unwrap();
        let err = Store::open(&path, DEFAULT_CAP).err().unwrap();
        assert!(err.contains("not a luastrip state file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_store_holds_at_most_its_cap() {
        let store = Arc::new(Store::memory(1 << 20));
        let lua = Lua::new();
        let services = crate::lua::Services {
            store: store.clone(),
            ..Default::default()
        };
        register(&lua, &services).unwrap();
        let err = lua
            .load(
                r#"
                local big = string.rep("x", 100 * 1024)
                for i = 1, 20 do store.set("k" .. i, big) end
                "#,
            )
            .exec()
            .unwrap_err();
        assert!(err.to_string().contains("--store-limit-mb"), "{err}");
        assert!(store.bytes() <= 1 << 20);
        // Replacing a value with a smaller one, and deleting, still work when full.
        lua.load(
            r#"store.set("k1", "small"); store.del("k2"); store.set("k2", string.rep("y", 1000))"#,
        )
        .exec()
        .unwrap();
        assert!(store.bytes() <= 1 << 20);
    }
}
