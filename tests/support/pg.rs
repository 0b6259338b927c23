//! Real PostgreSQL clusters for end-to-end tests: Debian's PostgreSQL 15, and the server
//! binaries of the other majors (13 to 18) that `scripts/install-postgres-majors.sh` unpacks.
//! Client programs (psql, pgbench, pg_basebackup) are always Debian's 15: they talk to every
//! supported server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Scratch, free_port, run_ok, running_as_root, wait_for};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The majors walarch supports, oldest first.
pub const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

/// The directory of `major`'s server binaries (`initdb`, `pg_ctl`, `postgres`): Debian's for
/// 15, else the unpacked builds (`WALARCH_PG_MAJORS_DIR`, as `scripts/install-postgres-majors.sh`
/// prints it; by default its cache).
pub fn server_bin(major: u32) -> PathBuf {
    if major == 15 {
        return PathBuf::from(PG_BIN);
    }
    let root = std::env::var_os("WALARCH_PG_MAJORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if super::running_as_root() {
                PathBuf::from("/var/cache/walarch/postgres")
            } else {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default();
                home.join(".cache/walarch/postgres")
            }
        });
    let dir = root.join(major.to_string()).join("bin");
    assert!(
        dir.join("postgres").is_file(),
        "PostgreSQL {major}'s server binaries are missing in {}: run scripts/install-postgres-majors.sh",
        dir.display()
    );
    dir
}

/// Builds a command that runs a PostgreSQL program as the PostgreSQL OS user, with `envs`.
pub fn pg_command(program: &str, envs: &[(String, String)]) -> Command {
    pg_command_in(Path::new(PG_BIN), program, envs)
}

/// Like [`pg_command`], for the program in `dir`.
pub fn pg_command_in(dir: &Path, program: &str, envs: &[(String, String)]) -> Command {
    let path = dir.join(program);
    assert!(
        path.is_file(),
        "{} is missing: install postgresql-15 (apt-get install postgresql-15)",
        path.display()
    );
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"]);
        c
    } else {
        Command::new("env")
    };
    for (k, v) in envs {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg(path);
    cmd
}

/// The major version of a data directory (`PG_VERSION`), 15 when it cannot be read.
fn data_major(data: &Path) -> u32 {
    std::fs::read_to_string(data.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(15)
}

/// The pid in `<data>/postmaster.pid`, while a server runs there.
pub fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|l| l.trim().parse().ok()))
}

/// One PostgreSQL cluster on 127.0.0.1, stopped (immediate) when dropped.
#[derive(Debug)]
pub struct Cluster {
    pub data: PathBuf,
    pub port: u16,
    socket_dir: PathBuf,
    envs: Vec<(String, String)>,
    running: bool,
    /// The postmaster's pid, so that it can be stopped even if its directory is gone.
    postmaster_pid: Option<u32>,
    /// Where its server binaries are (`initdb`, `pg_ctl`).
    server_bin: PathBuf,
}

impl Cluster {
    /// `initdb` into `<scratch>/<name>` with the given WAL segment size in MiB (PostgreSQL 15).
    pub fn init(scratch: &Scratch, name: &str, wal_segsize_mib: u32) -> Self {
        Self::init_major(scratch, name, wal_segsize_mib, 15)
    }

