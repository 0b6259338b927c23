//! `restore_backup`: a backup back into a data directory, ready for PostgreSQL to recover
//! from the archive.
//!
//! Safety (DESIGN.md §2.8): the target must be empty (or is emptied when asked); every name
//! from the manifest and the parts is a plain relative path; only files and directories are
//! unpacked, files with create-new opens, so nothing lands outside the target except through
//! the tablespace links restore makes itself. Every file's size and CRC-32 are checked
//! against the manifest and every manifest file must come back.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::list::find_backup;
use super::manifest::{BackupId, Manifest, ManifestError};
use super::marker::{MarkerError, RestoreMarker, record_takeover, write_marker};
use super::read::{
    EntryError, EntryKind, PartOpener, PartReadError, copy_with_crc, copy_with_crc_pipelined,
    for_each_part, read_part,
};
use super::{BackupSelector, Phase, Progress};
use crate::repo::{RepoError, Repository};
use crate::store::keys;
use tokio_util::sync::CancellationToken;

/// What to write so that starting PostgreSQL recovers from the archive.
#[derive(Debug, Clone, Default)]
pub struct RecoverySettings {
    /// `restore_command`, e.g. `/usr/bin/walarch --repo file:///r wal-fetch %f %p`.
    pub restore_command: String,
    /// Further settings (`recovery_target_time`, `recovery_target_action`, ...), in order.
    pub settings: Vec<(String, String)>,
    /// Start as a standby (`standby.signal`) instead of a one-off recovery (`recovery.signal`).
    pub standby: bool,
}

/// How to restore a backup.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The target data directory: must be empty, or is emptied with `force`.
    pub pgdata: PathBuf,
    /// Which backup to restore.
    pub backup: BackupSelector,
    /// Empty a non-empty target first (refused while a server runs in it).
    pub force: bool,
    /// Parts downloaded and unpacked at once.
    pub parallel: usize,
    /// New locations for tablespaces, by OID or name; others go back where they were.
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// What to write so that PostgreSQL recovers from the archive when started.
    pub recovery: RecoverySettings,
    /// This copy replaces the original: record a take-over in the repository, so that it may
    /// archive into it (DESIGN.md §2.5).
    pub take_over: bool,
    /// The download's bandwidth limit, if any.
    pub rate_limit: Option<Arc<crate::limits::RateLimit>>,
}

/// What a completed restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// The backup that was restored.
    pub backup: BackupId,
    /// The data directory it was restored into.
    pub pgdata: PathBuf,
    /// Number of files restored (those in the manifest).
    pub files: usize,
    /// Bytes of file content restored.
    pub bytes: u64,
    /// Wall-clock time the whole restore took.
    pub elapsed: Duration,
    /// Whether a take-over of the source repository was recorded.
    pub take_over: bool,
}

