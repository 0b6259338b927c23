//! Starting a restored server and waiting until recovery has reached its target: the last
//! step of a point-in-time recovery, reported as where it stopped and how long it took.
//!
//! The server is started with `pg_ctl` (so it outlives walarch, as a service would) and
//! watched through `postmaster.pid`, a connection over its socket, and its log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup::connection_config;
use crate::wal::Lsn;

#[derive(Debug, Clone)]
pub struct StartOptions {
    pub pgdata: PathBuf,
    /// Directory of `pg_ctl`; else `PATH`, else Debian's `/usr/lib/postgresql/<major>/bin`.
    pub pg_bin: Option<PathBuf>,
    /// What the server does at the target: `promote`, `pause` or `shutdown`.
    pub action: String,
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
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// The timeline the server runs on afterwards (a new one after promotion).
    pub timeline: Option<u32>,
    pub seconds: f64,
    pub log_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start PostgreSQL in {pgdata}: {message}")]
    Start { pgdata: String, message: String },
    #[error("PostgreSQL stopped before recovery reached its target{}: see {log}", last_lines.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
    Exited {
        log: String,
        last_lines: Option<String>,
    },
    #[error(
        "recovery has not reached its target after {seconds} s; the server is still running (see {log}){last_error}; stop it with pg_ctl stop -D {pgdata}"
    )]
    Timeout {
        seconds: u64,
        log: String,
        pgdata: String,
        last_error: String,
    },
}

pub async fn start_and_wait(options: &StartOptions) -> Result<RecoveryOutcome, ServerError> {
    let started = Instant::now();
    let pgdata = &options.pgdata;
    let start_error = |message: String| ServerError::Start {
        pgdata: pgdata.display().to_string(),
        message,
    };
    let pg_ctl = find_pg_ctl(options.pg_bin.as_deref(), pgdata);
    let log_dir = pgdata.join("log");
    std::fs::create_dir_all(&log_dir).map_err(|e| start_error(e.to_string()))?;
    let log_file = log_dir.join("walarch-recovery.log");
    let output = Command::new(&pg_ctl)
        .arg("start")
        .arg("-W")
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(&log_file)
        .output()
        .map_err(|e| start_error(format!("{}: {e}", pg_ctl.display())))?;
    if !output.status.success() {
        return Err(start_error(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let exited = || ServerError::Exited {
        log: log_file.display().to_string(),
        last_lines: last_log_lines(&log_file),
    };
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
        let pid_file = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok();
        match pid_file.as_deref().map(PidFile::parse) {
            None if seen_running || started.elapsed() > Duration::from_secs(10) => {
                // The server is gone: that is the goal only for the shutdown action.
                let message = stop_message(&log_file);
                // The log may go elsewhere (logging_collector); pg_control says it too.
                let shut_down_at_target = log_contains(&log_file, "shutdown at recovery target")
                    || control_state(&pg_ctl, pgdata)
                        .is_some_and(|state| state == "shut down in recovery");
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
                return Err(exited());
            }
            None => {}
            Some(pid) => {
                seen_running = true;
                let status = if pid.ready {
                    query_status(&pid)
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
                            stop_message: stop_message(&log_file),
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

/// `pg_ctl` from the given directory, `PATH`, or the Debian layout for the data directory's
/// major version.
fn find_pg_ctl(pg_bin: Option<&Path>, pgdata: &Path) -> PathBuf {
    if let Some(dir) = pg_bin {
        return dir.join("pg_ctl");
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pg_ctl"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        let major = std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap_or_default();
        PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pg_ctl", major.trim()))
    })
}

/// The cluster state `pg_controldata` reports ("shut down in recovery" after a shutdown at
/// the recovery target), from the directory `pg_ctl` is in.
fn control_state(pg_ctl: &Path, pgdata: &Path) -> Option<String> {
    let program = pg_ctl.with_file_name("pg_controldata");
    let output = Command::new(program).arg("-D").arg(pgdata).output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Database cluster state:"))
        .map(|state| state.trim().to_owned())
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
async fn query_status(pid: &PidFile) -> Result<ServerStatus, String> {
    let host = pid.socket_dir.clone().unwrap_or_else(|| "localhost".into());
    let quoted = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let conninfo = format!("host={} port={} dbname=postgres", quoted(&host), pid.port);
    let mut config = connection_config(Some(&conninfo)).map_err(|e| e.to_string())?;
    config.application_name("walarch restore --start");
    config.connect_timeout(Duration::from_secs(5));
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
                        (select timeline_id from pg_control_checkpoint())::int4"
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
fn stop_message(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|line| line.find("recovery stopping").map(|at| &line[at..]))
        .next_back()
        .map(str::to_owned)
}

fn log_contains(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains(needle))
}

/// The last FATAL/PANIC line (else the last line) of the log, for the error message.
fn last_log_lines(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("FATAL") || l.contains("PANIC"))
        .or(lines.last())
        .map(|l| l.trim().to_owned())
}
