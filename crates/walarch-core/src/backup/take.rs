//! `take_backup`: an online base backup of a running cluster into the repository.
//!
//! Order matters for the contract (DESIGN.md §2.3): parts first, then `backup_label` and
//! `tablespace_map`, then — only once the WAL from the start to the stop LSN is in the
//! repository — the manifest. Until the manifest exists the backup does not.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use object_store::ObjectStoreExt;

use super::Phase;
use super::Progress;
use super::label::BackupLabel;
use super::manifest::{BackupId, MANIFEST_FORMAT, Manifest};
use super::marker::{MarkerError, check_restored_copy};
use super::parts::{Item, PartError, PartsJob};
use super::scan::scan;
use super::server_files;
use super::session::{BackupSession, SessionError};
use crate::codec::Compression;
use crate::error::{ErrorKind, io_error_kind};
use crate::limits::{ArchiveGate, RateLimit};
use crate::repo::{Identity, PutOutcome, RepoError, Repository};
use crate::store::keys;
use crate::wal::{Lsn, SystemId, TimelineId};
use tokio_util::sync::CancellationToken;

/// How to take a base backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The data directory to read; by default the server's `data_directory`. Either way it
    /// must be the directory of the server connected to (checked: see `server_files`).
    pub pgdata: Option<PathBuf>,
    /// How to reach the server. Nothing is taken from the environment: the caller fills
    /// in host, port, user and password (the command line maps `--dbname` and `PG*`).
    pub connection: tokio_postgres::Config,
    /// How the parts are compressed.
    pub compression: Compression,
    /// Worker threads reading, compressing and uploading (each writes its own parts).
    pub parallel: usize,
    /// A part is closed once it holds this many bytes of tar.
    pub part_size: u64,
    /// Ask the server for an immediate checkpoint instead of a spread one.
    pub fast_checkpoint: bool,
    /// How long to wait for the WAL that makes the backup consistent to reach the repository.
    pub wal_timeout: Duration,
    /// The upload's bandwidth limit, if any.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Pause the upload while the server has finished WAL segments waiting to be archived.
    pub defer_to_archiving: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            pgdata: None,
            connection: tokio_postgres::Config::new(),
            compression: Compression::default(),
            parallel: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(8),
            part_size: 256 << 20,
            fast_checkpoint: true,
            wal_timeout: Duration::from_secs(600),
            rate_limit: None,
            defer_to_archiving: true,
        }
    }
}

/// Takes a base backup; returns its manifest once the backup exists (manifest stored).
/// `progress` counts file bytes copied against the scanned total. Cancelled, the backup
/// stops the server's backup, writes no manifest and withdraws its claim on its folder
/// (which retention then removes as interrupted).
pub async fn take_backup(
    repo: &Repository,
    options: &BackupOptions,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    progress.set_phase(Phase::Preparing);
    let mut config = options.connection.clone();
    if config.get_application_name().is_none() {
        config.application_name("walarch backup");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(30));
    }
    let session = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(BackupError::Cancelled { id: None }),
        session = BackupSession::connect(&config) => session?,
    };
    let info = session.info().clone();
    let data_dir = options
        .pgdata
        .clone()
        .unwrap_or_else(|| info.data_directory.clone());
    server_files::check_system(&data_dir, info.system_id)?;
    server_files::check_postmaster(&data_dir, &info)?;

    let proposed = Identity::new(info.system_id, info.wal_segment_size, info.major());
    let identity = repo.ensure_identity(&proposed).await?;
    repo.check_can_write(&identity)?;
    // The major first: after pg_upgrade the system identifier differs too.
    if identity.pg_major != info.major() {
        return Err(BackupError::OtherMajorVersion {
            repo: repo.location().to_string(),
            repo_major: identity.pg_major,
            server_major: info.major(),
        });
    }
    if identity.system_id != info.system_id || identity.wal_segment_size != info.wal_segment_size {
        return Err(BackupError::WrongRepository {
            repo: repo.location().to_string(),
            repo_system: identity.system_id,
            server_system: info.system_id,
        });
    }
    check_restored_copy(repo, &data_dir).await?;
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled { id: None });
    }

    let id = unused_backup_id(repo).await?;
    let result = backup_claimed(
        repo,
        options,
        progress.clone(),
        cancel,
        session,
        &id,
        &data_dir,
    )
    .await;
    progress.set_phase(Phase::Done);
    if let Err(BackupError::Cancelled { .. }) = &result {
        // Without its claim the folder is an interrupted backup to retention; nothing of it
        // can become a backup now (no manifest is ever written after a cancel).
        let claim = keys::backup_file(id.as_str(), "started");
        if let Err(e) = repo.store().delete(&claim).await {
            tracing::warn!(backup = %id, error = %crate::store::redact_secrets(&e.to_string()), "cannot withdraw the cancelled backup's claim");
        }
        return Err(BackupError::Cancelled { id: Some(id) });
    }
    result
}

