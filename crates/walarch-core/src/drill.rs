//! Restore drills: a point-in-time recovery that was never carried out is a hypothesis. A
//! drill carries one out, start to finish, on this host, and measures it: plan, restore into
//! a scratch directory, start PostgreSQL there with archiving off, wait until recovery
//! reaches the target, run checks, stop the server and remove the scratch directory. It
//! reports the recovery time (RTO: restore + recovery), how much would be lost (RPO, against
//! now and against the target), the bytes read and each check, and stores that report in the
//! repository, create-only (`drills/<id>.json`), where `info` and `metrics` find it.
//!
//! The copy can never write to a repository: `archive_mode = off`, the restore marker of
//! DESIGN.md §2.5 (a restored copy is refused by `wal-push` unless it took the repository
//! over, which a drill never does), it listens on a socket in the scratch directory only,
//! and nothing of the drill but its report is stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::backup::{BackupSelector, Progress};
use crate::check::CheckStatus;
use crate::error::Error;
use crate::postgres::{ServerBinaries, StartOptions};
use crate::recovery::{RecoveryTarget, TargetSpec};
use crate::repo::{PutOutcome, Repository};
use crate::store::keys;
use crate::{CancellationToken, Engine, RestoreCommand, RestoreRequest, TargetAction};

/// Indexes checked with amcheck in each database, at most: a sample, so that a drill of a
/// large database stays bounded; over many drills the random sample covers them all.
const AMCHECK_SAMPLE: i64 = 20;

/// What to drill.
#[derive(Debug, Clone)]
pub struct DrillRequest {
    /// The recovery target.
    pub spec: TargetSpec,
    /// The backup to restore; `None`: the one the target calls for.
    pub backup: Option<BackupSelector>,
    /// The directory under which the drill's own scratch directory is made.
    pub scratch: PathBuf,
    /// The directory of the server binaries (`{major}` stands for the backup's major
    /// version); `None`: looked for in `binary_candidates` and the usual places
    /// ([`crate::postgres::find_server_binaries`]).
    pub pg_bin: Option<PathBuf>,
    /// Directories to look for the server binaries in first (the caller's `PATH`).
    pub binary_candidates: Vec<PathBuf>,
    /// How the restored copy fetches WAL (a walarch executable, normally).
    pub restore_command: RestoreCommand,
    /// The role the checks connect as (a superuser of the backed-up cluster), which is also
    /// the role recovery is watched with.
    pub user: String,
    /// The database the `--check` queries run in.
    pub dbname: String,
    /// Queries that must each return one row holding `true`.
    pub checks: Vec<String>,
    /// Leave the scratch directory (with the stopped copy) in place.
    pub keep: bool,
    /// How long recovery may take to reach the target.
    pub recovery_timeout: Duration,
}

/// The stage a drill failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillStage {
    /// The plan: the repository cannot reach the target (a missing segment, no backup).
    Plan,
    /// Restoring the backup into the scratch directory.
    Restore,
    /// Starting PostgreSQL and replaying WAL to the target.
    Recovery,
    /// A check of the recovered server.
    Checks,
}

impl DrillStage {
    /// The stage's name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillStage::Plan => "plan",
            DrillStage::Restore => "restore",
            DrillStage::Recovery => "recovery",
            DrillStage::Checks => "checks",
        }
    }
}

/// How much would be lost: the recovery point objective, measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rpo {
    /// The last commit (or abort) in the archived WAL on the target's timeline.
    pub last_archived_commit: Option<DateTime<Utc>>,
    /// How old that commit was when the drill ran: what a recovery to `latest` would lose if
    /// the primary were lost now.
    pub seconds_behind_now: Option<f64>,
    /// The time the target stands for: the target time, or the time of the stop record the
    /// plan found (for `latest`, the last archived commit).
    pub target_time: Option<DateTime<Utc>>,
    /// The last commit the recovered copy replayed.
    pub recovered_commit: Option<DateTime<Utc>>,
    /// From the last recovered commit to the target time: what the copy lacks of the
    /// target.
    pub seconds_behind_target: Option<f64>,
}

/// One check of the recovered copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillCheck {
    /// `connect`, `databases`, `amcheck`, or `check: <query>`.
    pub name: String,
    /// How it came out.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
}

