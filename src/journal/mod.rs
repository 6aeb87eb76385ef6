//! The journal: a record of every call, for the REPL, the control socket and the logs.
//!
//! Each finished call becomes a [`CallRecord`]. The last `capacity` records stay in a ring buffer
//! (`calls`, `show ID`), observers (the metrics) see every record on the call's thread, and
//! every record is broadcast to live watchers (`tail`). The journal never
//! blocks a call: a watcher that falls behind loses records rather than slowing the gateway.
//! A record also keeps what the hooks changed ([`Before`]); [`diff`] turns that into lines.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::Source;
use crate::hijack::Hijack;

pub mod diff;
pub mod record;

use record::{Recorder, Recording};

/// One hook that ran on a call (filled in by route scripts and adapters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookRun {
    /// `pre`, `post` or `endpoint` (or the name of a built-in layer's phase).
    pub phase: String,
    /// The pattern as written, e.g. `"POST /containers/create"`.
    pub route: String,
    /// Where it was registered: `file:line`.
    pub location: String,
    pub duration_us: u64,
    pub error: Option<String>,
}

/// What went wrong on a call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallError {
    pub source: Source,
    pub message: String,
}

/// Everything recorded about one call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: u64,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Upper-case method.
    pub method: String,
    /// Normalised path, no version prefix: what routes match on.
    pub path: String,
    /// The client's path and query exactly as sent.
    pub raw: String,
    pub version: Option<String>,
    /// Status sent to the client; `None` if the client went away before a reply.
    pub status: Option<u16>,
    /// The client went away before the answer: hyper dropped the call mid-way.
    pub cancelled: bool,
    /// Accept to reply head.
    pub duration_us: u64,
    /// Time the daemon took to send its response head, when it was asked.
    pub upstream_us: Option<u64>,
    pub hijack: Hijack,
    /// The response body streams on after the head (events, logs -f, wait, build …).
    pub streaming: bool,
    pub hooks: Vec<HookRun>,
    pub error: Option<CallError>,
    #[serde(serialize_with = "ser_headers", deserialize_with = "de_headers")]
    pub request_headers: HeaderMap,
    /// The request body as forwarded, when a hook had buffered it (capped); `None` for streamed
    /// bodies, which are never held back for the journal.
    pub request_body: Option<String>,
    #[serde(serialize_with = "ser_headers", deserialize_with = "de_headers")]
    pub response_headers: HeaderMap,
    /// The response body, when a post hook had buffered it or a hook answered (capped).
    pub response_body: Option<String>,
    /// The call this one replays (the control socket's `replay` marks its requests with
    /// [`REPLAY_HEADER`]); `None` for a client's own call.
    pub replay_of: Option<u64>,
    /// What the hooks changed: the call as the client sent it and the daemon's answer as the
    /// daemon sent it, where they differ from what was forwarded and answered. `None` when
    /// nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Box<Before>>,
    /// What a streamed answer or a tunnel carried, once it ended (recordings only: the record
    /// is journaled when the head is answered, the count comes later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_bytes: Option<StreamBytes>,
}

/// Bytes a stream or a tunnel carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBytes {
    pub client_to_daemon: u64,
    pub daemon_to_client: u64,
}

/// A request as its client sent it ([`CallRecord::as_sent`]).
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// Path and query.
    pub raw: String,
    pub headers: HeaderMap,
    /// `None` when the body was not kept.
    pub body: Option<String>,
}

/// A call before its hooks ran, in the parts they changed: each field is `None` when that part
/// went on unchanged. Framing headers (`Content-Length`, `Transfer-Encoding`, hop-by-hop ones)
/// are left out of the comparison: they follow the body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Before {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path and query as the client sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_some_headers",
        deserialize_with = "de_some_headers"
    )]
    pub request_headers: Option<HeaderMap>,
    /// The client's body, when a layer read it (capped as the journal caps bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// The daemon's status, when a post hook changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_some_headers",
        deserialize_with = "de_some_headers"
    )]
    pub response_headers: Option<HeaderMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

impl Before {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Before::default()
    }

    fn weight(&self) -> usize {
        let heads = |h: &Option<HeaderMap>| h.as_ref().map_or(0, header_weight);
        self.raw.as_ref().map_or(0, String::len)
            + self.request_body.as_ref().map_or(0, String::len)
            + self.response_body.as_ref().map_or(0, String::len)
            + heads(&self.request_headers)
            + heads(&self.response_headers)
    }
}

fn header_weight(h: &HeaderMap) -> usize {
    h.iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 16)
        .sum::<usize>()
}

/// The header a replay carries: the id of the call it replays. A label for the journal, not a
/// permission (a client could send it too).
pub const REPLAY_HEADER: &str = "x-luastrip-replay-of";

