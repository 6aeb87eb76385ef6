//! The overlay helper's first step on real Linux networking and a real dockerd: luastrip serves
//! libnetwork's remote network driver, and a container on such a network has its `ethwe0`,
//! addressed, before its first command runs, also when dockerd restarts it by itself.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{output, run_ok, Daemon, Gateway, IMAGE};

/// `ping -c1` the address `ip` from a throwaway container on `net`, which must answer.
fn ping_on(gw: &Gateway, net: &str, ip: &str) {
    run_ok(gw.docker().args([
        "run",
        "--rm",
        "--network",
        net,
        IMAGE,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        ip,
    ]));
}

fn links() -> String {
    run_ok(Command::new("ip").args(["-o", "link", "show"]))
}

/// Deletes a link when dropped, so that a failing test leaves no bridge behind.
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Bridges (`lst<pid>br`) of test runs whose process is gone.
fn delete_dead_bridges() {
    for line in links().lines() {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        let Some(pid) = name.strip_prefix("lst").and_then(|r| r.strip_suffix("br")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            drop(LinkGuard(name.to_string()));
        }
    }
}

#[test]
fn containers_get_their_address_before_they_run_and_no_link_leaks() {
    support::require_root();
    support::require_tool("ip", "iproute2");
    support::remove_dead_plugin_sockets();
    let pid = std::process::id();
    let plugin = format!("lst{pid}net");
    let bridge = format!("lst{pid}br");
    let _socket = support::RemoveOnDrop(format!("/run/docker/plugins/{plugin}.sock").into());
    delete_dead_bridges();
    let _bridge = LinkGuard(bridge.clone());
    let cluster = support::temp_dir("overlay").join("cluster.json");
    let args = [
        "--network-plugin",
        &plugin,
        "--overlay-bridge",
        &bridge,
        "--cluster-file",
        cluster.to_str().unwrap(),
    ];
    let mut gw = Gateway::start_with(&Daemon::shared().socket, &args);
    let net = format!("lst{pid}-overlay");
    let subnet = format!("10.77.{}.0/24", pid % 250);
    run_ok(gw.docker().args([
        "network", "create", "-d", &plugin, "--subnet", &subnet, &net,
    ]));
    // The interface is there, addressed and up, when the container's first command runs.
    for _ in 0..10 {
        let out = run_ok(gw.docker().args([
            "run",
            "--rm",
            "--network",
            &net,
            IMAGE,
            "ip",
            "-4",
            "addr",
            "show",
        ]));
        assert!(out.contains("ethwe0"), "{out}");
        assert!(out.contains(&format!("inet 10.77.{}.", pid % 250)), "{out}");
        assert!(!out.contains("eth0"), "a gateway-service eth0 too: {out}");
    }
    // Two containers reach each other on the bridge.
    let a = run_ok(
        gw.docker()
            .args(["run", "-d", "--network", &net, IMAGE, "sleep", "300"]),
    )
    .trim()
    .to_string();
    let ip = run_ok(gw.docker().args([
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &a,
    ]));
    ping_on(&gw, &net, ip.trim());
    // A gateway restart forgets which networks it made; removing another network afterwards
    // must not take the bridge (and the running container's link) with it.
    assert_eq!(gw.terminate(), Some(0));
    gw = Gateway::start_with(&Daemon::shared().socket, &args);
    let other = format!("lst{pid}-other");
    let other_subnet = format!("10.76.{}.0/24", pid % 250);
    run_ok(gw.docker().args([
        "network",
        "create",
        "-d",
        &plugin,
        "--subnet",
        &other_subnet,
        &other,
    ]));
    run_ok(gw.docker().args(["network", "rm", &other]));
    let attached = run_ok(Command::new("ip").args(["-o", "link", "show", "master", &bridge]));
    assert!(
        attached.contains("lsv"),
        "the bridge lost the running container's link: {attached}"
    );
    ping_on(&gw, &net, ip.trim());
    // dockerd restarts a killed container by itself (never through luastrip): the address is
    // back before the command runs again.
    let r = run_ok(gw.docker().args([
        "run",
        "-d",
        "--restart",
        "always",
        "--network",
        &net,
        IMAGE,
        "sh",
        "-c",
        "ip -4 addr show ethwe0 | grep inet; sleep 300",
    ]))
    .trim()
    .to_string();
    let direct = Daemon::shared();
    support::wait_until("the first start printed", Duration::from_secs(10), || {
        run_ok(direct.docker().args(["logs", &r])).contains("inet ")
    });
    let host_pid = run_ok(
        direct
            .docker()
            .args(["inspect", "-f", "{{.State.Pid}}", &r]),
    );
    run_ok(Command::new("kill").args(["-9", host_pid.trim()]));
    support::wait_until(
        "the restart printed its address",
        Duration::from_secs(20),
        || {
            run_ok(direct.docker().args(["logs", &r]))
                .matches("inet 10.77.")
                .count()
                == 2
        },
    );
    run_ok(gw.docker().args(["rm", "-f", &a, &r]));
    run_ok(gw.docker().args(["network", "rm", &net]));

    // luastrip's own IPAM: 30 containers started at once get 30 different addresses, recorded
    // in the cluster store, and given back when the containers go.
    let net2 = format!("lst{pid}-ipam");
    let subnet2 = format!("10.78.{}.0/24", pid % 250);
    run_ok(gw.docker().args([
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--subnet",
        &subnet2,
        &net2,
    ]));
    let started: Vec<_> = (0..30)
        .map(|_| {
            let mut cmd = gw.docker();
            cmd.args(["run", "-d", "--network", &net2, IMAGE, "sleep", "300"]);
            std::thread::spawn(move || run_ok(&mut cmd).trim().to_string())
        })
        .collect();
    let ids: Vec<String> = started.into_iter().map(|t| t.join().unwrap()).collect();
    let mut addrs = std::collections::BTreeSet::new();
    for id in &ids {
        let ip = run_ok(gw.docker().args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ]));
        assert!(ip.starts_with(&format!("10.78.{}.", pid % 250)), "{ip}");
        assert!(addrs.insert(ip.trim().to_string()), "{ip} handed out twice");
    }
    let recorded = std::fs::read_to_string(&cluster).unwrap();
    assert_eq!(recorded.matches("\"endpoint\"").count(), 30, "{recorded}");
    // One at a time: `docker rm -f` of many at once removes them in parallel, and dockerd 20.10
    // can then miscount the network's endpoints ("has active endpoints" with none left).
    for id in &ids {
        run_ok(gw.docker().args(["rm", "-f", id]));
    }
    let recorded = std::fs::read_to_string(&cluster).unwrap();
    assert_eq!(recorded.matches("\"endpoint\"").count(), 0, "{recorded}");
    // Asking for an address taken (the network's gateway), outside the pool, or from a bad
    // pool is a clear error in the protocol's own field (asked of the plugin socket directly, as
    // dockerd does: a failed `docker run --ip` leaves dockerd an endpoint to clean up).
    let sock = std::path::PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    let ask = |body: String| {
        support::json_body(&support::raw(
            &sock,
            &support::http_request("POST", "/IpamDriver.RequestAddress", "", body.as_bytes()),
        ))
    };
    let pool = format!("10.78.{}.0/24", pid % 250);
    for (address, why) in [
        (format!("10.78.{}.1", pid % 250), "already taken"),
        ("10.79.0.5".to_string(), "not a host address"),
        ("not-an-ip".to_string(), "not an IPv4 address"),
    ] {
        let v = ask(format!(
            r#"{{"PoolID":"{pool}","Address":"{address}","Options":{{}}}}"#
        ));
        assert!(
            v["Error"].as_str().unwrap_or("").contains(why),
            "{address}: {v}"
        );
    }
    let v = ask(r#"{"PoolID":"10.0.0.1/24","Address":"","Options":{}}"#.to_string());
    assert!(
        v["Error"].as_str().unwrap_or("").contains("host bits"),
        "{v}"
    );
    let rm = output(gw.docker().args(["network", "rm", &net2]));
    assert!(
        rm.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&rm.stderr),
        run_ok(
            gw.docker()
                .args(["network", "inspect", "-f", "{{json .Containers}}", &net2])
        ),
        gw.log_text()
            .lines()
            .filter(|l| l.contains("Err")
                || l.contains("WARN")
                || l.contains("Leave")
                || l.contains("DeleteEndpoint"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Everything goes: containers, networks, veths, the bridge.
    let left = links();
    assert!(!left.contains("lsv") && !left.contains("lsc"), "{left}");
    assert!(!left.contains(&bridge), "{left}");
}

#[test]
fn a_bad_bridge_name_is_a_start_up_error() {
    let sock = support::temp_dir("overlay-bad").join("s.sock");
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_luastrip"))
            .args(["serve", "--listen", &format!("unix://{}", sock.display())])
            .args([
                "--upstream",
                &format!("unix://{}", Daemon::shared().socket.display()),
            ])
            .args(["--network-plugin", "x", "--overlay-bridge=-x;rm"]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--overlay-bridge") && err.contains("interface name"),
        "{err}"
    );
    assert!(!sock.exists());
}