/// Restores the backup `options.backup` into `options.pgdata`, set up to recover from the
/// archive. Cancelled, it stops between files and leaves a directory without `pg_control`
/// (PostgreSQL refuses to start it) that a new restore refuses, saying it holds an
/// interrupted restore, unless it is told to empty it first.
pub async fn restore_backup(
    repo: &Repository,
    options: &RestoreOptions,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    progress.set_phase(Phase::Preparing);
    let manifest = find_backup(repo, &options.backup).await?;
    if let Some(identity) = repo.identity().await?
        && identity.system_id != manifest.system_id
    {
        return Err(RestoreError::Invalid(format!(
            "backup {} is of system {}, the repository of {}",
            manifest.id, manifest.system_id, identity.system_id
        )));
    }
    let target = options.pgdata.clone();
    prepare_target(&target, options.force)?;
    // Says "a restore is (or was) under way here" until pg_control is in place.
    write_file(&target.join(IN_PROGRESS), b"")?;
    let tablespaces = place_tablespaces(&target, &manifest, &options.tablespace_map)?;
    create_directories(&target, &manifest)?;
    progress.set_total(manifest.data_bytes());
    progress.set_files_total(manifest.files.len() as u64);
    let label = repo
        .get_if_exists(&keys::backup_file(manifest.id.as_str(), "backup_label"))
        .await?
        .ok_or_else(|| {
            RestoreError::Invalid(format!("backup {} has no backup_label", manifest.id))
        })?;
    check_backup_label(&manifest, &label)?;
    // Opened before any file is written: syncfs reports write-back errors only to handles
    // that were open when they happened.
    let mut sync_dirs = vec![target.clone()];
    sync_dirs.extend(tablespaces.iter().map(|(_, location)| location.clone()));
    let sync_handles = sync_dirs
        .iter()
        .map(|dir| fs::File::open(dir).map_err(|e| io_error(dir, e)))
        .collect::<Result<Vec<_>, _>>()?;

    let manifest = Arc::new(manifest);
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "target prepared");
    progress.set_phase(Phase::Restoring);
    unpack_parts(
        repo,
        &manifest,
        &target,
        options.parallel.max(1),
        PartOpener::of(repo, options.rate_limit.clone()),
        progress.clone(),
        cancel,
    )
    .await?;
    if cancel.is_cancelled() {
        return Err(RestoreError::Cancelled(format!(
            "restore into {} (it has no pg_control, so PostgreSQL cannot start it)",
            target.display()
        )));
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "parts unpacked");
    write_file(&target.join("backup_label"), &label)?;
    if manifest.has_tablespace_map {
        let map: String = tablespaces
            .iter()
            .map(|(oid, location)| format!("{oid} {}\n", location.display()))
            .collect();
        write_file(&target.join("tablespace_map"), map.as_bytes())?;
    }
    write_recovery_settings(
        &target,
        &manifest.id,
        manifest.pg_major(),
        &options.recovery,
    )?;

    let take_over = if options.take_over {
        Some(record_takeover(repo, &manifest.id, &target).await?)
    } else {
        None
    };
    let marker = RestoreMarker {
        restored_at: Utc::now(),
        backup_id: manifest.id.clone(),
        source_repository: repo.location().to_string(),
        system_id: manifest.system_id,
        take_over: take_over.clone(),
        accepted_repositories: vec![],
    };
    write_marker(&target, &marker).map_err(|e| io_error(&target, e))?;

    // One syncfs per file system for what the background flushes have not covered (small
    // files, directories, the files written last): everything restored is durable before
    // pg_control appears.
    progress.set_phase(Phase::Syncing);
    tokio::task::spawn_blocking(move || {
        for (dir, handle) in sync_dirs.iter().zip(&sync_handles) {
            rustix::fs::syncfs(handle).map_err(|e| io_error(dir, e.into()))?;
        }
        Ok::<_, RestoreError>(())
    })
    .await
    .expect("sync does not panic")?;

    // pg_control goes in last, durably. Until then PostgreSQL refuses to start in the
    // directory: a restore that failed at any step before (a file, the recovery settings,
    // the take-over record, the restore marker) cannot be started, promote, and archive a
    // new timeline into its source's repository (DESIGN.md §2.5).
    let control = target.join(CONTROL_FILE);
    fs::rename(target.join(CONTROL_FILE_HELD), &control).map_err(|e| io_error(&control, e))?;
    let global = target.join("global");
    fs::File::open(&global)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(&global, e))?;
    fs::remove_file(target.join(IN_PROGRESS)).map_err(|e| io_error(&target, e))?;
    progress.set_phase(Phase::Done);

    Ok(RestoreReport {
        backup: manifest.id.clone(),
        pgdata: target,
        files: manifest.files.len(),
        bytes: manifest.data_bytes(),
        elapsed: started.elapsed(),
        take_over: take_over.is_some(),
    })
}

/// The stored `backup_label` must be the one the backup recorded: it tells recovery where to
/// start, and a damaged start location would replay from the wrong place.
pub(crate) fn check_backup_label(manifest: &Manifest, label: &[u8]) -> Result<(), RestoreError> {
    match manifest.backup_label_crc32 {
        Some(recorded) if recorded != crc32fast::hash(label) => {
            Err(RestoreError::Invalid(format!(
                "backups/{}/backup_label is damaged: its CRC-32 is {:08x}, the manifest recorded {recorded:08x}",
                manifest.id,
                crc32fast::hash(label)
            )))
        }
        _ => Ok(()),
    }
}

