//! The embedded cluster store: one JSON file, read and written under an exclusive `flock` for
//! every operation (written to a temporary file, synced, then renamed over, so a crash leaves the
//! old file or the new one, never half of one). Gateways on one machine that share the file agree
//! on every record; hosts that share no file need the distributed store (etcd).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Cluster, ClusterError, ClusterFuture, Lease, Record};

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    revision: u64,
    records: BTreeMap<String, SavedRecord>,
    /// Live leases: their TTL and when they expire (milliseconds since the epoch).
    #[serde(default)]
    leases: BTreeMap<i64, SavedLease>,
    #[serde(default)]
    next_lease: i64,
}

#[derive(Clone, Serialize, Deserialize)]
struct SavedRecord {
    value: Value,
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<i64>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
struct SavedLease {
    ttl_ms: u64,
    expires_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Saved {
    /// Drop expired leases and their records; whether anything went.
    fn expire(&mut self) -> bool {
        let now = now_ms();
        let before = (self.leases.len(), self.records.len());
        self.leases.retain(|_, l| l.expires_ms > now);
        let leases = &self.leases;
        self.records
            .retain(|_, r| r.lease.is_none_or(|id| leases.contains_key(&id)));
        before != (self.leases.len(), self.records.len())
    }
}

pub struct LocalCluster {
    path: Option<PathBuf>,
    /// The store itself without a file; with one, it serialises this process's own callers.
    memory: Mutex<Saved>,
}

impl LocalCluster {
    /// A store kept only in memory (tests, `luastrip check`).
    pub fn memory() -> Self {
        LocalCluster {
            path: None,
            memory: Mutex::new(Saved::default()),
        }
    }

    /// The store saved at `path` (created empty on the first write). A file that is not a
    /// cluster file is refused now, not at the first call.
    pub fn open(path: &Path) -> Result<Self, ClusterError> {
        let c = LocalCluster {
            path: Some(path.to_path_buf()),
            memory: Mutex::new(Saved::default()),
        };
        c.read(path)?;
        Ok(c)
    }

    fn read(&self, path: &Path) -> Result<Saved, ClusterError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ClusterError::Store(format!("{} is not a cluster file: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(ClusterError::Store(format!("{}: {e}", path.display()))),
        }
    }

    /// Run `f` on the store as it is now. With a file, under an exclusive `flock` of
    /// `FILE.lock` (so gateways sharing the file see each other's writes and their compares
    /// and writes never interleave), reading the file first and saving it if `f` changed it.
    fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Saved) -> Result<(T, bool), ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut mem = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            mem.expire();
            return f(&mut mem).map(|(out, _)| out);
        };
        let store_err = |e: std::io::Error| ClusterError::Store(format!("{}: {e}", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("lock"))
            .map_err(store_err)?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| store_err(e.into()))?;
        let mut saved = self.read(path)?;
        let expired = saved.expire();
        let (out, changed) = f(&mut saved)?;
        if changed || expired {
            save(path, &saved).map_err(store_err)?;
        }
        Ok(out)
    }

    /// A write: `change` gets the records and the revision the write will have.
    fn write<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, SavedRecord>, u64) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        self.with_store(|saved| {
            let next = saved.revision + 1;
            let out = change(&mut saved.records, next)?;
            saved.revision = next;
            Ok((out, true))
        })
    }

    /// Create `key` (under `lease`, if any) unless it exists.
    fn insert_new(&self, key: &str, value: Value, lease: Option<i64>) -> Result<u64, ClusterError> {
        self.write(|records, next| {
            if let Some(r) = records.get(key) {
                return Err(ClusterError::Conflict {
                    key: key.into(),
                    current: Some(record(r)),
                });
            }
            records.insert(
                key.into(),
                SavedRecord {
                    value,
                    revision: next,
                    lease,
                },
            );
            Ok(next)
        })
    }

    fn current(&self, key: &str) -> Result<Option<Record>, ClusterError> {
        self.with_store(|saved| Ok((saved.records.get(key).map(record), false)))
    }
}

fn record(r: &SavedRecord) -> Record {
    Record {
        value: r.value.clone(),
        revision: r.revision,
    }
}

