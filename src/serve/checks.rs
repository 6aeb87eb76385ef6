//! What `serve` refuses or warns about at start-up, before any client is served: an API exposed
//! off loopback in plain text, a gateway that would forward to itself, a daemon that does not
//! answer; and the process's own housekeeping (the file-descriptor limit, memory given back when
//! idle).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::{StartError, TcpListen};
use crate::call::Gateway;
use crate::upstream::{Upstream, UpstreamAddr};

/// After a burst, the allocator keeps the memory it grew to; when no client is connected, hand
/// what is free back to the system every few seconds (glibc's `malloc_trim`), so that RSS returns
/// to its resting size instead of staying at the peak.
pub(super) async fn give_back_memory_when_idle(
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut trimmed_at = 0;
    while !*stop.borrow() {
        tokio::select! {
            _ = stop.changed() => {}
            _ = tick.tick() => {
                let open = gateway.open_connections.load(std::sync::atomic::Ordering::Relaxed);
                let calls = gateway.calls_started();
                if open == 0 && calls != trimmed_at {
                    trimmed_at = calls;
                    #[cfg(all(target_os = "linux", target_env = "gnu"))]
                    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            }
        }
    }
}

/// Raise the soft limit on open files to the hard one (as Go programs do): each client connection
/// holds two descriptors, one toward the daemon.
pub(super) fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
    }
}

/// Refuse an upstream that is the listen socket itself: the same path, or (once bound) the same
/// socket file under another name.
/// Whoever reaches the Docker API is root on the daemon's host. So a TCP listener off loopback
/// must ask every client for a certificate from its CA (as dockerd's `--tlsverify`), and a TCP
/// daemon off loopback is reached over TLS (its certificate verified), never in plain text.
/// Checked here, not where the flags are parsed, so that every way of starting a gateway is
/// held to it.
pub(super) fn refuse_exposure(
    upstream: &UpstreamAddr,
    tcp: &[TcpListen],
) -> Result<(), StartError> {
    for t in tcp {
        if !t.addr.ip().is_loopback() && !t.tls.as_ref().is_some_and(|t| t.verifies_clients) {
            return Err(StartError::Exposed(format!(
                "--listen tcp://{}: an address other than loopback needs --tls-cert, --tls-key \
                 and --tls-ca (client certificates verified, as dockerd's --tlsverify): whoever \
                 reaches that port would otherwise be root on this host",
                t.addr
            )));
        }
    }
    if upstream.unix_path().is_none() && upstream.tls.is_none() && !upstream.is_loopback() {
        return Err(StartError::Exposed(format!(
            "--upstream {upstream}: plain TCP only to a daemon on loopback; give its CA \
             (--upstream-tls-ca, or DOCKER_CERT_PATH with DOCKER_TLS_VERIFY=1) to use TLS"
        )));
    }
    Ok(())
}

pub(super) fn refuse_self_forwarding(
    upstream: &UpstreamAddr,
    listen: &Path,
    tcp: &[TcpListen],
) -> Result<(), StartError> {
    let refused = || {
        Err(StartError::ForwardsToItself {
            upstream: upstream.to_string(),
        })
    };
    let Some(path) = upstream.unix_path() else {
        // A TCP daemon: not one of our own TCP listeners.
        if let crate::upstream::DaemonAt::Tcp { host, port } = &upstream.at {
            use std::net::ToSocketAddrs;
            let ips: Vec<std::net::IpAddr> = (host.as_str(), *port)
                .to_socket_addrs()
                .map(|a| a.map(|a| a.ip()).collect())
                .unwrap_or_default();
            let ours = tcp.iter().any(|t| {
                t.addr.port() == *port
                    && (t.addr.ip().is_unspecified() || ips.contains(&t.addr.ip()))
            });
            if ours {
                return refused();
            }
        }
        return Ok(());
    };
    let canonical = |p: &Path| -> PathBuf {
        match (p.parent(), p.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| p.to_path_buf()),
            _ => p.to_path_buf(),
        }
    };
    let same_path = canonical(path) == canonical(listen);
    let same_file = match (std::fs::metadata(path), std::fs::metadata(listen)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    if same_path || same_file {
        return refused();
    }
    Ok(())
}

/// A gateway in front of nothing serves only errors: say so at start-up (it still starts, so
/// that it can be up before the daemon).
pub(super) async fn warn_unless_daemon_answers(upstream: &Upstream) {
    let ping = http::Request::builder()
        .uri("/_ping")
        .header(http::header::HOST, "docker")
        .body(crate::body::full(bytes::Bytes::new()));
    let Ok(ping) = ping else { return };
    let answer = tokio::time::timeout(Duration::from_secs(3), upstream.send(ping)).await;
    match answer {
        Ok(Ok(res)) if res.status().is_success() => {}
        Ok(Ok(res)) => warn!(
            upstream = %upstream.addr(),
            status = res.status().as_u16(),
            "the Docker daemon answered /_ping with an error; calls will fail until it is healthy"
        ),
        Ok(Err(e)) => warn!(
            upstream = %upstream.addr(),
            error = %e,
            "the Docker daemon does not answer /_ping; calls will get 502 until it does"
        ),
        Err(_) => warn!(
            upstream = %upstream.addr(),
            "the Docker daemon did not answer /_ping within 3 s"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_never_exposed_off_loopback_in_plain_text() {
        let unix = UpstreamAddr::parse("unix:///run/docker.sock").unwrap();
        let plain = |addr: &str| TcpListen {
            addr: addr.parse().unwrap(),
            tls: None,
        };
        assert!(refuse_exposure(&unix, &[plain("127.0.0.1:2375"), plain("[::1]:2375")]).is_ok());
        for off in ["0.0.0.0:2375", "[::]:2375", "192.0.2.1:2375"] {
            let e = refuse_exposure(&unix, &[plain("127.0.0.1:1"), plain(off)]).unwrap_err();
            assert!(
                e.to_string()
                    .contains("needs --tls-cert, --tls-key and --tls-ca"),
                "{e}"
            );
        }
        let local = UpstreamAddr::parse("tcp://127.0.0.1:2375").unwrap();
        assert!(refuse_exposure(&local, &[]).is_ok());
        let far = UpstreamAddr::parse("tcp://192.0.2.1:2375").unwrap();
        let e = refuse_exposure(&far, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("plain TCP only to a daemon on loopback"),
            "{e}"
        );
    }
}
