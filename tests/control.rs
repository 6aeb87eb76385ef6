//! The control socket against a real gateway and dockerd: calls, one call, live tail, routes,
//! reload.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{output, run_ok, Daemon, Gateway, Tmux, IMAGE};

fn ctl_path(gw: &Gateway) -> PathBuf {
    gw.socket.with_extension("ctl")
}

/// One control call; (status line, JSON body).
fn ctl(gw: &Gateway, method: &str, path: &str) -> (String, Value) {
    gw.control(method, path, "")
}

fn gateway_with(script: &str) -> (Gateway, PathBuf) {
    let dir = support::temp_dir("ctl");
    let path = dir.join("s.lua");
    std::fs::write(&path, script).unwrap();
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", path.to_str().unwrap()],
    );
    (gw, path)
}

/// An audit record is what the client sent: a hook edits the body (a label), a later hook
/// refuses the call, and the record still has the client's body as `before`, and `show ID diff`
/// the edit (issue 20).
#[test]
fn a_refused_call_keeps_what_the_client_sent() {
    let (gw, _) = gateway_with(
        r#"route.pre("POST /containers/create", function(req)
  local spec = req:json()
  spec.Labels = spec.Labels or json.object()
  spec.Labels.team = "db"
  req:set_json(spec)
end)
route.pre("POST /containers/create", function(req)
  return { status = 403, json = { message = "no" } }
end)
"#,
    );
    let out = output(gw.docker().args(["create", IMAGE, "true"]));
    assert!(!out.status.success());
    let (_, calls) = ctl(&gw, "GET", "/calls?filter=~m%20POST");
    let id = calls.as_array().unwrap().last().unwrap()["id"]
        .as_u64()
        .unwrap();
    let (_, one) = ctl(&gw, "GET", &format!("/calls/{id}"));
    let sent = one["before"]["request_body"]
        .as_str()
        .unwrap_or_else(|| panic!("{one}"));
    assert!(!sent.contains("team"), "{sent}");
    let (ok, diff) = repl(&gw, &format!("show {id} diff"));
    assert!(ok && diff.contains("request body Labels"), "{diff}");
}

