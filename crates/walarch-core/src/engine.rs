//! The engine: one value, opened from one configuration, that offers every operation walarch
//! performs, with every rule of the data-safety contract (DESIGN.md §2) enforced below it.
//! The command line, an instance manager and an operator all drive this same value, so each
//! gets the same guarantees:
//!
//! - WAL: [`Engine::push`] and [`Engine::fetch`] for one file, and
//!   [`Engine::push_for_server`] / [`Engine::fetch_for_server`] for PostgreSQL's own calls,
//!   with the push-ahead and fetch-ahead fast paths; the workers behind them run wherever a
//!   [`WorkerHost`] starts them ([`Engine::run_push_worker`], [`Engine::run_fetch_worker`]);
//! - backups: [`Engine::backup`], [`Engine::backups`], [`Engine::verify`];
//! - recovery: [`Engine::plan`] gives a [`CheckedPlan`], the only thing [`Engine::restore`]
//!   accepts, so a restore that was not planned cannot be written; [`Engine::start_restored`];
//! - what the repository holds: [`Engine::snapshot`], [`Engine::info`];
//! - retention: [`Engine::retention_plan`] and [`Engine::apply_retention`].
//!
//! Long operations take a [`CancellationToken`] and report typed progress ([`Progress`]).
//! Nothing here reads the process environment: credentials, connection settings and data
//! directories are given.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::archive::{
    FetchOutcome, FetchSpool, FetchSpoolStatus, PrefetchOptions, PrefetchReport, PushAheadOptions,
    PushAheadReport, PushOutcome, PushReport, PushSpool, PushSpoolStatus, decoders_for_cores,
    fetch_wal_file, push_wal_file, run_prefetch_worker, run_push_worker,
};
use crate::backup::{
    BackupList, BackupOptions, BackupSelector, Manifest, Progress, RecoverySettings,
    RestoreOptions, RestoreReport, VerifyReport, restore_backup, take_backup, verify_backup,
};
use crate::catalog::{Snapshot, TimelineWal, WalSummary, summarize};
use crate::codec::Compression;
use crate::crypto::Keyring;
use crate::error::Error;
use crate::limits::RateLimit;
use crate::postgres::{RecoveryOutcome, StartOptions, start_and_wait};
use crate::recovery::{
    RecoverableWindow, RecoveryPlan, RecoveryTarget, TargetSpec, plan_recovery, recoverable_windows,
};
use crate::repo::{Identity, Repository};
use crate::retention::{
    RetentionInputs, RetentionPlan, RetentionPolicy, RetentionReport, apply_retention,
    plan_retention,
};
use crate::store::{RepoLocation, StoreOptions};
use crate::wal::WalFileName;

/// Push-ahead: files archived ahead of PostgreSQL's serial archive_command calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushAheadConfig {
    /// Files pushed at once; 0 turns push-ahead off.
    pub parallelism: usize,
    /// The worker exits this long after PostgreSQL's last call (a paused or stopped
    /// archiver); the next call with a backlog starts another.
    pub idle_exit: Duration,
}

/// Fetch-ahead: segments downloaded ahead of recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchAheadConfig {
    /// Segments downloaded at once; 0 turns fetch-ahead (and remembered misses) off.
    pub parallelism: usize,
    /// Bytes of WAL kept downloaded ahead of replay.
    pub max_bytes: u64,
    /// Free space left on pg_wal's file system: downloading ahead pauses below it.
    pub reserve_bytes: u64,
    /// The worker exits once recovery has asked for nothing new for this long.
    pub idle_exit: Duration,
}

/// Everything an [`Engine`] needs, given once.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the repository lives.
    pub repo: RepoLocation,
    /// Retries, timeouts, S3 options and the clouds' credentials.
    pub store: StoreOptions,
    /// How WAL and backups are stored.
    pub compression: Compression,
    /// Push-ahead for PostgreSQL's archive_command calls.
    pub push_ahead: PushAheadConfig,
    /// Fetch-ahead for PostgreSQL's restore_command calls.
    pub fetch_ahead: FetchAheadConfig,
    /// Parts read and written at once by backup, restore and verify.
    pub parallelism: usize,
    /// Client-side encryption of WAL objects and backup parts ([`crate::crypto`]): the keys,
    /// or `None` to store them as they are compressed.
    pub encryption: Option<Arc<Keyring>>,
    /// Bandwidth limit of backups, restores and verification, in bytes per second (what is
    /// stored or fetched: compressed, sealed); `None` for none. WAL is never limited.
    pub transfer_limit: Option<u64>,
    /// Whether planning stores the segment summaries it makes in the repository, so the next
    /// plan over the same WAL reads them instead of downloading it (on by default). Off for a
    /// repository that must only be read, such as a recovery's source.
    pub segment_summaries: bool,
}

impl EngineConfig {
    /// walarch's defaults for a repository at `repo`: zstd, four pushes ahead, one download
    /// ahead per core (at most four) within 512 MiB, 1 GiB left free in pg_wal.
    pub fn new(repo: RepoLocation) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineConfig {
            repo,
            store: StoreOptions::default(),
            compression: Compression::default(),
            push_ahead: PushAheadConfig {
                parallelism: 4,
                idle_exit: Duration::from_secs(2),
            },
            fetch_ahead: FetchAheadConfig {
                parallelism: cores.min(4),
                max_bytes: 512 << 20,
                reserve_bytes: 1 << 30,
                idle_exit: Duration::from_secs(5),
            },
            parallelism: cores.min(8),
            encryption: None,
            transfer_limit: None,
            segment_summaries: true,
        }
    }
}

