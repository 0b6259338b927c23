//! `walarch backups`: the complete backups in the repository, oldest first.

use std::fmt::Write as _;

use serde::Serialize;
use walarch_core::{DamagedSummary, Engine};

use crate::Failure;
use crate::output::{Output, human_bytes};
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct Listed {
    id: String,
    started_at: String,
    stopped_at: String,
    completed_at: String,
    start_lsn: String,
    stop_lsn: String,
    timeline: u32,
    from_standby: bool,
    pg_version: u32,
    files: usize,
    data_bytes: u64,
    stored_bytes: u64,
    compression_ratio: f64,
    duration_seconds: f64,
}

#[derive(Debug, Serialize)]
struct BackupsResult {
    backups: Vec<Listed>,
    /// Backup folders without a manifest (interrupted or still running): not backups.
    incomplete: Vec<String>,
    /// Manifests whose backup lacks stored objects: not restorable, not backups.
    damaged: Vec<DamagedSummary>,
}

pub async fn run(settings: &Settings, out: &Output) -> Result<(), Failure> {
    let list = Engine::open(settings.engine.clone())?.backups().await?;
    let backups = list
        .backups
        .iter()
        .map(|m| Listed {
            id: m.id.to_string(),
            started_at: m.started_at.to_rfc3339(),
            stopped_at: m.stopped_at.to_rfc3339(),
            completed_at: m.completed_at.to_rfc3339(),
            start_lsn: m.start_lsn.to_string(),
            stop_lsn: m.stop_lsn.to_string(),
            timeline: m.timeline.get(),
            from_standby: m.from_standby,
            pg_version: m.pg_version_num,
            files: m.files.len(),
            data_bytes: m.data_bytes(),
            stored_bytes: m.stored_bytes(),
            compression_ratio: m.data_bytes() as f64 / m.stored_bytes().max(1) as f64,
            duration_seconds: (m.completed_at - m.started_at).num_milliseconds() as f64 / 1000.0,
        })
        .collect();
    let result = BackupsResult {
        backups,
        incomplete: list.incomplete.iter().map(ToString::to_string).collect(),
        damaged: list.damaged.iter().map(DamagedSummary::from).collect(),
    };
    out.result(&result, Some(human(&result)));
    Ok(())
}

fn human(result: &BackupsResult) -> String {
    let mut text = if result.backups.is_empty() {
        "no backups\n".to_owned()
    } else {
        table(&result.backups)
    };
    if !result.incomplete.is_empty() {
        let _ = writeln!(
            text,
            "incomplete (no manifest, not restorable): {}",
            result.incomplete.join(", ")
        );
    }
    for damaged in &result.damaged {
        let _ = writeln!(
            text,
            "DAMAGED {} (manifest without its parts, not restorable): missing {}",
            damaged.id,
            damaged.missing.join(", ")
        );
    }
    text.trim_end().to_owned()
}

fn table(backups: &[Listed]) -> String {
    let mut text = format!(
        "{:<17} {:<20} {:>8} {:>3} {:<12} {:<12} {:>10} {:>10} {:>6}\n",
        "id", "started (UTC)", "duration", "tl", "start lsn", "stop lsn", "data", "stored", "ratio"
    );
    for b in backups {
        let _ = writeln!(
            text,
            "{:<17} {:<20} {:>7.1}s {:>3} {:<12} {:<12} {:>10} {:>10} {:>5.1}x{}",
            b.id,
            b.started_at
                .get(..19)
                .unwrap_or(&b.started_at)
                .replace('T', " "),
            b.duration_seconds,
            b.timeline,
            b.start_lsn,
            b.stop_lsn,
            human_bytes(b.data_bytes),
            human_bytes(b.stored_bytes),
            b.compression_ratio,
            if b.from_standby { "  (standby)" } else { "" }
        );
    }
    text
}
