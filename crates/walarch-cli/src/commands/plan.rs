//! `walarch plan`: whether the repository can recover to a target, and how.

use std::fmt::Write as _;

use walarch_core::recovery::RecoveryPlan;
use walarch_core::{CancellationToken, Engine};

use crate::Failure;
use crate::args::PlanArgs;
use crate::output::{Output, human_bytes};
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: &PlanArgs, out: &Output) -> Result<(), Failure> {
    let engine = Engine::open(settings.engine.clone())?;
    let spec = args.target.spec()?;
    let selector = args.backup.as_deref().map(str::parse).transpose()?;
    let plan = engine
        .plan(&spec, selector.as_ref(), &CancellationToken::new())
        .await?;
    out.result(&plan, Some(human(plan.plan())));
    Ok(())
}

/// The plan as a DBA reads it before committing to a long restore.
pub fn human(plan: &RecoveryPlan) -> String {
    let mut text = String::new();
    let b = &plan.backup;
    let _ = writeln!(text, "recovery to {} is possible", plan.target);
    let _ = writeln!(
        text,
        "  backup     {} (timeline {}, {} .. {}, finished {}), {}",
        b.id,
        b.timeline,
        b.start_lsn,
        b.stop_lsn,
        b.stopped_at.format("%Y-%m-%d %H:%M:%S UTC"),
        human_bytes(b.stored_bytes)
    );
    if let Some(history) = &plan.history_file {
        let path: Vec<String> = plan
            .timelines
            .iter()
            .map(|t| t.timeline.to_string())
            .collect();
        let _ = writeln!(
            text,
            "  timelines  {} (follows {history})",
            path.join(" -> ")
        );
    }
    for (i, tl) in plan.timelines.iter().enumerate() {
        let _ = writeln!(
            text,
            "  {}timeline {}: {} .. {} ({} segments, {}), all present",
            if i == 0 { "WAL        " } else { "           " },
            tl.timeline,
            tl.first_segment,
            tl.last_segment,
            tl.segments,
            human_bytes(tl.stored_bytes)
        );
    }
    let stop = &plan.stop;
    let _ = writeln!(
        text,
        "  recovery   {}; LSN {} in {}",
        stop.description, stop.lsn, stop.segment
    );
    let _ = writeln!(
        text,
        "  to fetch   {} (backup {} + WAL {})",
        human_bytes(plan.fetch_bytes),
        human_bytes(b.stored_bytes),
        human_bytes(plan.wal_bytes)
    );
    let read = &plan.wal_read;
    let _ = write!(
        text,
        "  planning   read {} of WAL ({} segments decoded, {} from summaries)",
        human_bytes(read.wal_bytes_downloaded),
        read.wal_segments_decoded,
        read.wal_segments_from_summaries
    );
    text
}