/// A drill's report, as stored in `drills/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The drill's id (its start time, `20261201T031500Z`, with a suffix if taken).
    pub id: String,
    /// Whether every stage and every check passed.
    pub ok: bool,
    /// When the drill started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The host it ran on.
    pub host: String,
    /// The target, in words.
    pub target: String,
    /// The backup restored, once planned.
    pub backup: Option<String>,
    /// The stage that failed, if one did.
    pub failed_stage: Option<DrillStage>,
    /// Why, in one line.
    pub error: Option<String>,
    /// Seconds spent planning (checking the repository can reach the target).
    pub plan_seconds: f64,
    /// Seconds restoring the backup's files.
    pub restore_seconds: Option<f64>,
    /// Seconds from starting PostgreSQL to recovery reaching the target.
    pub recovery_seconds: Option<f64>,
    /// Restore plus recovery: how long a real recovery of this target takes on this host.
    pub rto_seconds: Option<f64>,
    /// How much would be lost.
    pub rpo: Rpo,
    /// Backup bytes restored (file content).
    pub backup_bytes: u64,
    /// WAL bytes recovery reads, as stored (compressed), by the plan.
    pub wal_bytes: u64,
    /// WAL segments recovery reads, by the plan.
    pub wal_segments: u64,
    /// Where recovery stopped, in PostgreSQL's words.
    pub stop_message: Option<String>,
    /// Each check, in order.
    pub checks: Vec<DrillCheck>,
    /// The scratch directory (removed unless kept).
    pub scratch: String,
    /// Whether the scratch directory was left in place.
    pub kept: bool,
    /// The walarch version that ran it.
    pub walarch_version: String,
}

impl DrillReport {
    fn fail(&mut self, stage: DrillStage, error: impl std::fmt::Display) {
        self.ok = false;
        self.failed_stage.get_or_insert(stage);
        if self.error.is_none() {
            self.error = Some(crate::store::redact_secrets(&error.to_string()));
        }
    }
}

/// A drill's outcome: its report and where it was stored.
#[derive(Debug, Clone, Serialize)]
pub struct DrillOutcome {
    /// The report.
    #[serde(flatten)]
    pub report: DrillReport,
    /// The key the report was stored at.
    pub stored_at: Option<String>,
    /// Why the report could not be stored, if it could not.
    pub store_error: Option<String>,
}

