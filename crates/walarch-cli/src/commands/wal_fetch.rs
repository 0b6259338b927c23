//! `walarch wal-fetch <name> <dest>`: PostgreSQL's restore_command.

use anyhow::Context;
use serde::Serialize;
use walarch_core::archive::{FetchOutcome, fetch_wal_file};
use walarch_core::repo::Repository;
use walarch_core::wal::WalFileName;

use crate::Failure;
use crate::args::WalFetchArgs;
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

pub async fn run(settings: &Settings, args: &WalFetchArgs, out: &Output) -> Result<(), Failure> {
    let name: WalFileName = args
        .name
        .parse()
        .context("PostgreSQL asked for a file walarch does not archive")?;
    let repo = Repository::open(settings.repo.clone(), &settings.store)?;
    match fetch_wal_file(&repo, &name, &args.dest, settings.compression.codec()).await? {
        FetchOutcome::Fetched(report) => {
            tracing::info!(file = %name, bytes = report.restored_bytes, ms = report.elapsed.as_millis() as u64, "restored");
            let result = FetchResult {
                file: name.to_string(),
                outcome: "fetched",
                key: Some(report.key),
                stored_bytes: report.stored_bytes,
                restored_bytes: report.restored_bytes,
                elapsed_ms: report.elapsed.as_secs_f64() * 1000.0,
            };
            out.result(&result, None);
            Ok(())
        }
        FetchOutcome::NotFound => {
            tracing::info!(file = %name, "not in the archive");
            let result = FetchResult {
                file: name.to_string(),
                outcome: "not_found",
                key: None,
                stored_bytes: 0,
                restored_bytes: 0,
                elapsed_ms: 0.0,
            };
            out.result(&result, None);
            Err(Failure::NotInArchive)
        }
    }
}