#[test]
fn calls_and_one_call_show_what_happened() {
    let (gw, _) = gateway_with("route.pre(\"POST /containers/create\", function(req) end)\n");
    run_ok(gw.docker().args(["run", "--rm", IMAGE, "true"]));
    let (status, calls) = ctl(&gw, "GET", "/calls?limit=50");
    assert!(status.contains("200"), "{status}");
    let calls = calls.as_array().unwrap();
    let create = calls
        .iter()
        .find(|c| c["method"] == "POST" && c["path"] == "/containers/create")
        .expect("the create call is journaled");
    assert_eq!(create["status"], 201);
    assert_eq!(create["version"], "1.41");
    assert!(create["raw"]
        .as_str()
        .unwrap()
        .starts_with("/v1.41/containers/create"));
    assert_eq!(create["hooks"][0]["phase"], "pre");
    assert!(create["hooks"][0]["location"]
        .as_str()
        .unwrap()
        .ends_with("s.lua:1"));
    let attach = calls
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("/attach"))
        .expect("attach journaled");
    assert_eq!(attach["hijack"], "upgrade");
    assert_eq!(attach["status"], 101);
    let wait = calls
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("/wait"))
        .expect("wait journaled");
    assert_eq!(wait["streaming"], true);
    // One call in full, request and response heads included.
    let id = create["id"].as_u64().unwrap();
    let (status, one) = ctl(&gw, "GET", &format!("/calls/{id}"));
    assert!(status.contains("200"));
    assert!(one["request_headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "content-type"));
    assert!(one["response_headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "api-version"));
    let (status, missing) = ctl(&gw, "GET", "/calls/999999999");
    assert!(status.contains("404"));
    assert!(missing["message"]
        .as_str()
        .unwrap()
        .contains("no call 999999999"));
    let (status, _) = ctl(&gw, "GET", "/calls?limit=x");
    assert!(status.contains("400"));
}

#[test]
fn tail_streams_a_docker_run_as_it_happens() {
    let (gw, _) = gateway_with("-- no hooks\n");
    let mut s = UnixStream::connect(ctl_path(&gw)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /tail HTTP/1.1\r\nHost: ctl\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    // Skip the response head.
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let name = format!("tail-probe-{}", std::process::id());
    run_ok(
        gw.docker()
            .args(["run", "--rm", "--name", &name, IMAGE, "true"]),
    );
    let t = Instant::now();
    let mut seen = Vec::new();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no create in the tail: {seen:?}"
        );
        line.clear();
        reader.read_line(&mut line).unwrap();
        // Chunked framing: skip size lines, keep JSON lines.
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            if v["path"] == "/containers/create" {
                assert!(v["raw"].as_str().unwrap().contains(&name));
                break;
            }
            seen.push(v["path"].clone());
        }
    }
}

#[test]
fn routes_and_reload() {
    let (gw, path) = gateway_with("route.pre(\"POST /containers/create\", function(req) end)\n");
    let (_, routes) = ctl(&gw, "GET", "/routes");
    assert_eq!(routes[0]["pattern"], "POST /containers/create");
    assert_eq!(routes[0]["phase"], "pre");
    // A broken edit: reload reports file:line and the old routes stay.
    std::fs::write(
        &path,
        "route.pre(\"POST /containers/create\", function(req)\n",
    )
    .unwrap();
    let (status, err) = ctl(&gw, "POST", "/reload");
    assert!(status.contains("422"), "{status}");
    assert!(
        err["message"].as_str().unwrap().contains("s.lua:2"),
        "{err}"
    );
    let (_, routes) = ctl(&gw, "GET", "/routes");
    assert_eq!(routes.as_array().unwrap().len(), 1);
    std::fs::write(
        &path,
        "route.pre(\"* /**\", function(req) end)\nroute.post(\"* /**\", function(req, res) end)\n",
    )
    .unwrap();
    let (status, ok) = ctl(&gw, "POST", "/reload");
    assert!(status.contains("200"), "{status}");
    assert_eq!(ok["routes"], 2);
    let (_, routes) = ctl(&gw, "GET", "/routes");
    assert_eq!(routes[1]["phase"], "post");
}

#[test]
fn filters_select_calls_and_bad_filters_point_at_the_problem() {
    let (gw, _) = gateway_with("-- no hooks\n");
    run_ok(gw.docker().args(["run", "--rm", IMAGE, "true"]));
    let (_, creates) = ctl(
        &gw,
        "GET",
        "/calls?filter=~m%20POST%20%26%20~u%20create%20%26%20~s%202..",
    );
    let creates = creates.as_array().unwrap();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0]["path"], "/containers/create");
    let (_, none) = ctl(&gw, "GET", "/calls?filter=~s%205..");
    assert_eq!(none.as_array().unwrap().len(), 0);
    let (_, not_get) = ctl(&gw, "GET", "/calls?filter=!~m%20GET&limit=2");
    let not_get = not_get.as_array().unwrap();
    assert_eq!(not_get.len(), 2);
    assert!(not_get.iter().all(|c| c["method"] != "GET"));
    let (status, err) = ctl(&gw, "GET", "/calls?filter=~m%20POST%20%26%20~q%20x");
    assert!(status.contains("400"), "{status}");
    assert_eq!(err["position"], 10);
    assert_eq!(
        err["caret"],
        "~m POST & ~q x\n          ^ unknown operator ~q (try ~m ~u ~s ~h ~b ~e ~r)"
    );
}

