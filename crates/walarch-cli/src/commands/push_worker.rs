//! `walarch push-worker <pg_wal>` (hidden): the push-ahead worker that `wal-push` starts.

use std::time::Duration;

use walarch_core::archive::{PushAheadOptions, PushSpool, run_push_worker};
use walarch_core::repo::Repository;

use crate::Failure;
use crate::args::WorkerArgs;
use crate::settings::Settings;

/// The worker exits this long after PostgreSQL's last archive_command call (a paused or
/// stopped archiver); the next wal-push with a backlog starts another.
const IDLE_EXIT: Duration = Duration::from_secs(2);

pub async fn run(settings: &Settings, args: &WorkerArgs) -> Result<(), Failure> {
    let spool = PushSpool::for_pg_wal(&args.pg_wal);
    let Some(_lock) = spool.try_lock_worker()? else {
        return Ok(()); // another worker is running
    };
    let repo = Repository::open_for_write(settings.repo.clone(), &settings.store)?;
    let options = PushAheadOptions {
        compression: settings.compression,
        parallelism: settings.push_ahead.max(1),
        idle_exit: IDLE_EXIT,
    };
    let report = run_push_worker(&repo, &spool, options).await;
    tracing::info!(
        pushed = report.pushed,
        failed = report.failed,
        "push-ahead worker done"
    );
    Ok(())
}
