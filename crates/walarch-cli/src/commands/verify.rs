//! `walarch verify`: backups against their manifests (every file's size and CRC-32, the WAL
//! each one needs) and WAL continuity per timeline. Exit status 1 when anything is wrong.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::anyhow;
use walarch_core::backup::{BackupSelector, Progress};
use walarch_core::{Engine, VerifyOutcome};

use crate::Failure;
use crate::args::VerifyArgs;
use crate::output::Output;
use crate::progress::ProgressDisplay;
use crate::settings::Settings;

pub async fn run(
    settings: &Settings,
    args: &VerifyArgs,
    json: bool,
    out: &Output,
) -> Result<(), Failure> {
    let engine = Engine::open(settings.engine.clone())?;
    let selector = args
        .backup
        .as_deref()
        .map(str::parse::<BackupSelector>)
        .transpose()?;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), "verify", !json);
    let cancel = super::cancel_on_signal();
    let result = engine.verify(selector.as_ref(), progress, &cancel).await;
    drop(display);
    let result = result?;
    out.result(&result, Some(human(&result)));
    if result.ok {
        Ok(())
    } else {
        Err(anyhow!("verification found problems (listed above)").into())
    }
}

fn human(result: &VerifyOutcome) -> String {
    let mut text = String::new();
    if result.backups.is_empty() {
        text.push_str("no backups to verify\n");
    }
    for d in &result.damaged {
        let _ = writeln!(
            text,
            "backup {}: FAILED (its manifest names objects the repository lacks: {})",
            d.id,
            d.missing.join(", ")
        );
    }
    for b in &result.backups {
        let status = if b.ok() { "ok" } else { "FAILED" };
        let _ = writeln!(
            text,
            "backup {}: {status} ({} files checked)",
            b.backup, b.files_checked
        );
        for problem in &b.problems {
            let _ = writeln!(text, "  {problem}");
        }
        for segment in &b.missing_wal {
            let _ = writeln!(
                text,
                "  WAL {segment} needed by the backup is not in the archive"
            );
        }
    }
    for tl in &result.wal {
        if tl.gaps.is_empty() {
            let _ = writeln!(
                text,
                "timeline {}: {} .. {} continuous",
                tl.timeline, tl.first, tl.last
            );
        }
        for (from, to) in &tl.gaps {
            let _ = writeln!(text, "timeline {}: missing {from} .. {to}", tl.timeline);
        }
    }
    text.trim_end().to_owned()
}
