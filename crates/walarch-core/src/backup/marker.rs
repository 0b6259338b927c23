//! The restore marker (DESIGN.md §2.5). A restored data directory has the same system
//! identifier as its source, so the identifier cannot stop a point-in-time clone from
//! archiving into its source's repository and mixing two histories there. `walarch restore`
//! therefore leaves `walarch_restore.json` in the data directory; WAL pushed (or a backup
//! taken) from such a directory is refused by a repository that already holds WAL, unless
//! the restore was told that the copy takes the repository over (`--take-over`), which is
//! recorded in the repository as `takeovers/<id>.json`.
//!
//! Once a repository has been accepted (it was empty, or holds the take-over record), the
//! marker remembers it, so later pushes cost one small local read.

use std::io;
use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use serde::{Deserialize, Serialize};

use super::BackupId;
use crate::repo::{PutOutcome, RepoError, Repository};
use crate::wal::SystemId;

/// The name of the restore marker file, in the data directory's top level.
pub const MARKER_FILE: &str = "walarch_restore.json";

/// The content of [`MARKER_FILE`]: which backup a data directory was restored from, and
/// which repositories it may write to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMarker {
    /// When the restore wrote the marker.
    pub restored_at: DateTime<Utc>,
    /// The backup the data directory was restored from.
    pub backup_id: BackupId,
    /// The repository the backup came from (no credentials: locations never hold any).
    pub source_repository: String,
    /// The database system identifier of the restored backup (and so of this copy).
    pub system_id: SystemId,
    /// Set when restored with `--take-over`: the id of the record stored in the source repository.
    #[serde(default)]
    pub take_over: Option<String>,
    /// Repositories this copy has been allowed to write to.
    #[serde(default)]
    pub accepted_repositories: Vec<String>,
}

/// The key of a take-over record.
pub fn takeover_key(id: &str) -> StorePath {
    StorePath::from(format!("takeovers/{id}.json"))
}