/// Runs a drill (see the module documentation). Fails as a whole only when nothing could be
/// started (the scratch directory cannot be made); every other failure is in the report.
pub(crate) async fn run(
    engine: &Engine,
    request: DrillRequest,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<DrillOutcome, Error> {
    // PostgreSQL refuses to run as root: say so before restoring anything.
    if std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
        return Err(Error::Config(
            "PostgreSQL refuses to run as root: run the drill as the OS user that runs PostgreSQL (e.g. postgres)".into(),
        ));
    }
    let started_at = Utc::now();
    let id = started_at.format("%Y%m%dT%H%M%SZ").to_string();
    let workdir = make_scratch_dir(&request.scratch, &id)?;
    let mut report = DrillReport {
        id,
        ok: true,
        started_at,
        finished_at: started_at,
        host: hostname(),
        target: request.spec.target.to_string(),
        backup: None,
        failed_stage: None,
        error: None,
        plan_seconds: 0.0,
        restore_seconds: None,
        recovery_seconds: None,
        rto_seconds: None,
        rpo: Rpo::default(),
        backup_bytes: 0,
        wal_bytes: 0,
        wal_segments: 0,
        stop_message: None,
        checks: Vec::new(),
        scratch: workdir.display().to_string(),
        kept: request.keep,
        walarch_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut copy = ScratchCopy {
        pgdata: workdir.join("pgdata"),
        workdir,
        binaries: None,
    };
    let server_started = drill(engine, &request, &mut copy, progress, cancel, &mut report).await;
    if let (true, Some(binaries)) = (server_started, &copy.binaries)
        && let Err(e) = crate::postgres::stop_server(&copy.pgdata, binaries).await
    {
        report.fail(DrillStage::Checks, format!("cannot stop the copy: {e}"));
    }
    if !request.keep
        && let Err(e) = std::fs::remove_dir_all(&copy.workdir)
    {
        tracing::warn!(dir = %copy.workdir.display(), error = %e, "cannot remove the drill's scratch directory");
    }
    report.finished_at = Utc::now();
    let stored = match engine.repository() {
        Ok(repo) => store_report(repo, &mut report).await,
        Err(e) => Err(e.to_string()),
    };
    let (stored_at, store_error) = match stored {
        Ok(key) => (Some(key), None),
        Err(e) => (None, Some(e)),
    };
    Ok(DrillOutcome {
        report,
        stored_at,
        store_error,
    })
}

/// The drill's copy: its directory, the data directory in it, and the binaries it runs with
/// once they are found.
struct ScratchCopy {
    workdir: PathBuf,
    pgdata: PathBuf,
    binaries: Option<ServerBinaries>,
}

/// The drill's stages, each recorded in `report`; whether a server was started (and must be
/// stopped).
async fn drill(
    engine: &Engine,
    request: &DrillRequest,
    copy: &mut ScratchCopy,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
    report: &mut DrillReport,
) -> bool {
    let pgdata = copy.pgdata.clone();
    let pgdata = pgdata.as_path();
    let clock = Instant::now();
    let plan = engine
        .plan(&request.spec, request.backup.as_ref(), cancel)
        .await;
    report.plan_seconds = clock.elapsed().as_secs_f64();
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            report.fail(DrillStage::Plan, e);
            return false;
        }
    };
    let planned = plan.plan();
    report.backup = Some(planned.backup.id.clone());
    // Found (or refused) before anything is restored: an hour of restore must not end in
    // "no PostgreSQL 16 binaries here".
    let found = crate::postgres::find_server_binaries(
        planned.backup.pg_major,
        request.pg_bin.as_deref(),
        &request.binary_candidates,
    )
    .await;
    let server_binaries = match found {
        Ok(found) => copy.binaries.insert(found).clone(),
        Err(e) => {
            report.fail(DrillStage::Recovery, e);
            return false;
        }
    };
    report.wal_bytes = planned.wal_bytes;
    report.wal_segments = planned.wal_segments;
    report.rpo.target_time = match &request.spec.target {
        RecoveryTarget::Time(time) => Some(*time),
        _ => planned.stop.time,
    };
    report.rpo.last_archived_commit = last_archived_commit(engine, planned.target_timeline).await;
    report.rpo.seconds_behind_now = report
        .rpo
        .last_archived_commit
        .map(|t| seconds_between(t, report.started_at));

    // Restore, set up so that the copy cannot archive and nobody else can reach it.
    let socket_dir = copy.workdir.clone();
    let port = match free_port() {
        Ok(port) => port,
        Err(e) => {
            report.fail(DrillStage::Restore, format!("no free local port: {e}"));
            return false;
        }
    };
    let mut restore = RestoreRequest::new(pgdata, request.restore_command.clone());
    restore.target_action = Some(TargetAction::Promote);
    restore.settings = vec![
        ("port".into(), port.to_string()),
        // Restore quotes each value for postgresql.auto.conf.
        ("listen_addresses".into(), String::new()),
        (
            "unix_socket_directories".into(),
            socket_dir.display().to_string(),
        ),
        ("archive_mode".into(), "off".into()),
        // A source with synchronous standbys would make the checks' writes wait forever.
        ("synchronous_standby_names".into(), String::new()),
        // The log goes where the recovery watch reads it.
        ("logging_collector".into(), "off".into()),
        ("cluster_name".into(), "walarch-drill".into()),
    ];
    let clock = Instant::now();
    let restored = engine.restore(&plan, restore, progress, cancel).await;
    report.restore_seconds = Some(clock.elapsed().as_secs_f64());
    match restored {
        Ok(restored) => report.backup_bytes = restored.bytes,
        Err(e) => {
            report.fail(DrillStage::Restore, e);
            return false;
        }
    }

    let start = StartOptions {
        pgdata: pgdata.to_owned(),
        binaries: server_binaries,
        user: request.user.clone(),
        action: TargetAction::Promote.as_str().to_owned(),
        timeout: request.recovery_timeout,
    };
    let clock = Instant::now();
    let outcome = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Error::Cancelled("the drill")),
        outcome = engine.start_restored(&start) => outcome,
    };
    report.recovery_seconds = Some(clock.elapsed().as_secs_f64());
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            report.fail(DrillStage::Recovery, e);
            // A timed-out or cancelled server is still running; a stopped one is not.
            return std::fs::exists(pgdata.join("postmaster.pid")).unwrap_or(true);
        }
    };
    report.recovery_seconds = Some(outcome.seconds);
    report.rto_seconds = report.restore_seconds.map(|r| r + outcome.seconds);
    report.stop_message = outcome.stop_message.clone();
    report.rpo.recovered_commit = outcome.last_replayed_commit;
    report.rpo.seconds_behind_target = match (report.rpo.target_time, outcome.last_replayed_commit)
    {
        (Some(target), Some(recovered)) => Some(seconds_between(recovered, target).max(0.0)),
        _ => None,
    };

    report.checks = run_checks(pgdata, request).await;
    if let Some(failed) = report
        .checks
        .iter()
        .find(|c| c.status == CheckStatus::Failed)
    {
        let message = format!("{} failed: {}", failed.name, failed.detail);
        report.fail(DrillStage::Checks, message);
    }
    true
}

