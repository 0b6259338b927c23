//! `walarch drill`: carry out a recovery into a scratch directory, check the copy, report RTO
//! and RPO, and store the report in the repository. Exit 1 when anything failed.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use walarch_core::Engine;
use walarch_core::backup::{BackupSelector, Progress};
use walarch_core::check::CheckStatus;
use walarch_core::drill::{DrillOutcome, DrillRequest};

use crate::Failure;
use crate::args::{DrillArgs, GlobalArgs};
use crate::output::{Output, human_bytes};
use crate::progress::ProgressDisplay;
use crate::settings::Settings;

pub async fn run(
    settings: &Settings,
    global: &GlobalArgs,
    args: &DrillArgs,
    out: &Output,
) -> Result<(), Failure> {
    if args
        .target
        .target_action
        .as_deref()
        .is_some_and(|a| a != "promote")
    {
        return Err(anyhow!(
            "a drill always promotes its scratch copy at the target (to run its checks): drop --target-action"
        )
        .into());
    }
    let engine = Engine::open(settings.engine.clone())?;
    let request = DrillRequest {
        spec: args.target.spec()?,
        backup: args
            .backup
            .as_deref()
            .map(str::parse::<BackupSelector>)
            .transpose()?,
        scratch: std::path::absolute(&args.scratch)?,
        pg_bin: settings.pg_bin.as_deref().map(Into::into),
        binary_candidates: super::restore::path_dirs(),
        restore_command: super::restore::this_walarch(settings, global)?,
        user: args.user.clone().unwrap_or_else(crate::pg_env::os_user),
        dbname: args.dbname.clone(),
        checks: args.checks.clone(),
        keep: args.keep,
        recovery_timeout: Duration::from_secs(args.recovery_timeout),
    };
    if !global.json {
        eprintln!(
            "drill: planning, then restoring into {} and recovering there (archiving off)",
            request.scratch.display()
        );
    }
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), "restore", !global.json);
    let outcome = engine
        .drill(request, progress, &super::cancel_on_signal())
        .await;
    drop(display);
    let outcome = outcome?;
    out.result(&outcome, Some(human(&outcome)));
    match (outcome.report.ok, &outcome.store_error) {
        (true, None) => Ok(()),
        (false, _) => Err(anyhow!(
            "drill failed: {}",
            outcome.report.error.as_deref().unwrap_or("see the report")
        )
        .into()),
        (true, Some(e)) => Err(anyhow!(
            "the drill passed but its report could not be stored in the repository: {e}"
        )
        .into()),
    }
}

fn human(outcome: &DrillOutcome) -> String {
    let report = &outcome.report;
    let seconds = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.1} s"));
    let mut text = String::new();
    let _ = writeln!(
        text,
        "drill {} {}: target {}, backup {}",
        report.id,
        if report.ok { "passed" } else { "FAILED" },
        report.target,
        report.backup.as_deref().unwrap_or("-"),
    );
    let _ = writeln!(
        text,
        "RTO {} (restore {}, recovery {}); plan {:.1} s",
        seconds(report.rto_seconds),
        seconds(report.restore_seconds),
        seconds(report.recovery_seconds),
        report.plan_seconds,
    );
    let rpo = &report.rpo;
    let _ = writeln!(
        text,
        "RPO {} behind now (last archived commit {}); {} behind the target",
        seconds(rpo.seconds_behind_now),
        rpo.last_archived_commit
            .map_or("-".to_owned(), |t| t.to_rfc3339()),
        seconds(rpo.seconds_behind_target),
    );
    let _ = writeln!(
        text,
        "read {} of backup and {} of WAL ({} segments)",
        human_bytes(report.backup_bytes),
        human_bytes(report.wal_bytes),
        report.wal_segments,
    );
    if let Some(stop) = &report.stop_message {
        let _ = writeln!(text, "PostgreSQL: {stop}");
    }
    for check in &report.checks {
        let status = match check.status {
            CheckStatus::Ok => "ok",
            CheckStatus::Warning => "warning",
            CheckStatus::Failed => "FAILED",
        };
        let _ = writeln!(text, "{status:<8} {:<12} {}", check.name, check.detail);
    }
    if let Some(error) = &report.error {
        let stage = report.failed_stage.map_or("-", |s| s.as_str());
        let _ = writeln!(text, "failed in stage {stage}: {error}");
    }
    let _ = write!(
        text,
        "{}; {}",
        match (&outcome.stored_at, &outcome.store_error) {
            (Some(key), _) => format!("report stored at {key}"),
            (None, e) => format!("report NOT stored: {}", e.as_deref().unwrap_or("-")),
        },
        if report.kept {
            format!("scratch kept at {}", report.scratch)
        } else {
            "scratch removed".to_owned()
        }
    );
    text
}
