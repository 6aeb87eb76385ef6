//! The ZFS backend: a volume is the dataset `POOL/ROOT/NAME`, driven through the `zfs` and
//! `zpool` commands by argv (there is no stable libzfs ABI; Flocker did the same), never
//! through a shell. Every name reaching an argument was checked ([`super::name`]), and the
//! dataset names are built here, so a volume name can never address another dataset.
//!
//! Works with Debian's zfs-fuse (pool version 23): no resumable send, no `recv -o`, no
//! bookmarks, which this backend does not use.
//!
//! Every command has a bound (`--zfs-timeout-s`): one that does not finish in time is killed and
//! fails its call with an error naming the command, and while a killed command has not exited
//! (a process stuck in the kernel cannot be killed), the commands after it fail at once instead
//! of piling up behind it. zfs-fuse 0.7 deadlocks when datasets are created, mounted or
//! received side by side (a `zfs create` stuck in D state in `fuse_get_req`), so on zfs-fuse
//! the commands that change datasets run one at a time per pool ([`Gate`]); reads (`get`) and
//! `send` still run beside them. With the kernel module nothing is serialised.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::name::{Tag, VolumeName};
use super::{BackendFuture, BackendVolume, ByteStream, Snapshot, VolumeBackend};
use crate::Error;

/// The tag of luastrip's `zfs hold` on a push base.
const HOLD_TAG: &str = "luastrip-push-base";

/// The longest a `zfs` command may take by default (`--zfs-timeout-s`); `send` and `recv` are
/// streams and bounded by their peer instead.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Zfs {
    /// `POOL/ROOT`: every volume is a child of it.
    root: String,
    /// The bound on one command.
    timeout: Duration,
    gate: Arc<Gate>,
}

/// What the commands on one pool share: whether they must run one at a time (zfs-fuse), and
/// the command that was killed for running past its bound and has not exited yet.
#[derive(Default)]
struct Gate {
    /// Held by a command that changes datasets, on zfs-fuse only.
    serial: Option<tokio::sync::Mutex<()>>,
    stuck: Mutex<Option<(String, Instant)>>,
}

impl Gate {
    /// The gate of `pool`: one per pool in this process, however many backends use it.
    fn of(pool: &str, serial: bool) -> Arc<Gate> {
        static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
        let mut gates = GATES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        gates
            .entry(pool.to_string())
            .or_insert_with(|| {
                Arc::new(Gate {
                    serial: serial.then(|| tokio::sync::Mutex::new(())),
                    stuck: Mutex::default(),
                })
            })
            .clone()
    }

    /// An error while a killed command has not exited: zfs is wedged, and one more command
    /// would only wait behind it.
    fn check_stuck(&self) -> Result<(), Error> {
        match &*self.stuck.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((cmd, since)) => Err(helper(format!(
                "zfs is not answering: `{cmd}` ran past its bound and has not exited for {} s \
                 (a process stuck in the kernel; with zfs-fuse, restart the zfs-fuse daemon)",
                since.elapsed().as_secs()
            ))),
            None => Ok(()),
        }
    }

    /// `child` was killed for running past its bound: until it exits, the pool is stuck.
    fn reap(self: &Arc<Self>, cmd: String, mut child: Child) {
        let _ = child.start_kill();
        *self.stuck.lock().unwrap_or_else(|e| e.into_inner()) = Some((cmd, Instant::now()));
        let gate = self.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            *gate.stuck.lock().unwrap_or_else(|e| e.into_inner()) = None;
        });
    }
}

/// Whether the `zfs` commands here drive zfs-fuse rather than the kernel module: the kernel
/// module shows itself in `/sys/module/zfs`.
fn is_zfs_fuse() -> bool {
    !std::path::Path::new("/sys/module/zfs").exists()
}

/// Whether a `zfs` subcommand changes datasets (creates, destroys, mounts, receives, sets
/// properties or takes snapshots): the ones zfs-fuse cannot run side by side.
fn changes_datasets(subcommand: &str) -> bool {
    !matches!(subcommand, "get" | "list" | "send")
}

/// How much of a stream's first record [`check_stream_begin`] reads: up to the snapshot's name.
const BEGIN_CHECKED: usize = 56;

