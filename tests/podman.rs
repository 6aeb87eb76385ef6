//! Podman as the daemon: `podman system service` speaks the Docker API, and luastrip in front of
//! it works as in front of dockerd — the docker CLI, hijacked sessions, builds, and the scripts'
//! hooks. What Podman lacks (Docker's plugin API, which luastrip's helpers use for their plugin
//! face) fails with Podman's own error. See the README's "Podman as the daemon".

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{output, run_ok, run_with_stdin, Daemon, Gateway};

/// A private `podman system service`: its own storage (vfs: no mounts left behind), run
/// directory and socket, runc, no default network (nothing touches the host's networking).
struct Podman {
    dir: PathBuf,
    socket: PathBuf,
    child: Child,
}

impl Podman {
    fn command(dir: &std::path::Path) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", dir.join("containers.conf"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
        c
    }

    fn start() -> Podman {
        support::require_root();
        support::require_tool("podman", "podman");
        let dir = support::temp_dir("podman");
        // What these machines need: runc (crun is not installed), no default ulimits (the
        // sandbox refuses raising them), and no network unless asked for.
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\nnetns = \"none\"\n[engine]\nruntime = \"runc\"\n\
             events_logger = \"file\"\n",
        )
        .unwrap();
        let socket = dir.join("podman.sock");
        let child = Podman::command(&dir)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("service.log")).unwrap())
            .spawn()
            .expect("start podman system service");
        let p = Podman { dir, socket, child };
        support::wait_until("podman answers /_ping", Duration::from_secs(30), || {
            support::try_raw(&p.socket, b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
                .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
        });
        p
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = output(Podman::command(&self.dir).args(["rm", "-af", "-t", "0"]));
        let _ = self.child.kill();
        let _ = self.child.wait();
        // conmon keeps an exec session's monitor for 5 minutes after it ends (--exit-delay):
        // end every process that still works in this Podman's directories.
        let ours = self.dir.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&ours) {
                // SAFETY: plain kill(2) of a process this test's Podman started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Every container without a network: Podman's default ("bridge" for the docker CLI's
/// "default") would have netavark add firewall rules to the host.
const NONE: &str = "--network=none";

#[test]
fn the_docker_cli_works_through_luastrip_in_front_of_podman() {
    let podman = Podman::start();
    // The busybox root file system the dockerd tests import, imported into Podman.
    let rootfs = Daemon::shared().dir.join("rootfs.tar");
    let scripts = support::temp_dir("podman-scripts");
    for s in ["label-inject.lua", "deny-privileged.lua"] {
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scripts/").to_string() + s,
            scripts.join(s),
        )
        .unwrap();
    }
    let gw = Gateway::start_with(&podman.socket, &["--scripts", scripts.to_str().unwrap()]);
    let docker = || gw.docker();
    let version = run_ok(docker().args(["version", "--format", "{{json .Server.Components}}"]));
    assert!(version.contains("Podman Engine"), "{version}");
    let image = "luastrip-test/podman-bb:latest";
    run_ok(
        docker()
            .args(["import", "-c", "ENV PATH=/bin", "-c", "CMD [\"sh\"]"])
            .arg(&rootfs)
            .arg(image),
    );
    // Run, and a hijacked session with stdin.
    assert_eq!(
        run_ok(docker().args(["run", "--rm", NONE, image, "echo", "hello from podman"])),
        "hello from podman\n"
    );
    let out = run_with_stdin(
        docker().args([
            "run",
            "--rm",
            NONE,
            "-i",
            image,
            "sh",
            "-c",
            "read x; echo got $x",
        ]),
        b"stdin\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got stdin\n");
    // The scripts' hooks: a label on every create, privileged containers refused.
    let id = run_ok(docker().args(["create", NONE, image, "true"]));
    let labels = run_ok(docker().args(["inspect", "-f", "{{json .Config.Labels}}", id.trim()]));
    assert!(labels.contains("\"managed-by\":\"luastrip\""), "{labels}");
    let out = output(docker().args(["run", "--rm", NONE, "--privileged", image, "true"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("privileged containers are not allowed"),
        "{out:?}"
    );
    // exec -i, logs -f.
    let long = run_ok(docker().args([
        "run",
        "-d",
        NONE,
        image,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.2; done; sleep 30",
    ]));
    let long = long.trim();
    let out = run_with_stdin(
        docker().args(["exec", "-i", long, "cat"]),
        b"through exec\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through exec\n",
        "{out:?}"
    );
    support::wait_until("three lines logged", Duration::from_secs(10), || {
        run_ok(docker().args(["logs", long])).contains("line3")
    });
    // A build (Podman's classic builder) on top of the imported image.
    let ctx = support::temp_dir("podman-build");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {image}\nRUN echo built > /built\n"),
    )
    .unwrap();
    let built = "luastrip-test/podman-built:latest";
    run_ok(
        docker()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", NONE, "-t", built])
            .arg(&ctx),
    );
    assert_eq!(
        run_ok(docker().args(["run", "--rm", NONE, built, "cat", "/built"])),
        "built\n"
    );
    run_ok(docker().args(["rm", "-f", long, id.trim()]));
    // What Podman does not have: Docker's plugin API, which luastrip's helpers serve their
    // plugin face on (volume and network drivers). Podman says so; luastrip passes it on.
    let out = output(docker().args(["volume", "create", "-d", "luastrip-no-such-plugin", "v"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plugin"),
        "{out:?}"
    );
    let out = output(docker().args(["plugin", "ls"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported"),
        "{out:?}"
    );
}