/// Which background worker of a server's pg_wal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerKind {
    /// Push-ahead ([`Engine::run_push_worker`]).
    Push,
    /// Fetch-ahead ([`Engine::run_fetch_worker`]).
    Fetch,
}

/// Starts the background worker of a server's pg_wal when the engine asks for one. The
/// command line re-executes itself (PostgreSQL's calls are one-shot processes); a
/// long-running process runs the worker as a task ([`InProcessWorkers`]). Either way the
/// worker is [`Engine::run_push_worker`] or [`Engine::run_fetch_worker`].
pub trait WorkerHost: Send + Sync {
    /// Starts `kind`'s worker for `pg_wal`; `false` if it could not be started (the call
    /// then does its own work). A worker already running is not an error: the new one finds
    /// the spool locked and exits.
    fn start(&self, kind: WorkerKind, pg_wal: &Path) -> bool;
}

/// Runs the workers as tasks on the current tokio runtime, for a process that hosts the
/// engine for its own server (an instance manager). Cancelling `cancel` stops them.
#[derive(Debug, Clone)]
pub struct InProcessWorkers {
    engine: Arc<Engine>,
    cancel: CancellationToken,
}

impl InProcessWorkers {
    /// Workers of `engine`, stopped by `cancel`.
    pub fn new(engine: Arc<Engine>, cancel: CancellationToken) -> Self {
        InProcessWorkers { engine, cancel }
    }
}

impl WorkerHost for InProcessWorkers {
    fn start(&self, kind: WorkerKind, pg_wal: &Path) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let (engine, cancel, pg_wal) =
            (self.engine.clone(), self.cancel.clone(), pg_wal.to_owned());
        runtime.spawn(async move {
            let result = match kind {
                WorkerKind::Push => engine.run_push_worker(&pg_wal, &cancel).await.map(drop),
                WorkerKind::Fetch => engine.run_fetch_worker(&pg_wal, &cancel).await.map(drop),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, ?kind, "worker failed");
            }
        });
        true
    }
}

/// A recovery plan the engine checked against the repository: the only way to ask
/// [`Engine::restore`] for a restore.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct CheckedPlan {
    plan: RecoveryPlan,
    #[serde(skip)]
    to_latest: bool,
}

impl CheckedPlan {
    /// What was planned.
    pub fn plan(&self) -> &RecoveryPlan {
        &self.plan
    }

    /// Whether the target is `latest` (recovery ends at the end of the archived WAL).
    pub fn is_to_latest(&self) -> bool {
        self.to_latest
    }
}

/// The `restore_command` a restored server fetches WAL with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreCommand {
    /// A walarch executable with this repository (and configuration file): the usual case.
    Walarch {
        /// The walarch executable.
        program: PathBuf,
        /// A configuration file it should read (cloud settings, retries), if any.
        config_file: Option<PathBuf>,
        /// The key file it opens encrypted WAL with, if any.
        encryption_key_file: Option<PathBuf>,
    },
    /// A command line of the caller's, used as it is.
    Custom(String),
}

impl RestoreCommand {
    /// The command line for `repo`, quoted for the shell PostgreSQL runs it with.
    pub fn command_line(&self, repo: &RepoLocation) -> String {
        match self {
            RestoreCommand::Custom(command) => command.clone(),
            RestoreCommand::Walarch {
                program,
                config_file,
                encryption_key_file,
            } => {
                let mut words = vec![
                    program.display().to_string(),
                    "--repo".into(),
                    repo.to_string(),
                ];
                if let Some(config) = config_file {
                    words.push("--config".into());
                    words.push(config.display().to_string());
                }
                if let Some(key_file) = encryption_key_file {
                    words.push("--encryption-key-file".into());
                    words.push(key_file.display().to_string());
                }
                let mut command: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
                command.extend(["wal-fetch".into(), "%f".into(), "%p".into()]);
                command.join(" ")
            }
        }
    }
}

/// Quotes a word for the shell PostgreSQL runs restore_command with.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.:=,@+".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What PostgreSQL does when recovery reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetAction {
    /// End recovery and accept writes (a new timeline).
    Promote,
    /// Stay in recovery, read-only, until promoted by hand.
    Pause,
    /// Shut down.
    Shutdown,
}

impl TargetAction {
    /// PostgreSQL's name for it (`recovery_target_action`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

impl std::str::FromStr for TargetAction {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "promote" => Ok(TargetAction::Promote),
            "pause" => Ok(TargetAction::Pause),
            "shutdown" => Ok(TargetAction::Shutdown),
            other => Err(Error::Config(format!(
                "recovery target action {other:?}: use promote, pause or shutdown"
            ))),
        }
    }
}