/// The checks of the recovered copy: connect, list databases, amcheck on a sample of
/// indexes in each (where the extension is installed on this host), each `--check` query.
async fn run_checks(pgdata: &Path, request: &DrillRequest) -> Vec<DrillCheck> {
    use CheckStatus::{Failed, Warning};
    let ok = CheckStatus::Ok;
    let mut checks = Vec::new();
    let mut push = |name: &str, status: CheckStatus, detail: String| {
        checks.push(DrillCheck {
            name: name.to_owned(),
            status,
            detail,
        })
    };
    let config = match crate::postgres::local_connection(pgdata, &request.user).await {
        Ok(config) => config,
        Err(e) => {
            push("connect", Failed, e);
            return checks;
        }
    };
    let client = match connect(&config, "postgres").await {
        Ok(client) => client,
        Err(e) => {
            push("connect", Failed, e.to_string());
            return checks;
        }
    };
    match client
        .query_one("SELECT current_setting('server_version')", &[])
        .await
    {
        Ok(row) => push(
            "connect",
            ok,
            format!("PostgreSQL {} as {}", row.get::<_, String>(0), request.user),
        ),
        Err(e) => {
            push("connect", Failed, e.to_string());
            return checks;
        }
    }
    let databases: Vec<String> = match client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await
    {
        Ok(rows) => {
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            push(
                "databases",
                ok,
                format!("{}: {}", names.len(), names.join(", ")),
            );
            names
        }
        Err(e) => {
            push("databases", Failed, e.to_string());
            Vec::new()
        }
    };
    let amcheck_installed = client
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'",
            &[],
        )
        .await
        .map(|row| row.is_some());
    drop(client);
    match amcheck_installed {
        Err(e) => push("amcheck", Failed, e.to_string()),
        Ok(false) => push(
            "amcheck",
            Warning,
            "skipped: the amcheck extension is not installed for this server (PostgreSQL's contrib)"
                .into(),
        ),
        Ok(true) => {
            let mut checked = 0usize;
            let mut problem = None;
            for database in &databases {
                match amcheck_sample(&config, database).await {
                    Ok(n) => checked += n,
                    Err(e) => {
                        problem = Some(format!("database {database}: {e}"));
                        break;
                    }
                }
            }
            match problem {
                Some(problem) => push("amcheck", Failed, problem),
                None => push(
                    "amcheck",
                    ok,
                    format!(
                        "{checked} B-tree indexes checked (bt_index_check, up to {AMCHECK_SAMPLE} per database) in {} database{}",
                        databases.len(),
                        if databases.len() == 1 { "" } else { "s" }
                    ),
                ),
            }
        }
    }
    for query in &request.checks {
        let name = format!("check: {query}");
        match check_query(&config, &request.dbname, query).await {
            Ok(()) => push(&name, ok, "returned true".into()),
            Err(e) => push(&name, Failed, e),
        }
    }
    checks
}

