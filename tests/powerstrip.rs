//! Powerstrip adapters from route scripts: Powerstrip's own scenarios (adders, chains, query
//! strings, streams) and every failure mode, against real adapter servers started here.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{json_answer, Answer};
use support::{run_ok, Daemon, Gateway, IMAGE};

/// A Powerstrip adapter server on loopback. The path picks the behaviour:
/// `/add/N` adds N to `Number` in the body (pre or post), `/label` adds a label to a create body,
/// `/status500`, `/notjson`, `/nokeys`, `/v2`, `/slow` misbehave. Every hook it receives is kept.
struct Adapters {
    port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Adapters {
    fn start() -> Adapters {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        support::serve_http(l, move |req| {
            let path = req.target.clone();
            let hook: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            kept.lock()
                .unwrap()
                .push(json!({"path": path, "hook": hook}));
            let text = |status: &str, body: &str| -> Answer {
                (status.into(), "text/plain".into(), body.as_bytes().to_vec())
            };
            match path.as_str() {
                "/status500" => text("500 Internal Server Error", "adapter broke"),
                "/notjson" => text("200 OK", "hello"),
                "/nokeys" => json_answer(&json!({"PowerstripProtocolVersion": 1})),
                "/v2" => json_answer(
                    &json!({"PowerstripProtocolVersion": 2, "ModifiedClientRequest": hook["ClientRequest"]}),
                ),
                "/slow" => {
                    std::thread::sleep(Duration::from_secs(5));
                    json_answer(&json!({}))
                }
                p => {
                    let add: i64 = p
                        .strip_prefix("/add/")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let edit = |text: &str| -> String {
                        let mut v: Value = serde_json::from_str(text).unwrap_or(json!({}));
                        if p == "/label" {
                            v["Labels"]["powerstrip"] = json!("was-here");
                        } else {
                            v["Number"] = json!(v["Number"].as_i64().unwrap_or(0) + add);
                        }
                        v.to_string()
                    };
                    json_answer(&if hook["Type"] == "pre-hook" {
                        let mut cr = hook["ClientRequest"].clone();
                        if let Some(b) = cr["Body"].as_str() {
                            cr["Body"] = json!(edit(b));
                        }
                        json!({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": cr})
                    } else {
                        let mut sr = hook["ServerResponse"].clone();
                        sr["Body"] = json!(edit(sr["Body"].as_str().unwrap_or("{}")));
                        json!({"PowerstripProtocolVersion": 1, "ModifiedServerResponse": sr})
                    })
                }
            }
        });
        Adapters { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen_paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["path"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A stand-in upstream on a Unix socket that answers every request with its own body (as
/// JSON), counting requests other than the gateway's start-up `/_ping`: Powerstrip's adder
/// scenarios need an upstream that returns `Number`.
struct EchoUpstream {
    socket: PathBuf,
    hits: Arc<AtomicUsize>,
}

impl EchoUpstream {
    fn start() -> EchoUpstream {
        let socket = support::temp_dir("echo-upstream").join("echo.sock");
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        support::serve_http(UnixListener::bind(&socket).unwrap(), move |req| {
            if req.target != "/_ping" {
                h.fetch_add(1, Ordering::SeqCst);
            }
            let body = if req.body.is_empty() {
                b"{}".to_vec()
            } else {
                req.body.clone()
            };
            ("200 OK".into(), "application/json".into(), body)
        });
        EchoUpstream { socket, hits }
    }
}

fn gateway(upstream: &std::path::Path, script: &str) -> Gateway {
    let dir = support::temp_dir("ps");
    let path = dir.join("adapters.lua");
    std::fs::write(&path, script).unwrap();
    Gateway::start_with(upstream, &["--scripts", path.to_str().unwrap()])
}

fn post_json(gw: &Gateway, path: &str, body: &str) -> (String, Value, Duration) {
    let t = Instant::now();
    let out = support::post_json(&gw.socket, path, body);
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    // The Content-Length must match what we got.
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .expect("a Content-Length");
    assert_eq!(
        len,
        body.len(),
        "Content-Length does not match the body: {out}"
    );
    (
        head.to_string(),
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
        t.elapsed(),
    )
}

#[test]
fn adders_as_pre_and_post_hooks_chain_like_powerstrip() {
    let a = Adapters::start();
    let up = EchoUpstream::start();
    let mut script = format!(
        "route.pre(\"POST /*/number\", powerstrip.adapter(\"{}\"))\nroute.pre(\"POST /*/number\", powerstrip.adapter(\"{}\"))\n",
        a.url("/add/1"),
        a.url("/add/2")
    );
    for _ in 0..9 {
        script.push_str(&format!(
            "route.post(\"POST /*/number\", powerstrip.adapter(\"{}\"))\n",
            a.url("/add/1")
        ));
    }
    let gw = gateway(&up.socket, &script);
    let (head, v, _) = post_json(&gw, "/v1.41/x/number?name=first&x=1", r#"{"Number": 1}"#);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // 1, +1 +2 before the upstream, +9 after it.
    assert_eq!(v["Number"], 13);
    let seen = a.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 11);
    // Query strings reach the adapters (and the version prefix the client used).
    assert_eq!(
        seen[0]["hook"]["ClientRequest"]["Request"],
        "/v1.41/x/number?name=first&x=1"
    );
    assert_eq!(seen[0]["hook"]["Type"], "pre-hook");
    assert_eq!(seen[2]["hook"]["Type"], "post-hook");
    assert_eq!(seen[2]["hook"]["ServerResponse"]["Code"], 200);
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_failing_adapter_fails_the_call_closed_quickly_and_names_itself() {
    let a = Adapters::start();
    let up = EchoUpstream::start();
    for (path, why) in [
        ("http://127.0.0.1:1/hook".to_string(), "cannot connect"),
        (a.url("/status500"), "500"),
        (a.url("/notjson"), "not Powerstrip protocol JSON"),
        (a.url("/nokeys"), "no ModifiedClientRequest"),
        (a.url("/v2"), "PowerstripProtocolVersion 2"),
        (a.url("/slow"), "no reply within 1s"),
    ] {
        let gw = gateway(
            &up.socket,
            &format!(
                "route.pre(\"POST /**\", powerstrip.adapter(\"{path}\", {{ timeout = 1 }}))\n"
            ),
        );
        let (head, v, took) = post_json(&gw, "/v1.41/x", r#"{"Number": 1}"#);
        assert!(head.starts_with("HTTP/1.1 502"), "{path}: {head}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(&format!("luastrip: adapter {path} failed: ")),
            "{path}: {msg}"
        );
        assert!(msg.contains(why), "{path}: want {why:?} in {msg}");
        assert!(took < Duration::from_secs(3), "{path}: took {took:?}");
        // The gateway keeps serving calls the adapter does not hook.
        let resp = support::raw(
            &gw.socket,
            "GET /probe HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 200"));
    }
    // Nothing reached the upstream on a failed pre-hook: only the six GET probes did.
    assert_eq!(up.hits.load(Ordering::SeqCst), 6);
}

#[test]
fn docker_cli_through_adapters_and_streams_stay_untouched() {
    let a = Adapters::start();
    let script = format!(
        "route.pre(\"POST /containers/create\", powerstrip.adapter(\"{}\"))\nroute.pre(\"* /**\", powerstrip.adapter(\"{}\"))\nroute.post(\"* /**\", powerstrip.adapter(\"{}\"))\n",
        a.url("/label"),
        a.url("/add/0"),
        a.url("/add/0")
    );
    let gw = gateway(&Daemon::shared().socket, &script);
    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let label = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"powerstrip\"}}",
        &id,
    ]));
    assert_eq!(label.trim(), "was-here");
    run_ok(gw.docker().args(["rm", &id]));
    // Interactive runs and followed logs still work with adapters on everything.
    support::assert_interactive_and_follow_work(&gw);
    // No post-hook was ever called for a hijacked or streaming call.
    let seen = a.seen.lock().unwrap().clone();
    for h in &seen {
        if h["hook"]["Type"] == "post-hook" {
            let r = h["hook"]["ClientRequest"]["Request"].as_str().unwrap();
            assert!(
                !r.contains("/attach") && !r.contains("/logs") && !r.contains("/wait"),
                "post-hook on a stream: {r}"
            );
        }
    }
    assert!(a.seen_paths().iter().any(|p| p == "/label"));
}

fn with_config(upstream: &std::path::Path, yaml: &str) -> (Gateway, PathBuf) {
    let dir = support::temp_dir("ps-config");
    let path = dir.join("adapters.yml");
    std::fs::write(&path, yaml).unwrap();
    let gw = Gateway::start_with(upstream, &["--powerstrip-config", path.to_str().unwrap()]);
    (gw, path)
}

#[test]
fn adapters_yml_chains_run_like_powerstrip() {
    let a = Adapters::start();
    let up = EchoUpstream::start();
    // An empty configuration passes everything through.
    let (gw, _) = with_config(&up.socket, "version: 1\n");
    let (_, v, _) = post_json(&gw, "/v1.41/x/number", r#"{"Number": 1}"#);
    assert_eq!(v["Number"], 1);
    drop(gw);
    let yaml = format!(
        "version: 1\nendpoints:\n  \"POST /*/x/number\":\n    pre: [plus1, plus2]\n    post: [plus1]\nadapters:\n  plus1: {}\n  plus2: {}\n",
        a.url("/add/1"),
        a.url("/add/2")
    );
    let (gw, path) = with_config(&up.socket, &yaml);
    // Versioned and unversioned spellings both match "/*/".
    for spelling in ["/v1.41/x/number", "/x/number"] {
        let (_, v, _) = post_json(&gw, spelling, r#"{"Number": 1}"#);
        assert_eq!(v["Number"], 5, "{spelling}");
    }
    // A failing adapter from the file is reported as the adapter's error.
    std::fs::write(
        &path,
        "version: 1\nendpoints:\n  \"POST /*/x/number\":\n    pre: [gone]\nadapters:\n  gone: http://127.0.0.1:1/\n",
    )
    .unwrap();
    let t = Instant::now();
    loop {
        let (head, v, _) = post_json(&gw, "/x/number", r#"{"Number": 1}"#);
        if head.starts_with("HTTP/1.1 502") {
            assert!(v["message"]
                .as_str()
                .unwrap()
                .starts_with("luastrip: adapter http://127.0.0.1:1/ failed"));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the edited adapters.yml was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_adapters_yml_stops_serve_with_the_line() {
    let dir = support::temp_dir("ps-bad");
    let path = dir.join("adapters.yml");
    std::fs::write(
        &path,
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [missing]\n",
    )
    .unwrap();
    let sock = dir.join("gw.sock");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["serve", "--listen"])
        .arg(format!("unix://{}", sock.display()))
        .arg("--upstream")
        .arg(Daemon::shared().host())
        .arg("--powerstrip-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("adapters.yml:4: adapter \"missing\" is not defined"),
        "{err}"
    );
    assert!(
        !sock.exists(),
        "a socket appeared for a gateway that could not start"
    );
}

#[test]
fn docker_run_i_and_logs_f_work_with_catch_all_adapters_from_adapters_yml() {
    let a = Adapters::start();
    let yaml = format!(
        "version: 1\nendpoints:\n  \"* *\":\n    pre: [noop]\n    post: [noop]\nadapters:\n  noop: {}\n",
        a.url("/add/0")
    );
    let (gw, _) = with_config(&Daemon::shared().socket, &yaml);
    support::assert_interactive_and_follow_work(&gw);
    assert!(!a.seen_paths().is_empty(), "the adapters were called");
}

#[test]
fn the_python_example_adapter_labels_containers() {
    support::require_tool("python3", "python3");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/powerstrip");
    let mut adapter = std::process::Command::new("python3")
        .arg(example.join("label_adapter.py"))
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for its "listening" line.
    let mut line = [0u8; 16];
    adapter
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    let yaml = std::fs::read_to_string(example.join("adapters.yml"))
        .unwrap()
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{port}"));
    let (gw, _) = with_config(&Daemon::shared().socket, &yaml);
    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let label = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"example.adapter\"}}",
        &id,
    ]));
    let _ = adapter.kill();
    let _ = adapter.wait();
    assert_eq!(label.trim(), "label_adapter.py");
    run_ok(gw.docker().args(["rm", &id]));
}

/// Removes containers, a network and an image when dropped, so that a failing test leaves
/// nothing behind on the shared daemon.
struct DaemonLeftovers {
    containers: Vec<String>,
    /// Containers with this label (`KEY=VALUE`) go too.
    label: String,
    network: String,
    image: String,
}

impl Drop for DaemonLeftovers {
    fn drop(&mut self) {
        let d = Daemon::shared();
        let labelled = support::output(d.docker().args([
            "ps",
            "-aq",
            "--filter",
            &format!("label={}", self.label),
        ]));
        let labelled = String::from_utf8_lossy(&labelled.stdout).into_owned();
        for c in self
            .containers
            .iter()
            .map(String::as_str)
            .chain(labelled.split_whitespace())
        {
            let _ = support::output(d.docker().args(["rm", "-f", c]));
        }
        let _ = support::output(d.docker().args(["network", "rm", &self.network]));
        let _ = support::output(d.docker().args(["rmi", "-f", &self.image]));
    }
}

/// A relay in front of dockerd's socket (the real daemon behind it) that counts the requests
/// whose bytes contain `needle`; its socket, and the count so far.
fn counting_relay(daemon: &std::path::Path, needle: String) -> (PathBuf, impl Fn() -> usize) {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let path = support::temp_dir("relay").join("docker.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // What each connection's client sent, whole (a needle may span two reads).
    type Sent = Arc<Mutex<Vec<u8>>>;
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let all = sent.clone();
    let daemon = daemon.to_path_buf();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(up) = UnixStream::connect(&daemon) else {
                continue;
            };
            let mine = Arc::new(Mutex::new(Vec::new()));
            all.lock().unwrap().push(mine.clone());
            let (mut from_client, mut to_daemon) =
                (client.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    mine.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to_daemon.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_daemon.shutdown(std::net::Shutdown::Write);
            });
            let (mut from_daemon, mut to_client) = (up, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_daemon, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let count = move || {
        sent.lock()
            .unwrap()
            .iter()
            .map(|c| {
                let c = c.lock().unwrap();
                c.windows(needle.len())
                    .filter(|w| *w == needle.as_bytes())
                    .count()
            })
            .sum()
    };
    (path, count)
}

/// Powerstrip's adapters ran as containers, named by host name in adapters.yml. The example
/// adapter (examples/powerstrip/container: the busybox image plus a static CGI script) runs as
/// a container on a Docker network; adapters.yml names it; luastrip finds it through the daemon,
/// and again after it restarts, and a stopped or unknown container is an error naming it.
#[test]
fn an_adapter_runs_as_a_container_named_in_adapters_yml() {
    let d = Daemon::shared();
    let pid = std::process::id();
    let name = format!("lsadapter-{pid}");
    let left = DaemonLeftovers {
        containers: vec![name.clone()],
        // What the adapter labels the creates with.
        label: "example.adapter=container".into(),
        network: format!("lsadapter-net-{pid}"),
        image: format!("luastrip-test/adapter:{pid}"),
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/powerstrip/container");
    run_ok(d.docker().args([
        "build",
        "-q",
        "--build-arg",
        &format!("BASE={IMAGE}"),
        "-t",
        &left.image,
        example,
    ]));
    run_ok(d.docker().args(["network", "create", &left.network]));
    run_ok(d.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &left.network,
        &left.image,
    ]));
    // The gateway reaches dockerd through a relay that counts the lookups of the adapter.
    let (relay, lookups) = counting_relay(&d.socket, format!("/containers/{name}/json "));
    let (gw, _) = with_config(
        &relay,
        &format!(
            "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [labeller]\n\
             adapters:\n  labeller: http://{name}/cgi-bin/adapter\n"
        ),
    );
    let create = |gw: &Gateway| support::output(gw.docker().args(["create", IMAGE, "true"]));
    let labelled = |out: &std::process::Output| {
        assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        run_ok(d.docker().args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"example.adapter\"}}",
            &id,
        ]))
    };
    support::wait_until("httpd in the adapter", Duration::from_secs(10), || {
        create(&gw).status.success()
    });
    assert_eq!(labelled(&create(&gw)).trim(), "container");
    // The address found is kept while the daemon says nothing changed: no lookup per call.
    let before = lookups();
    for _ in 0..5 {
        assert!(create(&gw).status.success());
    }
    assert!(
        lookups() <= before + 1,
        "{} lookups for 5 calls",
        lookups() - before
    );
    // Stopped: the create fails closed, naming the container. (Once the gateway has heard the
    // daemon's `die` event, which it may hear a moment after `docker stop` returns: until then
    // it tries the old address, and that fails closed too.)
    run_ok(d.docker().args(["stop", "-t", "1", &name]));
    let not_running = format!("the adapter container {name} is not running");
    support::wait_until("the stopped adapter named", Duration::from_secs(10), || {
        let out = create(&gw);
        assert!(!out.status.success(), "a create passed a stopped adapter");
        String::from_utf8_lossy(&out.stderr).contains(&not_running)
    });
    // Started again (with whatever address it gets now): found again, by a new lookup.
    let before = lookups();
    run_ok(d.docker().args(["start", &name]));
    support::wait_until("the restarted adapter", Duration::from_secs(10), || {
        create(&gw).status.success()
    });
    assert_eq!(labelled(&create(&gw)).trim(), "container");
    assert!(lookups() > before);
    // A name no container has: a clear error.
    let gw2 = Gateway::with_script(
        &format!(
            "route.pre(\"POST /containers/create\", powerstrip.adapter(\"http://nosuch-{pid}/x\"))"
        ),
        &[],
    );
    let out = create(&gw2);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no container named nosuch-{pid}")),
        "{err}"
    );
}
