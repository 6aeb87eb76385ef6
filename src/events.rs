//! Following the daemon's `/events` stream, for the background services that must see what
//! happens on the daemon directly (a `docker rm` sent to dockerd, a restart-policy restart, a
//! `--rm` container ending): the overlay helper's follower, the scripts' `docker.on_event`, and
//! the keeper of adapter containers' addresses.
//!
//! [`follow`] opens the stream, tells its [`Follower`] (which may catch up on what it could have
//! missed: the stream is opened first, so nothing that happens meanwhile is lost), hands it every
//! event, tells it when the stream ends, and reopens it with `since=` the last event's
//! `timeNano`: at once after a stream that ran a while (the daemon restarted), else after a
//! back-off of up to 5 s (a refusal, or a stream that ends as it opens). [`Filter`] matches
//! events as dockerd's `filters` do.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;
use tracing::{debug, warn};

use crate::upstream::Upstream;
use crate::Error;

/// The future a [`Follower`] returns.
pub type FollowFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What a background service does with the events.
pub trait Follower: Send + Sync + 'static {
    /// For the logs: who follows.
    fn name(&self) -> &'static str;

    /// Docker's `filters` query value (JSON), or `None` for every event.
    fn filters(&self) -> Option<String> {
        None
    }

    /// The stream was just (re)opened: catch up on what may have been missed before it.
    fn opened(&self) -> FollowFuture<'_> {
        Box::pin(async {})
    }

    /// The stream broke or ended; it is reopened after a back-off (and [`Follower::opened`]
    /// called again). Until then, nothing is heard of the daemon.
    fn closed(&self) {}

    /// One event, in the order the daemon sent them.
    fn event<'a>(&'a self, ev: &'a Value) -> FollowFuture<'a>;
}

/// Follow the daemon's events until `stop` completes.
pub async fn follow(upstream: Upstream, f: Arc<dyn Follower>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut since: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let opened_at = now_since();
        let stream = tokio::select! {
            s = open(&upstream, f.filters(), since.as_deref().unwrap_or(&opened_at)) => s,
            _ = &mut stop => return,
        };
        match stream {
            Ok(body) => {
                let opened = std::time::Instant::now();
                let read = async {
                    f.opened().await;
                    read(f.as_ref(), body).await
                };
                tokio::select! {
                    last = read => {
                        f.closed();
                        since = last.or(since).or(Some(opened_at));
                        debug!(follower = f.name(), ?since, "the events stream ended; reconnecting");
                    }
                    _ = &mut stop => return,
                }
                // A stream that ran a while is reopened at once. One that ends as soon as it
                // opens (something that is not dockerd answers the socket) waits the back-off,
                // as a refusal does, and is never reopened in a loop.
                if opened.elapsed() > Duration::from_secs(5) {
                    backoff = Duration::from_millis(200);
                    continue;
                }
            }
            Err(e) => {
                debug!(follower = f.name(), error = %e, "cannot follow the daemon's events");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn now_since() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

async fn open(
    upstream: &Upstream,
    filters: Option<String>,
    since: &str,
) -> Result<hyper::body::Incoming, Error> {
    let mut query = vec![("since", since)];
    if let Some(f) = &filters {
        query.push(("filters", f.as_str()));
    }
    let path = format!("/events?{}", crate::route::query::encode(query));
    let req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, "docker")
        .body(crate::body::full(bytes::Bytes::new()))
        .map_err(|e| Error::Internal(format!("cannot build GET /events: {e}")))?;
    let res = upstream.send(req).await?;
    if !res.status().is_success() {
        return Err(Error::Internal(format!("GET /events: {}", res.status())));
    }
    Ok(res.into_body())
}

/// Hand every event to `f` until the stream ends; the `since=` to resume from.
async fn read(f: &dyn Follower, mut body: hyper::body::Incoming) -> Option<String> {
    let mut pending: Vec<u8> = Vec::new();
    let mut last = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        // One JSON object per line; a line can arrive in pieces.
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(t) = ev["timeNano"].as_u64() {
                last = Some(format!("{}.{:09}", t / 1_000_000_000, t % 1_000_000_000));
            }
            f.event(&ev).await;
        }
        if pending.len() > 1 << 20 {
            warn!(follower = f.name(), "an event over 1 MiB: dropped");
            pending.clear();
        }
    }
    last
}

