//! `walarch wal-push <path>`: PostgreSQL's archive_command.
//!
//! For a file in a data directory's pg_wal (PostgreSQL's `%p`) the engine's server path is
//! used: push-ahead, the restored-copy guard of that data directory. A file from elsewhere
//! needs `--pgdata` to name the data directory it belongs to, or is pushed as a loose file.

use std::path::{Path, PathBuf};

use serde::Serialize;
use walarch_core::Engine;
use walarch_core::archive::PushOutcome;

use super::spawn::ReExec;
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
    let engine = Engine::open_for_write(settings.engine.clone())?;
    let report = match args.pgdata.clone().or_else(|| data_dir_of(&args.path)) {
        Some(data_dir) => {
            engine
                .push_for_server(&args.path, &data_dir, &ReExec::new(global))
                .await?
        }
        None => engine.push(&args.path, None).await?,
    };
    let outcome = match report.outcome {
        PushOutcome::PushedAhead => "pushed_ahead",
        PushOutcome::AlreadyArchived => "already_archived",
        _ => "stored",
    };
    if report.outcome == PushOutcome::PushedAhead {
        tracing::info!(file = %report.name, "already pushed ahead");
    } else {
        tracing::info!(
            file = %report.name, outcome, bytes = report.original_bytes, stored = report.stored_bytes,
            ms = report.elapsed.as_millis() as u64, "archived"
        );
    }
    let result = PushResult {
        file: report.name.to_string(),
        outcome,
        key: (report.outcome != PushOutcome::PushedAhead).then_some(report.key),
        original_bytes: report.original_bytes,
        stored_bytes: report.stored_bytes,
        elapsed_ms: report.elapsed.as_secs_f64() * 1000.0,
    };
    out.result(&result, None);
    Ok(())
}

/// The data directory of a file in its `pg_wal`, as PostgreSQL passes `%p` (relative to the
/// data directory, which is the archiver's working directory, or absolute).
fn data_dir_of(file: &Path) -> Option<PathBuf> {
    let pg_wal = file
        .parent()
        .filter(|dir| dir.file_name().is_some_and(|n| n == "pg_wal"))?;
    Some(match pg_wal.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_directory_of_a_wal_path() {
        assert_eq!(
            data_dir_of(Path::new("pg_wal/000000010000000000000001")),
            Some(PathBuf::from("."))
        );
        assert_eq!(
            data_dir_of(Path::new("/d/pg_wal/000000010000000000000001")),
            Some(PathBuf::from("/d"))
        );
        assert_eq!(
            data_dir_of(Path::new("/tmp/000000010000000000000001")),
            None
        );
    }
}
