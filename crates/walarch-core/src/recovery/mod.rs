//! Recovery planning: which backup and which WAL reach a target, whether all of it is in the
//! repository, and the recoverable window per timeline. Everything here reads; nothing
//! writes. `restore` uses [`plan_recovery`] before it downloads anything.

mod plan;
mod scan;
mod summary;
mod target;
#[cfg(test)]
mod tests;
mod window;

pub use plan::{PlannedBackup, PlannedTimeline, RecoveryPlan, StopPoint, plan_recovery};
pub use scan::WalReading;
pub use target::{
    RecoveryTarget, TargetError, TargetSpec, TimelineChoice, check_name, parse_time,
    parse_timeline, parse_xid, postgres_time_text,
};
pub use window::{RecoverableWindow, recoverable_windows};

use crate::backup::Manifest;
use crate::catalog::{Snapshot, Timelines, WalIndex};
use crate::repo::RepoError;

/// Why recovery to a target cannot be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No complete backup fits the request; the text says why.
    #[error("{0}")]
    NoBackup(String),
    /// A piece recovery needs is not in the repository.
    #[error("{name} is missing from the repository: {why}")]
    Missing {
        /// The missing file: a WAL segment or history file name.
        name: String,
        /// Why recovery needs it.
        why: String,
    },
    /// The target cannot be reached from any suitable backup with the archived WAL; the text
    /// says why.
    #[error("cannot reach the target: {0}")]
    Unreachable(String),
    /// A stored object recovery needs cannot be decompressed or decoded.
    #[error("{key} cannot be read: {reason}")]
    Corrupt {
        /// The store key or WAL segment name of the object.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The repository has no `walarch.json`, so nothing was ever archived into it.
    #[error("the repository has no identity (walarch.json): nothing was ever archived into it")]
    Empty,
    /// Reading the repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A backup operation failed.
    #[error(transparent)]
    Backup(#[from] crate::backup::RestoreError),
}

impl PlanError {
    /// What kind of failure this is: a target the repository cannot reach is refused (the
    /// contract: no recovery starts that cannot get there).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            PlanError::NoBackup(_) | PlanError::Empty => ErrorKind::NotFound,
            PlanError::Missing { .. } | PlanError::Unreachable(_) => ErrorKind::Refused,
            PlanError::Corrupt { .. } => ErrorKind::Corrupt,
            PlanError::Repo(e) => e.kind(),
            PlanError::Backup(e) => e.kind(),
        }
    }
}

/// What planning reads: a [`Snapshot`]'s whole backups, its WAL indexed by timeline and
/// segment, and its history files.
pub(crate) struct RepositoryView {
    pub backups: Vec<Manifest>,
    pub index: WalIndex,
    pub timelines: Timelines,
}

impl RepositoryView {
    pub fn of(snapshot: &Snapshot) -> Result<Self, PlanError> {
        let identity = snapshot.identity.as_ref().ok_or(PlanError::Empty)?;
        Ok(RepositoryView {
            backups: snapshot.backups.backups.clone(),
            index: WalIndex::new(&snapshot.wal, identity.wal_segment_size),
            timelines: snapshot.timelines.clone(),
        })
    }
}
