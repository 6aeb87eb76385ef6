//! TCP, for tools that cannot use a socket: plain on loopback only, TLS with client certificates
//! verified anywhere else (dockerd's `--tlsverify`), and a daemon reached over TCP with TLS as
//! the docker CLI does (`DOCKER_CERT_PATH`, `DOCKER_TLS_VERIFY`). Certificates are made by the
//! test with openssl; the daemons are real.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{output, run_ok, run_with_stdin, Daemon, Gateway, IMAGE};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir` with the docker
/// CLI's names for the client side (`ca.pem`, `cert.pem`, `key.pem`).
fn certificates(dir: &Path) {
    support::make_ca(dir);
    support::make_cert(
        dir,
        "localhost",
        "server-key.pem",
        "server-cert.pem",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    support::make_cert(
        dir,
        "client",
        "key.pem",
        "cert.pem",
        "extendedKeyUsage=clientAuth\n",
    );
}

/// A docker CLI for `host` with the client certificates in `certs` (or none).
fn docker_tls(host: &str, certs: Option<&Path>) -> Command {
    let mut c = Command::new("docker");
    c.env_remove("DOCKER_CONTEXT").arg("-H").arg(host);
    match certs {
        Some(dir) => {
            c.env("DOCKER_CERT_PATH", dir).arg("--tlsverify");
        }
        None => {
            c.env_remove("DOCKER_CERT_PATH")
                .env_remove("DOCKER_TLS_VERIFY");
        }
    }
    c
}

fn flag(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// `luastrip serve` with `args`, expected to refuse to start (killed after 10 s if it does
/// not); its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let err = support::temp_dir("refused").join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .arg("serve")
        .args(args)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} started");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success(), "{args:?} exited 0");
    std::fs::read_to_string(&err).unwrap()
}

#[test]
fn a_tls_listener_serves_the_docker_cli_and_refuses_clients_without_a_certificate() {
    let certs = support::temp_dir("certs");
    certificates(&certs);
    let port = support::free_port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    // The harness gives the gateway its Unix socket; --listen adds the TCP address.
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &[
            "--listen",
            &tcp,
            "--tls-cert",
            &flag(&certs, "server-cert.pem"),
            "--tls-key",
            &flag(&certs, "server-key.pem"),
            "--tls-ca",
            &flag(&certs, "ca.pem"),
        ],
    );
    support::wait_until(
        "the TCP listener",
        std::time::Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    // The docker CLI with its client certificate: short calls and a hijacked session.
    let version =
        run_ok(docker_tls(&tcp, Some(&certs)).args(["version", "--format", "{{.Server.Version}}"]));
    assert!(!version.trim().is_empty());
    let out = run_with_stdin(
        docker_tls(&tcp, Some(&certs)).args([
            "run",
            "--rm",
            "-i",
            IMAGE,
            "sh",
            "-c",
            "read x; echo got $x",
        ]),
        b"tls\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got tls\n");
    // A client with the CA but no certificate of its own is refused in the handshake.
    let nocert = support::temp_dir("nocert");
    std::fs::copy(certs.join("ca.pem"), nocert.join("ca.pem")).unwrap();
    let out = output(docker_tls(&tcp, Some(&nocert)).arg("version"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate required"),
        "{out:?}"
    );
    // A certificate from another CA is refused too.
    let rogue = support::temp_dir("rogue");
    certificates(&rogue);
    let out = output(docker_tls(&tcp, Some(&rogue)).arg("version"));
    assert!(!out.status.success(), "{out:?}");
    // Plain HTTP to the TLS port gets nothing served.
    let out = output(docker_tls(&tcp, None).arg("version"));
    assert!(!out.status.success());
    assert!(
        gw.log_text().contains("a TLS client was refused"),
        "{}",
        gw.log_text()
    );
    // The Unix socket beside it still serves, with the same scripts and journal.
    let (_, calls) = gw.control("GET", "/calls", "");
    assert!(calls
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["path"] == "/containers/create"));
}