fn ser_headers<S: serde::Serializer>(h: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(h.len()))?;
    for (k, v) in h {
        seq.serialize_element(&(k.as_str(), String::from_utf8_lossy(v.as_bytes())))?;
    }
    seq.end()
}

fn ser_some_headers<S: serde::Serializer>(h: &Option<HeaderMap>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => ser_headers(h, s),
        None => s.serialize_none(),
    }
}

/// Headers from `[[name, value], …]`; a pair that is not a valid header is an error naming it.
fn de_headers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
    use serde::de::Error as _;
    let pairs: Vec<(String, String)> = Deserialize::deserialize(d)?;
    let mut h = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| D::Error::custom(format!("{k:?} is not a header name")))?;
        let value = http::HeaderValue::from_str(&v)
            .map_err(|_| D::Error::custom(format!("the value of header {k} is not valid")))?;
        h.append(name, value);
    }
    Ok(h)
}

fn de_some_headers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HeaderMap>, D::Error> {
    de_headers(d).map(Some)
}

/// A call that has been running for a while without an answer (announced to `tail` watchers
/// that asked for starts; its [`CallRecord`] follows when it is answered).
#[derive(Debug, Clone, Serialize)]
pub struct CallStart {
    pub id: u64,
    pub started_ms: u64,
    pub method: String,
    /// Path and query as sent.
    pub raw: String,
    /// Normalised path.
    pub path: String,
}

/// Something a helper is doing that is not a call: a volume push going through its steps, say.
/// Shown live by `tail` (and so the REPL and the console) beside the calls.
#[derive(Debug, Clone, Serialize)]
pub struct HelperEvent {
    /// `zfs`, `overlay` …
    pub helper: &'static str,
    pub at_ms: u64,
    /// One line for people: "push db → h2: step 1 done, 110.7 MB in 757 ms (146 MB/s)".
    pub message: String,
    /// The same, for programs.
    pub fields: serde_json::Value,
}

/// Where helpers send their [`HelperEvent`]s (a clone of the journal's sender).
pub type HelperEvents = broadcast::Sender<Arc<HelperEvent>>;

