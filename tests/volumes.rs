//! The volume helper on real ZFS (zfs-fuse pools on files) and a real dockerd: Flocker's
//! `/flocker/NAME` binds through the docker CLI, the `zfs.*` namespace, ownership, and
//! `GET /luastrip/volumes`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{http_request, json_body, output, raw, run_ok, Daemon, Gateway, Pool, IMAGE};

/// A gateway on `pool` with the Flocker module and `extra` script text, as host `host`.
fn gateway(pool: &Pool, host: &str, script: &str) -> (Gateway, PathBuf) {
    let cluster = support::temp_dir("volumes").join("cluster.json");
    (gateway_with(pool, host, script, &cluster), cluster)
}

/// The same, keeping its cluster store in `cluster`.
fn gateway_with(pool: &Pool, host: &str, script: &str, cluster: &std::path::Path) -> Gateway {
    Gateway::with_script(
        &format!("require('luastrip.flocker').enable()\n{script}"),
        &[
            "--volume-backend",
            "zfs",
            "--zfs-pool",
            &pool.name,
            "--cluster-file",
            cluster.to_str().unwrap(),
            "--host-name",
            host,
        ],
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn flocker_binds_through_the_docker_cli() {
    let pool = Pool::new(256);
    let (gw, _) = gateway(&pool, "h1", "");
    let other = support::temp_dir("other-bind");
    std::fs::write(other.join("x"), "beside\n").unwrap();
    let other_bind = format!("{}:/other:ro", other.display());
    // Write through a Flocker volume, with an ordinary bind beside it.
    let said = run_ok(gw.docker().args([
        "run",
        "--rm",
        "-v",
        "/flocker/db:/data",
        "-v",
        &other_bind,
        IMAGE,
        "sh",
        "-c",
        "echo hello > /data/f && cat /other/x",
    ]));
    assert_eq!(said, "beside\n", "the other bind survived");
    let mountpoint = pool.zfs(&[
        "get",
        "-H",
        "-o",
        "value",
        "mountpoint",
        &format!("{}/luastrip/db", pool.name),
    ]);
    let file = PathBuf::from(mountpoint.trim()).join("f");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");
    // The same name is the same volume, through -v and --mount alike.
    for how in [
        vec!["-v", "/flocker/db:/data:ro"],
        // Spelt another way that dockerd would clean to the same path.
        vec!["-v", "//flocker/./db/:/data"],
        vec!["--mount", "type=bind,source=/flocker/db,target=/data"],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(how);
        args.extend([IMAGE, "cat", "/data/f"]);
        assert_eq!(run_ok(gw.docker().args(&args)), "hello\n");
    }
    // GET /luastrip/volumes shows it, owned here.
    let resp = raw(
        &gw.socket,
        &http_request("GET", "/luastrip/volumes", "", b""),
    );
    let list = json_body(&resp);
    let db = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "db")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(db["owner"], "h1");
    assert_eq!(db["owned"], true);
    assert_eq!(db["mountpoint"], mountpoint.trim());
    let one = json_body(&raw(
        &gw.socket,
        &http_request("GET", "/luastrip/volumes/db", "", b""),
    ));
    assert_eq!(one["name"], "db");
    let missing = raw(
        &gw.socket,
        &http_request("GET", "/luastrip/volumes/nope", "", b""),
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = raw(
        &gw.socket,
        &http_request("POST", "/luastrip/volumes", "", b""),
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
}

#[test]
fn bad_flocker_names_are_refused_and_never_reach_zfs() {
    let pool = Pool::new(128);
    let (gw, _) = gateway(&pool, "h1", "");
    let before = pool.zfs(&["list", "-H", "-o", "name", "-r", &pool.name]);
    for (bind, why) in [
        ("/flocker/a@b:/data", "'@' is not allowed"),
        ("/flocker/db/../../etc:/data", "names no volume"),
        ("/flocker/db/sub:/data", "bound whole"),
        ("/flocker/../flocker/db/x:/data", "bound whole"),
        ("/flocker:/data", "names no volume"),
        ("/flocker/-r:/data", "must start with a letter or a digit"),
        ("/flocker/:/data", "names no volume"),
        (
            &format!("/flocker/{}:/data", "a".repeat(65)),
            "longer than 64",
        ),
    ] {
        let out = output(gw.docker().args(["create", "-v", bind, IMAGE, "true"]));
        assert!(!out.status.success(), "{bind}");
        let err = stderr(&out);
        assert!(err.contains(why), "{bind}: {err}");
    }
    let mounts = output(gw.docker().args([
        "create",
        "--mount",
        "type=bind,source=/flocker/a b,target=/data",
        IMAGE,
        "true",
    ]));
    assert!(
        stderr(&mounts).contains("' ' is not allowed"),
        "{}",
        stderr(&mounts)
    );
    // Nothing was made on the pool.
    assert_eq!(
        pool.zfs(&["list", "-H", "-o", "name", "-r", &pool.name]),
        before
    );
}

/// The `zfs` namespace, driven from a script endpoint: snapshot, rollback, destroy.
#[test]
fn snapshots_rollback_and_destroy_from_lua() {
    let pool = Pool::new(256);
    let (gw, cluster) = gateway(
        &pool,
        "h1",
        r#"
        route.endpoint("POST /luastrip/t/{op}/{name}", function(req)
          local op, name, arg = req.params.op, req.params.name, (req.query.arg)
          if op == "volume" then return { json = zfs.volume(name) } end
          if op == "snapshot" then return { json = zfs.snapshot(name, arg) } end
          if op == "snapshots" then return { json = zfs.snapshots(name) } end
          if op == "rollback" then
            return { json = { ok = zfs.rollback(name, arg, { destroy_newer = req.query.force == "1" }) } }
          end
          if op == "destroy" then return { json = { ok = zfs.destroy(name) } } end
        end)
        "#,
    );
    let call = |op: &str, name: &str, query: &str| {
        let target = match query {
            "" => format!("/luastrip/t/{op}/{name}"),
            q => format!("/luastrip/t/{op}/{name}?{q}"),
        };
        let resp = raw(&gw.socket, &http_request("POST", &target, "", b""));
        (
            resp.lines().next().unwrap_or("").to_string(),
            json_body(&resp),
        )
    };
    let (status, v) = call("volume", "app", "");
    assert!(status.contains("200"), "{status} {v}");
    assert_eq!(v["new"], true);
    let dir = PathBuf::from(v["mountpoint"].as_str().unwrap());
    std::fs::write(dir.join("state"), "v1").unwrap();
    let (_, s1) = call("snapshot", "app", "arg=one");
    assert_eq!(s1["tag"], "one");
    assert!(s1["guid"].as_str().unwrap().len() > 5);
    std::fs::write(dir.join("state"), "v2").unwrap();
    let (_, auto) = call("snapshot", "app", "");
    assert!(
        auto["tag"].as_str().unwrap().starts_with("luastrip-"),
        "{auto}"
    );
    let (_, snaps) = call("snapshots", "app", "");
    let tags: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["one", auto["tag"].as_str().unwrap()]);
    // A newer snapshot is in the way unless the script says to destroy it.
    let (status, e) = call("rollback", "app", "arg=one");
    assert!(status.contains("500"), "{status}");
    assert!(
        e["message"].as_str().unwrap().contains("destroy_newer"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("state")).unwrap(), "v2");
    let (status, _) = call("rollback", "app", "arg=one&force=1");
    assert!(status.contains("200"), "{status}");
    assert_eq!(std::fs::read_to_string(dir.join("state")).unwrap(), "v1");
    // A container that uses the volume (not even running) keeps it from being destroyed.
    let id = run_ok(
        gw.docker()
            .args(["create", "-v", "/flocker/app:/data", IMAGE, "true"]),
    )
    .trim()
    .to_string();
    let name = run_ok(
        Daemon::shared()
            .docker()
            .args(["inspect", "-f", "{{.Name}}", &id]),
    );
    let (status, e) = call("destroy", "app", "");
    assert!(status.contains("500"), "{status}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(name.trim().trim_start_matches('/')), "{msg}");
    assert!(dir.join("state").exists());
    run_ok(gw.docker().args(["rm", &id]));
    let (status, e) = call("destroy", "app", "");
    assert!(status.contains("200"), "{status} {e}");
    assert!(!pool
        .zfs(&["list", "-H", "-o", "name", "-r", &pool.name])
        .contains("/app"));
    // Its claim is gone from the cluster file too.
    let saved = std::fs::read_to_string(&cluster).unwrap();
    assert!(!saved.contains("volumes/app"), "{saved}");
    // Bad names and tags never become commands.
    for (op, name, query) in [
        ("snapshot", "app", "arg=x@y"),
        ("volume", "a..b", ""),
        ("snapshots", "missing", ""),
    ] {
        let (status, e) = call(op, name, query);
        assert!(status.contains("500"), "{op} {name}: {status}");
        assert!(e["message"].as_str().unwrap().contains("zfs helper"), "{e}");
    }
}

/// A copy owned by another gateway is read-only, and the Flocker hook names its owner.
#[test]
fn a_volume_owned_elsewhere_is_read_only_here() {
    let pool = Pool::new(128);
    let script = r#"route.endpoint("GET /luastrip/t/{name}", function(req) return { json = zfs.volume(req.params.name) } end)"#;
    let (gw, cluster) = gateway(&pool, "h1", script);
    // Another gateway claimed "theirs" first (as the shared cluster store would say).
    let mut saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cluster)
            .unwrap_or_else(|_| "{\"revision\":0,\"records\":{}}".into()),
    )
    .unwrap();
    let rev = saved["revision"].as_u64().unwrap() + 1;
    saved["revision"] = rev.into();
    saved["records"]["volumes/theirs"] =
        serde_json::json!({ "value": { "owner": "h2" }, "revision": rev });
    // The gateway holds the store in memory: restart it on the edited file.
    drop(gw);
    std::fs::write(&cluster, serde_json::to_vec(&saved).unwrap()).unwrap();
    let gw = gateway_with(&pool, "h1", script, &cluster);
    let v = json_body(&raw(
        &gw.socket,
        &http_request("GET", "/luastrip/t/theirs", "", b""),
    ));
    assert_eq!(v["owner"], "h2");
    assert_eq!(v["owned"], false);
    assert_eq!(v["read_only"], true);
    let dir = PathBuf::from(v["mountpoint"].as_str().unwrap());
    let write = std::fs::write(dir.join("f"), "x");
    assert!(write.is_err(), "a non-owner copy took a write");
    let out = output(
        gw.docker()
            .args(["create", "-v", "/flocker/theirs:/data", IMAGE, "true"]),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("owned by h2"), "{}", stderr(&out));
}

#[test]
fn a_missing_pool_or_backend_is_a_clear_start_up_error() {
    let dir = support::temp_dir("volumes-bad");
    for (args, want) in [
        (
            vec!["--volume-backend", "zfs", "--zfs-pool", "nosuchpool1"],
            "--zfs-pool nosuchpool1: no such pool",
        ),
        (vec!["--volume-backend", "zfs"], "needs --zfs-pool"),
        (
            vec!["--volume-backend", "lvm", "--zfs-pool", "x"],
            "the backends are: zfs",
        ),
        (
            vec!["--volume-backend", "zfs", "--zfs-pool", "a b"],
            "' ' is not allowed",
        ),
        (
            vec!["--zfs-pool", "x"],
            "--zfs-pool needs --volume-backend zfs",
        ),
    ] {
        let sock = dir.join("s.sock");
        let out = output(
            Command::new(env!("CARGO_BIN_EXE_luastrip"))
                .args(["serve", "--listen", &format!("unix://{}", sock.display())])
                .args([
                    "--upstream",
                    &format!("unix://{}", Daemon::shared().socket.display()),
                ])
                .args(["--cluster-file", dir.join("c.json").to_str().unwrap()])
                .args(&args),
        );
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(!sock.exists());
    }
}