/// The target exists and is empty afterwards, mode 0700. A non-empty one is refused unless
/// `force`, and even then while a postmaster.pid is there.
fn prepare_target(target: &Path, force: bool) -> Result<(), RestoreError> {
    match fs::read_dir(target) {
        Ok(entries) => {
            let entries: Vec<_> = entries
                .collect::<io::Result<_>>()
                .map_err(|e| io_error(target, e))?;
            if !entries.is_empty() {
                if !force {
                    // A restore that stopped before the end (cancelled, failed) left its files
                    // but never its pg_control: say so, rather than only "not empty".
                    if target.join(IN_PROGRESS).exists() {
                        return Err(RestoreError::Interrupted(target.display().to_string()));
                    }
                    return Err(RestoreError::NotEmpty(target.display().to_string()));
                }
                if target.join("postmaster.pid").exists() {
                    return Err(RestoreError::Running(target.display().to_string()));
                }
                for entry in entries {
                    let path = entry.path();
                    // Links are removed, never followed.
                    let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    result.map_err(|e| io_error(&path, e))?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(target)
                .map_err(|e| io_error(target, e))?;
        }
        Err(e) => return Err(io_error(target, e)),
    }
    fs::set_permissions(target, fs::Permissions::from_mode(0o700)).map_err(|e| io_error(target, e))
}

/// Creates each tablespace's location (empty or new) and the `pg_tblspc/<oid>` link to it.
fn place_tablespaces(
    target: &Path,
    manifest: &Manifest,
    mapping: &[(String, PathBuf)],
) -> Result<Vec<(u32, PathBuf)>, RestoreError> {
    for (key, _) in mapping {
        if !manifest
            .tablespaces
            .iter()
            .any(|t| t.oid.to_string() == *key || t.name == *key)
        {
            return Err(RestoreError::Invalid(format!(
                "backup {} has no tablespace {key}",
                manifest.id
            )));
        }
    }
    let links = target.join("pg_tblspc");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&links)
        .map_err(|e| io_error(&links, e))?;
    let mut placed = Vec::new();
    for space in &manifest.tablespaces {
        let location = mapping
            .iter()
            .find(|(key, _)| *key == space.oid.to_string() || *key == space.name)
            .map_or_else(|| space.location.clone(), |(_, dir)| dir.clone());
        if !location.is_absolute()
            || location.parent().is_none()
            || location.components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            })
        {
            return Err(RestoreError::Invalid(format!(
                "tablespace location {} must be an absolute path below / without '..'",
                location.display()
            )));
        }
        // --force never empties a tablespace location: it may be the live original's.
        prepare_target(&location, false).map_err(|e| match e {
            RestoreError::NotEmpty(dir) => RestoreError::Invalid(format!(
                "tablespace {} goes to {dir}, which is not empty: give it an empty directory \
                 with --tablespace-map {}=DIR",
                space.name, space.oid
            )),
            other => other,
        })?;
        let link = links.join(space.oid.to_string());
        std::os::unix::fs::symlink(&location, &link).map_err(|e| io_error(&link, e))?;
        placed.push((space.oid, location));
    }
    Ok(placed)
}

fn create_directories(target: &Path, manifest: &Manifest) -> Result<(), RestoreError> {
    let mut dirs: Vec<_> = manifest.directories.iter().collect();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    for dir in dirs {
        let path = target.join(super::safe_relative_path(&dir.path)?);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(dir.mode & 0o7777 | 0o700))
            .map_err(|e| io_error(&path, e))?;
    }
    for dir in ["pg_wal", "pg_wal/archive_status"] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(target.join(dir))
            .map_err(|e| io_error(&target.join(dir), e))?;
    }
    Ok(())
}

