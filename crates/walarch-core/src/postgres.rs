//! A local PostgreSQL server: starting one on a data directory and watching it until
//! recovery has reached its target (the last step of a point-in-time recovery, reported as
//! where it stopped and how long it took). An instance manager reuses it.
//!
//! The server is started with `pg_ctl` (so it outlives walarch, as a service would) and
//! watched through `postmaster.pid`, a connection over its socket, and its log. Processes
//! run through tokio and files are read on blocking threads: nothing here blocks the async
//! executor. Nothing is read from the process environment: where the binaries are and which
//! user to connect as are given.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::process::Command;

use crate::error::ErrorKind;
use crate::wal::{ClusterState, Lsn, checkpoint_from_pg_control};

/// How to start a server on a restored data directory and what to wait for.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The data directory.
    pub pgdata: PathBuf,
    /// The server binaries to start it with: those of the data directory's major version
    /// ([`find_server_binaries`]).
    pub binaries: ServerBinaries,
    /// The role to connect as to watch recovery (over the server's socket).
    pub user: String,
    /// What the server does at the target: `promote`, `pause` or `shutdown`.
    pub action: String,
    /// How long to wait for recovery to get there.
    pub timeout: Duration,
}

/// How recovery ended.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryOutcome {
    /// `promoted`, `paused` or `shut down`.
    pub state: String,
    /// PostgreSQL's own words on where it stopped ("recovery stopping before commit of
    /// transaction 745, time ..."), when its log is readable.
    pub stop_message: Option<String>,
    /// The last replayed record's end, and the time of the last replayed commit.
    pub replayed_to: Option<Lsn>,
    /// `pg_last_xact_replay_timestamp()`: when the last replayed transaction committed or
    /// aborted; `None` when none was replayed or the server shut down.
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// The timeline the server writes on after promotion (the one its current WAL file
    /// names; the last checkpoint's may still be the old one). `None` while it is still in
    /// recovery (paused, or shut down at the target): which timeline replay is on is not
    /// reported by PostgreSQL, and the last checkpoint's can be an ancestor.
    pub timeline: Option<u32>,
    /// Seconds from starting the server to recovery reaching its target.
    pub seconds: f64,
    /// The server's log file (`<pgdata>/log/walarch-recovery.log`).
    pub log_file: PathBuf,
}

/// Why a server could not be started, or did not reach its target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The binaries given are of another major version than the data directory's.
    #[error(
        "{dir} holds PostgreSQL {found}'s binaries, but the backup is of PostgreSQL {wanted}: \
         a data directory starts only with the binaries of its own major version"
    )]
    WrongBinaries {
        /// The directory of the binaries.
        dir: String,
        /// Their major version.
        found: u32,
        /// The data directory's (the backup's) major version.
        wanted: u32,
    },
    /// No PostgreSQL binaries of the major version needed were found.
    #[error("no PostgreSQL {major} server binaries found (looked in {searched})")]
    NoBinaries {
        /// The major version needed.
        major: u32,
        /// Where they were looked for.
        searched: String,
    },
    /// `pg_ctl start` could not be run or failed.
    #[error("cannot start PostgreSQL in {pgdata}: {message}")]
    Start {
        /// The data directory.
        pgdata: String,
        /// What went wrong: `pg_ctl`'s standard error, or why it could not be run.
        message: String,
    },
    /// The server stopped before recovery reached its target (other than by a shutdown at
    /// the target when that was the action).
    #[error("PostgreSQL stopped before recovery reached its target{}: see {log}", last_lines.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
    Exited {
        /// The server's log file.
        log: String,
        /// The log's last FATAL or PANIC line (else its last line); `None` when the log is
        /// empty or unreadable.
        last_lines: Option<String>,
    },
    /// Recovery did not reach its target within the timeout; the server is left running.
    #[error(
        "recovery has not reached its target after {seconds} s; the server is still running (see {log}){last_error}; stop it with pg_ctl stop -D {pgdata}"
    )]
    Timeout {
        /// The timeout, in whole seconds.
        seconds: u64,
        /// The server's log file.
        log: String,
        /// The data directory.
        pgdata: String,
        /// `; last connection attempt: <error>` when the last attempt to query the server
        /// failed, else empty.
        last_error: String,
    },
}

