//! `walarch wal-push <path>`: PostgreSQL's archive_command.

use serde::Serialize;
use walarch_core::archive::{PushOutcome, push_wal_file};
use walarch_core::repo::Repository;

use crate::Failure;
use crate::args::WalPushArgs;
use crate::output::Output;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct PushResult {
    file: String,
    outcome: &'static str,
    key: String,
    original_bytes: u64,
    stored_bytes: u64,
    elapsed_ms: f64,
}

pub async fn run(settings: &Settings, args: &WalPushArgs, out: &Output) -> Result<(), Failure> {
    let repo = Repository::open_for_write(settings.repo.clone(), &settings.store)?;
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
        key: report.key,
        original_bytes: report.original_bytes,
        stored_bytes: report.stored_bytes,
        elapsed_ms: report.elapsed.as_secs_f64() * 1000.0,
    };
    out.result(&result, None);
    Ok(())
}
