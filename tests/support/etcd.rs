//! A real 3-member etcd cluster (Debian's `etcd-server`) on loopback ports, with its data in a
//! temporary directory: started by the test that needs it, members killed and restarted by
//! fault tests, everything removed when it is dropped.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require_tool, spawn_bound_to_process, temp_dir};

pub struct Member {
    pub name: String,
    pub client: u16,
    peer: u16,
    data: PathBuf,
    pid: Option<u32>,
}

pub struct Etcd {
    pub members: Vec<Member>,
    token: String,
    dir: PathBuf,
    /// Another address the members serve clients on besides loopback (one a network namespace
    /// reaches).
    also: Option<String>,
    /// With TLS to clients: the directory of `ca.pem`, `server-cert.pem`, `server-key.pem`
    /// (and the client's `cert.pem`, `key.pem`); clients must show a certificate the CA signed.
    pub tls: Option<PathBuf>,
}

impl Etcd {
    /// Three members, healthy and with a leader when this returns.
    pub fn start() -> Etcd {
        Etcd::start_also_on(None)
    }

    /// The same, serving clients on `also` too (each member on its own port there).
    pub fn start_also_on(also: Option<&str>) -> Etcd {
        Etcd::launch(also, None)
    }

    /// Three members serving clients over TLS with client certificates (`--client-cert-auth`),
    /// the files made here with openssl.
    pub fn start_tls() -> Etcd {
        let dir = temp_dir("etcd-tls");
        super::make_ca(&dir);
        super::make_cert(
            &dir,
            "localhost",
            "server-key.pem",
            "server-cert.pem",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        super::make_cert(
            &dir,
            "luastrip",
            "key.pem",
            "cert.pem",
            "extendedKeyUsage=clientAuth\n",
        );
        Etcd::launch(None, Some(dir))
    }

    fn launch(also: Option<&str>, tls: Option<PathBuf>) -> Etcd {
        require_tool("etcd", "etcd-server");
        let dir = temp_dir("etcd");
        let members = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: dir.join(format!("m{i}")),
                pid: None,
            })
            .collect();
        let mut etcd = Etcd {
            members,
            token: format!("luastrip-test-{}-{}", std::process::id(), free_port()),
            dir,
            also: also.map(str::to_string),
            tls,
        };
        for i in 0..3 {
            etcd.spawn(i, "new");
        }
        etcd.wait_healthy(Duration::from_secs(30));
        eprintln!(
            "etcd: {} in {} (pids {:?})",
            etcd.url(),
            etcd.dir.display(),
            etcd.members.iter().map(|m| m.pid).collect::<Vec<_>>()
        );
        etcd
    }

    /// `etcd://127.0.0.1:P0,127.0.0.1:P1,127.0.0.1:P2`, for `--cluster`.
    pub fn url(&self) -> String {
        self.url_on("127.0.0.1")
    }

    /// A plain etcd client on the first member, for what a test writes or reads behind
    /// luastrip's back (values luastrip would never write, keys under a prefix).
    pub async fn raw_client(&self) -> etcd_client::Client {
        let first = self.members[0].client;
        etcd_client::Client::connect([format!("http://127.0.0.1:{first}")], None)
            .await
            .expect("connect to etcd")
    }

    /// The same on another address the members serve (`start_also_on`).
    pub fn url_on(&self, ip: &str) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{ip}:{}", m.client))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut client = format!("{scheme}://127.0.0.1:{}", m.client);
        if let Some(ip) = &self.also {
            client = format!("{client},{scheme}://{ip}:{}", m.client);
        }
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name))).unwrap();
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(tls.join("server-cert.pem"))
                .arg("--key-file")
                .arg(tls.join("server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(tls.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.members[i].pid = Some(spawn_bound_to_process(cmd));
    }

    /// SIGKILL member `i` (as a crash would), and wait until its port is closed.
    pub fn kill(&mut self, i: usize) {
        if let Some(pid) = self.members[i].pid.take() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let port = self.members[i].client;
            let until = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                assert!(Instant::now() < until, "etcd member {i} did not die");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Start member `i` again, on its data.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
    }

    /// Whether member `i` says it is healthy (its `/health`: it has a leader).
    pub fn healthy(&self, i: usize) -> bool {
        let port = self.members[i].client;
        if let Some(tls) = &self.tls {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "3", "--cacert"])
                .arg(tls.join("ca.pem"))
                .arg("--cert")
                .arg(tls.join("cert.pem"))
                .arg("--key")
                .arg(tls.join("key.pem"))
                .arg(format!("https://127.0.0.1:{port}/health"))
                .output();
            return out
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\""));
        }
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let req = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// Every live member healthy, or a failure with their logs.
    pub fn wait_healthy(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let live: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].pid.is_some())
            .collect();
        while !live.iter().all(|i| self.healthy(*i)) {
            if Instant::now() > until {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| {
                        std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                            .unwrap_or_default()
                    })
                    .collect();
                panic!(
                    "etcd is not healthy after {limit:?}:\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(pid) = self.members[i].pid.take() {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        // Kept after a failure, for its logs.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
