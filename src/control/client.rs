//! The client side of the control socket, shared by the REPL and the console: one HTTP call per
//! command on a fresh connection (a gateway that went away and came back just works), or, for a
//! recorded file ([`crate::journal::record`]), the same answers read from the file, read-only.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::filter::Filter;
use crate::body::full;
use crate::journal::CallRecord;
use crate::outbound::{Outbound, Url};

/// Where the flows come from.
pub enum Flows {
    /// A running gateway's control socket.
    Live(PathBuf),
    /// A recorded file: `calls` and `show` only.
    File {
        path: PathBuf,
        calls: Vec<CallRecord>,
    },
}

impl Flows {
    /// The calls recorded in `path` (`serve --record`, `record start`, `--journal`).
    pub fn open(path: &Path) -> Result<Flows, String> {
        let calls = crate::journal::record::read(path, false)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Flows::File {
            path: path.to_path_buf(),
            calls,
        })
    }

    /// What the flows are, for a banner.
    pub fn describe(&self) -> String {
        match self {
            Flows::Live(p) => p.display().to_string(),
            Flows::File { path, calls } => format!(
                "{} ({} recorded calls, read-only)",
                path.display(),
                calls.len()
            ),
        }
    }

    /// Whether these are recorded, read-only flows.
    pub fn is_file(&self) -> bool {
        matches!(self, Flows::File { .. })
    }

    /// One control call; the JSON answer, or the error message it carried.
    pub async fn call(&self, method: Method, path: &str, body: &str) -> Result<Value, String> {
        if let Flows::File { path: file, calls } = self {
            return from_file(file, calls, &method, path);
        }
        let res = self.send(method, path, body).await?;
        let status = res.status();
        let bytes = read_body(res).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            Err(refusal(&v, status))
        }
    }

    /// One control call, its answer unread (for streams: `tail`, `metrics`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let control = match self {
            Flows::Live(p) => p,
            Flows::File { path: file, .. } => return Err(read_only(file)),
        };
        let url = Url::parse(&format!("unix://{}:{path}", control.display()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(&url.path)
            .body(full(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| e.to_string())?;
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("ctl"));
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let head_within = std::time::Duration::from_secs(60);
        Outbound::new()
            .send(&url, req, head_within)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the gateway's control socket {}: {e} (is luastrip serve running?)",
                    control.display()
                )
            })
    }
}

fn read_only(file: &Path) -> String {
    format!(
        "{} is a recording: calls and show work on it; the rest needs a running gateway",
        file.display()
    )
}

/// `GET /calls?…` and `GET /calls/{id}`, answered from recorded calls as the gateway answers.
fn from_file(
    file: &Path,
    calls: &[CallRecord],
    method: &Method,
    target: &str,
) -> Result<Value, String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| crate::route::query::first(query, name).map(|v| v.into_owned());
    match (method, path.trim_end_matches('/')) {
        (&Method::GET, "/calls") => {
            let text = param("filter").unwrap_or_default();
            let filter = match text.trim() {
                "" => None,
                t => Some(Filter::parse(t).map_err(|e| e.caret(t))?),
            };
            let limit = param("limit").and_then(|n| n.parse().ok()).unwrap_or(100);
            let chosen = select(calls.iter(), filter.as_ref(), limit);
            serde_json::to_value(chosen).map_err(|e| e.to_string())
        }
        (&Method::GET, p) if p.starts_with("/calls/") => {
            let id = &p["/calls/".len()..];
            calls
                .iter()
                .find(|c| c.id.to_string() == id)
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .ok_or_else(|| format!("no call {id} in {}", file.display()))
        }
        _ => Err(read_only(file)),
    }
}

/// The last `limit` calls that match `filter`, oldest first (the filter applies before the
/// limit: "the last N that match").
pub fn select<'a>(
    calls: impl Iterator<Item = &'a CallRecord>,
    filter: Option<&Filter>,
    limit: usize,
) -> Vec<&'a CallRecord> {
    let mut chosen: Vec<&CallRecord> = calls
        .filter(|r| filter.is_none_or(|f| f.matches(r)))
        .collect();
    let skip = chosen.len().saturating_sub(limit);
    chosen.drain(..skip);
    chosen
}

/// The whole body of a control answer.
pub async fn read_body(res: http::Response<hyper::body::Incoming>) -> Result<Bytes, String> {
    Ok(res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes())
}

/// What a refused control call says: the filter caret, else the message, else the status.
pub fn refusal(v: &Value, status: StatusCode) -> String {
    v["caret"]
        .as_str()
        .or(v["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| status.to_string())
}

/// Open held call `held` (an entry of `/intercepted`) in `$VISUAL` / `$EDITOR` (default vi) as
/// pretty JSON — a JSON body as JSON, not one escaped string — and return the edit, checked to
/// be JSON, for `/intercepted/{id}/resume`.
pub fn edit_held(held: &Value) -> Result<String, String> {
    let id = held["id"].as_u64().unwrap_or(0);
    let mut request = serde_json::json!({
        "method": held["method"],
        "path": held["raw"],
        "headers": held["headers"],
    });
    if let Some(body) = held["body"].as_str() {
        request["body"] = serde_json::from_str::<Value>(body)
            .ok()
            .filter(|v| v.is_object() || v.is_array())
            .unwrap_or_else(|| Value::String(body.to_string()));
    }
    let file = std::env::temp_dir().join(format!("luastrip-edit-{}-{id}.json", std::process::id()));
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&request).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    // The editor is a shell word list ("code --wait"), as git runs it.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .map_err(|e| format!("cannot run {editor}: {e}"))?;
    let edited = std::fs::read_to_string(&file).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&file);
    if !status.success() {
        return Err(format!(
            "{editor} failed ({status}); the call is still held"
        ));
    }
    let edited = edited?;
    serde_json::from_str::<Value>(&edited)
        .map_err(|e| format!("the edit is not JSON ({e}); the call is still held"))?;
    Ok(edited)
}
