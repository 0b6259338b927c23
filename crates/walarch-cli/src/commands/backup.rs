//! `walarch backup`: an online base backup of a running cluster into the repository.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use walarch_core::backup::Progress;
use walarch_core::{BackupRequest, Engine};

use crate::Failure;
use crate::args::BackupArgs;
use crate::output::{Output, human_bytes};
use crate::progress::ProgressDisplay;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct BackupResult {
    id: String,
    timeline: u32,
    start_lsn: String,
    stop_lsn: String,
    from_standby: bool,
    files: usize,
    parts: usize,
    data_bytes: u64,
    stored_bytes: u64,
    seconds: f64,
}

pub async fn run(
    settings: &Settings,
    args: &BackupArgs,
    json: bool,
    out: &Output,
) -> Result<(), Failure> {
    let started = Instant::now();
    let engine = Engine::open_for_write(settings.engine.clone())?;
    let mut request = BackupRequest::new(crate::pg_env::connection_config(args.dbname.as_deref())?);
    request.pgdata = args.pgdata.clone();
    request.parallel = args.parallel;
    request.part_size = args.part_size_mib << 20;
    request.fast_checkpoint = !args.spread_checkpoint;
    request.wal_timeout = Duration::from_secs(args.wal_timeout);
    request.defer_to_archiving = !args.no_wal_priority;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), "backup", !json);
    let cancel = super::cancel_on_signal();
    let manifest = engine.backup(request, progress, &cancel).await;
    drop(display);
    let manifest = manifest?;
    let seconds = started.elapsed().as_secs_f64();
    let result = BackupResult {
        id: manifest.id.to_string(),
        timeline: manifest.timeline.get(),
        start_lsn: manifest.start_lsn.to_string(),
        stop_lsn: manifest.stop_lsn.to_string(),
        from_standby: manifest.from_standby,
        files: manifest.files.len(),
        parts: manifest.parts.len(),
        data_bytes: manifest.data_bytes(),
        stored_bytes: manifest.stored_bytes(),
        seconds,
    };
    let human = format!(
        "backup {} complete: {} in {seconds:.1} s ({}/s), stored {} ({:.1}x) in {} part(s); WAL {} .. {} on timeline {}",
        result.id,
        human_bytes(result.data_bytes),
        human_bytes((result.data_bytes as f64 / seconds.max(1e-3)) as u64),
        human_bytes(result.stored_bytes),
        result.data_bytes as f64 / result.stored_bytes.max(1) as f64,
        result.parts,
        result.start_lsn,
        result.stop_lsn,
        result.timeline
    );
    out.result(&result, Some(human));
    Ok(())
}
