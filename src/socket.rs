//! Unix sockets that appear only when they are ready: the listen socket, the control socket and
//! the plugin sockets; and [`serve_http`], the accept loop of luastrip's own small HTTP APIs.
//!
//! [`bind`] binds inside a private (0700) directory, sets mode and group, then renames the socket
//! into place, so no client — no other uid above all — ever reaches a socket with the wrong
//! permissions or one nobody accepts on. A socket file left by a crashed run is replaced; one
//! that a live process answers on is refused. Dropping the [`Listener`] removes its socket (not
//! a successor's). [`from_systemd`] takes the listen socket systemd made instead (socket
//! activation), which stays systemd's: it exists before the gateway starts and after it stops.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::info;

#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub path: PathBuf,
    /// Permission bits of the socket file, e.g. `0o660`.
    pub mode: u32,
    /// Group name or numeric gid to own the socket (e.g. `docker`); `None` keeps ours.
    pub group: Option<String>,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "{path} is in use: a running process answers on it (stop it, or choose another --listen)"
    )]
    InUse { path: String },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
    #[error("no such group {0:?} for --socket-group")]
    NoGroup(String),
    #[error("socket activation: {0}")]
    Activation(String),
    #[error("cannot set up {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A bound, ready listen socket. Dropping it removes the socket file if it is still ours.
pub struct Listener {
    /// A std listener, so that every worker runtime can register its own clone.
    inner: std::os::unix::net::UnixListener,
    path: PathBuf,
    /// Inode of our socket file, so we never remove a successor's socket; `None` for a socket
    /// systemd made, which is never ours to remove.
    ino: Option<u64>,
}

impl Listener {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bound socket, for a server that accepts on it itself (the control socket).
    pub fn std_listener(&self) -> &std::os::unix::net::UnixListener {
        &self.inner
    }

    /// Whether systemd passed this socket (socket activation).
    pub fn activated(&self) -> bool {
        self.ino.is_none()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(ino) = self.ino {
            if std::fs::metadata(&self.path).map(|m| m.ino()).ok() == Some(ino) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: std::os::fd::RawFd = 3;

/// Why a socket systemd passed cannot serve.
fn activation_error(reason: String) -> BindError {
    BindError::Activation(reason)
}

/// The listen socket systemd passed to this process (socket activation: `LISTEN_PID` names this
/// process and `LISTEN_FDS` counts the sockets from descriptor 3), or `None` when it passed
/// none. It must be exactly one listening Unix stream socket (one `ListenStream=` path in the
/// `.socket` unit); its mode and group are the unit's `SocketMode=` and `SocketGroup=`.
pub fn from_systemd() -> Result<Option<Listener>, BindError> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
    use std::os::fd::{BorrowedFd, FromRawFd};
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (a parent that did not clear it).
        return Ok(None);
    }
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    match count.trim().parse::<u32>() {
        Ok(1) => {}
        Ok(0) => return Ok(None),
        _ => {
            return Err(activation_error(format!(
                "systemd passed LISTEN_FDS={count:?}; luastrip takes exactly one socket (one \
                 ListenStream= path in the .socket unit)"
            )))
        }
    }
    let fd = LISTEN_FDS_START;
    // SAFETY: systemd hands descriptor 3 to this process (LISTEN_PID is ours); it stays open
    // for the process's life and is only borrowed here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind = getsockopt(&borrowed, sockopt::SockType)
        .map_err(|e| activation_error(format!("descriptor 3 is not a socket: {e}")))?;
    let listening = getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false);
    let addr: UnixAddr = getsockname(fd).map_err(|e| {
        activation_error(format!(
            "the socket systemd passed is not a Unix socket: {e}"
        ))
    })?;
    let Some(path) = addr.path().map(Path::to_path_buf) else {
        return Err(activation_error(
            "the socket systemd passed has no path (use ListenStream=/path/to.sock)".into(),
        ));
    };
    if kind != SockType::Stream || !listening {
        return Err(activation_error(format!(
            "the socket systemd passed ({}) is not a listening stream socket",
            path.display()
        )));
    }
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| activation_error(format!("{}: {e}", path.display())))?;
    // SAFETY: the descriptor is the listening Unix socket checked above; from here on the
    // listener owns it, and nothing else closes it.
    let inner = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    inner
        .set_nonblocking(true)
        .map_err(|source| BindError::Io {
            path: path.display().to_string(),
            source,
        })?;
    info!(path = %path.display(), "serving on the socket systemd passed");
    Ok(Some(Listener {
        inner,
        path,
        ino: None,
    }))
}