async fn unpack_parts(
    repo: &Repository,
    manifest: &Arc<Manifest>,
    target: &Path,
    parallel: usize,
    opener: PartOpener,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<(), RestoreError> {
    // Path → (part, size, CRC-32, mode), and the directories, built once for all workers.
    let expected: HashMap<String, (u32, u64, u32, u32)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), (f.part, f.size, f.crc32, f.mode)))
        .collect();
    let directories: HashSet<String> = manifest
        .directories
        .iter()
        .map(|d| d.path.clone())
        .collect();
    let restored = Arc::new(AtomicUsize::new(0));
    // The part workers run on blocking threads: a cancel reaches them through this flag,
    // checked before each entry.
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch_cancel = tokio::spawn({
        let (cancel, cancelled) = (cancel.clone(), cancelled.clone());
        async move {
            cancel.cancelled().await;
            cancelled.store(true, Ordering::Relaxed);
        }
    });
    let background_sync = BackgroundSync::start(2);
    let unpacked = for_each_part(manifest.parts.len(), parallel, {
        let (store, manifest, target) = (repo.store().clone(), manifest.clone(), target.to_owned());

        let (restored, syncer) = (restored.clone(), background_sync.handle());
        let cancelled = cancelled.clone();
        let runtime = tokio::runtime::Handle::current();
        move |index| -> Result<(), RestoreError> {
            let mut buffer = vec![0u8; 1 << 20];
            read_part(&store, &opener, &runtime, &manifest, index, |kind, path, clean, data| {
                if cancelled.load(Ordering::Relaxed) {
                    return Err(EntryError {
                        kind: crate::error::ErrorKind::Cancelled,
                        message: "cancelled".into(),
                    });
                }
                if kind == EntryKind::Directory {
                    return if directories.contains(path) {
                        Ok(())
                    } else {
                        Err("directory not listed in the manifest".into())
                    };
                }
                let Some(&(part, size, crc, mode)) = expected.get(path) else {
                    return Err("file not listed in the manifest".into());
                };
                if part != index {
                    return Err(format!("the manifest puts this file in part {part}").into());
                }
                let dest = if path == CONTROL_FILE {
                    target.join(CONTROL_FILE_HELD)
                } else {
                    target.join(clean)
                };
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode & 0o7777 | 0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&dest)
                    .map_err(|e| EntryError::io(format!("cannot create {}: {e}", dest.display()), &e))?;
                let copied = if size >= PIPELINED_MIN {
                    copy_with_crc_pipelined(data, &mut file)
                } else {
                    copy_with_crc(data, &mut file, &mut buffer)
                };
                let (written, actual) = copied.map_err(|e| {
                    EntryError::io(format!("cannot restore {}: {e}", dest.display()), &e)
                })?;
                file.flush()
                    .map_err(|e| EntryError::io(e.to_string(), &e))?;
                progress.add(written);
                if written >= BACKGROUND_SYNC_MIN {
                    syncer.submit(dest, file);
                }
                if written != size || actual != crc {
                    return Err(format!(
                        "checksum mismatch: {written} bytes with CRC-32 {actual:08x}, the manifest says {size} bytes with {crc:08x}"
                    )
                    .into());
                }
                restored.fetch_add(1, Ordering::Relaxed);
                progress.add_file();
                Ok(())
            })?;
            Ok(())
        }
    })
    .await;
    let synced = tokio::task::spawn_blocking(move || background_sync.finish())
        .await
        .expect("sync threads do not panic");
    watch_cancel.abort();
    if cancel.is_cancelled() {
        return Err(RestoreError::Cancelled(format!(
            "restore into {} (it has no pg_control, so PostgreSQL cannot start it)",
            target.display()
        )));
    }
    unpacked?;
    synced?;
    let restored = restored.load(Ordering::Relaxed);
    if restored != manifest.files.len() {
        let missing = manifest
            .files
            .iter()
            .find(|f| fs::symlink_metadata(target.join(&f.path)).is_err())
            .map_or_else(String::new, |f| format!(", e.g. {}", f.path));
        return Err(RestoreError::Invalid(format!(
            "the parts held {restored} of the manifest's {} files{missing}",
            manifest.files.len()
        )));
    }
    Ok(())
}

/// Present in the target from the start of a restore until its pg_control is in place: a
/// restore that stopped half-way is recognised by it.
pub(crate) const IN_PROGRESS: &str = "walarch_restore.incomplete";

/// pg_control, and the name it is restored under until every other file is in place.
const CONTROL_FILE: &str = "global/pg_control";
const CONTROL_FILE_HELD: &str = "global/pg_control.walarch-restoring";

/// Files at least this large are written by a thread of their own while decompression goes on.
const PIPELINED_MIN: u64 = 16 << 20;

/// Files at least this large are flushed to disk in the background as soon as written.
const BACKGROUND_SYNC_MIN: u64 = 1 << 20;

