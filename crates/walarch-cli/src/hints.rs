//! What to do about an engine error, in this command line's terms. The engine's messages say
//! what failed and why without naming flags (it serves other callers too); the hint names the
//! flag or command that fixes it.

use walarch_core::Error;
use walarch_core::archive::PushError;
use walarch_core::backup::marker::MarkerError;
use walarch_core::backup::{BackupError, RestoreError, SessionError};
use walarch_core::recovery::PlanError;
use walarch_core::retention::RetentionError;

/// The hint for `error`, if one applies.
pub fn hint(error: &anyhow::Error) -> Option<&'static str> {
    let engine = error.chain().find_map(|c| c.downcast_ref::<Error>())?;
    match engine {
        Error::Restore(RestoreError::NotEmpty(_)) => Some("--force replaces its contents"),
        Error::Restore(RestoreError::Interrupted(_)) => {
            Some("--force empties it and restores again")
        }
        Error::Backup(BackupError::Session(SessionError::Connect(_)))
        | Error::Session(SessionError::Connect(_)) => {
            Some("set --dbname, or PGHOST, PGPORT and PGUSER")
        }
        Error::Backup(
            BackupError::WrongDataDirectory { .. }
            | BackupError::NotTheServersFiles { .. }
            | BackupError::CheckpointMismatch { .. },
        ) => Some("--pgdata names the data directory, --dbname the server"),
        Error::Push(PushError::RestoredCopy(MarkerError::RestoredCopy { .. }))
        | Error::Backup(BackupError::RestoredCopy(MarkerError::RestoredCopy { .. }))
        | Error::Marker(MarkerError::RestoredCopy { .. }) => Some(
            "archive the copy into a new repository, or restore it with --take-over if it replaces the original",
        ),
        Error::Plan(PlanError::NoBackup(_))
        | Error::Retention(RetentionError::NoCompleteBackups { .. }) => {
            Some("take a backup with `walarch backup`; `walarch backups` lists them")
        }
        Error::Plan(PlanError::Unreachable(_)) => {
            Some("--backup ID picks a backup, --target-timeline a timeline")
        }
        _ => None,
    }
}
