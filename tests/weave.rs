//! The overlay helper's socket face on a real dockerd: `WEAVE_CIDR` (`luastrip.weave`) and
//! `overlay.*` from Lua. Each test has its own plugin, bridge, network names and ranges, so
//! they run beside each other on the shared daemon; each removes what it made.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::{output, run_ok, Daemon, Gateway, Underlay, IMAGE};

/// One overlay set-up: a gateway with the weave script in front of a daemon (the shared one,
/// or a second "host"'s in a network namespace).
struct Overlay {
    gw: Gateway,
    args: Vec<String>,
    plugin: String,
    bridge: String,
    cluster: std::path::PathBuf,
    /// The daemon's socket, and the network namespace both run in (`None`: this host's).
    daemon: std::path::PathBuf,
    netns: Option<String>,
    _socket: support::RemoveOnDrop,
}

impl Overlay {
    /// `tag` makes the names unique among the tests of one run; `octet` the ranges.
    fn new(tag: &str, octet: u8) -> Overlay {
        Overlay::on_host(tag, octet, None, &Daemon::shared().socket, &[])
    }

    /// The same in front of `daemon`, inside `netns`, with more flags.
    fn on_host(
        tag: &str,
        octet: u8,
        netns: Option<&str>,
        daemon: &std::path::Path,
        extra: &[&str],
    ) -> Overlay {
        support::require_root();
        support::require_tool("ip", "iproute2");
        support::remove_dead_plugin_sockets();
        let pid = std::process::id();
        let plugin = format!("lst{pid}{tag}");
        let bridge = format!("lst{}{tag}", pid % 100_000);
        let cluster = support::temp_dir("weave").join("cluster.json");
        let args: Vec<String> = [
            "--network-plugin",
            &plugin,
            "--overlay-bridge",
            &bridge,
            "--overlay-network",
            &plugin,
            "--overlay-cidr",
            &format!("10.{octet}.0.0/16"),
            "--cluster-file",
            cluster.to_str().unwrap(),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let path = support::temp_dir("script").join("weave.lua");
        std::fs::write(&path, "require('luastrip.weave').enable()").unwrap();
        let args: Vec<String> = ["--scripts", path.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .chain(args)
            .collect();
        let gw = Gateway::start_in(
            netns,
            daemon,
            &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        );
        Overlay {
            gw,
            _socket: support::RemoveOnDrop(format!("/run/docker/plugins/{plugin}.sock").into()),
            args,
            plugin,
            bridge,
            cluster,
            daemon: daemon.to_path_buf(),
            netns: netns.map(str::to_string),
        }
    }

    fn restart(&mut self) {
        assert_eq!(self.gw.terminate(), Some(0));
        self.start_again();
    }

    /// Start the gateway again with the same flags (the last one is gone).
    fn start_again(&mut self) {
        let args: Vec<&str> = self.args.iter().map(|s| s.as_str()).collect();
        self.gw = Gateway::start_in(self.netns.as_deref(), &self.daemon, &args);
    }

    /// `ip ARGS…` in this host's network namespace.
    fn ip(&self) -> Command {
        let mut c = Command::new("ip");
        if let Some(ns) = &self.netns {
            c.args(["-n", ns]);
        }
        c
    }

    fn docker(&self) -> Command {
        self.gw.docker()
    }

    /// The overlay addresses of a container, by network.
    fn addresses(&self, id: &str) -> String {
        run_ok(self.docker().args([
            "inspect",
            "-f",
            "{{range $n, $e := .NetworkSettings.Networks}}{{$n}}={{$e.IPAddress}} {{end}}",
            id,
        ]))
        .trim()
        .to_string()
    }

    /// `docker run -d -e WEAVE_CIDR=value busybox sleep 300`: the container's ID.
    fn run_d(&self, value: &str) -> String {
        run_ok(self.docker().args([
            "run",
            "-d",
            "-e",
            &format!("WEAVE_CIDR={value}"),
            IMAGE,
            "sleep",
            "300",
        ]))
        .trim()
        .to_string()
    }

    /// `docker run -e WEAVE_CIDR=value` fails with `why`.
    fn claim_refused(&self, value: &str, why: &str) {
        let out = output(self.docker().args([
            "run",
            "--rm",
            "-e",
            &format!("WEAVE_CIDR={value}"),
            IMAGE,
            "true",
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{value}: {err}");
    }

    /// The cluster store's record of `addr` in `pool` (`10.7.1.0_24`).
    fn record(&self, pool: &str, addr: &str) -> serde_json::Value {
        let store: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.cluster).unwrap()).unwrap();
        let key = format!("overlay/addresses/{pool}/{addr}");
        store["records"][key]["value"].clone()
    }

    /// Owner records in the cluster store.
    fn owners(&self) -> usize {
        std::fs::read_to_string(&self.cluster)
            .unwrap_or_default()
            .matches("\"owner\":")
            .count()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // Only what is on this test's networks: other tests share the daemon.
        let host = format!("unix://{}", self.daemon.display());
        let direct = || support::docker_cli(&host);
        let nets = run_ok(direct().args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("driver={}", self.plugin),
        ]));
        for n in nets.split_whitespace() {
            let ids = run_ok(direct().args(["ps", "-aq", "--filter", &format!("network={n}")]));
            for id in ids.split_whitespace() {
                let _ = output(direct().args(["rm", "-f", id]));
            }
            let _ = output(direct().args(["network", "rm", n]));
        }
        let _ = self
            .ip()
            .args(["link", "del", "dev", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn links() -> String {
    run_ok(Command::new("ip").args(["-o", "link", "show"]))
}

#[test]
fn weave_cidr_gives_containers_their_address_before_they_run_and_keeps_it() {
    let mut o = Overlay::new("w", 120);
    // The console shows the helper's work (addresses given and released) as it happens.
    let console = support::Tmux::run(
        &format!(
            "{} console --listen {}",
            env!("CARGO_BIN_EXE_luastrip"),
            o.gw.host()
        ),
        (160, 30),
        "luastrip console",
    );
    // Fifty first runs in a row: the address is there when the first command runs.
    for i in 0..50 {
        let out = run_ok(o.docker().args([
            "run",
            "--rm",
            "-e",
            "WEAVE_CIDR=10.2.1.5/24",
            IMAGE,
            "ip",
            "-4",
            "addr",
        ]));
        assert!(
            out.contains("inet 10.2.1.5/24") && out.contains("ethwe0"),
            "run {i}: {out}"
        );
    }
    // `--rm` gave it back each time (the events follower).
    support::wait_until("--rm released", Duration::from_secs(10), || o.owners() == 0);
    let screen = console.wait_for("overlay: ");
    assert!(screen.contains("10.2.1.5/24"), "{screen}");
    console.keys(&["q"]);
    drop(console);

    // Stop/start and restart keep the address; another container reaches it.
    let a = o.run_d("net:default");
    let first = o.addresses(&a);
    assert!(first.contains("=10.120."), "{first}");
    run_ok(o.docker().args(["stop", "-t", "0", &a]));
    run_ok(o.docker().args(["start", &a]));
    assert_eq!(o.addresses(&a), first);
    run_ok(o.docker().args(["restart", "-t", "0", &a]));
    assert_eq!(o.addresses(&a), first);
    let ip = first.split('=').nth(1).unwrap().to_string();
    let ping = |o: &Overlay| {
        run_ok(o.docker().args([
            "run",
            "--rm",
            "-e",
            "WEAVE_CIDR=",
            IMAGE,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &ip,
        ]))
    };
    ping(&o);
    // Claiming a held address is refused, naming it.
    o.claim_refused(&format!("{ip}/16"), &format!("{ip} is already taken"));

    // A gateway restart keeps the allocation and the running container's link.
    o.restart();
    assert_eq!(o.addresses(&a), first);
    ping(&o);
    o.claim_refused(&format!("{ip}/16"), &format!("{ip} is already taken"));

    // Several entries: one interface each, up before the command runs.
    let out = run_ok(o.docker().args([
        "run",
        "--rm",
        "-e",
        "WEAVE_CIDR=10.2.1.7/24, net:10.2.2.0/24",
        IMAGE,
        "ip",
        "-4",
        "addr",
    ]));
    assert!(out.contains("inet 10.2.1.7/24"), "{out}");
    assert!(
        out.contains("ethwe1") && out.contains("inet 10.2.2."),
        "{out}"
    );
    // none, host and container modes are left alone.
    let out = run_ok(o.docker().args([
        "run",
        "--rm",
        "-e",
        "WEAVE_CIDR=none",
        IMAGE,
        "ip",
        "-4",
        "addr",
    ]));
    assert!(!out.contains("ethwe"), "{out}");
    let out = run_ok(o.docker().args([
        "run",
        "--rm",
        "--net=host",
        "-e",
        "WEAVE_CIDR=10.2.1.9/24",
        IMAGE,
        "true",
    ]));
    assert!(out.is_empty(), "{out}");
    let out = run_ok(o.docker().args([
        "run",
        "--rm",
        &format!("--net=container:{a}"),
        "-e",
        "WEAVE_CIDR=10.2.1.9/24",
        IMAGE,
        "ip",
        "-4",
        "addr",
    ]));
    assert!(out.contains(&ip) && !out.contains("10.2.1.9"), "{out}");

    // Removed on the daemon directly, never through luastrip: released all the same.
    let b = o.run_d("10.2.1.8/24");
    support::wait_until("both held", Duration::from_secs(10), || o.owners() == 2);
    run_ok(Daemon::shared().docker().args(["rm", "-f", &b]));
    support::wait_until("rm on the daemon released", Duration::from_secs(10), || {
        o.owners() == 1
    });
    // …also while the gateway was down: the start-up reconciliation releases it.
    let c = run_ok(
        o.docker()
            .args(["create", "-e", "WEAVE_CIDR=10.2.1.8/24", IMAGE, "true"]),
    )
    .trim()
    .to_string();
    assert_eq!(o.owners(), 2);
    assert_eq!(o.gw.terminate(), Some(0));
    run_ok(Daemon::shared().docker().args(["rm", "-f", &c]));
    o.restart();
    // (reconciling spares allocations younger than a minute: a create may be on its way)
    let recorded = std::fs::read_to_string(&o.cluster).unwrap();
    assert!(recorded.contains("10.2.1.8"), "{recorded}");
    run_ok(o.docker().args(["rm", "-f", &a]));
    support::wait_until("rm -f released", Duration::from_secs(10), || {
        o.owners() <= 1
    });

    // Nothing leaks: networks, veths, the bridge.
    let plugin = o.plugin.clone();
    let bridge = o.bridge.clone();
    drop(o);
    let nets = run_ok(Daemon::shared().docker().args([
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("driver={plugin}"),
    ]));
    assert!(nets.trim().is_empty(), "{nets}");
    let left = links();
    assert!(!left.contains(&format!(" {bridge}:")), "{left}");
}

#[test]
fn bad_weave_cidr_values_are_refused_by_name() {
    let o = Overlay::new("b", 121);
    let refused = |value: &str, why: &str| {
        let out = output(o.docker().args([
            "create",
            "-e",
            &format!("WEAVE_CIDR={value}"),
            IMAGE,
            "true",
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value}: accepted");
        assert!(err.contains(value) && err.contains(why), "{value}: {err}");
    };
    refused("10.2.1.300/24", "not an IPv4 address");
    refused("bogus", "not an IPv4 address or CIDR");
    refused("net:10.2.1.5/24", "host bits are set");
    refused("10.2.1.0/24", "not a host address of 10.2.1.0/24");
    refused("10.9.0.1", "not a host address of 10.121.0.0/16");
    refused("10.2.1.5/24 none", "none cannot be combined");
    refused("10.2.1.5/24 10.2.1.6/24", "one address per subnet");
    refused("net:10.2.0.0/16", "overlaps");
    // An exhausted range: a /30 has two hosts, and the gateway takes one.
    run_ok(
        o.docker()
            .args(["create", "-e", "WEAVE_CIDR=net:10.3.0.0/30", IMAGE, "true"]),
    );
    refused("net:10.3.0.0/30", "10.3.0.0/30 is exhausted");
    // Given twice (the CLI keeps the last of repeated -e; an API client can send both).
    let resp = support::post_json(
        &o.gw.socket,
        "/v1.41/containers/create",
        &format!(
            r#"{{"Image":"{IMAGE}","Env":["WEAVE_CIDR=10.2.1.5/24","WEAVE_CIDR=10.2.1.6/24"]}}"#
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("WEAVE_CIDR is given twice"), "{resp}");
    // The owner label is luastrip's: a client setting it could have another container's
    // addresses released when its own goes.
    let out = output(o.docker().args([
        "create",
        "--net=host",
        "--label",
        "luastrip.overlay.owner=ow-0011",
        IMAGE,
        "true",
    ]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is set by luastrip, not by clients"),
        "{out:?}"
    );
    // A missing image is dockerd's own 404 (the CLI pulls and retries), and nothing is kept.
    let before = o.owners();
    let resp = support::post_json(
        &o.gw.socket,
        "/v1.41/containers/create",
        r#"{"Image":"lst-no-such-image:1","Env":["WEAVE_CIDR=10.2.1.5/24"]}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(resp.contains("No such image"), "{resp}");
    assert_eq!(o.owners(), before);
}

#[test]
fn fifty_concurrent_runs_get_fifty_addresses_and_lua_drives_the_overlay() {
    let o = Overlay::new("c", 122);
    let started: Vec<_> = (0..50)
        .map(|_| {
            let mut cmd = o.docker();
            cmd.args([
                "run",
                "-d",
                "-e",
                "WEAVE_CIDR=net:10.4.0.0/24",
                IMAGE,
                "sleep",
                "300",
            ]);
            std::thread::spawn(move || run_ok(&mut cmd).trim().to_string())
        })
        .collect();
    let ids: Vec<String> = started.into_iter().map(|t| t.join().unwrap()).collect();
    let mut seen = BTreeSet::new();
    for id in &ids {
        let a = o.addresses(id);
        assert!(a.contains("=10.4.0."), "{a}");
        assert!(seen.insert(a.clone()), "{a} handed out twice");
    }
    // overlay.* from Lua: what a container holds, attach and detach at run time.
    let eval = |code: &str| o.gw.control("POST", "/eval", code);
    let (status, held) = eval(&format!("overlay.addresses('{}')", ids[0]));
    assert!(status.contains("200"), "{status} {held}");
    assert_eq!(
        held["result"][0]["network"],
        format!("{}-10.4.0.0-24", o.plugin),
        "{held}"
    );
    let (status, attached) = eval(&format!("overlay.attach('{}', 'net:10.5.0.0/24')", ids[0]));
    assert!(status.contains("200"), "{status} {attached}");
    let out = run_ok(o.docker().args(["exec", &ids[0], "ip", "-4", "addr"]));
    assert!(
        out.contains("inet 10.5.0.") && out.contains("ethwe1"),
        "{out}"
    );
    let (status, detached) = eval(&format!(
        "overlay.detach('{}', '{}')",
        ids[0],
        attached["result"][0].as_str().expect("address, allocation")
    ));
    assert!(status.contains("200"), "{status} {detached}");
    let out = run_ok(o.docker().args(["exec", &ids[0], "ip", "-4", "addr"]));
    assert!(!out.contains("inet 10.5.0."), "{out}");
    let (_, err) = eval("overlay.allocate('a b')");
    assert!(err.to_string().contains(r#"owner \"a b\""#), "{err}");
    let (_, n) = eval("overlay.network{ cidr = '10.6.0.0/24' }");
    assert_eq!(
        n["result"]["name"],
        format!("{}-10.6.0.0-24", o.plugin),
        "{n}"
    );
    // One at a time (dockerd 20.10 can miscount endpoints when many go at once).
    for id in &ids {
        run_ok(o.docker().args(["rm", "-f", id]));
    }
    support::wait_until("all released", Duration::from_secs(20), || o.owners() == 0);
}

#[test]
fn no_client_reaches_around_the_allocator() {
    let o = Overlay::new("x", 123);
    let net = format!("{}-10.7.1.0-24", o.plugin);
    let victim = o.run_d("10.7.1.5/24");
    // Once created, the address is the container's own, by its ID (not by its label's token).
    assert_eq!(
        o.record("10.7.1.0_24", "10.7.1.5")["owner"],
        victim.as_str()
    );
    let net_id = run_ok(
        o.docker()
            .args(["network", "inspect", "-f", "{{.Id}}", &net]),
    );
    let taken = "is another container's overlay address";

    // `--ip` on the network, by its name or by a prefix of its ID: refused, naming the address.
    for reference in [net.as_str(), &net_id.trim()[..12]] {
        let out = output(o.docker().args([
            "run",
            "--rm",
            "--network",
            reference,
            "--ip",
            "10.7.1.5",
            IMAGE,
            "true",
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("10.7.1.5") && err.contains(taken),
            "{err}"
        );
    }
    // `docker network connect --ip`: refused too.
    let other = o.run_d("net:default");
    let out = output(
        o.docker()
            .args(["network", "connect", "--ip", "10.7.1.5", &net, &other]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(taken), "{err}");
    // A network reference that is not a name or an ID is refused before it is looked up.
    let resp = support::post_json(
        &o.gw.socket,
        "/v1.41/containers/create",
        &format!(
            r#"{{"Image":"{IMAGE}","NetworkingConfig":{{"EndpointsConfig":{{"../x":{{"IPAMConfig":{{"IPv4Address":"10.7.1.5"}}}}}}}}}}"#
        ),
    );
    assert!(resp.contains("is not a network name or ID"), "{resp}");

    // A free `--ip` becomes the container's own: kept across stop/start, refused to others,
    // released with the container.
    let fixed = run_ok(o.docker().args([
        "run",
        "-d",
        "--network",
        &net,
        "--ip",
        "10.7.1.9",
        IMAGE,
        "sleep",
        "300",
    ]))
    .trim()
    .to_string();
    assert_eq!(o.record("10.7.1.0_24", "10.7.1.9")["owner"], fixed.as_str());
    run_ok(o.docker().args(["stop", "-t", "0", &fixed]));
    o.claim_refused("10.7.1.9/24", "10.7.1.9 is already taken");
    run_ok(o.docker().args(["start", &fixed]));
    assert!(
        o.addresses(&fixed).contains("=10.7.1.9"),
        "{}",
        o.addresses(&fixed)
    );
    run_ok(o.docker().args(["rm", "-f", &fixed]));
    support::wait_until(
        "rm released the --ip address",
        Duration::from_secs(10),
        || o.record("10.7.1.0_24", "10.7.1.9")["owner"].is_null(),
    );

    // The victim's label token, baked into an image: a container of that image owns nothing,
    // and its removal releases nothing.
    let token = run_ok(o.docker().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"luastrip.overlay.owner\"}}",
        &victim,
    ]));
    let image = format!("{}-forged", o.plugin);
    run_ok(o.docker().args([
        "commit",
        "--change",
        &format!("LABEL luastrip.overlay.owner={}", token.trim()),
        &other,
        &image,
    ]));
    run_ok(
        o.docker()
            .args(["run", "--rm", "--network", "none", &image, "true"]),
    );
    // …nor does a container named after the victim's ID.
    let namesake = run_ok(o.docker().args([
        "create",
        "--name",
        &victim,
        "--network",
        "none",
        IMAGE,
        "true",
    ]));
    run_ok(o.docker().args(["rm", namesake.trim()]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        o.record("10.7.1.0_24", "10.7.1.5")["owner"],
        victim.as_str()
    );
    run_ok(o.docker().args(["rmi", &image]));

    // Networks of luastrip's allocator: no overlapping subnets; its driver takes its IPAM.
    let refused = |args: &[&str], why: &str| {
        let out = output(o.docker().args(["network", "create"]).args(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "{args:?}: {err}"
        );
    };
    let evil = format!("{}-evil", o.plugin);
    refused(
        &["-d", &o.plugin, "--subnet", "10.7.0.0/16", &evil],
        "overlaps 10.7.1.0/24",
    );
    // luastrip's IPAM behind another driver, in luastrip's ranges or not: only luastrip's
    // driver checks an owner's address at every start.
    for subnet in ["10.123.5.0/24", "10.251.5.0/24"] {
        refused(
            &[
                "-d",
                "bridge",
                "--ipam-driver",
                &o.plugin,
                "--subnet",
                subnet,
                &evil,
            ],
            "luastrip's driver only (-d",
        );
    }
    refused(
        &[
            "-d",
            &o.plugin,
            "--ipam-driver",
            "other",
            "--subnet",
            "10.99.0.0/24",
            &evil,
        ],
        "not from the IPAM driver other",
    );
    // Networks of other drivers (issue 20): not on luastrip's bridge, not in its ranges.
    refused(
        &["-d", "bridge", "--subnet", "10.123.7.0/24", &evil],
        "overlaps 10.123.0.0/16 (--overlay-cidr)",
    );
    refused(
        &["-d", "bridge", "--subnet", "10.7.1.0/25", &evil],
        "overlaps 10.7.1.0/24",
    );
    let on_bridge = format!("com.docker.network.bridge.name={}", o.bridge);
    refused(
        &[
            "-d",
            "bridge",
            "-o",
            &on_bridge,
            "--subnet",
            "10.200.9.0/24",
            &evil,
        ],
        "luastrip's overlay bridge",
    );
    refused(
        &[
            "-d",
            "macvlan",
            "-o",
            &format!("parent={}", o.bridge),
            &evil,
        ],
        "luastrip's overlay bridge",
    );
    // The same with luastrip's IPAM behind another driver, on a VLAN of the bridge, and a
    // subnet written with host bits or as a /31.
    refused(
        &[
            "-d",
            "bridge",
            "--ipam-driver",
            &o.plugin,
            "-o",
            &on_bridge,
            "--subnet",
            "10.251.9.0/24",
            &evil,
        ],
        "luastrip's overlay bridge",
    );
    refused(
        &[
            "-d",
            "macvlan",
            "-o",
            &format!("parent={}.10", o.bridge),
            &evil,
        ],
        "luastrip's overlay bridge",
    );
    refused(
        &["-d", "bridge", "--subnet", "10.7.1.4/31", &evil],
        "overlaps 10.7.1.0/24",
    );
    refused(
        &["-d", "bridge", "--subnet", "10.123.9.5/24", &evil],
        "overlaps 10.123.0.0/16",
    );
    // luastrip's driver on an interface luastrip did not make (issue 20): a foreign bridge, a
    // veth pair. Refused, and neither is touched; a new name gets a bridge of luastrip's own,
    // removed with its network.
    let n = std::process::id() % 100_000;
    let (foreign, veth, peer, fresh) = (
        format!("lsf{n}"),
        format!("lsv{n}x"),
        format!("lsw{n}x"),
        format!("lsn{n}"),
    );
    struct Links(Vec<String>);
    impl Drop for Links {
        fn drop(&mut self) {
            for l in &self.0 {
                let _ = Command::new("ip").args(["link", "del", l]).output();
            }
        }
    }
    let _links = Links(vec![foreign.clone(), veth.clone(), fresh.clone()]);
    run_ok(Command::new("ip").args(["link", "add", &foreign, "type", "bridge"]));
    run_ok(Command::new("ip").args(["link", "add", &veth, "type", "veth", "peer", "name", &peer]));
    for iface in [&foreign, &veth] {
        let out = output(o.docker().args([
            "network",
            "create",
            "-d",
            &o.plugin,
            "-o",
            &format!("luastrip.bridge={iface}"),
            "--subnet",
            "10.250.77.0/24",
            &evil,
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{iface}: {err}");
        assert!(
            err.contains("is an interface luastrip did not make"),
            "{iface}: {err}"
        );
        let _ = output(o.docker().args(["network", "rm", &evil]));
        assert!(
            output(Command::new("ip").args(["link", "show", iface]))
                .status
                .success(),
            "{iface} was deleted"
        );
    }
    run_ok(o.docker().args([
        "network",
        "create",
        "-d",
        &o.plugin,
        "-o",
        &format!("luastrip.bridge={fresh}"),
        "--subnet",
        "10.250.78.0/24",
        &evil,
    ]));
    assert!(
        run_ok(Command::new("ip").args(["-o", "link", "show", &fresh]))
            .contains("alias luastrip-overlay")
    );
    run_ok(o.docker().args(["network", "rm", &evil]));
    assert!(!output(Command::new("ip").args(["link", "show", &fresh]))
        .status
        .success());
    // Elsewhere a bridge network is anyone's.
    run_ok(o.docker().args([
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.201.9.0/24",
        &evil,
    ]));
    run_ok(o.docker().args(["network", "rm", &evil]));
    run_ok(o.docker().args(["rm", "-f", &victim, &other]));
}

/// Issue 20, item 4: dockerd resolves a container's network again at every start, so a container
/// created on a network *named* like an overlay network's ID prefix, removed before the start,
/// reaches the overlay asking for another container's address. The plugin face refuses it at the
/// start itself (the endpoint carries no claim on the address); the socket face refuses the
/// namesake network and a claim copied from `docker inspect`.
#[test]
fn an_owners_address_is_checked_again_at_every_start() {
    let o = Overlay::new("d", 127);
    let host = format!("unix://{}", o.daemon.display());
    let direct = || support::docker_cli(&host);
    let victim = o.run_d("10.127.0.50/16");
    let owned = format!(
        "10.127.0.50 is the overlay address of container {}",
        &victim[..12]
    );
    let net_id = run_ok(
        o.docker()
            .args(["network", "inspect", "-f", "{{.Id}}", &o.plugin]),
    );
    let prefix = &net_id.trim()[..12];
    let claim_of = |id: &str| {
        run_ok(o.docker().args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{index .DriverOpts \"luastrip.overlay.claim\"}}{{end}}",
            id,
        ]))
        .trim()
        .to_string()
    };
    let claim = claim_of(&victim);
    assert_eq!(
        claim.len(),
        32,
        "the victim's endpoint carries its claim: {claim:?}"
    );

    // Through the gateway, a network named after the overlay network's ID prefix, or its name,
    // is refused.
    let decoy = [
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.127.0.0/16",
    ];
    for name in [prefix, o.plugin.as_str()] {
        let out = output(o.docker().args(decoy).arg(name));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(&format!("of luastrip's network {}", o.plugin)),
            "{name}: {err}"
        );
    }

    // Made at the daemon directly, the namesake takes the reference at create: the guard sees a
    // bridge network and lets `--ip` pass. Removed before the start, the reference resolves to
    // the overlay network at start, and the plugin refuses the victim's address.
    run_ok(direct().args(decoy).arg(prefix));
    let thief = run_ok(o.docker().args([
        "create",
        "--network",
        prefix,
        "--ip",
        "10.127.0.50",
        IMAGE,
        "sleep",
        "300",
    ]))
    .trim()
    .to_string();
    run_ok(direct().args(["network", "rm", prefix]));
    for docker in [o.docker(), direct()] {
        let mut docker = docker;
        let out = output(docker.args(["start", &thief]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(&owned), "{err}");
    }
    assert_eq!(
        o.record("10.127.0.0_16", "10.127.0.50")["owner"],
        victim.as_str()
    );
    // The victim keeps its address across a restart, claim and all.
    run_ok(o.docker().args(["restart", "-t", "0", &victim]));
    assert!(
        o.addresses(&victim).contains("=10.127.0.50"),
        "{}",
        o.addresses(&victim)
    );
    assert_eq!(claim_of(&victim), claim);
    run_ok(o.docker().args(["rm", "-f", &thief]));

    // The claim, copied from `docker inspect`, is refused at create and at connect.
    let resp = support::post_json(
        &o.gw.socket,
        "/v1.41/containers/create",
        &format!(
            r#"{{"Image":"{IMAGE}","NetworkingConfig":{{"EndpointsConfig":{{"{net}":{{"IPAMConfig":{{"IPv4Address":"10.127.0.50"}},"DriverOpts":{{"luastrip.overlay.claim":"{claim}"}}}}}}}}}}"#,
            net = o.plugin
        ),
    );
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("is set by luastrip, not by clients"),
        "{resp}"
    );
    let other = run_ok(
        o.docker()
            .args(["create", "--network", "none", IMAGE, "true"]),
    )
    .trim()
    .to_string();
    let out = output(o.docker().args([
        "network",
        "connect",
        "--driver-opt",
        &format!("luastrip.overlay.claim={claim}"),
        &o.plugin,
        &other,
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is set by luastrip, not by clients"),
        "{err}"
    );
    // A free `--ip` at connect gets its own claim, and the container starts with it.
    run_ok(o.docker().args(["network", "disconnect", "none", &other]));
    run_ok(o.docker().args([
        "network",
        "connect",
        "--ip",
        "10.127.0.60",
        &o.plugin,
        &other,
    ]));
    let theirs = claim_of(&other);
    assert!(theirs.len() == 32 && theirs != claim, "{theirs:?}");
    run_ok(o.docker().args(["start", "-a", &other]));
    run_ok(o.docker().args(["rm", "-f", &other, &victim]));
}

/// Stops a daemon on drop.
struct Stopping(Daemon);

impl Drop for Stopping {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The address of a container on its one overlay network.
fn ip_of(o: &Overlay, id: &str) -> String {
    o.addresses(id)
        .split('=')
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn containers_on_two_hosts_reach_each_other_over_vxlan() {
    support::require_root();
    let pid = std::process::id();
    let netns = format!("lst{pid}h2");
    let (link, peer) = (
        format!("lsu{}a", pid % 100_000),
        format!("lsu{}b", pid % 100_000),
    );
    let x = pid % 250;
    let (ip_a, ip_b) = (format!("198.18.{x}.1"), format!("198.18.{x}.2"));
    let vni = (4000 + pid % 1000).to_string();
    let vxlan = format!("lsx{vni}");
    let underlay = Underlay::new(&netns, &link, &peer, &ip_a, &ip_b);
    let daemon_b = Stopping(Daemon::start_in_netns(
        &support::temp_dir("dockerd-h2"),
        &netns,
    ));
    let flags = |peer: &str, range: &str, host: &'static str| {
        [
            "--overlay-peer",
            peer,
            "--overlay-range",
            range,
            "--overlay-vni",
            &vni,
            "--host-name",
            host,
        ]
        .map(str::to_string)
    };
    let fa = flags(&ip_b, "10.124.0.0/17", "h1");
    let fb = flags(&ip_a, "10.124.128.0/17", "h2");
    let a = Overlay::on_host("va", 124, None, &Daemon::shared().socket, &refs(&fa));
    let b = Overlay::on_host("vb", 124, Some(&netns), &daemon_b.0.socket, &refs(&fb));

    let (on_a, on_b) = (a.run_d("net:default"), b.run_d("net:default"));
    let (addr_a, addr_b) = (ip_of(&a, &on_a), ip_of(&b, &on_b));
    // Each host picks from its own share of the one subnet.
    assert!(
        addr_a.starts_with("10.124.")
            && addr_a.split('.').nth(2).unwrap().parse::<u8>().unwrap() < 128,
        "{addr_a}"
    );
    assert!(
        addr_b.split('.').nth(2).unwrap().parse::<u8>().unwrap() >= 128,
        "{addr_b}"
    );
    // Both ways over VXLAN, also a packet near the endpoints' MTU (1450: VXLAN takes 50).
    run_ok(
        b.docker()
            .args(["exec", &on_b, "ping", "-c", "2", "-W", "2", &addr_a]),
    );
    run_ok(
        a.docker()
            .args(["exec", &on_a, "ping", "-c", "2", "-W", "2", &addr_b]),
    );
    run_ok(a.docker().args([
        "exec", &on_a, "ping", "-c", "1", "-s", "1400", "-W", "2", &addr_b,
    ]));
    let link_a = run_ok(
        a.docker()
            .args(["exec", &on_a, "ip", "link", "show", "ethwe0"]),
    );
    assert!(link_a.contains("mtu 1450"), "{link_a}");
    // Head-end replication: one all-zero FDB entry per peer, on each host.
    let fdb = run_ok(Command::new("bridge").args(["fdb", "show", "dev", &vxlan]));
    assert!(
        fdb.contains(&format!("00:00:00:00:00:00 dst {ip_b}")),
        "{fdb}"
    );
    let fdb = run_ok(b.ip().args(["-d", "link", "show", &vxlan]));
    assert!(fdb.contains(&format!("vxlan id {vni}")), "{fdb}");

    // Removing the last network takes the bridge and its VXLAN device with it.
    run_ok(a.docker().args(["rm", "-f", &on_a]));
    run_ok(b.docker().args(["rm", "-f", &on_b]));
    let bridge_a = a.bridge.clone();
    drop(b);
    drop(a);
    let left = links();
    assert!(!left.contains(&format!(" {vxlan}:")), "{left}");
    assert!(!left.contains(&format!(" {bridge_a}:")), "{left}");
    drop(daemon_b);
    drop(underlay);
    let left = links();
    assert!(
        !left.contains(&format!(" {link}@")) && !left.contains(&format!(" {link}:")),
        "{left}"
    );
    let spaces = run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(!spaces.contains(&netns), "{spaces}");
}

fn refs(f: &[String]) -> Vec<&str> {
    f.iter().map(String::as_str).collect()
}

/// `examples/weave/two-hosts.sh`, as a reader would run it (with this suite's binary and names
/// of its own).
#[test]
fn the_two_host_example_runs() {
    support::require_root();
    let pid = std::process::id();
    let n = pid % 100_000;
    let out = output(
        Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/weave/two-hosts.sh"
            ))
            .env("BIN", env!("CARGO_BIN_EXE_luastrip"))
            .env("NETNS", format!("lst{pid}ex"))
            .env("LINKS", format!("lsu{n}c lsu{n}d"))
            .env(
                "UNDERLAY",
                format!("198.19.{}.1 198.19.{}.2", pid % 250, pid % 250),
            )
            .env("BRIDGES", format!("lst{n}e1 lst{n}e2"))
            .env("PLUGINS", format!("lst{pid}e1 lst{pid}e2"))
            .env("VNI", (5000 + pid % 1000).to_string()),
    );
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{err}");
    assert!(stdout.contains("hello from h1"), "{stdout}\n{err}");
    assert!(stdout.contains("inet 10.40."), "{stdout}");
    // It cleaned up after itself.
    let left = links();
    assert!(
        !left.contains(&format!("lst{n}e1")) && !left.contains(&format!("lsu{n}c")),
        "{left}"
    );
    let spaces = run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(!spaces.contains(&format!("lst{pid}ex")), "{spaces}");
}

#[test]
fn the_address_comes_back_when_dockerd_restarts_the_container_at_boot() {
    // A daemon of its own: this one is stopped and started again.
    let dir = support::temp_dir("dockerd-boot");
    let daemon = Stopping(Daemon::start(&dir));
    daemon.0.import_busybox();
    let o = Overlay::on_host("rb", 125, None, &daemon.0.socket, &[]);
    let id = run_ok(o.docker().args([
        "run",
        "-d",
        "--restart",
        "always",
        "-e",
        "WEAVE_CIDR=10.125.1.5/24",
        IMAGE,
        "sh",
        "-c",
        "ip -4 addr show ethwe0 | grep inet; sleep 300",
    ]))
    .trim()
    .to_string();
    support::wait_until("first run", Duration::from_secs(10), || {
        run_ok(o.docker().args(["logs", &id])).contains("10.125.1.5/24")
    });
    // dockerd stops (the container with it) and starts again: its restart policy starts the
    // container at boot, a start that never passes through luastrip, and dockerd asks the
    // driver for the interface before the process runs.
    daemon.0.stop();
    let daemon = Stopping(Daemon::start(&dir));
    support::wait_until("restarted at boot", Duration::from_secs(30), || {
        let logs = output(o.docker().args(["logs", &id]));
        String::from_utf8_lossy(&logs.stdout)
            .matches("inet 10.125.1.5/24")
            .count()
            == 2
    });
    // Still the container's own: not handed out twice.
    o.claim_refused("10.125.1.5/24", "10.125.1.5 is already taken");
    drop(o);
    drop(daemon);
}

/// Issue 21: hosts that share etcd share the overlay's addresses. Two real hosts (this one, and
/// a network namespace with its own dockerd that reaches etcd over its link), 50 runs on each at
/// once (10 clients each), get 100 different addresses from one range, each recorded in etcd
/// under `--cluster-prefix`.
#[test]
fn two_hosts_sharing_etcd_never_hand_out_an_address_twice() {
    let hosts = TwoHosts::new('i', (50, 8000), 128, ["h1", "h2"], &[]);
    let (a, b, prefix) = (&hosts.a, &hosts.b, &hosts.prefix);
    let clients: Vec<_> = [&a, &b]
        .iter()
        .enumerate()
        .flat_map(|(n, o)| {
            (0..10)
                .map(|_| {
                    let host = o.gw.host();
                    std::thread::spawn(move || {
                        (0..5)
                            .map(|_| {
                                let mut cmd = support::docker_cli(&host);
                                cmd.args(["run", "-d", "-e", "WEAVE_CIDR=net:default", IMAGE])
                                    .args(["sleep", "300"]);
                                (n, run_ok(&mut cmd).trim().to_string())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut ids: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for t in clients {
        for (n, id) in t.join().unwrap() {
            let ip = ip_of([&a, &b][n], &id);
            assert!(ip.starts_with("10.128."), "{ip}");
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
            ids[n].push(id);
        }
    }
    assert_eq!(seen.len(), 100);
    assert_eq!((ids[0].len(), ids[1].len()), (50, 50));
    // Each address is one record in etcd, under the prefix.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = rt.block_on(async {
        let mut c = hosts.etcd.raw_client().await;
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_keys_only();
        let got = c
            .get(
                format!("{prefix}overlay/addresses/10.128.0.0_16/"),
                Some(options),
            )
            .await
            .unwrap();
        got.kvs().len()
    });
    // The 100 owners' and each host's network gateway address.
    assert_eq!(keys, 102, "records in etcd");
    for (o, ids) in [(a, &ids[0]), (b, &ids[1])] {
        run_ok(o.docker().args(["rm", "-f"]).args(ids));
    }
}

/// Issue 21: a gateway started while etcd is down starts and serves what needs no cluster
/// decision; a decision fails within 5 s with an error naming etcd; once etcd is up, the same
/// gateway decides, without a restart.
#[test]
fn a_gateway_started_while_etcd_is_down_serves_and_joins_when_it_is_up() {
    let mut etcd = support::etcd::Etcd::start();
    for i in 0..3 {
        etcd.kill(i);
    }
    let url = etcd.url();
    let prefix = format!("/luastrip-d{}/", std::process::id());
    let flags = [
        "--cluster",
        url.as_str(),
        "--cluster-prefix",
        prefix.as_str(),
    ];
    let o = Overlay::on_host("ed", 129, None, &Daemon::shared().socket, &flags);
    run_ok(o.docker().args(["version"]));
    run_ok(
        o.docker()
            .args(["run", "--rm", "--network", "none", IMAGE, "true"]),
    );
    let started = std::time::Instant::now();
    let out =
        output(
            o.docker()
                .args(["run", "--rm", "-e", "WEAVE_CIDR=net:default", IMAGE, "true"]),
        );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("etcd (127.0.0.1:"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal took {:?}",
        started.elapsed()
    );
    // /metrics says so.
    let reachable = || {
        let ctl = o.gw.socket.with_extension("ctl");
        let metrics = support::raw(&ctl, &support::http_request("GET", "/metrics", "", b""));
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("luastrip_cluster_reachable "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no luastrip_cluster_reachable in {metrics}"))
    };
    assert_eq!(reachable(), "0");
    for i in 0..3 {
        etcd.restart(i);
    }
    etcd.wait_healthy(Duration::from_secs(30));
    // The store asks etcd again once its last failure is DOWN_FOR (2 s) old.
    std::thread::sleep(Duration::from_millis(2500));
    let id = o.run_d("net:default");
    assert!(
        ip_of(&o, &id).starts_with("10.129."),
        "{}",
        o.addresses(&id)
    );
    assert_eq!(reachable(), "1");
}

/// Issue 21: gateways register in the cluster's list of hosts under a lease. A second gateway
/// under a live name is refused; `luastrip cluster hosts` shows who is alive and what each
/// holds; a host that died is forgotten only once its registration has expired, its addresses
/// go back to the pool, and when it comes back with its old containers, an address taken
/// meanwhile stays with its new owner.
#[test]
fn hosts_are_listed_forgotten_and_a_returning_host_takes_nothing_back() {
    let etcd = support::etcd::Etcd::start();
    let url = etcd.url();
    let prefix = format!("/luastrip-h{}/", std::process::id());
    let cluster = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_luastrip"));
        c.args(["cluster", "--cluster", &url, "--cluster-prefix", &prefix])
            .args(args);
        c
    };
    let hosts = || -> serde_json::Value {
        serde_json::from_str(&run_ok(&mut cluster(&["hosts", "--json"]))).unwrap()
    };
    let host = |name: &str| -> serde_json::Value {
        hosts()
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let flags = |name: &'static str| {
        [
            "--cluster".to_string(),
            url.clone(),
            "--cluster-prefix".to_string(),
            prefix.clone(),
            "--host-name".to_string(),
            name.to_string(),
        ]
    };
    let (fa, fb) = (flags("h1"), flags("h2"));
    let mut a = Overlay::on_host("ha", 130, None, &Daemon::shared().socket, &refs(&fa));
    let h1 = host("h1");
    assert_eq!(h1["alive"], true, "{h1}");
    assert_eq!(h1["version"], env!("CARGO_PKG_VERSION"), "{h1}");

    // A second gateway under the live name h1: refused, once the wait for a stale
    // registration is over, before any socket appears.
    let dir = support::temp_dir("dup");
    let out = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .args(["serve", "--listen"])
            .arg(format!("unix://{}", dir.join("gw.sock").display()))
            .arg("--upstream")
            .arg(format!("unix://{}", Daemon::shared().socket.display()))
            .args([
                "--network-plugin",
                &format!("lst{}hdup", std::process::id()),
            ])
            .args(&fa),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the host name h1 is held by a live gateway"),
        "{err}"
    );
    assert!(!dir.join("gw.sock").exists());

    // What h1 holds; it cannot be forgotten while alive.
    let victim = a.run_d("10.130.0.5/16");
    let held = host("h1");
    assert!(
        held["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "10.130.0.5"),
        "{held}"
    );
    let out = output(&mut cluster(&["forget", "h1", "--grace-s", "0"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("h1 is alive"),
        "{err}"
    );

    // h1's gateway dies without leaving: gone once its registration expires, then forgotten.
    a.gw.child.kill().unwrap();
    a.gw.child.wait().unwrap();
    support::wait_until("h1's registration expires", Duration::from_secs(25), || {
        host("h1")["alive"] == false
    });
    let forgot = run_ok(&mut cluster(&["forget", "h1", "--grace-s", "0"]));
    assert!(forgot.contains("forgot h1:"), "{forgot}");
    assert!(host("h1").is_null(), "h1 is no longer known");

    // Its address is free for another host's container…
    let b = Overlay::on_host("hb", 130, None, &Daemon::shared().socket, &refs(&fb));
    let thief = b.run_d("10.130.0.5/16");
    assert!(ip_of(&b, &thief) == "10.130.0.5", "{}", b.addresses(&thief));
    // …and h1, back with its old container, does not take it back.
    a.start_again();
    assert_eq!(host("h1")["alive"], true);
    let out = output(a.docker().args(["restart", "-t", "0", &victim]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "10.130.0.5 is the overlay address of container {}",
                &thief[..12]
            )),
        "{err}"
    );
    assert_eq!(ip_of(&b, &thief), "10.130.0.5");
    run_ok(a.docker().args(["rm", "-f", &victim]));
}

/// Issue 21: with the cluster on etcd and `--overlay-underlay`, no `--overlay-peer`: each host's
/// gateway publishes its underlay address, and the others make it their VXLAN peer; a host whose
/// gateway leaves is dropped from the others' VXLAN peers. Both hosts pick from the whole range:
/// etcd keeps their addresses apart.
#[test]
fn vxlan_peers_come_from_the_cluster_and_follow_hosts_that_leave() {
    let mut hosts = TwoHosts::new('g', (100, 6000), 131, ["v1", "v2"], &[]);
    let (ip_a, ip_b, vxlan) = (hosts.ip_a.clone(), hosts.ip_b.clone(), hosts.vxlan.clone());
    let TwoHosts { a, b, .. } = &mut hosts;
    let (on_a, on_b) = (a.run_d("net:default"), b.run_d("net:default"));
    let (addr_a, addr_b) = (ip_of(a, &on_a), ip_of(b, &on_b));
    assert!(addr_a.starts_with("10.131.") && addr_b.starts_with("10.131."));
    assert_ne!(addr_a, addr_b);
    let flooded = |o: &Overlay| {
        let mut c = Command::new("bridge");
        if let Some(ns) = &o.netns {
            c.args(["-n", ns]);
        }
        run_ok(c.args(["fdb", "show", "dev", &vxlan]))
    };
    support::wait_until(
        "each host floods to the other",
        Duration::from_secs(15),
        || {
            flooded(a).contains(&format!("00:00:00:00:00:00 dst {ip_b}"))
                && flooded(b).contains(&format!("00:00:00:00:00:00 dst {ip_a}"))
        },
    );
    run_ok(
        b.docker()
            .args(["exec", &on_b, "ping", "-c", "2", "-W", "2", &addr_a]),
    );
    run_ok(
        a.docker()
            .args(["exec", &on_a, "ping", "-c", "2", "-W", "2", &addr_b]),
    );

    // Host B's gateway leaves: A drops it from its peers.
    run_ok(b.docker().args(["rm", "-f", &on_b]));
    assert_eq!(b.gw.terminate(), Some(0));
    // (Only the flooding entry goes: MACs learned from B age out as the kernel ages them.)
    support::wait_until("A drops B's underlay", Duration::from_secs(15), || {
        !flooded(a).contains(&format!("00:00:00:00:00:00 dst {ip_b}"))
    });
    // Back: A takes it as a peer again.
    b.start_again();
    support::wait_until("A takes B back", Duration::from_secs(15), || {
        flooded(a).contains(&format!("00:00:00:00:00:00 dst {ip_b}"))
    });
    run_ok(a.docker().args(["rm", "-f", &on_a]));
}

/// Two "hosts" sharing one etcd: this one, and a network namespace with its own dockerd reached
/// over a veth underlay (etcd listens on this side of it). Each runs a gateway with the weave
/// script, its VXLAN peers from the cluster (`--overlay-underlay`). Fields drop in order: the
/// gateways, the second dockerd, etcd, the namespace.
struct TwoHosts {
    b: Overlay,
    a: Overlay,
    /// This host's VXLAN device, removed once the gateways are gone: dockerd may fail to remove
    /// a network many containers left at once (docs/overlay.md), and then nothing else does.
    _vxlan_here: LinkOnDrop,
    daemon_b: Stopping,
    etcd: support::etcd::Etcd,
    _underlay: Underlay,
    url: String,
    prefix: String,
    ip_a: String,
    ip_b: String,
    vxlan: String,
}

impl TwoHosts {
    /// `tag` (one letter) names the namespace, links and gateways; `slot` picks a /30 of
    /// 198.18.0.0/16 and `vnis` a thousand VNIs, apart from the other two-host tests'; `octet`
    /// the overlay range; `hosts` the host names; `extra` more gateway flags for both.
    fn new(
        tag: char,
        (slot, vnis): (u32, u32),
        octet: u8,
        hosts: [&str; 2],
        extra: &[&str],
    ) -> TwoHosts {
        support::require_root();
        let pid = std::process::id();
        let netns = format!("lst{pid}h{tag}");
        let (link, peer) = (
            format!("lsu{}{tag}a", pid % 100_000),
            format!("lsu{}{tag}b", pid % 100_000),
        );
        let x = (pid + slot) % 250;
        let (ip_a, ip_b) = (format!("198.18.{x}.13"), format!("198.18.{x}.14"));
        let vni = (vnis + pid % 1000).to_string();
        let underlay = Underlay::new(&netns, &link, &peer, &ip_a, &ip_b);
        let etcd = support::etcd::Etcd::start_also_on(Some(&ip_a));
        let url = etcd.url_on(&ip_a);
        let prefix = format!("/luastrip-{tag}{pid}/");
        let daemon_b = Stopping(Daemon::start_in_netns(
            &support::temp_dir(&format!("dockerd-{tag}")),
            &netns,
        ));
        let flags = |me: &str, host: &str| -> Vec<String> {
            [
                "--cluster",
                &url,
                "--cluster-prefix",
                &prefix,
                "--overlay-underlay",
                me,
                "--overlay-vni",
                &vni,
                "--host-name",
                host,
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
        };
        let (fa, fb) = (flags(&ip_a, hosts[0]), flags(&ip_b, hosts[1]));
        let a = Overlay::on_host(
            &format!("{tag}a"),
            octet,
            None,
            &Daemon::shared().socket,
            &refs(&fa),
        );
        let b = Overlay::on_host(
            &format!("{tag}b"),
            octet,
            Some(&netns),
            &daemon_b.0.socket,
            &refs(&fb),
        );
        TwoHosts {
            b,
            a,
            _vxlan_here: LinkOnDrop(format!("lsx{vni}")),
            daemon_b,
            etcd,
            _underlay: underlay,
            url,
            prefix,
            ip_a,
            ip_b,
            vxlan: format!("lsx{vni}"),
        }
    }

    /// `luastrip cluster ARGS…` on this cluster.
    fn cluster(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_luastrip"));
        c.args(["cluster", "--cluster", &self.url])
            .args(["--cluster-prefix", &self.prefix])
            .args(args);
        c
    }

    /// `bridge fdb show dev VXLAN` on `o`'s host.
    fn fdb(&self, o: &Overlay) -> String {
        let mut c = Command::new("bridge");
        if let Some(ns) = &o.netns {
            c.args(["-n", ns]);
        }
        run_ok(c.args(["fdb", "show", "dev", &self.vxlan]))
    }
}

/// Deletes the link named so on drop (nothing if it is gone already).
struct LinkOnDrop(String);

impl Drop for LinkOnDrop {
    fn drop(&mut self) {
        let _ = output(Command::new("ip").args(["link", "del", &self.0]));
    }
}

/// The MAC luastrip gives the endpoint of `ip` (`02:4c:` and the address's bytes).
fn mac_of(ip: &str) -> String {
    let b: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    format!("02:4c:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// Issue 22, item 2: an address bound to a container's identity follows it to another host;
/// never from under a running container, never back to the container left behind, held for the
/// identity after removal, and every host's VXLAN follows at once.
#[test]
fn an_identitys_address_follows_it_to_another_host() {
    let pid = std::process::id();
    let hosts = TwoHosts::new(
        'k',
        (150, 7000),
        133,
        ["t1", "t2"],
        &["--overlay-hold-s", "45"],
    );
    let (a, b) = (&hosts.a, &hosts.b);
    let db = format!("db{pid}");
    let run_db = |o: &Overlay, extra: &[&str]| {
        let mut c = o.docker();
        c.args(["run", "-d", "--name", &db, "-e", "WEAVE_CIDR=net:default"])
            .args(extra)
            .args([IMAGE, "sleep", "300"]);
        output(&mut c)
    };
    let id = |out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let refused = |out: std::process::Output, why: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains(why),
            "wanted {why:?}: {err}"
        );
    };
    let on_b = id(run_db(b, &[]));
    let x = ip_of(b, &on_b);
    // A stranger (an unnamed container) asking for db's address by value, on host `o`.
    let by_value = |o: &Overlay| {
        output(o.docker().args([
            "run",
            "--rm",
            "-e",
            &format!("WEAVE_CIDR={x}/16"),
            IMAGE,
            "true",
        ]))
    };
    assert!(x.starts_with("10.133."), "{x}");
    let mac = mac_of(&x);
    let link = run_ok(
        b.docker()
            .args(["exec", &on_b, "ip", "link", "show", "ethwe0"]),
    );
    assert!(link.contains(&mac), "the MAC follows the address: {link}");
    // A client on A reaches db on B (and A's VXLAN learns where db's MAC is).
    let client = run_ok(a.docker().args([
        "run",
        "-d",
        "-e",
        "WEAVE_CIDR=net:default",
        IMAGE,
        "sleep",
        "300",
    ]))
    .trim()
    .to_string();
    let ping = |to: &str| {
        output(
            a.docker()
                .args(["exec", &client, "ping", "-c", "1", "-W", "2", to]),
        )
        .status
        .success()
    };
    support::wait_until("A reaches db on B", Duration::from_secs(15), || ping(&x));

    // While db runs on B, the same identity is refused on A, naming the host and container.
    refused(
        run_db(a, &[]),
        &format!("in use by container {} on host t2", &on_b[..12]),
    );
    // `docker stop` on B, then the same name on A: the same address, and A reaches it at
    // once (the VXLAN entries follow the move).
    run_ok(b.docker().args(["stop", "-t", "0", &on_b]));
    let on_a = id(run_db(a, &[]));
    assert_eq!(ip_of(a, &on_a), x);
    support::wait_until("the VXLAN follows db to A", Duration::from_secs(10), || {
        !hosts.fdb(a).contains(&mac) && hosts.fdb(b).contains(&format!("{mac} dst {}", hosts.ip_a))
    });
    assert!(ping(&x), "A's client reaches db, now on A, at once");
    // The container left on B is refused the address, through the gateway and on dockerd.
    refused(
        output(b.docker().args(["start", &on_b])),
        "which has moved to host t1",
    );
    let mut direct_b =
        support::docker_cli(&format!("unix://{}", hosts.daemon_b.0.socket.display()));
    refused(
        output(direct_b.args(["start", &on_b])),
        "which has moved to host t1",
    );
    // Another identity is refused it while db runs on A, naming the holder.
    refused(
        output(b.docker().args([
            "run",
            "--rm",
            "--name",
            &format!("other{pid}"),
            "-e",
            &format!("WEAVE_CIDR={x}/16"),
            IMAGE,
            "true",
        ])),
        &format!("by name:{db} on host t1"),
    );

    // Stopped on A, and the name taken again there: dockerd refuses the create, and the
    // address stays db's (given back once, as it was), so db starts again with it.
    run_ok(a.docker().args(["stop", "-t", "0", &on_a]));
    refused(run_db(a, &[]), "is already in use");
    refused(by_value(b), &format!("by name:{db} on host t1"));
    run_ok(a.docker().args(["start", &on_a]));
    assert_eq!(ip_of(a, &on_a), x);

    // Removed on A: held for db; `cluster hosts` shows it; others are refused it.
    run_ok(a.docker().args(["rm", "-f", &on_a]));
    let listed = || run_ok(&mut hosts.cluster(&["hosts"]));
    support::wait_until(
        "cluster hosts shows the hold",
        Duration::from_secs(10),
        || listed().contains(&format!("held {x} name:{db} ")),
    );
    let shown = listed();
    assert!(shown.contains("overlay hold 45 s"), "{shown}");
    refused(
        by_value(a),
        &format!("held for name:{db}, whose container was removed on host t1"),
    );
    // On B, the name is still taken by the old container: dockerd refuses the create, and the
    // address stays as it was (held on t1).
    refused(run_db(b, &[]), "is already in use");
    assert!(
        listed().contains(&format!("held {x} name:{db} ")),
        "{}",
        listed()
    );
    // The old container goes (changing nothing), and db is created on B again: same address.
    run_ok(b.docker().args(["rm", &on_b]));
    let again = id(run_db(b, &[]));
    assert_eq!(ip_of(b, &again), x);
    support::wait_until(
        "the VXLAN follows db back to B",
        Duration::from_secs(10),
        || hosts.fdb(a).contains(&format!("{mac} dst {}", hosts.ip_b)),
    );
    assert!(ping(&x), "A's client reaches db, back on B");
    assert!(!listed().contains(&format!("held {x}")), "{}", listed());

    // Compose's labels are an identity too: a service container recreated on the other host.
    let compose = |o: &Overlay, name: &str| {
        let mut c = o.docker();
        c.args(["run", "-d", "--name", name, "-e", "WEAVE_CIDR=net:default"])
            .args(["--label", &format!("com.docker.compose.project=p{pid}")])
            .args(["--label", "com.docker.compose.service=web"])
            .args(["--label", "com.docker.compose.container-number=1"])
            .args([IMAGE, "sleep", "300"]);
        id(output(&mut c))
    };
    let web_a = compose(a, &format!("p{pid}_web_1"));
    let y = ip_of(a, &web_a);
    run_ok(a.docker().args(["stop", "-t", "0", &web_a]));
    let web_b = compose(b, &format!("p{pid}_web_1_b"));
    assert_eq!(ip_of(b, &web_b), y);

    run_ok(a.docker().args(["rm", "-f", &client, &web_a]));
    run_ok(b.docker().args(["rm", "-f", &again, &web_b]));
}
