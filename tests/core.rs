//! The core's contract with hooks, through the real binary in front of a real dockerd: what a
//! hook sees is what dockerd acts on (bodies by route, queries by Go's rules, rewrites re-matched),
//! every call is journaled (cancelled ones too), and bad input or a bad set-up is refused clearly.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    http_request as request, json_body, output, raw, run_ok, status, Daemon, Gateway, IMAGE,
};

#[test]
fn a_post_hook_edits_docker_inspect_output_however_the_daemon_frames_it() {
    let gw = Gateway::with_script(
        r#"
        route.post("GET /containers/{id}/json", function(req, res)
          assert(not res.streaming, "inspect was treated as a stream")
          local c = res:json()
          c.Config.Labels["luastrip-edited"] = "yes"
          res:set_json(c)
        end)
        "#,
        &[],
    );
    // Enough environment that the daemon sends the inspect answer chunked, without a length.
    let d = Daemon::shared();
    let mut create = d.docker();
    create.args(["create"]);
    for i in 0..300 {
        create.args(["-e", &format!("VARIABLE_{i}={}", "v".repeat(40))]);
    }
    let id = run_ok(create.args([IMAGE, "true"])).trim().to_string();
    let direct = raw(
        &d.socket,
        &request("GET", &format!("/v1.41/containers/{id}/json"), "", b""),
    );
    assert!(
        direct
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the daemon framed the answer with a length; the test needs a chunked one"
    );
    let label = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"luastrip-edited\"}}",
        &id,
    ]));
    assert_eq!(label.trim(), "yes");
    run_ok(d.docker().args(["rm", "-f", &id]));
}

#[test]
fn docker_py_put_archive_and_load_image_work_through_a_catch_all_hook() {
    assert!(
        Command::new("/usr/bin/python3")
            .args(["-c", "import docker"])
            .status()
            .is_ok_and(|s| s.success()),
        "docker-py is missing: apt-get install -y python3-docker"
    );
    let gw = Gateway::with_script(
        r#"
        route.pre("* /**", function(req) local _ = req.body end)
        route.post("* /**", function(req, res) end)
        "#,
        &["--body-limit-mb", "1"],
    );
    let script = support::temp_dir("docker-py").join("t.py");
    std::fs::write(
        &script,
        r#"
import docker, hashlib, io, os, sys, tarfile
c = docker.APIClient(base_url="unix://" + sys.argv[1], version="1.41")
image = sys.argv[2]
cid = c.create_container(image, "true")["Id"]
data = os.urandom(3 << 20)
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    info = tarfile.TarInfo("big.bin")
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))
assert c.put_archive(cid, "/", buf.getvalue())
stream, stat = c.get_archive(cid, "/big.bin")
got = tarfile.open(fileobj=io.BytesIO(b"".join(stream))).extractfile("big.bin").read()
assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "archive bytes differ"
c.remove_container(cid, force=True)
tag = "luastrip-test/pyload:%d" % os.getpid()
c.tag(image, tag)
saved = b"".join(c.get_image(tag))
c.remove_image(tag)
c.load_image(saved)
assert c.inspect_image(tag)["Id"] == c.inspect_image(image)["Id"]
c.remove_image(tag)
print("ok", len(saved))
"#,
    )
    .unwrap();
    let out = output(
        Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&gw.socket)
            .arg(IMAGE),
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok"),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
}

#[test]
fn a_json_body_is_visible_to_hooks_whatever_its_content_type_says() {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/deny-privileged.lua");
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", policy.to_str().unwrap()],
    );
    let body =
        format!(r#"{{"Image":"{IMAGE}","Cmd":["true"],"HostConfig":{{"Privileged":true}}}}"#);
    for ct in [
        &b"Content-Type: application/json; charset=\"\xff\"\r\n"[..],
        b"Content-Type: application/x-tar\r\n",
        b"Content-Type: text/plain\r\n",
        b"",
    ] {
        let mut head =
            b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\n".to_vec();
        head.extend_from_slice(ct);
        head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        head.extend_from_slice(body.as_bytes());
        let resp = raw(&gw.socket, &head);
        assert_eq!(
            status(&resp),
            "403",
            "{:?}: {resp}",
            String::from_utf8_lossy(ct)
        );
    }
}

