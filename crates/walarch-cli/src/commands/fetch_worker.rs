//! `walarch fetch-worker <pg_wal>` (hidden): the fetch-ahead worker that `wal-fetch` starts.

use std::time::Duration;

use walarch_core::archive::{FetchSpool, PrefetchOptions, run_prefetch_worker};
use walarch_core::repo::Repository;

use crate::Failure;
use crate::args::WorkerArgs;
use crate::settings::Settings;

/// The worker exits once recovery has asked for nothing new for this long (recovery ended,
/// paused, or waits for WAL that is not archived yet).
const IDLE_EXIT: Duration = Duration::from_secs(5);

pub async fn run(settings: &Settings, args: &WorkerArgs) -> Result<(), Failure> {
    let spool = FetchSpool::for_pg_wal(&args.pg_wal);
    let Some(_lock) = spool.try_lock_worker()? else {
        return Ok(()); // another worker is running
    };
    let repo = Repository::open(settings.repo.clone(), &settings.store)?;
    let options = PrefetchOptions {
        preferred: settings.compression.codec(),
        parallelism: settings.prefetch.max(1),
        max_bytes: settings.prefetch_bytes,
        reserve_bytes: settings.prefetch_reserve_bytes,
        idle_exit: IDLE_EXIT,
    };
    let report = run_prefetch_worker(&repo, &spool, options).await;
    tracing::info!(
        fetched = report.fetched,
        failed = report.failed,
        paused_for_space = report.paused_for_space,
        spool_removed = report.spool_removed,
        "fetch-ahead worker done"
    );
    Ok(())
}
