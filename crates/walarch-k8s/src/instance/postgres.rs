//! One PostgreSQL server under the manager: its data directory's state, its configuration
//! (`walarch.conf`, included from `postgresql.conf`), the postmaster as a child process, and the
//! few queries the manager needs. Programs come from one `--pg-bin` directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use walarch_core::wal::{ClusterState, Lsn, checkpoint_from_pg_control};

use crate::member::{Server, WalPosition};

/// The file the manager owns; `postgresql.conf` includes it last.
const MANAGED_CONF: &str = "walarch.conf";

/// Left in a former primary's data directory while it runs as a replica without having been
/// rewound (to finish crash recovery): it must rewind before it follows another primary.
const REWIND_MARKER: &str = "walarch.rewind-needed";

/// Beside the data directory (`<pgdata>.bootstrap-in-progress`, so no copy of the data
/// directory carries it) from before a recovery bootstrap restores anything until the
/// recovered server is promoted and its recovery settings are gone. While it exists the data
/// directory is not one to start (`stopped_state` says absent), the server archives nothing
/// (its WAL waits in `pg_wal`), and a failed or interrupted bootstrap is discarded and begun
/// again: the cluster is initialized only after the marker is gone.
const BOOTSTRAP_MARKER: &str = "bootstrap-in-progress";

/// The settings `walarch.conf` manages. A recovery bootstrap drops them from the source's
/// `postgresql.auto.conf` (read after `walarch.conf`, it would win): the source's
/// `synchronous_standby_names` or `archive_command` must not become the clone's.
const MANAGED_SETTINGS: [&str; 13] = [
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "wal_level",
    "hot_standby",
    "wal_log_hints",
    "max_wal_senders",
    "max_replication_slots",
    "cluster_name",
    "synchronous_standby_names",
    "archive_mode",
    "archive_command",
    "primary_conninfo",
];

/// The recovery settings a restore writes into `postgresql.auto.conf`; reset once the
/// recovered server is promoted, so that no later start (as a replica, after a rewind) stops
/// at the old target or fetches from the source repository.
const RESTORE_SETTINGS: [&str; 9] = [
    "restore_command",
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// How the manager runs its server.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Server programs (`initdb`, `postgres`, `pg_basebackup`, `pg_rewind`).
    pub bin: PathBuf,
    /// The data directory.
    pub pgdata: PathBuf,
    /// The member's name (its `application_name` upstream, for `synchronous_standby_names`).
    pub name: String,
    /// Address PostgreSQL listens on and peers connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `NAME=VALUE` settings added to the managed configuration.
    pub settings: Vec<(String, String)>,
    /// Lines put first in `pg_hba.conf` when the cluster is initialized.
    pub hba: Vec<String>,
    /// `archive_command`, when archiving into a repository.
    pub archive_command: Option<String>,
    /// `restore_command`, when a repository holds the WAL.
    pub restore_command: Option<String>,
    /// Where `pg_wal` lives when not in the data directory (a separate volume).
    pub waldir: Option<PathBuf>,
    /// `initdb --data-checksums` (the default).
    pub data_checksums: bool,
}

/// How to start the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAs {
    /// A primary.
    Primary,
    /// A standby streaming from `upstream` (host, port) if given, else from the archive only.
    Replica {
        /// Host and port of the primary.
        upstream: Option<(String, u16)>,
    },
}

/// What one look at the running server found.
#[derive(Debug, Clone, Default)]
pub struct Running {
    /// In recovery (a standby).
    pub in_recovery: bool,
    /// Timeline.
    pub timeline: u32,
    /// Flushed (primary) or received (standby).
    pub flushed: u64,
    /// Replayed (a primary: its flush position).
    pub replayed: u64,
    /// A WAL receiver is running.
    pub receiver_running: bool,
    /// A WAL receiver has received WAL since the server started: everything in pg_wal was
    /// replayed before it began, so `flushed` covers all WAL the server holds.
    pub streamed_since_start: bool,
    /// Standbys streaming from this server, with their flushed LSN.
    pub streaming: Vec<(String, u64)>,
    /// The last file the archiver archived (`pg_stat_archiver`).
    pub last_archived: Option<String>,
    /// Its age in seconds.
    pub last_archived_age_seconds: Option<f64>,
}

