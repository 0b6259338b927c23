//! One classification for every error the engine returns, so that a caller's policy is a
//! `match` on [`ErrorKind`] rather than on message text: the CLI turns it into PostgreSQL's
//! exit statuses, an instance manager or operator into "retry later", "stop and page" or
//! "report to the user".
//!
//! Every public error type of this crate has a `kind()` method; [`Error`] wraps them all for
//! the [`crate::Engine`] API. Store failures keep the store's error as their source
//! ([`StoreFailure`]), displayed with credentials removed (DESIGN.md §2.9).

use std::fmt;

use serde::Serialize;

use crate::store::redact_secrets;

/// What kind of failure an error is, and so what a caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store (or the repository) answered that the thing asked for does not exist.
    NotFound,
    /// Worth retrying: the store or the network failed, a request timed out, a local write
    /// failed (disk full), the server could not be reached.
    Transient,
    /// Refused by the data-safety contract: another system's WAL, different content under an
    /// archived name, a restored copy writing into its source's repository, a target the
    /// repository cannot reach, a data directory that is not the server's.
    Refused,
    /// Stored data failed its checksum or does not parse: do not use it, investigate.
    Corrupt,
    /// A concurrent writer got there first (a lost race, a withdrawn claim).
    Conflict,
    /// The operation was cancelled by its caller.
    Cancelled,
    /// The settings or arguments are wrong: fix them, retrying will not help.
    Configuration,
}

impl ErrorKind {
    /// Whether the same call may succeed later without anything being changed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Conflict)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Transient => "transient",
            ErrorKind::Refused => "refused",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Configuration => "configuration",
        })
    }
}

/// An object store's error, kept whole ([`StoreFailure::inner`]) and displayed with secrets
/// removed. It reports no further source: the store's error chain can quote request details
/// that only the redacted text is safe to show.
pub struct StoreFailure(Box<object_store::Error>);

impl StoreFailure {
    pub(crate) fn new(error: object_store::Error) -> Self {
        StoreFailure(Box::new(error))
    }

    /// The store's own error.
    pub fn inner(&self) -> &object_store::Error {
        &self.0
    }

    /// How this store failure is classified.
    pub fn kind(&self) -> ErrorKind {
        store_error_kind(&self.0)
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_secrets(&self.0.to_string()))
    }
}

impl fmt::Debug for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreFailure({self})")
    }
}

impl std::error::Error for StoreFailure {}

/// The kind of an object store error. Everything the store could not do that is not a
/// definite answer (not found, exists, not allowed, not supported) is transient: object_store
/// has already retried it.
pub(crate) fn store_error_kind(error: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            ErrorKind::Conflict
        }
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::InvalidPath { .. } => ErrorKind::Configuration,
        _ => ErrorKind::Transient,
    }
}

/// The kind of a local I/O error: missing paths and permissions are the caller's to fix,
/// the rest (disk full, I/O errors) may clear.
pub(crate) fn io_error_kind(error: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::NotFound | K::PermissionDenied | K::NotADirectory | K::IsADirectory => {
            ErrorKind::Configuration
        }
        K::AlreadyExists => ErrorKind::Conflict,
        K::InvalidData => ErrorKind::Corrupt,
        _ => ErrorKind::Transient,
    }
}

/// Any error of the engine: the error of the operation that failed, classified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository location is invalid, or its store cannot be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A repository operation failed.
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    /// Compressing or decoding failed, or a compression setting is invalid.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// A WAL push failed.
    #[error(transparent)]
    Push(#[from] crate::archive::PushError),
    /// A WAL fetch failed.
    #[error(transparent)]
    Fetch(#[from] crate::archive::FetchError),
    /// Taking a base backup failed.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// Restoring, verifying or finding a backup failed.
    #[error(transparent)]
    Restore(#[from] crate::backup::RestoreError),
    /// Planning a recovery failed.
    #[error(transparent)]
    Plan(#[from] crate::recovery::PlanError),
    /// A recovery target is not valid.
    #[error(transparent)]
    Target(#[from] crate::recovery::TargetError),
    /// A PostgreSQL server could not be started, or did not reach its recovery target.
    #[error(transparent)]
    Server(#[from] crate::postgres::ServerError),
    /// Applying the retention policy failed.
    #[error(transparent)]
    Retention(#[from] crate::retention::RetentionError),
    /// Talking to PostgreSQL for a backup failed.
    #[error(transparent)]
    Session(#[from] crate::backup::SessionError),
    /// A restored copy may not write into the repository, or its restore marker is unusable.
    #[error(transparent)]
    Marker(#[from] crate::backup::marker::MarkerError),
    /// A setting given to the engine is not valid.
    #[error("{0}")]
    Config(String),
    /// A push-ahead or fetch-ahead spool in pg_wal could not be used.
    #[error("cannot use the spool in pg_wal: {0}")]
    Spool(std::io::Error),
    /// The operation was cancelled by its caller.
    #[error("{0} cancelled")]
    Cancelled(&'static str),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Repo(e) => e.kind(),
            Error::Codec(e) => e.kind(),
            Error::Push(e) => e.kind(),
            Error::Fetch(e) => e.kind(),
            Error::Backup(e) => e.kind(),
            Error::Restore(e) => e.kind(),
            Error::Plan(e) => e.kind(),
            Error::Target(_) => ErrorKind::Configuration,
            Error::Server(e) => e.kind(),
            Error::Retention(e) => e.kind(),
            Error::Session(e) => e.kind(),
            Error::Marker(e) => e.kind(),
            Error::Config(_) => ErrorKind::Configuration,
            Error::Spool(e) => io_error_kind(e),
            Error::Cancelled(_) => ErrorKind::Cancelled,
        }
    }
}
