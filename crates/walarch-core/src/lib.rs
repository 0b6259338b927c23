//! walarch-core: the engine behind `walarch`, usable as a library.
//!
//! - [`wal`]: PostgreSQL's WAL vocabulary (LSNs, timelines, file names, page headers).
//! - [`codec`]: compression of stored objects.
//! - [`store`]: opening a repository's object store from a URL, and the key layout.
//! - [`repo`]: the repository: its identity (`walarch.json`) and WAL objects.
//! - [`archive`]: wal-push and wal-fetch with the data-safety contract, push-ahead and fetch-ahead.
//! - [`backup`]: base backups: taking, listing, restoring and verifying them.
//! - [`catalog`]: what the repository holds (WAL per timeline, gaps, latest archive).
//! - [`recovery`]: recovery targets, `plan` (backup, timelines, WAL, bytes), the recoverable
//!   window.
//! - [`postgres`]: starting a local PostgreSQL server and watching it reach its target.
//! - [`drill`]: restore drills: recover into a scratch directory, check, report RTO/RPO.
//! - [`metrics`]: archiving, backups, recoverable windows and drills as OpenMetrics text.
//! - [`retention`]: which backups and WAL a policy lets go, and deleting them safely.
//! - [`local_files`]: temporary files beside local files, and sweeping what a killed process left.

#![warn(missing_docs)]

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod check;
pub mod codec;
pub mod crypto;
pub mod drill;
mod engine;
pub mod error;
pub mod limits;
pub mod local_files;
pub mod metrics;
pub mod postgres;
pub mod recovery;
pub mod repo;
pub mod retention;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod wal;

pub use engine::{
    BackupRequest, CheckedPlan, DamagedSummary, Engine, EngineConfig, FetchAheadConfig,
    InProcessWorkers, InfoReport, PushAheadConfig, RestoreCommand, RestoreRequest, TargetAction,
    VerifyOutcome, WorkerHost, WorkerKind,
};
pub use error::{Error, ErrorKind};
pub use tokio_util::sync::CancellationToken;
