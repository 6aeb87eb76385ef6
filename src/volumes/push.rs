//! Moving a volume to another gateway: Flocker's two-phase push.
//!
//! * **Step 1**, while containers may still write: snapshot, then send everything since the
//!   newest snapshot both sides have (matched by **guid**, not by tag; a full stream if none) to
//!   the peer, which receives it (`zfs recv -F` into its read-only copy).
//! * **Step 2**, the cut-over: hold the calls that need the volume here (they wait, then learn
//!   where it went), make this copy read-only, snapshot again, send only what changed since
//!   step 1, check that the peer has that snapshot (guid), and hand ownership over: the peer
//!   claims it first, then this gateway records it. Until the peer has verified the last
//!   snapshot, this gateway keeps ownership and its copy becomes writable again on failure.
//!
//! zfs-fuse has no resumable send: an interrupted push simply starts again from the newest
//! common snapshot, and every step is idempotent. Once a push has landed, the newest common
//! snapshot is held (`zfs hold`) on both sides as the next push's base, and older `push-*`
//! snapshots are released and pruned (Flocker never pruned).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, ReadBuf};
use tracing::warn;

use super::name::{Tag, VolumeName};
use super::{helper, owner_key, Snapshot, Volumes};
use crate::cluster::ClusterError;
use crate::Error;

/// How a push runs.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Running containers that use the volume keep writing during step 1 and are stopped for
    /// the cut-over. Without it, a volume in use by a running container is not moved.
    pub stop: bool,
    /// Seconds a container gets to stop before it is killed (as `docker stop -t`).
    pub stop_timeout: u32,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            stop: false,
            stop_timeout: 10,
        }
    }
}

/// How long a stream to a peer may make no progress before the push gives up.
const STALL: Duration = Duration::from_secs(60);

/// A catch-up round that sent less than this leaves little enough for the cut-over.
const CATCH_UP_DONE: u64 = 1 << 20;

