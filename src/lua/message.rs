//! The `req` and `res` tables scripts see, and writing their edits back.
//!
//! Building Lua tables is the cost of a hook, so what most hooks never read is built on first
//! access, through the tables' `__index`: `headers`, `query`, `ctx`, `params` and the request
//! **body**. The body is read from the client only when a hook first reads `req.body` or calls
//! `req:json()` (asynchronously: the hook's coroutine waits, the worker serves other calls), up
//! to `--body-limit-mb`; a hook that never touches it leaves it streaming to the daemon. Routes
//! whose body is a stream (build contexts, `docker load`, `import`, `cp` into a container; see
//! [`crate::route::kind`]) never offer it: `req.body` is nil there.
//!
//! After the hooks, [`apply_req`] / [`apply_res`] compare the tables with the call and apply
//! only what changed, so that an untouched call is forwarded byte for byte.

use std::sync::Arc;

use ::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use bytes::Bytes;
use mlua::{Function, Lua, Table, Value};

use super::errors::raise;
use super::json;
use crate::body::{full, read_to_cap, Body, ReadError};
use crate::call::Call;
use crate::error::Error;
use crate::route::kind::RequestBody;
use crate::route::{query, NormalPath};

/// A request body not read yet, shared between the `req` table (which may read it) and the
/// engine (which gives it back to the call if nobody did). When read, it is checked the way
/// dockerd will read it ([`crate::route::json`]) before any hook sees it, and canonicalised:
/// the hooks see (and the daemon gets) the body as dockerd reads it.
#[derive(Clone)]
pub struct PendingBody {
    state: Arc<tokio::sync::Mutex<BodyState>>,
    /// The call's method and path, for the check.
    route: Arc<(String, String)>,
}

enum BodyState {
    /// Still the client's stream.
    Unread(Body),
    /// Read by a hook: the bytes the hooks see (canonical), and the client's own.
    Read { seen: Bytes, sent: Bytes },
    /// Handed back to the call.
    Gone,
}

impl PendingBody {
    fn new(body: Body, call: &Call) -> Self {
        PendingBody {
            state: Arc::new(tokio::sync::Mutex::new(BodyState::Unread(body))),
            route: Arc::new((
                call.head.method.as_str().to_string(),
                call.path.as_str().to_string(),
            )),
        }
    }

    /// The body's bytes, reading it now if nobody has (at most `cap` bytes).
    async fn read(&self, cap: usize) -> Result<Option<Bytes>, Error> {
        let mut state = self.state.lock().await;
        match std::mem::replace(&mut *state, BodyState::Gone) {
            BodyState::Unread(body) => {
                let sent = read_capped(body, cap).await?;
                let (method, path) = &*self.route;
                let seen = crate::route::json::canonical(method, path, &sent)?
                    .map_or_else(|| sent.clone(), Bytes::from);
                *state = BodyState::Read {
                    seen: seen.clone(),
                    sent,
                };
                Ok(Some(seen))
            }
            BodyState::Read { seen, sent } => {
                *state = BodyState::Read {
                    seen: seen.clone(),
                    sent,
                };
                Ok(Some(seen))
            }
            BodyState::Gone => Ok(None),
        }
    }

    /// Take what the hooks left: the unread stream, or the bytes they read (as seen, and as the
    /// client sent them).
    fn take(&self) -> Option<Result<Body, (Bytes, Bytes)>> {
        let mut state = self.state.try_lock().ok()?;
        match std::mem::replace(&mut *state, BodyState::Gone) {
            BodyState::Unread(body) => Some(Ok(body)),
            BodyState::Read { seen, sent } => Some(Err((seen, sent))),
            BodyState::Gone => None,
        }
    }
}

