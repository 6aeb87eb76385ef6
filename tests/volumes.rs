//! The volume helper on real ZFS (zfs-fuse pools on files) and a real dockerd: Flocker's
//! `/flocker/NAME` binds through the docker CLI, the `zfs.*` namespace, ownership, and
//! `GET /luastrip/volumes`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{http_request, json_body, output, raw, run_ok, status, Daemon, Gateway, Pool, IMAGE};

/// One test at a time on zfs-fuse: concurrent pool creation, dataset mounts and large writes
/// from several tests can deadlock zfs-fuse 0.7 (a `zfs create` stuck in D state, seen in CI),
/// and what these tests check is the helper, not zfs-fuse under load.
fn zfs_one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ZFS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ZFS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A gateway on `pool` with the Flocker module (moving volumes here allowed) and `extra` script
/// text, as host `host`.
fn gateway(pool: &Pool, host: &str, script: &str) -> (Gateway, PathBuf) {
    let cluster = support::temp_dir("volumes").join("cluster.json");
    (gateway_with(pool, host, script, &cluster, &[]), cluster)
}

/// The same, keeping its cluster store in `cluster`, with `extra` flags.
fn gateway_with(
    pool: &Pool,
    host: &str,
    script: &str,
    cluster: &std::path::Path,
    extra: &[&str],
) -> Gateway {
    gateway_env(pool, host, script, cluster, extra, &[])
}

/// The same, with `env` set for the gateway.
fn gateway_env(
    pool: &Pool,
    host: &str,
    script: &str,
    cluster: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Gateway {
    gateway_in(
        None,
        &Daemon::shared().socket,
        pool,
        host,
        script,
        cluster,
        extra,
        env,
    )
}

/// The same in front of `upstream`, inside the network namespace `netns` if given.
#[allow(clippy::too_many_arguments)]
fn gateway_in(
    netns: Option<&str>,
    upstream: &std::path::Path,
    pool: &Pool,
    host: &str,
    script: &str,
    cluster: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Gateway {
    let mut args = vec![
        "--volume-backend",
        "zfs",
        "--zfs-pool",
        &pool.name,
        "--cluster-file",
        cluster.to_str().unwrap(),
        "--host-name",
        host,
    ];
    args.extend_from_slice(extra);
    Gateway::with_script_in(
        netns,
        upstream,
        &format!("require('luastrip.flocker').enable {{ may_pull = function() return true end }}\n{script}"),
        &args,
        env,
    )
}

/// A container with the Flocker volume `volume` on `/data`, through `gw`, is refused, and the
/// error says `says`.
fn mount_refused(gw: &Gateway, volume: &str, says: &str) {
    let bind = format!("/flocker/{volume}:/data");
    let out = output(
        gw.docker()
            .args(["run", "--rm", "-v", &bind, IMAGE, "true"]),
    );
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains(says), "{err}");
}

/// The peer token file in `dir`, readable by its owner only (as the gateway demands).
fn token_file(dir: &std::path::Path) -> PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, "a-token-of-thirty-two-characters\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    token
}

/// `sh -c script` in a throwaway container with the Flocker volume `volume` on `/data`, through
/// `gw`; its output.
fn sh_in(gw: &Gateway, volume: &str, script: &str) -> String {
    let bind = format!("/flocker/{volume}:/data");
    run_ok(
        gw.docker()
            .args(["run", "--rm", "-v", &bind, IMAGE, "sh", "-c", script]),
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn flocker_binds_through_the_docker_cli() {
    let _zfs = zfs_one_at_a_time();
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
    // A create without binds, or with `"Binds": null`, is left alone.
    for body in [
        format!(r#"{{"Image":"{IMAGE}","Cmd":["true"]}}"#),
        format!(
            r#"{{"Image":"{IMAGE}","Cmd":["true"],"HostConfig":{{"Binds":null,"Mounts":null}}}}"#
        ),
    ] {
        let resp = support::post_json(&gw.socket, "/v1.41/containers/create", &body);
        assert!(resp.starts_with("HTTP/1.1 201"), "{body}: {resp}");
        let id = json_body(&resp)["Id"].as_str().unwrap().to_string();
        run_ok(gw.docker().args(["rm", &id]));
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
    let one = gw.volume("db");
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
    let _zfs = zfs_one_at_a_time();
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
    let _zfs = zfs_one_at_a_time();
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
    let _zfs = zfs_one_at_a_time();
    let pool = Pool::new(128);
    // No flocker.may_pull: the default, which moves nothing here.
    let script = r#"require('luastrip.flocker').may_pull = nil
route.endpoint("GET /luastrip/t/{name}", function(req) return { json = zfs.volume(req.params.name) } end)"#;
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
    let gw = gateway_with(&pool, "h1", script, &cluster, &[]);
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
    assert!(
        stderr(&out).contains("moves no volume here unless flocker.may_pull allows it"),
        "{}",
        stderr(&out)
    );
}

/// Flocker behind the example policy's guard (issue 20): the guard allows exactly the mountpoints
/// the Flocker rewrite produced for the call, and nothing else under the pool. A client cannot
/// bind a volume's mountpoint directly (around Flocker's ownership check), climb out of it with
/// `..`, or follow a link a container planted inside it.
#[test]
fn the_guard_allows_exactly_what_flocker_produced() {
    let _zfs = zfs_one_at_a_time();
    let pool = Pool::new(128);
    let (gw, _) = gateway(&pool, "h1", "require('luastrip.policy').guard()\n");
    // Through /flocker/ it works, by -v and by --mount; the container plants a link to /.
    assert_eq!(
        sh_in(
            &gw,
            "db",
            "echo hi > /data/f && ln -s / /data/hostroot && cat /data/f"
        ),
        "hi\n"
    );
    assert_eq!(
        run_ok(gw.docker().args([
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/flocker/db,target=/data",
            IMAGE,
            "cat",
            "/data/f",
        ])),
        "hi\n"
    );
    let mp = pool
        .zfs(&[
            "get",
            "-H",
            "-o",
            "value",
            "mountpoint",
            &format!("{}/luastrip/db", pool.name),
        ])
        .trim()
        .to_string();
    let marker = format!("/etc/luastrip-attack-{}", std::process::id());
    let attacks = [
        ("-v", format!("{mp}:/x")),
        ("-v", format!("{mp}/:/x")),
        ("-v", format!("{mp}/../../../../../../etc:/x")),
        (
            "--mount",
            format!("type=bind,source={mp}/../../../../../..,target=/x"),
        ),
        ("-v", format!("{mp}/hostroot:/x")),
        ("-v", format!("{mp}/hostroot/etc:/x")),
        (
            "-v",
            format!("{}/luastrip:/x", mp.rsplit_once("/luastrip/").unwrap().0),
        ),
    ];
    for (i, (how, spec)) in attacks.iter().enumerate() {
        // Alone; and beside the volume's own Flocker bind, whose mountpoint exactly (the first
        // two, the same volume) is then allowed, but nothing climbing out of it or below it.
        for beside in [&[][..], &["-v", "/flocker/db:/data"][..]] {
            if !beside.is_empty() && i < 2 {
                continue;
            }
            let out = output(
                gw.docker()
                    .args(["run", "--rm"])
                    .args(beside)
                    .args([*how, spec.as_str(), IMAGE, "sh", "-c"])
                    .arg(format!("touch /x{marker}")),
            );
            let err = stderr(&out);
            assert!(!out.status.success(), "{beside:?} {how} {spec} ran");
            assert!(
                err.contains("luastrip policy: a bind mount of the host path"),
                "{beside:?} {how} {spec}: {err}"
            );
            assert!(
                !std::path::Path::new(&marker).exists(),
                "{how} {spec} wrote {marker}"
            );
        }
    }
}

/// A peer's stream never chooses where it lands (issue 20): a stream that carries the dataset's
/// properties (`zfs send -p`, `-R`, made from a dataset with `mountpoint=` a host directory) is
/// refused before zfs reads it, and nothing is mounted there; the same data as a plain stream
/// lands under the pool, whatever mountpoint it had on the sender. A token file others can read
/// is refused at start-up.
#[test]
fn a_peer_stream_never_chooses_where_it_is_mounted() {
    let _zfs = zfs_one_at_a_time();
    let (pool, src) = (Pool::new(128), Pool::new(128));
    let dir = support::temp_dir("peer-stream");
    let token = dir.join("token");
    std::fs::write(&token, "a-token-of-thirty-two-characters\n").unwrap();
    let cluster = dir.join("cluster.json");
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    // Readable by others: refused, naming the fix.
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .args([
                "serve",
                "--listen",
                &format!("unix://{}", dir.join("s.sock").display()),
            ])
            .args([
                "--upstream",
                &format!("unix://{}", Daemon::shared().socket.display()),
            ])
            .args(["--volume-backend", "zfs", "--zfs-pool", &pool.name])
            .args([
                "--cluster-file",
                cluster.to_str().unwrap(),
                "--peer-listen",
                &listen,
            ])
            .args(["--peer-token-file", token.to_str().unwrap()]),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // The cluster says h9 (holding the token) is moving each volume here at epoch 1: the
    // handoff is in order, and only the stream itself is on trial.
    let moving = serde_json::json!({
        "value": { "owner": "h9", "epoch": 1, "move": { "to": "h1", "step": "sending" } },
        "revision": 1,
    });
    let records: serde_json::Map<String, serde_json::Value> = ["withprops", "replicated", "plain"]
        .iter()
        .map(|n| (format!("volumes/{n}"), moving.clone()))
        .collect();
    std::fs::write(
        &cluster,
        serde_json::json!({ "revision": 1, "records": records }).to_string(),
    )
    .unwrap();
    let _gw = gateway_with(
        &pool,
        "h1",
        "",
        &cluster,
        &[
            "--peer-listen",
            &listen,
            "--peer-token-file",
            token.to_str().unwrap(),
        ],
    );
    // On the sending side: a dataset mounted at a host directory of the attacker's choosing.
    let target = dir.join("chosen");
    let evil = format!("{}/evil", src.name);
    src.zfs(&[
        "create",
        "-o",
        &format!("mountpoint={}", target.display()),
        &evil,
    ]);
    std::fs::write(target.join("planted"), "x").unwrap();
    src.zfs(&["snapshot", &format!("{evil}@s")]);
    src.zfs(&["unmount", &evil]);
    std::fs::remove_dir(&target).unwrap();
    let guid = src.zfs(&["get", "-H", "-o", "value", "guid", &format!("{evil}@s")]);
    let put = |flags: &[&str], name: &str| {
        let file = dir.join(format!("stream-{name}"));
        let stream = output(
            Command::new("zfs")
                .arg("send")
                .args(flags)
                .arg(format!("{evil}@s")),
        );
        assert!(stream.status.success(), "{}", stderr(&stream));
        std::fs::write(&file, &stream.stdout).unwrap();
        run_ok(Command::new("curl").args([
            "-s",
            "-X",
            "PUT",
            "-H",
            "Authorization: Bearer a-token-of-thirty-two-characters",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!(
                "http://{listen}/luastrip/peer/v1/volumes/{name}/stream?tag=s&guid={}&from=h9&epoch=1",
                guid.trim()
            ),
        ]))
    };
    for (flags, name) in [(&["-p"][..], "withprops"), (&["-R"][..], "replicated")] {
        let answer = put(flags, name);
        assert!(
            answer.contains("carries the dataset's properties"),
            "{flags:?}: {answer}"
        );
        assert!(
            !target.exists(),
            "{flags:?}: {} was mounted",
            target.display()
        );
        let listed = pool.zfs(&["list", "-H", "-o", "name", "-r", &pool.name]);
        assert!(!listed.contains(name), "{flags:?}: {listed}");
    }
    // The same data as a plain stream: received, under the pool.
    let answer = put(&[], "plain");
    assert!(answer.contains(guid.trim()), "{answer}");
    assert!(!target.exists());
    let ds = format!("{}/luastrip/plain", pool.name);
    let mountpoint = pool.zfs(&["get", "-H", "-o", "value", "mountpoint", &ds]);
    assert!(
        std::fs::read_to_string(PathBuf::from(mountpoint.trim()).join("planted")).unwrap() == "x",
        "{mountpoint}"
    );
    assert!(!mountpoint.contains("chosen"), "{mountpoint}");
}

/// zfs-fuse 0.7 deadlocks when datasets are created or mounted side by side (issue 19): a dozen
/// `docker run`s with a dozen new Flocker volumes at once through one gateway, for several
/// rounds, all succeed (the gateway runs the pool's changes one at a time). And a zfs that stops
/// answering (its daemon stopped) fails the call within `--zfs-timeout-s` with a Docker error
/// naming the command, instead of hanging it; the gateway then goes on serving.
#[test]
fn concurrent_flocker_volumes_and_a_zfs_that_stops_answering() {
    let _zfs = zfs_one_at_a_time();
    let pool = Pool::new(256);
    let cluster = support::temp_dir("volumes-concurrent").join("cluster.json");
    let gw = gateway_with(&pool, "h1", "", &cluster, &["--zfs-timeout-s", "5"]);
    for round in 0..4 {
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..12)
                .map(|i| {
                    let gw = &gw;
                    s.spawn(move || {
                        sh_in(
                            gw,
                            &format!("r{round}v{i}"),
                            "echo x > /data/f && cat /data/f",
                        )
                    })
                })
                .collect();
            for run in runs {
                assert_eq!(run.join().unwrap(), "x\n", "round {round}");
            }
        });
    }
    let listed = pool.zfs(&["list", "-H", "-o", "name", "-r", &pool.name]);
    assert_eq!(
        listed.lines().filter(|l| l.contains("/luastrip/r")).count(),
        48
    );

    // The zfs-fuse daemon stops answering (SIGSTOP; SIGCONT again however the test ends).
    let daemon = run_ok(Command::new("pidof").arg("zfs-fuse"));
    let pid: i32 = daemon.split_whitespace().next().unwrap().parse().unwrap();
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let resume = Resume(pid);
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t = std::time::Instant::now();
    let out =
        output(
            gw.docker()
                .args(["run", "--rm", "-v", "/flocker/stuck:/data", IMAGE, "true"]),
        );
    let took = t.elapsed();
    drop(resume);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Error response from daemon")
            && err.contains("zfs ")
            && err.contains("did not finish in 5s"),
        "{err}"
    );
    // One bound, not one per command the call would have run (nor the docker CLI's patience).
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    // zfs answers again, and so does the gateway, volumes included.
    assert_eq!(
        sh_in(&gw, "stuck", "echo back > /data/f && cat /data/f"),
        "back\n"
    );
}

