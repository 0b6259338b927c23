//! `walarch fetch-worker <pg_wal>` (hidden): the fetch-ahead worker that `wal-fetch` starts.

use walarch_core::{CancellationToken, Engine};

use crate::Failure;
use crate::args::WorkerArgs;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: &WorkerArgs) -> Result<(), Failure> {
    let engine = Engine::open(settings.engine.clone())?;
    if let Some(report) = engine
        .run_fetch_worker(&args.pg_wal, &CancellationToken::new())
        .await?
    {
        tracing::info!(
            fetched = report.fetched,
            failed = report.failed,
            paused_for_space = report.paused_for_space,
            spool_removed = report.spool_removed,
            "fetch-ahead worker done"
        );
    }
    Ok(())
}
