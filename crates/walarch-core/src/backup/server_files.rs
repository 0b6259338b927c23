//! Proof that the data directory a backup reads belongs to the server that started the
//! backup. The system identifier alone does not prove it: every standby and physical copy of
//! a server shares it, and a backup that reads a lagging standby's files under its primary's
//! backup label restores without the changes the standby had not replayed, silently.
//!
//! Two checks, each on something a copy does not share:
//! 1. before the backup starts, `postmaster.pid` in the directory must name the server
//!    connected to: the same data directory (as the server sees it, so a sidecar that mounts
//!    the volume elsewhere still matches), port and start time;
//! 2. once the backup has started, the directory's `global/pg_control` must record the
//!    checkpoint the backup starts from (or a later one the server itself reports). Its files
//!    are then flushed at least up to the backup's start, which is what recovery from the
//!    backup label assumes.

use std::path::Path;
use std::time::Duration;

use super::session::{BackupSession, ServerCheckpoint, ServerInfo};
use super::take::BackupError;
use crate::wal::{
    ControlCheckpoint, Lsn, SystemId, checkpoint_from_pg_control, system_id_from_pg_control,
};

/// `pg_postmaster_start_time()` is taken a little after the time `postmaster.pid` records
/// (to the second), once the postmaster has loaded its configuration and libraries.
const START_TIME_SLACK_SECS: f64 = 60.0;

/// The data directory must hold the server's system: copying another cluster's files under
/// this server's backup label would restore garbage.
pub(super) fn check_system(data_dir: &Path, server: SystemId) -> Result<(), BackupError> {
    let control = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&control).map_err(|source| BackupError::Read {
        path: format!(
            "{} (a backup runs on the database host and reads the server's data directory)",
            control.display()
        ),
        source,
    })?;
    let local = system_id_from_pg_control(&bytes).map_err(|e| BackupError::Read {
        path: control.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    if local != server {
        return Err(BackupError::WrongDataDirectory {
            data_dir: data_dir.display().to_string(),
            local,
            server,
        });
    }
    Ok(())
}

/// The server running in a data directory, as its `postmaster.pid` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PostmasterFile {
    pub data_directory: String,
    pub start_epoch: i64,
    pub port: u16,
}

impl PostmasterFile {
    /// Lines 2 to 4 of `postmaster.pid`: data directory, start time, port.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines().skip(1);
        Some(PostmasterFile {
            data_directory: lines.next()?.trim().to_owned(),
            start_epoch: lines.next()?.trim().parse().ok()?,
            port: lines.next()?.trim().parse().ok()?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "the server in {} on port {}, started {}",
            self.data_directory,
            self.port,
            epoch_text(self.start_epoch as f64)
        )
    }

    fn is(&self, server: &ServerInfo) -> bool {
        let started_after = server.postmaster_start_epoch - self.start_epoch as f64;
        self.data_directory.trim_end_matches('/')
            == server
                .data_directory
                .to_string_lossy()
                .trim_end_matches('/')
            && self.port == server.port
            && (-1.0..=START_TIME_SLACK_SECS).contains(&started_after)
    }
}

fn describe_server(server: &ServerInfo) -> String {
    format!(
        "the server connected to runs in {} on port {}, started {}",
        server.data_directory.display(),
        server.port,
        epoch_text(server.postmaster_start_epoch)
    )
}

fn epoch_text(epoch: f64) -> String {
    chrono::DateTime::from_timestamp(epoch as i64, 0).map_or_else(
        || format!("at {epoch}"),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// Check 1: `postmaster.pid` in `data_dir` names the server connected to.
pub(super) fn check_postmaster(data_dir: &Path, server: &ServerInfo) -> Result<(), BackupError> {
    let pid_file = data_dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pid_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NotTheServersFiles {
                data_dir: data_dir.display().to_string(),
                files: "no running server (no postmaster.pid)".into(),
                server: describe_server(server),
            });
        }
        Err(source) => {
            return Err(BackupError::Read {
                path: pid_file.display().to_string(),
                source,
            });
        }
    };
    let file = PostmasterFile::parse(&text).ok_or_else(|| BackupError::Read {
        path: pid_file.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a postmaster.pid"),
    })?;
    if file.is(server) {
        Ok(())
    } else {
        Err(BackupError::NotTheServersFiles {
            data_dir: data_dir.display().to_string(),
            files: format!("{} (postmaster.pid)", file.describe()),
            server: describe_server(server),
        })
    }
}

/// Whether the local checkpoint proves the files are flushed up to the backup's start: it is
/// the very checkpoint the backup started from, or a later one that the server reports as its
/// own last checkpoint too (a checkpoint completed since the start).
pub(super) fn files_reach_backup_start(
    local: &ControlCheckpoint,
    start: Lsn,
    server_now: Option<&ServerCheckpoint>,
) -> bool {
    local.redo == start
        || server_now.is_some_and(|now| {
            local.redo > start
                && now.checkpoint == local.checkpoint
                && now.redo == local.redo
                && now.timeline == local.timeline
        })
}

