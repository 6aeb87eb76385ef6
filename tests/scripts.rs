//! Lua route scripts through the real binary, in front of a real dockerd.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{json_body, output, run_ok, Daemon, Gateway, IMAGE};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/scripts")
        .join(name)
}

/// A gateway running one script given as text.
fn with_script(name: &str, src: &str) -> (Gateway, PathBuf) {
    let dir = support::temp_dir("scripts");
    let path = dir.join(name);
    std::fs::write(&path, src).unwrap();
    (with_scripts(&path), path)
}

fn with_scripts(path: &Path) -> Gateway {
    Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", path.to_str().unwrap()],
    )
}

fn raw(gw: &Gateway, request: &[u8]) -> String {
    support::raw(&gw.socket, request)
}

/// Container ids (all, running or not) that are privileged.
fn privileged_containers() -> Vec<String> {
    let d = Daemon::shared();
    let ids = run_ok(d.docker().args(["ps", "-aq", "--no-trunc"]));
    // Other tests remove containers meanwhile: inspect what is still there in one go.
    let out = output(
        d.docker()
            .args(["inspect", "-f", "{{.Id}} {{.HostConfig.Privileged}}"])
            .args(ids.lines()),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(" true"))
        .map(String::from)
        .collect()
}

#[test]
fn label_injection_is_visible_in_inspect() {
    let gw = with_scripts(&example("label-inject.lua"));
    let id = run_ok(
        gw.docker()
            .args(["create", "--label", "mine=yes", IMAGE, "true"]),
    )
    .trim()
    .to_string();
    let labels = run_ok(
        gw.docker()
            .args(["inspect", "-f", "{{json .Config.Labels}}", &id]),
    );
    let v: serde_json::Value = serde_json::from_str(labels.trim()).unwrap();
    assert_eq!(v["managed-by"], "luastrip");
    assert_eq!(v["mine"], "yes");
    run_ok(gw.docker().args(["rm", &id]));
}

#[test]
fn privileged_run_and_host_binds_are_denied_with_the_scripts_message() {
    let gw = with_scripts(&example("deny-privileged.lua"));
    let out = output(
        gw.docker()
            .args(["run", "--rm", "--privileged", IMAGE, "true"]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "Error response from daemon: luastrip policy: privileged containers are not allowed"
        ),
        "{err}"
    );
    let out = output(
        gw.docker()
            .args(["run", "--rm", "-v", "/etc:/host-etc", IMAGE, "true"]),
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("a bind mount of the host path /etc is not allowed"));
    // Everything else still works: a plain run ("Binds": null) and a named volume.
    assert_eq!(
        run_ok(gw.docker().args(["run", "--rm", IMAGE, "echo", "plain"])),
        "plain\n"
    );
    let out = run_ok(gw.docker().args([
        "run",
        "--rm",
        "-v",
        "luastrip-test-vol:/data",
        IMAGE,
        "echo",
        "allowed",
    ]));
    assert_eq!(out, "allowed\n");
    let _ = output(gw.docker().args(["volume", "rm", "luastrip-test-vol"]));
}