/// The supervised server.
#[derive(Debug)]
pub struct Postgres {
    settings: PgSettings,
    watchdog: Option<Arc<AtomicU32>>,
    child: Option<Child>,
    upstream: Option<(String, u16)>,
    synchronous_standby_names: String,
}

impl Postgres {
    /// A supervisor for `settings`; nothing is started. `watchdog` receives the postmaster's
    /// pid the moment a primary is spawned (see `instance::fence_watchdog`).
    pub fn new(settings: PgSettings, watchdog: Option<Arc<AtomicU32>>) -> Postgres {
        Postgres {
            watchdog,
            settings,
            child: None,
            upstream: None,
            synchronous_standby_names: String::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// The server's log file (beside the data directory: clones do not copy it).
    pub fn log_path(&self) -> PathBuf {
        self.settings.pgdata.with_extension("log")
    }

    fn program(&self, name: &str) -> PathBuf {
        self.settings.bin.join(name)
    }

    /// Whether the postmaster child is alive (reaping it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    tracing::warn!(%status, "PostgreSQL exited");
                    self.child = None;
                    false
                }
                Err(_) => false,
            },
            None => false,
        }
    }

    /// The timeline of the newest WAL a running standby holds: the highest timeline among
    /// the segment files in `pg_wal`. Exact where what PostgreSQL reports is only a lower
    /// bound (a standby without a running receiver reports its last checkpoint's timeline,
    /// which trails a timeline switch until the next restartpoint); `None` without segments.
    /// Not for a stopped directory: a rewind killed half-way has copied the new timeline's
    /// segments but not yet the pg_control that would make it consistent.
    pub fn newest_wal_timeline(&self) -> std::io::Result<Option<u32>> {
        newest_segment_timeline(&self.settings.pgdata.join("pg_wal"))
    }

    /// The data directory as the decision logic sees it when no server runs.
    pub fn stopped_state(&self) -> anyhow::Result<Server> {
        let pgdata = &self.settings.pgdata;
        if !pgdata.join("PG_VERSION").is_file() || self.bootstrap_in_progress() {
            return Ok(Server::Absent);
        }
        let bytes = std::fs::read(pgdata.join("global/pg_control"))
            .with_context(|| format!("reading {}/global/pg_control", pgdata.display()))?;
        let control = checkpoint_from_pg_control(&bytes)?;
        let was_primary = self.rewind_needed() || self.last_ran_as_primary(control.state);
        Ok(Server::Stopped {
            was_primary,
            timeline: control.timeline.get(),
            position: WalPosition {
                received: control.checkpoint.as_u64(),
                replayed: control.checkpoint.as_u64(),
            },
            // Only a primary's clean shutdown ends its WAL at its checkpoint; a standby's
            // last restartpoint can be far behind what it flushed.
            clean: control.state == ClusterState::ShutDown,
        })
    }

    /// Whether the data directory last ran as a primary: not a standby, not a base backup
    /// or rewound copy waiting for its first start (`backup_label`: a fresh copy's pg_control
    /// still says "in production", as its source's did), and its pg_control says so.
    fn last_ran_as_primary(&self, state: ClusterState) -> bool {
        let pgdata = &self.settings.pgdata;
        !pgdata.join("standby.signal").exists()
            && !pgdata.join("backup_label").exists()
            && matches!(
                state,
                ClusterState::InProduction | ClusterState::ShutDown | ClusterState::ShuttingDown
            )
    }

    /// Whether the data directory last ran as a primary and has not been rewound since.
    pub fn rewind_needed(&self) -> bool {
        self.settings.pgdata.join(REWIND_MARKER).exists()
    }

    /// Marks the (stopped) data directory as a former primary about to run as a replica
    /// without a rewind (to finish its crash recovery).
    pub fn mark_rewind_needed(&self) -> anyhow::Result<()> {
        walarch_core::local_files::write_durably(&self.settings.pgdata.join(REWIND_MARKER), b"")?;
        Ok(())
    }

    /// Forgets the rewind marker (after a rewind, a fresh copy, or a promotion).
    pub fn clear_rewind_needed(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.settings.pgdata.join(REWIND_MARKER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Stops a postmaster that runs on the data directory without this manager (left by a
    /// manager that died): a primary nobody fences is the incident this layer exists to
    /// prevent. Immediate stop, then waits for it to exit.
    pub async fn stop_leftover(&self) -> anyhow::Result<()> {
        let Ok(text) = std::fs::read_to_string(self.settings.pgdata.join("postmaster.pid")) else {
            return Ok(());
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            return Ok(());
        };
        if rustix::process::test_kill_process(pid).is_err() {
            return Ok(());
        }
        tracing::warn!(
            pid = pid.as_raw_nonzero().get(),
            "stopping a PostgreSQL left running without its manager"
        );
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
        for _ in 0..600 {
            if rustix::process::test_kill_process(pid).is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "a PostgreSQL left running on {} does not stop",
            self.settings.pgdata.display()
        )
    }

    /// `initdb` (with data checksums unless told otherwise), then the `pg_hba.conf` lines.
    pub async fn initdb(&self) -> anyhow::Result<()> {
        let pgdata = &self.settings.pgdata;
        let mut initdb = Command::new(self.program("initdb"));
        initdb.arg("-D").arg(pgdata).args([
            "--data-checksums",
            "--auth-local=trust",
            "-U",
            "postgres",
        ]);
        if let Some(waldir) = &self.settings.waldir {
            empty_directory(waldir)?;
            initdb.arg("--waldir").arg(waldir);
        }
        // With a password for `postgres` (PGPASSWORD: in Kubernetes, from the cluster's
        // Secret) peers authenticate over the network with it; libpq's clients here
        // (pg_basebackup, pg_rewind, the WAL receiver) read the same variable.
        let pwfile = pgdata.with_extension("pwfile");
        if let Some(password) = superuser_password() {
            walarch_core::local_files::write_durably(&pwfile, password.as_bytes())?;
            initdb
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("--auth-host=scram-sha-256");
        }
        let result = run(&mut initdb).await.context("initdb");
        let _ = std::fs::remove_file(&pwfile);
        result?;
        let hba_path = pgdata.join("pg_hba.conf");
        let existing = std::fs::read_to_string(&hba_path)?;
        let mut hba = self.settings.hba.join("\n");
        hba.push('\n');
        hba.push_str(&existing);
        std::fs::write(&hba_path, hba)?;
        Ok(())
    }

    /// Copies the primary at `host:port` into the (empty) data directory.
    pub async fn clone_from(&self, host: &str, port: u16) -> anyhow::Result<()> {
        let pgdata = &self.settings.pgdata;
        if pgdata.exists() {
            std::fs::remove_dir_all(pgdata)?;
        }
        let mut basebackup = Command::new(self.program("pg_basebackup"));
        basebackup
            .arg("-D")
            .arg(pgdata)
            .args(["-h", host, "-p", &port.to_string(), "-U", "postgres"])
            .args(["-X", "stream", "-c", "fast", "--no-password"]);
        if let Some(waldir) = &self.settings.waldir {
            empty_directory(waldir)?;
            basebackup.arg("--waldir").arg(waldir);
        }
        run(&mut basebackup)
            .await
            .context("pg_basebackup from the primary")?;
        Ok(())
    }

    /// Rewinds the (stopped) data directory to `host:port`'s timeline, fetching WAL it
    /// lacks through `restore_command`.
    pub async fn rewind_from(&self, host: &str, port: u16) -> anyhow::Result<()> {
        // pg_rewind reads restore_command from the configuration: write it first, without
        // standby.signal (pg_rewind's single-user crash recovery refuses standby mode).
        self.write_config(&StartAs::Primary, "")?;
        let source = format!("host={host} port={port} user=postgres dbname=postgres");
        // pg_rewind takes the source's timeline from its pg_control, which a freshly promoted
        // server updates only at its next checkpoint: without one, the rewound directory
        // asks for the new timeline with a recovery point on the old one and never starts.
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_postgres::connect(
                &format!("{source} connect_timeout=5"),
                tokio_postgres::NoTls,
            ),
        )
        .await
        .context("connecting to the rewind source timed out")??;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .execute("CHECKPOINT", &[])
            .await
            .context("CHECKPOINT on the rewind source")?;
        drop(client);
        let mut cmd = Command::new(self.program("pg_rewind"));
        cmd.arg("--target-pgdata")
            .arg(&self.settings.pgdata)
            .arg(format!("--source-server={source}"));
        if self.settings.restore_command.is_some() {
            cmd.arg("--restore-target-wal");
        }
        run(&mut cmd).await.context("pg_rewind")
    }

    /// Writes the managed configuration for `role` and makes sure `postgresql.conf` includes it.
    fn write_config(&self, role: &StartAs, standby_names: &str) -> anyhow::Result<()> {
        let s = &self.settings;
        let pgdata = &s.pgdata;
        let main_conf = pgdata.join("postgresql.conf");
        let include = format!("include_if_exists = '{MANAGED_CONF}'");
        let main = std::fs::read_to_string(&main_conf)?;
        if !main.lines().any(|l| l.trim() == include) {
            std::fs::write(&main_conf, format!("{main}\n{include}\n"))?;
        }
        let mut lines = vec![
            format!("listen_addresses = '{}'", s.host),
            format!("port = {}", s.port),
            format!(
                "unix_socket_directories = '{}'",
                self.socket_dir().display()
            ),
            "wal_level = replica".into(),
            "hot_standby = on".into(),
            "wal_log_hints = on".into(),
            "max_wal_senders = 10".into(),
            "max_replication_slots = 10".into(),
            "recovery_target_timeline = 'latest'".into(),
            format!("cluster_name = '{}'", s.name),
            format!("synchronous_standby_names = '{standby_names}'"),
        ];
        match &s.archive_command {
            // An empty command keeps every segment `.ready` in pg_wal until the bootstrap
            // is finished (a bootstrap begun again must find the repository without WAL).
            Some(_) if self.bootstrap_in_progress() => {
                lines.push("archive_mode = on".into());
                lines.push("archive_command = ''".into());
            }
            Some(cmd) => {
                lines.push("archive_mode = on".into());
                lines.push(format!("archive_command = '{}'", cmd.replace('\'', "''")));
            }
            None => lines.push("archive_mode = off".into()),
        }
        if let Some(cmd) = &s.restore_command {
            lines.push(format!("restore_command = '{}'", cmd.replace('\'', "''")));
        }
        let conninfo = match role {
            StartAs::Replica {
                upstream: Some((host, port)),
            } => format!(
                "host={host} port={port} user=postgres application_name={} connect_timeout=2",
                s.name
            ),
            _ => String::new(),
        };
        lines.push(format!("primary_conninfo = '{conninfo}'"));
        for (name, value) in &s.settings {
            lines.push(format!("{name} = '{}'", value.replace('\'', "''")));
        }
        lines.push(String::new());
        walarch_core::local_files::write_durably(
            &pgdata.join(MANAGED_CONF),
            lines.join("\n").as_bytes(),
        )?;
        let standby_signal = pgdata.join("standby.signal");
        match role {
            StartAs::Primary => {
                if standby_signal.exists() {
                    std::fs::remove_file(&standby_signal)?;
                }
            }
            StartAs::Replica { .. } => {
                walarch_core::local_files::write_durably(&standby_signal, b"")?
            }
        }
        Ok(())
    }

    fn socket_dir(&self) -> PathBuf {
        self.settings
            .pgdata
            .parent()
            .map_or_else(|| PathBuf::from("/tmp"), Path::to_path_buf)
    }

    /// Starts the postmaster as a child and waits until it accepts connections.
    pub async fn start(&mut self, role: StartAs) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("PostgreSQL is already running");
        }
        self.write_config(&role, &self.synchronous_standby_names)?;
        self.upstream = match &role {
            StartAs::Replica { upstream } => upstream.clone(),
            StartAs::Primary => None,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        // The postmaster must not outlive its manager: a primary nobody fences could keep
        // writing after the lease went to another member. util-linux's setpriv asks the
        // kernel to send it SIGQUIT (immediate shutdown) when the manager dies, then execs
        // postgres in place (same pid). The manager's runtime threads, which spawn it, live
        // as long as the manager.
        let mut command = match which_setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "QUIT", "--"])
                    .arg(self.program("postgres"));
                c
            }
            None => {
                tracing::warn!(
                    "setpriv (util-linux) not found: PostgreSQL would survive a killed manager"
                );
                Command::new(self.program("postgres"))
            }
        };
        let child = command
            .arg("-D")
            .arg(&self.settings.pgdata)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false)
            .spawn()
            .context("starting postgres")?;
        // A primary is under the fencing watchdog from its first moment, not from when it
        // answers: a slow start must not outlast the lease unwatched.
        if let (StartAs::Primary, Some(watch), Some(pid)) = (&role, &self.watchdog, child.id()) {
            watch.store(pid, std::sync::atomic::Ordering::SeqCst);
        }
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if !self.is_running() {
                bail!(
                    "PostgreSQL exited while starting (see {})",
                    self.log_path().display()
                );
            }
            // A standby in crash recovery refuses connections for a while; that is fine.
            if self.connect().await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("PostgreSQL did not accept connections within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a new primary that waits for `standby_names` from its first commit on.
    pub async fn start_with_standby_names(&mut self, standby_names: String) -> anyhow::Result<()> {
        self.synchronous_standby_names = standby_names;
        self.start(StartAs::Primary).await
    }

    /// The `synchronous_standby_names` the next start writes.
    pub fn set_standby_names_before_start(&mut self, standby_names: String) {
        self.synchronous_standby_names = standby_names;
    }

    /// Sets `synchronous_standby_names` on a standby about to be promoted (it takes effect
    /// with the promotion) and reloads.
    pub async fn set_synchronous_standby_names_in_recovery(
        &mut self,
        standby_names: String,
    ) -> anyhow::Result<()> {
        self.synchronous_standby_names = standby_names;
        let upstream = self.upstream.clone();
        self.write_config(
            &StartAs::Replica { upstream },
            &self.synchronous_standby_names.clone(),
        )?;
        self.reload().await
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the server: `immediate` (SIGQUIT, fencing: writes stop now) or fast (SIGINT).
    pub async fn stop(&mut self, immediate: bool) -> anyhow::Result<()> {
        let Some(child) = &mut self.child else {
            return Ok(());
        };
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let signal = if immediate {
                rustix::process::Signal::QUIT
            } else {
                rustix::process::Signal::INT
            };
            let _ = rustix::process::kill_process(pid, signal);
        }
        let status = child.wait().await?;
        tracing::info!(%status, immediate, "PostgreSQL stopped");
        self.child = None;
        Ok(())
    }

    /// Rewrites the configuration for a new upstream (or none) and reloads.
    pub async fn set_upstream(&mut self, upstream: Option<(String, u16)>) -> anyhow::Result<()> {
        self.write_config(
            &StartAs::Replica {
                upstream: upstream.clone(),
            },
            &self.synchronous_standby_names.clone(),
        )?;
        self.upstream = upstream;
        self.reload().await
    }

    /// Sets `synchronous_standby_names` and reloads; returns the flush position after the
    /// reload took effect.
    pub async fn set_synchronous_standby_names(
        &mut self,
        value: String,
        leaving: &[String],
    ) -> anyhow::Result<u64> {
        self.synchronous_standby_names = value;
        self.write_config(&StartAs::Primary, &self.synchronous_standby_names.clone())?;
        self.reload().await?;
        let client = self.connect().await?;
        // pg_reload_conf only signals; wait until this backend sees the new value, which
        // the walsenders and committers read at the same reload.
        let mut live = false;
        for _ in 0..250 {
            let row = client
                .query_one("SELECT current_setting('synchronous_standby_names')", &[])
                .await?;
            if row.get::<_, String>(0) == self.synchronous_standby_names {
                live = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !live {
            bail!("synchronous_standby_names did not take effect within 5 s");
        }
        // A walsender reloads at its own pace: until it does, one that serves a member
        // leaving the set still releases commits on that member's flush alone. Ending those
        // walsenders (their replicas reconnect) means no commit after the position measured
        // below is acknowledged with a leaving member's help.
        if !leaving.is_empty() {
            let leaving: Vec<String> = leaving.to_vec();
            let pids: Vec<i32> = client
                .query(
                    "SELECT pid FROM pg_stat_replication WHERE application_name = ANY($1)",
                    &[&leaving],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            client
                .execute(
                    "SELECT pg_terminate_backend(p) FROM unnest($1::int[]) AS p",
                    &[&pids],
                )
                .await?;
            let mut gone = false;
            for _ in 0..250 {
                let row = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                        &[&pids],
                    )
                    .await?;
                if row.get::<_, i64>(0) == 0 {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !gone {
                bail!(
                    "the walsenders of members leaving the synchronous set did not stop within 5 s"
                );
            }
        }
        let row = client
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await?;
        Ok(parse_lsn(row.get(0)))
    }

    /// The upstream it was configured with.
    pub fn upstream(&self) -> Option<&(String, u16)> {
        self.upstream.as_ref()
    }

    /// SIGHUP to the postmaster, as `pg_ctl reload` does: works while a standby still
    /// recovers and refuses connections.
    async fn reload(&self) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            .context("PostgreSQL is not running")?;
        rustix::process::kill_process(pid, rustix::process::Signal::HUP)?;
        Ok(())
    }

    /// Promotes the standby and waits until it accepts writes.
    pub async fn promote(&mut self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        let row = client.query_one("SELECT pg_promote(true, 60)", &[]).await?;
        if !row.get::<_, bool>(0) {
            bail!("pg_promote did not finish within 60 s");
        }
        // Nothing streams into a primary; keep the file honest for the next start.
        self.upstream = None;
        self.write_config(&StartAs::Primary, &self.synchronous_standby_names.clone())?;
        Ok(())
    }

    /// How to connect over the local socket, as `postgres`.
    pub fn local_connection(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.settings.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2));
        config
    }

    /// A connection over the local socket.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let config = self.local_connection();
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(3),
            config.connect(tokio_postgres::NoTls),
        )
        .await
        .context("connecting to PostgreSQL timed out")??;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// One look at the running server.
    pub async fn observe(&self) -> anyhow::Result<Running> {
        let client = self.connect().await?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(),
                        CASE WHEN pg_is_in_recovery()
                             THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                             ELSE pg_current_wal_flush_lsn() END::text,
                        CASE WHEN pg_is_in_recovery()
                             THEN pg_last_wal_replay_lsn()
                             ELSE pg_current_wal_flush_lsn() END::text,
                        CASE WHEN pg_is_in_recovery()
                             THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                                           (SELECT timeline_id FROM pg_control_checkpoint()))
                             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
                        END,
                        (SELECT count(*) FROM pg_stat_wal_receiver WHERE pid IS NOT NULL),
                        pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS NOT NULL",
                &[],
            )
            .await?;
        let mut running = Running {
            in_recovery: row.get(0),
            flushed: row.get::<_, Option<&str>>(1).map_or(0, parse_lsn),
            replayed: row.get::<_, Option<&str>>(2).map_or(0, parse_lsn),
            timeline: row.get::<_, i32>(3) as u32,
            receiver_running: row.get::<_, i64>(4) > 0,
            streamed_since_start: row.get(5),
            streaming: Vec::new(),
            last_archived: None,
            last_archived_age_seconds: None,
        };
        let archiver = client
            .query_one(
                "SELECT last_archived_wal, extract(epoch FROM now() - last_archived_time)::float8
                   FROM pg_stat_archiver",
                &[],
            )
            .await?;
        running.last_archived = archiver.get(0);
        running.last_archived_age_seconds = archiver.get(1);
        if !running.in_recovery {
            for row in client
                .query(
                    "SELECT application_name, coalesce(flush_lsn, '0/0')::text
                       FROM pg_stat_replication WHERE state = 'streaming'",
                    &[],
                )
                .await?
            {
                running
                    .streaming
                    .push((row.get(0), parse_lsn(row.get::<_, &str>(1))));
            }
        }
        Ok(running)
    }
}