fn repl(gw: &Gateway, command: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["repl", "--control"])
        .arg(format!("unix://{}", ctl_path(gw).display()))
        .args(["-c", command])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn eval_and_repl_commands_see_the_live_gateway() {
    let (mut gw, _) = gateway_with(
        "route.pre(\"* /_ping\", function(req) store.incr(\"pings\") end)\nroute.post(\"POST /containers/create\", function(req, res) end)\n",
    );
    for _ in 0..3 {
        support::raw(
            &gw.socket,
            "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
        );
    }
    // eval sees what hooks stored, with the same globals.
    let mut s = UnixStream::connect(ctl_path(&gw)).unwrap();
    let code = "= store.get('pings') * 10";
    write!(
        s,
        "POST /eval HTTP/1.1\r\nHost: ctl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{code}",
        code.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.contains("\"result\": 30"), "{out}");
    let (ok, text) = repl(&gw, "= store.get(\"pings\")");
    assert!(ok && text.trim() == "3", "{text}");
    let (ok, text) = repl(&gw, "= json.encode({ok = true, list = json.array()})");
    assert!(
        ok && text.contains(r#"{\"list\":[],\"ok\":true}"#),
        "{text}"
    );
    let (ok, text) = repl(&gw, "rotues");
    assert!(
        !ok && text.contains("error: unknown command \"rotues\": did you mean routes?"),
        "{text}"
    );
    let (ok, text) = repl(&gw, "error('nope')");
    assert!(!ok && text.contains("eval:1: nope"), "{text}");
    let (ok, text) = repl(&gw, "calls ~u _ping & ~s 200");
    assert!(ok && text.lines().count() == 3, "{text}");
    let (ok, text) = repl(&gw, "routes");
    assert!(
        ok && text.contains("POST /containers/create") && text.contains("s.lua:2"),
        "{text}"
    );
    let (ok, text) = repl(&gw, "calls ~s 2x0");
    assert!(!ok && text.contains("~s 2x0\n          ^"), "{text}");
    let (ok, text) = repl(&gw, "help");
    assert!(ok && text.contains("tail [FILTER]"));
    // When the gateway is gone the REPL says so.
    gw.terminate();
    let (ok, text) = repl(&gw, "calls");
    assert!(
        !ok && text.contains("cannot reach the gateway's control socket"),
        "{text}"
    );
}

#[test]
fn metrics_and_route_numbers_follow_the_traffic() {
    let (gw, _) = gateway_with(
        "route.pre(\"POST /containers/create\", function(req) end)\nroute.pre(\"GET /luastrip/boom\", function(req) error('boom') end)\n",
    );
    run_ok(gw.docker().args(["run", "--rm", IMAGE, "true"]));
    support::raw(
        &gw.socket,
        "GET /luastrip/boom HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    let t = Instant::now();
    let routes = loop {
        let (_, routes) = ctl(&gw, "GET", "/routes");
        if routes[1]["errors"] == 1 || t.elapsed() > Duration::from_secs(10) {
            break routes;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(routes[0]["hits"], 1, "{routes}");
    assert_eq!(routes[0]["errors"], 0);
    assert_eq!(routes[1]["hits"], 1);
    assert_eq!(routes[1]["errors"], 1);
    let mut s = UnixStream::connect(ctl_path(&gw)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: ctl\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(
        text.contains("luastrip_calls_total{method=\"POST\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("luastrip_errors_total{source=\"script\"} 1"),
        "{text}"
    );
    assert!(text.contains("luastrip_hijacks_total 1"), "{text}");
    assert!(
        text.contains("# TYPE luastrip_open_connections gauge"),
        "{text}"
    );
    assert!(text.contains("luastrip_open_tunnels 0"), "{text}");
    let (ok, stats) = repl(&gw, "stats");
    assert!(
        ok && stats.contains("luastrip_calls_total{method=\"POST\",status=\"201\"} 1"),
        "{stats}"
    );
    assert!(!stats.contains("# HELP"));
    let (ok, routes) = repl(&gw, "routes");
    assert!(ok && routes.contains("hits 1 errors 0"), "{routes}");
    assert!(
        text.contains("luastrip_hook_errors_total{phase=\"pre\",route=\"GET /luastrip/boom\""),
        "{text}"
    );
}

#[test]
fn the_control_socket_refuses_other_users() {
    support::require_tool("setpriv", "util-linux");
    // Debian's own python3: a per-user install (pyenv under /root) is out of reach of uid 65534.
    assert!(
        std::path::Path::new("/usr/bin/python3").exists(),
        "/usr/bin/python3 is missing: apt-get install -y python3"
    );
    let (gw, _) = gateway_with("-- no hooks\n");
    let connect = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); print('connected')",
        ctl_path(&gw).display().to_string()
    );
    let as_nobody = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &connect,
        ])
        .output()
        .unwrap();
    assert!(
        !as_nobody.status.success(),
        "uid 65534 reached the control socket"
    );
    assert!(String::from_utf8_lossy(&as_nobody.stderr).contains("PermissionError"));
    // The owner can.
    let as_root = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &connect])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&as_root.stdout).trim(), "connected");
}

#[test]
fn intercept_holds_a_docker_run_until_resumed_and_drop_refuses_it() {
    let (gw, _) = gateway_with("-- no hooks\n");
    let name = format!("held-{}", std::process::id());
    let (ok, text) = repl(&gw, &format!("intercept ~m POST & ~u create.*{name}"));
    assert!(ok && text.contains("intercepting"), "{text}");
    let run = docker_in_background(
        &gw,
        &["run", "--rm", "--name", &name, IMAGE, "echo", "released"],
    );
    // The create is held: it shows up in intercepted, and the container does not exist yet.
    let id = wait_held(&gw);
    std::thread::sleep(Duration::from_millis(300));
    let exists = support::output(Daemon::shared().docker().args(["inspect", &name]));
    assert!(!exists.status.success(), "a held create reached the daemon");
    let (ok, _) = repl(&gw, &format!("resume {id}"));
    assert!(ok);
    let out = run.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "released\n");
    // Drop: the CLI prints luastrip's error.
    let run = docker_in_background(&gw, &["run", "--rm", "--name", &name, IMAGE, "true"]);
    let id = wait_held(&gw);
    let (ok, _) = repl(&gw, &format!("drop {id}"));
    assert!(ok);
    let out = run.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error response from daemon: luastrip: call dropped at the control socket"),
        "{err}"
    );
    let (ok, text) = repl(&gw, "intercept");
    assert!(ok && text.contains("not intercepting"));
    let (ok, text) = repl(&gw, "resume 424242");
    assert!(!ok && text.contains("call 424242 is not held"), "{text}");
}

