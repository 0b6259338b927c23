//! The PostgreSQL side of a base backup: one connection that starts the non-exclusive backup,
//! stays open while the files are copied, and stops it (DESIGN.md §4).

use std::path::PathBuf;

use tokio_postgres::{Client, Config, NoTls};

use super::manifest::Tablespace;
use crate::wal::{Lsn, SystemId, TimelineId, WalSegmentSize};

/// What the server says about itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
    /// The server's data directory (`data_directory`), as the server names it.
    pub data_directory: PathBuf,
    /// The port the server listens on (`port`).
    pub port: u16,
    /// `pg_postmaster_start_time()`, as seconds since the Unix epoch.
    pub postmaster_start_epoch: f64,
    /// `pg_is_in_recovery()`: true on a standby.
    pub in_recovery: bool,
    /// The database system identifier (`pg_control_system()`).
    pub system_id: SystemId,
    /// The server's `wal_segment_size`.
    pub wal_segment_size: WalSegmentSize,
    /// The tablespaces other than `pg_default` and `pg_global`, by oid.
    pub tablespaces: Vec<Tablespace>,
}

impl ServerInfo {
    /// The PostgreSQL major version, e.g. 15 for `version_num` 150018.
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }
}

/// The server's last checkpoint, from `pg_control_checkpoint()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCheckpoint {
    /// Where the checkpoint record is (`checkpoint_lsn`).
    pub checkpoint: Lsn,
    /// Where replay from this checkpoint starts (`redo_lsn`).
    pub redo: Lsn,
    /// The checkpoint's timeline (`timeline_id`).
    pub timeline: TimelineId,
}

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone)]
pub struct BackupStop {
    /// The backup's end: the WAL up to here is needed to make it consistent.
    pub stop_lsn: Lsn,
    /// The content of `backup_label`, to be stored with the backup.
    pub backup_label: String,
    /// The content of `tablespace_map`; `None` when the cluster has no tablespaces.
    pub tablespace_map: Option<String>,
}

/// An open connection able to run one non-exclusive backup.
#[derive(Debug)]
pub struct BackupSession {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
    info: ServerInfo,
}

impl BackupSession {
    /// Connects and reads the server's [`ServerInfo`]; refuses majors other than 13 to 18 (older
    /// ones lack what walarch relies on; newer ones may lay out WAL and `pg_control` differently).
    pub async fn connect(config: &Config) -> Result<Self, SessionError> {
        let (client, connection) = config.connect(NoTls).await.map_err(SessionError::Connect)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "connection to PostgreSQL ended");
            }
        });
        let info = read_server_info(&client).await?;
        if !(13..=18).contains(&info.major()) {
            return Err(SessionError::Unsupported(info.version_num));
        }
        Ok(BackupSession {
            client,
            connection,
            info,
        })
    }

    /// What the server said about itself when the session connected.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Starts the backup (`pg_backup_start`, or `pg_start_backup` before 15) and returns the
    /// start LSN. With `fast` the server checkpoints at once instead of spreading it.
    pub async fn start(&self, label: &str, fast: bool) -> Result<Lsn, SessionError> {
        let sql = if self.info.major() >= 15 {
            "SELECT pg_backup_start($1, $2)::text"
        } else {
            "SELECT pg_start_backup($1, $2, false)::text"
        };
        let row = self
            .client
            .query_one(sql, &[&label, &fast])
            .await
            .map_err(|e| SessionError::Query("start the backup", e))?;
        parse_lsn(row.get(0))
    }

    /// Stops the backup without waiting for PostgreSQL's own archiver: walarch waits for the
    /// WAL to reach its repository instead, which is what makes the backup usable.
    pub async fn stop(&self) -> Result<BackupStop, SessionError> {
        let sql = if self.info.major() >= 15 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| SessionError::Query("stop the backup", e))?;
        let tablespace_map: Option<String> = row.get(2);
        Ok(BackupStop {
            stop_lsn: parse_lsn(row.get(0))?,
            backup_label: row.get(1),
            tablespace_map: tablespace_map.filter(|m| !m.is_empty()),
        })
    }

    /// The server's current WAL write position (its replay position on a standby).
    pub async fn current_lsn(&self) -> Result<Lsn, SessionError> {
        let sql = if self.info.in_recovery {
            "SELECT pg_last_wal_replay_lsn()::text"
        } else {
            "SELECT pg_current_wal_lsn()::text"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| SessionError::Query("read the WAL position", e))?;
        parse_lsn(row.get(0))
    }

    /// The last checkpoint as the server reads it from its own `global/pg_control`
    /// (`pg_control_checkpoint()`).
    pub async fn control_checkpoint(&self) -> Result<ServerCheckpoint, SessionError> {
        let row = self
            .client
            .query_one(
                "SELECT checkpoint_lsn::text, redo_lsn::text, timeline_id::int8 FROM pg_control_checkpoint()",
                &[],
            )
            .await
            .map_err(|e| SessionError::Query("read the server's last checkpoint", e))?;
        let timeline: i64 = row.get(2);
        Ok(ServerCheckpoint {
            checkpoint: parse_lsn(row.get(0))?,
            redo: parse_lsn(row.get(1))?,
            timeline: u32::try_from(timeline)
                .ok()
                .and_then(|t| TimelineId::new(t).ok())
                .ok_or_else(|| SessionError::Unexpected(format!("timeline {timeline}")))?,
        })
    }

    /// Closes the connection and waits for it to end.
    pub async fn close(self) {
        drop(self.client);
        let _ = self.connection.await;
    }
}