/// Checks a random sample of the valid B-tree indexes of `database`; how many.
async fn amcheck_sample(config: &tokio_postgres::Config, database: &str) -> Result<usize, String> {
    let client = connect(config, database).await.map_err(|e| e.to_string())?;
    // The copy was promoted and is a scratch copy: creating the extension there is harmless.
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .await
        .map_err(|e| format!("CREATE EXTENSION amcheck: {e}"))?;
    let indexes = client
        .query(
            "SELECT c.oid, c.oid::regclass::text FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_am a ON a.oid = c.relam
              WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready
                AND c.relpersistence <> 't'
              ORDER BY random() LIMIT $1",
            &[&AMCHECK_SAMPLE],
        )
        .await
        .map_err(|e| e.to_string())?;
    for index in &indexes {
        let oid: u32 = index.get(0);
        let name: String = index.get(1);
        client
            .execute("SELECT bt_index_check($1::oid::regclass)", &[&oid])
            .await
            .map_err(|e| format!("index {name}: {}", db_error_text(&e)))?;
    }
    Ok(indexes.len())
}

/// Runs a `--check` query: it must return exactly one row of one column holding `true`.
async fn check_query(
    config: &tokio_postgres::Config,
    database: &str,
    query: &str,
) -> Result<(), String> {
    let client = connect(config, database).await.map_err(|e| e.to_string())?;
    let messages = client
        .simple_query(query)
        .await
        .map_err(|e| db_error_text(&e))?;
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect();
    match rows.as_slice() {
        [row] if row.len() == 1 && row.get(0) == Some("t") => Ok(()),
        [row] if row.len() == 1 => Err(format!(
            "returned {}, not true",
            row.get(0).unwrap_or("NULL")
        )),
        [row] => Err(format!("returned {} columns, not one boolean", row.len())),
        rows => Err(format!("returned {} rows, not one boolean", rows.len())),
    }
}

async fn connect(
    config: &tokio_postgres::Config,
    database: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = config.clone();
    config
        .dbname(database)
        .application_name("walarch drill")
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection to the drill's copy ended");
        }
    });
    Ok(client)
}

/// The server's own message for a failed statement.
fn db_error_text(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_else(|| error.to_string())
}

/// The last archived commit on `timeline`'s window (what `info` reports as its end).
async fn last_archived_commit(
    engine: &Engine,
    timeline: crate::wal::TimelineId,
) -> Option<DateTime<Utc>> {
    let repo = engine.repository().ok()?;
    let snapshot = engine.snapshot().await.ok()?;
    let windows = crate::recovery::recoverable_windows(repo, &snapshot)
        .await
        .ok()?;
    windows
        .iter()
        .filter(|w| w.timeline == timeline)
        .filter_map(|w| w.end_time)
        .max()
}

/// Stores `report` at `drills/<id>.json`, create-only: a drill started within the same
/// second as another gets a suffix.
async fn store_report(repo: &Repository, report: &mut DrillReport) -> Result<String, String> {
    let base = report.id.clone();
    for attempt in 0..100 {
        if attempt > 0 {
            report.id = format!("{base}-{attempt}");
        }
        let key = keys::drill_report(&report.id);
        let json = serde_json::to_vec_pretty(report).expect("a report serialises");
        match repo.put_new(&key, Bytes::from(json)).await {
            Ok(PutOutcome::Created) => return Ok(key.to_string()),
            Ok(PutOutcome::AlreadyExists) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("no free drill id after {base}"))
}

/// The last drill and the last successful one, as `info` and `metrics` report them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillHistory {
    /// The most recent drill, whatever its result.
    pub last: Option<DrillReport>,
    /// The most recent drill that passed.
    pub last_successful: Option<DrillReport>,
    /// Drills stored.
    pub count: usize,
}

