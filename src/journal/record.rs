//! Calls to a file, one JSON [`CallRecord`] per line (NDJSON): `serve --record FILE`, `record
//! start|stop` on the control socket, and `serve --journal FILE`, the journal kept across
//! restarts. The REPL, the console and `luastrip test` read such files back ([`read`]).
//!
//! Secrets never reach the file ([`Redactor`]): `Authorization`, `X-Registry-Auth` and
//! `X-Registry-Config` headers, `/auth` passwords, secret data, and environment values (`Env`,
//! build args, plugin settings) whose name matches `--redact-env`. Bodies are capped as the
//! journal caps them; streams and tunnels are heads only.
//!
//! Writing never blocks a call: records go through a bounded queue to a writer thread, and a
//! record that finds the queue full is counted as dropped (reported by `record` and logged)
//! rather than slowing the gateway.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use tracing::warn;

use super::{CallRecord, StreamBytes};

/// What a redacted value becomes.
pub const REDACTED: &str = "<redacted>";

/// Environment names whose values are redacted, by default.
pub const DEFAULT_REDACT_ENV: &str = "(?i)pass|secret|token|key|auth|credential|private|cert";

/// Headers that carry credentials.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "x-registry-auth",
    "x-registry-config",
];

/// How many records may wait for the writer.
const QUEUE: usize = 8192;

/// Takes secrets out of a record before it is written.
#[derive(Debug, Clone)]
pub struct Redactor {
    env: regex::Regex,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(DEFAULT_REDACT_ENV).expect("the default pattern is valid")
    }
}

impl Redactor {
    /// Redact environment values whose name matches `pattern` (a regular expression).
    pub fn new(pattern: &str) -> Result<Redactor, regex::Error> {
        Ok(Redactor {
            env: regex::Regex::new(pattern)?,
        })
    }

    /// `rec` without its secrets.
    pub fn redact(&self, rec: &CallRecord) -> CallRecord {
        let mut r = rec.clone();
        self.headers(&mut r.request_headers);
        self.headers(&mut r.response_headers);
        r.raw = self.target(&r.raw);
        r.request_body = r.request_body.map(|b| self.body(&rec.path, &b));
        if let Some(before) = r.before.as_mut() {
            if let Some(h) = before.request_headers.as_mut() {
                self.headers(h);
            }
            before.raw = before.raw.as_deref().map(|t| self.target(t));
            before.request_body = before
                .request_body
                .as_deref()
                .map(|b| self.body(&rec.path, b));
        }
        r
    }

    fn headers(&self, h: &mut HeaderMap) {
        for name in SECRET_HEADERS {
            if h.contains_key(name) {
                h.insert(name, HeaderValue::from_static(REDACTED));
            }
        }
    }

    /// A request target with its `buildargs` values redacted by name.
    fn target(&self, raw: &str) -> String {
        let Some((path, query)) = raw.split_once('?') else {
            return raw.to_string();
        };
        let pairs = crate::route::query::pairs(query);
        if !pairs.iter().any(|(k, _)| k == "buildargs") {
            return raw.to_string();
        }
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| {
                if k != "buildargs" {
                    return (k, v);
                }
                let mut args: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
                if let Some(o) = args.as_object_mut() {
                    for (name, value) in o.iter_mut() {
                        if self.env.is_match(name) {
                            *value = Value::from(REDACTED);
                        }
                    }
                }
                (k, args.to_string())
            })
            .collect();
        let query = crate::route::query::encode(pairs.iter().map(|(k, v)| (&**k, &**v)));
        format!("{path}?{query}")
    }

    /// A request body with its secrets redacted; unchanged if it has none (or is not JSON).
    fn body(&self, path: &str, body: &str) -> String {
        let Ok(mut v) = serde_json::from_str::<Value>(body) else {
            return body.to_string();
        };
        let mut changed = false;
        if path == "/auth" {
            // Registry credentials: everything but the user and the server.
            if let Some(o) = v.as_object_mut() {
                for (k, val) in o.iter_mut() {
                    let keep = ["username", "serveraddress", "email"]
                        .contains(&k.to_ascii_lowercase().as_str());
                    if !keep && val.is_string() {
                        *val = Value::from(REDACTED);
                        changed = true;
                    }
                }
            }
        } else if path == "/secrets/create" {
            if let Some(data) = v.get_mut("Data") {
                *data = Value::from(REDACTED);
                changed = true;
            }
        } else if path.starts_with("/plugins/") && path.ends_with("/set") {
            changed |= self.env_list(&mut v);
        }
        changed |= self.walk(&mut v);
        if changed {
            v.to_string()
        } else {
            body.to_string()
        }
    }

    /// Every `Env` list (any depth, any case): values of matching names redacted.
    fn walk(&self, v: &mut Value) -> bool {
        let mut changed = false;
        match v {
            Value::Object(o) => {
                for (k, val) in o.iter_mut() {
                    if k.eq_ignore_ascii_case("env") {
                        changed |= self.env_list(val);
                    } else {
                        changed |= self.walk(val);
                    }
                }
            }
            Value::Array(a) => {
                for val in a {
                    changed |= self.walk(val);
                }
            }
            _ => {}
        }
        changed
    }

    /// `["NAME=value", …]`: values of matching names redacted.
    fn env_list(&self, v: &mut Value) -> bool {
        let mut changed = false;
        for item in v.as_array_mut().into_iter().flatten() {
            let Some((name, value)) = item.as_str().and_then(|s| s.split_once('=')) else {
                continue;
            };
            if self.env.is_match(name) && value != REDACTED {
                *item = Value::from(format!("{name}={REDACTED}"));
                changed = true;
            }
        }
        changed
    }
}

