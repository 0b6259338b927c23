//! `walarch wal-fetch <name> <dest>`: PostgreSQL's restore_command.
//!
//! When `%p` is in a data directory's pg_wal, the engine's server path downloads the
//! following segments ahead (a worker this command starts) and answers from verified spooled
//! copies. `--no-prefetch` fetches exactly one file.

use anyhow::Context;
use serde::Serialize;
use walarch_core::Engine;
use walarch_core::archive::FetchOutcome;
use walarch_core::wal::WalFileName;

use super::spawn::ReExec;
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
    let engine = Engine::open(settings.engine.clone())?;
    let outcome = if args.no_prefetch {
        engine.fetch(&name, &args.dest).await?
    } else {
        engine
            .fetch_for_server(&name, &args.dest, &ReExec::new(global))
            .await?
    };
    let result = |outcome, key, stored_bytes, restored_bytes| FetchResult {
        file: name.to_string(),
        outcome,
        key,
        stored_bytes,
        restored_bytes,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    match outcome {
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
        FetchOutcome::FromSpool => {
            tracing::info!(file = %name, "restored from the prefetch spool");
            out.result(&result("prefetched", None, 0, 0), None);
            Ok(())
        }
        FetchOutcome::NotFound => {
            tracing::info!(file = %name, "not in the archive");
            out.result(&result("not_found", None, 0, 0), None);
            Err(Failure::NotInArchive)
        }
        // Anything this build does not know is not a store-confirmed absence: stop recovery.
        other => Err(anyhow::anyhow!("unexpected outcome {other:?}").into()),
    }
}