/// Flushes restored files to disk on background threads while later files are still being
/// decompressed and written, so that disk writes overlap with the rest of the restore and
/// the final syncfs has little left to do.
struct BackgroundSync {
    sender: std::sync::mpsc::SyncSender<(PathBuf, fs::File)>,
    threads: Vec<std::thread::JoinHandle<Result<(), RestoreError>>>,
}

#[derive(Clone)]
struct SyncHandle(std::sync::mpsc::SyncSender<(PathBuf, fs::File)>);

impl SyncHandle {
    fn submit(&self, path: PathBuf, file: fs::File) {
        // Only fails once the sync threads stopped on an error, which finish() reports.
        let _ = self.0.send((path, file));
    }
}

impl BackgroundSync {
    fn start(threads: usize) -> Self {
        // Bounded: at most this many written files wait with their handles open.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(PathBuf, fs::File)>(64);
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = (0..threads)
            .map(|_| {
                let receiver = receiver.clone();
                std::thread::spawn(move || {
                    loop {
                        let next = receiver.lock().expect("lock").recv();
                        let Ok((path, file)) = next else {
                            return Ok(());
                        };
                        file.sync_data().map_err(|e| io_error(&path, e))?;
                    }
                })
            })
            .collect();
        BackgroundSync { sender, threads }
    }

    fn handle(&self) -> SyncHandle {
        SyncHandle(self.sender.clone())
    }

    fn finish(self) -> Result<(), RestoreError> {
        drop(self.sender);
        let mut result = Ok(());
        for thread in self.threads {
            let outcome = thread.join().expect("a sync thread does not panic");
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

/// `recovery.signal` (or `standby.signal`) and the settings in `postgresql.auto.conf`
/// (PostgreSQL 12+); `recovery.conf` before 12.
fn write_recovery_settings(
    target: &Path,
    backup: &BackupId,
    pg_major: u32,
    recovery: &RecoverySettings,
) -> Result<(), RestoreError> {
    let quote = |value: &str| format!("'{}'", value.replace('\'', "''"));
    let mut lines = format!("# added by walarch restore of backup {backup}\n");
    lines.push_str(&format!(
        "restore_command = {}\n",
        quote(&recovery.restore_command)
    ));
    // Every recovery setting is written, chosen or not: the backup's own postgresql.auto.conf
    // may carry a target from an earlier restore, which would otherwise stop this recovery
    // early without a word.
    let defaults = [
        ("recovery_target", ""),
        ("recovery_target_lsn", ""),
        ("recovery_target_name", ""),
        ("recovery_target_time", ""),
        ("recovery_target_xid", ""),
        ("recovery_target_inclusive", "on"),
        ("recovery_target_timeline", "latest"),
        ("recovery_target_action", "pause"),
    ];
    for (name, default) in defaults {
        if !recovery.settings.iter().any(|(n, _)| n == name) {
            lines.push_str(&format!("{name} = {}\n", quote(default)));
        }
    }
    for (name, value) in &recovery.settings {
        lines.push_str(&format!("{name} = {}\n", quote(value)));
    }
    if pg_major >= 12 {
        // A backup of a standby carries its standby.signal: what the restored server does is
        // decided here, not inherited.
        for signal in ["standby.signal", "recovery.signal"] {
            match fs::remove_file(target.join(signal)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error(&target.join(signal), e));
                }
                _ => {}
            }
        }
        let signal = if recovery.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        };
        write_file(&target.join(signal), b"")?;
        let auto = target.join("postgresql.auto.conf");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&auto)
            .map_err(|e| io_error(&auto, e))?;
        file.write_all(lines.as_bytes())
            .map_err(|e| io_error(&auto, e))?;
    } else {
        if recovery.standby {
            lines.push_str("standby_mode = 'on'\n");
        }
        // A standby's backup carries its recovery.conf; this restore decides.
        match fs::remove_file(target.join("recovery.conf")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_error(&target.join("recovery.conf"), e));
            }
            _ => {}
        }
        write_file(&target.join("recovery.conf"), lines.as_bytes())?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RestoreError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.write_all(bytes).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: io::Error) -> RestoreError {
    RestoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Why a restore (or a verify, or finding a backup) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The repository or its store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A backup id or the stored manifest is not usable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Recording the take-over in the repository failed.
    #[error(transparent)]
    Marker(#[from] MarkerError),
    /// Reading or unpacking a part failed.
    #[error("restore failed: {0}")]
    Part(#[from] PartReadError),
    /// The backup or the request does not hold together (another system's backup, a damaged
    /// `backup_label`, an unknown tablespace, files missing from the parts); holds the reason.
    #[error("{0}")]
    Invalid(String),
    /// The repository holds no complete backup that matches; holds the message.
    #[error("{0}")]
    NotFound(String),
    /// The backup's manifest names objects the repository no longer holds.
    #[error("{0}: it cannot be restored")]
    Damaged(String),
    /// The target directory is not empty and was not to be emptied; holds its path.
    #[error("{0} is not empty: restore into an empty directory, or have it emptied first")]
    NotEmpty(String),
    /// The target directory holds a `postmaster.pid` (a server may use it); holds its path.
    #[error("{0} holds postmaster.pid: stop the server that uses it before restoring over it")]
    Running(String),
    /// An earlier restore into the target stopped before the end.
    #[error(
        "{0} holds an interrupted restore (cancelled or failed before its pg_control was put in \
         place, so PostgreSQL cannot start it): restore again, emptying it first"
    )]
    Interrupted(String),
    /// The caller cancelled a restore (into the directory named) or a verify (of the backup
    /// named).
    #[error("{0} cancelled")]
    Cancelled(String),
    /// A local file or directory of the restore could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
}