/// How to restore a [`CheckedPlan`].
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The target data directory: empty or absent (see `force`).
    pub pgdata: PathBuf,
    /// Empty a non-empty target first (never while a server runs in it).
    pub force: bool,
    /// New locations for tablespaces, by OID or name; others go back where they were.
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// How the restored server fetches WAL.
    pub restore_command: RestoreCommand,
    /// What PostgreSQL does at the target; `None`: PostgreSQL's default (pause).
    pub target_action: Option<TargetAction>,
    /// Further settings for the copy (`port`, `archive_mode`, ...). Recovery settings are
    /// refused: they come from the plan.
    pub settings: Vec<(String, String)>,
    /// Start as a standby instead of recovering once.
    pub standby: bool,
    /// This copy replaces the original: record a take-over in the repository so that it may
    /// archive into it (DESIGN.md §2.5).
    pub take_over: bool,
}

impl RestoreRequest {
    /// A request with nothing but the target directory and the restore command.
    pub fn new(pgdata: impl Into<PathBuf>, restore_command: RestoreCommand) -> Self {
        RestoreRequest {
            pgdata: pgdata.into(),
            force: false,
            tablespace_map: Vec::new(),
            restore_command,
            target_action: None,
            settings: Vec::new(),
            standby: false,
            take_over: false,
        }
    }
}

/// Checks a further setting for a restored copy: a plain name, and not one the plan decides.
fn check_copy_setting(name: &str) -> Result<(), Error> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !plain {
        return Err(Error::Config(format!("{name:?} is not a setting name")));
    }
    if name.starts_with("recovery_target") || name == "restore_command" {
        return Err(Error::Config(format!(
            "{name} cannot be set for the copy: recovery settings come from the checked plan"
        )));
    }
    Ok(())
}

/// What [`Engine::backup`] is asked to do; the rest comes from the engine's configuration.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// How to reach the server (host, port, user, password...).
    pub connection: tokio_postgres::Config,
    /// The data directory to read; by default the server's `data_directory`.
    pub pgdata: Option<PathBuf>,
    /// Parts written at once; `None`: the engine's parallelism.
    pub parallel: Option<usize>,
    /// A part is closed once it holds this many bytes of tar.
    pub part_size: u64,
    /// Ask for an immediate checkpoint instead of a spread one.
    pub fast_checkpoint: bool,
    /// How long to wait for the WAL that makes the backup consistent.
    pub wal_timeout: Duration,
    /// Pause the upload while the server has finished WAL segments waiting to be archived
    /// (default): archiving is never queued behind a backup.
    pub defer_to_archiving: bool,
}

impl BackupRequest {
    /// A request with walarch's defaults (256 MiB parts, fast checkpoint, 10 minutes of
    /// waiting for WAL).
    pub fn new(connection: tokio_postgres::Config) -> Self {
        let defaults = BackupOptions::default();
        BackupRequest {
            connection,
            pgdata: None,
            parallel: None,
            part_size: defaults.part_size,
            fast_checkpoint: defaults.fast_checkpoint,
            wal_timeout: defaults.wal_timeout,
            defer_to_archiving: defaults.defer_to_archiving,
        }
    }
}

/// A backup whose manifest names objects the repository lacks, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedSummary {
    /// The backup's id.
    pub id: String,
    /// The missing objects.
    pub missing: Vec<String>,
}

impl From<&crate::backup::DamagedBackup> for DamagedSummary {
    fn from(damaged: &crate::backup::DamagedBackup) -> Self {
        DamagedSummary {
            id: damaged.manifest.id.to_string(),
            missing: damaged.missing.clone(),
        }
    }
}

/// What [`Engine::verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyOutcome {
    /// Nothing wrong anywhere.
    pub ok: bool,
    /// Each backup read back.
    pub backups: Vec<VerifyReport>,
    /// Backups with a manifest but missing objects (when verifying every backup).
    pub damaged: Vec<DamagedSummary>,
    /// WAL continuity per timeline.
    pub wal: Vec<TimelineWal>,
}

/// What the repository holds and, given a data directory, how its server's archiving and
/// recovery are doing: `walarch info` prints this, `info --json` serialises it.
#[derive(Debug, Clone, Serialize)]
pub struct InfoReport {
    /// The repository's location.
    pub repository: String,
    /// `walarch.json`.
    pub identity: Option<Identity>,
    /// WAL per timeline, history files, the last archived file.
    pub wal: Option<WalSummary>,
    /// Per timeline: from the oldest usable backup's end to the last archived commit.
    pub recoverable_windows: Vec<RecoverableWindow>,
    /// Why the windows could not be computed (the rest of the report stands).
    pub recoverable_windows_error: Option<String>,
    /// The server's push-ahead spool, when a data directory was given.
    pub archiving: Option<PushSpoolStatus>,
    /// The server's fetch-ahead spool, when a data directory was given.
    pub prefetch: Option<FetchSpoolStatus>,
    /// The restore drills stored in the repository: the last, and the last that passed.
    pub drills: crate::drill::DrillHistory,
    /// Why the drill reports could not be listed (the rest of the report stands).
    pub drills_error: Option<String>,
}

/// The engine. Opening one does nothing yet: the store is opened by the first operation
/// that needs it, so a call answered locally (a spooled segment, a remembered miss) costs no
/// store access at all.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    /// Whether a missing local repository directory is created (writers) or an error.
    create_local: bool,
    repo: std::sync::OnceLock<Repository>,
}

