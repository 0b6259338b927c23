//! Test support for walarch's end-to-end tests: real PostgreSQL 15 clusters, a real
//! S3-compatible server (moto) on 127.0.0.1, and the built `walarch` binary.
//!
//! Nothing here skips: a missing PostgreSQL, emulator or binary fails the test with a message
//! that says what to install. Every process a test starts is stopped when its handle drops.
//! PostgreSQL refuses to run as root, so as root every server command runs as the
//! `postgres` OS user and the directories it needs are handed to that user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod azure;
pub mod fault_proxy;
pub mod ha;
pub mod pg;
pub mod s3;

pub use pg::Cluster;
pub use s3::S3Server;

/// True when the tests run as root (then PostgreSQL runs as `postgres`).
pub fn running_as_root() -> bool {
    // `id -u` avoids a libc dependency for one call.
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A scratch directory the PostgreSQL OS user can use; removed on drop (unless
/// `WALARCH_KEEP_SCRATCH` is set).
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(label: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("walarch-e2e-{label}-"))
            .tempdir_in("/tmp")
            .expect("create scratch dir");
        let mut dir = dir;
        // WALARCH_KEEP_SCRATCH=1 keeps it (and its logs) for a look after a failure.
        if std::env::var_os("WALARCH_KEEP_SCRATCH").is_some() {
            dir.disable_cleanup(true);
        }
        let scratch = Scratch { dir };
        scratch.give_to_postgres(scratch.path());
        scratch
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `name` inside the scratch directory, owned by the PostgreSQL OS user.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(&path).expect("create dir");
        self.give_to_postgres(&path);
        path
    }

    pub fn give_to_postgres(&self, path: &Path) {
        if running_as_root() {
            run_ok(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:postgres")
                    .arg(path),
            );
        }
    }
}

/// The walarch binary under test, copied into `scratch` so that the PostgreSQL OS user can
/// execute it whatever the permissions of the build directory.
pub fn walarch_binary(scratch: &Scratch) -> PathBuf {
    let built = match std::env::var_os("WALARCH_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("debug/walarch")
        }
    };
    assert!(
        built.is_file(),
        "walarch binary not found at {}: run `cargo build -p walarch-cli` first (or set WALARCH_BIN)",
        built.display()
    );
    let bin_dir = scratch.subdir("bin");
    let copy = bin_dir.join("walarch");
    std::fs::copy(&built, &copy).expect("copy walarch binary");
    scratch.give_to_postgres(&copy);
    copy
}

/// A free TCP port on 127.0.0.1 (the kernel picks it; the listener closes at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command and panics with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_for_or_explain(what, timeout, check, String::new)
}

/// [`wait_for`], adding what `explain` says at the moment of a timeout to the panic.
pub fn wait_for_or_explain<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The result of one walarch invocation.
#[derive(Debug)]
pub struct WalarchRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for WalarchRun {
    fn from(out: Output) -> Self {
        WalarchRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl WalarchRun {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `walarch` (as the current user) with `envs` and `args`.
pub fn walarch(bin: &Path, envs: &[(String, String)], args: &[&str]) -> WalarchRun {
    let out = Command::new(bin)
        .args(args)
        .env_remove("WALARCH_REPO")
        .env_remove("WALARCH_CONFIG")
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run walarch");
    WalarchRun::from(out)
}

/// Runs `walarch` as the PostgreSQL OS user (when root), as a DBA would for backup and
/// restore: the files it reads and writes belong to that user.
pub fn walarch_as_postgres(bin: &Path, envs: &[(String, String)], args: &[&str]) -> WalarchRun {
    let out = walarch_as_postgres_command(bin, envs, args)
        .stdin(Stdio::null())
        .output()
        .expect("run walarch");
    WalarchRun::from(out)
}

/// `walarch --repo REPO --json backup` of `cluster` (its data directory, its connection), as
/// the PostgreSQL OS user.
pub fn walarch_backup(
    bin: &Path,
    envs: &[(String, String)],
    repo: &str,
    cluster: &Cluster,
) -> WalarchRun {
    let data = cluster.data.to_str().unwrap().to_owned();
    let conninfo = cluster.conninfo();
    walarch_as_postgres(
        bin,
        envs,
        &[
            "--repo", repo, "--json", "backup", "--pgdata", &data, "--dbname", &conninfo,
        ],
    )
}

/// The command [`walarch_as_postgres`] runs, to spawn it instead.
pub fn walarch_as_postgres_command(
    bin: &Path,
    envs: &[(String, String)],
    args: &[&str],
) -> Command {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args([
            "-u",
            "postgres",
            "--",
            "env",
            "-u",
            "WALARCH_REPO",
            "-u",
            "WALARCH_CONFIG",
        ]);
        c
    } else {
        let mut c = Command::new("env");
        c.args(["-u", "WALARCH_REPO", "-u", "WALARCH_CONFIG"]);
        c
    };
    for (k, v) in envs {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg(bin).args(args);
    cmd
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lists every file below `root` as relative paths, sorted.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
