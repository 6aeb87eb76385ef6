//! Test harness shared by the integration tests: a private, real dockerd, a busybox image made
//! from `busybox-static`, and the real `luastrip` binary started in front of it.
//!
//! Nothing here is mocked. A missing tool or missing root is a test failure that prints the
//! command that installs it; tests are never skipped.
//!
//! Each test process gets its own daemon under `/tmp/luastrip-test-<pid>/` (socket, data root,
//! exec root, pidfile), so parallel or leftover runs never share state. The daemon is started by
//! a thread that lives as long as the process, with `PR_SET_PDEATHSIG`, so it receives SIGTERM
//! when the test process exits, however it exits. Directories of earlier runs whose process is
//! gone are removed at start.
#![allow(dead_code)]

pub mod etcd;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The image every test uses: busybox-static imported as a rootfs.
pub const IMAGE: &str = "luastrip-test/busybox:latest";

/// Fail (never skip) when a tool is missing, naming the install command.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is missing. Install it with: apt-get install -y {package}   \
         (or run the README's test command, which installs everything)"
    );
}

/// Fail unless running as root (dockerd, namespaces and ZFS need it).
pub fn require_root() {
    assert!(
        nix_is_root(),
        "these tests start a private dockerd and must run as root: bash tools/test.sh, as root"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A per-process scratch directory.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        clean_old_runs();
        let d = PathBuf::from(format!("/tmp/luastrip-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// A fresh directory under the run directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = run_dir().join(format!("{name}-{n}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn clean_old_runs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("luastrip-test-") else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // A leftover daemon of a dead run: stop it before removing its files.
        if let Ok(dpid) = std::fs::read_to_string(e.path().join("dockerd/pid")) {
            if let Ok(dpid) = dpid.trim().parse::<i32>() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(dpid, libc::SIGTERM) };
            }
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l; rm -rf {0}",
                e.path().display()
            ))
            .status();
    }
}

/// A private dockerd.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub pid: u32,
}