impl Engine {
    /// An engine that reads the repository: a local repository directory must already exist
    /// (an unmounted or mistyped directory is not an empty repository).
    pub fn open(config: EngineConfig) -> Result<Engine, Error> {
        Ok(Engine {
            config,
            create_local: false,
            repo: std::sync::OnceLock::new(),
        })
    }

    /// An engine that writes the repository, creating a local repository directory if needed.
    pub fn open_for_write(config: EngineConfig) -> Result<Engine, Error> {
        Ok(Engine {
            config,
            create_local: true,
            repo: std::sync::OnceLock::new(),
        })
    }

    /// An engine over an already opened repository (tests, embedders with their own store).
    pub fn with_repository(config: EngineConfig, repo: Repository) -> Engine {
        Engine {
            config,
            create_local: false,
            repo: std::sync::OnceLock::from(repo),
        }
    }

    /// The configuration the engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A fresh budget for one transfer at the configured limit.
    fn rate_limit(&self) -> Option<Arc<RateLimit>> {
        self.config
            .transfer_limit
            .map(|bytes_per_second| Arc::new(RateLimit::new(bytes_per_second)))
    }

    /// The repository, opened on first use.
    pub fn repository(&self) -> Result<&Repository, Error> {
        if let Some(repo) = self.repo.get() {
            return Ok(repo);
        }
        let repo = if self.create_local {
            Repository::open_for_write(self.config.repo.clone(), &self.config.store)?
        } else {
            Repository::open(self.config.repo.clone(), &self.config.store)?
        }
        .with_keyring(self.config.encryption.clone())
        .with_summary_writes(self.config.segment_summaries);
        Ok(self.repo.get_or_init(|| repo))
    }

    // WAL ---------------------------------------------------------------------------------

    /// Archives one WAL file. `data_dir` is the data directory the file belongs to: its
    /// restore marker decides whether this repository may take its WAL (DESIGN.md §2.5) and
    /// its `pg_control` names the system of history files. `None` only for a file that
    /// belongs to no data directory (copied by hand): then neither check can apply.
    pub async fn push(&self, file: &Path, data_dir: Option<&Path>) -> Result<PushReport, Error> {
        Ok(push_wal_file(self.repository()?, file, self.config.compression, data_dir).await?)
    }