impl RestoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            RestoreError::Repo(e) => e.kind(),
            RestoreError::Manifest(e) => e.kind(),
            RestoreError::Marker(e) => e.kind(),
            RestoreError::Part(e) => e.kind,
            RestoreError::Invalid(_) => ErrorKind::Refused,
            RestoreError::NotFound(_) => ErrorKind::NotFound,
            RestoreError::Damaged(_) => ErrorKind::Corrupt,
            RestoreError::NotEmpty(_) | RestoreError::Running(_) | RestoreError::Interrupted(_) => {
                ErrorKind::Refused
            }
            RestoreError::Cancelled(_) => ErrorKind::Cancelled,
            RestoreError::Io { source, .. } => crate::error::io_error_kind(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::BackupSelector;

    /// The value PostgreSQL would use: the last assignment in postgresql.auto.conf.
    fn setting(conf: &str, name: &str) -> Option<String> {
        conf.lines()
            .filter_map(|l| l.split_once(" = "))
            .filter(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('\'').to_owned())
            .next_back()
    }

    fn restore_options(target: &Path) -> RestoreOptions {
        RestoreOptions {
            pgdata: target.to_owned(),
            backup: BackupSelector::Latest,
            force: false,
            parallel: 2,
            tablespace_map: vec![],
            recovery: RecoverySettings {
                restore_command: "walarch wal-fetch %f %p".into(),
                ..Default::default()
            },
            take_over: false,
            rate_limit: None,
        }
    }

    async fn repository_with_backup(directories: &[&str]) -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_for_write(
            crate::store::RepoLocation::Local(dir.path().join("repo")),
            &Default::default(),
        )
        .unwrap();
        crate::testing::synthetic_backup(
            &repo,
            &"20261121T142700Z".parse().unwrap(),
            crate::wal::Lsn::new(0x0100_0028),
            crate::wal::Lsn::new(0x0100_0100),
            directories,
            &[
                ("PG_VERSION", b"15\n"),
                ("global/pg_control", &[7u8; 8192]),
                ("base/1/1259", &[1u8; 20000]),
            ],
        )
        .await;
        (dir, repo)
    }

    #[tokio::test]
    async fn pg_control_appears_last_and_only_on_success() {
        let (dir, repo) = repository_with_backup(&["global", "base", "base/1"]).await;
        let target = dir.path().join("restored");
        restore_backup(
            &repo,
            &restore_options(&target),
            Arc::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(fs::read(target.join(CONTROL_FILE)).unwrap(), [7u8; 8192]);
        assert!(!target.join(CONTROL_FILE_HELD).exists());
        assert!(target.join(super::super::marker::MARKER_FILE).is_file());
        assert!(target.join("recovery.signal").is_file());
    }

    #[tokio::test]
    async fn a_cancelled_restore_leaves_no_pg_control_and_a_retry_says_why_it_refuses() {
        let (dir, repo) = repository_with_backup(&["global", "base", "base/1"]).await;
        let target = dir.path().join("restored");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = restore_backup(&repo, &restore_options(&target), Arc::default(), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, RestoreError::Cancelled(_)), "{err}");
        assert_eq!(err.kind(), crate::error::ErrorKind::Cancelled);
        assert!(!target.join(CONTROL_FILE).exists());
        let again = restore_backup(
            &repo,
            &restore_options(&target),
            Arc::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(again, RestoreError::Interrupted(_)), "{again}");
        assert_eq!(again.kind(), crate::error::ErrorKind::Refused);
        let mut forced = restore_options(&target);
        forced.force = true;
        restore_backup(&repo, &forced, Arc::default(), &CancellationToken::new())
            .await
            .unwrap();
        assert!(target.join(CONTROL_FILE).is_file());
        assert!(!target.join(IN_PROGRESS).exists());
    }

    #[tokio::test]
    async fn a_damaged_backup_label_is_not_restored() {
        let (dir, repo) = repository_with_backup(&["global", "base", "base/1"]).await;
        let mut manifest = find_backup(&repo, &BackupSelector::Latest).await.unwrap();
        let label = repo
            .get_if_exists(&keys::backup_file(manifest.id.as_str(), "backup_label"))
            .await
            .unwrap()
            .unwrap();
        manifest.backup_label_crc32 = Some(crc32fast::hash(&label));
        assert!(check_backup_label(&manifest, &label).is_ok());
        let mut damaged = label.to_vec();
        damaged[25] ^= 0x01; // a digit of the start location
        let err = check_backup_label(&manifest, &damaged).unwrap_err();
        assert!(err.to_string().contains("backup_label is damaged"), "{err}");
        drop(dir);
    }

    #[tokio::test]
    async fn a_restore_whose_marker_cannot_be_written_leaves_no_pg_control() {
        // Issue 10, item 4. The marker's place is taken by a directory (from the backup), so
        // writing the marker fails after every file, backup_label and the recovery settings
        // are in place. Without pg_control PostgreSQL refuses to start in the directory; with
        // it, the copy would start, promote and archive into its source's repository.
        let (dir, repo) =
            repository_with_backup(&["global", "base", "base/1", "walarch_restore.json"]).await;
        let target = dir.path().join("restored");
        let err = restore_backup(
            &repo,
            &restore_options(&target),
            Arc::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RestoreError::Io { .. }), "{err}");
        assert!(
            target.join("backup_label").is_file(),
            "failed after the files"
        );
        assert!(
            !target.join(CONTROL_FILE).exists(),
            "pg_control in place although the restore failed"
        );
    }

    #[test]
    fn targets_inherited_from_the_backup_are_overridden() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("postgresql.auto.conf"),
            "recovery_target = 'immediate'\nrecovery_target_action = 'shutdown'\n",
        )
        .unwrap();
        fs::write(dir.path().join("standby.signal"), "").unwrap();
        let recovery = RecoverySettings {
            restore_command: "walarch --repo 'it's' wal-fetch %f %p".into(),
            settings: vec![(
                "recovery_target_time".into(),
                "2026-11-21 11:32:00+00".into(),
            )],
            standby: false,
        };
        let id: BackupId = "20261121T142700Z".parse().unwrap();
        write_recovery_settings(dir.path(), &id, 15, &recovery).unwrap();
        let conf = fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert_eq!(setting(&conf, "recovery_target").as_deref(), Some(""));
        assert_eq!(
            setting(&conf, "recovery_target_action").as_deref(),
            Some("pause")
        );
        assert_eq!(
            setting(&conf, "recovery_target_time").as_deref(),
            Some("2026-11-21 11:32:00+00")
        );
        assert!(
            conf.contains("restore_command = 'walarch --repo ''it''s'' wal-fetch %f %p'"),
            "{conf}"
        );
        assert!(dir.path().join("recovery.signal").is_file());
        assert!(
            !dir.path().join("standby.signal").exists(),
            "the inherited standby.signal is gone"
        );
    }
}