#[test]
fn a_held_call_resumes_with_an_edited_request() {
    let (gw, _) = gateway_with("-- no hooks\n");
    let name = format!("edited-{}", std::process::id());
    repl(&gw, &format!("intercept ~u create.*{name}"));
    let create = docker_in_background(&gw, &["create", "--name", &name, IMAGE, "true"]);
    let id = wait_held(&gw);
    let body =
        format!(r#"{{"Image":"{IMAGE}","Cmd":["true"],"Labels":{{"edited":"at-the-repl"}}}}"#);
    let edit = serde_json::json!({ "body": body, "headers": {"content-type": "application/json", "host": "docker"} }).to_string();
    let (ok, text) = repl(&gw, &format!("resume {id} {edit}"));
    assert!(ok, "{text}");
    let out = create.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let label = run_ok(Daemon::shared().docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"edited\"}}",
        &name,
    ]));
    assert_eq!(label.trim(), "at-the-repl");
    run_ok(Daemon::shared().docker().args(["rm", &name]));
}

/// Wait until the control socket holds a call; its id.
fn wait_held(gw: &Gateway) -> u64 {
    let t = Instant::now();
    loop {
        let (_, v) = ctl(gw, "GET", "/intercepted");
        if let Some(h) = v["held"].as_array().and_then(|a| a.first()) {
            return h["id"].as_u64().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no call was held");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `luastrip repl` against `gw` on a real terminal (tmux).
fn repl_on_terminal(gw: &Gateway) -> Tmux {
    Tmux::run(
        &format!(
            "NO_COLOR=1 {} repl --control unix://{}",
            env!("CARGO_BIN_EXE_luastrip"),
            ctl_path(gw).display()
        ),
        (160, 50),
        "luastrip>",
    )
}

#[test]
fn the_repl_on_a_terminal_completes_continues_lua_and_stops_tail_on_ctrl_c() {
    let (gw, _) =
        gateway_with("route.pre(\"* /_ping\", function(req) store.incr(\"pings\") end)\n");
    support::raw(
        &gw.socket,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    let tmux = repl_on_terminal(&gw);
    // Tab completes commands and Lua names from the live VM.
    tmux.keys(&["sho", "Tab"]);
    tmux.wait_for("luastrip> show");
    tmux.keys(&["C-u", "= stor", "Tab"]);
    tmux.wait_for("luastrip> = store");
    tmux.keys(&[".ge", "Tab"]);
    tmux.wait_for("= store.get");
    tmux.keys(&["(\"pings\")", "Enter"]);
    tmux.wait_for("\n1\n");
    // An unfinished chunk continues on the next line, under a continuation prompt.
    tmux.keys(&["= (40 +", "Enter"]);
    tmux.wait_for("\n     ...>");
    tmux.keys(&["2)", "Enter"]);
    tmux.wait_for("42");
    // So does a statement (`for … do` until its `end`), and print shows here.
    tmux.keys(&["for i = 1, 2 do", "Enter"]);
    std::thread::sleep(Duration::from_millis(200));
    tmux.keys(&["print('round-' .. i * 10) end", "Enter"]);
    tmux.wait_for("round-20");
    // tail runs until Ctrl-C, which returns to the prompt.
    tmux.keys(&["tail", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    support::raw(
        &gw.socket,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    tmux.wait_for("GET    200");
    tmux.keys(&["C-c"]);
    tmux.keys(&["routes", "Enter"]);
    tmux.wait_for("* /_ping");
    // A one-word typo is an unknown command, with the nearest one suggested.
    tmux.keys(&["rotues", "Enter"]);
    tmux.wait_for("error: unknown command \"rotues\": did you mean routes?");
    tmux.keys(&["clear", "Enter"]);
    tmux.wait_for("error: unknown command \"clear\" (help lists them");
    // Ctrl-C abandons an unfinished block: the next line starts afresh.
    tmux.keys(&["if true then", "Enter"]);
    tmux.wait_for("\n     ...>");
    tmux.keys(&["C-c"]);
    tmux.keys(&["= 6 * 7 + 1", "Enter"]);
    tmux.wait_for("43");
    // exit leaves, as quit does.
    tmux.keys(&["exit", "Enter"]);
    tmux.wait_until_gone();
}

/// Whether `line` matches `pattern`, where `…` stands for any text.
fn glob_line(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let mut rest = line;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(j) => rest = &rest[j + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

#[test]
fn the_readme_repl_transcript_is_what_the_repl_prints() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/control.md")).unwrap();
    let start = readme
        .find("## A REPL session")
        .expect("docs/control.md has its REPL session");
    let block = &readme[start..];
    let block = &block[block.find("```text\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/label-inject.lua");
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("luastrip> ") {
            Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
            None => steps
                .last_mut()
                .expect("output before a command")
                .1
                .push(line.to_string()),
        }
    }
    assert!(steps.len() >= 4);
    for (cmd, want) in steps {
        let (_, got) = repl(&gw, &cmd);
        let got: Vec<&str> = got.lines().map(str::trim_end).collect();
        assert_eq!(
            got.len(),
            want.len(),
            "`{cmd}` printed:\n{}",
            got.join("\n")
        );
        for (g, w) in got.iter().zip(&want) {
            assert!(
                glob_line(w.trim_end(), g),
                "`{cmd}`: {g:?} does not match {w:?}"
            );
        }
    }
    run_ok(gw.docker().args(["rm", &id]));
}

/// The README's quick start, run as it says (against the test daemon and image): the example
/// policy lets an ordinary run through, refuses a privileged one with the very line the README
/// shows, and `calls ~s 403` lists the refusal.
#[test]
fn the_readme_quick_start_prints_what_it_shows() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("## Quick start")
        .expect("the README has a quick start");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").unwrap() + 3];
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/scripts/deny-privileged.lua");
    assert!(section.contains("--scripts examples/scripts/deny-privileged.lua"));
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    // Each `$ command` of the console blocks, with the lines it should print.
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut rest = section;
    while let Some(i) = rest.find("```console\n") {
        let block = &rest[i + 11..];
        let end = block.find("```").unwrap();
        for line in block[..end].lines() {
            match line.strip_prefix("$ ") {
                Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
                None => steps.last_mut().unwrap().1.push(line.to_string()),
            }
        }
        rest = &block[end..];
    }
    assert!(steps.len() >= 4, "{steps:?}");
    for (cmd, want) in steps {
        let got = if cmd.starts_with("export DOCKER_HOST=") {
            continue;
        } else if let Some(args) = cmd.strip_prefix("docker ") {
            let args: Vec<&str> = args
                .split_whitespace()
                .map(|a| if a == "busybox" { IMAGE } else { a })
                .collect();
            let out = output(gw.docker().args(&args));
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        } else if let Some((_, c)) = cmd.split_once(" -c ") {
            repl(&gw, c.trim_matches('\'')).1
        } else {
            panic!("the quick start runs {cmd:?}, which this test does not know");
        };
        for w in &want {
            assert!(
                got.lines().any(|g| glob_line(w, g.trim_end())),
                "`{cmd}` printed no line like {w:?}:\n{got}"
            );
        }
    }
}

#[test]
fn serve_with_repl_shares_the_terminal_and_quit_stops_the_gateway() {
    let dir = support::temp_dir("serve-repl");
    let sock = dir.join("gw.sock");
    // An endpoint that logs a warning (shown at the REPL's default level) as it answers.
    let script = dir.join("hello.lua");
    std::fs::write(
        &script,
        r#"route.endpoint("GET /luastrip/hello", function()
  log.warn("said-hello")
  return { json = { hello = "world" } }
end)
"#,
    )
    .unwrap();
    let tmux = Tmux::run(
        &format!(
            "NO_COLOR=1 {} serve --repl --listen unix://{} --upstream {} --scripts {}",
            env!("CARGO_BIN_EXE_luastrip"),
            sock.display(),
            Daemon::shared().host(),
            script.display()
        ),
        (160, 50),
        "luastrip>",
    );
    // Half-typed input, then a log line: the line goes above the prompt, the input stays whole.
    tmux.keys(&["cal"]);
    tmux.wait_for("luastrip> cal");
    let resp = support::raw(
        &sock,
        "GET /luastrip/hello HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    assert!(resp.contains("\"hello\":\"world\""));
    let screen = tmux.wait_for("said-hello");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.last(), Some(&"luastrip> cal"), "{screen}");
    let logged = lines.iter().position(|l| l.contains("said-hello")).unwrap();
    assert!(logged < lines.len() - 1, "{screen}");
    tmux.keys(&["ls", "Enter"]);
    tmux.wait_for("/luastrip/hello");
    tmux.keys(&["quit", "Enter"]);
    let t = Instant::now();
    // The listen socket goes first (no new calls), the control socket with the background
    // services after the calls in flight.
    while sock.exists() || sock.with_extension("ctl").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "quitting the REPL did not stop the gateway"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replay_reissues_a_create_through_the_gateway() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/label-inject.lua");
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    let first = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let (_, calls) = ctl(&gw, "GET", "/calls?filter=~m%20POST%20%26%20~u%20create");
    let create = &calls.as_array().unwrap()[0];
    // The body the hook buffered is journaled (and matchable with ~b).
    assert!(create["request_body"]
        .as_str()
        .unwrap()
        .contains("managed-by"));
    let id = create["id"].as_u64().unwrap();
    let (ok, text) = repl(&gw, &format!("replay {id}"));
    assert!(ok, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], 201);
    let second = v["body"]["Id"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    // The replay went through the phases again: journaled, labelled by the script.
    let label = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"managed-by\"}}",
        &second,
    ]));
    assert_eq!(label.trim(), "luastrip");
    // Marked as a replay in the journal, and in `calls`.
    let (ok, text) = repl(&gw, "calls ~m POST & ~u create");
    assert!(ok && text.contains(&format!("(replay of {id})")), "{text}");
    assert_eq!(text.matches("(replay of").count(), 1, "{text}");
    // Edited replay.
    let edit = format!(
        r#"{{"body": "{{\"Image\":\"{IMAGE}\",\"Cmd\":[\"true\"],\"Labels\":{{\"replayed\":\"edited\"}}}}"}}"#
    );
    let (ok, text) = repl(&gw, &format!("replay {id} {edit}"));
    assert!(ok, "{text}");
    let third = serde_json::from_str::<Value>(&text).unwrap()["body"]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let label = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"replayed\"}}",
        &third,
    ]));
    assert_eq!(label.trim(), "edited");
    // An unknown id is a 404.
    let (ok, text) = repl(&gw, "replay 987654321");
    assert!(!ok && text.contains("no call 987654321"), "{text}");
    run_ok(gw.docker().args(["rm", &first, &second, &third]));
}