/// Read a whole body, at most `cap` bytes (413 beyond).
pub async fn read_capped(body: Body, cap: usize) -> Result<Bytes, Error> {
    match read_to_cap(body, cap).await {
        Ok(bytes) => Ok(bytes),
        Err(ReadError::TooLarge) => Err(Error::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the {} MiB a script may read (--body-limit-mb)",
                cap >> 20
            ),
        )),
        Err(ReadError::Broken(e)) => Err(Error::client(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// What `req` / `res` build only when a script first looks. Kept in the table under
/// [`lazy_key`].
struct Lazy {
    headers: HeaderMap,
    /// The raw query string; `None` for `res` (which has no query, ctx or params).
    query: Option<String>,
    /// The request body, for routes whose body is JSON.
    body: Option<PendingBody>,
    /// Largest body a hook may read.
    cap: usize,
}

impl mlua::UserData for Lazy {}

/// A key no script can spell: a light userdata.
fn lazy_key() -> mlua::LightUserData {
    static KEY: u8 = 0;
    mlua::LightUserData(std::ptr::addr_of!(KEY) as *mut std::ffi::c_void)
}

/// The `req` table of `docs/lua-api.md`. Its body, when the route's body is JSON, moves into the
/// table (read on first access) until [`apply_req`] gives it back to the call.
pub fn new_req(lua: &Lua, call: &mut Call, cap: usize) -> mlua::Result<Table> {
    let body = match call.request_body_kind() {
        RequestBody::Json => call.body.take().map(|b| PendingBody::new(b, call)),
        RequestBody::Stream => None,
    };
    let lazy = Lazy {
        headers: call.head.headers.clone(),
        query: Some(call.query().unwrap_or("").to_string()),
        body,
        cap,
    };
    // One call into Lua builds the whole table (a call per field costs a protected call each).
    req_fns(lua)?.make.call((
        call.id,
        call.head.method.as_str(),
        call.path.as_str(),
        call.path.version(),
        lua.create_userdata(lazy)?,
    ))
}

/// Lua functions that build a `req` table and read back its fields, in one call each; made
/// once per VM (app data).
struct ReqFns {
    make: Function,
    read: Function,
}

fn req_fns(lua: &Lua) -> mlua::Result<mlua::AppDataRef<'_, ReqFns>> {
    lua.app_data_ref::<ReqFns>()
        .ok_or_else(|| mlua::Error::runtime("luastrip: VM without object methods"))
}

/// The fields of `req` that [`apply_req`] reads, as they are in the table (never built lazily).
type ReqFields = (
    mlua::LuaString,
    mlua::LuaString,
    Option<mlua::LuaString>,
    Option<Table>,
    Option<Table>,
    Option<mlua::AnyUserData>,
    Option<mlua::LuaString>,
);

/// The `res` table of `docs/lua-api.md`.
pub fn new_res(
    lua: &Lua,
    res: &Response<Body>,
    body: Option<&Bytes>,
    streaming: bool,
) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 6)?;
    t.raw_set("status", res.status().as_u16())?;
    if let Some(b) = body {
        t.raw_set("body", lua.create_string(b)?)?;
    }
    t.raw_set("streaming", streaming)?;
    let lazy = Lazy {
        headers: res.headers().clone(),
        query: None,
        body: None,
        cap: 0,
    };
    t.raw_set(lazy_key(), lua.create_userdata(lazy)?)?;
    set_object_meta(lua, &t)?;
    Ok(t)
}

