//! `walarch wal-push <path>`: PostgreSQL's archive_command.
//!
//! When the file sits in a data directory's pg_wal, a background worker pushes the other
//! queued files ahead of PostgreSQL; a file the worker already stored returns at once.

use std::time::{Duration, Instant};

use serde::Serialize;
use walarch_core::archive::{FetchSpool, PushOutcome, PushSpool, push_wal_file};
use walarch_core::repo::Repository;
use walarch_core::wal::WalFileName;

use super::spawn;
use crate::Failure;
use crate::args::{GlobalArgs, WalPushArgs};
use crate::output::Output;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct PushResult {
    file: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    original_bytes: u64,
    stored_bytes: u64,
    elapsed_ms: f64,
}

pub async fn run(
    settings: &Settings,
    global: &GlobalArgs,
    args: &WalPushArgs,
    out: &Output,
) -> Result<(), Failure> {
    let started = Instant::now();
    let repo = Repository::open_for_write(settings.repo.clone(), &settings.store)?;
    let spool = PushSpool::for_wal_file(&args.path).filter(|_| settings.push_ahead > 0);
    let name: Option<WalFileName> = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok());

    if let (Some(spool), Some(name)) = (&spool, &name) {
        spool.note_call(&repo);
        remove_finished_fetch_spool(&args.path);
        let spawned = start_worker_if_useful(spool, global);
        let done = spool.is_confirmed(&repo, &args.path, name).await
            || ((spawned.is_some() || spool.worker_running())
                && spool
                    .wait_for_worker(&repo, &args.path, name, spawned, WORKER_WAIT)
                    .await);
        if done {
            tracing::info!(file = %name, "already pushed ahead");
            let result = PushResult {
                file: name.to_string(),
                outcome: "pushed_ahead",
                key: None,
                original_bytes: 0,
                stored_bytes: 0,
                elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            };
            out.result(&result, None);
            return Ok(());
        }
    }

    let report = push_wal_file(&repo, &args.path, settings.compression).await?;
    let outcome = match report.outcome {
        PushOutcome::Stored => "stored",
        PushOutcome::AlreadyArchived => "already_archived",
    };
    tracing::info!(
        file = %report.name, outcome, bytes = report.original_bytes, stored = report.stored_bytes,
        ms = report.elapsed.as_millis() as u64, "archived"
    );
    let result = PushResult {
        file: report.name.to_string(),
        outcome,
        key: Some(report.key),
        original_bytes: report.original_bytes,
        stored_bytes: report.stored_bytes,
        elapsed_ms: report.elapsed.as_secs_f64() * 1000.0,
    };
    out.result(&result, None);
    Ok(())
}

/// How long PostgreSQL's call waits for a running worker to store its file before pushing it
/// itself. The worker's own store requests are bounded by the retry and request timeouts.
const WORKER_WAIT: Duration = Duration::from_secs(600);

/// Starts the push-ahead worker when more than one file is queued and none runs; returns
/// when it was started.
fn start_worker_if_useful(spool: &PushSpool, global: &GlobalArgs) -> Option<Instant> {
    if spool.worker_running() || spool.ready_files().map(|r| r.len()).unwrap_or(0) < 2 {
        return None;
    }
    spawn::worker(global, "push-worker", spool.pg_wal(), spool.dir()).then(Instant::now)
}

/// After recovery, the server archives again: a fetch spool left behind goes. Not while a
/// recovery or standby signal file exists (with archive_mode = always a standby archives too).
fn remove_finished_fetch_spool(path: &std::path::Path) {
    let data_dir = path
        .parent()
        .and_then(|pg_wal| pg_wal.parent())
        .unwrap_or(std::path::Path::new("."));
    if data_dir.join("recovery.signal").exists() || data_dir.join("standby.signal").exists() {
        return;
    }
    if let Some(spool) = FetchSpool::for_destination(path)
        && spool.dir_exists()
        && !spool.worker_running()
    {
        spool.remove();
    }
}