impl Daemon {
    /// The daemon shared by every test of this process, with [`IMAGE`] loaded. If setting it up
    /// fails, every test that needs it fails at once with the same message (no retries).
    pub fn shared() -> &'static Daemon {
        static D: OnceLock<Result<Daemon, String>> = OnceLock::new();
        let d = D.get_or_init(|| {
            std::panic::catch_unwind(|| {
                let d = Daemon::start(&run_dir().join("dockerd"));
                d.import_busybox();
                d
            })
            .map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            })
        });
        match d {
            Ok(d) => d,
            Err(msg) => panic!("the shared test daemon could not be set up: {msg}"),
        }
    }

    /// Start a dockerd with everything under `dir`, and wait until it answers.
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_in(dir, None, &[])
    }

    /// The same with more dockerd flags (say, a TLS TCP listener besides its socket).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_in(dir, None, extra)
    }

    /// The same, inside the network namespace `netns` if given (a second "host"), with
    /// [`IMAGE`] loaded.
    pub fn start_in_netns(dir: &Path, netns: &str) -> Daemon {
        let d = Daemon::start_in(dir, Some(netns), &[]);
        d.import_busybox();
        d
    }

    fn start_in(dir: &Path, netns: Option<&str>, extra: &[&str]) -> Daemon {
        require_root();
        require_tool("dockerd", "docker.io");
        require_tool("docker", "docker.io");
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("docker.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = in_netns(netns, "dockerd");
        cmd.arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            // `--bridge=none` on every test daemon: another value would delete the machine's
            // docker0 (DESIGN §6).
            .arg("--bridge=none")
            .arg("--iptables=false")
            .arg("--ip-masq=false")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("dockerd.err")).unwrap());
        let pid = spawn_bound_to_process(cmd);
        let d = Daemon {
            dir: dir.to_path_buf(),
            socket,
            pid,
        };
        d.wait_ready(Duration::from_secs(60));
        d
    }

    /// `unix://` address of the daemon socket.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Wait until `GET /_ping` answers OK.
    pub fn wait_ready(&self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            let ping = try_raw(&self.socket, b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n");
            if ping.is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join("dockerd.err")).unwrap_or_default();
        panic!(
            "dockerd at {} did not become ready within {limit:?}; its log ends:\n{}",
            self.socket.display(),
            tail(&log, 30)
        );
    }

    /// A docker CLI talking to the daemon directly.
    pub fn docker(&self) -> Command {
        docker_cli(&self.host())
    }

    pub fn import_busybox(&self) {
        require_tool("busybox", "busybox-static");
        let busybox = which("busybox");
        assert!(
            !elf_has_interpreter(&std::fs::read(&busybox).unwrap()),
            "{} is dynamically linked and cannot run in an empty image. \
             Install the static one with: apt-get install -y busybox-static",
            busybox.display()
        );
        let out = Command::new(&busybox).arg("--list").output().unwrap();
        assert!(out.status.success(), "busybox --list failed");
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(&busybox, bin.join("busybox")).unwrap();
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            // The list names busybox itself; linking it would overwrite the binary.
            if applet.is_empty() || applet == "busybox" {
                continue;
            }
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
        for d in ["tmp", "etc", "root", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let tar = self.dir.join("rootfs.tar");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        run_ok(
            self.docker()
                .args(["import", "-c", "ENV PATH=/bin", "-c", "CMD [\"sh\"]"])
                .arg(&tar)
                .arg(IMAGE),
        );
    }

    /// Stop the daemon with SIGTERM and wait for it to exit.
    pub fn stop(&self) {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let t = Instant::now();
        while Path::new(&format!("/proc/{}", self.pid)).exists()
            && t.elapsed() < Duration::from_secs(30)
        {
            // Reap if it is our child; harmless otherwise.
            let mut status = 0;
            // SAFETY: waitpid on a pid we started.
            unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Spawn `cmd` so that it gets SIGTERM when this test process exits. PR_SET_PDEATHSIG fires when
/// the spawning *thread* exits, so the spawn happens on a thread that never ends.
pub fn spawn_bound_to_process(mut cmd: Command) -> u32 {
    use std::sync::mpsc;
    static SPAWNER: OnceLock<mpsc::Sender<(Command, mpsc::Sender<u32>)>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<u32>)>();
        std::thread::spawn(move || {
            let mut children: Vec<Child> = Vec::new();
            for (mut cmd, reply) in rx {
                // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                        Ok(())
                    });
                }
                let child = cmd.spawn().expect("spawn a background process");
                let _ = reply.send(child.id());
                children.push(child);
            }
            // Keep this thread (the children's parent thread) alive for the whole process.
            loop {
                std::thread::park();
            }
        });
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    // Commands are not Sync; move it across.
    tx.send((std::mem::replace(&mut cmd, Command::new("true")), reply_tx))
        .unwrap();
    reply_rx.recv().expect("background spawner died")
}

/// `program`, run inside the network namespace `netns` (made by `ip netns add`) if given.
/// `nsenter` switches only the network namespace and execs the program, which keeps the pid
/// (`ip netns exec` would also remount /sys, hiding the cgroup mounts dockerd needs).
pub fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            require_tool("nsenter", "util-linux");
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
    }
}

/// A docker CLI for `host`, with its own empty config directory.
pub fn docker_cli(host: &str) -> Command {
    let cfg = run_dir().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", host)
        .env("DOCKER_CONFIG", cfg)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CLI_HINTS", "false");
    c
}

/// The luastrip binary running in front of a daemon.
pub struct Gateway {
    pub socket: PathBuf,
    pub child: Child,
    pub log: PathBuf,
}

impl Gateway {
    /// Start `luastrip serve` in front of `upstream` (a socket path) with extra arguments.
    pub fn start_with(upstream: &Path, extra: &[&str]) -> Gateway {
        Gateway::start_in(None, upstream, extra)
    }

    /// The same, inside the network namespace `netns` if given.
    pub fn start_in(netns: Option<&str>, upstream: &Path, extra: &[&str]) -> Gateway {
        Gateway::start_in_env(netns, upstream, extra, &[])
    }

    /// The same, with `env` set for the gateway (`LUASTRIP_FAILPOINTS`, …).
    pub fn start_in_env(
        netns: Option<&str>,
        upstream: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_by(
            in_netns(netns, env!("CARGO_BIN_EXE_luastrip")),
            upstream,
            extra,
            env,
        )
    }