/// `req.body`, reading it from the client first if no hook has (Rust callers, such as adapters,
/// use this: a plain table read from Rust cannot wait for the client).
pub async fn read_body(lua: &Lua, t: &Table) -> mlua::Result<Option<mlua::LuaString>> {
    if let Some(b) = t.raw_get::<Option<mlua::LuaString>>("body")? {
        return Ok(Some(b));
    }
    let pending = match t.raw_get::<Option<mlua::AnyUserData>>(lazy_key())? {
        Some(ud) => {
            let lazy = ud.borrow::<Lazy>()?;
            lazy.body.clone().map(|b| (b, lazy.cap))
        }
        None => None,
    };
    let Some((pending, cap)) = pending else {
        return Ok(None);
    };
    match super::budget::pause(lua, pending.read(cap))
        .await
        .map_err(raise)?
    {
        Some(bytes) => {
            let s = lua.create_string(&bytes)?;
            t.raw_set("body", &s)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

/// The metatable giving `req`, `res` and API results their methods (`json()`, `set_json()`,
/// `query_all()`) and lazy fields; made once per VM (app data).
struct ObjectMeta(Table);

/// Build the VM's object metatable; call once while the VM is built.
pub fn install_object_meta(lua: &Lua) -> mlua::Result<()> {
    let methods = lua.create_table()?;
    methods.set(
        "json",
        lua.create_async_function(|lua, this: Table| async move {
            match read_body(&lua, &this).await? {
                // No body or an empty one decodes to nil, so `req:json() or {}` works.
                Some(b) if !crate::route::json::is_blank(&b.as_bytes()) => {
                    json::decode(&lua, &b.as_bytes())
                }
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    methods.set(
        "set_json",
        lua.create_function(|lua, (this, v): (Table, Value)| {
            this.set("body", lua.create_string(json::encode(lua, v)?)?)
        })?,
    )?;
    methods.set(
        "query_all",
        lua.create_function(|lua, (this, name): (Table, String)| {
            let all = lua.create_table()?;
            if let Some(ud) = this.raw_get::<Option<mlua::AnyUserData>>(lazy_key())? {
                let lazy = ud.borrow::<Lazy>()?;
                for (k, v) in query::pairs(lazy.query.as_deref().unwrap_or("")) {
                    if k == name {
                        all.raw_push(v)?;
                    }
                }
            }
            Ok(all)
        })?,
    )?;
    let lazy = lua.create_async_function(|lua, (t, k): (Table, String)| async move {
        if k == "body" {
            return Ok(read_body(&lua, &t).await?.map_or(Value::Nil, Value::String));
        }
        let Some(ud) = t.raw_get::<Option<mlua::AnyUserData>>(lazy_key())? else {
            return Ok(Value::Nil);
        };
        let built = {
            let lazy = ud.borrow::<Lazy>()?;
            match (k.as_str(), &lazy.query) {
                ("headers", _) => headers_table(&lua, &lazy.headers)?,
                ("query", Some(q)) => first_values(&lua, q)?,
                ("ctx", Some(_)) | ("params", Some(_)) => lua.create_table()?,
                _ => return Ok(Value::Nil),
            }
        };
        t.raw_set(k, &built)?;
        Ok(Value::Table(built))
    })?;
    // Methods are looked up in Lua; only a lazy field calls into Rust (and may wait, for the
    // body: metamethods called from Lua code may yield in Lua 5.4).
    let index: Function = lua
        .load(
            r#"
            local methods, lazy = ...
            return function(t, k)
              local m = methods[k]
              if m ~= nil then return m end
              if type(k) ~= "string" then return nil end
              return lazy(t, k)
            end"#,
        )
        .set_name("=luastrip")
        .call((methods, lazy))?;
    let mt = lua.create_table()?;
    mt.set("__index", index)?;
    let (make, read): (Function, Function) = lua
        .load(
            r#"
            local mt, LAZY, setmetatable, rawget = ...
            local function make(id, method, path, version, lazy)
              return setmetatable(
                { id = id, method = method, path = path, version = version, [LAZY] = lazy }, mt)
            end
            local function read(req)
              return rawget(req, "method"), rawget(req, "path"), rawget(req, "version"),
                rawget(req, "query"), rawget(req, "headers"), rawget(req, LAZY),
                rawget(req, "body")
            end
            return make, read"#,
        )
        .set_name("=luastrip")
        .call((
            &mt,
            lazy_key(),
            lua.globals().get::<Function>("setmetatable")?,
            lua.globals().get::<Function>("rawget")?,
        ))?;
    lua.set_app_data(ReqFns { make, read });
    lua.set_app_data(ObjectMeta(mt));
    Ok(())
}

/// Give `t` the object methods and lazy fields.
pub fn set_object_meta(lua: &Lua, t: &Table) -> mlua::Result<()> {
    let mt = match lua.app_data_ref::<ObjectMeta>() {
        Some(m) => m.0.clone(),
        None => return Err(mlua::Error::runtime("luastrip: VM without object methods")),
    };
    t.set_metatable(Some(mt))
}

/// `req.params` for the hook about to run (an empty table is made on first access).
pub fn set_params(lua: &Lua, req: &Table, params: &crate::route::Params) -> mlua::Result<()> {
    if params.is_empty() {
        return req.raw_set("params", Value::Nil);
    }
    let t = lua.create_table_with_capacity(0, params.len())?;
    for (k, v) in params {
        t.raw_set(k.as_str(), v.as_str())?;
    }
    req.raw_set("params", t)
}

/// Header names are lower-case in scripts (as in OpenResty's `ngx.req.get_headers()`);
/// repeated headers are joined with ", ".
pub fn headers_table(lua: &Lua, headers: &HeaderMap) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        t.set(name.as_str(), joined)?;
    }
    Ok(t)
}

/// `req.query`: each key with the value dockerd uses, the first (`req:query_all(k)` has all).
fn first_values(lua: &Lua, raw: &str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for (k, v) in query::pairs(raw) {
        if t.raw_get::<Value>(k.as_str())?.is_nil() {
            t.raw_set(k, v)?;
        }
    }
    Ok(t)
}

/// Whether a script's query table still holds exactly the first values of `raw`.
fn query_unchanged(t: &Table, raw: &str) -> mlua::Result<bool> {
    let mut orig: Vec<(String, String)> = Vec::new();
    for (k, v) in query::pairs(raw) {
        if !orig.iter().any(|(ok, _)| *ok == k) {
            orig.push((k, v));
        }
    }
    let mut n = 0;
    for pair in t.pairs::<mlua::LuaString, mlua::LuaString>() {
        let (k, v) = pair?;
        n += 1;
        let same = orig.iter().any(|(ok, ov)| {
            ok.as_bytes() == &k.as_bytes()[..] && ov.as_bytes() == &v.as_bytes()[..]
        });
        if !same {
            return Ok(false);
        }
    }
    Ok(n == orig.len())
}

/// A query table as a query string, keys sorted; empty for an empty table.
pub fn encode_query(t: &Table) -> mlua::Result<String> {
    let pairs = string_pairs(Some(t.clone()))?;
    Ok(query::encode(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// Whether a script's headers table still says what `orig` says (names are lower-case in Lua,
/// repeated headers joined with ", ").
fn headers_unchanged(t: &Table, orig: &HeaderMap) -> mlua::Result<bool> {
    let mut n = 0;
    for pair in t.pairs::<mlua::LuaString, mlua::LuaString>() {
        let (k, v) = pair?;
        n += 1;
        let k = k.as_bytes();
        let Ok(name) = HeaderName::from_bytes(&k) else {
            return Ok(false);
        };
        let mut values = orig.get_all(&name).iter();
        let same = match (values.next(), values.next()) {
            (Some(one), None) => one.as_bytes() == &v.as_bytes()[..],
            (Some(_), Some(_)) => {
                let joined = orig
                    .get_all(&name)
                    .iter()
                    .map(|x| String::from_utf8_lossy(x.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ");
                joined.as_bytes() == &v.as_bytes()[..]
            }
            (None, _) => false,
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(n == orig.keys_len())
}

pub fn string_pairs(t: Option<Table>) -> mlua::Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    if let Some(t) = t {
        for pair in t.pairs::<String, String>() {
            v.push(pair?);
        }
    }
    v.sort();
    Ok(v)
}

/// Apply the pre hooks' edits of `req` to the call: only what differs from the call. The body
/// goes back to the call: the client's stream if no hook read it, else the bytes the hooks left.
pub fn apply_req(lua: &Lua, call: &mut Call, req: &Table) -> mlua::Result<()> {
    let (method, path, version, query, headers, lazy, now): ReqFields =
        req_fns(lua)?.read.call(req)?;
    if *method.as_bytes() != *call.head.method.as_str().as_bytes() {
        let m = method.to_str()?.to_ascii_uppercase();
        call.head.method = Method::from_bytes(m.as_bytes())
            .map_err(|_| mlua::Error::runtime(format!("req.method {m:?} is not a method")))?;
    }
    let same_version = match (&version, call.path.version()) {
        (None, None) => true,
        (Some(v), Some(was)) => *v.as_bytes() == *was.as_bytes(),
        _ => false,
    };
    if *path.as_bytes() != *call.path.as_str().as_bytes() || !same_version {
        let version = version
            .map(|v| v.to_str().map(|v| v.to_string()))
            .transpose()?;
        let np = NormalPath::parse(&path.to_str()?).map_err(mlua::Error::runtime)?;
        let np = match np.version() {
            Some(_) => np,
            None => np.with_version(version).map_err(mlua::Error::runtime)?,
        };
        call.path = np;
    }
    // Headers and query exist in the table only if a script looked at them.
    if let Some(qt) = query {
        if !query_unchanged(&qt, call.query().unwrap_or(""))? {
            call.set_query(&encode_query(&qt)?).map_err(raise)?;
        }
    }
    if let Some(ht) = headers {
        if !headers_unchanged(&ht, &call.head.headers)? {
            call.head.headers = header_map(&string_pairs(Some(ht))?)?;
        }
    }
    let pending = match lazy {
        Some(ud) => ud.borrow::<Lazy>()?.body.clone(),
        None => None,
    };
    let left = pending.and_then(|p| p.take());
    let left = left.map(|l| {
        l.map_err(|(seen, sent)| {
            call.note_received_body(&sent);
            seen
        })
    });
    let new_body = match (left, now) {
        // Nobody read or wrote it: the client's stream goes on untouched.
        (Some(Ok(stream)), None) => {
            call.body = Some(stream);
            None
        }
        (Some(Err(read)), Some(now)) if now.as_bytes()[..] == read[..] => Some(read),
        (_, Some(now)) => Some(Bytes::copy_from_slice(&now.as_bytes())),
        // Read, then set to nil: an empty body.
        (Some(Err(_)), None) => Some(Bytes::new()),
        (None, None) => None,
    };
    if let Some(b) = new_body {
        call.replace_body(b);
    }
    Ok(())
}

/// Apply post hooks' edits of `res`: only what differs. Streaming responses keep their body.
/// Returns the body the client gets, when it is not a stream.
pub fn apply_res(
    res: &mut Response<Body>,
    t: &Table,
    body: Option<Bytes>,
    streaming: bool,
) -> mlua::Result<Option<Bytes>> {
    let status: u16 = t.raw_get("status")?;
    if status != res.status().as_u16() {
        *res.status_mut() = StatusCode::from_u16(status).map_err(|_| {
            mlua::Error::runtime(format!("res.status {status} is not a status code"))
        })?;
    }
    if let Some(ht) = t.raw_get::<Option<Table>>("headers")? {
        if !headers_unchanged(&ht, res.headers())? {
            *res.headers_mut() = header_map(&string_pairs(Some(ht))?)?;
        }
    }
    if !streaming {
        let now: Option<mlua::LuaString> = t.raw_get("body")?;
        let sent = if body_changed(&now, body.as_ref()) {
            let b = now
                .map(|b| Bytes::copy_from_slice(&b.as_bytes()))
                .unwrap_or_default();
            set_length(res.headers_mut(), b.len());
            Some(b)
        } else {
            body
        };
        if let Some(b) = &sent {
            *res.body_mut() = full(b.clone());
        }
        return Ok(sent);
    }
    Ok(None)
}

/// Whether `now` (a Lua `body` field) differs from the body the hooks were given.
fn body_changed(now: &Option<mlua::LuaString>, given: Option<&Bytes>) -> bool {
    match (now, given) {
        (Some(n), Some(g)) => n.as_bytes()[..] != g[..],
        (None, None) => false,
        _ => true,
    }
}

fn header_map(pairs: &[(String, String)]) -> mlua::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| mlua::Error::runtime(format!("bad header name {k:?}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| mlua::Error::runtime(format!("bad value for header {k:?}")))?;
        h.append(name, value);
    }
    Ok(h)
}

fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// The keys a response table may have.
pub const RESPONSE_KEYS: [&str; 4] = ["status", "json", "body", "headers"];

/// A response table with a key the gateway would ignore (`{status = 403, message = "…"}`, which
/// would reach the client as a bare 403 with no message), or with both `json` and `body`, is a
/// script error: the author meant something else.
fn check_response_keys(t: &Table) -> Result<(), String> {
    let mut has_json = false;
    let mut has_body = false;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => format!("[{}]", other.type_name()),
        };
        match key.as_str() {
            "json" => has_json = true,
            "body" => has_body = true,
            k if RESPONSE_KEYS.contains(&k) => {}
            _ => {
                let hint = if key == "message" {
                    " (a Docker error is json = { message = \"…\" })"
                } else {
                    ""
                };
                return Err(format!(
                    "the response table has the key {key:?}, which the gateway ignores: a response \
                     is {{ status = N, json = T }} or {{ status = N, body = S, headers = H }}{hint}"
                ));
            }
        }
    }
    if has_json && has_body {
        return Err("the response table has both json and body: give one".into());
    }
    Ok(())
}

/// Turn a hook's response table into a response: `{status=, json=}` or
/// `{status=, body=, headers=}`.
pub fn response_from_lua(lua: &Lua, v: Value) -> Result<Response<Body>, String> {
    let t = match v {
        Value::Table(t) => t,
        other => {
            return Err(format!(
                "a hook must return nil or a response table, not a {}",
                other.type_name()
            ))
        }
    };
    check_response_keys(&t)?;
    let status: u16 = t
        .get::<Option<u16>>("status")
        .map_err(|e| format!("response status: {e}"))?
        .unwrap_or(200);
    let status =
        StatusCode::from_u16(status).map_err(|_| format!("{status} is not a status code"))?;
    let mut headers = match t
        .get::<Option<Table>>("headers")
        .map_err(|e| e.to_string())?
    {
        Some(h) => header_map(&string_pairs(Some(h)).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?,
        None => HeaderMap::new(),
    };
    let json_v: Value = t.get("json").map_err(|e| e.to_string())?;
    let body = if !json_v.is_nil() {
        let mut b = json::encode(lua, json_v).map_err(|e| e.to_string())?;
        b.push(b'\n');
        if !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Bytes::from(b)
    } else {
        match t
            .get::<Option<mlua::LuaString>>("body")
            .map_err(|e| e.to_string())?
        {
            Some(s) => Bytes::copy_from_slice(&s.as_bytes()),
            None => Bytes::new(),
        }
    };
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Ok(res)
}
