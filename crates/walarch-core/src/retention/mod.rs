//! Retention: which backups and WAL a policy lets go, and deleting them without ever touching
//! what a kept backup needs (DESIGN.md §2.7).
//!
//! Three steps, each its own piece:
//! - [`load_inputs`] reads what the repository holds (backups, WAL listing, history files);
//! - [`plan_retention`] is pure: inputs, policy and the current time in, a [`RetentionPlan`]
//!   out, which `--dry-run` prints as it is;
//! - [`apply_retention`] carries a plan out: manifests first, then the rest of those backups'
//!   folders, then WAL, oldest first. A run stopped at any point leaves a repository in
//!   which every listed backup is whole and has its WAL; running again finishes the job.
//!
//! History files (`wal/<TLI>.history`) are never deleted. They are tiny, and PostgreSQL
//! chooses the timeline id at a promotion by probing the archive for history files: deleting
//! one could let a later promotion reuse that timeline id, and two different histories would
//! then share one name.

mod delete;
mod plan;
mod policy;

use crate::backup::RestoreError;
use crate::catalog::Snapshot;
use crate::repo::{RepoError, Repository};
use crate::wal::WalSegmentSize;

pub use delete::{RetentionReport, apply_retention};
pub use plan::{
    Action, BackupDecision, BackupFacts, BackupReason, IncompleteDecision, IncompleteReason,
    PlanTotals, RetentionInputs, RetentionPlan, TimelineStatus, TimelineWalPlan, plan_retention,
};
pub use policy::{RetentionPolicy, RetentionWindow};

/// Reads everything the planner looks at (a [`Snapshot`]): the whole, interrupted and
/// damaged backups, one listing of `wal/` and the history files in it, and the segment size
/// from `walarch.json`.
pub async fn load_inputs(repo: &Repository) -> Result<RetentionInputs, RetentionError> {
    RetentionInputs::from_snapshot(Snapshot::load(repo).await?)
}

impl RetentionInputs {
    /// The planner's inputs from a snapshot of the repository.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Self, RetentionError> {
        let segment_size = match &snapshot.identity {
            Some(identity) => identity.wal_segment_size,
            // Without WAL there is no segment to plan for; the size is never used.
            None if snapshot.wal.is_empty() => WalSegmentSize::DEFAULT,
            None => return Err(RetentionError::NoIdentity),
        };
        let backups = snapshot.backups;
        Ok(RetentionInputs {
            backups: backups.backups.iter().map(BackupFacts::from).collect(),
            incomplete: backups.incomplete,
            damaged: backups
                .damaged
                .iter()
                .map(|d| d.manifest.id.clone())
                .collect(),
            wal: snapshot.wal,
            timelines: snapshot.timelines,
            segment_size,
        })
    }
}

/// Why a retention policy is refused, or why retention cannot plan or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// A policy with neither a number of backups to keep nor a time window.
    #[error(
        "a retention policy keeps a number of newest backups, a time window, or both: neither was given"
    )]
    NoPolicy,
    /// A policy that keeps 0 backups.
    #[error("the number of backups to keep must be at least 1: the newest backup is never deleted")]
    KeepZero,
    /// A retention window that cannot be read, is zero or is longer than 100 years.
    #[error("invalid retention window {text:?}: {reason}")]
    InvalidWindow {
        /// The window as given (or, built from a number, that number of seconds with `s`).
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The repository holds WAL, interrupted or damaged backups, but no complete backup, so
    /// nothing tells what to keep.
    #[error(
        "the repository holds no complete backup (but {wal_files} WAL objects, {incomplete} \
         interrupted and {damaged} damaged backups): retention deletes nothing until one exists"
    )]
    NoCompleteBackups {
        /// The number of objects listed under `wal/`.
        wal_files: usize,
        /// The number of interrupted backups.
        incomplete: usize,
        /// The number of damaged backups (their manifest names missing objects).
        damaged: usize,
    },
    /// The repository holds WAL but no `walarch.json`, so its segment size is unknown.
    #[error(
        "the repository holds WAL but no walarch.json, so its segment size is unknown: \
         retention deletes nothing in a repository it cannot read"
    )]
    NoIdentity,
    /// Reading the repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Loading the repository's backups failed.
    #[error(transparent)]
    Backups(#[from] RestoreError),
    /// A delete failed and retention stopped. What was deleted so far was not needed by any
    /// kept backup, and the rest can be deleted by running retention again.
    #[error(
        "cannot delete {what} in {location}: {source} ({deleted} objects deleted before the \
         failure; every kept backup and its WAL are intact: run retention again to finish)"
    )]
    DeleteFailed {
        /// What was being deleted, for example `"WAL files"`.
        what: &'static str,
        /// The repository's location.
        location: String,
        /// The store's error.
        source: crate::error::StoreFailure,
        /// How many objects this run deleted before the failure.
        deleted: u64,
    },
    /// The caller cancelled the run between two batches of deletes.
    #[error(
        "retention cancelled after {deleted} objects were deleted; every kept backup and its WAL \
         are intact: run retention again to finish"
    )]
    Cancelled {
        /// How many objects this run deleted before it was cancelled.
        deleted: u64,
    },
}

impl RetentionError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            RetentionError::NoPolicy
            | RetentionError::KeepZero
            | RetentionError::InvalidWindow { .. } => ErrorKind::Configuration,
            RetentionError::NoCompleteBackups { .. } | RetentionError::NoIdentity => {
                ErrorKind::Refused
            }
            RetentionError::Repo(e) => e.kind(),
            RetentionError::Backups(e) => e.kind(),
            RetentionError::DeleteFailed { source, .. } => source.kind(),
            RetentionError::Cancelled { .. } => ErrorKind::Cancelled,
        }
    }
}
