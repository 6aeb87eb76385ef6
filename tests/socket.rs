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
    // Its log goes to a file here, not a terminal: no colour codes in it.
    support::wait_until("a log line", std::time::Duration::from_secs(5), || {
        gw.log_text().contains("luastrip is serving")
    });
    assert!(!gw.log_text().contains('\x1b'), "{:?}", gw.log_text());
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
        (
            "--upstream",
            "http://127.0.0.1:2375",
            "use unix:///path/to/docker.sock or tcp://",
        ),
        (
            "--upstream",
            "tcp://10.9.8.7:2375",
            "plain TCP only to a daemon on loopback",
        ),
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

/// Socket activation: systemd (here `systemd-socket-activate`, which speaks the same
/// `LISTEN_FDS` protocol) makes the socket before luastrip runs; the first client starts it and
/// is served, the control socket goes beside it, and the socket stays systemd's at exit.
#[test]
fn a_socket_systemd_passes_is_served_and_left_in_place() {
    support::require_tool("systemd-socket-activate", "systemd");
    let dir = support::temp_dir("activate");
    let sock = dir.join("docker.sock");
    let log = dir.join("luastrip.log");
    let notify_path = dir.join("notify");
    let activate = |sockets: &[&std::path::Path]| {
        let mut c = Command::new("systemd-socket-activate");
        // It passes the program only the environment it is told to (as systemd does).
        c.arg("-E")
            .arg(format!("NOTIFY_SOCKET={}", notify_path.display()));
        for s in sockets {
            c.arg("-l").arg(s);
        }
        c.arg(env!("CARGO_BIN_EXE_luastrip"))
            .args(["serve", "--listen"])
            .arg(format!("unix://{}", sockets[0].display()))
            .arg("--upstream")
            .arg(format!("unix://{}", nowhere().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        c
    };
    // Type=notify: systemd learns when the gateway is ready and when it stops.
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let next_state = || {
        let mut buf = [0u8; 64];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut child = activate(&[&sock]).spawn().unwrap();
    assert!(
        support::wait_for_path(&sock),
        "no socket from systemd-socket-activate"
    );
    // Nothing has started luastrip yet: no control socket.
    assert!(!dir.join("docker.ctl").exists());
    // The first client starts it and gets luastrip's own answer (the daemon is not there).
    let resp = support::raw(
        &sock,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(resp.contains("cannot reach the Docker daemon"), "{resp}");
    assert!(support::wait_for_path(&dir.join("docker.ctl")));
    assert_eq!(next_state(), "READY=1");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("serving on the socket systemd passed"),
        "{text}"
    );
    // SIGTERM: a clean exit that leaves systemd's socket where it is, and removes ours.
    // SAFETY: plain kill(2) on our child (luastrip, exec'd in its place).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(next_state(), "STOPPING=1");
    assert!(sock.exists(), "the socket systemd made was removed");
    assert!(!dir.join("docker.ctl").exists());
    let _ = std::fs::remove_file(&sock);

    // Two sockets are one too many: a clear error, and luastrip does not serve.
    let other = dir.join("other.sock");
    let mut child = activate(&[&sock, &other]).spawn().unwrap();
    assert!(support::wait_for_path(&sock));
    let _ = support::try_raw(&sock, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n".as_bytes());
    let status = child.wait().unwrap();
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("luastrip takes exactly one socket"), "{text}");
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&other);
}

/// Without --socket-group, the socket belongs to the docker group where it exists, as
/// docker.sock does, so that its members can use luastrip; "" keeps the process's group.
#[test]
fn the_socket_group_defaults_to_docker() {
    support::require_tool("dockerd", "docker.io");
    let docker = nix::unistd::Group::from_name("docker")
        .unwrap()
        .expect("docker.io makes the docker group");
    let gw = Gateway::start_with(&nowhere(), &[]);
    let meta = std::fs::metadata(&gw.socket).unwrap();
    assert_eq!(meta.gid(), docker.gid.as_raw());
    let gw = Gateway::start_with(&nowhere(), &["--socket-group", ""]);
    let meta = std::fs::metadata(&gw.socket).unwrap();
    // SAFETY: getegid has no preconditions.
    assert_eq!(meta.gid(), unsafe { libc::getegid() });
}

/// The units in examples/systemd are ones systemd accepts (`systemd-analyze verify`, with the
/// binary where the unit expects it replaced by the one under test), and they say what the
/// README says: docker.sock for luastrip, the daemon's socket moved aside and root's only.
#[test]
fn the_systemd_units_verify() {
    support::require_tool("systemd-analyze", "systemd");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    let dir = support::temp_dir("units");
    for unit in ["luastrip.socket", "luastrip.service"] {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/luastrip", env!("CARGO_BIN_EXE_luastrip"));
        std::fs::write(dir.join(unit), text).unwrap();
    }
    let out = support::output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.join("luastrip.socket"))
            .arg(dir.join("luastrip.service")),
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = std::fs::read_to_string(src.join("luastrip.socket")).unwrap();
    assert!(socket.contains("ListenStream=/run/docker.sock"));
    assert!(socket.contains("SocketGroup=docker"));
    let service = std::fs::read_to_string(src.join("luastrip.service")).unwrap();
    assert!(service.contains("--upstream unix:///run/docker.real.sock"));
    assert!(service.contains("Type=notify"));
    let dropin = std::fs::read_to_string(src.join("docker.socket.d/luastrip.conf")).unwrap();
    assert!(dropin.contains("ListenStream=\nListenStream=/run/docker.real.sock"));
    assert!(dropin.contains("SocketMode=0600"));
}

/// The harness itself: a command that hangs is killed with everything it started and reported
/// with what it printed, never waited on until CI's limit.
#[test]
fn a_hung_command_is_killed_and_reported() {
    let started = std::time::Instant::now();
    let err = support::try_output_within(
        Command::new("sh").args(["-c", "echo before; sleep 60 & echo $! ; wait"]),
        std::time::Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(err.contains("did not finish in 1s"), "{err}");
    assert!(err.contains("stdout so far: before"), "{err}");
    // The background `sleep` (its pid is the line after "before") went with the group.
    let pid: u32 = err
        .lines()
        .nth(2)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {err}"));
    support::wait_until(
        "the hung command's child is gone",
        std::time::Duration::from_secs(5),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        },
    );
}