#[test]
fn a_missing_pool_or_backend_is_a_clear_start_up_error() {
    let _zfs = zfs_one_at_a_time();
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
    // No zfs/zpool commands at all: the message says what to install.
    let sock = dir.join("s.sock");
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .env("PATH", dir.join("empty-path"))
            .args(["serve", "--listen", &format!("unix://{}", sock.display())])
            .args([
                "--upstream",
                &format!("unix://{}", Daemon::shared().socket.display()),
            ])
            .args(["--cluster-file", dir.join("c.json").to_str().unwrap()])
            .args(["--volume-backend", "zfs", "--zfs-pool", "tank"]),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("apt-get install zfs-fuse"),
        "{}",
        stderr(&out)
    );
    assert!(!sock.exists());
}

/// The Docker volume plugin: dockerd itself asks luastrip for the volume, so a restart sent to
/// dockerd directly (never through luastrip) finds it mounted again.
#[test]
fn the_volume_plugin_serves_dockerd_itself() {
    let _zfs = zfs_one_at_a_time();
    let pool = Pool::new(256);
    let plugin = format!("lst{}vol", std::process::id());
    let sock = PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    // dockerd tries every socket in the plugin directory for 15 s before `docker volume ls`
    // answers: never leave one behind, even when this test fails.
    support::remove_dead_plugin_sockets();
    let _cleanup = support::RemoveOnDrop(sock.clone());
    // A socket file left by a crashed run is replaced, never a hang.
    std::fs::create_dir_all("/run/docker/plugins").unwrap();
    let _ = std::fs::remove_file(&sock);
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let cluster = support::temp_dir("volumes").join("cluster.json");
    let gw = gateway_with(&pool, "h1", "", &cluster, &["--volume-plugin", &plugin]);
    let direct = Daemon::shared();
    // dockerd has loaded the plugin before anyone used it (what a swarm node reports, and so
    // where swarm schedules tasks that mount its volumes: moby#23619).
    support::wait_until(
        "dockerd lists the plugin in docker info",
        std::time::Duration::from_secs(10),
        || {
            run_ok(
                direct
                    .docker()
                    .args(["info", "--format", "{{json .Plugins.Volume}}"]),
            )
            .contains(&format!("\"{plugin}\""))
        },
    );
    // The protocol itself.
    let activate = raw(&sock, &http_request("POST", "/Plugin.Activate", "", b"{}"));
    assert!(json_body(&activate)["Implements"]
        .as_array()
        .unwrap()
        .contains(&"VolumeDriver".into()));
    let unknown = raw(
        &sock,
        &http_request("POST", "/VolumeDriver.Frobnicate", "", b"{}"),
    );
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    // One host's store: the volumes are this host's.
    let caps = raw(
        &sock,
        &http_request("POST", "/VolumeDriver.Capabilities", "", b"{}"),
    );
    assert_eq!(json_body(&caps)["Capabilities"]["Scope"], "local", "{caps}");
    let bad = raw(
        &sock,
        &http_request("POST", "/VolumeDriver.Create", "", br#"{"Name":"../x"}"#),
    );
    assert!(
        json_body(&bad)["Err"]
            .as_str()
            .unwrap()
            .contains("start with"),
        "{bad}"
    );
    let opts = raw(
        &sock,
        &http_request(
            "POST",
            "/VolumeDriver.Create",
            "",
            br#"{"Name":"x","Opts":{"size":"1G"}}"#,
        ),
    );
    assert!(
        json_body(&opts)["Err"]
            .as_str()
            .unwrap()
            .contains("unknown option \"size\""),
        "{opts}"
    );

    run_ok(gw.docker().args(["volume", "create", "-d", &plugin, "pdb"]));
    let id = run_ok(gw.docker().args([
        "run",
        "-d",
        "-v",
        "pdb:/data",
        IMAGE,
        "sh",
        "-c",
        "echo start >> /data/starts; sleep 300",
    ]))
    .trim()
    .to_string();
    let dataset_dir = PathBuf::from(
        pool.zfs(&[
            "get",
            "-H",
            "-o",
            "value",
            "mountpoint",
            &format!("{}/luastrip/pdb", pool.name),
        ])
        .trim(),
    );
    let starts = || std::fs::read_to_string(dataset_dir.join("starts")).unwrap_or_default();
    support::wait_until(
        "the first start wrote",
        std::time::Duration::from_secs(10),
        || starts().lines().count() == 1,
    );
    // Restarted by dockerd directly: dockerd mounts the volume through the plugin again.
    run_ok(direct.docker().args(["restart", "-t", "0", &id]));
    support::wait_until(
        "the restart wrote",
        std::time::Duration::from_secs(10),
        || starts().lines().count() == 2,
    );
    // The same volume through the Flocker syntax.
    assert_eq!(
        run_ok(gw.docker().args([
            "run",
            "--rm",
            "-v",
            "/flocker/pdb:/data",
            IMAGE,
            "cat",
            "/data/starts"
        ])),
        "start\nstart\n"
    );
    // --mount with the driver creates one on the fly.
    let mount = format!("type=volume,source=pdb2,target=/data,volume-driver={plugin}");
    run_ok(gw.docker().args([
        "run",
        "--rm",
        "--mount",
        &mount,
        IMAGE,
        "sh",
        "-c",
        "echo y > /data/y",
    ]));
    let ls = run_ok(gw.docker().args([
        "volume",
        "ls",
        "--filter",
        &format!("driver={plugin}"),
        "--format",
        "{{.Name}}",
    ]));
    assert!(
        ls.lines().any(|l| l == "pdb") && ls.lines().any(|l| l == "pdb2"),
        "{ls}"
    );
    let inspected = run_ok(
        gw.docker()
            .args(["volume", "inspect", "-f", "{{.Mountpoint}}", "pdb"]),
    );
    assert_eq!(inspected.trim(), dataset_dir.display().to_string());
    // In use: refused, and the data stays.
    let out = output(gw.docker().args(["volume", "rm", "pdb"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(dataset_dir.join("starts").exists());
    // Once the container is gone, rm removes the dataset.
    run_ok(gw.docker().args(["rm", "-f", &id]));
    run_ok(gw.docker().args(["volume", "rm", "pdb", "pdb2"]));
    let left = pool.zfs(&["list", "-H", "-o", "name", "-r", &pool.name]);
    assert!(!left.contains("/pdb"), "{left}");
    // A swarm service on the plugin's volumes that updates or rolls back start-first is
    // refused (however its keys are spelt); stop-first reaches dockerd (not a swarm manager).
    let service = |update: &str, rollback: &str| {
        format!(
            r#"{{"Name":"s{pid}","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Mounts":[{{"Type":"volume","Source":"db","Target":"/data","VolumeOptions":{{"DriverConfig":{{"Name":"{plugin}"}}}}}}]}}}},"{update}":{{"Order":"start-first"}},"RollbackConfig":{{"Order":"{rollback}"}}}}"#,
            pid = std::process::id()
        )
    };
    for (path, body, says) in [
        (
            "/v1.41/services/create",
            service("UpdateConfig", "stop-first"),
            Some("--update-order stop-first"),
        ),
        (
            "/v1.41/services/create",
            service("updateconfig", "stop-first"),
            Some("--update-order stop-first"),
        ),
        (
            "/v1.41/services/s1/update?version=3",
            service("UpdateConfig", "stop-first"),
            Some("--update-order stop-first"),
        ),
        (
            "/v1.41/services/create",
            service("x", "start-first"),
            Some("--rollback-order stop-first"),
        ),
        ("/v1.41/services/create", service("x", "stop-first"), None),
    ] {
        let resp = raw(
            &gw.socket,
            &http_request(
                "POST",
                path,
                "Content-Type: application/json\r\n",
                body.as_bytes(),
            ),
        );
        match says {
            Some(says) => {
                assert_eq!(status(&resp), "400", "{body}: {resp}");
                assert!(resp.contains(says) && resp.contains("service s"), "{resp}");
            }
            None => assert!(resp.contains("not a swarm manager"), "{body}: {resp}"),
        }
    }
    // The plugin socket goes with the gateway.
    let mut gw = gw;
    assert_eq!(gw.terminate(), Some(0));
    assert!(!sock.exists());
}

/// A free loopback port (bound, then released for the gateway to take).
/// Two "hosts" on one machine: two pools, two gateways (h1, h2) in front of the shared dockerd,
/// peers of each other, sharing one cluster store; each with the Flocker module and `script`.
struct TwoHosts {
    pools: [Pool; 2],
    gws: [Gateway; 2],
    token: PathBuf,
    ports: [u16; 2],
}

fn two_hosts(script: &str) -> TwoHosts {
    two_hosts_with(script, None)
}

/// Two hosts, their peer API over mutual TLS with the certificates in `tls` when given
/// (`ca.pem`, and `peer-cert.pem`/`peer-key.pem` for both).
fn two_hosts_with(script: &str, tls: Option<&std::path::Path>) -> TwoHosts {
    let dir = support::temp_dir("two-hosts");
    let cluster = dir.join("cluster.json");
    let token = token_file(&dir);
    let pools = [Pool::new(512), Pool::new(512)];
    let ports = [support::free_port(), support::free_port()];
    let scheme = if tls.is_some() { "https" } else { "http" };
    let tls_flags: Vec<String> = match tls {
        Some(d) => [
            ("--peer-tls-cert", "peer-cert.pem"),
            ("--peer-tls-key", "peer-key.pem"),
            ("--peer-tls-ca", "ca.pem"),
        ]
        .iter()
        .flat_map(|(flag, file)| [flag.to_string(), d.join(file).display().to_string()])
        .collect(),
        None => Vec::new(),
    };
    let start = |i: usize| {
        let other = 1 - i;
        let listen = format!("127.0.0.1:{}", ports[i]);
        let peer = format!("h{}={scheme}://127.0.0.1:{}", other + 1, ports[other]);
        let host = format!("h{}", i + 1);
        let mut extra = vec![
            "--peer-listen",
            &listen,
            "--peer",
            &peer,
            "--peer-token-file",
            token.to_str().unwrap(),
        ];
        extra.extend(tls_flags.iter().map(String::as_str));
        gateway_with(&pools[i], &host, script, &cluster, &extra)
    };
    let gws = [start(0), start(1)];
    TwoHosts {
        pools,
        gws,
        token,
        ports,
    }
}

impl TwoHosts {
    fn mountpoint(&self, i: usize, volume: &str) -> PathBuf {
        let ds = format!("{}/luastrip/{volume}", self.pools[i].name);
        PathBuf::from(
            self.pools[i]
                .zfs(&["get", "-H", "-o", "value", "mountpoint", &ds])
                .trim(),
        )
    }

    fn volume(&self, i: usize, name: &str) -> serde_json::Value {
        self.gws[i].volume(name)
    }
}

/// Flocker's "chicken" test: write through one host, remove the container, run on the other
/// host: the data is there, moved by the hook (two-phase push), and ownership moved with it.
/// Moving a volume takes it from the host that has it, so it needs the site's say (issue 20):
/// with no `flocker.may_pull` nothing moves, and `may_pull` decides with the volume and the
/// client's call, its reason reaching the client. The volume stays where it was.
#[test]
fn a_volume_moves_only_when_the_site_allows_it() {
    let _zfs = zfs_one_at_a_time();
    // (No may_pull at all is tried in a_volume_owned_elsewhere_is_read_only_here.)
    let hosts = two_hosts(
        r#"require('luastrip.flocker').may_pull = function(v, req)
  if req.query.name == "allowed" then return v.owner == "h1" end
  if req.query.name == "refused" then return false, "not on a Sunday" end
  return false
end
"#,
    );
    let [gw1, gw2] = &hosts.gws;
    sh_in(gw1, "kept", "echo here > /data/f");
    let run = |gw: &Gateway, name: Option<&str>| {
        let mut cmd = gw.docker();
        cmd.args(["run", "--rm"]);
        if let Some(n) = name {
            cmd.args(["--name", n]);
        }
        output(cmd.args(["-v", "/flocker/kept:/data", IMAGE, "cat", "/data/f"]))
    };
    let out = run(gw2, None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("volume kept is owned by h1 and may not be moved here"),
        "{}",
        stderr(&out)
    );
    let out = run(gw2, Some("refused"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may not be moved here: not on a Sunday"),
        "{}",
        stderr(&out)
    );
    assert_eq!(hosts.volume(0, "kept")["owner"], "h1");
    assert_eq!(hosts.volume(0, "kept")["owned"], true);
    // Allowed: it moves, as Flocker's would.
    let out = run(gw2, Some("allowed"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "here\n");
    assert_eq!(hosts.volume(1, "kept")["owner"], "h2");
}

/// The peer API over mutual TLS (issue 20): a volume moves between peers that show each other
/// certificates the CA signed, while a plain-HTTP client, a client without a certificate and one
/// with a certificate from another CA do not get in, token or not.
#[test]
fn volumes_move_between_peers_over_mutual_tls() {
    let _zfs = zfs_one_at_a_time();
    let certs = support::temp_dir("peer-tls");
    support::make_ca(&certs);
    support::make_cert(
        &certs,
        "peer",
        "peer-key.pem",
        "peer-cert.pem",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    );
    let other = support::temp_dir("peer-tls-other");
    support::make_ca(&other);
    support::make_cert(
        &other,
        "intruder",
        "key.pem",
        "cert.pem",
        "extendedKeyUsage=clientAuth\n",
    );
    let hosts = two_hosts_with("", Some(&certs));
    let [gw1, gw2] = &hosts.gws;
    sh_in(gw1, "sealed", "echo secret > /data/f");
    assert_eq!(sh_in(gw2, "sealed", "cat /data/f"), "secret\n");
    assert_eq!(hosts.volume(1, "sealed")["owner"], "h2");
    let url = format!(
        "https://127.0.0.1:{}/luastrip/peer/v1/volumes/sealed/snapshots",
        hosts.ports[0]
    );
    let token = "Authorization: Bearer a-token-of-thirty-two-characters";
    let curl = |args: &[&str]| {
        output(
            Command::new("curl")
                .args(["-s", "--max-time", "10", "-H", token])
                .args(args),
        )
    };
    let ca = certs.join("ca.pem").display().to_string();
    let (cert, key) = (
        certs.join("peer-cert.pem").display().to_string(),
        certs.join("peer-key.pem").display().to_string(),
    );
    // A peer's certificate gets in (the control).
    let ok = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).starts_with('['),
        "{ok:?}"
    );
    let plain = url.replace("https://", "http://");
    let (ocert, okey) = (
        other.join("cert.pem").display().to_string(),
        other.join("key.pem").display().to_string(),
    );
    for (what, args) in [
        ("plain HTTP", vec![plain.as_str()]),
        (
            "no client certificate",
            vec!["--cacert", ca.as_str(), url.as_str()],
        ),
        (
            "another CA's certificate",
            vec![
                "--cacert",
                &ca,
                "--cert",
                &ocert,
                "--key",
                &okey,
                url.as_str(),
            ],
        ),
    ] {
        let out = curl(&args);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() || body.is_empty(), "{what}: {out:?}");
        assert!(!body.contains("tag"), "{what} got snapshots: {body}");
    }
}

#[test]
fn a_volume_follows_its_container_to_another_host() {
    let _zfs = zfs_one_at_a_time();
    let hosts = two_hosts("");
    let [gw1, gw2] = &hosts.gws;
    sh_in(gw1, "chicken", "echo egg > /data/f");
    assert_eq!(hosts.volume(0, "chicken")["owner"], "h1");
    // The second host asks the first to push it over before its container is created.
    let out = sh_in(gw2, "chicken", "cat /data/f; echo chick >> /data/f");
    assert_eq!(out, "egg\n");
    let on2 = hosts.volume(1, "chicken");
    assert_eq!(
        (on2["owner"].as_str(), on2["owned"].as_bool()),
        (Some("h2"), Some(true))
    );
    let on1 = hosts.volume(0, "chicken");
    assert_eq!(
        (on1["owned"].as_bool(), on1["read_only"].as_bool()),
        (Some(false), Some(true)),
        "{on1} {}",
        hosts.gws[0].log_text()
    );
    // And back again: what h2 wrote comes along.
    let back = run_ok(gw1.docker().args([
        "run",
        "--rm",
        "-v",
        "/flocker/chicken:/data",
        IMAGE,
        "cat",
        "/data/f",
    ]));
    assert_eq!(
        back,
        "egg\nchick\n",
        "{}\n{}",
        gw1.log_text(),
        gw2.log_text()
    );
    assert_eq!(hosts.volume(0, "chicken")["owner"], "h1");
    // Old push snapshots are pruned: one common snapshot is kept on each side, held (`zfs
    // hold`) as the next push's base.
    for i in 0..2 {
        let v = hosts.volume(i, "chicken");
        let snaps = v["snapshots"].as_array().unwrap();
        assert_eq!(snaps.len(), 1, "host {i}: {v}");
        let snap = format!(
            "{}/luastrip/chicken@{}",
            hosts.pools[i].name,
            snaps[0]["tag"].as_str().unwrap()
        );
        let refs = hosts.pools[i].zfs(&["get", "-H", "-o", "value", "userrefs", &snap]);
        assert_eq!(refs.trim(), "1", "host {i}: {snap}");
    }
}

/// A volume in use by a running container is not moved by the hook; the create on the other
/// host gets a clear error naming the container, and nothing changes hands.
#[test]
fn a_volume_in_use_does_not_move_and_a_wrong_token_is_refused() {
    let _zfs = zfs_one_at_a_time();
    let hosts = two_hosts("");
    let [gw1, gw2] = &hosts.gws;
    let id = run_ok(gw1.docker().args([
        "run",
        "-d",
        "--name",
        &format!("user-{}", std::process::id()),
        "-v",
        "/flocker/busy:/data",
        IMAGE,
        "sleep",
        "300",
    ]))
    .trim()
    .to_string();
    let out = output(
        gw2.docker()
            .args(["create", "-v", "/flocker/busy:/data", IMAGE, "true"]),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("owned by h1") && err.contains(&format!("user-{}", std::process::id())),
        "{err}"
    );
    assert_eq!(hosts.volume(0, "busy")["owner"], "h1");
    run_ok(gw1.docker().args(["rm", "-f", &id]));
    // The peer API wants the token: none, or a wrong one, is a 401 (and never logged).
    let peer = format!("127.0.0.1:{}", hosts.ports[0]);
    for auth in [
        "",
        "Authorization: Bearer wrong-token-of-32-characters-x\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(&peer).unwrap();
        use std::io::{Read, Write};
        write!(s, "GET /luastrip/peer/v1/volumes/busy/snapshots HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    }
    let token = std::fs::read_to_string(&hosts.token).unwrap();
    assert!(
        !gw1.log_text().contains(token.trim()),
        "the token was logged"
    );
}

/// `zfs.push` with containers writing during step 1: every byte written before the cut-over
/// arrives (checksums), and both steps' timings are reported.
#[test]
fn a_two_phase_push_of_100_mb_while_a_container_writes() {
    let _zfs = zfs_one_at_a_time();
    let hosts = two_hosts(
        r#"route.endpoint("POST /luastrip/push/{name}", function(req)
             return { json = zfs.push(req.params.name, "h2", { stop = true }) }
           end)"#,
    );
    let [gw1, _] = &hosts.gws;
    // ~100 MB to start with, then a container that keeps appending while step 1 runs.
    sh_in(
        gw1,
        "big",
        "dd if=/dev/urandom of=/data/base bs=1M count=100 2>/dev/null",
    );
    let writer = run_ok(gw1.docker().args([
        "run", "-d", "-v", "/flocker/big:/data", IMAGE, "sh", "-c",
        "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); dd if=/dev/urandom of=/data/chunk-$i bs=64k count=4 2>/dev/null; echo $i >> /data/log; sleep 0.05; done",
    ]))
    .trim()
    .to_string();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The push shows in the control socket's `tail` as it happens (the REPL prints these).
    let tail = {
        use std::io::{Read, Write};
        let mut s = support::connect(&gw1.control_socket());
        s.write_all(&http_request("GET", "/tail", "", b"")).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        std::thread::spawn(move || {
            let mut seen = String::new();
            let mut buf = [0u8; 4096];
            while !seen.contains("cut over") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            seen
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let resp = raw(
        &gw1.socket,
        &http_request("POST", "/luastrip/push/big", "", b""),
    );
    let report = json_body(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    println!(
        "two-phase push: step 1 {} bytes in {} ms (copied live), writer stopped in {} ms, \
         step 2 (cut-over) {} bytes in {} ms",
        report["step1_bytes"],
        report["step1_ms"],
        report["stop_ms"],
        report["step2_bytes"],
        report["step2_ms"]
    );
    let (step1, step2) = (
        report["step1_bytes"].as_u64().unwrap(),
        report["step2_bytes"].as_u64().unwrap(),
    );
    assert!(step1 > 100_000_000, "{report}");
    // Caught up while the writer ran: the cut-over sends only the last writes.
    assert!(step2 * 10 < step1, "{report}");
    assert_eq!(report["stopped"].as_array().unwrap().len(), 1, "{report}");
    let seen = tail.join().unwrap();
    for step in [
        "\"event\":\"helper\"",
        "step 1, copying while in use",
        "step 1 copied",
        "step 2, cut-over",
        "cut over big",
    ] {
        assert!(seen.contains(step), "{step} not in the tail:\n{seen}");
    }
    // The writer was stopped for the cut-over; everything it wrote is on h2, byte for byte.
    let state =
        run_ok(
            Daemon::shared()
                .docker()
                .args(["inspect", "-f", "{{.State.Running}}", &writer]),
        );
    assert_eq!(state.trim(), "false");
    let sums = |i: usize| {
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "cd {} && find . -type f | sort | xargs sha256sum",
            hosts.mountpoint(i, "big").display()
        )))
    };
    let (on1, on2) = (sums(0), sums(1));
    assert!(on1.lines().count() > 3, "{on1}");
    assert_eq!(on1, on2);
    assert_eq!(hosts.volume(1, "big")["owner"], "h2");
    // Starting the writer here again is refused: its data moved.
    let again = output(gw1.docker().args(["start", &writer[..12]]));
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("which moved to h2"),
        "{}",
        stderr(&again)
    );
    run_ok(gw1.docker().args(["rm", "-f", &writer]));
}

/// The peer goes away in the middle of step 1: the push fails with a clear error, the source
/// keeps ownership and a writable copy, and a later push (peer back) completes from scratch.
#[test]
fn a_peer_lost_mid_send_leaves_the_volume_with_its_owner() {
    let _zfs = zfs_one_at_a_time();
    let mut hosts = two_hosts(
        r#"route.endpoint("POST /luastrip/push/{name}", function(req)
             local ok, e = pcall(zfs.push, req.params.name, "h2")
             if ok then return { json = e } end
             return { status = 502, json = { message = tostring(e):match("^[^\n]*") } }
           end)"#,
    );
    sh_in(
        &hosts.gws[0],
        "lost",
        "dd if=/dev/urandom of=/data/base bs=1M count=100 2>/dev/null",
    );
    let base = hosts.mountpoint(0, "lost").join("base");
    let sum = || run_ok(Command::new("sha256sum").arg(&base));
    let before = sum();
    let socket = hosts.gws[0].socket.clone();
    let push = std::thread::spawn(move || {
        raw(
            &socket,
            &http_request("POST", "/luastrip/push/lost", "", b""),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    hosts.gws[1].child.kill().unwrap();
    let resp = push.join().unwrap();
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(
        json_body(&resp)["message"]
            .as_str()
            .unwrap()
            .contains("peer h2"),
        "{resp}"
    );
    let v = hosts.volume(0, "lost");
    assert_eq!(
        (v["owner"].as_str(), v["read_only"].as_bool()),
        (Some("h1"), Some(false)),
        "{v}"
    );
    assert_eq!(sum(), before, "nothing lost");
    // Still writable through h1.
    sh_in(&hosts.gws[0], "lost", "echo after > /data/after");
    // A peer that is down: a clear error at once, nothing changes hands.
    let resp = raw(
        &hosts.gws[0].socket,
        &http_request("POST", "/luastrip/push/lost", "", b""),
    );
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(
        json_body(&resp)["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{resp}"
    );
    assert_eq!(hosts.volume(0, "lost")["owner"], "h1");
}

/// `examples/flocker/two-hosts.sh`, as a reader would run it (with this suite's daemon, image,
/// binary and free ports).
#[test]
fn the_two_host_example_runs() {
    let _zfs = zfs_one_at_a_time();
    support::require_tool("curl", "curl");
    // Started here, under the suite's lock, rather than by the script beside other tests.
    support::ensure_zfs_fuse();
    let pid = std::process::id();
    let run = support::temp_dir("example-flocker");
    let ports = format!("{} {}", support::free_port(), support::free_port());
    let out = output(
        Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/flocker/two-hosts.sh"
            ))
            .env("BIN", env!("CARGO_BIN_EXE_luastrip"))
            .env(
                "UPSTREAM",
                format!("unix://{}", Daemon::shared().socket.display()),
            )
            .env("IMAGE", IMAGE)
            .env("RUN", &run)
            .env("PORTS", ports)
            .env("POOL", format!("lst{pid}n9e")),
    );
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{stdout}\n{err}");
    assert!(stdout.contains("hello from h1"), "{stdout}\n{err}");
    assert!(stdout.contains("\"owner\": \"h2\""), "{stdout}");
    assert!(stdout.contains("push: cut over"), "{stdout}");
    // It cleaned up after itself.
    let pools = run_ok(Command::new("zpool").args(["list", "-H", "-o", "name"]));
    assert!(!pools.contains(&format!("lst{pid}n9e")), "{pools}");
}

/// Issue 21: with the cluster store on etcd, the volume plugin reports its volumes as global
/// (one name, one volume, on every host).
#[test]
fn the_volume_plugin_is_global_with_the_cluster_on_etcd() {
    let _zfs = zfs_one_at_a_time();
    let pool = Pool::new(128);
    let etcd = support::etcd::Etcd::start();
    let plugin = format!("lst{}gvol", std::process::id());
    let sock = PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    support::remove_dead_plugin_sockets();
    let _cleanup = support::RemoveOnDrop(sock.clone());
    let cluster = support::temp_dir("volumes").join("cluster.json");
    let url = etcd.url();
    let prefix = format!("/luastrip-g{}/", std::process::id());
    let _gw = gateway_with(
        &pool,
        "h1",
        "",
        &cluster,
        &[
            "--volume-plugin",
            &plugin,
            "--cluster",
            &url,
            "--cluster-prefix",
            &prefix,
        ],
    );
    let caps = raw(
        &sock,
        &http_request("POST", "/VolumeDriver.Capabilities", "", b"{}"),
    );
    assert_eq!(
        json_body(&caps)["Capabilities"]["Scope"],
        "global",
        "{caps}"
    );
}

/// Issue 21: with the cluster on etcd, the gateways find each other's peer API in the cluster
/// (each gives `--peer-url`): no `--peer` flags, and a volume still follows its container to the
/// other host, and back.
#[test]
fn peers_come_from_the_cluster_on_etcd() {
    let _zfs = zfs_one_at_a_time();
    let etcd = support::etcd::Etcd::start();
    let url = etcd.url();
    let prefix = format!("/luastrip-p{}/", std::process::id());
    let dir = support::temp_dir("etcd-peers");
    let token = token_file(&dir);
    let pools = [Pool::new(256), Pool::new(256)];
    let ports = [support::free_port(), support::free_port()];
    let start = |i: usize| {
        let flags = peer_and_cluster_flags(ports[i], &token, &url, &prefix);
        let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
        // No --cluster-file is shared: each gets its own, unused with --cluster.
        let unused = dir.join(format!("unused-{i}.json"));
        gateway_with(&pools[i], &format!("h{}", i + 1), "", &unused, &extra)
    };
    let (gw1, gw2) = (start(0), start(1));
    sh_in(&gw1, "hen", "echo egg > /data/f");
    let out = sh_in(&gw2, "hen", "cat /data/f; echo chick >> /data/f");
    assert_eq!(out, "egg\n", "{}\n{}", gw1.log_text(), gw2.log_text());
    let back = sh_in(&gw1, "hen", "cat /data/f");
    assert_eq!(
        back,
        "egg\nchick\n",
        "{}\n{}",
        gw1.log_text(),
        gw2.log_text()
    );
}

/// A gateway's flags for the peer API on 127.0.0.1:`port` (published as its `--peer-url`) and
/// the cluster on etcd at `url` under `prefix`.
fn peer_and_cluster_flags(
    port: u16,
    token: &std::path::Path,
    url: &str,
    prefix: &str,
) -> Vec<String> {
    let listen = format!("127.0.0.1:{port}");
    let me = format!("http://{listen}");
    [
        "--peer-listen",
        &listen,
        "--peer-url",
        &me,
        "--peer-token-file",
        token.to_str().unwrap(),
        "--cluster",
        url,
        "--cluster-prefix",
        prefix,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Routes the ownership tests drive a gateway with: push (to `?to=`), adopt, roll back (to
/// `?tag=`); each error becomes a Docker-style JSON message.
const OWNERSHIP_ROUTES: &str = r#"
local function answer(status, f, ...)
  local ok, e = pcall(f, ...)
  if ok then return { json = e } end
  return { status = status, json = { message = tostring(e):match("^[^\n]*") } }
end
route.endpoint("POST /luastrip/push/{name}", function(req)
  return answer(502, zfs.push, req.params.name, req.query.to)
end)
route.endpoint("POST /luastrip/adopt/{name}", function(req)
  return answer(409, zfs.adopt, req.params.name)
end)
route.endpoint("POST /luastrip/rollback/{name}", function(req)
  return answer(409, zfs.rollback, req.params.name, req.query.tag)
end)
route.endpoint("POST /luastrip/replicate/{name}", function(req)
  return answer(502, zfs.replicate, req.params.name, req.query.to, { every = tonumber(req.query.every) })
end)
"#;

/// Two hosts (h1, h2) whose gateways share a cluster on a real 3-member etcd, peers of each
/// other; each gateway can be stopped, killed at a failpoint, and started again on its pool.
struct EtcdHosts {
    etcd: support::etcd::Etcd,
    prefix: String,
    dir: PathBuf,
    token: PathBuf,
    pools: [Pool; 2],
    ports: [u16; 2],
    gws: [Option<Gateway>; 2],
    /// More flags for each host's gateway.
    extra: [Vec<String>; 2],
    /// Host h1 as a machine of its own, if it is one.
    apart: Option<Apart>,
}

/// Host h1 of [`EtcdHosts`] as a machine of its own: a network namespace on a veth underlay, with
/// its own dockerd (stopped on drop); etcd and h2 listen on this side of the underlay.
struct Apart {
    daemon: Daemon,
    dir: PathBuf,
    /// This side's address on the underlay, and the namespace's.
    here: String,
    there: String,
    underlay: support::Underlay,
}

impl Drop for Apart {
    fn drop(&mut self) {
        self.daemon.stop();
    }
}

impl EtcdHosts {
    fn new(tag: &str) -> EtcdHosts {
        EtcdHosts::with(tag, support::etcd::Etcd::start(), None)
    }

    fn with(tag: &str, etcd: support::etcd::Etcd, apart: Option<Apart>) -> EtcdHosts {
        let dir = support::temp_dir("etcd-hosts");
        EtcdHosts {
            etcd,
            prefix: format!("/luastrip-{tag}{}/", std::process::id()),
            token: token_file(&dir),
            dir,
            pools: [Pool::new(256), Pool::new(256)],
            ports: [support::free_port(), support::free_port()],
            gws: [None, None],
            extra: [Vec::new(), Vec::new()],
            apart,
        }
    }

    /// The same with h1 on a machine of its own ([`Apart`]).
    fn with_h1_apart(tag: &str) -> EtcdHosts {
        let pid = std::process::id();
        let x = (pid + 220) % 250;
        let (here, there) = (format!("198.18.{x}.21"), format!("198.18.{x}.22"));
        let netns = format!("lst{pid}{tag}");
        let underlay = support::Underlay::new(
            &netns,
            &format!("lsu{}{tag}a", pid % 100_000),
            &format!("lsu{}{tag}b", pid % 100_000),
            &here,
            &there,
        );
        let etcd = support::etcd::Etcd::start_also_on(Some(&here));
        let dir = support::temp_dir("dockerd-apart");
        let daemon = Daemon::start_in_netns(&dir, &netns);
        let apart = Apart {
            daemon,
            dir,
            here,
            there,
            underlay,
        };
        EtcdHosts::with(tag, etcd, Some(apart))
    }

    /// h1's machine is lost at once: every process in its namespace — its dockerd, the
    /// containers, its gateway — is killed.
    fn lose_h1(&mut self) {
        let a = self.apart.as_mut().expect("h1 is apart");
        let ns = a.underlay.netns.clone();
        // The containers' processes (each in a network namespace of its own), then everything
        // in the machine's namespace.
        let running = run_ok(a.daemon.docker().args(["ps", "-q"]));
        let mut pids: Vec<String> = running
            .split_whitespace()
            .map(|id| {
                run_ok(
                    a.daemon
                        .docker()
                        .args(["inspect", "-f", "{{.State.Pid}}", id]),
                )
            })
            .map(|p| p.trim().to_string())
            .collect();
        pids.extend(
            run_ok(Command::new("ip").args(["netns", "pids", &ns]))
                .split_whitespace()
                .map(str::to_string),
        );
        run_ok(Command::new("kill").arg("-9").args(&pids));
        // Reaped, and its pid file gone (as a reboot clears /run).
        a.daemon.stop();
        let _ = std::fs::remove_file(a.dir.join("pid"));
        if let Some(mut gw) = self.gws[0].take() {
            let _ = gw.child.wait();
        }
        support::wait_until(
            "h1's processes are gone",
            std::time::Duration::from_secs(20),
            || {
                run_ok(Command::new("ip").args(["netns", "pids", &ns]))
                    .trim()
                    .is_empty()
            },
        );
    }

    /// (Re)start host `i`'s gateway, with the failpoints `failpoints` armed (none: "").
    fn start(&mut self, i: usize, failpoints: &str) {
        if let Some(mut old) = self.gws[i].take() {
            if old.child.try_wait().unwrap().is_none() {
                old.terminate();
            }
        }
        let other = 1 - i;
        // With h1 apart: each listens on its side of the underlay, and etcd is reached there.
        let (mine, theirs, url) = match &self.apart {
            None => (
                "127.0.0.1".to_string(),
                "127.0.0.1".to_string(),
                self.etcd.url(),
            ),
            Some(a) => {
                let (h1, h2) = (a.there.clone(), a.here.clone());
                let url = self.etcd.url_on(&a.here);
                if i == 0 {
                    (h1, h2, url)
                } else {
                    (h2, h1, url)
                }
            }
        };
        let listen = format!("{mine}:{}", self.ports[i]);
        let peer = format!("h{}=http://{theirs}:{}", other + 1, self.ports[other]);
        let mut extra = vec![
            "--peer-listen",
            &listen,
            "--peer",
            &peer,
            "--peer-token-file",
            self.token.to_str().unwrap(),
            "--cluster",
            &url,
            "--cluster-prefix",
            &self.prefix,
        ];
        extra.extend(self.extra[i].iter().map(String::as_str));
        let unused = self.dir.join(format!("unused-{i}.json"));
        let env = [("LUASTRIP_FAILPOINTS", failpoints)];
        let host = format!("h{}", i + 1);
        self.gws[i] = Some(match self.apart.as_mut().filter(|_| i == 0) {
            None => gateway_env(
                &self.pools[i],
                &host,
                OWNERSHIP_ROUTES,
                &unused,
                &extra,
                &env,
            ),
            Some(a) => {
                // The machine comes back: its dockerd starts again on its data.
                let ping = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";
                if support::try_raw(&a.daemon.socket, ping).is_err() {
                    a.daemon = Daemon::start_in_netns(&a.dir, &a.underlay.netns);
                }
                gateway_in(
                    Some(&a.underlay.netns),
                    &a.daemon.socket,
                    &self.pools[i],
                    &host,
                    OWNERSHIP_ROUTES,
                    &unused,
                    &extra,
                    &env,
                )
            }
        });
    }

    fn gw(&self, i: usize) -> &Gateway {
        self.gws[i].as_ref().expect("the gateway runs")
    }

    /// A call to host `i`'s gateway; `None` if it died before answering.
    fn post(&self, i: usize, target: &str) -> Option<String> {
        support::try_raw(&self.gw(i).socket, &http_request("POST", target, "", b""))
            .ok()
            .filter(|r| r.starts_with("HTTP/1.1"))
    }

    fn volume(&self, i: usize, name: &str) -> serde_json::Value {
        self.gw(i).volume(name)
    }

    /// Wait for host `i`'s gateway to die at its failpoint (abort: SIGABRT).
    fn died_at_failpoint(&mut self, i: usize) {
        use std::os::unix::process::ExitStatusExt;
        let gw = self.gws[i].as_mut().unwrap();
        let t = std::time::Instant::now();
        let status = loop {
            if let Some(st) = gw.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(60),
                "h{} did not reach its failpoint:\n{}",
                i + 1,
                gw.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", gw.log_text());
        assert!(
            gw.log_text().contains("failpoint reached"),
            "{}",
            gw.log_text()
        );
    }

    /// Host `i`'s copy of `name` as ZFS has it: whether it is read-only (`luastrip:readonly`,
    /// unset on a copy never made read-only), and `luastrip:epoch`.
    fn zfs_props(&self, i: usize, name: &str) -> (bool, String) {
        let ds = format!("{}/luastrip/{name}", self.pools[i].name);
        let get = |p: &str| {
            self.pools[i]
                .zfs(&["get", "-H", "-o", "value", p, &ds])
                .trim()
                .to_string()
        };
        (get("luastrip:readonly") == "on", get("luastrip:epoch"))
    }

    /// Both gateways agree that host `owner`'s copy is the volume and nothing moves: the
    /// owner's copy writable at the record's epoch, the other's read-only.
    fn settled_on(&self, name: &str, owner: usize) -> bool {
        let (o, other) = (self.volume(owner, name), self.volume(1 - owner, name));
        let epoch = o["epoch"].as_u64().unwrap_or(0).to_string();
        o["owner"] == format!("h{}", owner + 1)
            && o["owned"] == true
            && o.get("move").is_none()
            && self.zfs_props(owner, name) == (false, epoch)
            && other["owned"] == false
            && self.zfs_props(1 - owner, name).0
    }

    /// Host `i`'s gateway, started again on its old pool, finds the volume `name` given to
    /// `owner` at `epoch` meanwhile: its copy is made read-only at start, and is not the volume.
    fn returns_fenced(&mut self, i: usize, name: &str, owner: &str, epoch: u64) {
        self.start(i, "");
        support::wait_until(
            &format!("h{}'s old copy of {name} is made read-only", i + 1),
            std::time::Duration::from_secs(20),
            || self.zfs_props(i, name).0,
        );
        let v = self.volume(i, name);
        assert_eq!(
            (
                v["owner"].as_str(),
                v["epoch"].as_u64(),
                v["owned"].as_bool()
            ),
            (Some(owner), Some(epoch), Some(false)),
            "{v}"
        );
    }

    fn logs(&self) -> String {
        self.gws
            .iter()
            .flatten()
            .map(|g| g.log_text())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

/// Issue 21: each step of a two-phase push is recorded in etcd, and a gateway killed at any step
/// (the sender, then the receiver, each at three steps; killed by a failpoint, as `kill -9`
/// would) leaves exactly one owner; when it starts again it finishes or rolls back the move.
/// Each time the data is whole on the owner, its copy is the only writable one, and the
/// restarted gateway takes its name back at once (its crashed predecessor is gone).
#[test]
fn a_gateway_killed_at_any_step_of_a_push_leaves_exactly_one_owner() {
    let _zfs = zfs_one_at_a_time();
    let mut h = EtcdHosts::new("crash");
    h.start(0, "");
    h.start(1, "");
    // (killed side, failpoint, the push's answer if the sender lives, who owns it at the end)
    let cases: [(usize, &str, Option<&str>, usize); 6] = [
        // The sender, during step 1 (the record says "sending"): rolled back at its restart.
        (0, "volumes.push.sent", None, 0),
        // The sender, cut over (read-only, the last snapshot sent) but before the receiver's
        // claim: at its restart it asks the receiver to take the volume, which does.
        (0, "volumes.push.cut-over", None, 1),
        // The sender, after the receiver took it: nothing left but its copy's flag.
        (0, "volumes.push.claimed", None, 1),
        // The receiver, once step 1's stream landed: the sender rolls back at once.
        (1, "volumes.receive.after", Some("502"), 0),
        // The receiver, asked to take it, before it did: the sender rolls back at once.
        (1, "volumes.claim.before", Some("502"), 0),
        // The receiver, after the record gave it the volume but before it answered: the sender
        // reads the record, and the push stands; the receiver's restart makes its copy writable.
        (1, "volumes.claim.after", Some("200"), 1),
    ];
    for (n, (killed, point, answer, owner)) in cases.into_iter().enumerate() {
        let vol = format!("crash{n}");
        h.start(killed, point);
        sh_in(
            h.gw(0),
            &vol,
            &format!(
                "dd if=/dev/urandom of=/data/big bs=1M count=8 2>/dev/null; echo {vol} > /data/f"
            ),
        );
        let sum = run_ok(
            Command::new("sha256sum")
                .arg(PathBuf::from(h.volume(0, &vol)["mountpoint"].as_str().unwrap()).join("big")),
        );
        let sum = sum.split(' ').next().unwrap().to_string();
        let resp = h.post(0, &format!("/luastrip/push/{vol}?to=h2"));
        h.died_at_failpoint(killed);
        if let Some(status) = answer {
            let resp = resp.unwrap_or_default();
            assert!(
                support::status(&resp).contains(status),
                "{point}: {resp}\n{}",
                h.logs()
            );
        }
        h.start(killed, "");
        support::wait_until(
            &format!("{point}: h{} owns {vol} alone", owner + 1),
            std::time::Duration::from_secs(30),
            || h.settled_on(&vol, owner),
        );
        assert!(
            h.gw(killed).log_text().contains("taking it over"),
            "{point}: the restart took its name back at once\n{}",
            h.gw(killed).log_text()
        );
        let out = sh_in(h.gw(owner), &vol, "cat /data/f; sha256sum /data/big");
        assert!(
            out.starts_with(&format!("{vol}\n{sum} ")),
            "{point}: {out}\n{}",
            h.logs()
        );
    }
}

/// Issue 21: the epoch fences every handoff. A claim or a stream replayed from an old epoch is
/// refused (409) before zfs sees a byte; one without an epoch is a 400. A copy whose epoch is
/// behind the record's (restored from an older state) is stale: it does not mount, does not
/// roll back and stays read-only, until it is at the record's epoch again.
#[test]
fn a_stale_handoff_or_a_stale_copy_is_refused() {
    let _zfs = zfs_one_at_a_time();
    let mut h = EtcdHosts::new("fence");
    h.start(0, "");
    h.start(1, "");
    sh_in(h.gw(0), "fence", "echo one > /data/f");
    assert_eq!(h.volume(0, "fence")["epoch"], 1);
    let resp = h.post(0, "/luastrip/push/fence?to=h2").unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let first = json_body(&resp)["snapshot"].as_str().unwrap().to_string();
    let v2 = h.volume(1, "fence");
    assert_eq!(
        (v2["owner"].as_str(), v2["epoch"].as_u64()),
        (Some("h2"), Some(2)),
        "{v2}"
    );
    let guid = v2["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tag"] == first.as_str())
        .unwrap()["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = h.post(1, "/luastrip/push/fence?to=h1").unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(h.volume(0, "fence")["epoch"], 3);

    // Replays to h2, from h1's first handoff (epoch 1).
    let peer = |method: &str, target: &str, body: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", h.ports[1])).unwrap();
        let req = http_request(
            method,
            target,
            "Authorization: Bearer a-token-of-thirty-two-characters\r\n",
            body.as_bytes(),
        );
        std::io::Write::write_all(&mut s, &req).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    };
    let snaps_before = h.volume(1, "fence")["snapshots"].clone();
    let stream =
        |query: &str| format!("/luastrip/peer/v1/volumes/fence/stream?tag=x&guid={guid}&{query}");
    let claim = "/luastrip/peer/v1/volumes/fence/claim".to_string();
    // (method, target, body, the answer's status and what its message says)
    let refused = [
        (
            "POST",
            claim.clone(),
            format!(r#"{{"from":"h1","epoch":1,"guid":"{guid}"}}"#),
            "409",
            "refused a handoff of volume fence from h1 at epoch 1: the cluster gives it to h1 at \
             epoch 3 (a stale or replayed handoff)",
        ),
        (
            "PUT",
            stream("from=h1&epoch=1"),
            "not a stream".into(),
            "409",
            "a stale or replayed handoff",
        ),
        // The owner at its epoch, but moving nothing.
        (
            "PUT",
            stream("from=h1&epoch=3"),
            "not a stream".into(),
            "409",
            "no move of it is under way",
        ),
        // A replica stream from the owner at its epoch, but h2 is not the volume's standby.
        (
            "PUT",
            stream("from=h1&epoch=3&standby=1"),
            "not a stream".into(),
            "409",
            "this host is not its standby",
        ),
        (
            "PUT",
            stream("from=h1&epoch=1&standby=1"),
            "not a stream".into(),
            "409",
            "a stale or replayed handoff",
        ),
        // No epoch at all: an older gateway, or a hand-made call.
        (
            "POST",
            claim,
            format!(r#"{{"from":"h1","guid":"{guid}"}}"#),
            "400",
            "(the owner and its epoch)",
        ),
    ];
    for (method, target, body, status, says) in refused {
        let resp = peer(method, &target, &body);
        assert_eq!(support::status(&resp), status, "{method} {target}: {resp}");
        assert!(
            json_body(&resp)["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{method} {target}: {resp}"
        );
    }
    assert_eq!(
        h.volume(1, "fence")["snapshots"],
        snaps_before,
        "nothing received"
    );
    assert_eq!(h.volume(1, "fence")["owner"], "h1");

    // h1's copy as if restored from an older state: its epoch goes back to 1.
    let ds = format!("{}/luastrip/fence", h.pools[0].name);
    h.pools[0].zfs(&["set", "luastrip:epoch=1", &ds]);
    let v = h.volume(0, "fence");
    assert_eq!(
        (v["owned"].as_bool(), v["stale"].as_bool()),
        (Some(false), Some(true)),
        "{v}"
    );
    mount_refused(
        h.gw(0),
        "fence",
        "this copy is at epoch 1, but the cluster gives the volume to h1 at epoch 3",
    );
    assert!(h.zfs_props(0, "fence").0, "the stale copy is read-only now");
    let resp = h
        .post(0, &format!("/luastrip/rollback/fence?tag={first}"))
        .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 409") && resp.contains("stale"),
        "{resp}"
    );
    let resp = h.post(0, "/luastrip/push/fence?to=h2").unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 502") && resp.contains("stale"),
        "{resp}"
    );
    // At the record's epoch again, it is the volume again.
    h.pools[0].zfs(&["set", "luastrip:epoch=3", &ds]);
    assert_eq!(sh_in(h.gw(0), "fence", "cat /data/f"), "one\n");
    assert!(!h.zfs_props(0, "fence").0);
}

/// Issue 21: a host that is forgotten leaves its volume orphaned; nobody takes it by itself, and
/// moving it is refused with what to do. Another host adopts it (at the next epoch) and writes
/// it. The forgotten host, started again on its old pool (its copy still writable, at the old
/// epoch), cannot write the volume: its copy is made read-only at start, and a container there
/// gets the adopter's data, moved back to it, never its stale copy.
#[test]
fn a_returning_host_cannot_write_a_volume_adopted_meanwhile() {
    let _zfs = zfs_one_at_a_time();
    let mut h = EtcdHosts::new("adopt");
    h.start(0, "");
    h.start(1, "");
    sh_in(h.gw(0), "ret", "echo old > /data/f");
    // A volume that is not orphaned is not adopted.
    let resp = h.post(0, "/luastrip/adopt/ret").unwrap();
    assert!(resp.starts_with("HTTP/1.1 409"), "{resp}");
    h.gws[0].as_mut().unwrap().terminate();
    let forgot = run_ok(Command::new(env!("CARGO_BIN_EXE_luastrip")).args([
        "cluster",
        "--cluster",
        &h.etcd.url(),
        "--cluster-prefix",
        &h.prefix,
        "forget",
        "h1",
        "--grace-s",
        "0",
    ]));
    assert!(forgot.contains("1 volumes orphaned (ret)"), "{forgot}");
    mount_refused(
        h.gw(1),
        "ret",
        "volume ret is owned by h1 (epoch 1), which was forgotten: adopt it",
    );
    let resp = h.post(1, "/luastrip/adopt/ret").unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let v = json_body(&resp);
    assert_eq!(
        (
            v["owner"].as_str(),
            v["epoch"].as_u64(),
            v["owned"].as_bool()
        ),
        (Some("h2"), Some(2), Some(true)),
        "{v}"
    );
    sh_in(h.gw(1), "ret", "echo new > /data/f");

    // h1 comes back on its old pool: its copy says epoch 1 and was left writable.
    assert_eq!(h.zfs_props(0, "ret"), (false, "1".to_string()));
    h.returns_fenced(0, "ret", "h2", 2);
    let resp = h.post(0, "/luastrip/adopt/ret").unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 409") && resp.contains("not forgotten"),
        "{resp}"
    );
    // A container on h1 gets the volume as h2 wrote it (Flocker moves it back here).
    assert_eq!(sh_in(h.gw(0), "ret", "cat /data/f"), "new\n");
    assert_eq!(h.volume(0, "ret")["epoch"], 3);
}

/// Issue 22 (standby replicas): h1, a machine of its own (a network namespace with its own
/// dockerd), sends its volume to h2 every second while a container on h1 appends a numbered line
/// every 0.1 s. h1's machine is lost at once: every process in it killed mid-write.
/// Once h1 is forgotten, `luastrip cluster adopt` gives the volume to its standby, whose gateway
/// takes its copy at the next mount: a consistent prefix of the log, at most the window (a
/// period and a send) behind. h1, back with its old copy, is fenced.
#[test]
fn a_standby_replica_survives_its_owners_host() {
    let _zfs = zfs_one_at_a_time();
    let mut h = EtcdHosts::with_h1_apart("sb");
    // h1 serves the volume plugin too: its create takes a standby.
    let plugin = format!("lst{}stby", std::process::id());
    support::remove_dead_plugin_sockets();
    let _cleanup =
        support::RemoveOnDrop(PathBuf::from(format!("/run/docker/plugins/{plugin}.sock")));
    h.extra[0] = vec!["--volume-plugin".into(), plugin.clone()];
    h.start(0, "");
    h.start(1, "");
    // The plugin's form: docker volume create -o standby=HOST -o every=SECONDS (dockerd passes
    // the options only to the create that makes the volume).
    let create = |opts: &[&str]| {
        let mut c = h.gw(0).docker();
        c.args(["volume", "create", "-d", &plugin]);
        for o in opts {
            c.args(["-o", o]);
        }
        output(c.arg("rep"))
    };
    let out = create(&["every=1"]);
    assert!(
        !out.status.success() && stderr(&out).contains("every= goes with standby=HOST"),
        "{}",
        stderr(&out)
    );
    let out = create(&["standby=h2", "every=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = h.volume(0, "rep");
    assert_eq!(
        (
            v["standby"]["host"].as_str(),
            v["standby"]["every"].as_u64()
        ),
        (Some("h2"), Some(1)),
        "{v}"
    );
    sh_in(h.gw(0), "rep", "echo first > /data/first");
    // From Lua (set again): the first round runs at the call.
    let resp = h.post(0, "/luastrip/replicate/rep?to=h2&every=1").unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let round = json_body(&resp);
    assert!(
        round["snapshot"].as_str().unwrap().starts_with("repl-"),
        "{round}"
    );
    // A period under a second is refused.
    let resp = h.post(0, "/luastrip/replicate/rep?to=h2&every=0").unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 502") && resp.contains("at least 1 second"),
        "{resp}"
    );
    run_ok(h.gw(0).docker().args([
        "run",
        "-d",
        "-v",
        "/flocker/rep:/data",
        IMAGE,
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i >> /data/log; sleep 0.1; done",
    ]));
    std::thread::sleep(std::time::Duration::from_secs(5));
    // h1's machine is lost: its dockerd, the writer and its gateway, all at once.
    let log1 = PathBuf::from(h.volume(0, "rep")["mountpoint"].as_str().unwrap()).join("log");
    h.lose_h1();
    let written = std::fs::read_to_string(&log1).unwrap().lines().count();
    let cluster = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_luastrip"));
        c.args([
            "cluster",
            "--cluster",
            &h.etcd.url(),
            "--cluster-prefix",
            &h.prefix,
        ])
        .args(args);
        output(&mut c)
    };
    // Not adopted while its owner is not forgotten.
    let out = cluster(&["adopt", "rep"]);
    assert!(
        !out.status.success() && stderr(&out).contains("which is not forgotten"),
        "{}",
        stderr(&out)
    );
    support::wait_until(
        "h1's registration expires and it is forgotten",
        std::time::Duration::from_secs(30),
        || {
            cluster(&["forget", "h1", "--grace-s", "0"])
                .status
                .success()
        },
    );
    // Adopted by its standby (the default), from any machine that reaches etcd.
    let out = cluster(&["adopt", "rep"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && said.contains("adopted rep: h2 owns it at epoch 2 (from the forgotten h1)"),
        "{said}{}",
        stderr(&out)
    );
    // h2's gateway takes its copy as the volume at the next mount.
    let kept = sh_in(h.gw(1), "rep", "cat /data/first; cat /data/log");
    let v = h.volume(1, "rep");
    assert_eq!(
        (
            v["owned"].as_bool(),
            v["epoch"].as_u64(),
            v["read_only"].as_bool()
        ),
        (Some(true), Some(2), Some(false)),
        "{v}"
    );
    let mut lines = kept.lines();
    assert_eq!(lines.next(), Some("first"));
    let numbers: Vec<usize> = lines.map(|l| l.parse().unwrap()).collect();
    assert_eq!(
        numbers,
        (1..=numbers.len()).collect::<Vec<_>>(),
        "a consistent prefix"
    );
    // 5 s of writing, sent every second: several rounds landed, and what was lost is the
    // window (a period and the send after it), loosely bounded.
    assert!(
        numbers.len() >= 10,
        "{} of {written} lines kept",
        numbers.len()
    );
    assert!(
        written - numbers.len() <= 40,
        "{} of {written} lines kept\n{}",
        numbers.len(),
        h.logs()
    );
    // h1 comes back with its old copy: fenced by the epoch.
    h.returns_fenced(0, "rep", "h2", 2);
    // dockerd's record of the plugin's volume goes with h1's copy (not the volume: the record
    // stays h2's), once the writer that died with the machine is removed.
    run_ok(h.gw(0).docker().args(["container", "prune", "-f"]));
    run_ok(h.gw(0).docker().args(["volume", "rm", "rep"]));
    assert_eq!(h.volume(1, "rep")["owner"], "h2");
}

/// Issue 22, item 1 without swarm's scheduler: with `--volume-follow`, a volume moves to the
/// dockerd that mounts it through the plugin (two dockerds, each with its gateway, pool and
/// plugin name, sharing etcd). While its container runs on the owner, the mount elsewhere waits
/// and then fails naming the host and container, and the volume stays; once that container
/// stops, the move is Flocker's two-phase push mapped onto the plugin's calls: the bulk copy at
/// `Create`, the cut-over when the owner's container has stopped, `Mount` returning then.
#[test]
fn a_volume_follows_the_dockerd_that_mounts_it() {
    let _zfs = zfs_one_at_a_time();
    let pid = std::process::id();
    let pair = FollowPair::new("f");
    let plugins = &pair.plugins;
    let daemon2 = StopsDaemon(support::Daemon::start(&support::temp_dir("dockerd-follow")));
    let daemon2 = &daemon2.0;
    daemon2.import_busybox();
    let gws = [
        pair.gateway(0, &Daemon::shared().socket, &[]),
        pair.gateway(1, &daemon2.socket, &[]),
    ];
    let label = format!("lst-test=follow{pid}");
    let _containers = RemovesContainers {
        hosts: vec![Daemon::shared().host(), daemon2.host()],
        label: label.clone(),
    };
    let mount = |i: usize| {
        format!(
            "type=volume,source=fv{pid},target=/data,volume-driver={}",
            plugins[i]
        )
    };
    // On h1: 8 MB, its checksum, and a numbered line every 50 ms.
    let writer = run_ok(gws[0].docker().args([
        "run",
        "-d",
        "--label",
        &label,
        "--mount",
        &mount(0),
        IMAGE,
        "sh",
        "-c",
        "dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null; \
         sha256sum /data/blob > /data/blob.sum; \
         i=0; while true; do i=$((i+1)); echo $i >> /data/log; sleep 0.05; done",
    ]))
    .trim()
    .to_string();
    support::wait_until(
        "the writer has begun",
        std::time::Duration::from_secs(20),
        || {
            run_ok(gws[0].docker().args([
                "exec",
                &writer,
                "sh",
                "-c",
                "cat /data/log 2>/dev/null | wc -l",
            ]))
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
                > 5
        },
    );
    // On h2 while it runs: refused after the wait, naming h1 and the container; nothing moved.
    let out = output(
        gws[1]
            .docker()
            .args(["run", "--rm", "--mount", &mount(1), IMAGE, "true"]),
    );
    let err = stderr(&out);
    let name = run_ok(
        gws[0]
            .docker()
            .args(["inspect", "-f", "{{.Name}}", &writer]),
    );
    let name = name.trim().trim_start_matches('/');
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "in use on host h1 by the running container {name}"
            )),
        "{err}\nh1:\n{}\nh2:\n{}",
        gws[0].log_text(),
        gws[1].log_text()
    );
    let before = run_ok(
        gws[0]
            .docker()
            .args(["exec", &writer, "wc", "-l", "/data/log"]),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = run_ok(
        gws[0]
            .docker()
            .args(["exec", &writer, "wc", "-l", "/data/log"]),
    );
    assert_ne!(before, after, "the writer on h1 writes on");
    // The writer stops on h1 a second after the container on h2 asks for the volume: step 1
    // runs while it writes, the cut-over once it has stopped.
    let stopper = {
        let (host, writer) = (gws[0].host(), writer.clone());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            run_ok(support::docker_cli(&host).args(["stop", "-t", "1", &writer]));
            std::time::Instant::now()
        })
    };
    let reader = run_ok(
        gws[1]
            .docker()
            .args(["run", "-d", "--label", &label, "--mount", &mount(1), IMAGE])
            .args(["sleep", "300"]),
    )
    .trim()
    .to_string();
    let started = std::time::Instant::now();
    let stopped = stopper.join().unwrap();
    eprintln!(
        "moved: the reader started {:?} after the writer's stop returned",
        started.saturating_duration_since(stopped)
    );
    run_ok(
        gws[1]
            .docker()
            .args(["exec", &reader, "sha256sum", "-c", "/data/blob.sum"]),
    );
    let log = run_ok(gws[1].docker().args(["exec", &reader, "cat", "/data/log"]));
    assert!(support::gap_free(&log).len() > 20, "{log}");
    let v = gws[1].volume(&format!("fv{pid}"));
    assert_eq!(
        (v["owner"].as_str(), v["epoch"].as_u64()),
        (Some("h2"), Some(2)),
        "{v}"
    );
    run_ok(gws[1].docker().args(["rm", "-f", &reader]));
    run_ok(gws[0].docker().args(["rm", "-f", &writer]));
    for gw in &gws {
        let _ = output(gw.docker().args(["volume", "rm", &format!("fv{pid}")]));
    }
}

/// A volume's first copy landing on a host (its placeholder replaced by a full stream) is never
/// "no volume" to that host's dockerd, and no call there makes an empty copy in the meantime.
/// Found by the demo: dockerd asked `Get` while the stream landed, heard "no volume", and made a
/// *local* volume of the same name for a container started without a driver: it ran on an empty
/// directory instead of the data.
#[test]
fn a_volume_landing_here_is_never_missing_to_dockerd() {
    let _zfs = zfs_one_at_a_time();
    let pid = std::process::id();
    let pair = FollowPair::new("l");
    let socks: Vec<PathBuf> = pair.plugins.iter().map(|p| plugin_socket(p)).collect();
    // h2 holds its first copy's landing open for 4 s (the placeholder gone, the stream not
    // yet received): the calls below come in that moment.
    let pause = [("LUASTRIP_FAILPOINTS", "volumes.receive.landing=sleep:4000")];
    let gws = [
        pair.gateway(0, &Daemon::shared().socket, &[]),
        pair.gateway(1, &Daemon::shared().socket, &pause),
    ];
    let call = |i: usize, method: &str, body: serde_json::Value| {
        json_body(&raw(
            &socks[i],
            &http_request(
                "POST",
                &format!("/VolumeDriver.{method}"),
                "",
                body.to_string().as_bytes(),
            ),
        ))
    };
    let name = format!("lv{pid}");
    let vol = serde_json::json!({ "Name": name });
    // On h1: 64 MB and its checksum, written straight into the mounted volume.
    assert_eq!(call(0, "Create", vol.clone())["Err"], "", "h1: Create");
    let m = call(0, "Mount", serde_json::json!({ "Name": name, "ID": "w" }));
    let at = PathBuf::from(m["Mountpoint"].as_str().unwrap_or_default());
    assert_eq!(m["Err"], "", "h1: Mount: {m}");
    run_ok(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", at.join("blob").display()),
        "bs=1M",
        "count=64",
    ]));
    let sum = run_ok(Command::new("sha256sum").arg(at.join("blob")));
    let sum = sum.split_whitespace().next().unwrap().to_string();
    assert_eq!(
        call(0, "Unmount", serde_json::json!({ "Name": name, "ID": "w" }))["Err"],
        ""
    );
    // A name h2's dockerd was never given is "no volume" there (dockerd then Creates it).
    let gets = call(1, "Get", vol.clone());
    assert!(
        gets["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("no volume"),
        "{gets}"
    );
    // h2's dockerd creates it (the move begins: a full stream lands on h2's placeholder); in
    // the landing's moment, dockerd asks for it (as its container create does) and mounts it.
    assert_eq!(call(1, "Create", vol.clone())["Err"], "", "h2: Create");
    support::wait_until(
        "h2's first copy is landing",
        std::time::Duration::from_secs(30),
        || gws[1].log_text().contains("failpoint reached: pausing"),
    );
    let mounter = {
        let (sock, name) = (socks[1].clone(), name.clone());
        std::thread::spawn(move || {
            let body = serde_json::json!({ "Name": name, "ID": "r" }).to_string();
            json_body(&raw(
                &sock,
                &http_request("POST", "/VolumeDriver.Mount", "", body.as_bytes()),
            ))
        })
    };
    for method in ["Get", "Path"] {
        let a = call(1, method, vol.clone());
        assert_eq!(
            a["Err"],
            "",
            "h2's {method} said the volume was missing while it landed: {a}\nh2:\n{}",
            gws[1].log_text()
        );
        if method == "Get" {
            assert_eq!(a["Volume"]["Status"]["owner"], "h1", "{a}");
            assert_eq!(a["Volume"]["Status"]["moving_here"], true, "{a}");
        }
    }
    let m = mounter.join().unwrap();
    // The Mount waited for the move and has the data; the volume is h2's.
    assert_eq!(m["Err"], "", "h2: Mount: {m}\nh2:\n{}", gws[1].log_text());
    let there = PathBuf::from(m["Mountpoint"].as_str().unwrap());
    let got = run_ok(Command::new("sha256sum").arg(there.join("blob")));
    assert!(got.starts_with(&sum), "{got} (was {sum})");
    let v = gws[1].volume(&name);
    assert_eq!(
        (v["owner"].as_str(), v["epoch"].as_u64()),
        (Some("h2"), Some(2)),
        "{v}"
    );
    assert_eq!(
        call(1, "Unmount", serde_json::json!({ "Name": name, "ID": "r" }))["Err"],
        ""
    );
}

/// The path of the plugin socket named `plugin`.
fn plugin_socket(plugin: &str) -> PathBuf {
    PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"))
}

/// Two hosts' gateways, h1 and h2, each with its pool and volume plugin name, with
/// `--volume-follow`, sharing a 3-member etcd and a peer token; their plugin sockets are
/// removed on drop.
struct FollowPair {
    plugins: [String; 2],
    pools: [Pool; 2],
    ports: [u16; 2],
    dir: PathBuf,
    token: PathBuf,
    prefix: String,
    etcd: support::etcd::Etcd,
    _sockets: Vec<support::RemoveOnDrop>,
}

impl FollowPair {
    /// The pair's parts (`tag` tells its names from another test's).
    fn new(tag: &str) -> FollowPair {
        support::remove_dead_plugin_sockets();
        let pid = std::process::id();
        let plugins = [format!("lst{pid}{tag}1"), format!("lst{pid}{tag}2")];
        let dir = support::temp_dir(&format!("follow-{tag}"));
        FollowPair {
            _sockets: plugins
                .iter()
                .map(|p| support::RemoveOnDrop(plugin_socket(p)))
                .collect(),
            plugins,
            pools: [Pool::new(256), Pool::new(256)],
            ports: [support::free_port(), support::free_port()],
            token: token_file(&dir),
            dir,
            prefix: format!("/luastrip-{tag}{pid}/"),
            etcd: support::etcd::Etcd::start(),
        }
    }

    /// Host `i`'s gateway (named h1 or h2) in front of `upstream`, with `env`.
    fn gateway(&self, i: usize, upstream: &std::path::Path, env: &[(&str, &str)]) -> Gateway {
        let unused = self.dir.join(format!("unused-{i}.json"));
        let host = format!("h{}", i + 1);
        let mut flags: Vec<String> = [
            "--volume-backend",
            "zfs",
            "--zfs-pool",
            &self.pools[i].name,
            "--volume-plugin",
            &self.plugins[i],
            "--volume-follow",
            "--host-name",
            &host,
            "--cluster-file",
            unused.to_str().unwrap(),
        ]
        .map(str::to_string)
        .to_vec();
        let url = self.etcd.url();
        flags.extend(peer_and_cluster_flags(
            self.ports[i],
            &self.token,
            &url,
            &self.prefix,
        ));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Gateway::start_in_env(None, upstream, &flags, env)
    }
}

/// Stops a daemon on drop (also when the test fails).
struct StopsDaemon(Daemon);

impl Drop for StopsDaemon {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// On drop (also when the test fails), removes the containers labelled `label` on each daemon
/// (`unix://` hosts): a container left running would keep its volume's pool busy.
struct RemovesContainers {
    hosts: Vec<String>,
    label: String,
}

impl Drop for RemovesContainers {
    fn drop(&mut self) {
        for host in &self.hosts {
            let filter = format!("label={}", self.label);
            let ids = output(support::docker_cli(host).args(["ps", "-aq", "--filter", &filter]));
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = output(support::docker_cli(host).args(["rm", "-f", id]));
            }
        }
    }
}