#[test]
fn no_spelling_of_create_slips_past_the_policy() {
    let gw = with_scripts(&example("deny-privileged.lua"));
    let before = privileged_containers();
    let body =
        format!(r#"{{"Image":"{IMAGE}","Cmd":["true"],"HostConfig":{{"Privileged":true}}}}"#);
    let n = body.len();
    let mut attempts: Vec<(String, Vec<u8>)> = Vec::new();
    for path in [
        "/v1.41/containers/create",
        "/containers/create",
        "//containers/create",
        "/v1.41//containers/create",
        "/containers/create/",
        "/v1.41/containers/create/",
        "/%63ontainers/create",
        "/containers%2Fcreate",
        "/v1.41/containers/./create",
        "/v1.41/x/../containers/create",
        "/v1.41/containers/create?name=sneaky",
    ] {
        attempts.push((
            path.to_string(),
            format!("POST {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n{body}").into_bytes(),
        ));
    }
    attempts.push((
        "lower-case method".into(),
        format!("post /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n{body}").into_bytes(),
    ));
    attempts.push((
        "chunked, no Content-Length".into(),
        format!("POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{n:x}\r\n{body}\r\n0\r\n\r\n").into_bytes(),
    ));
    attempts.push((
        "no Content-Type".into(),
        format!("POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n{body}").into_bytes(),
    ));
    attempts.push((
        "Content-Length: 0 with a body (CVE-2024-41110 class)".into(),
        format!("POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n{body}").into_bytes(),
    ));
    for (what, req) in &attempts {
        let resp = raw(&gw, req);
        assert!(!resp.starts_with("HTTP/1.1 201"), "{what}: created! {resp}");
    }
    assert_eq!(
        privileged_containers(),
        before,
        "a privileged container was created"
    );
}

#[test]
fn lua_endpoint_answers_without_the_daemon() {
    let gw = with_scripts(&example("endpoint.lua"));
    for (path, version) in [
        ("/luastrip/hello", serde_json::Value::Null),
        ("/v1.41/luastrip/hello", "1.41".into()),
    ] {
        let resp = raw(
            &gw,
            format!("GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let v = json_body(&resp);
        assert_eq!(v["hello"], "world");
        assert_eq!(v["version"], version);
    }
}

#[test]
fn post_hook_rewrites_a_json_response() {
    let gw = with_scripts(&example("version-tag.lua"));
    let out = run_ok(gw.docker().args([
        "version",
        "--format",
        "{{range .Server.Components}}{{.Name}} {{end}}",
    ]));
    assert!(out.contains("luastrip"), "{out}");
    assert!(out.contains("Engine"), "{out}");
}

#[test]
fn with_hooks_on_every_call_run_exit_codes_exact_json_and_streams_still_work() {
    let (gw, _) = with_script(
        "null.lua",
        r#"
        route.pre("* /**", function(req) end)
        route.post("* /**", function(req, res) end)
        -- and a hook that decodes and re-encodes every JSON body (nginx+cjson breaks run here)
        route.pre("* /**", function(req)
          if req.body and #req.body > 0 then req:set_json(req:json()) end
        end)
        route.post("* /**", function(req, res)
          if res.body and #res.body > 0 and (res.headers["content-type"] or ""):find("json") then
            res:set_json(res:json())
          end
        end)
        "#,
    );
    assert_eq!(
        run_ok(gw.docker().args(["run", "--rm", IMAGE, "echo", "hi"])),
        "hi\n"
    );
    let out = output(
        gw.docker()
            .args(["run", "--rm", IMAGE, "sh", "-c", "exit 3"]),
    );
    assert_eq!(out.status.code(), Some(3));
    // The create body went through decode/encode: an empty Dns list must still be a list.
    let id = run_ok(
        gw.docker()
            .args(["create", "--dns-search", "x.example", IMAGE, "true"]),
    )
    .trim()
    .to_string();
    let dns = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{json .HostConfig.Dns}} {{json .HostConfig.DnsSearch}}",
        &id,
    ]));
    assert_eq!(dns.trim(), r#"[] ["x.example"]"#);
    // run -i, exec -i and logs -f still stream.
    support::assert_interactive_and_follow_work(&gw);
    run_ok(gw.docker().args(["rm", "-f", &id]));
}