impl DrillHistory {
    /// Reads the stored reports newest first (their ids sort by time), only as far back as
    /// the last successful one: a repository with years of daily drills costs one listing and
    /// a few reads. A report that does not parse is skipped with a warning: one damaged report
    /// must not hide the others.
    pub async fn load(repo: &Repository) -> Result<DrillHistory, Error> {
        let prefix = keys::drills();
        let mut listed: Vec<_> = repo
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|source| repo.store_error("list", &prefix, source))?;
        listed.retain(|meta| meta.location.as_ref().ends_with(".json"));
        // Newest first: by the id's time, then its suffix (`-1` came after none).
        let order = |meta: &object_store::ObjectMeta| {
            let id = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .unwrap_or_default()
                .to_owned();
            match id.split_once('-') {
                Some((time, n)) => (time.to_owned(), n.parse::<u32>().unwrap_or(0)),
                None => (id, 0),
            }
        };
        listed.sort_by_key(|meta| std::cmp::Reverse(order(meta)));
        let mut history = DrillHistory {
            count: listed.len(),
            ..DrillHistory::default()
        };
        for meta in listed {
            let Some(bytes) = repo.get_if_exists(&meta.location).await? else {
                continue;
            };
            let report = match serde_json::from_slice::<DrillReport>(&bytes) {
                Ok(report) => report,
                Err(e) => {
                    tracing::warn!(key = %meta.location, error = %e, "unreadable drill report");
                    continue;
                }
            };
            let newer = |than: &Option<DrillReport>| {
                than.as_ref()
                    .is_none_or(|known| report.started_at > known.started_at)
            };
            if report.ok && newer(&history.last_successful) {
                history.last_successful = Some(report.clone());
            }
            if newer(&history.last) {
                history.last = Some(report);
            }
            if history.last_successful.is_some() {
                break;
            }
        }
        Ok(history)
    }
}

/// Makes the drill's own directory under `parent` (made if needed), readable by its owner
/// only (the copy holds the data), and new: a kept drill's directory is never reused.
fn make_scratch_dir(parent: &Path, id: &str) -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let failed = |dir: &Path, e: std::io::Error| {
        Error::Config(format!(
            "cannot make the drill's scratch directory {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(parent).map_err(|e| failed(parent, e))?;
    for attempt in 0..100 {
        let dir = match attempt {
            0 => parent.join(format!("walarch-drill-{id}")),
            n => parent.join(format!("walarch-drill-{id}-{n}")),
        };
        // A Unix socket path is limited to about 107 bytes; say so before restoring anything.
        if dir.as_os_str().len() > 80 {
            return Err(Error::Config(format!(
                "the scratch directory {} is too long a path for the copy's socket: give a shorter --scratch",
                dir.display()
            )));
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed(&dir, e)),
        }
    }
    Err(Error::Config(format!(
        "no free scratch directory name under {}",
        parent.display()
    )))
}

/// A TCP port nobody listens on now. The copy listens on a Unix socket in its own
/// directory only; the port names that socket and keeps a `--keep` copy from clashing.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, ok: bool, second: i64) -> DrillReport {
        let at = DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap();
        DrillReport {
            id: id.into(),
            ok,
            started_at: at,
            finished_at: at,
            host: String::new(),
            target: "latest".into(),
            backup: None,
            failed_stage: (!ok).then_some(DrillStage::Checks),
            error: None,
            plan_seconds: 0.0,
            restore_seconds: None,
            recovery_seconds: None,
            rto_seconds: None,
            rpo: Rpo::default(),
            backup_bytes: 0,
            wal_bytes: 0,
            wal_segments: 0,
            stop_message: None,
            checks: Vec::new(),
            scratch: String::new(),
            kept: false,
            walarch_version: String::new(),
        }
    }

    #[tokio::test]
    async fn reports_are_stored_create_only_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(
            crate::store::RepoLocation::Local(dir.path().into()),
            &crate::store::StoreOptions::default(),
        )
        .unwrap();
        let mut first = report("20270115T030000Z", true, 0);
        let mut second = report("20270115T030000Z", false, 1);
        assert_eq!(
            store_report(&repo, &mut first).await.unwrap(),
            "drills/20270115T030000Z.json"
        );
        // The same second: a suffix, never an overwrite.
        assert_eq!(
            store_report(&repo, &mut second).await.unwrap(),
            "drills/20270115T030000Z-1.json"
        );
        std::fs::write(
            dir.path().join("drills/30000101T000000Z.json"),
            b"{not json",
        )
        .unwrap();
        let history = DrillHistory::load(&repo).await.unwrap();
        assert_eq!(history.count, 3);
        assert_eq!(history.last, Some(second.clone()));
        assert_eq!(history.last_successful, Some(first.clone()));
        // A newer drill that passed is both.
        let mut third = report("20270116T030000Z", true, 86_400);
        store_report(&repo, &mut third).await.unwrap();
        let history = DrillHistory::load(&repo).await.unwrap();
        assert_eq!(history.last, Some(third.clone()));
        assert_eq!(history.last_successful, Some(third));
    }
}
