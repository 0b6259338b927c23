//! `walarch retention`: deletes the backups and WAL a policy no longer needs, or with
//! `--dry-run` shows what would go. The library plans and deletes; this prints.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use serde::Serialize;
use walarch_core::Engine;
use walarch_core::backup::Progress;
use walarch_core::retention::{
    Action, RetentionPlan, RetentionPolicy, RetentionReport, TimelineStatus,
};

use crate::Failure;
use crate::args::RetentionArgs;
use crate::output::{Output, human_bytes};
use crate::progress::ProgressDisplay;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct RetentionResult<'a> {
    dry_run: bool,
    plan: &'a RetentionPlan,
    /// What was deleted; absent with --dry-run.
    deleted: Option<RetentionReport>,
}

pub async fn run(
    settings: &Settings,
    args: &RetentionArgs,
    json: bool,
    out: &Output,
) -> Result<(), Failure> {
    let policy = RetentionPolicy::new(args.keep, args.window)?;
    let engine = Engine::open(settings.engine.clone())?;
    let nothing_deleted = || format!("nothing deleted from {}", engine.config().repo);
    let plan = engine
        .retention_plan(&policy, Utc::now())
        .await
        .with_context(nothing_deleted)?;
    if args.dry_run {
        let text = format!("{}\ndry run: nothing deleted", human_plan(&plan));
        let result = RetentionResult {
            dry_run: true,
            plan: &plan,
            deleted: None,
        };
        out.result(&result, Some(text));
        return Ok(());
    }
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), "retention", !json);
    let cancel = super::cancel_on_signal();
    let report = engine.apply_retention(&plan, &progress, &cancel).await;
    drop(display);
    let report = report?;
    let text = format!("{}\n{}", human_plan(&plan), human_report(&report));
    let result = RetentionResult {
        dry_run: false,
        plan: &plan,
        deleted: Some(report),
    };
    out.result(&result, Some(text));
    Ok(())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn human_plan(plan: &RetentionPlan) -> String {
    let mut text = format!("policy: {}\n", plan.policy);
    if let Some(start) = plan.window_start {
        let _ = writeln!(
            text,
            "window starts {}",
            start.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if plan.backups.is_empty() {
        text.push_str("the repository holds nothing yet\n");
        return text.trim_end().to_owned();
    }
    let _ = writeln!(
        text,
        "{:<17} {:<19} {:>3} {:<12} {:>10}  {:<6} why",
        "backup", "completed (UTC)", "tl", "start lsn", "stored", "action"
    );
    for decision in &plan.backups {
        let backup = &decision.backup;
        let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            text,
            "{:<17} {:<19} {:>3} {:<12} {:>10}  {:<6} {}",
            // Padding needs strings: the ids' own Display ignores widths.
            backup.id.as_str(),
            backup.completed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            backup.timeline.get(),
            backup.start_lsn.to_string(),
            human_bytes(backup.stored_bytes),
            action(decision.action),
            reasons.join("; ")
        );
    }
    for decision in &plan.incomplete {
        let _ = writeln!(
            text,
            "interrupted {}: {} ({})",
            decision.id,
            action(decision.action),
            decision.reason
        );
    }
    for id in &plan.damaged {
        let _ = writeln!(
            text,
            "damaged {id}: delete (its manifest names objects the repository lacks; not restorable)"
        );
    }
    for timeline in &plan.timelines {
        let deleted = match (&timeline.first_deleted, &timeline.last_deleted) {
            (Some(first), Some(last)) => format!(
                "delete {first} .. {last} ({}, {})",
                plural(timeline.deleted_files, "file", "files"),
                human_bytes(timeline.deleted_bytes)
            ),
            _ => "delete nothing".to_owned(),
        };
        let kept = match &timeline.status {
            TimelineStatus::Needed { keep_from, by } => format!(
                "keep {} from {keep_from} on (needed by {by})",
                plural(timeline.kept_files, "file", "files")
            ),
            TimelineStatus::Unreachable => "no kept backup reaches this timeline".to_owned(),
            TimelineStatus::HistoryMissing => format!(
                "keep all {} (its history file is missing)",
                plural(timeline.kept_files, "file", "files")
            ),
            TimelineStatus::NewerThanBackups => format!(
                "keep all {} (the newest timeline, with no backup of its own yet)",
                plural(timeline.kept_files, "file", "files")
            ),
            _ => format!("keep {}", plural(timeline.kept_files, "file", "files")),
        };
        let _ = writeln!(
            text,
            "WAL timeline {}: {deleted}; {kept}",
            timeline.timeline
        );
    }
    let totals = &plan.totals;
    if plan.deletes_nothing() {
        text.push_str("nothing to delete\n");
    } else {
        let _ = writeln!(
            text,
            "total: delete {} ({}), {}, {}, {} ({}); keep {}, {}",
            plural(totals.backups_deleted, "backup", "backups"),
            human_bytes(totals.backup_bytes_deleted),
            plural(
                totals.incomplete_deleted,
                "interrupted backup",
                "interrupted backups"
            ),
            plural(totals.damaged_deleted, "damaged backup", "damaged backups"),
            plural(totals.wal_files_deleted, "WAL file", "WAL files"),
            human_bytes(totals.wal_bytes_deleted),
            plural(totals.backups_kept, "backup", "backups"),
            plural(totals.wal_files_kept, "WAL file", "WAL files"),
        );
    }
    text.trim_end().to_owned()
}

fn human_report(report: &RetentionReport) -> String {
    let mut text = format!(
        "deleted {}, {}, {} ({}), {}: {}",
        plural(report.backups_deleted.len() as u64, "backup", "backups"),
        plural(
            report.incomplete_deleted.len() as u64,
            "interrupted backup",
            "interrupted backups"
        ),
        plural(
            report.damaged_deleted.len() as u64,
            "damaged backup",
            "damaged backups"
        ),
        plural(report.backup_objects_deleted, "object", "objects"),
        plural(report.wal_files_deleted, "WAL file", "WAL files"),
        human_bytes(report.bytes_deleted)
    );
    for id in &report.completed_since_planned {
        let _ = write!(text, "\nkept {id}: it completed while retention ran");
    }
    text
}

fn action(action: Action) -> &'static str {
    match action {
        Action::Keep => "keep",
        Action::Delete => "delete",
        _ => "?",
    }
}
