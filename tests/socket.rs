//! The listen socket: permissions, stale sockets, refusing a live one, clean shutdown.
//! These need no daemon: the upstream is a path nobody listens on.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use support::Gateway;

fn nowhere() -> std::path::PathBuf {
    support::temp_dir("nowhere").join("docker.sock")
}

/// `luastrip serve` listening on `listen`, in front of a daemon that is not there.
fn serve(listen: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_luastrip"));
    c.args(["serve", "--listen"])
        .arg(format!("unix://{}", listen.display()))
        .arg("--upstream")
        .arg(format!("unix://{}", nowhere().display()));
    c
}

#[test]
fn socket_mode_and_group_are_set_before_it_appears() {
    let gw = Gateway::start_with(
        &nowhere(),
        &["--socket-mode", "640", "--socket-group", "65534"],
    );
    let meta = std::fs::metadata(&gw.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), 65534);
    // No temporary socket is left beside it.
    let dir = gw.socket.parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".log"))
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        vec!["luastrip.ctl".to_string(), "luastrip.sock".to_string()]
    );
    // The control socket can steer the gateway: owner only, whatever --socket-mode says.
    let ctl = std::fs::metadata(dir.join("luastrip.ctl")).unwrap();
    assert_eq!(ctl.permissions().mode() & 0o7777, 0o600);
}

#[test]
fn default_mode_is_0660() {
    let gw = Gateway::start_with(&nowhere(), &[]);
    let meta = std::fs::metadata(&gw.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = support::temp_dir("stale");
    let path = dir.join("gw.sock");
    // A stale socket: bound, then its listener dropped (as after a crash).
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut first = serve(&path).stderr(Stdio::null()).spawn().unwrap();
    // It answers once it took over the path.
    let t = std::time::Instant::now();
    while support::try_raw(&path, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n".as_bytes()).is_err() {
        assert!(
            t.elapsed().as_secs() < 20,
            "the stale socket was not replaced"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A second gateway on the same, live path is refused with a clear message.
    let out = serve(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is in use: a running process answers on it"),
        "{err}"
    );
    // …and the first one still serves.
    let resp = support::raw(
        &path,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 502"));
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn a_regular_file_is_never_replaced() {
    let dir = support::temp_dir("file");
    let path = dir.join("not-a-socket");
    std::fs::write(&path, b"precious").unwrap();
    let out = serve(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists and is not a socket"));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn sigterm_and_sigint_remove_the_socket_and_exit_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut gw = Gateway::start_with(&nowhere(), &[]);
        assert!(gw.socket.exists());
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(gw.child.id() as i32, signal) };
        let status = gw.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "signal {signal}");
        assert!(
            !gw.socket.exists(),
            "socket left behind after signal {signal}"
        );
    }
}

#[test]
fn bad_flags_are_clear_errors() {
    for (flag, value, says) in [
        ("--upstream", "tcp://127.0.0.1:2375", "Unix socket"),
        ("--socket-mode", "999", "octal"),
        ("--socket-group", "no-such-group-here", "no such group"),
        ("--listen", "relative.sock", "absolute"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_luastrip"));
        cmd.arg("serve");
        if flag != "--listen" {
            cmd.args(["--listen", "unix:///tmp/x.sock"]);
        }
        let out = cmd.args([flag, value]).output().unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[test]
fn env_twins_configure_serve() {
    let dir = support::temp_dir("env");
    let path = dir.join("env.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .arg("serve")
        .env("LUASTRIP_LISTEN", format!("unix://{}", path.display()))
        .env(
            "LUASTRIP_UPSTREAM",
            format!("unix://{}", nowhere().display()),
        )
        .env("LUASTRIP_SOCKET_MODE", "600")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        support::wait_for_path(&path),
        "no socket at {}",
        path.display()
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let resp = support::raw(
        &path,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    let text = &resp;
    assert!(text.contains(&nowhere_marker()), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}

fn nowhere_marker() -> String {
    "cannot reach the Docker daemon at unix:///tmp/luastrip-test-".to_string()
}

#[test]
fn upstream_defaults_to_docker_host() {
    let dir = support::temp_dir("docker-host");
    let path = dir.join("gw.sock");
    let daemon = dir.join("from-docker-host.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["serve", "--listen"])
        .arg(format!("unix://{}", path.display()))
        .env_remove("LUASTRIP_UPSTREAM")
        .env("DOCKER_HOST", format!("unix://{}", daemon.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        support::wait_for_path(&path),
        "no socket at {}",
        path.display()
    );
    let resp = support::raw(
        &path,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    let text = &resp;
    assert!(
        text.contains(&format!(
            "cannot reach the Docker daemon at unix://{}",
            daemon.display()
        )),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