/// What a push did.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PushReport {
    pub volume: String,
    pub to: String,
    /// The common snapshot step 1 sent from (`null`: a full stream).
    pub base: Option<String>,
    pub step1_bytes: u64,
    pub step1_ms: u64,
    /// The cut-over: from the stopped containers to the peer's claim.
    pub step2_bytes: u64,
    pub step2_ms: u64,
    /// The running containers stopped for the cut-over (`{ stop = true }`), and how long
    /// stopping them took (before step 2).
    pub stopped: Vec<String>,
    pub stop_ms: u64,
    /// The snapshot both sides have now.
    pub snapshot: String,
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let out = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        out
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Volumes {
    /// The snapshots of `name` here, `[]` if there is no such volume (a peer asking).
    pub async fn local_snapshots(&self, name: &VolumeName) -> Result<Vec<Snapshot>, Error> {
        match self.backend.get(name).await? {
            Some(_) => self.backend.snapshots(name).await,
            None => Ok(Vec::new()),
        }
    }

    /// Receive a stream a peer sends for `name`, which must end at snapshot `tag` with `guid`.
    /// Refused for a volume this gateway owns: its copy is the one that counts.
    pub async fn receive(
        &self,
        name: &VolumeName,
        tag: &Tag,
        guid: &str,
        stream: Box<dyn AsyncRead + Send + Unpin + '_>,
    ) -> Result<Snapshot, Error> {
        if self.owner(name).await?.as_deref() == Some(self.host.as_str()) {
            return Err(helper(format!(
                "volume {name} is owned by {}: refusing to overwrite it with a peer's copy",
                self.host
            )));
        }
        // A copy with no snapshot has never received anything (and, not being the owner's,
        // was never written): only a full stream can land on it. Make room for it, since
        // replacing an existing filesystem with a full stream is where zfs-fuse fails
        // ("cannot receive new filesystem stream: I/O error").
        if self.backend.get(name).await?.is_some() && self.backend.snapshots(name).await?.is_empty()
        {
            self.backend.destroy(name).await?;
        }
        self.backend.receive(name, stream).await?;
        // A copy this gateway does not own stays read-only (a full receive resets it).
        self.backend.set_read_only(name, true).await?;
        let snaps = self.backend.snapshots(name).await?;
        snaps
            .into_iter()
            .find(|s| s.tag == tag.as_str() && s.guid == guid)
            .ok_or_else(|| {
                helper(format!(
                    "volume {name}: the stream did not end at {tag} ({guid})"
                ))
            })
    }

    /// Take ownership of `name` from `from`, once this copy has the snapshot `guid`.
    pub async fn take_ownership(
        &self,
        name: &VolumeName,
        from: &str,
        guid: &str,
    ) -> Result<(), Error> {
        let snaps = self.local_snapshots(name).await?;
        let Some(at) = snaps.iter().position(|s| s.guid == guid) else {
            return Err(helper(format!(
                "volume {name}: cannot take it over, this copy lacks snapshot {guid}"
            )));
        };
        let key = owner_key(name);
        let mine = json!({ "owner": self.host });
        let cluster_err = |e: ClusterError| helper(e.to_string());
        match self.cluster.get(&key).await.map_err(cluster_err)? {
            None => {
                self.cluster.create(&key, mine).await.map_err(cluster_err)?;
            }
            Some(r) if r.value["owner"].as_str() == Some(from) => {
                self.cluster
                    .swap(&key, mine, r.revision)
                    .await
                    .map_err(cluster_err)?;
            }
            Some(r) if r.value["owner"].as_str() == Some(self.host.as_str()) => {}
            Some(r) => {
                return Err(helper(format!(
                    "volume {name} is owned by {}, not by {from}",
                    r.value["owner"].as_str().unwrap_or("?")
                )))
            }
        }
        self.backend.set_read_only(name, false).await?;
        self.keep_base_and_prune(name, &snaps[at], &snaps[..at])
            .await;
        self.note(
            format!(
                "push: {name} taken over from {from}; {} owns it now",
                self.host
            ),
            json!({ "volume": name.as_str(), "from": from, "step": "claimed" }),
        );
        Ok(())
    }

    /// Destroy the `push-*` snapshots among `older` (best effort: a failure is only logged).
    /// Keep `base` (the newest snapshot both sides have) with a `zfs hold`, so that nothing
    /// destroys the next push's base by accident, and destroy the `push-*` snapshots among
    /// `older` (releasing their hold first). Best effort: a failure is only logged.
    async fn keep_base_and_prune(&self, name: &VolumeName, base: &Snapshot, older: &[Snapshot]) {
        if let Ok(tag) = Tag::parse(&base.tag) {
            if let Err(e) = self.backend.hold(name, &tag, true).await {
                warn!(volume = %name, snapshot = %base.tag, error = %e, "cannot hold the push base");
            }
        }
        for s in older.iter().filter(|s| s.tag.starts_with("push-")) {
            if let Ok(tag) = Tag::parse(&s.tag) {
                let _ = self.backend.hold(name, &tag, false).await;
                if let Err(e) = self.backend.destroy_snapshot(name, &tag).await {
                    warn!(volume = %name, snapshot = %s.tag, error = %e, "cannot prune an old push snapshot");
                }
            }
        }
    }

    /// Snapshot `name` as `tag` and send it to `to`, from the newest snapshot `to` has (matched
    /// by guid) or from `since`; the bytes sent and the snapshot.
    async fn send_to(
        &self,
        name: &VolumeName,
        to: &str,
        since: Option<&Tag>,
        tag: &Tag,
    ) -> Result<(u64, Snapshot), Error> {
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| helper("no peers: start luastrip with --peer"))?;
        let snap = self.backend.snapshot(name, tag).await?;
        let stream = self.backend.send(name, since, tag).await?;
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Counting {
            inner: stream.reader,
            bytes: bytes.clone(),
        };
        // A peer that stops reading (or answering) must not hang the push: give up once no
        // byte has moved for STALL.
        let watchdog = async {
            let mut seen = 0;
            loop {
                tokio::time::sleep(STALL).await;
                let now = bytes.load(Ordering::Relaxed);
                if now == seen {
                    return helper(format!(
                        "peer {to}: nothing moved for {} s ({now} bytes sent); giving up",
                        STALL.as_secs()
                    ));
                }
                seen = now;
            }
        };
        let sent = tokio::select! {
            sent = peers.send_stream(to, name, tag, &snap.guid, counted) => sent,
            stalled = watchdog => Err(stalled),
        };
        let made = stream.producer.finish().await;
        sent?;
        made?;
        Ok((bytes.load(Ordering::Relaxed), snap))
    }

    /// Move `name` to the gateway `to` (two phases, see the module docs).
    pub async fn push(
        &self,
        name: &VolumeName,
        to: &str,
        opts: PushOptions,
    ) -> Result<PushReport, Error> {
        let pushed = self.push_steps(name, to, opts).await;
        if let Err(e) = &pushed {
            self.note(
                format!("push: {name} → {to} failed, the volume stays here: {e}"),
                json!({ "volume": name.as_str(), "to": to, "error": e.to_string() }),
            );
        }
        pushed
    }

    /// The steps of [`Volumes::push`].
    async fn push_steps(
        &self,
        name: &VolumeName,
        to: &str,
        opts: PushOptions,
    ) -> Result<PushReport, Error> {
        let peers = self
            .peers
            .clone()
            .ok_or_else(|| helper("no peers: start luastrip with --peer NAME=URL"))?;
        if to == self.host {
            return Err(helper(format!("volume {name}: {to} is this gateway")));
        }
        let v = self.existing(name).await?;
        match self.owner(name).await? {
            Some(o) if o == self.host => {}
            None => {
                self.claim(name).await?;
            }
            Some(o) => {
                return Err(helper(format!(
                    "cannot push volume {name}: it is owned by {o}"
                )))
            }
        }
        let running = self.containers_using(&v, false).await?;
        if let (Some(c), false) = (running.first(), opts.stop) {
            return Err(helper(format!(
                "volume {name} is in use by the running container {c}; stop it before moving \
                 the volume (or push with {{ stop = true }})"
            )));
        }
        // Step 1: everything since the newest snapshot both sides have.
        let t1 = Instant::now();
        let theirs: Vec<String> = peers
            .snapshots(to, name)
            .await?
            .into_iter()
            .map(|s| s.guid)
            .collect();
        let base = self
            .backend
            .snapshots(name)
            .await?
            .into_iter()
            .rev()
            .find(|s| theirs.contains(&s.guid));
        let base_tag = base
            .as_ref()
            .map(|s| Tag::parse(&s.tag))
            .transpose()
            .map_err(helper)?;
        let stamp = now_ms();
        let tag1 = Tag::parse(&format!("push-{stamp}-1")).map_err(helper)?;
        self.note(
            format!(
                "push: {name} → {to}: step 1, copying while in use (from {})",
                base.as_ref().map_or("scratch", |s| s.tag.as_str())
            ),
            json!({ "volume": name.as_str(), "to": to, "step": 1 }),
        );
        let (mut step1_bytes, _) = self.send_to(name, to, base_tag.as_ref(), &tag1).await?;
        let ms = t1.elapsed().as_millis() as u64;
        self.note(
            format!(
                "push: {name} → {to}: step 1 copied {:.1} MB in {ms} ms ({:.0} MB/s)",
                step1_bytes as f64 / 1e6,
                rate(step1_bytes, ms)
            ),
            json!({ "volume": name.as_str(), "to": to, "step": 1, "bytes": step1_bytes, "ms": ms }),
        );
        // While containers still write, catch up until what is left is small (at most 3 more
        // rounds), so that the cut-over only has the last few writes to send.
        let mut last = tag1;
        for round in 2..=4 {
            if running.is_empty() {
                break;
            }
            let tag = Tag::parse(&format!("push-{stamp}-1-{round}")).map_err(helper)?;
            let (bytes, _) = self.send_to(name, to, Some(&last), &tag).await?;
            step1_bytes += bytes;
            last = tag;
            self.note(
                format!("push: {name} → {to}: caught up {:.1} MB (round {round})", bytes as f64 / 1e6),
                json!({ "volume": name.as_str(), "to": to, "step": 1, "round": round, "bytes": bytes }),
            );
            if bytes < CATCH_UP_DONE {
                break;
            }
        }
        let step1_ms = t1.elapsed().as_millis() as u64;

        // Step 2: the cut-over, with the calls that need the volume held.
        let hold = self.hold(name);
        let _held = hold.write().await;
        {
            // Calls on these containers wait for the cut-over, then learn where it went.
            let mut moves = self.moves.lock().unwrap_or_else(|e| e.into_inner());
            for c in &running {
                moves.insert(
                    c.clone(),
                    super::ContainerMove {
                        volume: name.clone(),
                        hold: hold.clone(),
                    },
                );
            }
        }
        let stopping = Instant::now();
        for c in &running {
            self.stop_container(&c.id, opts.stop_timeout).await?;
        }
        let stop_ms = stopping.elapsed().as_millis() as u64;
        self.note(
            format!(
                "push: {name} → {to}: step 2, cut-over (calls for it held{})",
                if running.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = running.iter().map(|c| c.name.as_str()).collect();
                    format!("; stopped {} in {stop_ms} ms", names.join(", "))
                }
            ),
            json!({
                "volume": name.as_str(),
                "to": to,
                "step": 2,
                "stopped": running.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                "stop_ms": stop_ms,
            }),
        );
        let t2 = Instant::now();
        self.backend.set_read_only(name, true).await?;
        let tag2 = Tag::parse(&format!("push-{stamp}-2")).map_err(helper)?;
        let cut = async {
            let (bytes, snap) = self.send_to(name, to, Some(&last), &tag2).await?;
            peers.claim(to, name, &self.host, &snap.guid).await?;
            Ok::<_, Error>((bytes, snap))
        }
        .await;
        let (step2_bytes, snap) = match cut {
            Ok(done) => done,
            Err(e) => {
                // The peer has not taken it: this copy stays the owner's, writable again.
                let _ = self.backend.set_read_only(name, false).await;
                return Err(e);
            }
        };
        // The peer has claimed it; record that here too (a shared store already says so).
        let key = owner_key(name);
        if let Some(r) = self
            .cluster
            .get(&key)
            .await
            .map_err(|e| helper(e.to_string()))?
        {
            if r.value["owner"].as_str() == Some(self.host.as_str()) {
                self.cluster
                    .swap(&key, json!({ "owner": to }), r.revision)
                    .await
                    .map_err(|e| helper(e.to_string()))?;
            }
        }
        let step2_ms = t2.elapsed().as_millis() as u64;
        self.note(
            format!(
                "push: cut over {name} → {to}: {:.1} KB in {step2_ms} ms; {to} owns it now",
                step2_bytes as f64 / 1e3
            ),
            json!({ "volume": name.as_str(), "to": to, "step": 2, "bytes": step2_bytes, "ms": step2_ms }),
        );
        let older: Vec<Snapshot> = self
            .backend
            .snapshots(name)
            .await?
            .into_iter()
            .filter(|s| s.guid != snap.guid)
            .collect();
        self.keep_base_and_prune(name, &snap, &older).await;
        Ok(PushReport {
            volume: name.to_string(),
            to: to.to_string(),
            base: base.map(|s| s.tag),
            step1_bytes,
            step1_ms,
            step2_bytes,
            step2_ms,
            stopped: running.iter().map(|c| c.name.clone()).collect(),
            stop_ms,
            snapshot: snap.tag,
        })
    }

    /// Bring `name` here: ask its owner to push it to this gateway. A volume owned here (or by
    /// no one) needs nothing; the report is `None` then.
    pub async fn pull(
        &self,
        name: &VolumeName,
        timeout: Duration,
    ) -> Result<Option<PushReport>, Error> {
        let owner = match self.owner(name).await? {
            Some(o) if o != self.host => o,
            _ => return Ok(None),
        };
        let peers = self.peers.as_ref().ok_or_else(|| {
            helper(format!("volume {name} is owned by {owner}; name it with --peer {owner}=http://HOST:PORT to move it here"))
        })?;
        let report = peers
            .request_push(&owner, name, &self.host, timeout)
            .await?;
        serde_json::from_value(report)
            .map(Some)
            .map_err(|e| helper(format!("peer {owner}: bad push report: {e}")))
    }
}

fn rate(bytes: u64, ms: u64) -> f64 {
    if ms == 0 {
        return 0.0;
    }
    (bytes as f64 / 1e6) / (ms as f64 / 1e3)
}