#[test]
fn repeated_query_keys_show_hooks_the_value_dockerd_uses() {
    let gw = Gateway::with_script(
        r#"
        route.pre("GET /containers/json", function(req)
          if req.query.all == "1" then
            return { status = 403, json = { message = "listing stopped containers is not allowed" } }
          end
        end)
        route.endpoint("GET /luastrip/query", function(req)
          return { status = 200, json = { first = req.query.x, all = req:query_all("x") } }
        end)
        "#,
        &[],
    );
    let get = |target: &str| raw(&gw.socket, &request("GET", target, "", b""));
    // dockerd reads the first: all=1. The hook must see that one.
    assert_eq!(status(&get("/v1.41/containers/json?all=1&all=0")), "403");
    assert_eq!(status(&get("/v1.41/containers/json?all=%31&all=0")), "403");
    assert_eq!(status(&get("/v1.41/containers/json?all=0&all=1")), "200");
    let v = json_body(&get("/luastrip/query?x=1&y=2&x=a+b"));
    assert_eq!(v["first"], "1");
    assert_eq!(v["all"], serde_json::json!(["1", "a b"]));
    // JSON in build options is read as dockerd reads it too.
    let q = support::query(&[("buildargs", r#"{"A":"1","A":"2"}"#)]);
    let resp = raw(
        &gw.socket,
        &request("POST", &format!("/v1.41/build?{q}"), "", b""),
    );
    assert_eq!(status(&resp), "400", "{resp}");
    assert!(json_body(&resp)["message"]
        .as_str()
        .unwrap()
        .contains("appears twice"));
    // What Go's parser would drop or read differently is refused before any hook.
    for bad in [
        "/v1.41/containers/json?all=0;all=1",
        "/v1.41/containers/json?all=%zz&all=1",
        "/v1.41/containers/json?all=%ff",
    ] {
        let resp = get(bad);
        assert_eq!(status(&resp), "400", "{bad}: {resp}");
        assert!(json_body(&resp)["message"]
            .as_str()
            .unwrap()
            .contains("query string"));
    }
}

#[test]
fn request_targets_without_a_path_are_refused_and_journaled() {
    let gw = Gateway::start();
    for target in ["example.com:80", "*"] {
        let resp = raw(&gw.socket, &request("POST", target, "", b""));
        assert_eq!(status(&resp), "400", "{target}: {resp}");
        assert!(json_body(&resp)["message"]
            .as_str()
            .unwrap()
            .contains("not a path"));
    }
    // An absolute-form target is routed by its path, as Go's server does.
    let resp = raw(
        &gw.socket,
        &request("GET", "http://docker/v1.41/_ping", "", b""),
    );
    assert_eq!(status(&resp), "200", "{resp}");
    let (_, calls) = gw.control("GET", "/calls", "");
    let raws: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == 400)
        .map(|c| c["raw"].as_str().unwrap())
        .collect();
    assert_eq!(raws, vec!["example.com:80", "*"]);
    run_ok(gw.docker().arg("version"));
}

#[test]
fn a_rewritten_call_gets_the_new_routes_hooks_and_hijack_class() {
    let gw = Gateway::with_script(
        r#"
        route.pre("POST /luastrip/create", function(req) req.path = "/containers/create" end)
        route.pre("POST /containers/create", function(req)
          local spec = req:json()
          if type(spec.HostConfig) == "table" and spec.HostConfig.Privileged == true then
            return { status = 403, json = { message = "privileged containers are not allowed" } }
          end
        end)
        route.pre("* /loop/a", function(req) req.path = "/loop/b" end)
        route.pre("* /loop/b", function(req) req.path = "/loop/a" end)
        route.pre("POST /luastrip/attach/{id}", function(req)
          req.path = "/containers/" .. req.params.id .. "/attach"
        end)
        "#,
        &[],
    );
    let spec = |privileged: bool| {
        format!(
            r#"{{"Image":"{IMAGE}","Cmd":["true"],"HostConfig":{{"Privileged":{privileged}}}}}"#
        )
    };
    let ct = "Content-Type: application/json\r\n";
    let denied = raw(
        &gw.socket,
        &request("POST", "/v1.41/luastrip/create", ct, spec(true).as_bytes()),
    );
    assert_eq!(status(&denied), "403", "{denied}");
    let created = raw(
        &gw.socket,
        &request("POST", "/v1.41/luastrip/create", ct, spec(false).as_bytes()),
    );
    assert_eq!(status(&created), "201", "{created}");
    let id = json_body(&created)["Id"].as_str().unwrap().to_string();
    run_ok(Daemon::shared().docker().args(["rm", &id]));

    let looped = raw(&gw.socket, &request("GET", "/loop/a", "", b""));
    assert_eq!(status(&looped), "500", "{looped}");
    assert!(json_body(&looped)["message"]
        .as_str()
        .unwrap()
        .contains("/loop/a → GET /loop/b → GET /loop/a"));

    // The rewritten call is an attach: an old-style hijack the gateway must set up.
    let d = Daemon::shared();
    let id = run_ok(
        d.docker()
            .args(["run", "-d", IMAGE, "echo", "hello-from-attach"]),
    );
    let id = id.trim();
    run_ok(d.docker().args(["wait", id]));
    // The log copier may lag the exit: attach replays logs only once they are written.
    let t = Instant::now();
    while !run_ok(d.docker().args(["logs", id])).contains("hello-from-attach") {
        assert!(t.elapsed() < Duration::from_secs(10), "no log line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let resp = raw(
        &gw.socket,
        format!("POST /v1.41/luastrip/attach/{id}?logs=1&stream=0&stdout=1 HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&resp), "200", "{resp}");
    assert!(
        resp.contains("hello-from-attach"),
        "{resp}\n{}",
        gw.log_text()
    );
    run_ok(d.docker().args(["rm", id]));
}

#[test]
fn a_call_whose_client_leaves_is_journaled_and_no_longer_held() {
    let gw = Gateway::start();
    let (st, _) = gw.control("POST", "/intercept", "~u /containers/json");
    assert!(st.contains("200"), "{st}");
    let mut client = UnixStream::connect(&gw.socket).unwrap();
    client
        .write_all(&request(
            "GET",
            "/v1.41/containers/json?luastrip-cancel=1",
            "",
            b"",
        ))
        .unwrap();
    let held = || {
        gw.control("GET", "/intercepted", "").1["held"]
            .as_array()
            .unwrap()
            .len()
    };
    let t = Instant::now();
    while held() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the call was never held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    let t = Instant::now();
    let record = loop {
        let (_, calls) = gw.control("GET", "/calls", "");
        let found = calls
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["raw"].as_str().unwrap_or("").contains("luastrip-cancel"))
            .cloned();
        if let Some(r) = found {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the cancelled call was never journaled"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(record["cancelled"], true, "{record}");
    assert_eq!(record["status"], Value::Null, "{record}");
    assert_eq!(held(), 0, "the call stays listed as held");
    gw.control("POST", "/intercept", "");
}

#[test]
fn a_reload_that_fails_on_any_vm_keeps_the_old_scripts_on_every_worker() {
    // The 5th load fails: with two workers, start-up loads 3 VMs (2 workers + control), so a
    // reload's 1st VM loads and its 2nd fails. No worker may end up with a broken VM.
    let gw = Gateway::with_script(
        r#"
        if store.incr("loads", 1) == 5 then error("the fifth load fails") end
        route.endpoint("GET /luastrip/alive", function() return { status = 200, json = { ok = true } } end)
        "#,
        &["--threads", "2"],
    );
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) };
    let t = Instant::now();
    while !gw.log_text().contains("reload failed") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", gw.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gw.log_text().contains("the fifth load fails"));
    for i in 0..20 {
        let resp = raw(&gw.socket, &request("GET", "/luastrip/alive", "", b""));
        assert_eq!(status(&resp), "200", "call {i}: {resp}");
    }
}

#[test]
fn slow_request_heads_are_cut_off_but_streams_run_on() {
    let gw = Gateway::start_with(&Daemon::shared().socket, &["--header-timeout-s", "1"]);
    let mut slow = UnixStream::connect(&gw.socket).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\n")
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        t.elapsed()
    );
    // An event stream outlives the head timeout.
    let mut events = UnixStream::connect(&gw.socket).unwrap();
    events
        .write_all(&request("GET", "/v1.41/events", "", b""))
        .unwrap();
    events
        .set_read_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    let mut head = [0u8; 512];
    let n = events.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    match events.read(&mut head) {
        Ok(0) => panic!("the event stream was closed"),
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    // A container that runs longer than the head timeout: the wait stream holds.
    run_ok(gw.docker().args(["run", "--rm", IMAGE, "sleep", "2"]));
    // Made-up methods are counted under one metrics label.
    raw(&gw.socket, &request("FOOBAR", "/_ping", "", b""));
    // Metrics follow the journal in their own task: wait for the call to be counted.
    let t = Instant::now();
    let metrics = loop {
        let m = raw(
            &gw.control_socket(),
            b"GET /metrics HTTP/1.1\r\nHost: ctl\r\nConnection: close\r\n\r\n",
        );
        if m.contains("method=\"OTHER\"") || t.elapsed() > Duration::from_secs(10) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
    assert!(!metrics.contains("FOOBAR"), "{metrics}");
}

#[test]
fn a_gateway_refuses_to_forward_to_itself() {
    let dir = support::temp_dir("self");
    let sock = dir.join("l.sock");
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&sock, &link).unwrap();
    let listen = format!("unix://{}", sock.display());
    let serve = |args: &[&str], docker_host: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_luastrip"));
        c.arg("serve").args(args).env_remove("LUASTRIP_UPSTREAM");
        match docker_host {
            Some(h) => c.env("DOCKER_HOST", h),
            None => c.env_remove("DOCKER_HOST"),
        };
        let out = output(&mut c);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let link_up = format!("unix://{}", link.display());
    for (args, host) in [
        (vec!["--listen", &listen, "--upstream", &listen], None),
        (vec!["--listen", &listen], Some(listen.as_str())),
        (vec!["--listen", &listen, "--upstream", &link_up], None),
    ] {
        let (ok, err) = serve(&args, host);
        assert!(!ok, "{args:?} started");
        assert!(err.contains("own listen socket"), "{args:?}: {err}");
        assert!(!sock.exists(), "{args:?} left its socket behind");
    }
    // An upstream that does not answer is worth a warning, not a refusal.
    let gw = Gateway::start_with(&dir.join("nobody.sock"), &[]);
    let t = Instant::now();
    while !gw.log_text().contains("does not answer /_ping") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", gw.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_readme_commands_need_no_sudo() {
    // The README and the docs it points to.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(e.unwrap().path());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        assert!(
            !text.contains("sudo "),
            "{name}: a fresh Debian has no sudo; say 'as root' instead"
        );
        // Every script it tells you to run is in the repository.
        for word in text.split_whitespace() {
            let w = word.trim_matches(|c: char| "`()[],.;:".contains(c));
            if (w.starts_with("tools/") || w.starts_with("bench/") || w.starts_with(".ci/"))
                && w.ends_with(".sh")
            {
                assert!(
                    root.join(w).exists(),
                    "{name} names {w}, which does not exist"
                );
            }
        }
        // Every document a link points to is in the repository.
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap_or(0)];
            let path = target.split('#').next().unwrap();
            if path.is_empty() || path.contains("://") {
                continue;
            }
            assert!(
                file.parent().unwrap().join(path).exists(),
                "{name} links to {target}, which does not exist"
            );
        }
    }
}