    /// PostgreSQL's archive_command for `file` of the server in `data_dir`: returns at once
    /// when the push-ahead worker already stored the file (confirmed by the store), waits
    /// for the worker while it is on it, else archives the file itself. Starts the worker
    /// through `workers` when files queue up.
    pub async fn push_for_server(
        &self,
        file: &Path,
        data_dir: &Path,
        workers: &dyn WorkerHost,
    ) -> Result<PushReport, Error> {
        let started = Instant::now();
        let name: Option<WalFileName> = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok());
        // The worker checks the restore marker of the data directory around its pg_wal: the
        // fast path is for files of that very directory only.
        let spool = PushSpool::for_wal_file(file)
            .filter(|spool| same_directory(spool.pg_wal().parent(), data_dir));
        if let (true, Some(spool), Some(name)) =
            (self.config.push_ahead.parallelism > 0, spool, name)
        {
            let phase = |name: &'static str| tracing::debug_span!("push phase", phase = name);
            let repo = phase("open repository").in_scope(|| self.repository())?;
            phase("note call").in_scope(|| {
                spool.note_call(repo);
                self.remove_finished_fetch_spool(data_dir);
            });
            let spawned = phase("worker check")
                .in_scope(|| {
                    !spool.worker_running()
                        && spool.ready_files().map(|r| r.len()).unwrap_or(0) >= 2
                        && workers.start(WorkerKind::Push, spool.pg_wal())
                })
                .then(Instant::now);
            let done = spool
                .is_confirmed(repo, file, &name)
                .instrument(phase("confirm"))
                .await
                || ((spawned.is_some() || spool.worker_running())
                    && spool
                        .wait_for_worker(repo, file, &name, spawned, WORKER_WAIT)
                        .instrument(phase("wait for worker"))
                        .await);
            if done {
                return Ok(PushReport {
                    name,
                    outcome: PushOutcome::PushedAhead,
                    key: String::new(),
                    original_bytes: 0,
                    stored_bytes: 0,
                    elapsed: started.elapsed(),
                });
            }
        }
        self.push(file, Some(data_dir))
            .instrument(tracing::debug_span!("push phase", phase = "push"))
            .await
    }

    /// After recovery the server archives again: a fetch spool left behind goes. Not while
    /// a recovery or standby signal file exists (with archive_mode = always a standby
    /// archives too).
    fn remove_finished_fetch_spool(&self, data_dir: &Path) {
        if data_dir.join("recovery.signal").exists() || data_dir.join("standby.signal").exists() {
            return;
        }
        let spool = FetchSpool::for_pg_wal(&data_dir.join("pg_wal"));
        if spool.dir_exists() && !spool.worker_running() {
            spool.remove();
        }
    }

    /// Fetches exactly one WAL file into `dest`: [`FetchOutcome::NotFound`] only when the
    /// store answered that no copy exists (DESIGN.md §2.4).
    pub async fn fetch(&self, name: &WalFileName, dest: &Path) -> Result<FetchOutcome, Error> {
        Ok(fetch_wal_file(
            self.repository()?,
            name,
            dest,
            self.config.compression.codec(),
            false,
        )
        .await?)
    }

    /// PostgreSQL's restore_command for `name` into `dest` (its `%p`, in pg_wal): a spooled
    /// copy still as the worker verified and stamped it is renamed into place; a segment the
    /// store said is missing earlier in this recovery is answered from memory (never a history
    /// file); the fetch-ahead worker is started through `workers` to download what follows.
    pub async fn fetch_for_server(
        &self,
        name: &WalFileName,
        dest: &Path,
        workers: &dyn WorkerHost,
    ) -> Result<FetchOutcome, Error> {
        let spool =
            FetchSpool::for_destination(dest).filter(|_| self.config.fetch_ahead.parallelism > 0);
        if let Some(spool) = &spool {
            let phase = |name: &'static str| tracing::debug_span!("fetch phase", phase = name);
            if phase("known missing").in_scope(|| spool.is_known_missing(name)) {
                return Ok(FetchOutcome::NotFound);
            }
            // Take first, then move the position: the worker prunes what lies behind it. A
            // history file stops the window (recovery starts or ends); the worker then goes
            // idle, and removes the spool once recovery is over.
            let taken = phase("spool take").in_scope(|| spool.take(&self.config.repo, name, dest));
            phase("position").in_scope(|| spool.set_position(name));
            phase("worker check").in_scope(|| {
                if !spool.worker_running() {
                    workers.start(WorkerKind::Fetch, spool.pg_wal());
                }
            });
            if taken {
                return Ok(FetchOutcome::FromSpool);
            }
        }
        let outcome = self
            .fetch(name, dest)
            .instrument(tracing::debug_span!("fetch phase", phase = "store fetch"))
            .await;
        if let Some(spool) = &spool {
            match &outcome {
                Ok(FetchOutcome::NotFound) => spool.remember_missing(name),
                Ok(_) => spool.clear_failure(name),
                Err(e) => spool.record_failure(name, &e.to_string()),
            }
        }
        outcome
    }

    /// The push-ahead worker of `pg_wal`, until PostgreSQL stops calling or `cancel`.
    /// `None` when another worker holds the spool.
    pub async fn run_push_worker(
        &self,
        pg_wal: &Path,
        cancel: &CancellationToken,
    ) -> Result<Option<PushAheadReport>, Error> {
        let spool = PushSpool::for_pg_wal(pg_wal);
        let Some(_lock) = spool.try_lock_worker().map_err(spool_error)? else {
            return Ok(None);
        };
        let options = PushAheadOptions {
            compression: self.config.compression,
            parallelism: self.config.push_ahead.parallelism.max(1),
            idle_exit: self.config.push_ahead.idle_exit,
        };
        Ok(Some(
            run_push_worker(self.repository()?, &spool, options, cancel).await,
        ))
    }

    /// The fetch-ahead worker of `pg_wal`, until recovery stops asking or `cancel`. `None`
    /// when another worker holds the spool.
    pub async fn run_fetch_worker(
        &self,
        pg_wal: &Path,
        cancel: &CancellationToken,
    ) -> Result<Option<PrefetchReport>, Error> {
        let spool = FetchSpool::for_pg_wal(pg_wal);
        let Some(_lock) = spool.try_lock_worker().map_err(spool_error)? else {
            return Ok(None);
        };
        let fetch_ahead = self.config.fetch_ahead;
        let options = PrefetchOptions {
            preferred: self.config.compression.codec(),
            parallelism: fetch_ahead.parallelism.max(1),
            decoders: decoders_for_cores(),
            max_bytes: fetch_ahead.max_bytes,
            reserve_bytes: fetch_ahead.reserve_bytes,
            idle_exit: fetch_ahead.idle_exit,
        };
        Ok(Some(
            run_prefetch_worker(self.repository()?, &spool, options, cancel).await,
        ))
    }

    // Backups ---------------------------------------------------------------------------

    /// Takes a base backup of the server `request.connection` reaches; returns its manifest
    /// once the backup exists. Cancelled, no manifest is written and the claim is withdrawn.
    pub async fn backup(
        &self,
        request: BackupRequest,
        progress: Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<Manifest, Error> {
        let options = BackupOptions {
            pgdata: request.pgdata,
            connection: request.connection,
            compression: self.config.compression,
            parallel: request.parallel.unwrap_or(self.config.parallelism),
            part_size: request.part_size,
            fast_checkpoint: request.fast_checkpoint,
            wal_timeout: request.wal_timeout,
            rate_limit: self.rate_limit(),
            defer_to_archiving: request.defer_to_archiving,
        };
        Ok(take_backup(self.repository()?, &options, progress, cancel).await?)
    }

    /// Is archiving into this repository working end to end, right now: the server's
    /// settings name it, a forced WAL switch arrives in it within `archive_timeout`, and the
    /// newest backup is restorable ([`crate::check`]). Never fails as a whole: every problem
    /// is an item of the report.
    pub async fn check(
        &self,
        connection: &tokio_postgres::Config,
        archive_timeout: Duration,
        cancel: &CancellationToken,
    ) -> crate::check::CheckReport {
        crate::check::run(self, connection, archive_timeout, cancel).await
    }

    /// A restore drill ([`crate::drill`]): plans, restores into a scratch directory, starts
    /// PostgreSQL there with archiving off, waits for the target, runs the checks, stops it,
    /// and stores the report (`drills/<id>.json`). Fails as a whole only when the scratch
    /// directory cannot be made; every other failure is in the report.
    pub async fn drill(
        &self,
        request: crate::drill::DrillRequest,
        progress: Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<crate::drill::DrillOutcome, Error> {
        crate::drill::run(self, request, progress, cancel).await
    }

    /// Every metric ([`crate::metrics`]): the repository's, the spools of the server whose
    /// data directory is `pgdata`, PostgreSQL's archiver statistics through `connection`.
    /// Never fails: a source that cannot be read is reported as down.
    pub async fn metrics(
        &self,
        pgdata: Option<&Path>,
        connection: Option<&tokio_postgres::Config>,
    ) -> crate::metrics::Metrics {
        crate::metrics::collect(self, pgdata, connection).await
    }

    /// The backups: whole, interrupted (no manifest) and damaged (missing parts).
    pub async fn backups(&self) -> Result<BackupList, Error> {
        Ok(crate::backup::list_backups(self.repository()?).await?)
    }

    /// Everything the repository holds, read once.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(Snapshot::load(self.repository()?).await?)
    }

    /// Checks that the repository can recover to `spec` (from `backup`, or the backup the
    /// target calls for) and how: the plan [`Engine::restore`] carries out.
    pub async fn plan(
        &self,
        spec: &TargetSpec,
        backup: Option<&BackupSelector>,
        cancel: &CancellationToken,
    ) -> Result<CheckedPlan, Error> {
        let planned = async {
            let snapshot = Snapshot::load(self.repository()?).await?;
            Ok::<_, Error>(plan_recovery(self.repository()?, &snapshot, spec, backup).await?)
        };
        // Planning only reads: dropping it on cancel leaves nothing behind.
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::Cancelled("planning")),
            plan = planned => Ok(CheckedPlan {
                plan: plan?,
                to_latest: matches!(spec.target, RecoveryTarget::Latest),
            }),
        }
    }

    /// Restores the backup `plan` chose into `request.pgdata`, with the recovery settings
    /// that carry the plan out: starting PostgreSQL on it recovers to the planned target.
    pub async fn restore(
        &self,
        plan: &CheckedPlan,
        request: RestoreRequest,
        progress: Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<RestoreReport, Error> {
        let plan = plan.plan();
        let mut settings = plan.settings.clone();
        if let Some(action) = request.target_action {
            settings.push(("recovery_target_action".into(), action.as_str().into()));
        }
        for (name, value) in &request.settings {
            check_copy_setting(name.trim())?;
            settings.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let options = RestoreOptions {
            pgdata: request.pgdata,
            backup: BackupSelector::Id(
                plan.backup
                    .id
                    .parse()
                    .map_err(crate::backup::RestoreError::from)?,
            ),
            force: request.force,
            parallel: self.config.parallelism,
            tablespace_map: request.tablespace_map,
            recovery: RecoverySettings {
                restore_command: request.restore_command.command_line(&self.config.repo),
                settings,
                standby: request.standby,
            },
            take_over: request.take_over,
            rate_limit: self.rate_limit(),
        };
        Ok(restore_backup(self.repository()?, &options, progress, cancel).await?)
    }

    /// Starts PostgreSQL on a restored data directory and waits until recovery has reached
    /// its target.
    pub async fn start_restored(&self, options: &StartOptions) -> Result<RecoveryOutcome, Error> {
        Ok(start_and_wait(options).await?)
    }

    /// Reads backups back against their manifests (`backup`, or every whole backup, with the
    /// damaged ones reported), and checks WAL continuity per timeline. `progress` follows
    /// each backup in turn.
    pub async fn verify(
        &self,
        backup: Option<&BackupSelector>,
        progress: Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<VerifyOutcome, Error> {
        let (manifests, damaged) = match backup {
            Some(selector) => (
                vec![crate::backup::find_backup(self.repository()?, selector).await?],
                Vec::new(),
            ),
            None => {
                let list = self.backups().await?;
                let damaged = list.damaged.iter().map(DamagedSummary::from).collect();
                (list.backups, damaged)
            }
        };
        let mut backups = Vec::new();
        for manifest in &manifests {
            backups.push(
                verify_backup(
                    self.repository()?,
                    manifest,
                    self.config.parallelism,
                    self.rate_limit(),
                    progress.clone(),
                    cancel,
                )
                .await?,
            );
        }
        let wal = match self.repository()?.identity().await? {
            Some(identity) => {
                summarize(
                    &crate::catalog::list_wal(self.repository()?).await?,
                    identity.wal_segment_size,
                )
                .timelines
            }
            None => Vec::new(),
        };
        let ok = backups.iter().all(VerifyReport::ok)
            && damaged.is_empty()
            && wal.iter().all(|t| t.gaps.is_empty());
        Ok(VerifyOutcome {
            ok,
            backups,
            damaged,
            wal,
        })
    }

    /// What the repository holds and, given `pgdata`, its server's archiving and prefetch
    /// state. A location that holds nothing of walarch's is an error, not an empty report.
    pub async fn info(&self, pgdata: Option<&Path>) -> Result<InfoReport, Error> {
        // Identity and WAL first, on their own: a damaged backup or history file must not
        // hide the rest of the report from someone diagnosing the repository.
        let repo = self.repository()?;
        let (identity, wal) = futures::join!(repo.identity(), crate::catalog::list_wal(repo));
        let (identity, wal) = (identity?, wal?);
        let snapshot = Snapshot::load(repo).await;
        let holds_backups = snapshot.as_ref().map_or(true, Snapshot::is_repository);
        if identity.is_none() && wal.is_empty() && !holds_backups {
            return Err(crate::repo::RepoError::NotARepository {
                location: self.config.repo.to_string(),
            }
            .into());
        }
        let summary = identity
            .as_ref()
            .map(|i| summarize(&wal, i.wal_segment_size));
        let pg_wal = pgdata.map(|d| d.join("pg_wal"));
        let archiving = pg_wal
            .as_ref()
            .map(|p| PushSpool::for_pg_wal(p).status())
            .transpose()
            .map_err(spool_error)?;
        let prefetch = pg_wal.as_ref().map(|p| FetchSpool::for_pg_wal(p).status());
        let (recoverable_windows, recoverable_windows_error) = match (&identity, snapshot) {
            (None, _) => (Vec::new(), None),
            (Some(_), Err(error)) => (Vec::new(), Some(error.to_string())),
            (Some(_), Ok(snapshot)) => match recoverable_windows(repo, &snapshot).await {
                Ok(windows) => (windows, None),
                Err(error) => (Vec::new(), Some(error.to_string())),
            },
        };
        let (drills, drills_error) = match crate::drill::DrillHistory::load(repo).await {
            Ok(history) => (history, None),
            Err(error) => (Default::default(), Some(error.to_string())),
        };
        Ok(InfoReport {
            repository: self.config.repo.to_string(),
            identity,
            wal: summary,
            recoverable_windows,
            recoverable_windows_error,
            archiving,
            prefetch,
            drills,
            drills_error,
        })
    }

    // Retention -------------------------------------------------------------------------

    /// What `policy` lets go at `now`, and why; deletes nothing.
    pub async fn retention_plan(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Result<RetentionPlan, Error> {
        let inputs = RetentionInputs::from_snapshot(self.snapshot().await?)?;
        Ok(plan_retention(&inputs, policy, now)?)
    }

    /// Carries out `plan`: manifests first, then the rest of the backups, then WAL, so that
    /// a run stopped at any point (cancelled, failed) leaves every listed backup whole.
    pub async fn apply_retention(
        &self,
        plan: &RetentionPlan,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<RetentionReport, Error> {
        Ok(apply_retention(self.repository()?, plan, progress, cancel).await?)
    }
}

/// Whether `parent` (a pg_wal's parent, `""` when pg_wal was given relative) is `data_dir`.
fn same_directory(parent: Option<&Path>, data_dir: &Path) -> bool {
    let resolve = |dir: &Path| {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::canonicalize(dir).ok()
    };
    match (parent.and_then(resolve), resolve(data_dir)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// How long PostgreSQL's call waits for a running worker to store its file before pushing it
/// itself. The worker's own store requests are bounded by the retry and request timeouts.
const WORKER_WAIT: Duration = Duration::from_secs(600);

fn spool_error(source: std::io::Error) -> Error {
    Error::Spool(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_commands_are_quoted_for_the_shell() {
        let repo = RepoLocation::Local("/var/lib/wal archive".into());
        let command = RestoreCommand::Walarch {
            program: "/usr/bin/walarch".into(),
            config_file: Some("/etc/it's.toml".into()),
            encryption_key_file: None,
        };
        assert_eq!(
            command.command_line(&repo),
            r"/usr/bin/walarch --repo 'file:///var/lib/wal archive' --config '/etc/it'\''s.toml' wal-fetch %f %p"
        );
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(
            RestoreCommand::Custom("cp /a/%f %p".into()).command_line(&repo),
            "cp /a/%f %p"
        );
    }

    #[test]
    fn a_copy_cannot_override_what_the_plan_decides() {
        assert!(check_copy_setting("port").is_ok());
        assert!(check_copy_setting("archive_mode").is_ok());
        for refused in [
            "recovery_target_time",
            "recovery_target",
            "restore_command",
            "a b",
            "",
        ] {
            assert!(check_copy_setting(refused).is_err(), "{refused:?}");
        }
    }

    /// The engine's errors, each reached through a real path, and their kinds.
    mod error_kinds {
        use super::*;
        use crate::ErrorKind;
        use crate::testing::{synthetic_backup, synthetic_segment};
        use crate::wal::{Lsn, SegmentName, SegmentNo, SystemId, TimelineId, WalSegmentSize};

        const SIZE: u64 = 1 << 20;

        /// A local repository holding one segment of system 9 and one backup.
        async fn repository() -> (tempfile::TempDir, Engine, PathBuf, WalFileName) {
            let dir = tempfile::tempdir().unwrap();
            let config = EngineConfig::new(RepoLocation::Local(dir.path().join("repo")));
            let engine = Engine::open_for_write(config).unwrap();
            let size = WalSegmentSize::new(SIZE).unwrap();
            let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(1), size);
            let file = dir.path().join(name.to_string());
            std::fs::write(
                &file,
                synthetic_segment(SystemId::new(9), TimelineId::FIRST, SegmentNo::new(1), size),
            )
            .unwrap();
            engine.push(&file, None).await.unwrap();
            synthetic_backup(
                engine.repository().unwrap(),
                &"20261121T000000Z".parse().unwrap(),
                Lsn::new(SIZE + 0x28),
                Lsn::new(SIZE + 0x100),
                &[],
                &[("PG_VERSION", b"15\n")],
            )
            .await;
            (dir, engine, file, WalFileName::Segment(name))
        }

        #[tokio::test]
        async fn a_backup_the_store_does_not_have_is_not_found() {
            let (_dir, engine, _, _) = repository().await;
            let missing: BackupSelector = "20990101T000000Z".parse().unwrap();
            let spec = TargetSpec {
                target: RecoveryTarget::Latest,
                timeline: crate::recovery::TimelineChoice::Latest,
                inclusive: true,
            };
            let err = engine
                .plan(&spec, Some(&missing), &CancellationToken::new())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        }

        #[tokio::test]
        async fn another_systems_segment_is_refused() {
            let (dir, engine, _, name) = repository().await;
            let size = WalSegmentSize::new(SIZE).unwrap();
            let foreign = dir.path().join("foreign");
            std::fs::create_dir(&foreign).unwrap();
            let file = foreign.join(name.to_string());
            std::fs::write(
                &file,
                synthetic_segment(
                    SystemId::new(10),
                    TimelineId::FIRST,
                    SegmentNo::new(1),
                    size,
                ),
            )
            .unwrap();
            let err = engine.push(&file, None).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
        }

        #[tokio::test]
        async fn a_corrupted_object_is_corrupt() {
            let (dir, engine, _, name) = repository().await;
            let stored = dir
                .path()
                .join(format!("repo/wal/0000000100000000/{name}.zst"));
            let mut bytes = std::fs::read(&stored).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            std::fs::write(&stored, bytes).unwrap();
            let err = engine
                .fetch(&name, &dir.path().join("RECOVERYXLOG"))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        }

        #[tokio::test]
        async fn a_location_that_is_no_repository_is_a_setting_to_fix() {
            let dir = tempfile::tempdir().unwrap();
            let engine =
                Engine::open(EngineConfig::new(RepoLocation::Local(dir.path().into()))).unwrap();
            let err = engine.info(None).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
            assert!(
                err.to_string().contains("not a walarch repository"),
                "{err}"
            );
            let missing = Engine::open(EngineConfig::new(RepoLocation::Local(
                dir.path().join("absent"),
            )))
            .unwrap();
            let err = missing.backups().await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
        }

        /// A worker host that never starts anything.
        struct NoWorkers;

        impl WorkerHost for NoWorkers {
            fn start(&self, _: WorkerKind, _: &Path) -> bool {
                false
            }
        }

        #[tokio::test]
        async fn a_push_ahead_record_never_vouches_for_another_data_directorys_file() {
            // The file sits in the pg_wal of one directory, the caller names another (a
            // restored copy whose marker forbids this repository): the record the worker
            // would have left for the file must not let the call skip that directory's check.
            let (dir, engine, _, name) = repository().await;
            let elsewhere = dir.path().join("wal-volume");
            std::fs::create_dir_all(elsewhere.join("pg_wal")).unwrap();
            let file = elsewhere.join("pg_wal").join(name.to_string());
            let size = WalSegmentSize::new(SIZE).unwrap();
            std::fs::write(
                &file,
                synthetic_segment(SystemId::new(9), TimelineId::FIRST, SegmentNo::new(1), size),
            )
            .unwrap();
            let stored = engine.push(&file, None).await.unwrap();
            PushSpool::for_wal_file(&file)
                .unwrap()
                .record(
                    engine.repository().unwrap(),
                    &file,
                    &name,
                    &stored.key,
                    stored.stored_bytes,
                )
                .unwrap();
            let copy = dir.path().join("copy");
            std::fs::create_dir_all(&copy).unwrap();
            crate::backup::marker::write_marker(
                &copy,
                &crate::backup::marker::RestoreMarker {
                    restored_at: Utc::now(),
                    backup_id: "20261121T000000Z".parse().unwrap(),
                    source_repository: engine.config().repo.to_string(),
                    system_id: SystemId::new(9),
                    take_over: None,
                    accepted_repositories: vec![],
                },
            )
            .unwrap();
            let err = engine
                .push_for_server(&file, &copy, &NoWorkers)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
            // The same file with its own data directory takes the fast path.
            let report = engine
                .push_for_server(&file, &elsewhere, &NoWorkers)
                .await
                .unwrap();
            assert_eq!(report.outcome, PushOutcome::PushedAhead);
        }

        #[tokio::test]
        async fn a_cancelled_plan_is_cancelled() {
            let (_dir, engine, _, _) = repository().await;
            let cancel = CancellationToken::new();
            cancel.cancel();
            let spec = TargetSpec {
                target: RecoveryTarget::Latest,
                timeline: crate::recovery::TimelineChoice::Latest,
                inclusive: true,
            };
            let err = engine.plan(&spec, None, &cancel).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        }
    }
}