#[test]
fn replay_refuses_a_body_it_never_saw() {
    let (gw, _) = gateway_with("-- no hooks: bodies stream through\n");
    let id = run_ok(gw.docker().args(["create", IMAGE, "true"]))
        .trim()
        .to_string();
    let (_, calls) = ctl(&gw, "GET", "/calls?filter=~u%20create");
    let call_id = calls[0]["id"].as_u64().unwrap();
    assert!(calls[0]["request_body"].is_null());
    let (ok, text) = repl(&gw, &format!("replay {call_id}"));
    assert!(
        !ok && text.contains("streamed through and was not journaled"),
        "{text}"
    );
    run_ok(gw.docker().args(["run", "--rm", IMAGE, "true"]));
    let (_, attaches) = ctl(&gw, "GET", "/calls?filter=~u%20attach");
    let attach = attaches[0]["id"].as_u64().unwrap();
    let (ok, text) = repl(&gw, &format!("replay {attach}"));
    assert!(!ok && text.contains("hijacked session"), "{text}");
    run_ok(gw.docker().args(["rm", &id]));
}

#[test]
fn edit_opens_a_held_call_in_the_editor_and_resumes_it_as_edited() {
    let (gw, _) = gateway_with("-- no hooks\n");
    let name = format!("editor-{}", std::process::id());
    repl(&gw, &format!("intercept ~u create.*{name}"));
    let run = docker_in_background(
        &gw,
        &["run", "--rm", "--name", &name, IMAGE, "echo", "original"],
    );
    let id = wait_held(&gw);
    // An "editor" that changes the command in the create body.
    let dir = support::temp_dir("editor");
    let (editor, seen) = (dir.join("edit.sh"), dir.join("seen.json"));
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\ncp \"$1\" {}\nsed -i 's/original/edited/' \"$1\"\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["repl", "--control"])
        .arg(format!("unix://{}", ctl_path(&gw).display()))
        .args(["-c", &format!("edit {id}")])
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "edited\n");
    // The editor saw the JSON body as JSON (pretty, not one escaped string).
    let shown = std::fs::read_to_string(&seen).unwrap();
    let v: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["body"]["Cmd"][1], "original", "{shown}");
}