impl ServerError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServerError::WrongBinaries { .. } | ServerError::NoBinaries { .. } => {
                ErrorKind::Configuration
            }
            ServerError::Start { .. } => ErrorKind::Configuration,
            ServerError::Exited { .. } => ErrorKind::Refused,
            ServerError::Timeout { .. } => ErrorKind::Transient,
        }
    }
}

/// Starts PostgreSQL on `options.pgdata` and waits until recovery has promoted, paused or
/// shut down at its target, as `options.action` says.
pub async fn start_and_wait(options: &StartOptions) -> Result<RecoveryOutcome, ServerError> {
    let started = Instant::now();
    let pgdata = &options.pgdata;
    let start_error = |message: String| ServerError::Start {
        pgdata: pgdata.display().to_string(),
        message,
    };
    let bin_dir = options.binaries.dir.clone();
    let data_major = tokio::fs::read_to_string(pgdata.join("PG_VERSION"))
        .await
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    if let Some(data_major) = data_major.filter(|m| *m != options.binaries.major) {
        return Err(ServerError::WrongBinaries {
            dir: bin_dir.display().to_string(),
            found: options.binaries.major,
            wanted: data_major,
        });
    }
    let pg_ctl = bin_dir.join("pg_ctl");
    let log_dir = pgdata.join("log");
    tokio::fs::create_dir_all(&log_dir)
        .await
        .map_err(|e| start_error(e.to_string()))?;
    let log_file = log_dir.join("walarch-recovery.log");
    let output = Command::new(&pg_ctl)
        .arg("start")
        .arg("-W")
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(&log_file)
        .output()
        .await
        .map_err(|e| start_error(format!("{}: {e}", pg_ctl.display())))?;
    if !output.status.success() {
        return Err(start_error(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let log = LogFile(log_file.clone());
    let mut seen_running = false;
    // Why the server could not be asked, if it could not: said on timeout, since a server
    // that accepts no connection from this user (pg_hba) would otherwise look stuck.
    let mut last_error: Option<String> = None;
    loop {
        if started.elapsed() > options.timeout {
            return Err(ServerError::Timeout {
                seconds: options.timeout.as_secs(),
                log: log_file.display().to_string(),
                pgdata: pgdata.display().to_string(),
                last_error: last_error
                    .map(|e| format!("; last connection attempt: {e}"))
                    .unwrap_or_default(),
            });
        }
        let pid_file = tokio::fs::read_to_string(pgdata.join("postmaster.pid"))
            .await
            .ok();
        match pid_file.as_deref().map(PidFile::parse) {
            None if seen_running || started.elapsed() > Duration::from_secs(10) => {
                // The server is gone: that is the goal only for the shutdown action.
                let text = log.read().await;
                let message = stop_message(&text);
                // The log may go elsewhere (logging_collector); pg_control says it too.
                let shut_down_at_target = text.contains("shutdown at recovery target")
                    || control_state(pgdata).await == Some(ClusterState::ShutDownInRecovery);
                // PostgreSQL shuts down instead of pausing when hot_standby is off.
                if matches!(options.action.as_str(), "shutdown" | "pause") && shut_down_at_target {
                    return Ok(RecoveryOutcome {
                        state: "shut down".into(),
                        stop_message: message,
                        replayed_to: None,
                        last_replayed_commit: None,
                        timeline: None,
                        seconds: started.elapsed().as_secs_f64(),
                        log_file,
                    });
                }
                return Err(ServerError::Exited {
                    log: log_file.display().to_string(),
                    last_lines: last_log_lines(&text),
                });
            }
            None => {}
            Some(pid) => {
                seen_running = true;
                let status = if pid.ready {
                    query_status(&pid, &options.user)
                        .await
                        .map_err(|e| last_error = Some(e))
                        .ok()
                } else {
                    None
                };
                if let Some(status) = status {
                    let done = match options.action.as_str() {
                        "pause" => status.paused,
                        "shutdown" => false,
                        _ => !status.in_recovery,
                    };
                    if done {
                        return Ok(RecoveryOutcome {
                            state: if status.in_recovery {
                                "paused".into()
                            } else {
                                "promoted".into()
                            },
                            stop_message: stop_message(&log.read().await),
                            replayed_to: status.replay_lsn,
                            last_replayed_commit: status.last_commit,
                            timeline: status.timeline,
                            seconds: started.elapsed().as_secs_f64(),
                            log_file,
                        });
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the server running on `pgdata` (`pg_ctl stop -m fast`, waiting); a server that is
/// not running is not an error.
pub async fn stop_server(pgdata: &Path, binaries: &ServerBinaries) -> Result<(), ServerError> {
    if !tokio::fs::try_exists(pgdata.join("postmaster.pid"))
        .await
        .unwrap_or(true)
    {
        return Ok(());
    }
    let pg_ctl = binaries.dir.join("pg_ctl");
    let output = Command::new(&pg_ctl)
        .args(["stop", "-m", "fast", "-w", "-t", "120", "-D"])
        .arg(pgdata)
        .output()
        .await
        .map_err(|e| ServerError::Start {
            pgdata: pgdata.display().to_string(),
            message: format!("{}: {e}", pg_ctl.display()),
        })?;
    let still_running = tokio::fs::try_exists(pgdata.join("postmaster.pid"))
        .await
        .unwrap_or(true);
    if output.status.success() || !still_running {
        return Ok(());
    }
    Err(ServerError::Start {
        pgdata: pgdata.display().to_string(),
        message: format!(
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

/// How to connect as `user` to the server running on `pgdata`: over the socket and port its
/// `postmaster.pid` names.
pub async fn local_connection(pgdata: &Path, user: &str) -> Result<tokio_postgres::Config, String> {
    let text = tokio::fs::read_to_string(pgdata.join("postmaster.pid"))
        .await
        .map_err(|e| format!("no server running on {}: {e}", pgdata.display()))?;
    let pid = PidFile::parse(&text);
    let mut config = tokio_postgres::Config::new();
    match &pid.socket_dir {
        Some(dir) => config.host_path(dir),
        None => config.host("localhost"),
    };
    config.port(pid.port).user(user);
    Ok(config)
}

/// The PostgreSQL server binaries (`postgres`, `pg_ctl`, `initdb`) of one major version, in one
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinaries {
    /// The directory that holds them.
    pub dir: PathBuf,
    /// Their major version, as `postgres --version` reports it.
    pub major: u32,
}

/// The usual places of one major version's server binaries: Debian/Ubuntu, RHEL/PGDG,
/// Homebrew, a source build.
pub fn usual_locations(major: u32) -> Vec<PathBuf> {
    [
        format!("/usr/lib/postgresql/{major}/bin"),
        format!("/usr/pgsql-{major}/bin"),
        format!("/opt/homebrew/opt/postgresql@{major}/bin"),
        format!("/usr/local/opt/postgresql@{major}/bin"),
        format!("/usr/local/pgsql-{major}/bin"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// The major version of the server binaries in `dir` (`postgres --version`), if `dir` holds
/// both `postgres` and the `pg_ctl` that starts it.
pub async fn binaries_major(dir: &Path) -> Option<u32> {
    if !tokio::fs::metadata(dir.join("pg_ctl"))
        .await
        .is_ok_and(|m| m.is_file())
    {
        return None;
    }
    let output = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .await
        .ok()?;
    // "postgres (PostgreSQL) 18.4", "postgres (PostgreSQL) 9.6.24 ...".
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

/// The server binaries of major version `major`: `given` when it names a directory (which
/// must hold that version: a PostgreSQL 16 data directory started by 18's binaries is
/// refused, by name), else the first of `candidates` (absolute paths only: an empty or
/// relative `PATH` entry means the working directory) and then [`usual_locations`] that holds
/// that version. A `{major}` in a path stands for the version.
pub async fn find_server_binaries(
    major: u32,
    given: Option<&Path>,
    candidates: &[PathBuf],
) -> Result<ServerBinaries, ServerError> {
    let expand =
        |dir: &Path| PathBuf::from(dir.to_string_lossy().replace("{major}", &major.to_string()));
    if let Some(dir) = given {
        let dir = expand(dir);
        return match binaries_major(&dir).await {
            Some(found) if found == major => Ok(ServerBinaries { dir, major }),
            Some(found) => Err(ServerError::WrongBinaries {
                dir: dir.display().to_string(),
                found,
                wanted: major,
            }),
            None => Err(ServerError::NoBinaries {
                major,
                searched: dir.display().to_string(),
            }),
        };
    }
    let searched: Vec<PathBuf> = candidates
        .iter()
        .filter(|dir| dir.is_absolute())
        .map(|dir| expand(dir))
        .chain(usual_locations(major))
        .collect();
    for dir in &searched {
        if binaries_major(dir).await == Some(major) {
            return Ok(ServerBinaries {
                dir: dir.clone(),
                major,
            });
        }
    }
    Err(ServerError::NoBinaries {
        major,
        searched: searched
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The server's log file, read whole when needed (it is small: one recovery).
struct LogFile(PathBuf);

impl LogFile {
    async fn read(&self) -> String {
        tokio::fs::read_to_string(&self.0).await.unwrap_or_default()
    }
}

/// The cluster state in the data directory's `global/pg_control` ("shut down in recovery"
/// after a shutdown at the recovery target), read directly: not every installation has
/// `pg_controldata` beside the server.
async fn control_state(pgdata: &Path) -> Option<ClusterState> {
    let bytes = tokio::fs::read(pgdata.join("global/pg_control"))
        .await
        .ok()?;
    checkpoint_from_pg_control(&bytes)
        .ok()
        .map(|control| control.state)
}

/// The lines of `postmaster.pid` that say where and whether the server listens.
struct PidFile {
    port: u16,
    socket_dir: Option<String>,
    ready: bool,
}

impl PidFile {
    fn parse(text: &str) -> PidFile {
        let lines: Vec<&str> = text.lines().collect();
        PidFile {
            port: lines
                .get(3)
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(5432),
            socket_dir: lines
                .get(4)
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
            ready: lines.get(7).is_some_and(|s| s.trim() == "ready"),
        }
    }
}

struct ServerStatus {
    in_recovery: bool,
    paused: bool,
    replay_lsn: Option<Lsn>,
    last_commit: Option<DateTime<Utc>>,
    timeline: Option<u32>,
}

/// Asks the server how far recovery has come; an error while it does not answer (yet).
async fn query_status(pid: &PidFile, user: &str) -> Result<ServerStatus, String> {
    let mut config = tokio_postgres::Config::new();
    match &pid.socket_dir {
        Some(dir) => config.host_path(dir),
        None => config.host("localhost"),
    };
    config
        .port(pid.port)
        .user(user)
        .dbname("postgres")
        .application_name("walarch recovery watch")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    // Paused means "paused", not "pause requested": PostgreSQL 14 added the state function;
    // before it, pg_is_wal_replay_paused() said exactly that.
    let version: Option<i32> = client
        .query_one("select current_setting('server_version_num')::int4", &[])
        .await
        .ok()
        .map(|row| row.get(0));
    let paused = if version.is_some_and(|v| v >= 140_000) {
        "pg_get_wal_replay_pause_state() = 'paused'"
    } else {
        "pg_is_wal_replay_paused()"
    };
    let row = client
        .query_one(
            &format!(
                "select pg_is_in_recovery(),
                        pg_is_in_recovery() and {paused},
                        pg_last_wal_replay_lsn()::text,
                        pg_last_xact_replay_timestamp(),
                        case when pg_is_in_recovery() then null
                             else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int4
                        end"
            ),
            &[],
        )
        .await
        .map_err(|e| e.to_string());
    drop(client);
    let _ = driver.await;
    let row = row?;
    Ok(ServerStatus {
        in_recovery: row.get(0),
        paused: row.get(1),
        replay_lsn: row
            .get::<_, Option<String>>(2)
            .and_then(|text| text.parse().ok()),
        last_commit: row.get(3),
        timeline: row.get::<_, Option<i32>>(4).map(|t| t as u32),
    })
}

/// PostgreSQL's "recovery stopping ..." line, if the log holds it.
fn stop_message(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.find("recovery stopping").map(|at| &line[at..]))
        .next_back()
        .map(str::to_owned)
}

/// The last FATAL/PANIC line (else the last line) of the log, for the error message.
fn last_log_lines(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("FATAL") || l.contains("PANIC"))
        .or(lines.last())
        .map(|l| l.trim().to_owned())
}
