//! Hot reload: scripts reload when their files change ([`watch`]), on `SIGHUP` ([`on_sighup`])
//! and on the REPL's `reload`; all of them call [`Engine::reload`], which serialises them.
//!
//! Editors save in bursts (write, rename, chmod), so changes are debounced: the reload happens
//! once the scripts have been quiet for [`QUIET`]. A reload that fails keeps the old routes
//! serving and logs the error with `file:line`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tracing::{error, info};

use super::Engine;

/// How long the scripts must be quiet before a reload.
pub const QUIET: Duration = Duration::from_millis(250);

/// Watch `root` (a script file or a directory of scripts) and reload `engine` on changes, until
/// `stop` turns true. Fails at once if the directory cannot be watched; otherwise returns the
/// service to run (a background service of `serve::run`).
pub fn watch(
    engine: Arc<Engine>,
    root: &Path,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> notify::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    // A single file is usually replaced by a rename on save: watch its directory.
    let (dir, only, mode): (PathBuf, Option<PathBuf>, RecursiveMode) = if root.is_dir() {
        // Recursive: modules `require`d from subdirectories reload the scripts too.
        (root.to_path_buf(), None, RecursiveMode::Recursive)
    } else {
        let dir = root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (
            dir.to_path_buf(),
            Some(root.to_path_buf()),
            RecursiveMode::NonRecursive,
        )
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|p| match &only {
            Some(file) => p.file_name() == file.file_name(),
            None => p.extension().is_some_and(|x| x == "lua"),
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, mode)?;
    Ok(async move {
        // The watcher lives as long as the service.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                    // Debounce: wait until nothing changed for QUIET.
                    while let Ok(Some(())) = tokio::time::timeout(QUIET, rx.recv()).await {}
                    match engine.reload().await {
                        Ok(n) => info!(routes = n, "scripts changed on disk; reloaded"),
                        Err(e) => {
                            error!(error = %e, "reload failed; the previous scripts keep serving")
                        }
                    }
                }
            }
        }
    })
}
/// Reload on every `SIGHUP` until `stop` turns true; a failing reload keeps the old routes.
pub async fn on_sighup(
    engine: Arc<Engine>,
    mut hup: tokio::signal::unix::Signal,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        tokio::select! {
            _ = stop.changed() => {}
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                match engine.reload().await {
                    Ok(n) => info!(routes = n, "scripts reloaded on SIGHUP"),
                    Err(e) => error!(error = %e, "reload failed; the previous scripts keep serving"),
                }
            }
        }
    }
}