#[test]
fn tail_announces_long_calls_as_they_start() {
    let (gw, _) = gateway_with("-- no hooks\n");
    // PID 1 of a container ignores SIGTERM, so `docker stop -t 3` takes three seconds.
    let id = run_ok(gw.docker().args(["run", "-d", IMAGE, "sleep", "600"]))
        .trim()
        .to_string();
    let mut s = UnixStream::connect(ctl_path(&gw)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /tail?filter=~u%20stop HTTP/1.1\r\nHost: ctl\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let t0 = Instant::now();
    let stop = docker_in_background(&gw, &["stop", "-t", "3", &id]);
    let mut started_at = None;
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no stop records in the tail"
        );
        line.clear();
        reader.read_line(&mut line).unwrap();
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        if v["event"] == "start" {
            assert!(v["raw"].as_str().unwrap().contains("/stop"));
            started_at = Some(t0.elapsed());
        } else if v["path"].as_str().is_some_and(|p| p.ends_with("/stop")) {
            let ended = t0.elapsed();
            let started = started_at.expect("the start came before the end");
            assert!(started < ended, "start {started:?} end {ended:?}");
            assert!(
                ended >= Duration::from_secs(2),
                "stop ended after {ended:?}"
            );
            break;
        }
    }
    assert!(stop.join().unwrap().status.success());
    run_ok(gw.docker().args(["rm", &id]));
}