impl Postgres {
    fn bootstrap_marker(&self) -> PathBuf {
        self.settings.pgdata.with_extension(BOOTSTRAP_MARKER)
    }

    /// Whether a recovery bootstrap is in progress (or was left unfinished).
    pub fn bootstrap_in_progress(&self) -> bool {
        self.bootstrap_marker().exists()
    }

    /// The directory a recovery bootstrap restores into before moving it into place.
    pub fn staging_dir(&self) -> PathBuf {
        self.settings.pgdata.with_extension("restoring")
    }

    /// Marks a recovery bootstrap as begun, durably, before anything is restored.
    pub fn mark_bootstrap(&self) -> anyhow::Result<()> {
        walarch_core::local_files::write_durably(&self.bootstrap_marker(), b"")?;
        Ok(())
    }

    /// Removes what an unfinished recovery bootstrap left (the data directory, the staging
    /// directory, the WAL directory's content), then its marker; returns whether there was
    /// one. The server must not be running.
    pub fn discard_unfinished_bootstrap(&self) -> anyhow::Result<bool> {
        if !self.bootstrap_in_progress() {
            return Ok(false);
        }
        for dir in [self.settings.pgdata.clone(), self.staging_dir()] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing the unfinished {}", dir.display()))?;
            }
        }
        if let Some(waldir) = &self.settings.waldir {
            empty_directory(waldir)?;
        }
        self.remove_bootstrap_marker()?;
        Ok(true)
    }

    fn remove_bootstrap_marker(&self) -> anyhow::Result<()> {
        let marker = self.bootstrap_marker();
        std::fs::remove_file(&marker)?;
        if let Some(parent) = marker.parent() {
            walarch_core::local_files::sync_dir(parent)?;
        }
        Ok(())
    }

    /// Drops the settings `walarch.conf` manages (and `extra`) from a restored data
    /// directory's `postgresql.auto.conf`, keeping the restore's recovery settings.
    pub fn drop_inherited_settings(dir: &Path, extra: &[String]) -> anyhow::Result<()> {
        let auto = dir.join("postgresql.auto.conf");
        let Ok(text) = std::fs::read_to_string(&auto) else {
            return Ok(());
        };
        let managed = |line: &str| {
            let name = line.split('=').next().unwrap_or("").trim();
            MANAGED_SETTINGS.contains(&name) || extra.iter().any(|e| e == name)
        };
        let kept: Vec<&str> = text.lines().filter(|line| !managed(line)).collect();
        walarch_core::local_files::write_durably(&auto, (kept.join("\n") + "\n").as_bytes())?;
        Ok(())
    }

    /// Moves a restored `pg_wal` to the WAL directory and links it, when there is one.
    pub fn relocate_wal(&self) -> anyhow::Result<()> {
        let Some(waldir) = &self.settings.waldir else {
            return Ok(());
        };
        let pg_wal = self.settings.pgdata.join("pg_wal");
        if pg_wal.is_symlink() {
            return Ok(());
        }
        empty_directory(waldir)?;
        for entry in std::fs::read_dir(&pg_wal)? {
            let entry = entry?;
            std::fs::rename(entry.path(), waldir.join(entry.file_name()))?;
        }
        std::fs::remove_dir(&pg_wal)?;
        std::os::unix::fs::symlink(waldir, &pg_wal)?;
        Ok(())
    }

    /// Waits until the server started on a restored data directory has recovered to its
    /// target and promoted itself (`recovery_target_action = promote`), however long replay
    /// takes; fails when it exits (a target it cannot reach stops PostgreSQL 13+).
    pub async fn wait_until_promoted(&mut self) -> anyhow::Result<()> {
        loop {
            if !self.is_running() {
                bail!(
                    "PostgreSQL stopped during recovery (see {})",
                    self.log_path().display()
                );
            }
            if let Ok(running) = self.observe().await
                && !running.in_recovery
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Removes the restore's recovery settings (see [`RESTORE_SETTINGS`]), gives `postgres`
    /// this cluster's password, removes the bootstrap marker and reloads with the managed
    /// configuration's own `restore_command` and `archive_command` (this cluster's
    /// repository): the WAL kept back since the promotion is archived from here on.
    pub async fn finish_recovery_bootstrap(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        for name in RESTORE_SETTINGS {
            client
                .batch_execute(&format!("ALTER SYSTEM RESET {name}"))
                .await
                .with_context(|| format!("ALTER SYSTEM RESET {name}"))?;
        }
        // The source's password came with the backup; this cluster's peers use its own.
        if let Some(password) = superuser_password() {
            client
                .batch_execute(&format!(
                    "SET password_encryption = 'scram-sha-256'; ALTER USER postgres PASSWORD '{}'",
                    password.replace('\'', "''")
                ))
                .await
                .context("setting the postgres password")?;
        }
        self.remove_bootstrap_marker()?;
        self.write_config(&StartAs::Primary, &self.synchronous_standby_names)?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        Ok(())
    }
}

/// The highest timeline among WAL segment files (`TTTTTTTTXXXXXXXXYYYYYYYY`, also
/// `.partial`) in `pg_wal`.
fn newest_segment_timeline(pg_wal: &Path) -> std::io::Result<Option<u32>> {
    let mut newest = None;
    for entry in std::fs::read_dir(pg_wal)? {
        let name = entry?.file_name();
        let Some(file) = name
            .to_str()
            .and_then(|n| n.parse::<walarch_core::wal::WalFileName>().ok())
            .filter(|f| f.holds_segment_data())
        else {
            continue;
        };
        newest = newest.max(Some(file.timeline().get()));
    }
    Ok(newest)
}

/// The password of `postgres`, when the environment gives one (`PGPASSWORD`).
fn superuser_password() -> Option<String> {
    std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty())
}

/// Empties `dir` (creating it when absent), keeping the directory itself: a mount point.
fn empty_directory(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn which_setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn parse_lsn(text: &str) -> u64 {
    text.parse::<Lsn>().map_or(0, Lsn::as_u64)
}

async fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let output = cmd.stdin(Stdio::null()).output().await?;
    if !output.status.success() {
        bail!(
            "{} ({}): {}",
            cmd.as_std().get_program().to_string_lossy(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_timeline_is_the_highest_among_segment_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest_segment_timeline(dir.path()).unwrap(), None);
        for name in [
            "000000010000000000000007",
            "000000010000000000000008.partial",
            "00000002.history",
            "archive_status",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(newest_segment_timeline(dir.path()).unwrap(), Some(1));
        std::fs::write(dir.path().join("000000020000000000000008"), "").unwrap();
        assert_eq!(newest_segment_timeline(dir.path()).unwrap(), Some(2));
        std::fs::write(dir.path().join("0000000A000000000000000X"), "").unwrap();
        assert_eq!(newest_segment_timeline(dir.path()).unwrap(), Some(2));
    }
}