/// Tell systemd how the service is doing (`READY=1`, `STOPPING=1`), when it asked
/// (`NOTIFY_SOCKET`, for `Type=notify` units); otherwise nothing. Failures are only logged: the
/// gateway serves either way.
pub fn notify_systemd(state: &str) {
    let Some(to) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = to.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &to)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// `--socket-group` when none is given: `docker` where that group exists, as dockerd's own
/// socket has it, so that the members of the docker group can use luastrip as they used
/// docker.sock.
pub fn default_group() -> Option<String> {
    match nix::unistd::Group::from_name("docker") {
        Ok(Some(_)) => Some("docker".into()),
        _ => None,
    }
}

/// Bind the listen socket (see the module docs).
pub fn bind(opts: &ListenOptions) -> Result<Listener, BindError> {
    let path = &opts.path;
    let shown = path.display().to_string();
    let io_err = |source| BindError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket { path: shown })
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse { path: shown }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                info!(path = %shown, "replacing a stale socket left by an earlier run");
            }
            Err(e) => return Err(io_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let gid = match &opts.group {
        None => None,
        Some(g) => Some(lookup_group(g)?),
    };
    // Bound inside a private (0700) directory beside the final path: no other uid can connect
    // while the socket still has the default mode; it is renamed into place once its mode and
    // group are right (the same filesystem, so the rename is atomic).
    let private = private_dir(path).map_err(io_err)?;
    let tmp = private.join("socket");
    let made = (|| {
        let inner = std::os::unix::net::UnixListener::bind(&tmp)?;
        inner.set_nonblocking(true)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opts.mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        std::fs::rename(&tmp, path)?;
        let ino = std::fs::metadata(path).map(|m| m.ino())?;
        Ok((inner, Some(ino)))
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    match made {
        Ok((inner, ino)) => Ok(Listener {
            inner,
            path: path.clone(),
            ino,
        }),
        Err(e) => Err(io_err(e)),
    }
}

/// A fresh directory beside `path`, mode 0700 from its creation.
fn private_dir(path: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = parent.join(format!(".{name}.{}.bind", std::process::id()));
    let _ = std::fs::remove_file(dir.join("socket"));
    let _ = std::fs::remove_dir(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn lookup_group(group: &str) -> Result<u32, BindError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(BindError::NoGroup(group.to_string())),
    }
}

/// A listener [`serve_http`] accepts on: a Unix or a TCP socket.
pub trait Accept: Send + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// Who connected (TCP: the peer's address).
    type Peer: Clone + Send + 'static;
    fn accept(
        &self,
    ) -> impl std::future::Future<Output = io::Result<(Self::Stream, Self::Peer)>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Peer = ();
    async fn accept(&self) -> io::Result<(Self::Stream, ())> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(s, _)| (s, ()))
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Peer = std::net::SocketAddr;
    async fn accept(&self) -> io::Result<(Self::Stream, std::net::SocketAddr)> {
        let (s, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, peer))
    }
}

/// Serve `handler` over HTTP/1 on `listener` until `stop` turns true: the control socket, the
/// plugin sockets and the peer API (the Docker listen socket has its own driver, `serve`). A
/// failed accept (out of descriptors) is logged and backed off, never spun on.
pub async fn serve_http<L, H, F, B>(
    what: &'static str,
    listener: L,
    handler: H,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    L: Accept,
    H: Fn(http::Request<hyper::body::Incoming>, L::Peer) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_http_opened(what, listener, |s| std::future::ready(Ok(s)), handler, stop).await
}

/// [`serve_http`], with each accepted connection made ready by `open` (a TLS handshake) in its
/// own task first, so that a slow client never holds up the next accept. A connection `open`
/// fails is logged and closed.
pub async fn serve_http_opened<L, O, OF, S, H, F, B>(
    what: &'static str,
    listener: L,
    open: O,
    handler: H,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    L: Accept,
    O: Fn(L::Stream) -> OF + Send + Sync + 'static,
    OF: std::future::Future<Output = io::Result<S>> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(http::Request<hyper::body::Incoming>, L::Peer) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handler = std::sync::Arc::new(handler);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let handler = handler.clone();
                    let opening = open(stream);
                    tokio::spawn(async move {
                        let stream = match opening.await {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::info!(socket = what, error = %e, "a connection was refused");
                                return;
                            }
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let answer = handler(req, peer.clone());
                            async move { Ok::<_, std::convert::Infallible>(answer.await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(e) => {
                    tracing::warn!(socket = what, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_bound_in_a_private_directory_and_renamed_into_place() {
        let dir = std::env::temp_dir().join(format!("luastrip-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let private = private_dir(&path).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{private:?}");
        std::fs::remove_dir(&private).unwrap();
        let l = bind(&ListenOptions {
            path: path.clone(),
            mode: 0o600,
            group: None,
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.sock")]);
        drop(l);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }
}
