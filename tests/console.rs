//! `luastrip console` on a real terminal (tmux) against a real gateway and dockerd: the live
//! flow list, filtering, the detail tabs with the diff of a label-injecting hook, interception
//! with edit and accept-all, export as curl (run for real), mouse, narrow terminals and
//! recorded files.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{output, Daemon, Gateway, Tmux, IMAGE};

/// The console walkthrough of docs/control.md runs with the example that labels every create.
fn label_inject() -> Gateway {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scripts/label-inject.lua"
    );
    Gateway::start_with(&Daemon::shared().socket, &["--scripts", script])
}

/// `luastrip console` on `gw` in `dir`, with `env` (`NAME=value …`) set.
fn console(gw: &Gateway, dir: &Path, env: &str, size: (u16, u16)) -> Tmux {
    Tmux::run(
        &format!(
            "cd {} && {env} {} console --listen {}",
            dir.display(),
            env!("CARGO_BIN_EXE_luastrip"),
            gw.host()
        ),
        size,
        "luastrip console",
    )
}

fn rm(ids: &[&str]) {
    let mut cmd = Daemon::shared().docker();
    cmd.args(["rm", "-f"]).args(ids);
    let _ = output(&mut cmd);
}

/// The id a `docker create` printed.
fn created(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn flows_appear_live_filter_open_in_tabs_and_export_as_curl() {
    let dir = support::temp_dir("console");
    let gw = label_inject();
    let tmux = console(&gw, &dir, "", (140, 30));
    let id = created(&output(gw.docker().args(["create", IMAGE, "true"])));
    tmux.wait_for("/v1.41/containers/create");
    let out = output(gw.docker().args(["version"]));
    assert!(out.status.success());
    let screen = tmux.wait_for("/version");
    // The hook's marks: H (hooks ran) and Δ (they changed the call).
    let row = screen
        .lines()
        .find(|l| l.contains("/containers/create"))
        .unwrap();
    assert!(
        row.contains("POST") && row.contains("201") && row.contains("HΔ"),
        "{row}"
    );

    // f filters with the journal's language; a bad filter says where it is wrong.
    tmux.keys(&["f", "~s 2x0", "Enter"]);
    tmux.wait_for("is not a status");
    tmux.keys(&["f", "C-u", "~m POST", "Enter"]);
    let screen = tmux.wait_until("only the create", |s| {
        s.contains("filter: ~m POST") && !s.contains("/version")
    });
    assert!(screen.contains("/containers/create"), "{screen}");

    // Enter opens the flow; the tabs show request, response, hooks and what the hook changed.
    tmux.keys(&["G", "Enter"]);
    tmux.wait_for("\"Cmd\": [");
    // G scrolls to the end of the body, no further.
    tmux.keys(&["G"]);
    let screen = tmux.wait_for("\"WorkingDir\"");
    assert!(screen.trim_end().ends_with("? help"), "{screen}");
    tmux.keys(&["Tab"]);
    tmux.wait_for("201 Created");
    tmux.keys(&["3"]);
    tmux.wait_for("label-inject.lua:3");
    tmux.keys(&["4"]);
    tmux.wait_for("+ request body Labels.managed-by: \"luastrip\"");

    // E: the call as the client sent it, as curl on the gateway's socket, saved to a file that
    // runs: the hook labels the new container too.
    tmux.keys(&["E"]);
    let screen = tmux.wait_for("saved to");
    let n = screen
        .lines()
        .find_map(|l| l.split("luastrip-call-").nth(1))
        .and_then(|rest| rest.split(".sh").next())
        .unwrap_or_else(|| panic!("no file named:\n{screen}"))
        .to_string();
    let script: PathBuf = dir.join(format!("luastrip-call-{n}.sh"));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains("--unix-socket") && !text.contains("managed-by"),
        "{text}"
    );
    let out = output(std::process::Command::new("sh").arg(&script));
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let again = answer["Id"]
        .as_str()
        .expect("curl created a container")
        .to_string();
    let labels = output(Daemon::shared().docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"managed-by\"}}",
        &again,
    ]));
    assert_eq!(String::from_utf8_lossy(&labels.stdout).trim(), "luastrip");
    // Any key closes the popup (not Escape: Escape then q can read as Alt-q).
    tmux.keys(&["Space"]);
    tmux.wait_until("the popup closed", |s| !s.contains("saved to"));
    tmux.keys(&["q"]);
    tmux.wait_for("Enter open");
    // r replays the call through the gateway; the replay is a flow of its own, marked R.
    tmux.keys(&["f", "C-u", "~u /version", "Enter"]);
    tmux.wait_for("filter: ~u /version");
    tmux.keys(&["G", "r"]);
    tmux.wait_for(": 200");
    let screen = tmux.wait_until("a replay row", |s| {
        s.lines()
            .any(|l| l.contains("/version") && l.contains(" R "))
    });
    assert!(screen.contains("replayed call"), "{screen}");
    tmux.keys(&["q"]);
    rm(&[&id, &again]);
}