/// Reads the marker of `data_dir`; `None` when there is none.
pub fn read_marker(data_dir: &Path) -> io::Result<Option<RestoreMarker>> {
    match std::fs::read(data_dir.join(MARKER_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{MARKER_FILE}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the marker durably (temp file, fsync, rename, directory fsync).
pub fn write_marker(data_dir: &Path, marker: &RestoreMarker) -> io::Result<()> {
    crate::local_files::write_durably(
        &data_dir.join(MARKER_FILE),
        &serde_json::to_vec_pretty(marker).expect("a marker serialises"),
    )
}

/// Records a take-over of `repo` by a restored copy; returns the record's id for the marker.
pub async fn record_takeover(
    repo: &Repository,
    backup: &BackupId,
    target: &Path,
) -> Result<String, MarkerError> {
    let now = Utc::now();
    let id = now.format("%Y%m%dT%H%M%S%.6fZ").to_string();
    let record = serde_json::json!({
        "taken_over_at": now,
        "restored_backup": backup,
        "data_directory": target,
        "host": rustix::system::uname().nodename().to_string_lossy(),
    });
    let body = Bytes::from(serde_json::to_vec_pretty(&record).expect("a record serialises"));
    match repo.put_new(&takeover_key(&id), body).await? {
        PutOutcome::Created => Ok(id),
        PutOutcome::AlreadyExists => Err(MarkerError::Io {
            path: takeover_key(&id).to_string(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "take-over record exists"),
        }),
    }
}

/// Refuses to let a restored copy write into a repository that holds someone else's WAL
/// (see the module documentation). Cheap when there is no marker: one failed open.
pub async fn check_restored_copy(repo: &Repository, data_dir: &Path) -> Result<(), MarkerError> {
    let io_error = |source| MarkerError::Io {
        path: data_dir.join(MARKER_FILE).display().to_string(),
        source,
    };
    let Some(mut marker) = read_marker(data_dir).map_err(io_error)? else {
        return Ok(());
    };
    let here = repo.location().to_string();
    if marker.accepted_repositories.contains(&here) {
        return Ok(());
    }
    let taken_over = match &marker.take_over {
        Some(id) => repo.object_size(&takeover_key(id)).await?.is_some(),
        None => false,
    };
    if !taken_over && holds_wal(repo).await? {
        return Err(MarkerError::RestoredCopy {
            data_dir: data_dir.display().to_string(),
            backup: marker.backup_id.to_string(),
            source_repo: marker.source_repository.clone(),
            repo: here,
        });
    }
    marker.accepted_repositories.push(here);
    write_marker(data_dir, &marker).map_err(io_error)
}

async fn holds_wal(repo: &Repository) -> Result<bool, MarkerError> {
    let prefix = StorePath::from("wal");
    let mut listing = repo.store().list(Some(&prefix));
    match listing.next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(source)) => Err(repo.store_error("list", &prefix, source).into()),
    }
}

/// Why a restored copy may not write into a repository, or why its marker could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkerError {
    /// The data directory is a restored copy, the repository already holds WAL, and no
    /// take-over of it was recorded.
    #[error(
        "{data_dir} was restored from backup {backup} of {source_repo} and {repo} already holds WAL: \
         archiving this copy there would mix two histories. Archive into a new repository, or \
         restore it as a take-over of the repository if this copy replaces the original"
    )]
    RestoredCopy {
        /// The restored data directory.
        data_dir: String,
        /// The id of the backup it was restored from.
        backup: String,
        /// The repository the backup came from.
        source_repo: String,
        /// The repository the copy tried to write to.
        repo: String,
    },
    /// The marker file could not be read or written, or a take-over record could not be
    /// created because one with the same id exists.
    #[error("cannot use the restore marker {path}: {source}")]
    Io {
        /// The marker file, or the take-over record's key.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The repository or its store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl MarkerError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            MarkerError::RestoredCopy { .. } => crate::error::ErrorKind::Refused,
            MarkerError::Io { source, .. } => crate::error::io_error_kind(source),
            MarkerError::Repo(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RepoLocation;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    fn repo(name: &str) -> Repository {
        Repository::from_store(
            Arc::new(InMemory::new()),
            RepoLocation::Local(format!("/{name}").into()),
        )
    }

    fn marker(take_over: Option<String>) -> RestoreMarker {
        RestoreMarker {
            restored_at: Utc::now(),
            backup_id: "20261121T142700Z".parse().unwrap(),
            source_repository: "file:///source".into(),
            system_id: SystemId::new(7),
            take_over,
            accepted_repositories: vec![],
        }
    }

    async fn add_wal(repo: &Repository) {
        repo.put_new(
            &StorePath::from("wal/0000000100000000/000000010000000000000001.zst"),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn no_marker_means_no_restriction() {
        let dir = tempfile::tempdir().unwrap();
        let source = repo("source");
        add_wal(&source).await;
        check_restored_copy(&source, dir.path()).await.unwrap();
    }

    #[tokio::test]
    async fn a_restored_copy_may_not_write_into_a_repository_with_wal() {
        let dir = tempfile::tempdir().unwrap();
        write_marker(dir.path(), &marker(None)).unwrap();
        let source = repo("source");
        add_wal(&source).await;
        let err = check_restored_copy(&source, dir.path()).await.unwrap_err();
        assert!(matches!(err, MarkerError::RestoredCopy { .. }), "{err}");
        assert!(err.to_string().contains("take-over"), "{err}");

        // An empty repository is accepted, and remembered: its own WAL does not lock it out.
        let fresh = repo("fresh");
        check_restored_copy(&fresh, dir.path()).await.unwrap();
        add_wal(&fresh).await;
        check_restored_copy(&fresh, dir.path()).await.unwrap();
        assert_eq!(
            read_marker(dir.path())
                .unwrap()
                .unwrap()
                .accepted_repositories,
            ["file:///fresh"]
        );
    }

    #[tokio::test]
    async fn a_recorded_take_over_opens_the_source_repository() {
        let dir = tempfile::tempdir().unwrap();
        let source = repo("source");
        add_wal(&source).await;
        let id = record_takeover(&source, &"20261121T142700Z".parse().unwrap(), dir.path())
            .await
            .unwrap();
        write_marker(dir.path(), &marker(Some(id))).unwrap();
        check_restored_copy(&source, dir.path()).await.unwrap();

        // A marker claiming a take-over that the repository never recorded is refused.
        let other = tempfile::tempdir().unwrap();
        write_marker(
            other.path(),
            &marker(Some("20990101T000000.000000Z".into())),
        )
        .unwrap();
        assert!(check_restored_copy(&source, other.path()).await.is_err());
    }
}