    /// The same, `luastrip` being what `launcher` runs (the binary, or `nsenter … luastrip` to
    /// start it in other namespaces).
    pub fn start_by(
        mut launcher: Command,
        upstream: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = temp_dir("gateway");
        let socket = dir.join("luastrip.sock");
        let log = dir.join("luastrip.log");
        let child = launcher
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .arg("--upstream")
            .arg(format!("unix://{}", upstream.display()))
            .args(extra)
            .env("LUASTRIP_LOG", "info,luastrip=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start luastrip");
        let g = Gateway { socket, child, log };
        g.wait_ready();
        g
    }

    /// Start `luastrip serve` in front of the shared daemon with `script` (written to a file of
    /// its own) and extra arguments.
    pub fn with_script(script: &str, extra: &[&str]) -> Gateway {
        Gateway::with_script_env(script, extra, &[])
    }

    /// The same, with `env` set for the gateway.
    pub fn with_script_env(script: &str, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        Gateway::with_script_in(None, &Daemon::shared().socket, script, extra, env)
    }

    /// The same in front of `upstream`, inside the network namespace `netns` if given.
    pub fn with_script_in(
        netns: Option<&str>,
        upstream: &Path,
        script: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let path = temp_dir("script").join("s.lua");
        std::fs::write(&path, script).unwrap();
        let path = path.to_str().unwrap().to_string();
        let mut args = vec!["--scripts", path.as_str()];
        args.extend_from_slice(extra);
        Gateway::start_in_env(netns, upstream, &args, env)
    }

    /// Start `luastrip serve` in front of the shared daemon.
    pub fn start() -> Gateway {
        Gateway::start_with(&Daemon::shared().socket, &[])
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.socket.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "luastrip did not create its socket; log:\n{}",
            self.log_text()
        );
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A docker CLI talking through the gateway.
    pub fn docker(&self) -> Command {
        docker_cli(&self.host())
    }