#[test]
fn bodies_a_post_hook_read_are_journaled() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/version-tag.lua");
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    run_ok(gw.docker().args(["version"]));
    let (_, calls) = ctl(
        &gw,
        "GET",
        "/calls?filter=~u%20version%20%26%20~b%20luastrip",
    );
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0]["response_body"]
        .as_str()
        .unwrap()
        .contains("\"Name\":\"luastrip\""));
}

/// Run a docker CLI command through `gw` on another thread (it may be held by intercept).
fn docker_in_background(
    gw: &Gateway,
    args: &[&str],
) -> std::thread::JoinHandle<std::process::Output> {
    let host = gw.host();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || support::output(support::docker_cli(&host).args(&args)))
}

/// `GET /_ping` through `gw` on a thread: its status line once answered.
fn ping_in_background(gw: &Gateway) -> std::thread::JoinHandle<String> {
    let socket = gw.socket.clone();
    std::thread::spawn(move || {
        support::raw(
            &socket,
            b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        )
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
    })
}

fn held_count(gw: &Gateway) -> usize {
    let (_, v) = ctl(gw, "GET", "/intercepted");
    v["held"].as_array().map_or(0, Vec::len)
}

#[test]
fn intercept_off_and_resume_all_leave_no_call_hanging() {
    let (gw, _) = gateway_with("-- nothing\n");
    // `intercept off` lets every held call go on.
    let (ok, text) = repl(&gw, "intercept ~u /_ping");
    assert!(
        ok && text.contains("`intercept off` lets them all go on"),
        "{text}"
    );
    let pings: Vec<_> = (0..2).map(|_| ping_in_background(&gw)).collect();
    support::wait_until("two held", Duration::from_secs(10), || held_count(&gw) == 2);
    let (ok, text) = repl(&gw, "intercept off");
    assert!(ok && text.contains("2 held call(s) let go on"), "{text}");
    for p in pings {
        assert!(p.join().unwrap().contains("200"));
    }
    // `resume all` and `drop all`.
    repl(&gw, "intercept ~u /_ping");
    let pings: Vec<_> = (0..2).map(|_| ping_in_background(&gw)).collect();
    support::wait_until("two held", Duration::from_secs(10), || held_count(&gw) == 2);
    let (ok, text) = repl(&gw, "resume all");
    assert!(ok && text.contains("resume: 2 held call(s)"), "{text}");
    for p in pings {
        assert!(p.join().unwrap().contains("200"));
    }
    let ping = ping_in_background(&gw);
    support::wait_until("one held", Duration::from_secs(10), || held_count(&gw) == 1);
    let (ok, text) = repl(&gw, "drop all");
    assert!(ok && text.contains("drop: 1 held call(s)"), "{text}");
    assert!(ping.join().unwrap().contains("403"));
    // An interactive session that turned intercept on turns it off when it quits.
    let out = support::run_with_stdin(
        std::process::Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .args(["repl", "--control"])
            .arg(format!("unix://{}", ctl_path(&gw).display())),
        b"intercept ~u /_ping\nquit\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not intercepting"), "{text}");
    let (_, v) = ctl(&gw, "GET", "/intercepted");
    assert!(v["filter"].is_null(), "{v}");
    assert!(ping_in_background(&gw).join().unwrap().contains("200"));
}

