//! Docker swarm mode between two nodes on this machine, with luastrip's volume plugin on each:
//! a task moved by swarm's own scheduler takes its volume with it (issue 22, item 1).
//!
//! Each node is a network namespace and a mount namespace of its own, with its own zfs-fuse,
//! dockerd and gateway. Its own zfs-fuse, because zfs-fuse cannot unmount or destroy a dataset
//! whose mount was copied into another mount namespace ("dataset is busy"): a node sharing this
//! machine's zfs-fuse would pin every dataset it saw. These tests are a binary of their own, so
//! that no other test's datasets are mounted while a node's namespace is made.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{output, run_ok, Daemon, Gateway, IMAGE};

/// One swarm at a time: each forms its own, on its own addresses, but two at once would double
/// the load on two cores for nothing.
fn one_swarm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SWARM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SWARM.lock().unwrap_or_else(|e| e.into_inner())
}

/// A task's program: an 8 MB file and its checksum written once, then a line numbered on from
/// the last one in `/data/log` every 50 ms.
const WRITER: &str = "[ -f /data/blob ] || { dd if=/dev/urandom of=/data/blob bs=1M count=8 \
     2>/dev/null; sha256sum /data/blob > /data/blob.sum; }; \
     i=$(cat /data/log 2>/dev/null | wc -l); \
     while true; do i=$((i+1)); echo $i >> /data/log; sleep 0.05; done";

/// One swarm node: its namespaces (held by its zfs-fuse, which outlives dockerd), its dockerd,
/// pool and gateway.
struct Node {
    daemon: Daemon,
    gateway: Option<Gateway>,
    dir: PathBuf,
    netns: String,
    pool: String,
}

impl Node {
    /// The pid of the node's zfs-fuse (in the node's mount namespace).
    fn zfs_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("zfs-fuse.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// `cmd args` inside the node's namespaces.
    fn inside(&self, cmd: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.daemon.pid.to_string(), "-m", "-n", cmd]);
        c
    }

    fn gw(&self) -> &Gateway {
        self.gateway.as_ref().expect("the node's gateway")
    }
}

/// Two Docker swarm nodes on a bridge of this host, where a 3-member etcd listens too. Each
/// node serves the volume plugin `plugin` with `--volume-follow` and `--cluster`. Node 1 is the
/// manager; the nodes carry the labels `n=1` and `n=2`. Dropping it removes every container,
/// stops the dockerds before the gateways (a dockerd whose plugin is gone retries for seconds),
/// destroys the pools, stops the zfs-fuse daemons and removes the links and namespaces.
struct SwarmNodes {
    nodes: Vec<Node>,
    plugin: String,
    bridge: String,
    _etcd: support::etcd::Etcd,
}