    /// `initdb` of PostgreSQL `major` into `<scratch>/<name>`.
    pub fn init_major(scratch: &Scratch, name: &str, wal_segsize_mib: u32, major: u32) -> Self {
        let server_bin = server_bin(major);
        let parent = scratch.subdir(name);
        let data = parent.join("data");
        let mut initdb = pg_command_in(&server_bin, "initdb", &[]);
        initdb.args(["-D"]).arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            &format!("--wal-segsize={wal_segsize_mib}"),
        ]);
        // `--no-instructions` came with PostgreSQL 14; 13's initdb refuses it.
        if major >= 14 {
            initdb.arg("--no-instructions");
        }
        run_ok(&mut initdb);
        let cluster = Cluster {
            data,
            port: free_port(),
            socket_dir: parent,
            envs: Vec::new(),
            running: false,
            postmaster_pid: None,
            server_bin: server_bin.clone(),
        };
        cluster.append_conf(&format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nlog_min_messages = warning\n",
            cluster.port,
            cluster.socket_dir.display()
        ));
        cluster
    }

    /// A cluster over an existing data directory (a restored base backup).
    pub fn from_data_dir(data: PathBuf) -> Self {
        let server_bin = server_bin(data_major(&data));
        let socket_dir = data.parent().unwrap().to_path_buf();
        let cluster = Cluster {
            data,
            port: free_port(),
            socket_dir,
            envs: Vec::new(),
            running: false,
            postmaster_pid: None,
            server_bin,
        };
        cluster.append_conf(&format!(
            "port = {}\nunix_socket_directories = '{}'\n",
            cluster.port,
            cluster.socket_dir.display()
        ));
        cluster
    }

    /// A server some other program started on `data` (e.g. `walarch restore --start`),
    /// listening on 127.0.0.1:`port`; stopped when dropped like any other.
    pub fn adopt(data: PathBuf, port: u16) -> Self {
        let server_bin = server_bin(data_major(&data));
        let socket_dir = data.parent().unwrap().to_path_buf();
        let postmaster_pid = postmaster_pid(&data);
        Cluster {
            data,
            port,
            socket_dir,
            envs: Vec::new(),
            running: true,
            postmaster_pid,
            server_bin,
        }
    }

    /// Environment given to the server (and so to archive_command / restore_command).
    pub fn with_env(mut self, envs: &[(String, String)]) -> Self {
        self.envs.extend_from_slice(envs);
        self
    }

    pub fn append_conf(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(f, "{text}").unwrap();
    }

    pub fn log_path(&self) -> PathBuf {
        self.socket_dir.join("server.log")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts the server without waiting for it to accept connections (recovery may take a
    /// while); use [`Cluster::wait_ready`].
    pub fn start(&mut self) {
        let out = pg_command_in(&self.server_bin, "pg_ctl", &self.envs)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-W", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        self.running = true;
        self.postmaster_pid = postmaster_pid(&self.data);
    }

    pub fn wait_ready(&self, timeout: Duration) {
        wait_for(
            &format!(
                "server on port {} to accept connections\n{}",
                self.port,
                self.log_tail()
            ),
            timeout,
            || {
                let ok = pg_command("pg_isready", &[])
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                ok.then_some(())
            },
        );
    }

    pub fn start_and_wait(&mut self) {
        self.start();
        self.wait_ready(Duration::from_secs(60));
    }

    /// Runs SQL and returns the unaligned, tuples-only output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        self.psql(sql).unwrap_or_else(|stderr| {
            panic!("psql failed for {sql:?}: {stderr}\n{}", self.log_tail())
        })
    }

    /// Like [`Cluster::sql`] but returns `None` when the query fails (server still starting).
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        self.psql(sql).ok()
    }

    fn psql(&self, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = pg_command("psql", &[])
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `pgbench` against this server with `args` (database postgres); run or spawn it.
    pub fn pgbench(&self, args: &[&str]) -> Command {
        let mut cmd = pg_command("pgbench", &[]);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .arg("postgres");
        cmd
    }

    /// A connection string for this server, for `walarch backup --dbname`.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub fn system_identifier(&self) -> String {
        self.sql("select system_identifier from pg_control_system()")
    }

    /// Switches to a new segment and waits until the archiver has archived everything up to
    /// it, with no file left `.ready` and no failure recorded. Returns the last archived name.
    pub fn switch_and_wait_archived(&self, timeout: Duration) -> String {
        let switched = self.sql("select pg_walfile_name(pg_switch_wal())");
        wait_for(
            &format!("{switched} to be archived\n{}", self.log_tail()),
            timeout,
            || {
                let row = self.sql(
                    "select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver",
                );
                let (last, _failed) = row.split_once('|').unwrap();
                let ready = self.ready_count();
                (last >= switched.as_str() && ready == 0).then(|| last.to_owned())
            },
        )
    }

    /// How many files wait in `archive_status/*.ready`.
    pub fn ready_count(&self) -> usize {
        std::fs::read_dir(self.data.join("pg_wal/archive_status"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".ready")
            })
            .count()
    }

    /// Names of the files PostgreSQL considers archived (`archive_status/*.done`).
    pub fn archived_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data.join("pg_wal/archive_status"))
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".done")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    /// Takes a plain base backup with `pg_basebackup -X none`: the WAL needed to make it
    /// consistent must come from the archive.
    pub fn base_backup(&self, dest: &Path) {
        self.pg_basebackup(dest, &["-X", "none"]);
    }

    /// A copy that starts as a streaming standby of this server (`-X stream -R`).
    pub fn standby_copy(&self, dest: &Path) {
        self.pg_basebackup(dest, &["-X", "stream", "-R"]);
    }

    fn pg_basebackup(&self, dest: &Path, args: &[&str]) {
        run_ok(
            pg_command("pg_basebackup", &[])
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(args)
                .args(["-c", "fast", "-D"])
                .arg(dest),
        );
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = pg_command_in(&self.server_bin, "pg_ctl", &[])
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "60", "stop"])
                .output();
            self.running = false;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_command_in(&self.server_bin, "pg_ctl", &[])
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
