//! `walarch info`: what the repository holds and, given the data directory, how archiving
//! and recovery are doing on this server.

use std::fmt::Write as _;

use walarch_core::{Engine, InfoReport};

use crate::Failure;
use crate::args::InfoArgs;
use crate::output::{Output, human_bytes as bytes};
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: &InfoArgs, out: &Output) -> Result<(), Failure> {
    let engine = Engine::open(settings.engine.clone())?;
    let result = engine.info(args.pgdata.as_deref()).await?;
    out.result(&result, Some(human(&result)));
    Ok(())
}

fn human(info: &InfoReport) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "repository   {}", info.repository);
    match &info.identity {
        None => {
            let _ = writeln!(text, "system       none yet (no WAL segment archived)");
        }
        Some(id) => {
            let _ = writeln!(
                text,
                "system       {} (PostgreSQL {}, {} segments), since {}",
                id.system_id,
                id.pg_major,
                id.wal_segment_size,
                id.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
    }
    if let Some(wal) = &info.wal {
        for tl in &wal.timelines {
            let gaps = if tl.gaps.is_empty() {
                "no gaps".to_owned()
            } else {
                format!("{} gap(s)", tl.gaps.len())
            };
            let _ = writeln!(
                text,
                "timeline {:<3} {} .. {}  {} segments{}, {} stored, {gaps}",
                tl.timeline,
                tl.first,
                tl.last,
                tl.segments,
                if tl.partial_segments > 0 {
                    format!(" + {} partial", tl.partial_segments)
                } else {
                    String::new()
                },
                bytes(tl.stored_bytes)
            );
            for (from, to) in &tl.gaps {
                let _ = writeln!(text, "  missing    {from} .. {to}");
            }
        }
        if !wal.history_files.is_empty() {
            let list: Vec<String> = wal
                .history_files
                .iter()
                .map(|t| format!("{t:08X}.history"))
                .collect();
            let _ = writeln!(text, "history      {}", list.join(", "));
        }
        if let (Some(name), Some(at)) = (&wal.last_archived, wal.last_archived_at) {
            let _ = writeln!(
                text,
                "last         {name} at {}",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
    }
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string();
    for w in &info.recoverable_windows {
        let _ = writeln!(
            text,
            "recoverable  timeline {}: {} ({}, end of backup {}) .. {} ({}); WAL ends {} in {}, next missing {}",
            w.timeline,
            time(w.start_time),
            w.start_lsn,
            w.backup,
            w.end_time.map_or("no commit archived".into(), time),
            w.last_commit_lsn
                .map_or("-".into(), |l| format!("last commit at {l}")),
            w.end_lsn,
            w.last_segment,
            w.next_missing
        );
    }
    if info.recoverable_windows.is_empty() && info.identity.is_some() {
        let why = info
            .recoverable_windows_error
            .clone()
            .unwrap_or_else(|| "no backup with its WAL (take one with `walarch backup`)".into());
        let _ = writeln!(text, "recoverable  nothing: {why}");
    }
    match (&info.drills.last_successful, &info.drills.last) {
        (_, None) => {
            let _ = writeln!(
                text,
                "drill        none yet (`walarch drill` proves a recovery)"
            );
        }
        (passed, Some(last)) => {
            if let Some(d) = passed {
                let _ = writeln!(
                    text,
                    "drill        last passed {} ({}): target {}, RTO {}, RPO {} behind then",
                    d.id,
                    d.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    d.target,
                    d.rto_seconds.map_or("-".into(), |s| format!("{s:.1} s")),
                    d.rpo
                        .seconds_behind_now
                        .map_or("-".into(), |s| format!("{s:.1} s")),
                );
            } else {
                let _ = writeln!(text, "drill        none passed yet");
            }
            if !last.ok {
                let _ = writeln!(
                    text,
                    "  last drill {} FAILED: {}",
                    last.id,
                    last.error.as_deref().unwrap_or("-")
                );
            }
        }
    }
    if let Some(e) = &info.drills_error {
        let _ = writeln!(text, "  drills     cannot be read: {e}");
    }
    if let Some(a) = &info.archiving {
        let oldest = a.oldest_ready_age.map_or(String::new(), |d| {
            format!(", oldest waiting {:.1} s", d.as_secs_f64())
        });
        let _ = writeln!(
            text,
            "archiving    {} file(s) ready{oldest}; {} pushed ahead; worker {}",
            a.ready,
            a.pushed_ahead,
            if a.worker_running { "running" } else { "idle" }
        );
        for (name, message) in &a.failures {
            let _ = writeln!(text, "  failed     {name}: {message}");
        }
    }
    if let Some(p) = &info.prefetch
        && (p.position.is_some() || p.spooled_files > 0)
    {
        let _ = writeln!(
            text,
            "prefetch     at {}; {} file(s) spooled ({}); {} miss(es) remembered; worker {}",
            p.position.as_deref().unwrap_or("-"),
            p.spooled_files,
            bytes(p.spooled_bytes),
            p.remembered_misses,
            if p.worker_running { "running" } else { "idle" }
        );
    }
    if let Some(p) = &info.prefetch {
        for (name, message) in &p.failures {
            let _ = writeln!(text, "  fetch failed {name}: {message}");
        }
    }
    text.trim_end().to_owned()
}
