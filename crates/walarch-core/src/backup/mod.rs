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
pub use session::{BackupSession, BackupStop, ServerCheckpoint, ServerInfo, SessionError};
pub use take::{BackupError, BackupOptions, take_backup};
pub use verify::{VerifyReport, verify_backup};

/// Which backup to use: a named one or the newest complete one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    /// The newest complete backup (`latest`).
    Latest,
    /// The backup with this id.
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

/// The phase a long operation is in, for a progress display or an operator's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Not started yet, or preparing (connecting, scanning, listing).
    Preparing,
    /// Backup: reading, compressing and uploading files.
    Copying,
    /// Backup: waiting for the WAL from the start to the stop to reach the repository.
    WaitingForWal,
    /// Restore: downloading and writing files.
    Restoring,
    /// Restore: making everything durable.
    Syncing,
    /// Verify: reading parts back.
    Verifying,
    /// Retention: deleting.
    Deleting,
    /// Finished (successfully or not).
    Done,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Phase::Preparing,
        Phase::Copying,
        Phase::WaitingForWal,
        Phase::Restoring,
        Phase::Syncing,
        Phase::Verifying,
        Phase::Deleting,
        Phase::Done,
    ];
}

/// Progress of a long operation, shared with whoever displays it: its phase, `total` bytes
/// to process and `done` so far, and the same in files. Updated from worker threads; read
/// whenever the display wants ([`Progress::snapshot`]).
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
    files_total: AtomicU64,
    files_done: AtomicU64,
    phase: std::sync::atomic::AtomicU8,
}

/// One reading of a [`Progress`]: what a progress bar draws or a status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProgressEvent {
    /// What the operation is doing.
    pub phase: Phase,
    /// Bytes processed so far.
    pub bytes_done: u64,
    /// Bytes to process (0 while unknown).
    pub bytes_total: u64,
    /// Files processed so far.
    pub files_done: u64,
    /// Files to process (0 while unknown).
    pub files_total: u64,
}

impl Progress {
    /// Bytes to process.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Bytes processed so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The phase, bytes and files right now.
    pub fn snapshot(&self) -> ProgressEvent {
        ProgressEvent {
            phase: Phase::ALL[usize::from(self.phase.load(Ordering::Relaxed)).min(7)],
            bytes_done: self.done(),
            bytes_total: self.total(),
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
        }
    }

    /// Starts a new stretch of work: `phase`, with these totals and nothing done yet.
    pub(crate) fn restart(&self, phase: Phase, bytes_total: u64, files_total: u64) {
        self.set_phase(phase);
        self.total.store(bytes_total, Ordering::Relaxed);
        self.files_total.store(files_total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.files_done.store(0, Ordering::Relaxed);
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        let index = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase.store(index as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(crate) fn set_files_total(&self, files: u64) {
        self.files_total.store(files, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_file(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }
}