/// Which events a handler wants, as dockerd's `filters` say it: each key lists values, an event
/// must match one value of every key. Keys: `type`, `event` (`exec_start` also matches
/// `exec_start: sh`), `container`, `image`, `network`, `volume` (the actor's ID or name), `label`
/// (`key` or `key=value`, of the actor's attributes), `scope`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    by: BTreeMap<String, Vec<String>>,
}

const KEYS: [&str; 8] = [
    "type",
    "event",
    "container",
    "image",
    "network",
    "volume",
    "label",
    "scope",
];

impl Filter {
    /// A filter from `key → values`; an unknown key is an error naming it.
    pub fn new(by: BTreeMap<String, Vec<String>>) -> Result<Filter, String> {
        if let Some(k) = by.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown event filter {k:?} (known: {})",
                KEYS.join(", ")
            ));
        }
        Ok(Filter { by })
    }

    /// Whether the event `ev` (one object of `/events`) passes.
    pub fn matches(&self, ev: &Value) -> bool {
        let kind = ev["Type"].as_str().unwrap_or_default();
        let action = ev["Action"].as_str().unwrap_or_default();
        let id = ev["Actor"]["ID"].as_str().unwrap_or_default();
        let attrs = &ev["Actor"]["Attributes"];
        let name = attrs["name"].as_str().unwrap_or_default();
        self.by.iter().all(|(key, values)| {
            values.iter().any(|v| match key.as_str() {
                "type" => v == kind,
                "event" => v == action || action.split(':').next() == Some(v.as_str()),
                "scope" => ev["scope"].as_str() == Some(v),
                "label" => match v.split_once('=') {
                    Some((k, want)) => attrs[k].as_str() == Some(want),
                    None => !attrs[v.as_str()].is_null(),
                },
                "image" => kind == "image" && (v == id || v == name) || attrs["image"] == *v,
                // container, network, volume: an actor of that type, by ID, ID prefix or name.
                other => kind == other && (v == name || (!v.is_empty() && id.starts_with(v))),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Quiet;

    impl Follower for Quiet {
        fn name(&self) -> &'static str {
            "test"
        }

        fn event<'a>(&'a self, _: &'a Value) -> FollowFuture<'a> {
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn a_stream_that_ends_at_once_is_reopened_with_a_back_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Something that is not dockerd on the socket: every request gets an empty 200.
        let dir = std::env::temp_dir().join(format!("luastrip-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = opened.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        let upstream =
            Upstream::new(crate::upstream::UpstreamAddr::parse(path.to_str().unwrap()).unwrap());
        let stop = tokio::time::sleep(Duration::from_millis(1500));
        follow(upstream, Arc::new(Quiet), stop).await;
        // 0, 0.2, 0.6 and 1.4 s: four, where a loop would have made thousands.
        let n = opened.load(std::sync::atomic::Ordering::Relaxed);
        assert!((2..=5).contains(&n), "{n} opens in 1.5 s");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn filter(pairs: &[(&str, &[&str])]) -> Filter {
        Filter::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn filters_match_as_dockerd_reads_them() {
        let start = json!({
            "Type": "container", "Action": "start", "scope": "local",
            "Actor": { "ID": "3f2a9c00", "Attributes": { "name": "web", "image": "busybox", "team": "db" } },
        });
        let exec = json!({
            "Type": "container", "Action": "exec_start: sh -c true",
            "Actor": { "ID": "3f2a9c00", "Attributes": { "name": "web" } },
        });
        assert!(Filter::default().matches(&start));
        assert!(filter(&[("type", &["container"])]).matches(&start));
        assert!(!filter(&[("type", &["network"])]).matches(&start));
        assert!(filter(&[("event", &["die", "start"])]).matches(&start));
        assert!(filter(&[("event", &["exec_start"])]).matches(&exec));
        assert!(!filter(&[("event", &["exec_start"])]).matches(&start));
        assert!(filter(&[("container", &["web"])]).matches(&start));
        assert!(filter(&[("container", &["3f2a"])]).matches(&start));
        assert!(!filter(&[("container", &[""])]).matches(&start));
        assert!(filter(&[("label", &["team"])]).matches(&start));
        assert!(filter(&[("label", &["team=db"])]).matches(&start));
        assert!(!filter(&[("label", &["team=web"])]).matches(&start));
        assert!(filter(&[("image", &["busybox"])]).matches(&start));
        assert!(!filter(&[("type", &["container"]), ("event", &["die"])]).matches(&start));
        assert!(!filter(&[("network", &["web"])]).matches(&start));
        let e = Filter::new([("evnt".to_string(), vec![])].into()).unwrap_err();
        assert!(e.contains("\"evnt\""), "{e}");
    }
}