fn save(path: &Path, saved: &Saved) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(saved)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Cluster for LocalCluster {
    fn get<'a>(&'a self, key: &'a str) -> ClusterFuture<'a, Option<Record>> {
        Box::pin(async move { self.current(key) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> ClusterFuture<'a, Vec<(String, Record)>> {
        Box::pin(async move {
            self.with_store(|saved| {
                let found = saved
                    .records
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, r)| (k.clone(), record(r)))
                    .collect();
                Ok((found, false))
            })
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Value) -> ClusterFuture<'a, u64> {
        Box::pin(async move { self.insert_new(key, value, None) })
    }

    fn swap<'a>(&'a self, key: &'a str, value: Value, revision: u64) -> ClusterFuture<'a, u64> {
        Box::pin(async move {
            self.write(|records, next| match records.get_mut(key) {
                Some(r) if r.revision == revision => {
                    *r = SavedRecord {
                        value,
                        revision: next,
                        lease: r.lease,
                    };
                    Ok(next)
                }
                other => Err(ClusterError::Conflict {
                    key: key.into(),
                    current: other.map(|r| record(r)),
                }),
            })
        })
    }

    fn grant(&self, ttl: std::time::Duration) -> ClusterFuture<'_, Lease> {
        Box::pin(async move {
            self.with_store(|saved| {
                saved.next_lease += 1;
                let id = saved.next_lease;
                let ttl_ms = ttl.as_millis() as u64;
                saved.leases.insert(
                    id,
                    SavedLease {
                        ttl_ms,
                        expires_ms: now_ms() + ttl_ms,
                    },
                );
                Ok((Lease(id), true))
            })
        })
    }

    fn keep_alive(&self, lease: Lease) -> ClusterFuture<'_, bool> {
        Box::pin(async move {
            self.with_store(|saved| match saved.leases.get_mut(&lease.0) {
                Some(l) => {
                    l.expires_ms = now_ms() + l.ttl_ms;
                    Ok((true, true))
                }
                None => Ok((false, false)),
            })
        })
    }

    fn create_leased<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        lease: Lease,
    ) -> ClusterFuture<'a, u64> {
        Box::pin(async move { self.insert_new(key, value, Some(lease.0)) })
    }

    fn revoke(&self, lease: Lease) -> ClusterFuture<'_, ()> {
        Box::pin(async move {
            self.with_store(|saved| {
                saved.leases.remove(&lease.0);
                saved.expire();
                Ok(((), true))
            })
        })
    }

    fn delete<'a>(&'a self, key: &'a str, revision: u64) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            self.write(|records, _| match records.get(key) {
                Some(r) if r.revision == revision => {
                    records.remove(key);
                    Ok(())
                }
                other => Err(ClusterError::Conflict {
                    key: key.into(),
                    current: other.map(record),
                }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn create_if_absent_and_swap_if_revision() {
        let c = LocalCluster::memory();
        let r1 = c.create("volumes/db", json!({"owner": "a"})).await.unwrap();
        // A second create loses, and is told what is there.
        match c.create("volumes/db", json!({"owner": "b"})).await {
            Err(ClusterError::Conflict {
                current: Some(r), ..
            }) => {
                assert_eq!(r.value["owner"], "a");
                assert_eq!(r.revision, r1);
            }
            other => panic!("{other:?}"),
        }
        let r2 = c
            .swap("volumes/db", json!({"owner": "b"}), r1)
            .await
            .unwrap();
        assert!(r2 > r1);
        // A swap from a stale read loses.
        assert!(matches!(
            c.swap("volumes/db", json!({"owner": "c"}), r1).await,
            Err(ClusterError::Conflict { .. })
        ));
        c.create("volumes/other", json!(1)).await.unwrap();
        c.create("volumesX", json!(1)).await.unwrap();
        let listed = c.list("volumes/").await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(c.delete("volumes/db", r1).await.is_err());
        c.delete("volumes/db", r2).await.unwrap();
        assert_eq!(c.get("volumes/db").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_file_survives_a_restart_and_a_bad_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("luastrip-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.json");
        let _ = std::fs::remove_file(&path);
        let rev = {
            let c = LocalCluster::open(&path).unwrap();
            c.create("volumes/db", json!({"owner": "a"})).await.unwrap()
        };
        let c = LocalCluster::open(&path).unwrap();
        let r = c.get("volumes/db").await.unwrap().unwrap();
        assert_eq!((r.value["owner"].as_str(), r.revision), (Some("a"), rev));
        // Revisions keep counting up after a restart.
        assert!(c.create("volumes/x", json!(1)).await.unwrap() > rev);
        // Two stores on one file (two gateways on one machine) agree.
        let other = LocalCluster::open(&path).unwrap();
        assert!(matches!(
            other.create("volumes/db", json!({"owner": "b"})).await,
            Err(ClusterError::Conflict { .. })
        ));
        let r = other.get("volumes/db").await.unwrap().unwrap();
        other
            .swap("volumes/db", json!({"owner": "b"}), r.revision)
            .await
            .unwrap();
        assert_eq!(
            c.get("volumes/db").await.unwrap().unwrap().value["owner"],
            "b"
        );
        assert!(c
            .swap("volumes/db", json!({"owner": "c"}), r.revision)
            .await
            .is_err());
        std::fs::write(&path, "{not json").unwrap();
        let e = LocalCluster::open(&path).err().unwrap().to_string();
        assert!(e.contains("is not a cluster file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