/// The backup once its id is claimed: start, copy, stop, label, WAL, manifest.
async fn backup_claimed(
    repo: &Repository,
    options: &BackupOptions,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
    session: BackupSession,
    id: &BackupId,
    data_dir: &Path,
) -> Result<Manifest, BackupError> {
    let info = session.info().clone();
    let id = id.clone();
    let data_dir = data_dir.to_owned();
    let started_at = Utc::now();
    // A spread checkpoint can take minutes: a cancel ends the wait (closing the session
    // ends the server's backup too).
    let label = format!("walarch {id}");
    let start_lsn = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(BackupError::Cancelled { id: Some(id) }),
        started = session.start(&label, options.fast_checkpoint) => started?,
    };
    tracing::info!(backup = %id, %start_lsn, standby = info.in_recovery, "backup started");

    let copied = match server_files::check_checkpoint(&data_dir, &session, start_lsn).await {
        Ok(()) => {
            progress.set_phase(Phase::Copying);
            copy_files(
                repo,
                options,
                &id,
                &data_dir,
                &info,
                progress.clone(),
                cancel,
            )
            .await
        }
        Err(e) => Err(e),
    };
    // Stop even when copying failed, so the server does not keep the backup open.
    let stop = session.stop().await;
    let (parts, files, directories) = copied?;
    let stop = stop?;
    let stopped_at = Utc::now();
    session.close().await;

    let label = BackupLabel::parse(&stop.backup_label).map_err(BackupError::Label)?;
    put_new(
        repo,
        &keys::backup_file(id.as_str(), "backup_label"),
        stop.backup_label.clone().into(),
    )
    .await?;
    if let Some(map) = &stop.tablespace_map {
        put_new(
            repo,
            &keys::backup_file(id.as_str(), "tablespace_map"),
            map.clone().into(),
        )
        .await?;
    }

    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        kind: "full".into(),
        tool_version: format!("walarch {}", env!("CARGO_PKG_VERSION")),
        system_id: info.system_id,
        pg_version_num: info.version_num,
        wal_segment_size: info.wal_segment_size,
        timeline: label.timeline,
        start_lsn: label.start_lsn.min(start_lsn),
        stop_lsn: stop.stop_lsn,
        started_at,
        stopped_at,
        completed_at: stopped_at,
        from_standby: label.from_standby || info.in_recovery,
        codec: options.compression.codec(),
        has_tablespace_map: stop.tablespace_map.is_some(),
        backup_label_crc32: Some(crc32fast::hash(stop.backup_label.as_bytes())),
        tablespaces: info.tablespaces.clone(),
        directories,
        files,
        parts,
    };
    progress.set_phase(Phase::WaitingForWal);
    tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(BackupError::Cancelled { id: Some(id) }),
        waited = wait_for_wal(repo, &manifest, options.wal_timeout) => waited?,
    }
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled { id: Some(id) });
    }
    commit_manifest(repo, &mut manifest).await?;
    tracing::info!(backup = %id, stop_lsn = %manifest.stop_lsn, "backup complete");
    Ok(manifest)
}

