//! The embedded cluster store: records in memory, saved to one JSON file after every write
//! (written to a temporary file, synced, then renamed over, so a crash leaves the old file or the
//! new one, never half of one). Good for one host, or for hosts that share nothing yet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Cluster, ClusterError, ClusterFuture, Record};

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    revision: u64,
    records: BTreeMap<String, SavedRecord>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SavedRecord {
    value: Value,
    revision: u64,
}

pub struct LocalCluster {
    path: Option<PathBuf>,
    state: Mutex<Saved>,
}

impl LocalCluster {
    /// A store kept only in memory (tests, `luastrip check`).
    pub fn memory() -> Self {
        LocalCluster {
            path: None,
            state: Mutex::new(Saved::default()),
        }
    }

    /// The store saved at `path`, created empty if the file does not exist.
    pub fn open(path: &Path) -> Result<Self, ClusterError> {
        let saved = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ClusterError::Store(format!("{} is not a cluster file: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(ClusterError::Store(format!("{}: {e}", path.display()))),
        };
        Ok(LocalCluster {
            path: Some(path.to_path_buf()),
            state: Mutex::new(saved),
        })
    }

    /// Run `change` on the state; if it succeeds, bump the revision and save. The lock is held
    /// throughout, so the compare and the write are one step.
    fn write<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, SavedRecord>, u64) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let next = state.revision + 1;
        let mut records = state.records.clone();
        let out = change(&mut records, next)?;
        if let Some(path) = &self.path {
            let saved = Saved {
                revision: next,
                records: records.clone(),
            };
            save(path, &saved)
                .map_err(|e| ClusterError::Store(format!("{}: {e}", path.display())))?;
        }
        state.revision = next;
        state.records = records;
        Ok(out)
    }

    fn current(&self, key: &str) -> Option<Record> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.records.get(key).map(record)
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
        Box::pin(async move { Ok(self.current(key)) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> ClusterFuture<'a, Vec<(String, Record)>> {
        Box::pin(async move {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            Ok(state
                .records
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, r)| (k.clone(), record(r)))
                .collect())
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Value) -> ClusterFuture<'a, u64> {
        Box::pin(async move {
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
                    },
                );
                Ok(next)
            })
        })
    }

    fn swap<'a>(&'a self, key: &'a str, value: Value, revision: u64) -> ClusterFuture<'a, u64> {
        Box::pin(async move {
            self.write(|records, next| match records.get_mut(key) {
                Some(r) if r.revision == revision => {
                    *r = SavedRecord {
                        value,
                        revision: next,
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
        std::fs::write(&path, "{not json").unwrap();
        let e = LocalCluster::open(&path).err().unwrap().to_string();
        assert!(e.contains("is not a cluster file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