/// A client that goes away in the middle of a streamed upload (a `docker build` killed while it
/// sends its context, `docker build … | head`) is journaled and logged as the client going
/// away, not as a 502 from the daemon.
#[test]
fn a_client_gone_mid_upload_is_not_a_daemon_error() {
    let gw = Gateway::start();
    // A real context (a Dockerfile and 8 MB), of which only the first 2 MB are sent.
    let dir = support::temp_dir("gone");
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY big /big\n"),
    )
    .unwrap();
    std::fs::write(dir.join("big"), support::random_bytes(8 << 20)).unwrap();
    let out = output(
        Command::new("tar")
            .arg("-cf")
            .arg("-")
            .arg("-C")
            .arg(&dir)
            .args(["Dockerfile", "big"]),
    );
    assert!(out.status.success());
    let mut client = UnixStream::connect(&gw.socket).unwrap();
    let head = format!(
        "POST /v1.41/build?t=lsgone HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        out.stdout.len()
    );
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(&out.stdout[..2 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(client);
    let mut record = Value::Null;
    support::wait_until("the build is journaled", Duration::from_secs(10), || {
        let (_, calls) = gw.control("GET", "/calls", "");
        record = calls
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == "/build")
            .cloned()
            .unwrap_or(Value::Null);
        !record.is_null()
    });
    assert_eq!(record["status"], 499, "{record}");
    assert_eq!(record["error"]["source"], "client", "{record}");
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the client went away while sending its request body"),
        "{record}"
    );
    assert!(!gw.log_text().contains("status=502"), "{}", gw.log_text());
}
