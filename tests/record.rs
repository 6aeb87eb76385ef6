//! Calls to files: `serve --record`, `record start|stop`, `--journal` across restarts, and
//! reading recordings back (`repl --file`), against a real gateway and dockerd.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{output, raw, Daemon, Gateway, IMAGE};

/// `luastrip repl ARGS -c COMMAND`: (success, stdout + stderr).
fn repl(args: &[&str], command: &str, dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_luastrip"))
        .arg("repl")
        .args(args)
        .args(["-c", command])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const LABEL_HOOK: &str = r#"route.pre("POST /containers/create", function(req)
  local spec = req:json()
  spec.Labels = spec.Labels or {}
  spec.Labels["com.example.team"] = "db"
  req:set_json(spec)
end)
"#;

#[test]
fn a_recording_keeps_every_call_without_its_secrets_and_reads_back() {
    let dir = support::temp_dir("rec");
    let file = dir.join("calls.ndjson");
    let mut gw = Gateway::with_script(LABEL_HOOK, &["--record", file.to_str().unwrap()]);
    let out = output(gw.docker().args([
        "create",
        "-e",
        "POSTGRES_PASSWORD=hunter2",
        "-e",
        "PLAIN=visible",
        IMAGE,
        "true",
    ]));
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pinged = raw(
        &gw.socket,
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nAuthorization: Basic c2VjcmV0\r\nConnection: close\r\n\r\n",
    );
    assert!(pinged.starts_with("HTTP/1.1 200"), "{pinged}");
    assert_eq!(gw.terminate(), Some(0));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("c2VjcmV0"),
        "{text}"
    );
    assert!(
        text.contains("POSTGRES_PASSWORD=<redacted>") && text.contains("PLAIN=visible"),
        "{text}"
    );
    let calls = lines(&file);
    let create = calls
        .iter()
        .find(|c| c["method"] == "POST" && c["path"] == "/containers/create")
        .expect("the create is recorded");
    assert_eq!(create["status"], 201);
    assert!(create["hooks"][0]["location"]
        .as_str()
        .unwrap()
        .ends_with("s.lua:1"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The REPL reads it back, read-only: calls, show and the diff work; the rest says why not.
    let f = file.to_str().unwrap();
    let (ok, text) = repl(&["--file", f], "calls ~m POST & ~u create", &dir);
    assert!(ok && text.contains(" 201 "), "{text}");
    let n = create["id"].to_string();
    let (ok, text) = repl(&["--file", f], &format!("show {n} diff"), &dir);
    assert!(
        ok && text.contains("+ request body Labels[\"com.example.team\"]: \"db\""),
        "{text}"
    );
    let (ok, text) = repl(&["--file", f], "reload", &dir);
    assert!(!ok && text.contains("is a recording"), "{text}");
    let (ok, text) = repl(&["--file", "/nonexistent/x.ndjson"], "calls", &dir);
    assert!(
        !ok && text.contains("cannot open /nonexistent/x.ndjson"),
        "{text}"
    );
    run_ok_quiet(Daemon::shared().docker().args(["rm", &id]));
}

fn run_ok_quiet(cmd: &mut Command) {
    let out = output(cmd);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn record_start_and_stop_from_the_repl() {
    let dir = support::temp_dir("recrepl");
    let gw = Gateway::start();
    let ctl = format!("unix://{}", gw.control_socket().display());
    let args = ["--control", ctl.as_str()];
    let (ok, text) = repl(&args, "record", &dir);
    assert!(ok && text.contains("not recording"), "{text}");
    // A relative file is the REPL's, not the gateway's.
    let (ok, text) = repl(&args, "record start ps.ndjson", &dir);
    let file = dir.join("ps.ndjson");
    assert!(
        ok && text.contains(&format!("recording {}", file.display())),
        "{text}"
    );
    let (ok, text) = repl(&args, "record start ps.ndjson", &dir);
    assert!(!ok && text.contains("already being recorded"), "{text}");
    run_ok_quiet(gw.docker().args(["ps"]));
    let (ok, text) = repl(&args, "record", &dir);
    assert!(ok && text.contains("calls written"), "{text}");
    let (ok, text) = repl(&args, "record stop", &dir);
    assert!(ok && text.contains("stopped"), "{text}");
    let calls = lines(&file);
    assert!(
        calls.iter().any(|c| c["path"] == "/containers/json"),
        "{calls:?}"
    );
    // Stopped means stopped: later calls are not written.
    let before = calls.len();
    run_ok_quiet(gw.docker().args(["ps"]));
    assert_eq!(lines(&file).len(), before);
    let (ok, text) = repl(&args, "record stop /tmp/never.ndjson", &dir);
    assert!(!ok && text.contains("is not being recorded"), "{text}");
}

#[test]
fn the_journal_survives_a_restart_and_ids_go_on() {
    let dir = support::temp_dir("journal");
    let file = dir.join("journal.ndjson");
    let args = ["--journal", file.to_str().unwrap()];
    let mut gw = Gateway::start_with(&Daemon::shared().socket, &args);
    run_ok_quiet(gw.docker().args(["version"]));
    let (_, before) = gw.control("GET", "/calls?filter=~u%20/version", "");
    let old = before.as_array().unwrap().last().unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(gw.terminate(), Some(0));

    let gw = Gateway::start_with(&Daemon::shared().socket, &args);
    let (_, calls) = gw.control("GET", &format!("/calls/{old}"), "");
    assert_eq!(calls["path"], "/version", "{calls}");
    run_ok_quiet(gw.docker().args(["info"]));
    let (_, after) = gw.control("GET", "/calls?filter=~u%20/info", "");
    let new = after.as_array().unwrap().last().unwrap()["id"]
        .as_u64()
        .unwrap();
    assert!(new > old, "ids start again: {old} then {new}");
    assert!(gw.log_text().contains("journal restored"));
    drop(gw);
    // A file that cannot be written is a clear start-up error naming the flag.
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .args(["serve", "--listen"])
            .arg(format!("unix://{}", dir.join("x.sock").display()))
            .args(["--record", "/nonexistent/dir/x.ndjson"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--record /nonexistent/dir/x.ndjson"),
        "{err}"
    );
}

#[test]
fn streams_and_sessions_are_recorded_with_their_byte_counts() {
    let dir = support::temp_dir("recstream");
    let file = dir.join("calls.ndjson");
    let mut gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--record", file.to_str().unwrap()],
    );
    let name = format!("lsrec-{}", std::process::id());
    let out = output(
        gw.docker()
            .args(["run", "--name", &name, IMAGE, "echo", "hello-stream"]),
    );
    assert!(out.status.success(), "{out:?}");
    let out = output(gw.docker().args(["logs", &name]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-stream"));
    assert_eq!(gw.terminate(), Some(0));
    let text = std::fs::read_to_string(&file).unwrap();
    let ends: Vec<Value> = lines(&file)
        .into_iter()
        .filter_map(|l| l.get("stream_end").cloned())
        .collect();
    let calls = lines(&file);
    let end_of = |path_part: &str| {
        let id = calls
            .iter()
            .find(|c| c["path"].as_str().is_some_and(|p| p.contains(path_part)))
            .unwrap_or_else(|| panic!("no {path_part} call:\n{text}"))["id"]
            .clone();
        ends.iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no stream_end for {path_part}:\n{text}"))
            .clone()
    };
    // The attach session carried the output to the client; the logs stream too.
    let attach = end_of("/attach");
    assert!(
        attach["daemon_to_client"].as_u64().unwrap() >= 13,
        "{attach}"
    );
    let logs = end_of("/logs");
    assert!(logs["daemon_to_client"].as_u64().unwrap() >= 13, "{logs}");
    // Reading the file back puts the counts on their calls.
    let (ok, shown) = repl(
        &["--file", file.to_str().unwrap()],
        &format!(
            "show {}",
            calls
                .iter()
                .find(|c| c["path"].as_str().unwrap_or("").contains("/logs"))
                .unwrap()["id"]
        ),
        &dir,
    );
    assert!(ok && shown.contains("bytes to the client"), "{shown}");
    let _ = output(Daemon::shared().docker().args(["rm", "-f", &name]));
}