    /// The gateway's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.socket.with_extension("ctl")
    }

    /// One call to the control socket: (status line, JSON body).
    pub fn control(&self, method: &str, path: &str, body: &str) -> (String, serde_json::Value) {
        let out = raw(
            &self.control_socket(),
            format!(
                "{method} {path} HTTP/1.1\r\nHost: ctl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null),
        )
    }

    /// One value of the control socket's `/metrics` (a gauge or counter without labels).
    pub fn metric(&self, name: &str) -> Option<f64> {
        raw(
            &self.control_socket(),
            b"GET /metrics HTTP/1.1\r\nHost: ctl\r\nConnection: close\r\n\r\n",
        )
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
    }

    /// The volume helper's view of volume `name` (`GET /luastrip/volumes/NAME`: its owner,
    /// epoch, copy here …).
    pub fn volume(&self, name: &str) -> serde_json::Value {
        json_body(&raw(
            &self.socket,
            &http_request("GET", &format!("/luastrip/volumes/{name}"), "", b""),
        ))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send SIGTERM and wait for exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("luastrip did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Through `gw`: `docker run -i` echoes stdin, and `docker logs -f` shows a running container's
/// first line while it runs — what a hook or adapter on every call must not break.
pub fn assert_interactive_and_follow_work(gw: &Gateway) {
    let out = run_with_stdin(
        gw.docker().args(["run", "--rm", "-i", IMAGE, "cat"]),
        b"stdin through\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "stdin through\n",
        "run -i"
    );
    let c = run_ok(
        gw.docker()
            .args(["run", "-d", IMAGE, "sh", "-c", "echo first; sleep 600"]),
    )
    .trim()
    .to_string();
    let out = run_with_stdin(
        gw.docker().args(["exec", "-i", &c, "cat"]),
        b"exec through\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exec through\n",
        "exec -i"
    );
    let mut child = gw
        .docker()
        .args(["logs", "-f", &c])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let _ = output(gw.docker().args(["rm", "-f", &c]));
    assert_eq!(&first, b"first\n", "logs -f");
}

/// Wait up to 20 s for `path` to appear (a listen socket appears only when ready).
pub fn wait_for_path(path: &Path) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Run a command, assert success, return stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How long one command a test runs may take. Longer is a hang (a stuck `zfs`, a daemon that
/// stopped answering): the command is killed and the test fails with what the machine was doing,
/// rather than the suite running into CI's limit with nothing said.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(240);

/// Run a command with no stdin and capture its output, within [`COMMAND_DEADLINE`].
pub fn output(cmd: &mut Command) -> Output {
    output_within(cmd, COMMAND_DEADLINE)
}

/// [`output`] with its own deadline.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    try_output_within(cmd, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// [`output_within`], with a hang as an error rather than a panic (for clean-up in `drop`).
pub fn try_output_within(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    bounded(cmd.stdin(Stdio::null()), None, limit)
}

/// Run a command feeding `input` on stdin; return its output (within [`COMMAND_DEADLINE`]).
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    bounded(cmd.stdin(Stdio::piped()), Some(input), COMMAND_DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Spawn `cmd` in its own process group with stdout and stderr captured, feed it `input`, and
/// wait up to `limit` for it to exit and for its output to end. Past the limit the whole group is
/// killed and the error names the command, what it printed so far, and the machine's stuck
/// processes. Output still open after the command exited means it left a process behind holding
/// it: that is an error too.
fn bounded(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Result<Output, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let taken = |o: &Drained| std::mem::take(&mut *o.1.lock().unwrap());
    let group = format!("-{}", child.id());
    let give_up = |why: String| {
        let stuck = stuck_processes();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        Err(format!(
            "{cmd:?} {why}\nstdout so far: {}\nstderr so far: {}\n{stuck}",
            String::from_utf8_lossy(&taken(&stdout)),
            String::from_utf8_lossy(&taken(&stderr)),
        ))
    };
    // Waited for on a thread of its own, so that its exit is seen at once.
    let (exited, status) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let status = match status.recv_timeout(limit.saturating_sub(started.elapsed())) {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}")),
        Err(_) => return give_up(format!("did not finish in {limit:?}")),
    };
    // The command is gone; its output ends at once unless something it started still holds it.
    for (done, _) in [&stdout, &stderr] {
        if done.recv_timeout(Duration::from_secs(20)).is_err() {
            return give_up(format!(
                "exited ({status}) but left a process holding its output open"
            ));
        }
    }
    Ok(Output {
        status,
        stdout: taken(&stdout),
        stderr: taken(&stderr),
    })
}

/// What a reader thread has read so far, and a channel that says when it reached the end.
type Drained = (
    std::sync::mpsc::Receiver<()>,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
);

/// Read `r` to its end on a thread of its own.
fn drain(r: Option<impl Read + Send + 'static>) -> Drained {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        if let Some(mut r) = r {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = r.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
        let _ = tx.send(());
    });
    (rx, out)
}

/// The processes worth seeing when a command hangs: those in uninterruptible sleep, and the
/// daemons and tools these tests drive, with where in the kernel each waits.
pub fn stuck_processes() -> String {
    let ps = Command::new("ps")
        .args(["-eo", "pid,ppid,stat,wchan:24,etimes,args", "--sort", "pid"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("ps: {e}"));
    let mut lines = ps.lines();
    let head = lines.next().unwrap_or("");
    let wanted = [
        "zfs",
        "zpool",
        "docker",
        "containerd",
        "luastrip",
        "runc",
        "ip ",
        "bash",
    ];
    let picked: Vec<&str> = lines
        .filter(|l| {
            let stat = l.split_whitespace().nth(2).unwrap_or("");
            stat.starts_with('D') || wanted.iter().any(|w| l.contains(w))
        })
        .collect();
    format!(
        "processes (D = uninterruptible):\n{head}\n{}",
        picked.join("\n")
    )
}

// ---- one raw-HTTP client ----------------------------------------------------------------------

/// A request as bytes: `Host`, `Content-Length` and `Connection: close` added; `headers` are extra
/// `Name: value\r\n` lines.
pub fn http_request(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nHost: docker\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A query string from pairs (form-encoded as Docker clients send it).
pub fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                            (b as char).to_string()
                        }
                        b => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A connection to `socket` with a 20 s read timeout, for reading a stream or a tunnel by hand.
pub fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Read a response head (up to the blank line) byte by byte, leaving the rest unread.
pub fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).expect("read head");
        assert!(
            n == 1,
            "connection closed inside the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Read one response: its head, then a `Content-Length` body, or a chunked body up to its last
/// chunk, or everything until the peer closes (or the read times out) — always the latter for a
/// hijacked connection (`101`, or Docker's raw / multiplexed stream types).
fn read_response(s: &mut impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let chunked =
                header_value(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
            // A hijacked connection (101, or Docker's raw stream) is read until the peer closes.
            let tunnel = head.starts_with("http/1.1 101")
                || header_value(&head, "content-type")
                    .is_some_and(|v| v.starts_with("application/vnd.docker"));
            match header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
                _ if tunnel => {}
                Some(len) if buf.len() >= end + 4 + len => return buf,
                None if chunked && buf.ends_with(b"0\r\n\r\n") => return buf,
                _ => {}
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// Send raw bytes as one request on a fresh connection and read the response (see
/// [`read_response`]) as text. The peer may answer (413, a denial) and close before reading all
/// of a large body.
pub fn try_raw(socket: &Path, request: &[u8]) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let _ = s.write_all(request);
    Ok(String::from_utf8_lossy(&read_response(&mut s)).into_owned())
}

/// POST `body` as JSON on a fresh connection; the response as text.
pub fn post_json(socket: &Path, path: &str, body: &str) -> String {
    raw(
        socket,
        &http_request(
            "POST",
            path,
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        ),
    )
}

/// [`try_raw`], for a socket that must answer.
pub fn raw(socket: &Path, request: &[u8]) -> String {
    try_raw(socket, request).unwrap_or_else(|e| panic!("{}: {e}", socket.display()))
}

/// The status code of a response read by [`raw`] (`""` when there is none).
pub fn status(resp: &str) -> &str {
    resp.get(9..12).unwrap_or("")
}

/// The JSON body of a response read by [`raw`].
pub fn json_body(resp: &str) -> serde_json::Value {
    let body = &resp[resp.find("\r\n\r\n").expect("a head") + 4..];
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {resp}"))
}

// ---- one test server ---------------------------------------------------------------------------

/// A request a test server received.
pub struct Served {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub head: String,
    pub body: Vec<u8>,
}

/// What a test server answers: status line text (`200 OK`), Content-Type and body.
pub type Answer = (String, String, Vec<u8>);

/// A JSON answer with status `200 OK`.
pub fn json_answer(v: &serde_json::Value) -> Answer {
    (
        "200 OK".into(),
        "application/json".into(),
        v.to_string().into_bytes(),
    )
}

/// Read one request (head and `Content-Length` body) from `s`; `None` at end of stream.
pub fn read_request(s: &mut impl Read) -> Option<Served> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = header_value(&head.to_ascii_lowercase(), "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let mut first = head.lines().next().unwrap_or("").split(' ');
            return Some(Served {
                method: first.next().unwrap_or("").to_string(),
                target: first.next().unwrap_or("").to_string(),
                body: buf[end + 4..(end + 4 + len).min(buf.len())].to_vec(),
                head,
            });
        }
    }
}

/// A listener a test server accepts on: loopback TCP or a Unix socket.
pub trait Accept: Send + 'static {
    type Stream: Read + Write + Send + 'static;
    fn next(&self) -> Option<Self::Stream>;
}

impl Accept for std::net::TcpListener {
    type Stream = std::net::TcpStream;
    fn next(&self) -> Option<Self::Stream> {
        self.accept().ok().map(|(s, _)| s)
    }
}

impl Accept for std::os::unix::net::UnixListener {
    type Stream = UnixStream;
    fn next(&self) -> Option<Self::Stream> {
        self.accept().ok().map(|(s, _)| s)
    }
}

/// A small HTTP/1.1 server for tests (adapters, stand-in upstreams, services scripts call): a
/// thread per connection, keep-alive, every request answered by `handler`. It runs until the
/// test process ends.
pub fn serve_http<L: Accept>(
    listener: L,
    handler: impl Fn(&Served) -> Answer + Send + Sync + 'static,
) {
    let handler = std::sync::Arc::new(handler);
    std::thread::spawn(move || {
        while let Some(mut s) = listener.next() {
            let handler = handler.clone();
            std::thread::spawn(move || {
                while let Some(req) = read_request(&mut s) {
                    let (status, ctype, body) = handler(&req);
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let sent = s
                        .write_all(head.as_bytes())
                        .and_then(|()| s.write_all(&body));
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Poll `cond` every 50 ms; fail naming `what` if it is not true within `limit`.
/// The numbered lines of a writer's log (`1`, `2`, … one per line), asserted to be every number
/// from 1 on, in order: nothing lost, nothing written twice.
pub fn gap_free(log: &str) -> Vec<u32> {
    let lines: Vec<u32> = log
        .lines()
        .map(|l| {
            l.parse()
                .unwrap_or_else(|_| panic!("a log line that is not a number: {l:?}"))
        })
        .collect();
    assert!(
        lines.iter().enumerate().all(|(n, l)| *l == n as u32 + 1),
        "a gap-free log: {log}"
    );
    lines
}

pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Random bytes (from /dev/urandom).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

/// Hex SHA-256 of a file, by `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

fn which(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}

/// Whether an ELF executable names a program interpreter (PT_INTERP), i.e. is dynamically linked.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return true; // not a 64-bit ELF: certainly not the static busybox we need
    }
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let o = phoff + i * size;
        o + 4 <= elf.len() && u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A private ZFS pool on a sparse file, from zfs-fuse (started here if it is not running),
/// mounted under the run directory. Destroyed on drop; pools left by dead runs are destroyed
/// when the next one is made.
pub struct Pool {
    pub name: String,
    file: PathBuf,
}

impl Pool {
    pub fn new(size_mb: u64) -> Pool {
        require_root();
        require_tool("zfs", "zfs-fuse");
        require_tool("zpool", "zfs-fuse");
        require_tool("zfs-fuse", "zfs-fuse");
        ensure_zfs_fuse();
        destroy_dead_pools();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("lst{}n{n}", std::process::id());
        let dir = temp_dir("pool");
        let file = dir.join("pool.img");
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(size_mb << 20).unwrap();
        let mnt = dir.join("mnt");
        run_ok(Command::new("zpool").args([
            "create",
            "-m",
            mnt.to_str().unwrap(),
            &name,
            file.to_str().unwrap(),
        ]));
        Pool { name, file }
    }

    /// `zfs ARGS…`, which must succeed; its stdout.
    pub fn zfs(&self, args: &[&str]) -> String {
        run_ok(Command::new("zfs").args(args))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A mount released a moment ago (a container just removed) can keep it busy briefly.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let destroyed = try_output_within(
                Command::new("zpool").args(["destroy", "-f", &self.name]),
                Duration::from_secs(60),
            )
            .is_ok_and(|o| o.status.success());
            if destroyed {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Start the zfs-fuse daemon unless `zpool list` already answers. A pid file left by a dead
/// daemon makes zfs-fuse exit 1 without a word, so it is removed first; and another starter (the
/// example scripts, run by a test beside these) may win the race, so success is `zpool list`
/// answering, not our start's exit status.
pub fn ensure_zfs_fuse() {
    static STARTED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    // Bounded: a wedged zfs-fuse (it has deadlocked under load before) is a failure that shows
    // the stuck processes, not a hang.
    let answers = || {
        try_output_within(
            Command::new("zpool").args(["list", "-H"]),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("zfs-fuse does not answer: {e}"))
        .status
        .success()
    };
    if answers() {
        return;
    }
    let pid_file = Path::new("/run/zfs-fuse.pid");
    let running = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).ok())
        .is_some_and(|comm| comm.trim() == "zfs-fuse");
    if !running {
        let _ = std::fs::remove_file(pid_file);
        let status = Command::new("zfs-fuse")
            .args(["--no-kstat-mount", "-p"])
            .arg(pid_file)
            .status()
            .expect("start zfs-fuse (apt-get install -y zfs-fuse)");
        if !status.success() {
            eprintln!("zfs-fuse exited with {status}; waiting in case another start won");
        }
    }
    wait_until(
        "zfs-fuse answers `zpool list`",
        Duration::from_secs(20),
        answers,
    );
}

/// Pools of test runs whose process is gone.
fn destroy_dead_pools() {
    let out = output(Command::new("zpool").args(["list", "-H", "-o", "name"]));
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = name.strip_prefix("lst") else {
            continue;
        };
        let Some(pid) = rest.split('n').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = try_output_within(
                Command::new("zpool").args(["destroy", "-f", name]),
                Duration::from_secs(60),
            );
        }
    }
}

/// Removes a file when dropped (a plugin socket a killed gateway leaves behind).
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Plugin sockets (`/run/docker/plugins/lst<pid>*.sock`) of test runs whose process is gone.
pub fn remove_dead_plugin_sockets() {
    let Ok(entries) = std::fs::read_dir("/run/docker/plugins") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("lst")
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A test CA in `dir` (`ca.pem`, `ca-key.pem`), made with openssl, valid for two days.
pub fn make_ca(dir: &Path) {
    require_tool("openssl", "openssl");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca-key.pem",
            ])
            .args([
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=luastrip test CA",
            ])
            .current_dir(dir),
    );
}

/// A certificate for `cn` that the CA in `dir` ([`make_ca`]) signs, as `key` and `cert` in
/// `dir`, with openssl's extension lines `ext` (subjectAltName, extendedKeyUsage).
pub fn make_cert(dir: &Path, cn: &str, key: &str, cert: &str, ext: &str) {
    let ext_file = format!("{cert}.ext");
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", "req.csr",
            ])
            .args(["-subj", &format!("/CN={cn}")])
            .current_dir(dir),
    );
    run_ok(
        Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-in",
                "req.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
            ])
            .args([
                "-CAcreateserial",
                "-out",
                cert,
                "-days",
                "2",
                "-extfile",
                &ext_file,
            ])
            .current_dir(dir),
    );
}