/// One line of a recording.
enum Entry {
    Call(Arc<CallRecord>),
    /// A stream or tunnel of an earlier call ended.
    End(u64, StreamBytes),
}

/// The line for [`Entry::End`]: `{"stream_end": {"id": 42, "client_to_daemon": …, …}}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct EndLine {
    stream_end: EndOf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EndOf {
    id: u64,
    #[serde(flatten)]
    bytes: StreamBytes,
}

/// A file being written: `record start`, `--record`, `--journal`.
pub struct Recorder {
    path: PathBuf,
    tx: Option<SyncSender<Entry>>,
    written: Arc<AtomicU64>,
    dropped: AtomicU64,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What `record` reports of one file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Recording {
    pub file: PathBuf,
    /// Calls written so far.
    pub written: u64,
    /// Calls that found the writer's queue full.
    pub dropped: u64,
}

impl Recorder {
    /// Append to `path` (created 0600). With `rotate_at`, a file that grows past that many bytes
    /// becomes `path.1` (replacing the previous one) and a new file starts.
    pub fn open(path: &Path, redactor: Redactor, rotate_at: Option<u64>) -> io::Result<Recorder> {
        let file = open_append(path)?;
        let (tx, rx) = sync_channel::<Entry>(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let at = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("luastrip-record".into())
            .spawn(move || {
                let mut size = file.metadata().map_or(0, |m| m.len());
                let mut out = BufWriter::new(file);
                let mut write = |entry: &Entry, out: &mut BufWriter<File>| -> io::Result<()> {
                    let mut line = match entry {
                        Entry::Call(rec) => serde_json::to_vec(&redactor.redact(rec))?,
                        Entry::End(id, bytes) => serde_json::to_vec(&EndLine {
                            stream_end: EndOf { id: *id, bytes: *bytes },
                        })?,
                    };
                    line.push(b'\n');
                    if rotate_at.is_some_and(|max| size + line.len() as u64 > max) && size > 0 {
                        out.flush()?;
                        std::fs::rename(&at, rotated(&at))?;
                        *out = BufWriter::new(open_append(&at)?);
                        size = 0;
                    }
                    out.write_all(&line)?;
                    size += line.len() as u64;
                    if matches!(entry, Entry::Call(_)) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                };
                while let Ok(rec) = rx.recv() {
                    let mut result = write(&rec, &mut out);
                    // Write what is queued, then flush once the queue is empty.
                    while let (Ok(()), Ok(rec)) = (&result, rx.try_recv()) {
                        result = write(&rec, &mut out);
                    }
                    if let Err(e) = result.and_then(|()| out.flush()) {
                        warn!(file = %at.display(), error = %e, "cannot write the recording; it stops here");
                        return;
                    }
                }
            })?;
        Ok(Recorder {
            path: path.to_path_buf(),
            tx: Some(tx),
            written,
            dropped: AtomicU64::new(0),
            writer: Some(writer),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue `rec` for the file; a full queue drops it (counted).
    pub fn send(&self, rec: &Arc<CallRecord>) {
        self.queue(Entry::Call(rec.clone()));
    }

    /// Queue the end of call `id`'s stream or tunnel.
    pub fn send_end(&self, id: u64, bytes: StreamBytes) {
        self.queue(Entry::End(id, bytes));
    }

    fn queue(&self, entry: Entry) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(entry) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(file = %self.path.display(), dropped = n, "the recording falls behind: calls left out");
            }
        }
    }

    /// Stop: everything queued is written, then the final count.
    pub fn finish(mut self) -> Recording {
        self.close();
        self.status()
    }

    fn close(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }

    /// How it is going.
    pub fn status(&self) -> Recording {
        Recording {
            file: self.path.clone(),
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Recorder {
    /// Everything queued is written before the recorder is gone.
    fn drop(&mut self) {
        self.close();
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Where a rotated file goes: `journal.ndjson` → `journal.ndjson.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// The calls in a recorded file, in order, each with its stream's byte counts when the file has
/// them. A line that is neither is an error naming the file and line, unless `lenient` (the
/// journal file, whose last line a crash may have cut).
pub fn read(path: &Path, lenient: bool) -> io::Result<Vec<CallRecord>> {
    let file = File::open(path)?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with("{\"stream_end\"") {
            if let Ok(end) = serde_json::from_str::<EndLine>(&line) {
                let id = end.stream_end.id;
                if let Some(rec) = out.iter_mut().rev().find(|r: &&mut CallRecord| r.id == id) {
                    rec.stream_bytes = Some(end.stream_end.bytes);
                }
                continue;
            }
        }
        match serde_json::from_str::<CallRecord>(&line) {
            Ok(rec) => out.push(rec),
            Err(_) if lenient => {
                warn!(file = %path.display(), line = n + 1, "skipping a line that is not a call record");
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}:{}: not a recorded call: {e}", path.display(), n + 1),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, raw: &str, body: &str) -> CallRecord {
        let mut r = CallRecord::unfinished(1, "POST", path, raw);
        r.request_body = Some(body.into());
        r
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let red = Redactor::default();
        let mut r = rec(
            "/containers/create",
            "/v1.41/containers/create?name=db",
            r#"{"Image":"postgres","Env":["POSTGRES_PASSWORD=hunter2","PGDATA=/data"],"HostConfig":{}}"#,
        );
        r.request_headers
            .insert("x-registry-auth", HeaderValue::from_static("eyJwYXNz"));
        r.request_headers
            .insert("user-agent", HeaderValue::from_static("Docker-Client"));
        let out = red.redact(&r);
        let body = out.request_body.unwrap();
        assert!(body.contains("POSTGRES_PASSWORD=<redacted>"), "{body}");
        assert!(
            body.contains("PGDATA=/data") && !body.contains("hunter2"),
            "{body}"
        );
        assert_eq!(out.request_headers["x-registry-auth"], REDACTED);
        assert_eq!(out.request_headers["user-agent"], "Docker-Client");
        assert_eq!(out.raw, r.raw);
        // Service specs nest theirs; the key's case does not hide it.
        let svc = rec(
            "/services/create",
            "/services/create",
            r#"{"TaskTemplate":{"ContainerSpec":{"env":["API_TOKEN=abc"]}}}"#,
        );
        assert!(!red.redact(&svc).request_body.unwrap().contains("abc"));
        // Registry logins, secrets, plugin settings and build args.
        let auth = rec(
            "/auth",
            "/auth",
            r#"{"username":"me","password":"pw","serveraddress":"r"}"#,
        );
        let b = red.redact(&auth).request_body.unwrap();
        assert!(b.contains("\"me\"") && !b.contains("\"pw\""), "{b}");
        let secret = rec(
            "/secrets/create",
            "/secrets/create",
            r#"{"Name":"s","Data":"aGk="}"#,
        );
        assert!(!red.redact(&secret).request_body.unwrap().contains("aGk="));
        let set = rec(
            "/plugins/p/set",
            "/plugins/p/set",
            r#"["SECRET_KEY=x","DEBUG=1"]"#,
        );
        assert_eq!(
            red.redact(&set).request_body.unwrap(),
            r#"["SECRET_KEY=<redacted>","DEBUG=1"]"#
        );
        let build = rec(
            "/build",
            "/v1.41/build?t=x&buildargs=%7B%22NPM_TOKEN%22%3A%22t0k%22%2C%22V%22%3A%221%22%7D",
            "",
        );
        let raw = red.redact(&build).raw;
        assert!(!raw.contains("t0k") && raw.contains("t=x"), "{raw}");
        // A body without secrets is kept byte for byte.
        let plain = r#"{ "Image": "busybox" }"#;
        let r = rec("/containers/create", "/containers/create", plain);
        assert_eq!(red.redact(&r).request_body.unwrap(), plain);
    }

    #[test]
    fn a_recording_reads_back_and_rotates() {
        let dir = std::env::temp_dir().join(format!("lsrec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("calls.ndjson");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(rotated(&path));
        let r = Recorder::open(&path, Redactor::default(), Some(2000)).unwrap();
        for id in 1..=10 {
            let mut c = rec("/containers/create", "/containers/create", "{}");
            c.id = id;
            r.send(&Arc::new(c));
        }
        r.send_end(
            10,
            StreamBytes {
                client_to_daemon: 3,
                daemon_to_client: 4096,
            },
        );
        assert_eq!(r.status().file, path);
        drop(r);
        let mut all = read(&rotated(&path), false).unwrap();
        all.extend(read(&path, false).unwrap());
        assert_eq!(
            all.iter().map(|c| c.id).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(all[9].stream_bytes.unwrap().daemon_to_client, 4096);
        assert!(all[8].stream_bytes.is_none());
        assert!(std::fs::metadata(&path).unwrap().len() <= 2000);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "{\"id\": 1}\n").unwrap();
        let e = read(&path, false).unwrap_err().to_string();
        assert!(e.contains("calls.ndjson:1: not a recorded call"), "{e}");
        assert!(read(&path, true).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