#[test]
fn failing_hooks_fail_closed_with_file_and_line() {
    let (gw, path) = with_script(
        "faults.lua",
        r#"route.pre("POST /containers/create", function(req)
  local spec = req:json()
  if spec.Labels and spec.Labels.fault == "error" then
    error("boom")
  elseif spec.Labels and spec.Labels.fault == "loop" then
    while true do end
  elseif spec.Labels and spec.Labels.fault == "memory" then
    local t, kb = {}, string.rep("x", 1024)
    for i = 1, 1e9 do t[i] = string.rep(kb, 1024) .. i end
  elseif spec.Labels and spec.Labels.fault == "nil" then
    return spec.nothing.here
  end
end)
"#,
    );
    let d = Daemon::shared();
    // Other tests share the daemon: count only what these attempts could have created.
    let count = || {
        run_ok(d.docker().args(["ps", "-aq", "--filter", "label=fault"]))
            .lines()
            .count()
    };
    let before = count();
    // A clean call first, so that the faults below also run on reused coroutines.
    let ok = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    run_ok(gw.docker().args(["rm", &ok]));
    // Clients see the script's path below the scripts directory, never the server's layout.
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let server_dir = path.parent().unwrap().display().to_string();
    for (fault, want) in [
        ("loop", format!("{file}:6")),
        ("error", format!("{file}:4: boom")),
        ("loop", format!("{file}:6")),
        // The VM's cap (64 MiB), or the rule that ends a hook holding over half of it for long.
        ("memory", "memory cap".to_string()),
        ("nil", format!("{file}:11")),
    ] {
        let out = output(gw.docker().args([
            "create",
            "--label",
            &format!("fault={fault}"),
            IMAGE,
            "true",
        ]));
        assert!(!out.status.success(), "{fault}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Error response from daemon: luastrip: script error at"),
            "{fault}: {err}"
        );
        assert!(err.contains(&want), "{fault}: want {want:?} in {err}");
        assert!(
            !err.contains(&server_dir),
            "{fault}: the server's path in {err}"
        );
        if fault == "loop" {
            assert!(err.contains("time budget of 100 ms"), "{err}");
        }
    }
    // The log has the whole path.
    assert!(
        gw.log_text().contains(&format!("{}:4", path.display())),
        "{}",
        gw.log_text()
    );
    assert_eq!(count(), before, "a failing hook let a create through");
    // The gateway keeps serving, hooks included.
    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    run_ok(gw.docker().args(["rm", &id]));
}

/// A gateway with no policy says so (issue 20): an empty or mistyped scripts directory is an
/// error for `serve` and `check`, and scripts that register no route are a warning from both.
#[test]
fn no_policy_is_never_silent() {
    let dir = support::temp_dir("no-policy");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("README.txt"), "not a script").unwrap();
    let bin = env!("CARGO_BIN_EXE_luastrip");
    let check = |path: &Path| Command::new(bin).arg("check").arg(path).output().unwrap();
    let out = check(&empty);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no *.lua scripts in this directory"),
        "{out:?}"
    );
    let sock = dir.join("s.sock");
    let out = support::output(
        Command::new(bin)
            .args(["serve", "--listen", &format!("unix://{}", sock.display())])
            .args([
                "--upstream",
                &format!("unix://{}", Daemon::shared().socket.display()),
            ])
            .arg("--scripts")
            .arg(&empty),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no *.lua scripts"),
        "{out:?}"
    );
    assert!(!sock.exists());
    // Scripts without a route: a warning, from check and from serve.
    let quiet = dir.join("quiet.lua");
    std::fs::write(&quiet, "-- nothing registered\n").unwrap();
    let out = check(&quiet);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: no routes"),
        "{out:?}"
    );
    let gw = with_scripts(&quiet);
    support::wait_until("the warning", std::time::Duration::from_secs(10), || {
        gw.log_text()
            .contains("every call passes through unchecked")
    });
    let (gw, _) = with_script("one.lua", "route.pre('GET /_ping', function() end)\n");
    support::wait_until("the count", std::time::Duration::from_secs(10), || {
        gw.log_text().contains("scripts loaded") && gw.log_text().contains("routes=1")
    });
}