/// Writes the manifest, which makes the backup exist, while the backup's claim on its folder
/// (`started`) holds. Retention withdraws the claim of a folder it takes for an interrupted
/// backup before it deletes the folder's objects, so the claim is checked before the manifest
/// is written (then nothing is written) and after (then the manifest this call wrote is
/// removed again: the parts it names may be gone). Either way the backup fails, and no
/// manifest of this backup outlives its parts. (Retention also deletes the manifest of such
/// a folder last, for a backup killed between its write and its removal.)
async fn commit_manifest(repo: &Repository, manifest: &mut Manifest) -> Result<(), BackupError> {
    let id = manifest.id.clone();
    let claim = keys::backup_file(id.as_str(), "started");
    let lost = || BackupError::ClaimWithdrawn { id: id.clone() };
    if repo.object_size(&claim).await?.is_none() {
        return Err(lost());
    }
    manifest.completed_at = Utc::now();
    let key = keys::backup_manifest(id.as_str());
    put_new(repo, &key, manifest.to_json().into()).await?;
    let claim_held = repo.object_size(&claim).await;
    if matches!(claim_held, Ok(Some(_))) {
        return Ok(());
    }
    match repo.store().delete(&key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(source) => {
            // The manifest stays; listing and verify report its missing parts.
            return Err(BackupError::Repo(repo.store_error("delete", &key, source)));
        }
    }
    claim_held?;
    Err(lost())
}