impl SwarmNodes {
    fn new() -> SwarmNodes {
        support::require_root();
        for (tool, package) in [
            ("nsenter", "util-linux"),
            ("unshare", "util-linux"),
            ("findmnt", "util-linux"),
            ("zfs-fuse", "zfs-fuse"),
            ("zpool", "zfs-fuse"),
        ] {
            support::require_tool(tool, package);
        }
        let pid = std::process::id();
        let x = (pid + 200) % 250;
        let net = |h: u32| format!("198.18.{x}.{h}");
        let bridge = format!("lsb{}", pid % 100_000);
        let _ = output(Command::new("ip").args(["link", "del", &bridge]));
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", &format!("{}/24", net(1)), "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            run_ok(Command::new("ip").args(args));
        }
        let etcd = support::etcd::Etcd::start_also_on(Some(&net(1)));
        let url = etcd.url_on(&net(1));
        let plugin = format!("lst{pid}sw");
        let mut swarm = SwarmNodes {
            nodes: Vec::new(),
            plugin: plugin.clone(),
            bridge,
            _etcd: etcd,
        };
        let shared = support::temp_dir("swarm");
        let token = shared.join("token");
        std::fs::write(&token, "a-token-of-thirty-two-characters\n").unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        for i in 1..=2u32 {
            let me = net(1 + i);
            swarm.start_node(i, &me, &shared.join(format!("node{i}")));
            let node = swarm.nodes.last().unwrap();
            let peer = format!("{me}:{}", 7600 + i);
            let gw = Gateway::start_by(
                node.inside(env!("CARGO_BIN_EXE_luastrip")),
                &node.daemon.socket,
                &[
                    "--volume-backend",
                    "zfs",
                    "--zfs-pool",
                    &node.pool,
                    "--volume-plugin",
                    &plugin,
                    "--volume-follow",
                    "--host-name",
                    &format!("n{i}"),
                    "--cluster",
                    &url,
                    "--cluster-prefix",
                    &format!("/luastrip-sw{pid}/"),
                    "--peer-listen",
                    &peer,
                    "--peer-url",
                    &format!("http://{peer}"),
                    "--peer-token-file",
                    token.to_str().unwrap(),
                ],
                &[],
            );
            swarm.nodes.last_mut().unwrap().gateway = Some(gw);
        }
        // dockerd has loaded the plugin (the gateway's announcer, moby#23619) before the swarm
        // forms, so the nodes report it at once and swarm schedules on either.
        for n in &swarm.nodes {
            support::wait_until("dockerd knows the plugin", Duration::from_secs(10), || {
                run_ok(
                    n.daemon
                        .docker()
                        .args(["info", "--format", "{{json .Plugins.Volume}}"]),
                )
                .contains(&plugin)
            });
        }
        let d1 = &swarm.nodes[0].daemon;
        run_ok(
            d1.docker()
                .args(["swarm", "init", "--advertise-addr", &net(2)])
                .args(["--listen-addr", &format!("{}:2377", net(2))]),
        );
        // No IPVS here: no ingress network (services use --endpoint-mode dnsrr).
        let _ = output(
            d1.docker()
                .args(["network", "rm", "ingress"])
                .stdin(Stdio::null()),
        );
        let join = run_ok(d1.docker().args(["swarm", "join-token", "-q", "worker"]));
        run_ok(
            swarm.nodes[1]
                .daemon
                .docker()
                .args(["swarm", "join", "--advertise-addr", &net(3)])
                .args(["--listen-addr", &format!("{}:2377", net(3))])
                .args(["--token", join.trim()])
                .arg(format!("{}:2377", net(2))),
        );
        for (i, n) in swarm.nodes.iter().enumerate() {
            let id = run_ok(
                n.daemon
                    .docker()
                    .args(["info", "--format", "{{.Swarm.NodeID}}"]),
            );
            let label = format!("n={}", i + 1);
            run_ok(
                d1.docker()
                    .args(["node", "update", "--label-add", &label, id.trim()]),
            );
        }
        swarm
    }

    /// Node `i`: network namespace on the bridge at `me`, then (in a new mount namespace, where
    /// `/run/docker/plugins`, `/etc/docker`, `/run/containerd` and zfs-fuse's own directories
    /// are private) its zfs-fuse, its pool and its dockerd. The mount namespace starts as a
    /// private copy of this machine's, and drops its copies of this machine's zfs mounts at once.
    /// The node is in `self.nodes` (so Drop cleans it up) from the moment its namespace exists.
    fn start_node(&mut self, i: u32, me: &str, dir: &std::path::Path) {
        let pid = std::process::id();
        let ns = format!("lst{pid}s{i}");
        let link = format!("lsu{}s{i}", pid % 100_000);
        let _ = output(Command::new("ip").args(["netns", "del", &ns]));
        run_ok(Command::new("ip").args(["netns", "add", &ns]));
        let pool = format!("lst{pid}n{i}");
        let socket = dir.join("docker.sock");
        self.nodes.push(Node {
            daemon: Daemon {
                dir: dir.to_path_buf(),
                socket: socket.clone(),
                pid: 0,
            },
            gateway: None,
            dir: dir.to_path_buf(),
            netns: ns.clone(),
            pool: pool.clone(),
        });
        for args in [
            vec![
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
            vec!["link", "set", &link, "master", &self.bridge, "up"],
            vec!["-n", &ns, "addr", "add", &format!("{me}/24"), "dev", "eth0"],
            vec!["-n", &ns, "link", "set", "eth0", "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
        ] {
            run_ok(Command::new("ip").args(args));
        }
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.join("pool.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let script = format!(
            "set -e; hostname lst-node{i}
             for d in /run/docker/plugins /etc/docker /run/containerd /run/zfs /run/lock/zfs \
                      /var/lib/zfs; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
             findmnt -rn -t fuse,fuse.zfs -o SOURCE,TARGET | while read -r src target; do
                 case $src in lst*|*/*) umount -l \"$target\";; esac; done
             zfs-fuse --no-kstat-mount -p {d}/zfs-fuse.pid
             n=0; until zpool list >/dev/null 2>&1; do
                 n=$((n+1)); [ $n -lt 200 ] || exit 1; sleep 0.1; done
             zpool create -f -m {d}/mnt {pool} {image}
             exec dockerd --host unix://{sock} --data-root {d}/data --exec-root {d}/exec \
                 --pidfile {d}/pid --bridge=none --iptables=false --ip-masq=false \
                 >{d}/dockerd.log 2>&1",
            d = dir.display(),
            image = image.display(),
            sock = socket.display(),
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .args(["unshare", "--mount", "--propagation", "private", "--uts"])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.join("node.err")).unwrap());
        let node = self.nodes.last_mut().unwrap();
        node.daemon.pid = support::spawn_bound_to_process(cmd);
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            node.daemon.wait_ready(Duration::from_secs(60));
            node.daemon.import_busybox();
        })) {
            eprintln!(
                "node {i} did not start: {}\n{}",
                std::fs::read_to_string(dir.join("node.err")).unwrap_or_default(),
                std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
            std::panic::resume_unwind(e);
        }
    }

    fn daemon(&self, i: usize) -> &Daemon {
        &self.nodes[i].daemon
    }

    /// Create (through node 1's gateway, the manager) the service `name` running [`WRITER`] on
    /// the plugin's volume `volume`, with `extra` flags.
    fn writer_service(&self, name: &str, volume: &str, extra: &[&str]) {
        let mount = format!(
            "type=volume,source={volume},target=/data,volume-driver={},volume-nocopy=true",
            self.plugin
        );
        run_ok(
            self.nodes[0]
                .gw()
                .docker()
                .args(["service", "create", "--detach", "--no-resolve-image"])
                .args([
                    "--name",
                    name,
                    "--endpoint-mode",
                    "dnsrr",
                    "--mount",
                    &mount,
                ])
                .args(extra)
                .args([IMAGE, "sh", "-c", WRITER]),
        );
    }

    /// The running container of service `service` on node `i`, if any.
    fn task_on(&self, i: usize, service: &str) -> Option<String> {
        let label = format!("label=com.docker.swarm.service.name={service}");
        let out =
            run_ok(
                self.daemon(i)
                    .docker()
                    .args(["ps", "-q", "--no-trunc", "--filter", &label]),
            );
        out.split_whitespace().next().map(str::to_string)
    }
}

impl Drop for SwarmNodes {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = output(n.daemon.docker().args(["swarm", "leave", "--force"]));
            let ids = output(n.daemon.docker().args(["ps", "-aq"]));
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = output(n.daemon.docker().args(["rm", "-f", id]));
            }
        }
        for n in self.nodes.iter().rev().filter(|n| n.daemon.pid != 0) {
            n.daemon.stop();
        }
        for n in &mut self.nodes {
            n.gateway = None;
            if let Some(zpid) = n.zfs_pid() {
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(10) {
                    let destroyed = output(
                        Command::new("nsenter")
                            .args(["-t", &zpid.to_string(), "-m"])
                            .args(["zpool", "destroy", "-f", &n.pool]),
                    );
                    if destroyed.status.success() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                // SAFETY: plain kill(2) on the node's zfs-fuse. It takes seconds to exit; it is
                // gone before the test ends (or killed), with its namespace.
                unsafe { libc::kill(zpid as i32, libc::SIGTERM) };
                let t = Instant::now();
                while std::path::Path::new(&format!("/proc/{zpid}")).exists() {
                    if t.elapsed() > Duration::from_secs(30) {
                        // SAFETY: as above.
                        unsafe { libc::kill(zpid as i32, libc::SIGKILL) };
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = output(Command::new("ip").args(["netns", "del", &n.netns]));
        }
        let _ = output(Command::new("ip").args(["link", "del", &self.bridge]));
    }
}
/// Issue 22, item 1: a swarm service on a luastrip volume, moved to the other node by one
/// `docker service update --constraint-add …`: the volume goes with the task (step 1 while the
/// old task writes, the cut-over once swarm has stopped it), and the new task has every line.
#[test]
fn a_swarm_task_moved_to_another_node_takes_its_volume() {
    let _one = one_swarm_at_a_time();
    let nodes = SwarmNodes::new();
    let pid = std::process::id();
    let volume = format!("sw{pid}");
    // Through node 1's gateway (the manager).
    let gw = nodes.nodes[0].gw();
    nodes.writer_service(
        "db",
        &volume,
        &[
            "--stop-grace-period",
            "1s",
            "--constraint",
            "node.labels.n==1",
        ],
    );
    let mut first = None;
    support::wait_until("the task runs on node 1", Duration::from_secs(60), || {
        first = nodes.task_on(0, "db");
        first.is_some()
    });
    let first = first.unwrap();
    support::wait_until("it writes", Duration::from_secs(20), || {
        let lines = output(nodes.daemon(0).docker().args([
            "exec",
            &first,
            "sh",
            "-c",
            "cat /data/log 2>/dev/null | wc -l",
        ]));
        String::from_utf8_lossy(&lines.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
            > 10
    });
    run_ok(gw.docker().args([
        "service",
        "update",
        "--detach",
        "--constraint-rm",
        "node.labels.n==1",
        "--constraint-add",
        "node.labels.n==2",
        "db",
    ]));
    let t = Instant::now();
    let moved = loop {
        if let Some(c) = nodes.task_on(1, "db") {
            break c;
        }
        if t.elapsed() > Duration::from_secs(90) {
            let ps = output(gw.docker().args(["service", "ps", "--no-trunc", "db"]));
            let tail = |s: String| s.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!(
                "the task does not run on node 2 within 90 s:\n{}\nnode 1:\n{}\nnode 2:\n{}",
                String::from_utf8_lossy(&ps.stdout),
                tail(nodes.nodes[0].gw().log_text()),
                tail(nodes.nodes[1].gw().log_text())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let d2 = &nodes.daemon(1);
    run_ok(
        d2.docker()
            .args(["exec", &moved, "sha256sum", "-c", "/data/blob.sum"]),
    );
    // Every line the old task wrote, in order, and the new task goes on from the last.
    std::thread::sleep(Duration::from_millis(300));
    let log = run_ok(d2.docker().args(["exec", &moved, "cat", "/data/log"]));
    assert!(support::gap_free(&log).len() > 10, "{log}");
    let v = nodes.nodes[1].gw().volume(&volume);
    assert_eq!(
        (v["owner"].as_str(), v["epoch"].as_u64()),
        (Some("n2"), Some(2)),
        "{v}"
    );
    // The cut-over as swarm sees it: node 1's Unmount to node 2's Mount answered. Its time is
    // the benchmark's business (bench/RESULTS.md); here, the order of the calls.
    let (l1, l2) = (
        nodes.nodes[0].gw().log_text(),
        nodes.nodes[1].gw().log_text(),
    );
    let unmount = log_time(&l1, |l| l.contains("call=VolumeDriver.Unmount"))
        .last()
        .copied();
    let mounted = log_time(&l2, |l| {
        l.contains("call=VolumeDriver.Mount")
            && l.contains("plugin call answered")
            && l.contains("err=\"\"")
    })
    .last()
    .map(|&t| {
        if unmount.is_some_and(|u| t + 43_200.0 < u) {
            t + 86_400.0
        } else {
            t
        }
    });
    let (Some(unmount), Some(mounted)) = (unmount, mounted) else {
        panic!("node 1's Unmount and node 2's Mount in the logs:\n{l1}\n{l2}");
    };
    assert!(
        mounted > unmount,
        "node 2 mounted before node 1 let go: {unmount} {mounted}"
    );
    eprintln!(
        "cut-over: {:.0} ms from node 1's Unmount to node 2's Mount answered",
        (mounted - unmount) * 1000.0
    );
    // start-first would run the new task beside the old one: refused, naming stop-first.
    let refused = output(gw.docker().args([
        "service",
        "update",
        "--detach",
        "--update-order",
        "start-first",
        "db",
    ]));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("stop-first"),
        "{said}"
    );
    run_ok(gw.docker().args(["service", "rm", "db"]));
}

/// The times (seconds of the day) of the gateway log lines that `matches` picks.
fn log_time(log: &str, matches: impl Fn(&str) -> bool) -> Vec<f64> {
    log.lines()
        .filter(|l| matches(l))
        .filter_map(|l| {
            // 2026-12-06T22:52:54.142030Z
            let clock = l.get(11..26)?;
            let mut parts = clock.split(':');
            let h: f64 = parts.next()?.parse().ok()?;
            let m: f64 = parts.next()?.parse().ok()?;
            let s: f64 = parts.next()?.parse().ok()?;
            Some(h * 3600.0 + m * 60.0 + s)
        })
        .collect()
}

/// A global service on one luastrip volume (a task on each node, as a user might ask for a
/// database): both nodes create the volume at once, one of them gets it, and the other's task is
/// refused with a message naming the running container that has it. The volume is never taken
/// from under that container, which writes on (REX-Ray's forced takeover, MongoDB's double
/// mount).
#[test]
fn a_global_service_never_takes_a_running_tasks_volume() {
    let _one = one_swarm_at_a_time();
    let nodes = SwarmNodes::new();
    let volume = format!("gl{}", std::process::id());
    let gw = nodes.nodes[0].gw();
    nodes.writer_service("dbg", &volume, &["--mode", "global"]);
    // The task's log as it is now (empty until it writes).
    let log_of = |i: usize, task: &str| -> String {
        let out = output(
            nodes
                .daemon(i)
                .docker()
                .args(["exec", task, "cat", "/data/log"]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut winner = None;
    support::wait_until("one node's task writes", Duration::from_secs(60), || {
        winner = (0..2).find_map(|i| {
            let task = nodes.task_on(i, "dbg")?;
            (log_of(i, &task).lines().count() > 10).then_some((i, task))
        });
        winner.is_some()
    });
    let (w, task) = winner.unwrap();
    let loser = 1 - w;
    // The other node's task is refused (after Mount's wait, 25 s), naming the host and the task.
    let mut errors = String::new();
    support::wait_until(
        "the other node's task is refused, naming the running one",
        Duration::from_secs(90),
        || {
            errors = run_ok(gw.docker().args([
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{.Node}} {{.CurrentState}} {{.Error}}",
                "dbg",
            ]));
            errors.contains(&format!("in use on host n{}", w + 1))
        },
    );
    let name = run_ok(
        nodes
            .daemon(w)
            .docker()
            .args(["inspect", "-f", "{{.Name}}", &task]),
    );
    assert!(
        errors.contains(name.trim().trim_start_matches('/')),
        "{errors}"
    );
    assert_eq!(nodes.task_on(loser, "dbg"), None, "{errors}");
    // The winner never lost it: the same task, still writing, every line in order.
    assert_eq!(nodes.task_on(w, "dbg").as_deref(), Some(task.as_str()));
    let before = log_of(w, &task).lines().count();
    support::wait_until("it writes on", Duration::from_secs(10), || {
        log_of(w, &task).lines().count() > before
    });
    support::gap_free(&log_of(w, &task));
    let v = nodes.nodes[w].gw().volume(&volume);
    assert_eq!(
        v["owner"].as_str(),
        Some(format!("n{}", w + 1).as_str()),
        "{v}"
    );
    run_ok(gw.docker().args(["service", "rm", "dbg"]));
}

/// Issue 22, item 4: `examples/demo/run.sh` as a reader runs it (with this suite's binary and
/// names of its own): compose moves db from host a to host b with its data and its address, a
/// client on a reads it over VXLAN, and swarm moves it back to a as a service on the same
/// volume. The script checks each of these itself and exits non-zero on the first that fails;
/// here, its output says each was reached, and nothing of it is left behind.
#[test]
fn the_demo_moves_a_database_stack_with_compose_and_swarm() {
    let _one = one_swarm_at_a_time();
    support::require_root();
    support::require_tool("docker-compose", "docker-compose");
    let pid = std::process::id();
    let demo = format!("lst{}d", pid % 100_000);
    let net = format!("198.18.{}", (pid + 210) % 250);
    let out = support::output_within(
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo/run.sh"))
            .env("BIN", env!("CARGO_BIN_EXE_luastrip"))
            .env("DEMO", &demo)
            .env("NET", &net)
            .env("VNI", (5000 + pid % 1000).to_string())
            .env("DOCKER_CONFIG", support::temp_dir("demo-docker-config"))
            .stdin(Stdio::null()),
        Duration::from_secs(300),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    for said in [
        "push on a: demo_data → b: step 1 copied",
        "the same data and the same address on b",
        "cut-over: ",
        "the same data on a, moved by swarm",
        "demo done in",
    ] {
        assert!(stdout.contains(said), "no '{said}' in:\n{stdout}\n{stderr}");
    }
    eprintln!("{stdout}");
    let netns = run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(!netns.contains(&demo), "namespaces left: {netns}");
    let links = run_ok(Command::new("ip").args(["-o", "link"]));
    assert!(!links.contains(&demo), "links left: {links}");
}
