//! `walarch restore`: a backup into a data directory, set up to recover from the archive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use walarch_core::backup::{BackupSelector, Progress};
use walarch_core::postgres::{RecoveryOutcome, StartOptions, find_server_binaries};
use walarch_core::recovery::RecoveryPlan;
use walarch_core::{Engine, RestoreCommand, RestoreRequest, TargetAction};

use crate::Failure;
use crate::args::{GlobalArgs, RestoreArgs};
use crate::output::{Output, human_bytes};
use crate::progress::ProgressDisplay;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct RestoreResult {
    backup: String,
    pgdata: String,
    files: usize,
    bytes: u64,
    seconds: f64,
    restore_command: String,
    take_over: bool,
    plan: RecoveryPlan,
    recovery: Option<RecoveryOutcome>,
}

pub async fn run(
    settings: &Settings,
    global: &GlobalArgs,
    args: &RestoreArgs,
    out: &Output,
) -> Result<(), Failure> {
    if args.start && args.standby {
        return Err(anyhow::anyhow!(
            "--start waits for recovery to end at a target; a --standby never ends it: start the standby yourself"
        )
        .into());
    }
    let mut config = settings.engine.clone();
    if let Some(parallel) = args.parallel {
        config.parallelism = parallel;
    }
    let engine = Engine::open(config)?;
    let restore_command = match &args.restore_command {
        Some(command) => RestoreCommand::Custom(command.clone()),
        None => this_walarch(settings, global)?,
    };
    // The same check as `walarch plan`, before anything is downloaded: a restore that
    // cannot reach its target must fail now, not after hours.
    let spec = args.target.spec()?;
    let selector: Option<BackupSelector> = args.backup.as_deref().map(str::parse).transpose()?;
    let cancel = super::cancel_on_signal();
    let plan = engine.plan(&spec, selector.as_ref(), &cancel).await?;
    // The binaries the copy starts with must be of the backup's major version: found (or
    // refused) before anything is written.
    let binaries = if args.start {
        let major = plan.plan().backup.pg_major;
        let given = settings.pg_bin.as_deref().map(std::path::Path::new);
        Some(
            find_server_binaries(major, given, &path_dirs())
                .await
                .map_err(walarch_core::Error::from)?,
        )
    } else {
        None
    };
    let action = args
        .target
        .target_action
        .as_deref()
        .map(str::parse::<TargetAction>)
        .transpose()?;
    let mut request = RestoreRequest::new(args.pgdata.clone(), restore_command);
    request.force = args.force;
    request.standby = args.standby;
    request.take_over = args.take_over;
    request.target_action = action;
    request.tablespace_map = args
        .tablespace_map
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
                .ok_or_else(|| {
                    anyhow::anyhow!("--tablespace-map {m:?}: expected OID=DIR or NAME=DIR")
                })
        })
        .collect::<Result<_, _>>()?;
    request.settings = args
        .settings
        .iter()
        .map(|setting| {
            setting
                .split_once('=')
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--set {setting:?}: expected NAME=VALUE"))
        })
        .collect::<Result<_, _>>()?;
    let restore_command = request.restore_command.command_line(&settings.engine.repo);
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), "restore", !global.json);
    let report = engine.restore(&plan, request, progress, &cancel).await;
    drop(display);
    let report = report?;
    let seconds = report.elapsed.as_secs_f64();
    let recovery = if let Some(binaries) = binaries {
        let start = StartOptions {
            pgdata: args.pgdata.clone(),
            binaries,
            user: crate::pg_env::os_user(),
            // PostgreSQL's own default: pause at a target (to inspect before promoting);
            // without one, recovery ends at the end of WAL and promotes.
            action: action
                .unwrap_or(if plan.is_to_latest() {
                    TargetAction::Promote
                } else {
                    TargetAction::Pause
                })
                .as_str()
                .to_owned(),
            timeout: Duration::from_secs(args.start_timeout),
        };
        if !global.json {
            eprintln!(
                "restored {} in {seconds:.1} s; starting PostgreSQL to recover to {}",
                report.backup,
                plan.plan().target
            );
        }
        // The server outlives walarch (as a service would): a cancel stops the wait only.
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                return Err(anyhow::anyhow!(
                    "interrupted while waiting for recovery; the server keeps running (pg_ctl stop -D {} stops it)",
                    args.pgdata.display()
                )
                .into());
            }
            outcome = engine.start_restored(&start) => Some(outcome?),
        }
    } else {
        None
    };
    let result = RestoreResult {
        backup: report.backup.to_string(),
        pgdata: report.pgdata.display().to_string(),
        files: report.files,
        bytes: report.bytes,
        seconds,
        restore_command,
        take_over: report.take_over,
        plan: plan.plan().clone(),
        recovery,
    };
    let mut human = format!(
        "restored backup {} into {}: {} files, {} in {seconds:.1} s ({}/s)\nrecovery target: {}; {}",
        result.backup,
        result.pgdata,
        result.files,
        human_bytes(result.bytes),
        human_bytes((result.bytes as f64 / seconds.max(1e-3)) as u64),
        result.plan.target,
        result.plan.stop.description,
    );
    match &result.recovery {
        None => human.push_str(&format!(
            "\nstart PostgreSQL on it to recover from the archive (restore_command = {})",
            result.restore_command
        )),
        Some(outcome) => human.push_str(&format!(
            "\nrecovery {} after {:.1} s{}{}{}",
            outcome.state,
            outcome.seconds,
            outcome
                .stop_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default(),
            outcome
                .replayed_to
                .map(|lsn| format!("; replayed to {lsn}"))
                .unwrap_or_default(),
            outcome
                .timeline
                .map(|t| format!("; now on timeline {t}"))
                .unwrap_or_default(),
        )),
    }
    out.result(&result, Some(human));
    Ok(())
}

/// The restore_command of a copy this walarch restores: this executable, with the caller's
/// configuration file and key file (absolute: the server runs it from its data directory).
pub(super) fn this_walarch(
    settings: &Settings,
    global: &GlobalArgs,
) -> std::io::Result<RestoreCommand> {
    Ok(RestoreCommand::Walarch {
        program: std::env::current_exe()?,
        config_file: global
            .config
            .as_deref()
            .map(std::path::absolute)
            .transpose()?,
        encryption_key_file: settings.encryption_key_file.clone(),
    })
}

/// The directories on `PATH`, where the server binaries are looked for first.
pub(super) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default()
}
