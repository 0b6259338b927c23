//! `walarch wal-fetch <name> <dest>`: PostgreSQL's restore_command.
//!
//! When `%p` is in a data directory's pg_wal, a background worker downloads the following
//! segments into a spool beside it; a spooled, verified copy is renamed into place. Misses
//! are remembered for the rest of the recovery. `--no-prefetch` fetches exactly one file.

use anyhow::Context;
use serde::Serialize;
use walarch_core::archive::{FetchOutcome, FetchSpool, fetch_wal_file};
use walarch_core::repo::Repository;
use walarch_core::wal::WalFileName;

use super::spawn;
use crate::Failure;
use crate::args::{GlobalArgs, WalFetchArgs};
use crate::output::Output;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct FetchResult {
    file: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    stored_bytes: u64,
    restored_bytes: u64,
    elapsed_ms: f64,
}

pub async fn run(
    settings: &Settings,
    global: &GlobalArgs,
    args: &WalFetchArgs,
    out: &Output,
) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let name: WalFileName = args
        .name
        .parse()
        .context("PostgreSQL asked for a file walarch does not archive")?;
    let spool = FetchSpool::for_destination(&args.dest)
        .filter(|_| !args.no_prefetch && settings.prefetch > 0);
    let result = |outcome, key, stored_bytes, restored_bytes| FetchResult {
        file: name.to_string(),
        outcome,
        key,
        stored_bytes,
        restored_bytes,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    };

    if let Some(spool) = &spool {
        if spool.is_known_missing(&name) {
            tracing::info!(file = %name, "not in the archive (remembered)");
            out.result(&result("not_found", None, 0, 0), None);
            return Err(Failure::NotInArchive);
        }
        // Take first, then move the position: the worker prunes what lies behind it. A
        // history file stops the window (recovery starts or ends); the worker then goes idle,
        // and removes the spool once recovery is over.
        let taken = spool.take(&settings.repo, &name, &args.dest);
        spool.set_position(&name);
        if !spool.worker_running() {
            spawn::worker(global, "fetch-worker", spool.pg_wal(), spool.dir());
        }
        if taken {
            tracing::info!(file = %name, "restored from the prefetch spool");
            out.result(&result("prefetched", None, 0, 0), None);
            return Ok(());
        }
    }

    let repo = Repository::open(settings.repo.clone(), &settings.store)?;
    match fetch_wal_file(
        &repo,
        &name,
        &args.dest,
        settings.compression.codec(),
        false,
    )
    .await?
    {
        FetchOutcome::Fetched(report) => {
            tracing::info!(file = %name, bytes = report.restored_bytes, ms = report.elapsed.as_millis() as u64, "restored");
            out.result(
                &result(
                    "fetched",
                    Some(report.key),
                    report.stored_bytes,
                    report.restored_bytes,
                ),
                None,
            );
            Ok(())
        }
        FetchOutcome::NotFound => {
            tracing::info!(file = %name, "not in the archive");
            if let Some(spool) = &spool {
                spool.remember_missing(&name);
            }
            out.result(&result("not_found", None, 0, 0), None);
            Err(Failure::NotInArchive)
        }
    }
}
