//! Reading route scripts: a file, or every `*.lua` in a directory in name order (but
//! `*_test.lua`, which `luastrip test` runs), and the checked
//! `adapters.yml` (whose chains run after the scripts' hooks).

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Script sources, in load order, and the checked `adapters.yml`.
#[derive(Debug, Clone)]
pub struct Scripts {
    /// The `--scripts` path, for reloads; `None` with only `--powerstrip-config`.
    pub root: Option<PathBuf>,
    pub files: Vec<(PathBuf, String)>,
    /// Adapter chains from `--powerstrip-config`; they run after the scripts' hooks.
    pub adapters: Option<crate::powerstrip::config::Config>,
}

impl Scripts {
    /// Read a file, or every `*.lua` in a directory in name order, and the adapters file.
    pub fn read(root: Option<&Path>, adapters: Option<&Path>) -> Result<Scripts, Error> {
        let adapters = match adapters {
            Some(path) => {
                Some(
                    crate::powerstrip::config::load(path).map_err(|reason| Error::Script {
                        location: path.display().to_string(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        let Some(root) = root else {
            return Ok(Scripts {
                root: None,
                files: Vec::new(),
                adapters,
            });
        };
        let err = |path: &Path, e: std::io::Error| Error::Script {
            location: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        };
        let meta = std::fs::metadata(root).map_err(|e| err(root, e))?;
        let mut paths = Vec::new();
        if meta.is_dir() {
            for entry in std::fs::read_dir(root).map_err(|e| err(root, e))? {
                let p = entry.map_err(|e| err(root, e))?.path();
                // `*_test.lua` files are `luastrip test`'s, never route scripts.
                let test = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with("_test.lua"));
                if p.extension().is_some_and(|x| x == "lua") && p.is_file() && !test {
                    paths.push(p);
                }
            }
            paths.sort();
            // An empty (or mistyped) directory would quietly mean no policy at all.
            if paths.is_empty() {
                return Err(Error::Script {
                    location: root.display().to_string(),
                    reason: "no *.lua scripts in this directory (a gateway serving it would \
                             check nothing)"
                        .into(),
                });
            }
        } else {
            paths.push(root.to_path_buf());
        }
        let mut files = Vec::new();
        for p in paths {
            let src = std::fs::read_to_string(&p).map_err(|e| err(&p, e))?;
            files.push((p, src));
        }
        Ok(Scripts {
            root: Some(root.to_path_buf()),
            files,
            adapters,
        })
    }
}

impl Scripts {
    /// The directory `require` resolves modules in: the scripts directory, or the directory of
    /// a single script file.
    pub fn dir(&self) -> PathBuf {
        match &self.root {
            Some(root) if root.is_dir() => root.clone(),
            Some(root) => root
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            None => PathBuf::from("."),
        }
    }
}
