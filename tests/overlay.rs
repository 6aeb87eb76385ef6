//! The overlay helper's first step on real Linux networking and a real dockerd: luastrip serves
//! libnetwork's remote network driver, and a container on such a network has its `ethwe0`,
//! addressed, before its first command runs, also when dockerd restarts it by itself.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{output, run_ok, Daemon, Gateway, IMAGE};

fn links() -> String {
    run_ok(Command::new("ip").args(["-o", "link", "show"]))
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
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--network-plugin", &plugin, "--overlay-bridge", &bridge],
    );
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
    run_ok(gw.docker().args([
        "run",
        "--rm",
        "--network",
        &net,
        IMAGE,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        ip.trim(),
    ]));
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
    // Everything goes: containers, network, veths, the bridge.
    run_ok(gw.docker().args(["rm", "-f", &a, &r]));
    run_ok(gw.docker().args(["network", "rm", &net]));
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