/// Check the first record of a replication stream from a peer, before `zfs recv` reads any of it:
/// it must be a plain stream of one snapshot (what `zfs send [-i]` makes), never a compound
/// stream (`zfs send -p`, `-R`) whose header carries the dataset's properties. A received
/// property would choose where the dataset is mounted (`mountpoint=/root/.ssh`), and once zfs
/// has received it, it has mounted it: checking afterwards is too late. zfs-fuse has no `recv -x`
/// or `-o` to override them, so such streams are refused whole.
///
/// The record (`dmu_replay_record`, little-endian): `drr_type` (u32, 0 = BEGIN),
/// `drr_payloadlen` (u32: the header's nvlist, 0 for a plain stream), then `drr_magic` (u64,
/// 0x2F5BACBAC) and `drr_versioninfo` (u64, whose low two bits are 1 for a plain substream and
/// 2 for a compound stream).
fn check_stream_begin(begin: &[u8; BEGIN_CHECKED]) -> Result<(), String> {
    let u32_at = |i: usize| u32::from_le_bytes(begin[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(begin[i..i + 8].try_into().expect("8 bytes"));
    const MAGIC: u64 = 0x2_F5BA_CBAC;
    if u64_at(8) == MAGIC.swap_bytes() {
        return Err("the stream is from a host of the other byte order: refused".into());
    }
    if u32_at(0) != 0 || u64_at(8) != MAGIC {
        return Err("not a zfs replication stream".into());
    }
    if u32_at(4) != 0 || u64_at(16) & 0b11 != 1 {
        return Err(
            "the stream carries the dataset's properties (a compound stream, zfs send -p or -R): \
             refused, since a received property such as mountpoint would choose where it lands"
                .into(),
        );
    }
    Ok(())
}

fn helper(reason: impl Into<String>) -> Error {
    Error::Helper {
        helper: "zfs".into(),
        reason: reason.into(),
    }
}

/// A pool name or a `/`-separated root below it, checked as volume names are.
fn check_dataset_path(flag: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(helper(format!("{flag}: empty")));
    }
    for part in s.split('/') {
        VolumeName::parse(part).map_err(|e| helper(format!("{flag} {s:?}: {e}")))?;
    }
    Ok(())
}

impl Zfs {
    /// The backend on `pool`, keeping volumes under `pool/root` (created if missing). A missing
    /// `zfs` command or pool is a clear error naming the flag.
    pub async fn open(pool: &str, root: &str, timeout: Duration) -> Result<Zfs, Error> {
        check_dataset_path("--zfs-pool", pool)?;
        if pool.contains('/') {
            return Err(helper(format!(
                "--zfs-pool {pool:?}: a pool name, without '/' (use --zfs-root for a dataset below it)"
            )));
        }
        check_dataset_path("--zfs-root", root)?;
        let listed = tokio::time::timeout(
            timeout,
            Command::new("zpool")
                .args(["list", "-H", "-o", "name", pool])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| {
            helper(format!(
                "zpool list {pool} did not finish in {timeout:?}: is the zfs daemon (zfs-fuse) stuck?"
            ))
        })?;
        match listed {
            Err(e) => {
                return Err(helper(format!(
                    "--volume-backend zfs needs the zpool and zfs commands ({e}); \
                     on Debian: apt-get install zfs-fuse (or zfsutils-linux)"
                )))
            }
            Ok(out) if !out.status.success() => {
                return Err(helper(format!(
                    "--zfs-pool {pool}: no such pool: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
            Ok(_) => {}
        }
        let zfs = Zfs {
            root: format!("{pool}/{root}"),
            timeout,
            gate: Gate::of(pool, is_zfs_fuse()),
        };
        zfs.run(&["create", "-p", &zfs.root]).await?;
        Ok(zfs)
    }

    fn dataset(&self, name: &VolumeName) -> String {
        format!("{}/{}", self.root, name)
    }

    /// Run `zfs ARGS…` within the bound (one at a time per pool on zfs-fuse, when it changes
    /// datasets); its stdout, or an error naming the command and what it said.
    async fn run(&self, args: &[&str]) -> Result<String, Error> {
        let cmd = format!("zfs {}", args.join(" "));
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _turn = self.turn(args[0], &cmd, deadline).await?;
        let mut child = Command::new("zfs")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| helper(format!("cannot run zfs: {e}")))?;
        let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
        let read = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            if let (Some(o), Some(e)) = (stdout.as_mut(), stderr.as_mut()) {
                let _ = tokio::join!(o.read_to_end(&mut out), e.read_to_end(&mut err));
            }
            let status = child.wait().await;
            (status, out, err)
        };
        let (status, out, err) = match tokio::time::timeout_at(deadline, read).await {
            Ok(done) => done,
            Err(_) => {
                self.gate.reap(cmd.clone(), child);
                return Err(helper(format!(
                    "{cmd} did not finish in {:?} (--zfs-timeout-s); it was killed",
                    self.timeout
                )));
            }
        };
        let status = status.map_err(|e| helper(format!("{cmd}: {e}")))?;
        if !status.success() {
            return Err(helper(format!(
                "{cmd}: {}",
                String::from_utf8_lossy(&err).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Wait for this command's turn: at once for a read, or with the kernel module; behind the
    /// pool's other changes on zfs-fuse. Fails at once while a killed command has not exited,
    /// and when the turn does not come before `deadline`.
    async fn turn(
        &self,
        subcommand: &str,
        cmd: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, Error> {
        self.gate.check_stuck()?;
        let Some(serial) = self
            .gate
            .serial
            .as_ref()
            .filter(|_| changes_datasets(subcommand))
        else {
            return Ok(None);
        };
        let guard = tokio::time::timeout_at(deadline, serial.lock())
            .await
            .map_err(|_| {
                helper(format!(
                    "{cmd} waited {:?} (--zfs-timeout-s) for the pool's other zfs commands, \
                     which zfs-fuse runs one at a time",
                    self.timeout
                ))
            })?;
        // The command before it may have been killed while this one waited.
        self.gate.check_stuck()?;
        Ok(Some(guard))
    }

    /// Properties of `target` and everything below it (snapshots included), by name. zfs-fuse's
    /// `zfs list` has no `-p`, so `zfs get -H -p` (exact numbers) it is.
    async fn props(
        &self,
        target: &str,
    ) -> Result<BTreeMap<String, HashMap<String, String>>, Error> {
        let out = self
            .run(&[
                "get",
                "-H",
                "-p",
                "-r",
                "-o",
                "name,property,value",
                "type,mountpoint,creation,used,readonly,guid,createtxg,luastrip:readonly,luastrip:epoch",
                target,
            ])
            .await?;
        let mut all: BTreeMap<String, HashMap<String, String>> = BTreeMap::new();
        for line in out.lines() {
            let mut f = line.splitn(3, '\t');
            if let (Some(name), Some(prop), Some(value)) = (f.next(), f.next(), f.next()) {
                all.entry(name.to_string())
                    .or_default()
                    .insert(prop.to_string(), value.to_string());
            }
        }
        Ok(all)
    }

    /// The volumes below the root (or just `dataset`).
    async fn volumes(&self, dataset: Option<&str>) -> Result<Vec<BackendVolume>, Error> {
        let all = self.props(dataset.unwrap_or(&self.root)).await?;
        let prefix = format!("{}/", self.root);
        Ok(all
            .iter()
            .filter(|(_, p)| p.get("type").map(String::as_str) == Some("filesystem"))
            .filter_map(|(ds, p)| {
                let name = ds.strip_prefix(&prefix)?;
                let num = |k: &str| p.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                Some(BackendVolume {
                    name: VolumeName::parse(name).ok()?,
                    id: ds.to_string(),
                    mountpoint: PathBuf::from(p.get("mountpoint")?),
                    created: num("creation"),
                    used: num("used"),
                    // zfs-fuse shows `readonly` as "off" (source "temporary") while it is in
                    // force, so the backend records what it set in a user property.
                    read_only: match p.get("luastrip:readonly").map(String::as_str) {
                        Some("on") => true,
                        Some("off") => false,
                        _ => p.get("readonly").map(String::as_str) == Some("on"),
                    },
                    // Unset shows as "-".
                    epoch: p.get("luastrip:epoch").and_then(|e| e.parse().ok()),
                })
            })
            .collect())
    }
}

impl Zfs {
    /// Unmount `dataset` (if mounted) and mount it again. Right after an unmount, zfs-fuse may
    /// still call the mountpoint busy for a moment (the FUSE unmount finishes after the command
    /// returns): the mount is tried again until it succeeds, for at most 10 s.
    async fn remount(&self, dataset: &str) -> Result<(), Error> {
        match self.run(&["unmount", dataset]).await {
            Err(Error::Helper { reason, .. }) if reason.contains("not currently mounted") => {}
            other => {
                other?;
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.run(&["mount", dataset]).await {
                Err(Error::Helper { reason, .. })
                    if reason.contains("busy") && tokio::time::Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other.map(|_| ()),
            }
        }
    }
}

impl VolumeBackend for Zfs {
    fn kind(&self) -> &'static str {
        "zfs"
    }

    fn create<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, (BackendVolume, bool)> {
        Box::pin(async move {
            if let Some(v) = self.get(name).await? {
                return Ok((v, false));
            }
            let made = self.run(&["create", &self.dataset(name)]).await;
            // Lost a race with another call creating it: that is the same volume.
            let v = self.get(name).await?;
            match (v, made) {
                (Some(v), _) => Ok((v, true)),
                (None, Err(e)) => Err(e),
                (None, Ok(_)) => Err(helper(format!(
                    "{} vanished after create",
                    self.dataset(name)
                ))),
            }
        })
    }

    fn get<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, Option<BackendVolume>> {
        Box::pin(async move {
            let dataset = self.dataset(name);
            match self.volumes(Some(&dataset)).await {
                Ok(mut v) => Ok(v.pop()),
                Err(Error::Helper { reason, .. }) if reason.contains("does not exist") => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn list(&self) -> BackendFuture<'_, Vec<BackendVolume>> {
        Box::pin(async move { self.volumes(None).await })
    }

    fn snapshot<'a>(&'a self, name: &'a VolumeName, tag: &'a Tag) -> BackendFuture<'a, Snapshot> {
        Box::pin(async move {
            let snap = format!("{}@{}", self.dataset(name), tag);
            self.run(&["snapshot", &snap]).await?;
            self.snapshots(name)
                .await?
                .into_iter()
                .find(|s| s.tag == tag.as_str())
                .ok_or_else(|| helper(format!("{snap} vanished after snapshot")))
        })
    }

    fn snapshots<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, Vec<Snapshot>> {
        Box::pin(async move {
            let dataset = self.dataset(name);
            let prefix = format!("{dataset}@");
            let mut snaps: Vec<(u64, Snapshot)> = self
                .props(&dataset)
                .await?
                .into_iter()
                .filter_map(|(snap, p)| {
                    let tag = snap.strip_prefix(&prefix)?.to_string();
                    let num = |k: &str| p.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                    Some((
                        num("createtxg"),
                        Snapshot {
                            tag,
                            guid: p.get("guid")?.clone(),
                            created: num("creation"),
                            used: num("used"),
                        },
                    ))
                })
                .collect();
            // Oldest first: by transaction group, which orders snapshots taken in one second.
            snaps.sort_by_key(|(txg, _)| *txg);
            Ok(snaps.into_iter().map(|(_, s)| s).collect())
        })
    }

    fn rollback<'a>(
        &'a self,
        name: &'a VolumeName,
        tag: &'a Tag,
        destroy_newer: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let snap = format!("{}@{}", self.dataset(name), tag);
            let mut args = vec!["rollback"];
            if destroy_newer {
                args.push("-r");
            }
            args.push(&snap);
            self.run(&args).await.map(|_| ())
        })
    }

    fn set_read_only<'a>(&'a self, name: &'a VolumeName, on: bool) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let dataset = self.dataset(name);
            let (prop, mark) = if on {
                ("readonly=on", "luastrip:readonly=on")
            } else {
                ("readonly=off", "luastrip:readonly=off")
            };
            self.run(&["set", prop, &dataset]).await?;
            self.run(&["set", mark, &dataset]).await.map(|_| ())
        })
    }

    fn set_epoch<'a>(&'a self, name: &'a VolumeName, epoch: u64) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let dataset = self.dataset(name);
            self.run(&["set", &format!("luastrip:epoch={epoch}"), &dataset])
                .await
                .map(|_| ())
        })
    }

    fn send<'a>(
        &'a self,
        name: &'a VolumeName,
        since: Option<&'a Tag>,
        to: &'a Tag,
    ) -> BackendFuture<'a, ByteStream> {
        Box::pin(async move {
            let dataset = self.dataset(name);
            let to = format!("{dataset}@{to}");
            let mut cmd = Command::new("zfs");
            cmd.arg("send");
            if let Some(since) = since {
                cmd.args(["-i", &format!("{dataset}@{since}")]);
            }
            let mut child = cmd
                .arg(&to)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| helper(format!("cannot run zfs send: {e}")))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| helper("zfs send has no output"))?;
            Ok(ByteStream::new(stdout, child, format!("zfs send {to}")))
        })
    }

    fn receive<'a>(
        &'a self,
        name: &'a VolumeName,
        mut stream: Box<dyn AsyncRead + Send + Unpin + 'a>,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let dataset = self.dataset(name);
            // The stream's first record says what it is, before zfs sees any of it (and before
            // the pool's turn is taken: a refused or stalled stream holds nothing up).
            let mut begin = [0u8; BEGIN_CHECKED];
            stream
                .read_exact(&mut begin)
                .await
                .map_err(|e| helper(format!("zfs recv {dataset}: the stream broke: {e}")))?;
            check_stream_begin(&begin)
                .map_err(|why| helper(format!("zfs recv {dataset}: {why}")))?;
            let mut stream = std::io::Cursor::new(begin).chain(stream);
            // A receive creates and mounts the dataset: on zfs-fuse, the pool's other changes
            // wait for it (its stream is bounded by the peer's, not by --zfs-timeout-s).
            let cmd = format!("zfs recv {dataset}");
            let turn = self
                .turn("recv", &cmd, tokio::time::Instant::now() + self.timeout)
                .await?;
            // No -F: a copy here that changed since the snapshot the stream starts from (ours are
            // read-only, so it did not) fails the receive instead of being rolled back in silence.
            let mut child = Command::new("zfs")
                .args(["recv", &dataset])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| helper(format!("cannot run zfs recv: {e}")))?;
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| helper("zfs recv has no input"))?;
            let copied = tokio::io::copy(&mut stream, &mut stdin).await;
            drop(stdin);
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| helper(format!("zfs recv {dataset}: {e}")))?;
            copied.map_err(|e| helper(format!("zfs recv {dataset}: the stream broke: {e}")))?;
            if !out.status.success() {
                return Err(helper(format!(
                    "zfs recv {dataset}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            drop(turn);
            // Mount it afresh: zfs-fuse leaves the kernel's cache of the old files in place
            // after an incremental receive, so readers would see the data from before it.
            self.remount(&dataset).await
        })
    }

    fn destroy_snapshot<'a>(&'a self, name: &'a VolumeName, tag: &'a Tag) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let snap = format!("{}@{}", self.dataset(name), tag);
            self.run(&["destroy", &snap]).await.map(|_| ())
        })
    }

    fn hold<'a>(&'a self, name: &'a VolumeName, tag: &'a Tag, on: bool) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let snap = format!("{}@{}", self.dataset(name), tag);
            let verb = if on { "hold" } else { "release" };
            match self.run(&[verb, HOLD_TAG, &snap]).await {
                Ok(_) => Ok(()),
                // Already held / not held: the state asked for is there.
                Err(Error::Helper { reason, .. })
                    if reason.contains("tag already exists") || reason.contains("no such tag") =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    }

    fn destroy<'a>(&'a self, name: &'a VolumeName) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let dataset = self.dataset(name);
            // A held snapshot (a push base) would keep the destroy from happening.
            for s in self.snapshots(name).await? {
                if let Ok(tag) = Tag::parse(&s.tag) {
                    self.hold(name, &tag, false).await?;
                }
            }
            // Unmounting fails while anything has the mountpoint open; a container removed a
            // moment ago can leave it busy for a little while (seen with zfs-fuse).
            let mut tries = 0;
            loop {
                match self.run(&["destroy", "-r", &dataset]).await {
                    Err(Error::Helper { reason, .. })
                        if reason.contains("is busy") && tries < 15 =>
                    {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => return other.map(|_| ()),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 56 bytes of real zfs-fuse streams (`zfs send`, `send -i`, `send -p`, `send -R`).
    fn begin(hex: &str) -> [u8; BEGIN_CHECKED] {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut b = [0u8; BEGIN_CHECKED];
        b[..bytes.len()].copy_from_slice(&bytes);
        b
    }

    #[test]
    fn only_plain_streams_without_properties_are_received() {
        let full = "0000000000000000accbbaf5020000000100000000000000ca54156b00000000";
        let incremental = "0000000000000000accbbaf50200000001000000000000008067";
        let with_props = "0000000024020000accbbaf5020000000200000000000000";
        let replicated = "0000000000020000accbbaf5020000000200000000000000";
        assert_eq!(check_stream_begin(&begin(full)), Ok(()));
        assert_eq!(check_stream_begin(&begin(incremental)), Ok(()));
        for refused in [with_props, replicated] {
            let e = check_stream_begin(&begin(refused)).unwrap_err();
            assert!(e.contains("carries the dataset's properties"), "{e}");
        }
        // A compound header spelt without a payload is refused all the same.
        let e = check_stream_begin(&begin("0000000000000000accbbaf5020000000200000000000000"))
            .unwrap_err();
        assert!(e.contains("properties"), "{e}");
        assert!(
            check_stream_begin(&begin("00000000000000000000000000000000"))
                .unwrap_err()
                .contains("not a zfs replication stream")
        );
        assert!(
            check_stream_begin(&begin("000000000000000000000002f5bacbac"))
                .unwrap_err()
                .contains("other byte order")
        );
    }
}