async fn read_server_info(client: &Client) -> Result<ServerInfo, SessionError> {
    let q = |what| move |e| SessionError::Query(what, e);
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4, current_setting('data_directory'), \
             pg_is_in_recovery(), (SELECT system_identifier::text FROM pg_control_system()), \
             (SELECT setting::int8 * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN '8kB' THEN 8192 \
              WHEN 'MB' THEN 1048576 ELSE 1 END FROM pg_settings WHERE name = 'wal_segment_size'), \
             current_setting('port')::int4, extract(epoch from pg_postmaster_start_time())::float8",
            &[],
        )
        .await
        .map_err(q("read the server's settings (the user needs pg_read_all_settings or superuser)"))?;
    let version_num: i32 = row.get(0);
    let system_id: String = row.get(3);
    let segment_bytes: i64 = row.get(4);
    let port: i32 = row.get(5);
    let tablespaces = client
        .query(
            "SELECT oid::int8, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace \
             WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
            &[],
        )
        .await
        .map_err(q("list tablespaces"))?
        .into_iter()
        .map(|row| Tablespace {
            oid: row.get::<_, i64>(0) as u32,
            name: row.get(1),
            location: PathBuf::from(row.get::<_, String>(2)),
        })
        .collect();
    Ok(ServerInfo {
        version_num: version_num as u32,
        data_directory: PathBuf::from(row.get::<_, String>(1)),
        port: u16::try_from(port).map_err(|_| SessionError::Unexpected(format!("port {port}")))?,
        postmaster_start_epoch: row.get(6),
        in_recovery: row.get(2),
        system_id: system_id
            .parse()
            .map_err(|_| SessionError::Unexpected(format!("system identifier {system_id:?}")))?,
        wal_segment_size: WalSegmentSize::new(segment_bytes as u64).map_err(|e| {
            SessionError::Unexpected(format!("wal_segment_size {segment_bytes}: {e}"))
        })?,
        tablespaces,
    })
}

fn parse_lsn(text: String) -> Result<Lsn, SessionError> {
    text.parse()
        .map_err(|_| SessionError::Unexpected(format!("LSN {text:?}")))
}

/// Why talking to PostgreSQL for a backup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The connection string is not valid; holds the reason.
    #[error("invalid connection string: {0}")]
    Conninfo(String),
    /// The connection to the server could not be opened.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A query failed: what it was for (e.g. "start the backup"), and the error.
    #[error("cannot {0}: {1}")]
    Query(&'static str, #[source] tokio_postgres::Error),
    /// The server is a major other than 13 to 18; holds its `server_version_num`.
    #[error(
        "PostgreSQL {} is not supported: walarch backs up PostgreSQL 13 to 18",
        server_version_text(*.0)
    )]
    Unsupported(u32),
    /// The server returned a value walarch cannot use; holds what it was and its text.
    #[error("PostgreSQL returned an unexpected {0}")]
    Unexpected(String),
}

/// `server_version_num` as PostgreSQL prints versions: 120017 → "12.17", 90624 → "9.6.24".
fn server_version_text(num: u32) -> String {
    if num >= 100_000 {
        format!("{}.{}", num / 10_000, num % 10_000)
    } else {
        format!("{}.{}.{}", num / 10_000, num / 100 % 100, num % 100)
    }
}

impl SessionError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            SessionError::Conninfo(_) | SessionError::Unsupported(_) => ErrorKind::Configuration,
            SessionError::Connect(_) | SessionError::Query(..) => ErrorKind::Transient,
            SessionError::Unexpected(_) => ErrorKind::Corrupt,
        }
    }
}
