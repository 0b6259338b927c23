//! A replicated cluster for end-to-end tests: one etcd server on 127.0.0.1, one TCP relay per
//! member in front of it (so a test can cut one member off from etcd while the others still
//! reach it), and `walarch-k8s instance` managers running PostgreSQL 15 as the `postgres` OS
//! user. A writer task per member records which member accepted which write, and when.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Scratch, free_port, running_as_root, wait_for};

/// An etcd server (Debian's `etcd-server`), killed on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Etcd {
    pub fn start(scratch: &Scratch) -> Etcd {
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: scratch.path().join("etcd"),
            log: scratch.path().join("etcd.log"),
        };
        etcd.restart();
        etcd
    }

    /// Starts (again) on the same data directory and ports.
    pub fn restart(&mut self) {
        let etcd = which("etcd").unwrap_or_else(|| {
            panic!("etcd is missing: install Debian's etcd-server (scripts/install-prerequisites.sh does)")
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd)
            .args(["--name", "walarch-test", "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("walarch-test={peer}")])
            .args(["--heartbeat-interval", "100", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let port = self.client_port;
        wait_for("etcd to answer", Duration::from_secs(30), || {
            http_get(&format!("127.0.0.1:{port}"), "/health")
                .filter(|(code, body)| *code == 200 && body.contains("true"))
        });
    }

    /// Kills etcd (SIGKILL): the whole coordination store is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A TCP relay 127.0.0.1:`port` → `target` that a test can cut (every connection closed, new
/// ones closed at once) and restore.
#[derive(Debug)]
pub struct Relay {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let relay = Relay {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (cut, open, stop) = (relay.cut.clone(), relay.open.clone(), relay.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut open = open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        relay
    }

    /// Cuts the member off: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A minimal HTTP/1.0 GET (or POST with `method`): status code and body.
pub fn http_request(address: &str, method: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((code, body))
}

pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    http_request(address, "GET", path)
}

/// The walarch-k8s binary under test (built by `cargo build -p walarch-k8s`), copied where the
/// PostgreSQL OS user can run it.
pub fn walarch_k8s_binary(scratch: &Scratch) -> PathBuf {
    let built = match std::env::var_os("WALARCH_K8S_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("debug/walarch-k8s"),
    };
    assert!(
        built.is_file(),
        "walarch-k8s binary not found at {}: run `cargo build -p walarch-k8s` first",
        built.display()
    );
    let copy = scratch.subdir("bin").join("walarch-k8s");
    std::fs::copy(&built, &copy).expect("copy walarch-k8s");
    scratch.give_to_postgres(&copy);
    copy
}

/// The uid and gid PostgreSQL runs as (the tests' own when not root).
fn postgres_ids() -> Option<(u32, u32)> {
    if !running_as_root() {
        return None;
    }
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .expect("postgres OS user")
    };
    Some((id("-u"), id("-g")))
}

/// Lease timings short enough for tests, with the margins production defaults keep.
pub const TEST_TIMINGS: [(&str, &str); 4] = [
    ("--lease-ttl", "4s"),
    ("--renew-deadline", "2500ms"),
    ("--failover-delay", "0s"),
    ("--tick", "200ms"),
];

/// One member: its manager (a direct child, so a test can SIGKILL it) and its server.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub pgdata: PathBuf,
    pub pg_port: u16,
    pub http: String,
    pub relay: Relay,
    args: Vec<String>,
    bin: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The password of `postgres` (the manager's PGPASSWORD), if any.
    pub password: Option<String>,
}

impl Member {
    /// A member of `cluster` whose manager reaches etcd at `etcd` through its own relay.
    pub fn new(
        scratch: &Scratch,
        bin: &Path,
        name: &str,
        etcd: &str,
        repo: &Path,
        walarch_bin: &Path,
        sync_replicas: u32,
    ) -> Member {
        Member::with_options(
            scratch,
            bin,
            name,
            "test",
            etcd,
            repo,
            walarch_bin,
            sync_replicas,
            &[],
            None,
        )
    }

    /// A member of cluster `cluster` with `extra` arguments for its manager.
    #[allow(clippy::too_many_arguments)]
    pub fn with_options(
        scratch: &Scratch,
        bin: &Path,
        name: &str,
        cluster: &str,
        etcd: &str,
        repo: &Path,
        walarch_bin: &Path,
        sync_replicas: u32,
        extra: &[String],
        password: Option<&str>,
    ) -> Member {
        let relay = Relay::start(etcd.to_owned());
        let dir = scratch.subdir(name);
        let pgdata = dir.join("data");
        let pg_port = free_port();
        let http = format!("127.0.0.1:{}", free_port());
        let args = [
            "instance",
            "--name",
            name,
            "--cluster",
            cluster,
            "--pgdata",
            &pgdata.display().to_string(),
            "--coordination",
            &format!("etcd://127.0.0.1:{}/walarch-test", relay.port),
            "--http",
            &http,
            "--pg-port",
            &pg_port.to_string(),
            "--pg-bin",
            super::pg::PG_BIN,
            "--repo",
            &repo.display().to_string(),
            "--walarch-bin",
            &walarch_bin.display().to_string(),
            "--sync-replicas",
            &sync_replicas.to_string(),
            "--set",
            "fsync=off",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(
            // With a password, peers and clients authenticate with it (as in Kubernetes);
            // without, the loopback is trusted.
            if password.is_some() {
                [
                    "host all all 127.0.0.1/32 scram-sha-256",
                    "host replication all 127.0.0.1/32 scram-sha-256",
                ]
            } else {
                [
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ]
            }
            .into_iter()
            .flat_map(|line| ["--hba".to_owned(), line.to_owned()]),
        )
        .chain(
            TEST_TIMINGS
                .iter()
                .flat_map(|(k, v)| [k.to_string(), v.to_string()]),
        )
        .chain(extra.iter().cloned())
        .collect();
        let mut member = Member {
            name: name.to_owned(),
            pgdata,
            pg_port,
            http,
            relay,
            args,
            bin: bin.to_owned(),
            log: dir.join("manager.log"),
            child: None,
            password: password.map(str::to_owned),
        };
        member.start();
        member
    }

    /// Starts the manager (again).
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env("WALARCH_LOG", "info,walarch_k8s=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some((uid, gid)) = postgres_ids() {
            cmd.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
        }
        match &self.password {
            Some(password) => cmd.env("PGPASSWORD", password),
            None => cmd.env_remove("PGPASSWORD"),
        };
        self.child = Some(cmd.spawn().expect("start walarch-k8s instance"));
    }

    /// SIGKILLs the manager and its PostgreSQL (the postmaster from `postmaster.pid`, and
    /// every process of that server's group).
    pub fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = super::pg::postmaster_pid(&self.pgdata) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            // The postmaster's children exit when they notice it is gone; wait for the port.
            let port = self.pg_port;
            wait_for(
                "the killed server's port to close",
                Duration::from_secs(30),
                || {
                    TcpStream::connect(("127.0.0.1", port))
                        .is_err()
                        .then_some(())
                },
            );
        }
    }

    /// SIGKILLs the manager alone (its server is left to fend for itself).
    pub fn kill_manager(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the manager with SIGTERM (it stops its server).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http_get(&self.http, "/status")?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    pub fn role(&self) -> Option<String> {
        self.status()
            .and_then(|s| s["role"].as_str().map(str::to_owned))
    }

    pub fn conninfo(&self) -> String {
        let password = self
            .password
            .as_ref()
            .map(|p| format!(" password={p}"))
            .unwrap_or_default();
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=1{password}",
            self.pg_port
        )
    }

    /// The manager's whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// One accepted write: which member, which sequence number, when (the test's clock).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub member: String,
    pub seq: i64,
    pub at: Instant,
}

/// Writes to every member every 50 ms and records each write a member acknowledged.
#[derive(Debug)]
pub struct Checker {
    pub accepted: Arc<Mutex<Vec<Accepted>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Checker {
    /// Needs `CREATE TABLE checker (member text, seq bigint)` on the cluster.
    pub fn start(members: &[(String, String)]) -> Checker {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let seq = Arc::new(std::sync::atomic::AtomicI64::new(1));
        for (name, conninfo) in members.iter().cloned() {
            let (accepted, stop, seq) = (accepted.clone(), stop.clone(), seq.clone());
            threads.push(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(write_forever(name, conninfo, accepted, stop, seq));
            }));
        }
        Checker {
            accepted,
            stop,
            threads,
        }
    }

    pub fn finish(mut self) -> Vec<Accepted> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.accepted.lock().unwrap().clone()
    }

    pub fn snapshot(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }
}

async fn write_forever(
    name: String,
    conninfo: String,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    stop: Arc<AtomicBool>,
    seq: Arc<std::sync::atomic::AtomicI64>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match tokio::time::timeout(
                Duration::from_secs(1),
                tokio_postgres::connect(&conninfo, tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((c, conn))) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Some(c)
                }
                _ => None,
            };
        }
        if let Some(c) = &client {
            let n = seq.fetch_add(1, Ordering::SeqCst);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&name, &n];
            let write = c.execute("INSERT INTO checker (member, seq) VALUES ($1, $2)", &params);
            match tokio::time::timeout(Duration::from_secs(2), write).await {
                Ok(Ok(_)) => accepted.lock().unwrap().push(Accepted {
                    member: name.clone(),
                    seq: n,
                    at: Instant::now(),
                }),
                // Refused (read-only, gone) or not acknowledged in time: not accepted.
                Ok(Err(_)) => {}
                Err(_) => client = None,
            }
        }
        let elapsed = started.elapsed();
        if elapsed < Duration::from_millis(50) {
            tokio::time::sleep(Duration::from_millis(50) - elapsed).await;
        }
    }
}