/// Tell the log and, if given, the journal's watchers what a helper is doing.
pub fn announce(
    events: Option<&HelperEvents>,
    helper: &'static str,
    message: String,
    fields: serde_json::Value,
) {
    tracing::info!(helper, %fields, "{message}");
    if let Some(events) = events {
        let _ = events.send(Arc::new(HelperEvent {
            helper,
            at_ms: epoch_ms(SystemTime::now()),
            message,
            fields,
        }));
    }
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// What the ring may hold in bodies and headers together, by default: enough for the last
/// thousand ordinary calls, while 1024 calls with two 64 KiB bodies each would be 128 MiB.
pub const DEFAULT_BYTE_CAP: usize = 16 << 20;

impl CallRecord {
    /// A record of a call that has no answer yet (what filters see of a held or running call).
    pub fn unfinished(id: u64, method: &str, path: &str, raw: &str) -> CallRecord {
        CallRecord {
            id,
            started_ms: 0,
            method: method.to_string(),
            path: path.to_string(),
            raw: raw.to_string(),
            version: None,
            status: None,
            cancelled: false,
            duration_us: 0,
            upstream_us: None,
            hijack: Hijack::No,
            streaming: false,
            hooks: Vec::new(),
            error: None,
            request_headers: HeaderMap::new(),
            request_body: None,
            response_headers: HeaderMap::new(),
            response_body: None,
            replay_of: None,
            before: None,
            stream_bytes: None,
        }
    }

    /// The request as the client sent it, before any hook changed it (what a replay, a `curl`
    /// export or `luastrip test` sends again).
    pub fn as_sent(&self) -> Sent {
        let before = self.before.as_deref();
        Sent {
            method: before
                .and_then(|b| b.method.clone())
                .unwrap_or_else(|| self.method.clone()),
            raw: before
                .and_then(|b| b.raw.clone())
                .unwrap_or_else(|| self.raw.clone()),
            headers: before
                .and_then(|b| b.request_headers.clone())
                .unwrap_or_else(|| self.request_headers.clone()),
            body: before
                .and_then(|b| b.request_body.clone())
                .or_else(|| self.request_body.clone()),
        }
    }

    /// Roughly what the record holds in memory: bodies, headers, paths.
    pub fn weight(&self) -> usize {
        let heads = header_weight;
        256 + self.before.as_ref().map_or(0, |b| b.weight())
            + self.path.len()
            + self.raw.len()
            + self.request_body.as_ref().map_or(0, String::len)
            + self.response_body.as_ref().map_or(0, String::len)
            + heads(&self.request_headers)
            + heads(&self.response_headers)
            + self
                .hooks
                .iter()
                .map(|h| 64 + h.route.len() + h.location.len())
                .sum::<usize>()
    }
}

/// Ring buffer of recent calls plus a broadcast to watchers.
pub struct Journal {
    ring: Mutex<Ring>,
    capacity: usize,
    /// Most bytes ([`CallRecord::weight`]) the ring keeps; older records go first.
    byte_cap: usize,
    watchers: broadcast::Sender<Arc<CallRecord>>,
    /// Long calls as they start; only `tail` subscribes, so calls skip the timer otherwise.
    starts: broadcast::Sender<Arc<CallStart>>,
    /// What the helpers are doing.
    events: HelperEvents,
    /// Files every record is also written to, and whether each is the journal's own file
    /// (`--journal`, which `record stop` leaves alone).
    recorders: Mutex<Vec<(Recorder, bool)>>,
    /// Whether `recorders` has any.
    recording: std::sync::atomic::AtomicBool,
    /// Called with every record on the call's own thread ([`Journal::observe`]).
    observers: RwLock<Vec<Observer>>,
}

/// What [`Journal::observe`] calls with each record.
pub type Observer = Box<dyn Fn(&CallRecord) + Send + Sync>;

#[derive(Default)]
struct Ring {
    /// Each record with its weight (as it was when it came in).
    records: VecDeque<(Arc<CallRecord>, usize)>,
    /// Sum of the records' weights.
    bytes: usize,
}

impl Ring {
    /// Add the newest record, then let the oldest go while over either cap; the newest always
    /// stays, even alone over the byte cap.
    fn push(&mut self, rec: Arc<CallRecord>, capacity: usize, byte_cap: usize) {
        let weight = rec.weight();
        self.bytes += weight;
        self.records.push_back((rec, weight));
        while self.records.len() > 1 && (self.records.len() > capacity || self.bytes > byte_cap) {
            if let Some((_, weight)) = self.records.pop_front() {
                self.bytes -= weight;
            }
        }
    }
}

impl Journal {
    /// A journal keeping the last `capacity` calls, and at most `byte_cap` bytes of them.
    pub fn new(capacity: usize, byte_cap: usize) -> Self {
        let (watchers, _) = broadcast::channel(1024);
        let (starts, _) = broadcast::channel(256);
        let (events, _) = broadcast::channel(256);
        Journal {
            ring: Mutex::new(Ring {
                records: VecDeque::with_capacity(capacity.min(4096)),
                bytes: 0,
            }),
            capacity: capacity.max(1),
            byte_cap,
            watchers,
            starts,
            events,
            recorders: Mutex::new(Vec::new()),
            recording: std::sync::atomic::AtomicBool::new(false),
            observers: RwLock::default(),
        }
    }

    /// Call `f` with every record from now on, on the thread that records it, before watchers
    /// see it. For aggregates that must see every call (metrics): unlike a watcher it never
    /// falls behind, and no thread is woken per call to run it. It holds up the call's worker,
    /// so it must be quick.
    pub fn observe(&self, f: Observer) {
        self.observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    /// Write every record from now on to `recorder`'s file too; `journal` marks the journal's
    /// own file. A file already being written is refused.
    pub fn record_to(&self, recorder: Recorder, journal: bool) -> Result<Recording, String> {
        let mut all = self.recorders.lock().unwrap_or_else(|e| e.into_inner());
        if all.iter().any(|(r, _)| r.path() == recorder.path()) {
            return Err(format!(
                "{} is already being recorded",
                recorder.path().display()
            ));
        }
        let status = recorder.status();
        all.push((recorder, journal));
        self.recording_changed(&all);
        Ok(status)
    }

    /// Stop recording to `file`, or to every file but the journal's own; what was stopped, each
    /// file complete when this returns.
    pub fn stop_recording(&self, file: Option<&std::path::Path>) -> Vec<Recording> {
        let stopped: Vec<Recorder> = {
            let mut all = self.recorders.lock().unwrap_or_else(|e| e.into_inner());
            let (stop, keep) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|(r, journal)| match file {
                    Some(f) => r.path() == f && !journal,
                    None => !journal,
                });
            *all = keep;
            self.recording_changed(&all);
            stop.into_iter().map(|(r, _)| r).collect()
        };
        // Finishing waits for the writer: outside the lock.
        stopped.into_iter().map(Recorder::finish).collect()
    }

    /// A stream or tunnel of call `id` ended, having carried `bytes`: recordings get a line
    /// for it (the call's record was written when its head was answered).
    pub fn stream_ended(&self, id: u64, bytes: StreamBytes) {
        for (r, _) in self
            .recorders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            r.send_end(id, bytes);
        }
    }

    /// Whether calls are being written to a file (bodies are then kept for it).
    pub fn is_recording(&self) -> bool {
        self.recording.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn recording_changed(&self, all: &[(Recorder, bool)]) {
        self.recording
            .store(!all.is_empty(), std::sync::atomic::Ordering::Relaxed);
    }

    /// The files being recorded.
    pub fn recordings(&self) -> Vec<Recording> {
        let all = self.recorders.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(|(r, _)| r.status()).collect()
    }

    /// Put calls from an earlier run back in the ring (oldest first), without telling watchers;
    /// the ring keeps the newest as it always does.
    pub fn restore(&self, records: Vec<CallRecord>) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        for rec in records {
            ring.push(Arc::new(rec), self.capacity, self.byte_cap);
        }
    }

    /// The sender helpers announce their progress on.
    pub fn helper_events(&self) -> HelperEvents {
        self.events.clone()
    }

    /// Watch what the helpers are doing.
    pub fn subscribe_helper_events(&self) -> broadcast::Receiver<Arc<HelperEvent>> {
        self.events.subscribe()
    }

    /// Record a finished call.
    pub fn record(&self, rec: CallRecord) {
        let rec = Arc::new(rec);
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).push(
            rec.clone(),
            self.capacity,
            self.byte_cap,
        );
        for (r, _) in self
            .recorders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            r.send(&rec);
        }
        for f in self
            .observers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(&rec);
        }
        // No watcher is not an error.
        let _ = self.watchers.send(rec);
    }

    /// The most recent calls, oldest first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<Arc<CallRecord>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let skip = ring.records.len().saturating_sub(limit);
        ring.records
            .iter()
            .skip(skip)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// One call by id, if still in the ring.
    pub fn get(&self, id: u64) -> Option<Arc<CallRecord>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.records
            .iter()
            .rev()
            .find(|(r, _)| r.id == id)
            .map(|(r, _)| r.clone())
    }

    /// Announce a long call that has not been answered yet.
    pub fn announce_start(&self, start: CallStart) {
        let _ = self.starts.send(Arc::new(start));
    }

    /// How many watchers want long calls as they start.
    pub fn start_watchers(&self) -> usize {
        self.starts.receiver_count()
    }

    /// Watch long calls as they start.
    pub fn subscribe_starts(&self) -> broadcast::Receiver<Arc<CallStart>> {
        self.starts.subscribe()
    }

    /// Watch calls as they are recorded.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CallRecord>> {
        self.watchers.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64) -> CallRecord {
        CallRecord {
            id,
            started_ms: 0,
            method: "GET".into(),
            path: "/_ping".into(),
            raw: "/_ping".into(),
            version: None,
            status: Some(200),
            cancelled: false,
            duration_us: 1,
            upstream_us: None,
            hijack: Hijack::No,
            streaming: false,
            hooks: vec![],
            error: None,
            request_headers: HeaderMap::new(),
            request_body: None,
            response_headers: HeaderMap::new(),
            response_body: None,
            replay_of: None,
            before: None,
            stream_bytes: None,
        }
    }

    #[tokio::test]
    async fn ring_keeps_the_last_calls_and_broadcasts() {
        let j = Journal::new(3, DEFAULT_BYTE_CAP);
        let mut rx = j.subscribe();
        for id in 1..=5 {
            j.record(rec(id));
        }
        let ids: Vec<u64> = j.recent(10).iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![3, 4, 5]);
        assert_eq!(
            j.recent(2).iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(j.get(2).is_none());
        assert_eq!(j.get(4).unwrap().id, 4);
        assert_eq!(rx.recv().await.unwrap().id, 1);
        let json = serde_json::to_value(&*j.get(5).unwrap()).unwrap();
        assert_eq!(json["hijack"], "no");
    }

    #[test]
    fn the_ring_holds_at_most_its_byte_cap() {
        let j = Journal::new(1024, 1 << 20);
        for id in 1..=100 {
            let mut r = rec(id);
            r.request_body = Some("x".repeat(64 << 10));
            r.response_body = Some("y".repeat(64 << 10));
            j.record(r);
        }
        let kept = j.recent(1024);
        let bytes: usize = kept.iter().map(|r| r.weight()).sum();
        assert!(bytes <= 1 << 20, "{bytes} bytes kept");
        assert!(kept.len() >= 7, "only {} kept", kept.len());
        assert_eq!(kept.last().unwrap().id, 100);
        // One record over the cap on its own is still kept, alone.
        let mut big = rec(101);
        big.request_body = Some("z".repeat(2 << 20));
        j.record(big);
        assert_eq!(
            j.recent(10).iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![101]
        );
    }
}
