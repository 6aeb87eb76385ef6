//! Moving a volume to another gateway: Flocker's two-phase push.
//!
//! * **Step 1**, while containers may still write: the owner record says the move has begun
//!   (`sending`); snapshot, then send everything since the newest snapshot both sides have
//!   (matched by **guid**, not by tag; a full stream if none) to the peer, which receives it
//!   (`zfs recv` into its read-only copy).
//! * **Step 2**, the cut-over: hold the calls that need the volume here (they wait, then learn
//!   where it went), make this copy read-only, snapshot again, record the cut-over with that
//!   snapshot's guid, send only what changed since step 1, and ask the peer to claim: it swaps
//!   the owner record to itself at the next epoch once it has that snapshot. Until then this
//!   gateway keeps the volume; on failure it rolls the move back in the record (whichever swap
//!   comes first wins) and its copy becomes writable again.
//!
//! Every stream and claim names the owner and its epoch ([`super::owner`]), and every step is in
//! the record, so a gateway killed at any step leaves one owner and its successor settles the
//! move. zfs-fuse has no resumable send: an interrupted push simply starts again from the newest
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
use super::owner::{self, Handoff, Ownership};
use super::{helper, Snapshot, Volumes};
use crate::Error;

/// How a push runs.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Running containers that use the volume keep writing during step 1 and are stopped for
    /// the cut-over. Without it, a volume in use by a running container is not moved.
    pub stop: bool,
    /// Seconds a container gets to stop before it is killed (as `docker stop -t`).
    pub stop_timeout: u32,
    /// Running containers that use the volume keep it during step 1, and the cut-over waits
    /// at most this long for the last of them to stop by itself (a swarm task being moved:
    /// swarm stops it); they are never stopped by the push. Past it, the push fails naming
    /// them, and the volume stays here.
    pub release_wait: Option<Duration>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            stop: false,
            stop_timeout: 10,
            release_wait: None,
        }
    }
}

/// How long a stream to a peer may make no progress before the push gives up.
const STALL: Duration = Duration::from_secs(60);

/// A catch-up round that sent less than this leaves little enough for the cut-over.
const CATCH_UP_DONE: u64 = 1 << 20;

/// How long a cut-over waits, once it holds the volume, for the last users to let go of it (an
/// `Unmount` follows a container's stop by a moment).
const UNMOUNT_WAIT: Duration = Duration::from_secs(5);

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

/// While it lives, its volume is being pushed by this process.
struct Pushing {
    set: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    name: String,
}

impl Drop for Pushing {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
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
    /// Only from the owner, under its current epoch, moving the volume here (the record says
    /// so); refused for a volume this gateway owns: its copy is the one that counts.
    pub async fn receive(
        &self,
        name: &VolumeName,
        tag: &Tag,
        guid: &str,
        by: &Handoff,
        stream: Box<dyn AsyncRead + Send + Unpin + '_>,
    ) -> Result<Snapshot, Error> {
        if self.owner(name).await?.as_deref() == Some(self.host.as_str()) {
            return Err(helper(format!(
                "volume {name} is owned by {}: refusing to overwrite it with a peer's copy",
                self.host
            )));
        }
        self.check_handoff(name, by, None).await?;
        // A first copy (a full stream: nothing here has a snapshot) lands with the volume held
        // here: no call sees it missing or half made, and none makes an empty copy of it in the
        // meantime (`Volumes::volume` would, and the stream could not land on that).
        let first = match self.backend.get(name).await? {
            None => true,
            Some(_) => self.backend.snapshots(name).await?.is_empty(),
        };
        let hold = self.hold(name);
        let _landing = if first {
            Some(hold.write().await)
        } else {
            None
        };
        // A copy with no snapshot has never received anything (and, not being the owner's,
        // was never written): only a full stream can land on it. Make room for it, since
        // replacing an existing filesystem with a full stream is where zfs-fuse fails
        // ("cannot receive new filesystem stream: I/O error").
        if first {
            if self.backend.get(name).await?.is_some() {
                self.backend.destroy(name).await?;
            }
            crate::failpoint::pause("volumes.receive.landing").await;
        }
        self.backend.receive(name, stream).await?;
        // A copy this gateway does not own stays read-only (a full receive resets it).
        self.backend.set_read_only(name, true).await?;
        crate::failpoint::hit("volumes.receive.after");
        let snaps = self.backend.snapshots(name).await?;
        let Some(at) = snaps
            .iter()
            .position(|s| s.tag == tag.as_str() && s.guid == guid)
        else {
            return Err(helper(format!(
                "volume {name}: the stream did not end at {tag} ({guid})"
            )));
        };
        if by.standby {
            // A replica: the next one starts from this snapshot; older ones go.
            self.keep_base_and_prune(name, &snaps[at], &snaps[..at])
                .await;
        }
        Ok(snaps[at].clone())
    }