/// A tmux session on a real pseudo-terminal, for the REPL and the console.
pub struct Tmux {
    server: String,
}

impl Tmux {
    /// Run `cmd` on a `size` (columns, rows) terminal; wait until `ready` is on screen.
    pub fn run(cmd: &str, size: (u16, u16), ready: &str) -> Tmux {
        require_tool("tmux", "tmux");
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let server = format!("luastrip-test-{}-{n}", std::process::id());
        let ok = Command::new("tmux")
            .args(["-L", &server, "new-session", "-d", "-s", "t", "-x"])
            .arg(size.0.to_string())
            .arg("-y")
            .arg(size.1.to_string())
            .arg(cmd)
            .status()
            .unwrap();
        assert!(ok.success());
        let t = Tmux { server };
        t.wait_for(ready);
        t
    }

    /// Keys as tmux's send-keys takes them (`Enter`, `C-c`, text).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["-L", &self.server, "send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    /// Change the terminal's size.
    pub fn resize(&self, cols: u16, rows: u16) {
        let (c, r) = (cols.to_string(), rows.to_string());
        let args = [
            "-L",
            &self.server,
            "resize-window",
            "-t",
            "t",
            "-x",
            &c,
            "-y",
            &r,
        ];
        assert!(Command::new("tmux").args(args).status().unwrap().success());
    }

