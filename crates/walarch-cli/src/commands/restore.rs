//! `walarch restore`: a backup into a data directory, set up to recover from the archive.

use std::sync::Arc;

use serde::Serialize;
use std::time::Duration;

use walarch_core::backup::{
    BackupSelector, Progress, RecoverySettings, RestoreOptions, restore_backup,
};
use walarch_core::postgres::{RecoveryOutcome, StartOptions, start_and_wait};
use walarch_core::recovery::{RecoveryPlan, RecoveryTarget, plan_recovery};
use walarch_core::repo::Repository;

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
    let repo = Repository::open(settings.repo.clone(), &settings.store)?;
    let restore_command = match &args.restore_command {
        Some(command) => command.clone(),
        None => default_restore_command(settings, global)?,
    };
    // The same check as `walarch plan`, before anything is downloaded: a restore that
    // cannot reach its target must fail now, not after hours.
    let spec = args.target.spec()?;
    let selector: Option<BackupSelector> = args.backup.as_deref().map(str::parse).transpose()?;
    let plan = plan_recovery(&repo, &spec, selector.as_ref()).await?;
    let mut recovery_settings = plan.settings.clone();
    let action = args.target.target_action.clone();
    if let Some(action) = &action {
        recovery_settings.push(("recovery_target_action".into(), action.clone()));
    }
    if args.start && args.standby {
        return Err(anyhow::anyhow!(
            "--start waits for recovery to end at a target; a --standby never ends it: start the standby yourself"
        )
        .into());
    }
    for setting in &args.settings {
        let (name, value) = setting
            .split_once('=')
            .filter(|(name, _)| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            })
            .ok_or_else(|| anyhow::anyhow!("--set {setting:?}: expected NAME=VALUE"))?;
        if name.trim().starts_with("recovery_target") || name.trim() == "restore_command" {
            return Err(anyhow::anyhow!(
                "--set {name}: recovery settings come from the checked plan; use the --target* flags (or --restore-command)"
            )
            .into());
        }
        recovery_settings.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let options = RestoreOptions {
        pgdata: args.pgdata.clone(),
        backup: BackupSelector::Id(plan.backup.id.parse()?),
        force: args.force,
        parallel: args.parallel.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(8)
        }),
        tablespace_map: args
            .tablespace_map
            .iter()
            .map(|m| {
                m.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.into()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("--tablespace-map {m:?}: expected OID=DIR or NAME=DIR")
                    })
            })
            .collect::<Result<_, _>>()?,
        recovery: RecoverySettings {
            restore_command: restore_command.clone(),
            settings: recovery_settings,
            standby: args.standby,
        },
        take_over: args.take_over,
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), "restore", !global.json);
    let report = restore_backup(&repo, &options, progress).await;
    drop(display);
    let report = report?;
    let seconds = report.elapsed.as_secs_f64();
    let recovery = if args.start {
        let start = StartOptions {
            pgdata: args.pgdata.clone(),
            pg_bin: args.pg_bin.clone().or_else(pg_bin_on_path),
            user: crate::settings::os_user(),
            // PostgreSQL's own default: pause at a target (to inspect before promoting);
            // without one, recovery ends at the end of WAL and promotes.
            action: action.unwrap_or_else(|| {
                if matches!(spec.target, RecoveryTarget::Latest) {
                    "promote".into()
                } else {
                    "pause".into()
                }
            }),
            timeout: Duration::from_secs(args.start_timeout),
        };
        if !global.json {
            eprintln!(
                "restored {} in {seconds:.1} s; starting PostgreSQL to recover to {}",
                report.backup, plan.target
            );
        }
        Some(start_and_wait(&start).await?)
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
        plan,
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

/// The directory of the `pg_ctl` found on `PATH`, if any.
fn pg_bin_on_path() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| dir.join("pg_ctl").is_file())
}

/// This walarch, this repository (and configuration file, if one was named): what the
/// restored server needs to fetch WAL. Cloud credentials stay in the server's environment.
fn default_restore_command(settings: &Settings, global: &GlobalArgs) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let mut words = vec![
        exe.display().to_string(),
        "--repo".into(),
        settings.repo.to_string(),
    ];
    if let Some(config) = &global.config {
        words.push("--config".into());
        words.push(std::path::absolute(config)?.display().to_string());
    }
    let mut command: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
    command.extend(["wal-fetch".into(), "%f".into(), "%p".into()]);
    Ok(command.join(" "))
}

/// Quotes a word for the shell PostgreSQL runs restore_command with.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.:=,@+".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("/usr/bin/walarch"), "/usr/bin/walarch");
        assert_eq!(
            shell_quote("file:///var/lib/wal archive"),
            "'file:///var/lib/wal archive'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