    /// Destroy the `push-*` snapshots among `older` (best effort: a failure is only logged).
    /// Keep `base` (the newest snapshot both sides have) with a `zfs hold`, so that nothing
    /// destroys the next push's base by accident, and destroy the `push-*` and `repl-*`
    /// snapshots among `older` (releasing their hold first). Best effort: a failure is only
    /// logged.
    pub(super) async fn keep_base_and_prune(
        &self,
        name: &VolumeName,
        base: &Snapshot,
        older: &[Snapshot],
    ) {
        if let Ok(tag) = Tag::parse(&base.tag) {
            if let Err(e) = self.backend.hold(name, &tag, true).await {
                warn!(volume = %name, snapshot = %base.tag, error = %e, "cannot hold the push base");
            }
        }
        for s in older
            .iter()
            .filter(|s| s.tag.starts_with("push-") || s.tag.starts_with("repl-"))
        {
            if let Ok(tag) = Tag::parse(&s.tag) {
                let _ = self.backend.hold(name, &tag, false).await;
                if let Err(e) = self.backend.destroy_snapshot(name, &tag).await {
                    warn!(volume = %name, snapshot = %s.tag, error = %e, "cannot prune an old push snapshot");
                }
            }
        }
    }

    /// Keep `snap` as the base of the next push or replica, and prune the `push-*` and `repl-*`
    /// snapshots besides it (see [`Volumes::keep_base_and_prune`]).
    pub(super) async fn keep_only_base(
        &self,
        name: &VolumeName,
        snap: &Snapshot,
    ) -> Result<(), Error> {
        let older: Vec<Snapshot> = self
            .backend
            .snapshots(name)
            .await?
            .into_iter()
            .filter(|s| s.guid != snap.guid)
            .collect();
        self.keep_base_and_prune(name, snap, &older).await;
        Ok(())
    }

    /// The newest snapshot of `name` that `to` has too (matched by guid), and its tag: where the
    /// next stream to `to` starts (`None`: a full stream).
    pub(super) async fn newest_common(
        &self,
        peers: &super::peers::Peers,
        to: &str,
        name: &VolumeName,
    ) -> Result<(Option<Snapshot>, Option<Tag>), Error> {
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
        let tag = base
            .as_ref()
            .map(|s| Tag::parse(&s.tag))
            .transpose()
            .map_err(helper)?;
        Ok((base, tag))
    }

    /// Snapshot `name` as `tag` and send it to `to`, from `since` (a full stream without it);
    /// the bytes sent and the snapshot.
    async fn snapshot_and_send(
        &self,
        name: &VolumeName,
        to: &str,
        by: &Handoff,
        since: Option<&Tag>,
        tag: &Tag,
    ) -> Result<(u64, Snapshot), Error> {
        let snap = self.backend.snapshot(name, tag).await?;
        let bytes = self.send_to(name, to, by, since, &snap).await?;
        Ok((bytes, snap))
    }

