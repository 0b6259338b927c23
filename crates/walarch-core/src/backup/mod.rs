//! Base backups: taking them (`pg_backup_start`/`pg_backup_stop` through tokio-postgres, files
//! read from the local data directory into compressed tar parts uploaded in parallel), listing
//! them, restoring them into an empty directory, and verifying them against their manifests.
//!
//! Layout in the repository (DESIGN.md §3): `backups/<id>/data/<n>.tar.zst`, `backup_label`,
//! `tablespace_map` and, written last, `manifest.json`. A backup without a manifest does not
//! exist. Each part is a plain tar stream in a standard zstd frame, so in an emergency
//! `zstd -d < 0.tar.zst | tar x` restores by hand (then add `backup_label` from the backup).

mod label;
mod list;
mod manifest;
pub mod marker;
mod parts;
mod read;
mod restore;
mod scan;
mod server_files;
mod session;
mod take;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};

pub use label::BackupLabel;
pub use list::{BackupList, DamagedBackup, find_backup, list_backups};
pub use manifest::{
    BackupId, DirectoryEntry, FileEntry, MANIFEST_FORMAT, Manifest, ManifestError, PartEntry,
    Tablespace, safe_relative_path,
};
pub use parts::PartError;
pub use read::PartReadError;
pub use restore::{RecoverySettings, RestoreError, RestoreOptions, RestoreReport, restore_backup};
pub use session::{
    BackupSession, BackupStop, ServerCheckpoint, ServerInfo, SessionError, connection_config,
};
pub use take::{BackupError, BackupOptions, take_backup};
pub use verify::{VerifyReport, verify_backup};

/// Which backup to use: a named one or the newest complete one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    Latest,
    Id(BackupId),
}

impl std::str::FromStr for BackupSelector {
    type Err = ManifestError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "latest" {
            Ok(BackupSelector::Latest)
        } else {
            text.parse().map(BackupSelector::Id)
        }
    }
}

/// Progress of a long operation, shared with whoever displays it: `total` bytes to process,
/// `done` so far. Updated from worker threads; read whenever the display wants.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}
