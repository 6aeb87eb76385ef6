//! The example policy against an attacker, through the real binary in front of a real dockerd:
//! every way to host power that was found to slip past it is tried again, through the docker CLI
//! or the raw API, and each result is confirmed on the daemon directly (no container, volume or
//! plugin was made; nothing started).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{http_request, json_body, output, raw, run_ok, status, Daemon, Gateway, IMAGE};

fn guarded() -> Gateway {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/deny-privileged.lua");
    Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", policy.to_str().unwrap()],
    )
}

/// Whether the daemon itself knows an object (`docker inspect --type T NAME`).
fn daemon_has(kind: &str, name: &str) -> bool {
    output(
        Daemon::shared()
            .docker()
            .args(["inspect", "--type", kind, name]),
    )
    .status
    .success()
}

fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("luastrip-attack-{what}-{}-{n}", std::process::id())
}

#[test]
fn create_bodies_dockerd_would_read_differently_are_refused_before_it() {
    let gw = guarded();
    let bodies = [
        format!(r#"{{"Image":"{IMAGE}","hostconfig":{{"privileged":true}}}}"#),
        format!(r#"{{"Image":"{IMAGE}","HostConfig":{{"privileged":true}}}}"#),
        format!(r#"{{"Image":"{IMAGE}","HostConfig":{{"binds":["/:/host"]}}}}"#),
        format!(
            r#"{{"Image":"{IMAGE}","HostConfig":{{"mounts":[{{"Type":"bind","Source":"/","Target":"/host"}}]}}}}"#
        ),
        format!(
            r#"{{"Image":"{IMAGE}","HostConfig":{{"Mounts":[{{"type":"bind","Source":"/","Target":"/host"}}]}}}}"#
        ),
        format!(
            r#"{{"Image":"{IMAGE}","HostConfig":{{"Privileged":true}},"HostConfig":{{"Memory":0}}}}"#
        ),
        format!(r#"{{"Image":"{IMAGE}","Privileged":true}}"#),
        format!(r#"{{"Image":"{IMAGE}","Binds":["/:/host"]}}"#),
        format!(r#"{{"Image":"{IMAGE}","HostConfig":{{"Privil\u0065ged":true}}}}"#),
        format!(
            "{{\"Image\":\"{IMAGE}\",\"HostConfig\":{{\"\u{017F}ecurityOpt\":[\"seccomp=unconfined\"]}}}}"
        ),
        format!(r#"{{"Image":"{IMAGE}"}} {{"HostConfig":{{"Privileged":true}}}}"#),
    ];
    for (version, body) in ["/v1.41", "/v1.23", ""]
        .iter()
        .flat_map(|v| bodies.iter().map(move |b| (v, b)))
    {
        let name = unique("create");
        let resp = raw(
            &gw.socket,
            &http_request(
                "POST",
                &format!("{version}/containers/create?name={name}"),
                "Content-Type: application/json\r\n",
                body.as_bytes(),
            ),
        );
        assert!(
            status(&resp) == "400" || status(&resp) == "403",
            "{version} {body}: {resp}"
        );
        assert!(json_body(&resp)["message"].is_string(), "{resp}");
        assert!(!daemon_has("container", &name), "{body} created {name}");
    }
}

#[test]
fn every_way_to_host_power_through_the_cli_is_refused() {
    let gw = guarded();
    let attempts: &[&[&str]] = &[
        &["--privileged"],
        &["--cap-add", "ALL"],
        &["--cap-add", "sys_admin"],
        &["--cap-add", "CAP_SYS_MODULE"],
        &["--security-opt", "seccomp=unconfined"],
        &["--security-opt", "apparmor=unconfined"],
        &["--security-opt", "label=disable"],
        // MaskedPaths and ReadonlyPaths sent empty: a writable /proc/sys (core_pattern).
        &["--security-opt", "systempaths=unconfined"],
        &["--cgroup-parent", "/"],
        &["--cgroup-parent", "system.slice"],
        &["--device", "/dev/null"],
        &["--device-cgroup-rule", "c 1:3 rwm"],
        &["--pid", "host"],
        &["--ipc", "host"],
        &["--uts", "host"],
        &["--userns", "host"],
        &["--network", "host"],
        &["--cgroupns", "host"],
        &["-v", "/:/host"],
        &["-v", "/etc:/etc"],
        &["--mount", "type=bind,src=/,dst=/host"],
        &[
            "--mount",
            "type=volume,dst=/host,volume-driver=local,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/",
        ],
    ];
    for flags in attempts {
        let name = unique("cli");
        let out = output(
            gw.docker()
                .args(["create", "--name", &name])
                .args(*flags)
                .args([IMAGE, "true"]),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was created");
        assert!(err.contains("luastrip policy: "), "{flags:?}: {err}");
        assert!(!daemon_has("container", &name), "{flags:?} created {name}");
    }
    // The local volume that binds the host's root, made first and mounted later.
    let vol = unique("vol");
    let out = output(gw.docker().args([
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        "device=/",
        &vol,
    ]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("binds a host path"));
    assert!(!daemon_has("volume", &vol));
    let out = output(
        gw.docker()
            .args(["volume", "create", "-o", "device=/dev/vda", &vol]),
    );
    assert!(!out.status.success());
    assert!(!daemon_has("volume", &vol));
    // What stays allowed: plain containers, named volumes, harmless capabilities.
    let ok = unique("ok");
    run_ok(gw.docker().args([
        "create",
        "--name",
        &ok,
        "-v",
        "luastrip-policy-vol:/data",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--security-opt",
        "no-new-privileges",
        IMAGE,
        "true",
    ]));
    run_ok(Daemon::shared().docker().args(["rm", &ok]));
    let _ = output(
        Daemon::shared()
            .docker()
            .args(["volume", "rm", "luastrip-policy-vol"]),
    );
}

/// What the CLI can only spell as a body field: MaskedPaths / ReadonlyPaths that drop one of
/// dockerd's defaults (adding is fine), and a build in the host's network.
#[test]
fn unmasked_proc_paths_and_host_network_builds_are_refused() {
    let gw = guarded();
    for (field, paths, allowed) in [
        ("MaskedPaths", r#"[]"#, false),
        ("ReadonlyPaths", r#"[]"#, false),
        (
            "ReadonlyPaths",
            r#"["/proc/bus","/proc/fs","/proc/irq","/proc/sysrq-trigger"]"#,
            false,
        ),
        // A path spelt another way is the same path.
        (
            "ReadonlyPaths",
            r#"["/proc/bus","/proc/fs","/proc/irq","/proc//sys/.","/proc/sysrq-trigger"]"#,
            true,
        ),
        (
            "ReadonlyPaths",
            r#"["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger","/srv"]"#,
            true,
        ),
        ("MaskedPaths", "null", true),
    ] {
        let name = unique("paths");
        let body =
            format!(r#"{{"Image":"{IMAGE}","Cmd":["true"],"HostConfig":{{"{field}":{paths}}}}}"#);
        let resp = support::post_json(
            &gw.socket,
            &format!("/v1.41/containers/create?name={name}"),
            &body,
        );
        if allowed {
            assert!(resp.starts_with("HTTP/1.1 201"), "{field} {paths}: {resp}");
            run_ok(Daemon::shared().docker().args(["rm", &name]));
        } else {
            assert!(resp.starts_with("HTTP/1.1 403"), "{field} {paths}: {resp}");
            assert!(resp.contains("systempaths=unconfined"), "{resp}");
            assert!(
                !daemon_has("container", &name),
                "{field} {paths} created {name}"
            );
        }
    }
    // docker build --network host (the classic builder; BuildKit sends the same query).
    let tag = unique("build").to_lowercase();
    for network in ["host", "HOST", "container:anything"] {
        let out = support::run_with_stdin(
            gw.docker().env("DOCKER_BUILDKIT", "0").args([
                "build",
                "--network",
                network,
                "-t",
                &tag,
                "-",
            ]),
            format!("FROM {IMAGE}\nRUN true\n").as_bytes(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{network}: built");
        assert!(
            err.contains("luastrip policy: building"),
            "{network}: {err}"
        );
        assert!(!daemon_has("image", &tag));
    }
}

/// `allow_binds` allows exactly what it names, compared cleaned, and a tree only when asked
/// for with `/**`: no `..` climbs out of an allowance, and no link planted below an allowed
/// directory leads a bind elsewhere.
#[test]
fn bind_allowances_are_exact_and_cleaned() {
    let dir = support::temp_dir("allow-binds");
    let (exact, tree) = (dir.join("exact"), dir.join("tree"));
    std::fs::create_dir_all(exact.join("sub")).unwrap();
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    // A link a container could have planted in a directory it can write to.
    std::os::unix::fs::symlink("/", exact.join("hostroot")).unwrap();
    let script = dir.join("policy.lua");
    std::fs::write(
        &script,
        format!(
            "require('luastrip.policy').guard {{ allow_binds = {{ {:?}, {:?} }} }}\n",
            exact.display().to_string(),
            format!("{}/**", tree.display())
        ),
    )
    .unwrap();
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    let (e, t) = (exact.display().to_string(), tree.display().to_string());
    for (source, ok) in [
        (e.clone(), true),
        (format!("{e}/"), true),
        (format!("{e}/./"), true),
        (format!("{e}/sub"), false),
        (format!("{e}/hostroot"), false),
        (format!("{e}/hostroot/etc"), false),
        (format!("{e}/../../../../etc"), false),
        (format!("{e}/sub/.."), true),
        (format!("{t}/sub"), true),
        (t.clone(), true),
        (format!("{t}/../exact/hostroot"), false),
        (format!("{t}/sub/../../../../../etc"), false),
    ] {
        for how in ["-v", "--mount"] {
            let name = unique("bind");
            let spec = if how == "-v" {
                format!("{source}:/x")
            } else {
                format!("type=bind,source={source},target=/x")
            };
            let out = output(
                gw.docker()
                    .args(["create", "--name", &name, how, &spec, IMAGE, "true"]),
            );
            let err = String::from_utf8_lossy(&out.stderr);
            if ok {
                assert!(out.status.success(), "{how} {source}: {err}");
                run_ok(Daemon::shared().docker().args(["rm", &name]));
            } else {
                assert!(!out.status.success(), "{how} {source} was allowed");
                assert!(
                    err.contains("luastrip policy: a bind mount of the host path"),
                    "{how} {source}: {err}"
                );
                assert!(!daemon_has("container", &name));
            }
        }
    }
}

/// docker-py's whole create surface (every argument of `create_host_config` and
/// `create_container`) behaves through a hook that reads every create body as it does directly:
/// the same success or error, and the same container recorded. docker-py spells some fields its
/// own way (`CPURealtimePeriod`) and puts `Runtime` at the top level; dockerd reads both, so
/// the gateway canonicalises them rather than refusing them (issue 20).
#[test]
fn docker_py_creates_the_same_containers_through_a_body_reading_hook() {
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "/usr/bin/python3 is missing: apt-get install -y python3 python3-docker"
    );
    let dir = support::temp_dir("dockerpy");
    let gw = Gateway::with_script(
        "route.pre('POST /containers/create', function(req) local spec = req:json() end)\n",
        &[],
    );
    let out = output(
        Command::new("/usr/bin/python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerpy/create_surface.py"))
            .arg(&Daemon::shared().socket)
            .arg(&gw.socket)
            .arg(IMAGE)
            .arg(&dir),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" cases, 0 differ"), "{text}");
    // The two that a body check used to refuse are created, as directly.
    assert!(
        text.contains("same cpu_rt_period: created") || text.contains("same cpu_rt_period: error"),
        "{text}"
    );
    assert!(
        text.contains("same runtime (create_container): created"),
        "{text}"
    );
}

/// A compose file that uses every service key that maps to a create field makes the same
/// container directly and through a hook that reads every create body (compose v1 sends
/// docker-py's bodies).
#[test]
fn compose_creates_the_same_containers_through_a_body_reading_hook() {
    support::require_tool("docker-compose", "docker-compose");
    let dir = support::temp_dir("compose-surface");
    let script = dir.join("reads.lua");
    std::fs::write(
        &script,
        "route.pre('POST /containers/create', function(req) local spec = req:json() end)\n",
    )
    .unwrap();
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    let file = dir.join("all.yml");
    std::fs::write(
        &file,
        format!(
            r#"version: "2.4"
services:
  all:
    image: {IMAGE}
    command: ["echo", "x"]
    entrypoint: ["sh", "-c"]
    network_mode: none
    blkio_config:
      weight: 500
      weight_device: [{{path: /dev/null, weight: 10}}]
      device_read_bps: [{{path: /dev/null, rate: 1000}}]
      device_write_bps: [{{path: /dev/null, rate: 1000}}]
      device_read_iops: [{{path: /dev/null, rate: 100}}]
      device_write_iops: [{{path: /dev/null, rate: 100}}]
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    cgroup_parent: luastrip-test.slice
    cpu_count: 1
    cpu_percent: 50
    cpu_shares: 512
    cpu_quota: 50000
    cpu_period: 100000
    cpu_rt_period: 1000000
    cpu_rt_runtime: 1000
    cpuset: "0"
    devices: ["/dev/null:/dev/xnull:rwm"]
    device_cgroup_rules: ["c 1:3 rwm"]
    dns: [192.0.2.53]
    dns_opt: ["ndots:2"]
    dns_search: [example.test]
    domainname: example.test
    environment: {{A: b}}
    expose: ["80"]
    extra_hosts: ["h.example.test:192.0.2.1"]
    group_add: ["100"]
    healthcheck: {{test: ["CMD", "true"], interval: 1s}}
    hostname: h
    init: true
    ipc: shareable
    isolation: default
    labels: {{a: b}}
    logging: {{driver: json-file, options: {{max-size: 1m}}}}
    mac_address: "02:42:ac:11:00:02"
    mem_limit: 64m
    mem_reservation: 32m
    memswap_limit: 128m
    mem_swappiness: 10
    oom_kill_disable: true
    oom_score_adj: 100
    pid: host
    pids_limit: 100
    privileged: true
    read_only: true
    restart: on-failure:3
    runtime: runc
    security_opt: [no-new-privileges]
    shm_size: 32m
    stdin_open: true
    stop_grace_period: 5s
    stop_signal: SIGKILL
    sysctls: {{net.core.somaxconn: "1024"}}
    tmpfs: ["/t:size=1m"]
    tty: true
    ulimits: {{nofile: {{soft: 1024, hard: 2048}}}}
    user: nobody
    userns_mode: host
    volumes: ["/v", "{tmp}:/x:ro"]
    working_dir: /w
"#,
            tmp = dir.display()
        ),
    )
    .unwrap();
    let created = |host: String, project: &str| {
        let out = output(
            Command::new("docker-compose")
                .env("DOCKER_HOST", host)
                .arg("-f")
                .arg(&file)
                .args(["-p", project, "up", "--no-start", "--no-color"]),
        );
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let id = run_ok(Daemon::shared().docker().args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]));
        let inspect = run_ok(Daemon::shared().docker().args(["inspect", id.trim()]));
        run_ok(Daemon::shared().docker().args(["rm", "-f", id.trim()]));
        let mut v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let mut c = v[0].take();
        // Compose's own bookkeeping names the project; everything else must be the same.
        c["Config"]["Labels"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| !k.starts_with("com.docker.compose."));
        (c["Config"].take(), c["HostConfig"].take())
    };
    let direct = created(
        format!("unix://{}", Daemon::shared().socket.display()),
        &unique("direct").replace('-', ""),
    );
    let through = created(gw.host(), &unique("gw").replace('-', ""));
    assert_eq!(direct.0, through.0, "Config");
    assert_eq!(direct.1, through.1, "HostConfig");
    // And the fields a body check once refused are there.
    assert_eq!(through.1["CpuRealtimePeriod"], 1000000, "{}", through.1);
    assert_eq!(through.1["Runtime"], "runc");
}

/// The example policy ships with its test cases, and `luastrip test` passes them with no daemon
/// (as the README's install path runs it).
#[test]
fn the_example_policy_passes_its_own_test_cases() {
    // deny-privileged.lua, and allowed-images.lua (image references read as Docker reads them).
    for example in ["deny-privileged.lua", "allowed-images.lua"] {
        let out = output(
            Command::new(env!("CARGO_BIN_EXE_luastrip"))
                .arg("test")
                .arg(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("examples/scripts")
                        .join(example),
                ),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{example}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("4 cases, 4 passed, 0 failed"),
            "{example}: {text}"
        );
    }
}

#[test]
fn privileges_asked_for_later_are_refused_too() {
    let gw = guarded();
    let d = Daemon::shared();
    let name = unique("later");
    let id = run_ok(
        gw.docker()
            .args(["create", "--name", &name, IMAGE, "sleep", "30"]),
    )
    .trim()
    .to_string();
    // API < 1.24 reads a HostConfig from the start body.
    for body in [
        r#"{"Privileged":true}"#,
        r#"{"Binds":["/:/host"]}"#,
        r#"{"CapAdd":["ALL"]}"#,
    ] {
        let resp = raw(
            &gw.socket,
            &http_request(
                "POST",
                &format!("/v1.23/containers/{id}/start"),
                "Content-Type: application/json\r\n",
                body.as_bytes(),
            ),
        );
        assert_eq!(status(&resp), "403", "{body}: {resp}");
    }
    let state = run_ok(d.docker().args([
        "inspect",
        "-f",
        "{{.State.Running}} {{.HostConfig.Privileged}} {{.HostConfig.Binds}}",
        &id,
    ]));
    assert_eq!(state.trim(), "false false []");
    // Devices through docker update.
    let resp = raw(
        &gw.socket,
        &http_request(
            "POST",
            &format!("/v1.41/containers/{id}/update"),
            "Content-Type: application/json\r\n",
            br#"{"Devices":[{"PathOnHost":"/dev/null","PathInContainer":"/dev/x","CgroupPermissions":"rwm"}]}"#,
        ),
    );
    assert_eq!(status(&resp), "403", "{resp}");
    // Privileged exec in a running container.
    run_ok(gw.docker().args(["start", &id]));
    let out = output(gw.docker().args(["exec", "--privileged", &id, "true"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("privileged exec is not allowed"));
    run_ok(d.docker().args(["rm", "-f", &id]));
}

#[test]
fn plugins_and_host_power_services_are_refused() {
    let gw = guarded();
    let plugin = unique("plugin");
    for (method, target) in [
        ("POST", format!("/v1.41/plugins/create?name={plugin}")),
        ("POST", "/v1.41/plugins/pull?remote=vieux/sshfs".to_string()),
        (
            "POST",
            "/v1.41/plugins/reg.example:5000/team/p:1/enable".to_string(),
        ),
        ("POST", "/v1.41/plugins/team/p/set".to_string()),
        ("POST", "/v1.41/plugins/p/upgrade?remote=x".to_string()),
    ] {
        let resp = raw(&gw.socket, &http_request(method, &target, "", b""));
        assert_eq!(status(&resp), "403", "{target}: {resp}");
    }
    assert!(!daemon_has("plugin", &plugin));
    let service = format!(
        r#"{{"Name":"x","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Mounts":[{{"Type":"bind","Source":"/","Target":"/host"}}]}}}}}}"#
    );
    let cap = format!(
        r#"{{"Name":"x","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","CapabilityAdd":["CAP_SYS_ADMIN"]}}}}}}"#
    );
    for body in [service, cap] {
        let resp = create_service(&gw, &body);
        assert_eq!(status(&resp), "403", "{body}: {resp}");
    }
}

#[test]
fn image_names_with_registries_and_slashes_reach_image_routes() {
    let dir = support::temp_dir("names");
    let script = dir.join("s.lua");
    std::fs::write(
        &script,
        r#"
        route.pre("DELETE /images/{name}", function(req)
          return { status = 403, json = { message = "no removing " .. req.params.name } }
        end)
        "#,
    )
    .unwrap();
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", script.to_str().unwrap()],
    );
    let d = Daemon::shared();
    let tag = format!("reg.example:5000/team/bb:{}", std::process::id());
    run_ok(d.docker().args(["tag", IMAGE, &tag]));
    let out = output(gw.docker().args(["rmi", &tag]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{tag} was removed");
    assert!(err.contains(&format!("no removing {tag}")), "{err}");
    assert!(daemon_has("image", &tag));
    run_ok(d.docker().args(["rmi", &tag]));
}

#[test]
fn check_refuses_patterns_that_can_never_match() {
    let dir = support::temp_dir("never");
    for (src, why) in [
        (
            "route.pre(\"POST /containers/:id/start\", function() end)\n",
            "write {id}",
        ),
        (
            "route.pre(\"GET /containers/json?all=1\", function() end)\n",
            "query",
        ),
        (
            "route.pre(\"FETCH /containers/json\", function() end)\n",
            "not an HTTP method",
        ),
    ] {
        let path: PathBuf = dir.join("p.lua");
        std::fs::write(&path, src).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{src}");
        assert!(err.contains("p.lua:1"), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

#[test]
fn compose_projects_run_through_the_guard_and_hooks_that_read_every_body() {
    support::require_tool("docker-compose", "docker-compose");
    let dir = support::temp_dir("compose");
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/deny-privileged.lua"),
        scripts.join("a-policy.lua"),
    )
    .unwrap();
    // Every JSON body is read (and so checked) on every call.
    std::fs::write(
        scripts.join("b-read.lua"),
        "route.pre(\"* /**\", function(req) local _ = req.body end)\n",
    )
    .unwrap();
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", scripts.to_str().unwrap()],
    );
    let project = unique("proj").replace('-', "");
    // (success, everything it printed)
    let compose = |file: &Path, args: &[&str]| {
        let out = output(
            Command::new("docker-compose")
                .env("DOCKER_HOST", gw.host())
                .arg("-f")
                .arg(file)
                .args(["-p", &project])
                .args(args),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let ok = dir.join("ok.yml");
    std::fs::write(
        &ok,
        format!(
            "version: \"3\"\nservices:\n  hello:\n    image: {IMAGE}\n    command: [\"echo\", \"hello-compose\"]\n    network_mode: none\n    labels:\n      purpose: test\n    volumes: [\"data:/data\"]\nvolumes:\n  data: {{}}\n"
        ),
    )
    .unwrap();
    let (up, text) = compose(&ok, &["up", "--no-color"]);
    assert!(up && text.contains("hello-compose"), "{text}");
    let (down, text) = compose(&ok, &["down", "-v"]);
    assert!(down, "{text}");
    let bad = dir.join("bad.yml");
    std::fs::write(
        &bad,
        format!(
            "version: \"3\"\nservices:\n  root:\n    image: {IMAGE}\n    command: [\"true\"]\n    network_mode: none\n    privileged: true\n"
        ),
    )
    .unwrap();
    let (up, text) = compose(&bad, &["up", "--no-color"]);
    assert!(!up, "{text}");
    assert!(
        text.contains("privileged containers are not allowed"),
        "{text}"
    );
    let _ = compose(&bad, &["down", "-v"]);
}

/// `-o standby=HOST` makes the owner of a luastrip volume send it to HOST on a schedule: under
/// the policy only an operator chooses that, wherever a docker user could ask for it (a volume
/// create, a container's volume mount options, a service's), unless the site allows it.
#[test]
fn a_standby_is_an_operators_choice_under_the_policy() {
    let gw = guarded();
    let volume = unique("standby");
    let create_with_standby = |gw: &Gateway| {
        output(gw.docker().args([
            "volume",
            "create",
            "-d",
            "local",
            "-o",
            "standby=h2",
            &volume,
        ]))
    };
    let out = create_with_standby(&gw);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("a volume sent to another host on a schedule (standby=h2"),
        "{err}"
    );
    let mount = format!("type=volume,source={volume},target=/d,volume-opt=standby=h2");
    let out = output(
        gw.docker()
            .args(["create", "--mount", &mount, IMAGE, "true"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("standby=h2"), "{err}");
    let service = format!(
        r#"{{"Name":"x","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Mounts":[{{"Type":"volume","Source":"{volume}","Target":"/d","VolumeOptions":{{"DriverConfig":{{"Name":"luastrip","Options":{{"standby":"h2"}}}}}}}}]}}}}}}"#
    );
    let resp = create_service(&gw, &service);
    assert_eq!(status(&resp), "403", "{resp}");
    assert!(!daemon_has("volume", &volume));
    // A site that allows it: the call reaches dockerd (whose local driver has no such option).
    let open = Gateway::with_script(
        "require('luastrip.policy').guard { allow_standby = true }",
        &[],
    );
    let out = create_with_standby(&open);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("invalid option") && !err.contains("schedule"),
        "{err}"
    );
}

/// `POST /v1.41/services/create` with the JSON `body`, raw, through `gw`: the answer.
fn create_service(gw: &Gateway, body: &str) -> String {
    raw(
        &gw.socket,
        &http_request(
            "POST",
            "/v1.41/services/create",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        ),
    )
}