/// The id for a backup starting now, claimed with a create-only put of
/// `backups/<id>/started` so that two backups starting in the same second never share (and
/// overwrite) each other's parts; the later one moves to the next second.
async fn unused_backup_id(repo: &Repository) -> Result<BackupId, BackupError> {
    loop {
        let id = BackupId::from_time(Utc::now());
        let claim = keys::backup_file(id.as_str(), "started");
        let body = Bytes::from(format!(
            "{{\"started_at\": \"{}\"}}\n",
            Utc::now().to_rfc3339()
        ));
        match repo.put_new(&claim, body).await? {
            PutOutcome::Created => return Ok(id),
            PutOutcome::AlreadyExists => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

type Copied = (
    Vec<super::PartEntry>,
    Vec<super::FileEntry>,
    Vec<super::DirectoryEntry>,
);

async fn copy_files(
    repo: &Repository,
    options: &BackupOptions,
    id: &BackupId,
    data_dir: &Path,
    info: &super::ServerInfo,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Copied, BackupError> {
    let tree = {
        let (dir, spaces, major) = (data_dir.to_owned(), info.tablespaces.clone(), info.major());
        tokio::task::spawn_blocking(move || scan(&dir, &spaces, major))
            .await
            .expect("scan does not panic")
            .map_err(|source| BackupError::Read {
                path: data_dir.display().to_string(),
                source,
            })?
    };
    progress.set_total(tree.total_bytes());
    progress.set_files_total(tree.files.len() as u64);
    let directories = tree.directories.clone();
    let mut queue: VecDeque<Item> = tree.directories.into_iter().map(Item::Directory).collect();
    // pg_control is copied last, alone, once every other file is: for a backup from a
    // standby PostgreSQL takes the end of the backup from its minRecoveryPoint, which is only
    // right if nothing was copied after it (basebackup.c sends it last for the same reason).
    let (control, others): (Vec<_>, Vec<_>) = tree
        .files
        .into_iter()
        .partition(|f| f.path == "global/pg_control");
    queue.extend(others.into_iter().map(Item::File));
    let job = Arc::new(PartsJob {
        store: repo.store().clone(),
        backup_id: id.to_string(),
        compression: options.compression,
        part_size: options.part_size.max(1 << 20),
        queue: Mutex::new(queue),
        next_part: AtomicU32::new(0),
        failed: AtomicBool::new(false),
        progress,
        runtime: tokio::runtime::Handle::current(),
        keyring: repo.keyring().cloned(),
        rate_limit: options.rate_limit.clone(),
        archive_gate: options
            .defer_to_archiving
            .then(|| ArchiveGate::watch(&data_dir.join("pg_wal"))),
    });
    // A cancel stops the workers between files, as a failure of one of them does.
    let stop_on_cancel = tokio::spawn({
        let (job, cancel) = (job.clone(), cancel.clone());
        async move {
            cancel.cancelled().await;
            job.stop();
        }
    });
    let workers: Vec<_> = (0..options.parallel.max(1))
        .map(|_| {
            let job = job.clone();
            tokio::task::spawn_blocking(move || job.run_worker())
        })
        .collect();
    let mut parts = Vec::new();
    let mut files = Vec::new();
    let mut first_error = None;
    for worker in workers {
        match worker.await.expect("a backup worker does not panic") {
            Ok(written) => {
                for w in written {
                    parts.push(w.part);
                    files.extend(w.files);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    stop_on_cancel.abort();
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled {
            id: Some(id.clone()),
        });
    }
    if let Some(e) = first_error {
        return Err(e.into());
    }
    if control.is_empty() {
        return Err(BackupError::Read {
            path: data_dir.join("global/pg_control").display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found by the scan"),
        });
    }
    job.queue
        .lock()
        .expect("queue lock")
        .extend(control.into_iter().map(Item::File));
    let last_job = job.clone();
    let written = tokio::task::spawn_blocking(move || last_job.run_worker())
        .await
        .expect("a backup worker does not panic")?;
    if let Some(gate) = &job.archive_gate {
        gate.open();
        tracing::info!(
            seconds = gate.deferred().as_secs_f64(),
            "the backup's upload waited for WAL archiving"
        );
    }
    for w in written {
        parts.push(w.part);
        files.extend(w.files);
    }
    parts.sort_by_key(|p| p.index);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((parts, files, directories))
}

async fn put_new(
    repo: &Repository,
    key: &object_store::path::Path,
    body: Bytes,
) -> Result<(), BackupError> {
    match repo.put_new(key, body).await? {
        PutOutcome::Created => Ok(()),
        PutOutcome::AlreadyExists => Err(BackupError::Exists(key.to_string())),
    }
}

/// Waits until every WAL segment from the backup's start to its stop LSN is in the
/// repository: before that, restoring the backup cannot reach a consistent state.
async fn wait_for_wal(
    repo: &Repository,
    manifest: &Manifest,
    timeout: Duration,
) -> Result<(), BackupError> {
    let mut pending = manifest.wal_segments();
    let started = Instant::now();
    let mut announced = false;
    loop {
        let mut still = Vec::new();
        for name in pending {
            if repo.find_wal(&name).await?.is_empty() {
                still.push(name);
            }
        }
        pending = still;
        let Some(next) = pending.first() else {
            return Ok(());
        };
        if started.elapsed() >= timeout {
            return Err(BackupError::WalNotArchived {
                segment: next.to_string(),
                waited: timeout.as_secs(),
            });
        }
        if !announced && started.elapsed() > Duration::from_secs(5) {
            announced = true;
            tracing::warn!(
                segment = %next,
                "waiting for WAL to reach the repository (on a standby the primary must finish the segment: pg_switch_wal() or archive_timeout)"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Why a base backup failed. The backup does not exist: no manifest was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Talking to PostgreSQL failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The repository or its store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The data directory is a restored copy that may not write into this repository, or its
    /// restore marker could not be used.
    #[error(transparent)]
    RestoredCopy(#[from] MarkerError),
    /// A local file or directory of the data directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What could not be read.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing a backup part failed.
    #[error(transparent)]
    Part(#[from] PartError),
    /// The caller cancelled the backup: no manifest was written, the claim was withdrawn.
    /// The caller cancelled the backup: no manifest was written, the claim was withdrawn.
    #[error("backup{} cancelled: it does not exist (no manifest); retention removes what it wrote", id.as_ref().map(|id| format!(" {id}")).unwrap_or_default())]
    Cancelled {
        /// The backup's id; `None` when it was cancelled before an id was claimed.
        id: Option<BackupId>,
    },
    /// Retention took the backup's folder for an interrupted backup and withdrew its claim.
    #[error(
        "backups/{id} was taken for an interrupted backup by a retention run while the backup ran, \
         and its files may be deleted: backup {id} does not exist; run the backup again"
    )]
    ClaimWithdrawn {
        /// The backup's id.
        id: BackupId,
    },
    /// The data directory's `global/pg_control` names another database system than the
    /// server connected to.
    #[error(
        "{data_dir} belongs to database system {local}, but the server connected to is {server}: \
         give the data directory of that server, or connect to the server of that directory"
    )]
    WrongDataDirectory {
        /// The data directory to be backed up.
        data_dir: String,
        /// The system identifier in its `global/pg_control`.
        local: SystemId,
        /// The system identifier of the server connected to.
        server: SystemId,
    },
    /// The data directory's `postmaster.pid` is missing or describes another server than the
    /// one connected to.
    #[error(
        "{data_dir} holds the files of {files}, but {server}: back up the data directory of the \
         server connected to, or connect to the server that runs in {data_dir}"
    )]
    NotTheServersFiles {
        /// The data directory to be backed up.
        data_dir: String,
        /// Which server the directory's `postmaster.pid` describes, or that there is none.
        files: String,
        /// Which server the session is connected to.
        server: String,
    },
    /// The data directory's last checkpoint is not the one the backup started from (nor a
    /// later one of the same server): its files belong to another server.
    #[error(
        "{data_dir}'s last checkpoint starts at {local_redo} on timeline {local_timeline} \
         (global/pg_control), but the backup started from the checkpoint at {start}: the files \
         belong to another server of the same database system (a standby or a copy), whose data \
         may lag behind; back up the data directory of the server connected to"
    )]
    CheckpointMismatch {
        /// The data directory to be backed up.
        data_dir: String,
        /// The redo LSN of the last checkpoint in its `global/pg_control`.
        local_redo: Lsn,
        /// The timeline of that checkpoint.
        local_timeline: TimelineId,
        /// The backup's start LSN, as the server returned it.
        start: Lsn,
    },
    /// The repository belongs to another database system, or holds another WAL segment size.
    #[error(
        "{repo} belongs to database system {repo_system}, not to this server ({server_system}); use a \
         repository of its own for each database system"
    )]
    WrongRepository {
        /// The repository location.
        repo: String,
        /// The system identifier the repository belongs to.
        repo_system: SystemId,
        /// The system identifier of the server connected to.
        server_system: SystemId,
    },
    /// The repository holds another PostgreSQL major version's WAL and backups.
    #[error(
        "{repo} holds PostgreSQL {repo_major} WAL and backups, but this server runs PostgreSQL \
         {server_major}: a major upgrade starts a new repository"
    )]
    OtherMajorVersion {
        /// The repository's location.
        repo: String,
        /// The major version recorded in the repository's identity.
        repo_major: u32,
        /// The server's major version.
        server_major: u32,
    },
    /// An object the backup writes already exists; holds its key.
    #[error("{0} already exists in the repository; not overwritten")]
    Exists(String),
    /// The `backup_label` returned by the server does not parse; holds the reason.
    #[error("PostgreSQL returned an unreadable backup_label: {0}")]
    Label(String),
    /// The WAL needed to make the backup consistent did not reach the repository in time.
    #[error(
        "WAL segment {segment} did not reach the repository within {waited} s, so the backup cannot be \
         made consistent and is not complete (no manifest): check archive_command; on a standby the \
         primary must switch segments (archive_timeout)"
    )]
    WalNotArchived {
        /// The first segment still missing from the repository.
        segment: String,
        /// How long the backup waited, in seconds.
        waited: u64,
    },
}