    /// The screen with its escape sequences (`\x1b[7m` marks reversed text).
    pub fn screen_with_styles(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.server, "capture-pane", "-p", "-e", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.server, "capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (15 s at most) until the program in the terminal has exited (its session ends).
    pub fn wait_until_gone(&self) {
        let t = Instant::now();
        while Command::new("tmux")
            .args(["-L", &self.server, "has-session", "-t", "t"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "still running:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (15 s at most) until `text` is on screen; the screen then.
    pub fn wait_for(&self, text: &str) -> String {
        self.wait_until(text, |s| s.contains(text))
    }

    /// Wait (15 s at most) until `ok` holds for the screen; `what` names it in the failure.
    pub fn wait_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{what:?} never appeared:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// A TCP port on loopback that nothing listens on right now, and that this process has not
/// been given before: a port handed to one test (an etcd member that a test stops and starts
/// again on it) is never handed to another.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A second "host": a network namespace linked to this one by a veth pair (the underlay), both
/// removed on drop.
pub struct Underlay {
    pub netns: String,
    link: String,
}

impl Underlay {
    /// `link` (this side, address `ip`/30) and `peer` (in `netns`, address `peer_ip`/30).
    pub fn new(netns: &str, link: &str, peer: &str, ip: &str, peer_ip: &str) -> Underlay {
        require_tool("bridge", "iproute2");
        let _ = output(Command::new("ip").args(["netns", "del", netns]));
        let _ = output(Command::new("ip").args(["link", "del", link]));
        run_ok(Command::new("ip").args(["netns", "add", netns]));
        let u = Underlay {
            netns: netns.into(),
            link: link.into(),
        };
        for args in [
            &[
                "link", "add", link, "type", "veth", "peer", "name", peer, "netns", netns,
            ][..],
            &["addr", "add", &format!("{ip}/30"), "dev", link],
            &["link", "set", link, "up"],
            &[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{peer_ip}/30"),
                "dev",
                peer,
            ],
            &["-n", netns, "link", "set", peer, "up"],
            &["-n", netns, "link", "set", "lo", "up"],
        ] {
            run_ok(Command::new("ip").args(args));
        }
        u
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = output(Command::new("ip").args(["link", "del", &self.link]));
        let _ = output(Command::new("ip").args(["netns", "del", &self.netns]));
    }
}