#[test]
fn the_repl_finds_the_control_socket_from_the_listen_socket() {
    let (gw, _) = gateway_with("-- nothing\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["repl", "--listen", &gw.host(), "-c", "= 1 + 1"])
        .env_remove("LUASTRIP_CONTROL")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{out:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .args(["repl", "-c", "= 1 + 1"])
        .env("LUASTRIP_LISTEN", gw.host())
        .env_remove("LUASTRIP_CONTROL")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{out:?}");
}

#[test]
fn a_hook_answer_is_journaled_and_found_by_a_regex_with_flags() {
    let (gw, _) = gateway_with(
        r#"route.pre("POST /containers/create", function(req)
  return { status = 403, json = { message = "privileged containers are Not Allowed here" } }
end)
"#,
    );
    let out = output(gw.docker().args(["create", IMAGE, "true"]));
    assert!(!out.status.success());
    let (ok, text) = repl(&gw, "calls ~b (?i)not.allowed");
    assert!(
        ok && text.lines().count() == 1 && text.contains(" 403 "),
        "{text}"
    );
    let id = text.split_whitespace().next().unwrap().to_string();
    // `show` reads as a person would: the line, the hook that answered, pretty JSON bodies.
    let (ok, text) = repl(&gw, &format!("show {id}"));
    assert!(ok, "{text}");
    for want in [
        "POST /v1.41/containers/create  → 403 Forbidden",
        " UTC",
        "hooks:\n  pre   POST /containers/create",
        "response body:\n  {\n    \"message\": \"privileged containers are Not Allowed here\"\n  }",
        "request headers:\n  ",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(!text.contains("\\\""), "escaped quotes:\n{text}");
    let (ok, text) = repl(&gw, &format!("show {id} json"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(ok && v["status"] == 403, "{text}");
}

#[test]
fn show_diff_says_what_the_hooks_changed_on_the_way_in_and_out() {
    let (gw, _) = gateway_with(
        r#"route.pre("POST /containers/create", function(req)
  local spec = req:json()
  spec.Labels = spec.Labels or {}
  spec.Labels["com.example.team"] = "db"
  spec.HostConfig.Memory = 64 * 1024 * 1024
  req:set_json(spec)
  req.headers["X-Team"] = "db"
end)
route.post("POST /containers/create", function(req, res)
  local out = res:json()
  out.Warnings = { "labelled by luastrip" }
  res:set_json(out)
  res.status = 201
end)
"#,
    );
    let out = output(gw.docker().args(["create", IMAGE, "true"]));
    assert!(out.status.success(), "{out:?}");
    let (_, calls) = ctl(&gw, "GET", "/calls?filter=~m%20POST");
    let id = calls.as_array().unwrap().last().unwrap()["id"].clone();
    let (ok, text) = repl(&gw, &format!("show {id} diff"));
    assert!(ok, "{text}");
    for want in [
        "+ request body Labels[\"com.example.team\"]: \"db\"",
        "~ request body HostConfig.Memory: 0 → 67108864",
        "+ request header x-team: db",
        "~ response body Warnings: [] → [\"labelled by luastrip\"]",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    // What the hooks left alone is not a change: no Image line, no content-length line.
    assert!(
        !text.contains("Image") && !text.contains("content-length"),
        "{text}"
    );
    // The full view carries the same section.
    let (_, text) = repl(&gw, &format!("show {id}"));
    assert!(text.contains("changed by hooks:\n  + request"), "{text}");
    // A call no hook touched has nothing to show.
    let out = output(gw.docker().args(["version"]));
    assert!(out.status.success());
    let (_, calls) = ctl(&gw, "GET", "/calls?filter=~u%20/version");
    let id = calls.as_array().unwrap().last().unwrap()["id"].clone();
    let (_, text) = repl(&gw, &format!("show {id} diff"));
    assert_eq!(text.trim(), "the hooks changed nothing");
}

#[test]
fn the_repl_says_when_a_call_is_held() {
    let gw = Gateway::start();
    let tmux = repl_on_terminal(&gw);
    tmux.keys(&["intercept ~u _ping", "Enter"]);
    tmux.wait_for("intercepting ~u _ping");
    let ping = ping_in_background(&gw);
    let screen = tmux.wait_for("(resume ");
    let line = screen.lines().find(|l| l.contains("(resume ")).unwrap();
    assert!(
        line.starts_with("held ") && line.contains("/_ping"),
        "{line}"
    );
    tmux.keys(&["resume all", "Enter"]);
    assert!(ping.join().unwrap().contains("200"));
    tmux.keys(&["quit", "Enter"]);
}
