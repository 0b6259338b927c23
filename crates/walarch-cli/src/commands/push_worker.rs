//! `walarch push-worker <pg_wal>` (hidden): the push-ahead worker that `wal-push` starts.

use walarch_core::{CancellationToken, Engine};

use crate::Failure;
use crate::args::WorkerArgs;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: &WorkerArgs) -> Result<(), Failure> {
    let engine = Engine::open_for_write(settings.engine.clone())?;
    if let Some(report) = engine
        .run_push_worker(&args.pg_wal, &CancellationToken::new())
        .await?
    {
        tracing::info!(
            pushed = report.pushed,
            failed = report.failed,
            "push-ahead worker done"
        );
    }
    Ok(())
}