#[test]
fn plain_tcp_is_for_loopback_only() {
    let port = support::free_port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let _gw = Gateway::start_with(&Daemon::shared().socket, &["--listen", &tcp]);
    support::wait_until(
        "the TCP listener",
        std::time::Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let version =
        run_ok(docker_tls(&tcp, None).args(["version", "--format", "{{.Server.Version}}"]));
    assert!(!version.trim().is_empty());
    // Anywhere else: TLS with client certificates, or no start.
    let certs = support::temp_dir("certs2");
    certificates(&certs);
    for (args, says) in [
        (
            vec!["--listen", "tcp://0.0.0.0:2375"],
            "needs --tls-cert, --tls-key and --tls-ca",
        ),
        (
            vec![
                "--listen",
                "tcp://0.0.0.0:2376",
                "--tls-cert",
                &flag(&certs, "server-cert.pem"),
                "--tls-key",
                &flag(&certs, "server-key.pem"),
            ],
            "needs --tls-cert, --tls-key and --tls-ca",
        ),
        (vec!["--listen", "tcp://[::]:2375"], "needs --tls-cert"),
        (
            vec![
                "--listen",
                "unix:///tmp/x.sock",
                "--tls-cert",
                &flag(&certs, "cert.pem"),
            ],
            "are for --listen tcp://",
        ),
        (
            vec![
                "--listen",
                "tcp://127.0.0.1:2376",
                "--tls-cert",
                &flag(&certs, "server-cert.pem"),
                "--tls-key",
                &flag(&certs, "ca.pem"),
            ],
            "no PEM private key",
        ),
        (
            vec!["--listen", "tcp://nowhere.invalid:2375"],
            "--listen tcp://nowhere.invalid:2375",
        ),
        (
            vec![
                "--listen",
                "tcp://127.0.0.1:23999",
                "--upstream",
                "tcp://localhost:23999",
            ],
            "own listen socket (or TCP address)",
        ),
        (
            vec!["--listen", "unix:///a.sock,unix:///b.sock"],
            "one Unix socket",
        ),
    ] {
        let err = refused(&args, &[]);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The daemon over TCP with TLS (`dockerd --tlsverify`): luastrip verifies it and shows its own
/// client certificate, from DOCKER_CERT_PATH as the docker CLI reads it; without a CA, or plain
/// to another machine, it refuses to start.
#[test]
fn the_daemon_can_be_reached_over_tcp_with_tls() {
    let certs = support::temp_dir("certs3");
    certificates(&certs);
    let port = support::free_port();
    let dir: PathBuf = support::temp_dir("tlsd");
    let daemon = Daemon::start_with(
        &dir,
        &[
            "--host",
            &format!("tcp://127.0.0.1:{port}"),
            "--tlsverify",
            "--tlscacert",
            &flag(&certs, "ca.pem"),
            "--tlscert",
            &flag(&certs, "server-cert.pem"),
            "--tlskey",
            &flag(&certs, "server-key.pem"),
        ],
    );
    daemon.import_busybox();
    let upstream = format!("tcp://127.0.0.1:{port}");
    let sock = support::temp_dir("tlsup").join("gw.sock");
    let log = sock.with_extension("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["serve", "--upstream", &upstream, "--listen"])
        .arg(format!("unix://{}", sock.display()))
        .env("DOCKER_CERT_PATH", &certs)
        .env("DOCKER_TLS_VERIFY", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        support::wait_for_path(&sock),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let host = format!("unix://{}", sock.display());
    let out = run_with_stdin(
        support::docker_cli(&host).args([
            "run",
            "--rm",
            "-i",
            IMAGE,
            "sh",
            "-c",
            "read x; echo got $x",
        ]),
        b"over tls\n",
    );
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got over tls\n");
    let _ = child.kill();
    let _ = child.wait();
    daemon.stop();

    // Without a CA luastrip cannot verify the daemon: no start.
    let empty = support::temp_dir("empty-certs");
    let err = refused(
        &["--listen", "unix:///tmp/x.sock", "--upstream", &upstream],
        &[("DOCKER_CERT_PATH", empty.to_str().unwrap())],
    );
    assert!(
        err.contains("needed to verify the daemon's certificate"),
        "{err}"
    );
    // Plain TCP to another machine: no start.
    let err = refused(
        &[
            "--listen",
            "unix:///tmp/x.sock",
            "--upstream",
            "tcp://192.0.2.1:2375",
        ],
        &[],
    );
    assert!(
        err.contains("plain TCP only to a daemon on loopback"),
        "{err}"
    );
}