#[test]
fn intercept_edit_in_the_editor_and_accept_all() {
    let dir = support::temp_dir("console-held");
    // The "editor": adds a label to the held create.
    let editor = dir.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/\"managed-by\": \"luastrip\"/\"managed-by\": \"luastrip\", \"edited\": \"yes\"/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", editor.to_str().unwrap()])
        .status()
        .unwrap();
    let gw = label_inject();
    let tmux = console(
        &gw,
        &dir,
        &format!("EDITOR={}", editor.display()),
        (140, 30),
    );
    tmux.keys(&["i", "~m POST & ~u create", "Enter"]);
    tmux.wait_for("intercept: ~m POST & ~u create");
    let host = gw.host();
    let creates: Vec<_> = (0..2)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                output(support::docker_cli(&host).args(["create", IMAGE, "true"]))
            })
        })
        .collect();
    tmux.wait_for("2 held");
    let screen = tmux.screen();
    assert_eq!(screen.matches("HELD").count(), 2, "{screen}");
    // The held call in detail shows the request as it would go on.
    tmux.keys(&["G", "Enter"]);
    tmux.wait_for("(held: a accept, d drop, e edit)");
    // e: edited in $EDITOR, then on its way.
    tmux.keys(&["e"]);
    tmux.wait_for("went on as edited");
    tmux.wait_until("one held", |s| s.matches("HELD").count() == 1);
    // A: every held call goes on.
    tmux.keys(&["A"]);
    tmux.wait_until("none held", |s| !s.contains("HELD"));
    let ids: Vec<String> = creates
        .into_iter()
        .map(|t| created(&t.join().unwrap()))
        .collect();
    let edited: Vec<String> = ids
        .iter()
        .map(|id| {
            let out = output(Daemon::shared().docker().args([
                "inspect",
                "-f",
                "{{index .Config.Labels \"edited\"}}",
                id,
            ]));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    assert_eq!(
        edited.iter().filter(|e| *e == "yes").count(),
        1,
        "one create edited: {edited:?}"
    );
    // Quitting turns off the intercept this console set: the next create is not held.
    tmux.keys(&["q"]);
    std::thread::sleep(Duration::from_millis(500));
    let (_, v) = gw.control("GET", "/intercepted", "");
    assert!(v["filter"].is_null(), "{v}");
    let strs: Vec<&str> = ids.iter().map(String::as_str).collect();
    rm(&strs);
}

#[test]
fn mouse_narrow_terminals_and_recorded_files() {
    let dir = support::temp_dir("console-narrow");
    let file = dir.join("calls.ndjson");
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--record", file.to_str().unwrap()],
    );
    for _ in 0..12 {
        assert!(output(gw.docker().args(["version"])).status.success());
    }
    let tmux = console(&gw, &dir, "", (140, 20));
    tmux.wait_for("/version");
    // The wheel moves the selection: from the newest flow, three rows up per notch.
    tmux.keys(&["g"]);
    tmux.wait_until("the first flow selected", |_| {
        selected(&tmux).contains("m1 ")
    });
    let first = selected(&tmux);
    tmux.keys(&["-l", "\x1b[<65;10;5M"]);
    tmux.wait_until("the wheel scrolled", |_| selected(&tmux) != first);
    // Narrow: fewer columns, still every flow's method, code and path.
    tmux.resize(50, 20);
    let screen = tmux.wait_for("method code  path");
    assert!(
        !screen.contains("marks") && screen.contains("/version"),
        "{screen}"
    );
    tmux.keys(&["q"]);
    drop(tmux);

    // A recorded file opens read-only: flows and details, no intercept.
    drop(gw);
    let tmux = Tmux::run(
        &format!(
            "{} console --file {}",
            env!("CARGO_BIN_EXE_luastrip"),
            file.display()
        ),
        (140, 20),
        "read-only",
    );
    tmux.wait_for("/version");
    tmux.keys(&["i"]);
    tmux.wait_for("is read-only");
    tmux.keys(&["Enter"]);
    tmux.wait_for("1 Request");
    tmux.keys(&["q", "q"]);
}

/// The selected row: the list line shown reversed (SGR 7, alone or with other attributes).
fn selected(tmux: &Tmux) -> String {
    tmux.screen_with_styles()
        .lines()
        .skip(2)
        .find(|l| l.contains("\x1b[7m") || l.contains(";7m"))
        .unwrap_or("")
        .to_string()
}
