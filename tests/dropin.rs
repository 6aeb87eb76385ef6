//! The drop-in suite: the real docker CLI and raw HTTP through `luastrip serve` in front of a
//! real, private dockerd (see `support`). Every test asserts what a user would see.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{output, random_bytes, run_ok, run_with_stdin, Daemon, Gateway, IMAGE};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running container to exec into; removed on drop.
struct Running {
    id: String,
    host: String,
}

impl Running {
    fn start(gw: &Gateway) -> Running {
        let id = run_ok(gw.docker().args(["run", "-d", IMAGE, "sleep", "600"]))
            .trim()
            .to_string();
        Running {
            id,
            host: gw.host(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = output(support::docker_cli(&self.host).args(["rm", "-f", &self.id]));
    }
}

#[test]
fn version_and_info() {
    let gw = Gateway::start();
    let v = run_ok(
        gw.docker()
            .args(["version", "--format", "{{.Server.APIVersion}}"]),
    );
    assert_eq!(v.trim(), "1.41");
    let info = run_ok(gw.docker().args(["info", "--format", "{{.DockerRootDir}}"]));
    assert!(info.trim().ends_with("/data"), "{info}");
}

#[test]
fn run_echo_and_exit_codes() {
    let gw = Gateway::start();
    let out = run_ok(
        gw.docker()
            .args(["run", "--rm", IMAGE, "echo", "hello through luastrip"]),
    );
    assert_eq!(out, "hello through luastrip\n");
    let out = output(
        gw.docker()
            .args(["run", "--rm", IMAGE, "sh", "-c", "exit 42"]),
    );
    assert_eq!(out.status.code(), Some(42));
    // A daemon error reaches the CLI as the daemon worded it.
    let out = output(gw.docker().args(["run", "--rm", "no-such-image-here:1"]));
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Error response from daemon"), "{err}");
}

#[test]
fn run_interactive_stdin() {
    let gw = Gateway::start();
    let out = run_with_stdin(
        gw.docker().args([
            "run",
            "--rm",
            "-i",
            IMAGE,
            "sh",
            "-c",
            "read a; read b; echo \"$b $a\"",
        ]),
        b"first\nsecond\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "second first\n");
}

#[test]
fn run_with_a_tty() {
    support::require_tool("script", "bsdutils");
    let gw = Gateway::start();
    let cmd = format!(
        "DOCKER_HOST={} DOCKER_CONFIG={} docker run --rm -t {IMAGE} sh -c 'tty; echo done-$((6*7))'",
        gw.host(),
        support::run_dir().join("docker-config").display()
    );
    let out = output(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    let text = stdout(&out);
    assert!(out.status.success(), "{text} {:?}", out);
    assert!(
        text.contains("/dev/pts/"),
        "no tty in the container: {text}"
    );
    assert!(text.contains("done-42"), "{text}");
}

#[test]
fn exec_and_exec_interactive() {
    let gw = Gateway::start();
    let c = Running::start(&gw);
    let out = run_ok(
        gw.docker()
            .args(["exec", &c.id, "sh", "-c", "echo in-$HOSTNAME"]),
    );
    assert!(out.starts_with("in-"), "{out}");
    let out = output(gw.docker().args(["exec", &c.id, "sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7));
    let out = run_with_stdin(
        gw.docker().args(["exec", "-i", &c.id, "tr", "a-z", "A-Z"]),
        b"shout\n",
    );
    assert_eq!(stdout(&out), "SHOUT\n");
}

#[test]
fn megabytes_through_run_and_exec_stdin_unchanged() {
    let gw = Gateway::start();
    let data = random_bytes(6 * 1024 * 1024);
    let out = run_with_stdin(gw.docker().args(["run", "--rm", "-i", IMAGE, "cat"]), &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "run -i cat changed the bytes");

    let c = Running::start(&gw);
    let out = run_with_stdin(gw.docker().args(["exec", "-i", &c.id, "cat"]), &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "exec -i cat changed the bytes");
    // And the container agrees on the hash of what it received.
    let out = run_with_stdin(gw.docker().args(["exec", "-i", &c.id, "sha256sum"]), &data);
    let dir = support::temp_dir("hash");
    std::fs::write(dir.join("data"), &data).unwrap();
    assert_eq!(
        stdout(&out).split_whitespace().next().unwrap(),
        support::sha256_file(&dir.join("data"))
    );
}

#[test]
fn cp_in_and_out() {
    let gw = Gateway::start();
    let c = Running::start(&gw);
    let dir = support::temp_dir("cp");
    let src = dir.join("blob.bin");
    std::fs::write(&src, random_bytes(3 * 1024 * 1024 + 17)).unwrap();
    run_ok(
        gw.docker()
            .arg("cp")
            .arg(&src)
            .arg(format!("{}:/tmp/blob.bin", c.id)),
    );
    let inside = run_ok(
        gw.docker()
            .args(["exec", &c.id, "sha256sum", "/tmp/blob.bin"]),
    );
    let want = support::sha256_file(&src);
    assert_eq!(inside.split_whitespace().next().unwrap(), want);
    let back = dir.join("back.bin");
    run_ok(
        gw.docker()
            .arg("cp")
            .arg(format!("{}:/tmp/blob.bin", c.id))
            .arg(&back),
    );
    assert_eq!(support::sha256_file(&back), want);
}

#[test]
fn logs_of_ten_thousand_lines() {
    let gw = Gateway::start();
    let id = run_ok(gw.docker().args(["run", "-d", IMAGE, "seq", "1", "10000"]))
        .trim()
        .to_string();
    run_ok(gw.docker().args(["wait", &id]));
    let logs = run_ok(gw.docker().args(["logs", &id]));
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 10_000);
    assert_eq!(lines[0], "1");
    assert_eq!(lines[9_999], "10000");
    run_ok(gw.docker().args(["rm", &id]));
}

#[test]
fn logs_follow_shows_lines_while_the_container_runs() {
    let gw = Gateway::start();
    let c = {
        let id = run_ok(gw.docker().args([
            "run",
            "-d",
            IMAGE,
            "sh",
            "-c",
            "echo first-line; sleep 600",
        ]))
        .trim()
        .to_string();
        Running {
            id,
            host: gw.host(),
        }
    };
    let mut child = gw
        .docker()
        .args(["logs", "-f", &c.id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    // The container is still running: the stream must not wait for its end.
    let state = run_ok(
        gw.docker()
            .args(["inspect", "-f", "{{.State.Running}}", &c.id]),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        line.expect("logs -f showed nothing while the container ran"),
        "first-line\n"
    );
    assert_eq!(state.trim(), "true");
}

#[test]
fn events_stream_while_a_container_starts() {
    let gw = Gateway::start();
    let mut child = gw
        .docker()
        .args([
            "events",
            "--filter",
            "event=start",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
    // Give the events stream a moment to be registered before the container starts.
    std::thread::sleep(Duration::from_millis(500));
    let name = format!("events-probe-{}", std::process::id());
    run_ok(
        gw.docker()
            .args(["run", "--rm", "--name", &name, IMAGE, "true"]),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut found = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                found |= line.trim() == format!("start {name}");
                seen.push(line);
                if found {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no start event for {name}; saw {seen:?}");
}

#[test]
fn build_with_a_multi_megabyte_context_classic_builder() {
    let gw = Gateway::start();
    let dir = support::temp_dir("build");
    std::fs::write(dir.join("big.bin"), random_bytes(8 * 1024 * 1024)).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY big.bin /big.bin\nRUN sha256sum /big.bin > /big.sum\n"),
    )
    .unwrap();
    let tag = format!("luastrip-test/built:{}", std::process::id());
    let out = output(gw.docker().args(["build", "-t", &tag]).arg(&dir));
    assert!(
        out.status.success(),
        "build failed: {}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("Successfully tagged"),
        "{}",
        stdout(&out)
    );
    let sum = run_ok(gw.docker().args(["run", "--rm", &tag, "cat", "/big.sum"]));
    assert_eq!(
        sum.split_whitespace().next().unwrap(),
        support::sha256_file(&dir.join("big.bin"))
    );
    run_ok(gw.docker().args(["rmi", &tag]));
}

#[test]
fn save_load_and_export() {
    let gw = Gateway::start();
    let dir = support::temp_dir("save");
    let tag = format!("luastrip-test/saved:{}", std::process::id());
    run_ok(gw.docker().args(["tag", IMAGE, &tag]));
    let tar = dir.join("image.tar");
    run_ok(gw.docker().args(["save", "-o"]).arg(&tar).arg(&tag));
    run_ok(gw.docker().args(["rmi", &tag]));
    let out = output(gw.docker().args(["image", "inspect", &tag]));
    assert!(!out.status.success(), "the tag should be gone before load");
    let loaded = run_ok(gw.docker().args(["load", "-i"]).arg(&tar));
    assert!(loaded.contains(&tag), "{loaded}");
    run_ok(gw.docker().args(["image", "inspect", &tag]));
    run_ok(gw.docker().args(["rmi", &tag]));

    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let exported = dir.join("fs.tar");
    run_ok(gw.docker().args(["export", "-o"]).arg(&exported).arg(&id));
    let list = run_ok(Command::new("tar").arg("-tf").arg(&exported));
    assert!(
        list.lines().any(|l| l == "bin/busybox"),
        "export lacks bin/busybox"
    );
    run_ok(gw.docker().args(["rm", &id]));
}

#[test]
fn twenty_parallel_runs() {
    let gw = Gateway::start();
    let host = gw.host();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let host = host.clone();
            std::thread::spawn(move || {
                let out = output(support::docker_cli(&host).args([
                    "run",
                    "--rm",
                    IMAGE,
                    "sh",
                    "-c",
                    &format!("echo run-{i}"),
                ]));
                (i, out)
            })
        })
        .collect();
    for h in handles {
        let (i, out) = h.join().unwrap();
        assert!(
            out.status.success(),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout(&out), format!("run-{i}\n"));
    }
}

#[test]
fn rm_force_a_running_container() {
    let gw = Gateway::start();
    let id = run_ok(gw.docker().args(["run", "-d", IMAGE, "sleep", "600"]))
        .trim()
        .to_string();
    run_ok(gw.docker().args(["rm", "-f", &id]));
    let out = output(gw.docker().args(["inspect", &id]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such"));
}

fn connect(gw: &Gateway) -> UnixStream {
    support::connect(&gw.socket)
}

/// POST a JSON body through the gateway on a fresh connection; expect 201 and return the "Id".
fn api_post_id(gw: &Gateway, path: &str, body: &str) -> String {
    let resp = support::post_json(&gw.socket, path, body);
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    support::json_body(&resp)["Id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Create a container through the API; return its id.
fn api_create(gw: &Gateway, body: &str) -> String {
    api_post_id(gw, "/v1.41/containers/create", body)
}

/// Read from `s` until the text read so far contains `needle`; return all of it.
fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream closed before {needle:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn old_client_attach_without_upgrade_header_gets_a_raw_stream() {
    let gw = Gateway::start();
    let id = api_create(
        &gw,
        &format!(
            r#"{{"Image":"{IMAGE}","Cmd":["sh","-c","read x; echo got-$x"],"OpenStdin":true,"StdinOnce":true,"AttachStdin":true,"AttachStdout":true}}"#
        ),
    );
    let mut s = connect(&gw);
    write!(
        s,
        "POST /v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let head = support::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.docker.raw-stream"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
    run_ok(gw.docker().args(["start", &id]));
    s.write_all(b"hello\n").unwrap();
    // Half-close our side: the daemon must still send the output.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    // Not a TTY: frames of [stream, 0, 0, 0, len(4 bytes BE)] + payload.
    let mut payload = Vec::new();
    let mut i = 0;
    while i + 8 <= rest.len() {
        let len = u32::from_be_bytes([rest[i + 4], rest[i + 5], rest[i + 6], rest[i + 7]]) as usize;
        payload.extend_from_slice(&rest[i + 8..i + 8 + len]);
        i += 8 + len;
    }
    assert_eq!(String::from_utf8_lossy(&payload), "got-hello\n");
    run_ok(gw.docker().args(["rm", "-f", &id]));
}

#[test]
fn upgrade_hijack_passes_the_daemon_101_head_through() {
    let gw = Gateway::start();
    let id = api_create(
        &gw,
        &format!(
            r#"{{"Image":"{IMAGE}","Cmd":["cat"],"OpenStdin":true,"StdinOnce":true,"AttachStdin":true,"AttachStdout":true,"Tty":true}}"#
        ),
    );
    let mut s = connect(&gw);
    // The request and the first stdin bytes in one write: bytes past the head must be forwarded.
    write!(
        s,
        "POST /v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let head = support::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 UPGRADED\r\n"), "{head}");
    assert!(head.contains("Upgrade: tcp"), "{head}");
    assert!(head.contains("Connection: Upgrade"), "{head}");
    assert!(
        head.contains("Content-Type: application/vnd.docker.raw-stream"),
        "{head}"
    );
    run_ok(gw.docker().args(["start", &id]));
    s.write_all(b"echo-me\n").unwrap();
    read_until(&mut s, "echo-me\r\necho-me");
    run_ok(gw.docker().args(["rm", "-f", &id]));
}

#[test]
fn bytes_sent_right_after_the_upgrade_head_are_forwarded() {
    let gw = Gateway::start();
    let c = Running::start(&gw);
    let exec = api_post_id(
        &gw,
        &format!("/containers/{}/exec", c.id),
        r#"{"AttachStdin":true,"AttachStdout":true,"Cmd":["head","-c","5"]}"#,
    );
    let start = r#"{"Detach":false,"Tty":true}"#;
    let mut s = connect(&gw);
    // Head, body and the stdin bytes in a single write.
    write!(
        s,
        "POST /exec/{exec}/start HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{start}abcdeXYZ",
        start.len()
    )
    .unwrap();
    let head = support::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains("abcde"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn wait_sends_its_head_before_the_container_exits() {
    let gw = Gateway::start();
    let c = Running::start(&gw);
    let mut s = connect(&gw);
    write!(
        s,
        "POST /v1.41/containers/{}/wait HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n",
        c.id
    )
    .unwrap();
    let head = support::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let running = run_ok(
        gw.docker()
            .args(["inspect", "-f", "{{.State.Running}}", &c.id]),
    );
    assert_eq!(
        running.trim(),
        "true",
        "the head came only after the container stopped"
    );
    run_ok(gw.docker().args(["kill", &c.id]));
    let rest = read_until(&mut s, "StatusCode");
    assert!(rest.contains("\"StatusCode\":137"), "{rest:?}");
}

#[test]
fn path_spellings_reach_the_same_endpoint_and_keep_the_version() {
    let gw = Gateway::start();
    for path in [
        "/_ping",
        "/v1.41/_ping",
        "//v1.41//_ping",
        "/v1.41/_ping/",
        "/v1.41/./_ping",
        "/v1.41/x/../_ping",
        "/v1.41/%5Fping",
        "/v1.40/_ping",
    ] {
        let text = request(&gw, "GET", path);
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        assert!(text.ends_with("OK"), "{path}: {text}");
    }
    // The version prefix the client chose is what the daemon sees: one below the daemon's
    // minimum is refused by the daemon itself.
    let text = request(&gw, "GET", "/v1.11/version");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("is too old"), "{text}");
    // A lower-case method is the same call (the daemon's router would 404 it, a hook must not
    // be dodged by it).
    let text = request(&gw, "get", "/v1.41/_ping");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // HEAD /_ping with the daemon's version headers, in the daemon's header case.
    let text = request(&gw, "HEAD", "/_ping");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Api-Version: 1.41\r\n"), "{text}");
    assert!(text.contains("Ostype: linux\r\n"), "{text}");
    // A path that cannot be decoded is a Docker JSON 400 from luastrip.
    let text = request(&gw, "GET", "/v1.41/containers/%ff/json");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains(r#"{"message":"luastrip: the request path"#),
        "{text}"
    );
}

/// One request without a body on its own connection; the whole response as text.
fn request(gw: &Gateway, method: &str, path: &str) -> String {
    support::raw(&gw.socket, &support::http_request(method, path, "", b""))
}

#[test]
fn the_gateway_survives_and_recovers_when_the_daemon_dies() {
    let dir = support::run_dir().join("dockerd-killable");
    let daemon = Daemon::start(&dir);
    let gw = Gateway::start_with(&daemon.socket, &[]);
    let ok = run_ok(
        gw.docker()
            .args(["version", "--format", "{{.Server.Version}}"]),
    );
    assert!(!ok.trim().is_empty());
    daemon.stop();
    // The daemon is gone: the CLI gets luastrip's Docker-format 502 and says so.
    let out = output(gw.docker().args(["ps"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("luastrip: cannot reach the Docker daemon at unix://"),
        "CLI printed: {err}"
    );
    let text = request(&gw, "GET", "/v1.41/containers/json");
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON body");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains(&daemon.socket.display().to_string()));
    // The daemon comes back: calls succeed again through the same gateway.
    let daemon = Daemon::start(&dir);
    let ok = run_ok(gw.docker().args(["ps", "-a", "--format", "{{.ID}}"]));
    let _ = ok;
    daemon.stop();
}
