//! `luastrip test`: route scripts tested without a dockerd, against a recording made through a
//! real gateway and dockerd, and with `*_test.lua` cases.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{output, Daemon, Gateway, IMAGE};

fn examples(name: &str) -> String {
    format!("{}/examples/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `luastrip test ARGS` with no DOCKER_HOST at all: no daemon is needed.
fn luastrip_test(args: &[&str]) -> (Output, String) {
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .arg("test")
            .args(args)
            .env_remove("DOCKER_HOST"),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn copy(from: &str, dir: &Path) {
    let name = Path::new(from).file_name().unwrap();
    std::fs::copy(from, dir.join(name)).unwrap();
}

#[test]
fn a_policy_change_is_reviewed_against_a_recording() {
    // Record real traffic through a gateway with no scripts: a create, a privileged create,
    // and a version call.
    let dir = support::temp_dir("scripttest");
    let file = dir.join("traffic.ndjson");
    let mut gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--record", file.to_str().unwrap()],
    );
    let plain = output(gw.docker().args(["create", IMAGE, "true"]));
    let privileged = output(gw.docker().args(["create", "--privileged", IMAGE, "true"]));
    assert!(plain.status.success() && privileged.status.success());
    assert!(output(gw.docker().args(["version"])).status.success());
    assert_eq!(gw.terminate(), Some(0));
    let ids: Vec<String> = [&plain, &privileged]
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .collect();
    let _ = output(Daemon::shared().docker().arg("rm").args(&ids));

    // The scripts under review: label every create, deny privileged ones.
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    copy(&examples("label-inject.lua"), &scripts);
    copy(&examples("deny-privileged.lua"), &scripts);
    let expect = dir.join("expected.txt");
    let (s, f, e) = (
        scripts.to_str().unwrap(),
        file.to_str().unwrap(),
        expect.to_str().unwrap(),
    );
    let (out, text) = luastrip_test(&[s, "--against", f, "--expect", e, "--update"]);
    assert!(out.status.success(), "{text}");
    let report = std::fs::read_to_string(&expect).unwrap();
    assert!(
        report.contains("→ 201\n  + request body Labels.managed-by: \"luastrip\""),
        "{report}"
    );
    let denied = report
        .lines()
        .find(|l| l.contains("(recorded: 201)"))
        .unwrap_or_else(|| panic!("the privileged create is now denied:\n{report}"));
    assert!(
        denied.contains("→ 403")
            && denied.contains("answered by")
            && denied.contains("privileged containers are not allowed"),
        "{denied}"
    );
    assert!(report.contains("/version → 200\n"), "{report}");
    // docs/control.md shows this report; it must be what the tool prints.
    let readme = include_str!("../docs/control.md");
    for line in report.lines() {
        assert!(
            readme.contains(line),
            "docs/control.md lacks the report line {line:?}"
        );
    }

    // The same scripts: the report matches.
    let (out, text) = luastrip_test(&[s, "--against", f, "--expect", e]);
    assert!(
        out.status.success() && text.contains("the report matches"),
        "{text}"
    );

    // A changed policy: the difference is shown, and the run fails until accepted.
    let label = std::fs::read_to_string(examples("label-inject.lua"))
        .unwrap()
        .replace("\"luastrip\"", "\"someone-else\"");
    std::fs::write(scripts.join("label-inject.lua"), label).unwrap();
    let (out, text) = luastrip_test(&[s, "--against", f, "--expect", e]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("-   + request body Labels.managed-by: \"luastrip\"")
            && text.contains("+   + request body Labels.managed-by: \"someone-else\""),
        "{text}"
    );

    // A script error fails the run and names the file and line.
    std::fs::write(
        scripts.join("zz-broken.lua"),
        "route.pre(\"GET /version\", function(req)\n  error(\"boom\")\nend)\n",
    )
    .unwrap();
    let (out, text) = luastrip_test(&[s, "--against", f]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("zz-broken.lua:2")
            && text.contains("boom")
            && text.contains("1 with script errors"),
        "{text}"
    );
    // A recording that is not one is a clear error.
    std::fs::write(dir.join("bad.ndjson"), "{}\n").unwrap();
    let (out, text) = luastrip_test(&[s, "--against", dir.join("bad.ndjson").to_str().unwrap()]);
    assert!(
        !out.status.success() && text.contains("bad.ndjson:1: not a recorded call"),
        "{text}"
    );
}

#[test]
fn test_lua_cases_drive_the_scripts_like_a_client() {
    let dir = support::temp_dir("cases");
    copy(&examples("label-inject.lua"), &dir);
    copy(&examples("deny-privileged.lua"), &dir);
    std::fs::write(
        dir.join("policy_test.lua"),
        r#"local t = require("luastrip.test")

t.case("privileged containers never reach the daemon", function()
  local res = t.request { method = "POST", path = "/v1.43/containers/create",
                          json = { Image = "busybox", HostConfig = { Privileged = true } } }
  t.eq(res.status, 403)
  t.match(res.json.message, "rivileged")
  t.eq(res.forwarded, nil)
end)

t.case("every create is labelled", function()
  local res = t.request { method = "POST", path = "/v1.43/containers/create",
                          json = { Image = "busybox" },
                          daemon = { status = 201, json = { Id = "abc", Warnings = {} } } }
  t.eq(res.status, 201)
  t.eq(res.json.Id, "abc")
  t.eq(res.forwarded.json.Labels["managed-by"], "luastrip")
end)
"#,
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let (out, text) = luastrip_test(&[d]);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok    privileged containers never reach the daemon")
            && text.contains("2 cases, 2 passed, 0 failed"),
        "{text}"
    );
    // A failing case names its line and what differed; the run fails.
    std::fs::write(
        dir.join("wrong_test.lua"),
        "local t = require(\"luastrip.test\")\nt.case(\"wrong\", function()\n  local res = t.request { path = \"/_ping\" }\n  t.eq(res.status, 418)\nend)\n",
    )
    .unwrap();
    let (out, text) = luastrip_test(&[d]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAIL  wrong: ") && text.contains("wrong_test.lua:4: expected 418, got 200"),
        "{text}"
    );
    // Nothing to test is an error, not a pass.
    let empty = support::temp_dir("nocases");
    std::fs::write(empty.join("a.lua"), "-- nothing\n").unwrap();
    let (out, text) = luastrip_test(&[empty.to_str().unwrap()]);
    assert!(
        !out.status.success() && text.contains("nothing to test"),
        "{text}"
    );
}

/// `luastrip init DIR` gives a new user a directory that checks, tests and serves as it is,
/// with the editor's stubs and settings inside it (an installed luastrip has no source tree);
/// it never overwrites.
#[test]
fn init_makes_a_scripts_directory_that_checks_and_tests() {
    let dir = support::temp_dir("init").join("scripts");
    let d = dir.to_str().unwrap();
    let luastrip = |args: &[&str]| {
        output(
            Command::new(env!("CARGO_BIN_EXE_luastrip"))
                .args(args)
                .env_remove("DOCKER_HOST"),
        )
    };
    let out = luastrip(&["init", d]);
    assert!(out.status.success(), "{out:?}");
    for f in [
        "default.lua",
        "default_test.lua",
        "README.md",
        ".luastrip/types/luastrip.lua",
        ".luastrip/types/luastrip.test.lua",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // The editor's settings point at stubs that are there.
    let luarc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".luarc.json")).unwrap()).unwrap();
    for lib in luarc["workspace.library"].as_array().unwrap() {
        assert!(dir.join(lib.as_str().unwrap()).is_dir(), "{lib}");
    }
    let out = luastrip(&["check", d]);
    assert!(out.status.success(), "{out:?}");
    let (out, text) = luastrip_test(&[d]);
    assert!(
        out.status.success() && text.contains("1 cases, 1 passed"),
        "{text}"
    );
    // The stubs are the repository's (one source for both).
    assert_eq!(
        std::fs::read_to_string(dir.join(".luastrip/types/luastrip.lua")).unwrap(),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib/types/luastrip.lua")
        )
        .unwrap()
    );
    // A second init changes nothing and says what is in the way.
    std::fs::write(dir.join("default.lua"), "-- mine\n").unwrap();
    let out = luastrip(&["init", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("default.lua exists"));
    assert_eq!(
        std::fs::read_to_string(dir.join("default.lua")).unwrap(),
        "-- mine\n"
    );
    // A link where a file would go — even one that points nowhere — is refused, and nothing is
    // written through it.
    let other = support::temp_dir("init-link");
    let victim = other.join("victim");
    std::os::unix::fs::symlink(&victim, other.join("README.md")).unwrap();
    let out = luastrip(&["init", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("README.md exists"));
    assert!(!victim.exists());
}