#[test]
fn check_reports_errors_with_file_and_line() {
    let ok = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .arg("check")
        .arg(example("deny-privileged.lua"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("ok, 14 routes"), "{text}");
    // The example's routes are registered by the bundled policy module.
    assert!(text.contains("POST /containers/create"), "{text}");
    assert!(text.contains("stdlib/luastrip/policy.lua:"), "{text}");
    let dir = support::temp_dir("check");
    for (name, src, want) in [
        (
            "syntax.lua",
            "route.pre(\"GET /x\", function(req)\n  if then\nend)\n",
            ":2:",
        ),
        (
            "pattern.lua",
            "\n\nroute.pre(\"GET containers\", function() end)\n",
            "pattern.lua:3",
        ),
        ("throws.lua", "local x = nil\nx.y = 1\n", "throws.lua:2"),
        ("sandbox.lua", "os.execute('true')\n", "sandbox.lua:1"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, src).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .arg("check")
            .arg(&p)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{name}: want {want:?} in {err}");
    }
    // serve refuses to start on broken scripts.
    let out = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["serve", "--listen", "unix:///tmp/never.sock", "--scripts"])
        .arg(dir.join("throws.lua"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("throws.lua:2"), "{err}");
    // One "luastrip:" is enough.
    assert!(!err.contains("luastrip: luastrip:"), "{err}");
    assert!(err.starts_with("luastrip: script error at "), "{err}");
}

/// `return { status = 403, message = "…" }` loads and runs, but the client would get a bare
/// 403 (the docker CLI reports it as an API version problem): check flags it with file:line, and
/// at run time it is a script error naming the hook, never a silent 403.
#[test]
fn reply_tables_with_ignored_keys_are_flagged() {
    let dir = support::temp_dir("replykeys");
    let script = dir.join("deny.lua");
    std::fs::write(
        &script,
        "-- deny every create\nroute.pre(\"POST /containers/create\", function(req)\n  \
         return { status = 403, message = \"no creates here\" }\nend)\n",
    )
    .unwrap();
    let out = support::output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .arg("check")
            .arg(&script),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deny.lua:3: this response table has the key \"message\"")
            && err.contains("json = { message"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 problem"));
    // Served anyway, the hook fails closed with a message that says why.
    let gw = Gateway::start_with(
        &support::Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    let out = support::output(gw.docker().args(["create", IMAGE, "true"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deny.lua:2")
            && err.contains("the key \"message\", which the gateway ignores"),
        "{err}"
    );
}

/// `luastrip check adapters.yml` reads it as Powerstrip's config, not as Lua.
#[test]
fn check_reads_adapters_yml_as_a_powerstrip_config() {
    let out = support::output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .arg("check")
            .arg(example("../powerstrip/adapters.yml")),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok, 1 routes") && text.contains("POST /*/containers/create"),
        "{text}"
    );
    let dir = support::temp_dir("checkyml");
    let bad = dir.join("adapters.yaml");
    std::fs::write(
        &bad,
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [nope]\nadapters: {}\n",
    )
    .unwrap();
    let out = support::output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .arg("check")
            .arg(&bad),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("adapters.yaml:4: adapter \"nope\" is not defined")
            && !err.contains("unexpected symbol"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_and_a_broken_edit_keeps_the_old_routes() {
    let (gw, path) = with_script(
        "reload.lua",
        r#"route.endpoint("GET /luastrip/v", function() return { json = { v = 1 } } end)"#,
    );
    let get = |gw: &Gateway| {
        json_body(&raw(
            gw,
            b"GET /luastrip/v HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        ))
    };
    assert_eq!(get(&gw)["v"], 1);
    let hup = |gw: &Gateway| {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(500));
    };
    std::fs::write(
        &path,
        "route.endpoint(\"GET /luastrip/v\", function() return { json = { v = 2 } }",
    )
    .unwrap();
    hup(&gw);
    assert_eq!(get(&gw)["v"], 1, "a broken reload replaced the routes");
    assert!(gw.log_text().contains("reload failed"), "{}", gw.log_text());
    std::fs::write(
        &path,
        r#"route.endpoint("GET /luastrip/v", function() return { json = { v = 2 } } end)"#,
    )
    .unwrap();
    hup(&gw);
    assert_eq!(get(&gw)["v"], 2);
}

#[test]
fn hooks_call_the_daemon_with_docker_get() {
    let (gw, _) = with_script(
        "inspect.lua",
        r#"
        -- Refuse images whose config has no Cmd, after asking the daemon; tag the rest.
        route.pre("POST /containers/create", function(req)
          local spec = req:json()
          local img = docker.get("/images/" .. spec.Image .. "/json")
          if img.status ~= 200 then
            return { status = 400, json = { message = "luastrip: no such image " .. spec.Image } }
          end
          spec.Labels = spec.Labels or json.object()
          spec.Labels["image-id"] = img:json().Id
          req:set_json(spec)
        end)
        "#,
    );
    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let image_id = run_ok(
        Daemon::shared()
            .docker()
            .args(["image", "inspect", "-f", "{{.Id}}", IMAGE]),
    );
    let label = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"image-id\"}}",
        &id,
    ]));
    assert_eq!(label.trim(), image_id.trim());
    run_ok(gw.docker().args(["rm", &id]));
    let out = output(
        gw.docker()
            .args(["create", "luastrip-test/nothing:here", "true"]),
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("luastrip: no such image luastrip-test/nothing:here"));
}

const COUNTER: &str = r#"
local vm = tostring({})   -- unique per VM
route.pre("* /_ping", function(req)
  store.incr("pings")
  store.set("vm:" .. vm, true)
end)
route.endpoint("GET /luastrip/count", function(req)
  return { json = { pings = store.get("pings"), vms = #store.keys("vm:") } }
end)
"#;

#[test]
fn store_counts_calls_across_both_vms_and_persists() {
    let dir = support::temp_dir("store");
    let script = dir.join("counter.lua");
    std::fs::write(&script, COUNTER).unwrap();
    let state = dir.join("state.json");
    let args = [
        "--scripts",
        script.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--threads",
        "2",
    ];
    let gw = Gateway::start_with(&Daemon::shared().socket, &args);
    // Many connections open at once, so that both workers accept some.
    let mut conns: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&gw.socket).unwrap())
        .collect();
    for c in &mut conns {
        c.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    for c in &mut conns {
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    let v = json_body(&raw(
        &gw,
        b"GET /luastrip/count HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(v["pings"], 100);
    assert_eq!(v["vms"], 2, "both worker VMs should have served pings");
    drop(gw);
    // A new gateway with the same state file counts on.
    let gw = Gateway::start_with(&Daemon::shared().socket, &args);
    raw(
        &gw,
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    );
    let v = json_body(&raw(
        &gw,
        b"GET /luastrip/count HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(v["pings"], 101);
    drop(gw);
    // A corrupt state file is a clear start-up error, and is left alone.
    std::fs::write(&state, b"{ half a file").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args([
            "serve",
            "--listen",
            "unix:///tmp/never-state.sock",
            "--upstream",
        ])
        .arg(Daemon::shared().host())
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a luastrip state file"));
    assert_eq!(std::fs::read(&state).unwrap(), b"{ half a file");
}

#[test]
fn editing_a_script_reloads_it_and_a_broken_edit_keeps_the_old_routes() {
    let dir = support::temp_dir("hot");
    std::fs::write(
        dir.join("a.lua"),
        r#"route.endpoint("GET /luastrip/v", function() return { json = { v = 1 } } end)"#,
    )
    .unwrap();
    let gw = with_scripts(&dir);
    let get = || {
        json_body(&raw(
            &gw,
            b"GET /luastrip/v HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        ))
    };
    assert_eq!(get()["v"], 1);
    // A broken edit: reported with file:line, old routes keep serving.
    std::fs::write(
        dir.join("a.lua"),
        "route.endpoint(\"GET /luastrip/v\",\n  function() return { json = { v = 2 } }\n",
    )
    .unwrap();
    let t = std::time::Instant::now();
    while !gw.log_text().contains("reload failed") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no reload after an edit: {}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gw.log_text().contains("a.lua:3"), "{}", gw.log_text());
    assert_eq!(get()["v"], 1);
    // A good edit, written the way editors do: a new file renamed over the old one.
    std::fs::write(
        dir.join("a.tmp"),
        r#"route.endpoint("GET /luastrip/v", function() return { json = { v = 2 } } end)"#,
    )
    .unwrap();
    std::fs::rename(dir.join("a.tmp"), dir.join("a.lua")).unwrap();
    let t = std::time::Instant::now();
    while get()["v"] != 2 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the fixed script was not picked up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A new file in the directory adds its routes.
    std::fs::write(
        dir.join("b.lua"),
        r#"route.endpoint("GET /luastrip/b", function() return { json = { b = true } } end)"#,
    )
    .unwrap();
    let t = std::time::Instant::now();
    loop {
        let resp = raw(
            &gw,
            b"GET /luastrip/b HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        );
        if resp.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "b.lua was not loaded: {resp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server answering every request with a JSON echo of its method, path and body.
fn echo_server<L: support::Accept>(listener: L) {
    support::serve_http(listener, |req| {
        support::json_answer(&serde_json::json!({
            "method": req.method,
            "path": req.target,
            "body": String::from_utf8_lossy(&req.body),
        }))
    });
}

#[test]
fn http_request_reaches_local_services_over_tcp_and_unix_sockets() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    echo_server(tcp);
    let sock = support::temp_dir("echo").join("echo.sock");
    let unix = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    echo_server(unix);
    let (gw, _) = with_script(
        "http.lua",
        &format!(
            r#"
            route.endpoint("GET /luastrip/ask", function(req)
              local a = http.request{{ method = "POST", url = "http://127.0.0.1:{port}/policy?x=1", body = {{ image = "bb" }} }}
              local b = http.request{{ url = "unix://{sock}:/over/unix" }}
              local dead = pcall(http.request, {{ url = "http://127.0.0.1:1/", timeout = 2 }})
              return {{ json = {{ tcp = a:json(), tcp_status = a.status, unix = b:json(), dead_ok = dead }} }}
            end)
            "#,
            sock = sock.display()
        ),
    );
    let v = json_body(&raw(
        &gw,
        b"GET /luastrip/ask HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(v["tcp_status"], 200);
    assert_eq!(v["tcp"]["method"], "POST");
    assert_eq!(v["tcp"]["path"], "/policy?x=1");
    assert_eq!(v["tcp"]["body"], r#"{"image":"bb"}"#);
    assert_eq!(v["unix"]["path"], "/over/unix");
    assert_eq!(
        v["dead_ok"], false,
        "a refused connection must raise an error"
    );
}

#[test]
fn pulls_are_rewritten_to_the_mirror() {
    // The example with a mirror that refuses connections at once (no registry is reachable here).
    let src = std::fs::read_to_string(example("mirror.lua"))
        .unwrap()
        .replace("mirror.example.internal:5000", "127.0.0.1:1");
    let (gw, _) = with_script("mirror.lua", &src);
    let out = output(gw.docker().args(["pull", "alpine:3.19"]));
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon went to the mirror, not to Docker Hub.
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("docker.io"), "{text}");
}

#[test]
fn audit_example_logs_state_changing_calls() {
    let gw = with_scripts(&example("audit.lua"));
    run_ok(gw.docker().args(["run", "--rm", IMAGE, "true"]));
    let log = gw.log_text();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit")).collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("POST") && l.contains("/containers/create") && l.contains("201")),
        "{log}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("/wait") && l.contains("\\\"streaming\\\":true")),
        "{log}"
    );
    assert!(
        !audit.iter().any(|l| l.contains("\\\"GET\\\"")),
        "GETs are not audited: {log}"
    );
}

#[test]
fn pre_hooks_rewrite_method_path_query_and_headers() {
    let (gw, _) = with_script(
        "rewrite.lua",
        r#"
        -- /luastrip/all-containers is /containers/json?all=1, spelled for humans.
        route.pre("GET /luastrip/all-containers", function(req)
          req.path = "/containers/json"
          req.query.all = "1"
          req.headers["x-luastrip"] = "rewritten"
        end)
        -- A HEAD-less client can ask with DELETE-by-POST; the method is rewritten.
        route.pre("POST /luastrip/remove/{id}", function(req)
          req.method = "DELETE"
          req.path = "/containers/" .. req.params.id
          req.query.force = "true"
        end)
        "#,
    );
    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let resp = raw(
        &gw,
        b"GET /v1.41/luastrip/all-containers HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let list = json_body(&resp);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["Id"] == id.as_str()),
        "the created (never started) container is listed only with all=1"
    );
    let resp = raw(&gw, format!("POST /luastrip/remove/{id} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    let out = output(Daemon::shared().docker().args(["inspect", &id]));
    assert!(!out.status.success(), "the container should be gone");
}

#[test]
fn bodies_over_the_limit_are_a_413_and_streams_stay_streamed() {
    let dir = support::temp_dir("limit");
    let script = dir.join("read.lua");
    std::fs::write(
        &script,
        r#"
        route.pre("POST /containers/create", function(req) local _ = req:json() end)
        route.pre("POST /build", function(req) assert(req.body == nil, "a tar stream was buffered") end)
        "#,
    )
    .unwrap();
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &[
            "--scripts",
            script.to_str().unwrap(),
            "--body-limit-mb",
            "1",
        ],
    );
    let big = format!(
        r#"{{"Image":"{IMAGE}","Env":["X={}"]}}"#,
        "x".repeat(2 << 20)
    );
    let mut req = format!(
        "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(big.as_bytes());
    let resp = raw(&gw, &req);
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "{}",
        &resp[..resp.len().min(300)]
    );
    assert!(json_body(&resp)["message"]
        .as_str()
        .unwrap()
        .contains("larger than the 1 MiB"));
    // A 3 MB build context (a tar stream) is not buffered and builds fine.
    let ctx = support::temp_dir("limit-build");
    std::fs::write(ctx.join("big.bin"), support::random_bytes(3 << 20)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY big.bin /big.bin\n"),
    )
    .unwrap();
    let tag = format!("luastrip-test/limit:{}", std::process::id());
    let out = output(gw.docker().args(["build", "-q", "-t", &tag]).arg(&ctx));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(gw.docker().args(["rmi", &tag]));
}

#[test]
fn require_finds_bundled_modules_and_modules_beside_the_scripts() {
    let dir = support::temp_dir("require");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("lib/names.lua"),
        "local M = {}\nfunction M.shout(s)\n  if s == 'boom' then error('no shouting') end\n  return s:upper()\nend\nreturn M\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("main.lua"),
        r#"
        local policy = require "luastrip.policy"
        local names = require "lib.names"
        assert(require "lib.names" == names, "modules load once")
        route.pre("POST /containers/create", function(req)
          local spec = req:json() or {}
          if policy.privileged(spec) then return policy.deny("luastrip: no privileges for " .. names.shout("you")) end
          if #policy.host_binds(spec) > 0 then return policy.deny("binds: " .. table.concat(policy.host_binds(spec), ",")) end
          if spec.Labels and spec.Labels.say then names.shout(spec.Labels.say) end
        end)
        "#,
    )
    .unwrap();
    let gw = with_scripts(&dir);
    let out = output(gw.docker().args(["create", "--privileged", IMAGE, "true"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("luastrip: no privileges for YOU"));
    let out = output(
        gw.docker()
            .args(["create", "-v", "/etc:/x", "-v", "/tmp:/y", IMAGE, "true"]),
    );
    // The CLI sends binds in no fixed order.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("binds: /etc,/tmp") || err.contains("binds: /tmp,/etc"),
        "{err}"
    );
    // An error inside a module names the module's file and line.
    let out = output(
        gw.docker()
            .args(["create", "--label", "say=boom", IMAGE, "true"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("names.lua:3") && err.contains("no shouting"),
        "{err}"
    );
    // Outside the scripts directory and the bundled modules there is nothing to require.
    let bad = dir.join("bad.lua");
    std::fs::write(&bad, "require '../etc/passwd'\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("module names are parts"));
    std::fs::remove_file(&bad).unwrap();
}

#[test]
fn on_event_handlers_see_what_happens_on_the_daemon_directly() {
    // No handler yet: added by a reload.
    let (gw, path) = with_script("events.lua", "-- no handler yet\n");
    let tag = format!("ev{}", std::process::id());
    std::fs::write(
        &path,
        format!(
            r#"-- what containers labelled {tag} do
docker.on_event({{ type = "container", event = {{ "start", "die" }}, label = "{tag}" }}, function(ev)
  store.set("seen:" .. ev.Action .. ":" .. ev.Actor.Attributes.name, ev.Actor.ID)
end)
docker.on_event({{ type = "container", event = "destroy", label = "{tag}" }}, function(ev)
  error("handler failed on purpose")
end)
"#
        ),
    )
    .unwrap();
    let (status, body) = gw.control("POST", "/reload", "");
    assert!(status.contains("200"), "{status} {body}");
    // The stream opens right after the reload; what happens from then on is seen.
    std::thread::sleep(Duration::from_millis(500));
    let seen = |what: &str| {
        gw.control("POST", "/eval", &format!("store.get('seen:{what}')"))
            .1
    };
    // On the daemon directly, never through luastrip; and one without the label.
    let (name, other) = (format!("{tag}-a"), format!("{tag}-b"));
    let direct = Daemon::shared();
    run_ok(direct.docker().args([
        "run", "--rm", "--label", &tag, "--name", &name, IMAGE, "true",
    ]));
    run_ok(
        direct
            .docker()
            .args(["run", "--rm", "--name", &other, IMAGE, "true"]),
    );
    support::wait_until("start and die seen", Duration::from_secs(10), || {
        seen(&format!("die:{name}"))["result"].is_string()
    });
    assert!(seen(&format!("start:{name}"))["result"].is_string());
    assert!(seen(&format!("start:{other}"))["result"].is_null());
    // A failing handler is logged with file:line, and the others go on.
    support::wait_until(
        "the failing handler logged",
        Duration::from_secs(10),
        || gw.log_text().contains("events.lua:6") && gw.log_text().contains("failed on purpose"),
    );
    run_ok(direct.docker().args([
        "run", "--rm", "--label", &tag, "--name", &other, IMAGE, "true",
    ]));
    support::wait_until("still handled", Duration::from_secs(10), || {
        seen(&format!("die:{other}"))["result"].is_string()
    });
    // Handlers are added while scripts load, not from a hook or eval.
    let (_, err) = gw.control("POST", "/eval", "docker.on_event(nil, function() end)");
    assert!(
        err.to_string().contains("only be added while scripts load"),
        "{err}"
    );
    // A filter dockerd does not know is a load error naming it; the old handlers stay.
    std::fs::write(
        &path,
        "docker.on_event({ evnt = 'start' }, function() end)\n",
    )
    .unwrap();
    let (status, err) = gw.control("POST", "/reload", "");
    assert!(!status.contains("200"), "{status}");
    assert!(
        err.to_string().contains(r#"unknown event filter \"evnt\""#),
        "{err}"
    );
    assert!(err.to_string().contains("events.lua:1"), "{err}");
}

#[test]
fn on_die_example_notes_failed_containers_started_anywhere() {
    let gw = with_scripts(&example("on-die.lua"));
    std::thread::sleep(Duration::from_millis(300));
    let name = format!("die{}", std::process::id());
    let out = output(
        Daemon::shared()
            .docker()
            .args(["run", "--rm", "--name", &name, IMAGE, "sh", "-c", "exit 3"]),
    );
    assert_eq!(out.status.code(), Some(3));
    support::wait_until("the exit noted", Duration::from_secs(10), || {
        gw.control("POST", "/eval", &format!("store.get('died:{name}')"))
            .1["result"]
            == 3
    });
    assert!(gw.log_text().contains(&format!("{name} exited with 3")));
}

/// `luastrip check … | head` ends quietly when the reader leaves, as command-line tools do.
#[test]
fn check_piped_into_head_ends_quietly() {
    let dir = support::temp_dir("checkpipe");
    let script = dir.join("many.lua");
    let routes: String = (0..3000)
        .map(|i| format!("route.pre(\"GET /luastrip/route-number-{i}\", function() end)\n"))
        .collect();
    std::fs::write(&script, routes).unwrap();
    let out = support::output(Command::new("sh").arg("-c").arg(format!(
        "{} check {} | head -1",
        env!("CARGO_BIN_EXE_luastrip"),
        script.display()
    )));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok, 3000 routes"));
}