/// Check 2, right after the backup started at `start`.
pub(super) async fn check_checkpoint(
    data_dir: &Path,
    session: &BackupSession,
    start: Lsn,
) -> Result<(), BackupError> {
    let control = data_dir.join("global/pg_control");
    let mut last = None;
    // A few tries: PostgreSQL rewrites pg_control in place, so one read can be torn, and a
    // checkpoint can complete between reading the file and asking the server.
    for _ in 0..5 {
        let read = std::fs::read(&control)
            .map_err(|source| BackupError::Read {
                path: control.display().to_string(),
                source,
            })
            .map(|bytes| checkpoint_from_pg_control(&bytes));
        match read? {
            Ok(local) => {
                let server_now = if local.redo == start {
                    None
                } else {
                    Some(session.control_checkpoint().await?)
                };
                if files_reach_backup_start(&local, start, server_now.as_ref()) {
                    return Ok(());
                }
                last = Some(local);
            }
            Err(e) => tracing::debug!(error = %e, "pg_control read again"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(match last {
        Some(local) => BackupError::CheckpointMismatch {
            data_dir: data_dir.display().to_string(),
            local_redo: local.redo,
            local_timeline: local.timeline,
            start,
        },
        None => BackupError::Read {
            path: control.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no valid CRC in five reads",
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::wal::{ClusterState, SystemId, TimelineId, WalSegmentSize};

    fn server() -> ServerInfo {
        ServerInfo {
            version_num: 150_000,
            data_directory: PathBuf::from("/var/lib/postgresql/15/main"),
            port: 5432,
            postmaster_start_epoch: 1_763_700_000.25,
            in_recovery: false,
            system_id: SystemId::new(1),
            wal_segment_size: WalSegmentSize::DEFAULT,
            tablespaces: vec![],
        }
    }

    #[test]
    fn postmaster_pid_must_name_the_connected_server() {
        let server = server();
        let file = |dir: &str, start: i64, port: u16| PostmasterFile {
            data_directory: dir.into(),
            start_epoch: start,
            port,
        };
        assert!(file("/var/lib/postgresql/15/main", 1_763_700_000, 5432).is(&server));
        assert!(file("/var/lib/postgresql/15/main/", 1_763_699_990, 5432).is(&server));
        // A standby on the same host: another directory and port.
        assert!(!file("/var/lib/postgresql/15/standby", 1_763_700_000, 5433).is(&server));
        // The same path and port on another host (a virtual IP moved): another start.
        assert!(!file("/var/lib/postgresql/15/main", 1_763_600_000, 5432).is(&server));
        assert!(!file("/var/lib/postgresql/15/main", 1_763_700_100, 5432).is(&server));
        assert_eq!(
            PostmasterFile::parse(
                "4242\n/var/lib/postgresql/15/main\n1763700000\n5432\n/tmp\n*\n  1 2\nready\n"
            ),
            Some(file("/var/lib/postgresql/15/main", 1_763_700_000, 5432))
        );
        assert_eq!(PostmasterFile::parse("4242\n/data\n"), None);
    }

    #[test]
    fn pg_control_must_record_the_backup_start_or_a_later_checkpoint_of_the_server() {
        let at = |checkpoint: u64, redo: u64| ControlCheckpoint {
            system_id: SystemId::new(1),
            checkpoint: Lsn::new(checkpoint),
            redo: Lsn::new(redo),
            timeline: TimelineId::FIRST,
            state: ClusterState::InProduction,
        };
        let start = Lsn::new(0x500_0028);
        assert!(files_reach_backup_start(
            &at(0x500_0060, 0x500_0028),
            start,
            None
        ));
        // A lagging standby: its last restartpoint is older than the backup's start.
        let standby = at(0x300_0060, 0x300_0028);
        let primary_now = ServerCheckpoint {
            checkpoint: Lsn::new(0x500_0060),
            redo: Lsn::new(0x500_0028),
            timeline: TimelineId::FIRST,
        };
        assert!(!files_reach_backup_start(
            &standby,
            start,
            Some(&primary_now)
        ));
        // A checkpoint the server completed after the start: the server reports it too.
        let later = at(0x600_0060, 0x600_0028);
        let server_later = ServerCheckpoint {
            checkpoint: Lsn::new(0x600_0060),
            redo: Lsn::new(0x600_0028),
            timeline: TimelineId::FIRST,
        };
        assert!(files_reach_backup_start(&later, start, Some(&server_later)));
        assert!(!files_reach_backup_start(&later, start, Some(&primary_now)));
    }
}