impl BackupError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackupError::Session(e) => e.kind(),
            BackupError::Repo(e) => e.kind(),
            BackupError::RestoredCopy(e) => e.kind(),
            BackupError::Read { source, .. } => io_error_kind(source),
            BackupError::Part(e) => e.kind(),
            BackupError::Cancelled { .. } => ErrorKind::Cancelled,
            BackupError::ClaimWithdrawn { .. } | BackupError::Exists(_) => ErrorKind::Conflict,
            BackupError::WrongDataDirectory { .. }
            | BackupError::NotTheServersFiles { .. }
            | BackupError::CheckpointMismatch { .. }
            | BackupError::WrongRepository { .. }
            | BackupError::OtherMajorVersion { .. } => ErrorKind::Refused,
            BackupError::Label(_) => ErrorKind::Corrupt,
            BackupError::WalNotArchived { .. } => ErrorKind::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::ObjectStore;
    use object_store::memory::InMemory;

    use super::*;
    use crate::store::RepoLocation;
    use crate::testing::hooks::HookStore;
    use crate::testing::synthetic_backup;

    /// A backup folder with parts, label and claim, whose manifest is not written yet.
    async fn uncommitted(store: Arc<dyn ObjectStore>) -> (Repository, Manifest) {
        let repo = Repository::from_store(store, RepoLocation::Local("/mem".into()));
        let manifest = synthetic_backup(
            &repo,
            &"20261121T000000Z".parse().unwrap(),
            Lsn::new(0x100_0028),
            Lsn::new(0x100_0100),
            &[],
            &[("PG_VERSION", b"15\n")],
        )
        .await;
        repo.store()
            .delete(&keys::backup_manifest(manifest.id.as_str()))
            .await
            .unwrap();
        (repo, manifest)
    }

    fn manifest_exists(store: &InMemory, manifest: &Manifest) -> bool {
        futures::executor::block_on(store.head(&keys::backup_manifest(manifest.id.as_str())))
            .is_ok()
    }

    #[tokio::test]
    async fn the_manifest_is_written_while_the_claim_holds() {
        let memory = Arc::new(InMemory::new());
        let (repo, mut manifest) = uncommitted(memory.clone()).await;
        commit_manifest(&repo, &mut manifest).await.unwrap();
        assert!(manifest_exists(&memory, &manifest));
    }

    #[tokio::test]
    async fn a_claim_withdrawn_before_the_manifest_stops_the_backup() {
        let memory = Arc::new(InMemory::new());
        let (repo, mut manifest) = uncommitted(memory.clone()).await;
        memory
            .delete(&keys::backup_file(manifest.id.as_str(), "started"))
            .await
            .unwrap();
        let err = commit_manifest(&repo, &mut manifest).await.unwrap_err();
        assert!(matches!(err, BackupError::ClaimWithdrawn { .. }), "{err}");
        assert!(!manifest_exists(&memory, &manifest));
    }

    #[tokio::test]
    async fn a_claim_withdrawn_while_the_manifest_is_written_removes_the_manifest() {
        // Issue 10, item 2: retention withdraws the claim (and goes on to delete the folder)
        // after the backup checked it and before its manifest landed. The manifest must not
        // outlive the parts retention deletes.
        let memory = Arc::new(InMemory::new());
        let (_, mut manifest) = uncommitted(memory.clone()).await;
        let claim = keys::backup_file(manifest.id.as_str(), "started");
        let mut store = HookStore::new(memory.clone());
        store.before_put = Some(Arc::new(move |key, inner| {
            let claim = claim.clone();
            Box::pin(async move {
                if key.as_ref().ends_with("manifest.json") {
                    inner.delete(&claim).await.unwrap();
                }
            })
        }));
        let repo = Repository::from_store(Arc::new(store), RepoLocation::Local("/mem".into()));
        let err = commit_manifest(&repo, &mut manifest).await.unwrap_err();
        assert!(matches!(err, BackupError::ClaimWithdrawn { .. }), "{err}");
        assert_eq!(
            err.kind(),
            ErrorKind::Conflict,
            "a concurrent writer (retention)"
        );
        assert!(
            !manifest_exists(&memory, &manifest),
            "the manifest of a folder retention took over was left behind"
        );
    }
}