    /// Send `name` up to the snapshot `snap` to `to`, from `since` (a full stream without it);
    /// the bytes sent.
    pub(super) async fn send_to(
        &self,
        name: &VolumeName,
        to: &str,
        by: &Handoff,
        since: Option<&Tag>,
        snap: &Snapshot,
    ) -> Result<u64, Error> {
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| helper("no peers: start luastrip with --peer"))?;
        let tag = Tag::parse(&snap.tag).map_err(helper)?;
        let stream = self.backend.send(name, since, &tag).await?;
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
            sent = peers.send_stream(to, name, &tag, &snap.guid, by, counted) => sent,
            stalled = watchdog => Err(stalled),
        };
        let made = stream.producer.finish().await;
        sent?;
        made?;
        Ok(bytes.load(Ordering::Relaxed))
    }

    /// Move `name` to the gateway `to` (two phases, see the module docs). Each step is recorded
    /// in the volume's owner record ([`super::owner`]); a push that fails is rolled back there.
    pub async fn push(
        &self,
        name: &VolumeName,
        to: &str,
        opts: PushOptions,
    ) -> Result<PushReport, Error> {
        let _pushing = self.pushing_now(name)?;
        let pushed = self.push_steps(name, to, opts).await;
        if let Err(e) = &pushed {
            self.note(
                format!("push: {name} → {to} failed, the volume stays here: {e}"),
                json!({ "volume": name.as_str(), "to": to, "error": e.to_string() }),
            );
        }
        pushed
    }

    /// Mark `name` as pushed by this process until the guard drops; refused if it is already.
    fn pushing_now(&self, name: &VolumeName) -> Result<Pushing, Error> {
        let mut set = self.pushing.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(name.to_string()) {
            return Err(helper(format!("volume {name} is being pushed already")));
        }
        Ok(Pushing {
            set: self.pushing.clone(),
            name: name.to_string(),
        })
    }

    /// Whether this process is pushing `name` now.
    pub(super) fn is_pushing(&self, name: &VolumeName) -> bool {
        self.pushing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name.as_str())
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
        let (mut o, mut rev, _) = self.claim(name).await?;
        if o.owner == self.host && o.moving.is_some() {
            // A push that a gateway before this one left half-way: finish or roll it back first.
            self.settle(name).await?;
            (o, rev, _) = self.claim(name).await?;
        }
        if let Some(why) = owner::fenced(&self.host, &v, &o) {
            return Err(helper(format!("cannot push: {why}")));
        }
        let running = self.users(&v).await?;
        if let Some(c) = running.iter().find(|c| c.id.is_empty()) {
            if opts.release_wait.is_none() {
                return Err(helper(format!(
                    "volume {name} is in use: dockerd holds {c}, and it moves only once that is \
                     let go"
                )));
            }
        }
        if let (Some(c), false, None) = (running.first(), opts.stop, opts.release_wait) {
            return Err(helper(format!(
                "volume {name} is in use by the running container {c}; stop it before moving \
                 the volume (or push with {{ stop = true }})"
            )));
        }
        let begun = self
            .record_step(name, (&o, rev), to, owner::Step::Sending, None)
            .await?;
        let by = Handoff {
            from: self.host.clone(),
            epoch: o.epoch,
            standby: false,
        };
        let moved = self
            .move_steps(name, to, &peers, &by, begun, running, opts)
            .await;
        if moved.is_err() {
            // Rolled back, unless the receiver took it after all (then its record says so).
            if let Err(e) = self.end_failed_move(name, to).await {
                warn!(volume = %name, error = %e, "cannot roll the failed push back yet: the next start settles it");
            }
        }
        moved
    }

    /// Step 1 and step 2 of a push recorded as `begun` (the record and its revision).
    #[allow(clippy::too_many_arguments)]
    async fn move_steps(
        &self,
        name: &VolumeName,
        to: &str,
        peers: &super::peers::Peers,
        by: &Handoff,
        begun: (Ownership, u64),
        running: Vec<super::ContainerRef>,
        opts: PushOptions,
    ) -> Result<PushReport, Error> {
        // Step 1: everything since the newest snapshot both sides have.
        let t1 = Instant::now();
        let (base, base_tag) = self.newest_common(peers, to, name).await?;
        let stamp = now_ms();
        let tag1 = Tag::parse(&format!("push-{stamp}-1")).map_err(helper)?;
        self.note(
            format!(
                "push: {name} → {to}: step 1, copying while in use (from {})",
                base.as_ref().map_or("scratch", |s| s.tag.as_str())
            ),
            json!({ "volume": name.as_str(), "to": to, "step": 1 }),
        );
        let (mut step1_bytes, _) = self
            .snapshot_and_send(name, to, by, base_tag.as_ref(), &tag1)
            .await?;
        crate::failpoint::hit("volumes.push.sent");
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
            let (bytes, _) = self
                .snapshot_and_send(name, to, by, Some(&last), &tag)
                .await?;
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
        // (Waited for even when nothing used it at the start: a container may have been
        // started with it during step 1.)
        let running = match opts.release_wait {
            Some(wait) => {
                self.until_unused(name, to, wait, false).await?;
                Vec::new()
            }
            _ => running,
        };

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
        // A container started with the volume since the checks above (its mount, or its start
        // through the socket, came before the hold) keeps it here.
        self.until_unused(name, to, UNMOUNT_WAIT, true).await?;
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
        let snap = self.backend.snapshot(name, &tag2).await?;
        // From here the receiver may take the volume once it has `snap`; until it does, this
        // gateway may still roll the move back (whichever swaps the record first wins).
        self.record_step(
            name,
            (&begun.0, begun.1),
            to,
            owner::Step::CutOver,
            Some(&snap.guid),
        )
        .await?;
        let step2_bytes = self.send_to(name, to, by, Some(&last), &snap).await?;
        crate::failpoint::hit("volumes.push.cut-over");
        if let Err(e) = peers.claim(to, name, by, &snap.guid).await {
            // Its answer may be what was lost: the record tells.
            if self.end_failed_move(name, to).await? {
                return Err(e);
            }
            warn!(volume = %name, to, error = %e, "the receiver's answer to the claim was lost, but the record says it took the volume");
        }
        crate::failpoint::hit("volumes.push.claimed");
        let step2_ms = t2.elapsed().as_millis() as u64;
        self.note(
            format!(
                "push: cut over {name} → {to}: {:.1} KB in {step2_ms} ms; {to} owns it now",
                step2_bytes as f64 / 1e3
            ),
            json!({ "volume": name.as_str(), "to": to, "step": 2, "bytes": step2_bytes, "ms": step2_ms }),
        );
        self.keep_only_base(name, &snap).await?;
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

    /// Wait until nothing on this host uses `name` ([`Volumes::users`]), at most `wait`, polled
    /// every 50 ms so the cut-over starts within that of the last one's stop; past `wait`, the
    /// move fails naming what still uses it. The users are someone else's to stop (swarm's,
    /// moving a task). `holding`: the cut-over holds the volume already, so no new plugin mount
    /// can come, and anything still using it began to as the move was cutting over (or is a
    /// stopped container whose `Unmount` is a moment behind).
    async fn until_unused(
        &self,
        name: &VolumeName,
        to: &str,
        wait: Duration,
        holding: bool,
    ) -> Result<(), Error> {
        let v = self.existing(name).await?;
        let until = Instant::now() + wait;
        let mut noted = holding;
        loop {
            let users = self.users(&v).await?;
            let Some(first) = users.first() else {
                return Ok(());
            };
            let names: Vec<&str> = users.iter().map(|c| c.name.as_str()).collect();
            if Instant::now() >= until {
                return Err(helper(if holding {
                    format!(
                        "volume {name} is in use on host {}: {} began to use it as the move to \
                         {to} was cutting over; it stays here (never taken from under a \
                         container)",
                        self.host,
                        names.join(", ")
                    )
                } else {
                    format!(
                        "volume {name} is in use on host {} by the running container {}: it \
                         moves to {to} only once that container stops, and did not within {} s \
                         (never taken from under a running container)",
                        self.host,
                        names.join(", "),
                        wait.as_secs()
                    )
                }));
            }
            if !noted {
                self.note(
                    format!("push: {name} → {to}: step 2 waits for {} to stop", first.name),
                    json!({ "volume": name.as_str(), "to": to, "step": 2, "waits_for": first.name }),
                );
                noted = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Bring `name` here: ask its owner to push it to this gateway. A volume owned here (or by
    /// no one) needs nothing; the report is `None` then.
    pub async fn pull(
        &self,
        name: &VolumeName,
        timeout: Duration,
    ) -> Result<Option<PushReport>, Error> {
        self.pull_when_released(name, None, timeout).await
    }

    /// [`Volumes::pull`], with the owner's running containers keeping the volume until they
    /// stop by themselves, for at most `release_wait` ([`PushOptions::release_wait`]).
    pub async fn pull_when_released(
        &self,
        name: &VolumeName,
        release_wait: Option<Duration>,
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
            .request_push(&owner, name, &self.host, release_wait, timeout)
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
