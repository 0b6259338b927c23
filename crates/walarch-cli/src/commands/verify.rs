//! `walarch verify`: backups against their manifests (every file's size and CRC-32, the WAL
//! each one needs) and WAL continuity per timeline. Exit status 1 when anything is wrong.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::anyhow;
use serde::Serialize;
use walarch_core::backup::{
    BackupSelector, Progress, VerifyReport, find_backup, list_backups, verify_backup,
};
use walarch_core::catalog::{TimelineWal, list_wal, summarize};
use walarch_core::repo::Repository;

use crate::Failure;
use crate::args::VerifyArgs;
use crate::output::Output;
use crate::progress::ProgressDisplay;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct Damaged {
    id: String,
    missing: Vec<String>,
}

#[derive(Debug, Serialize)]
struct VerifyResult {
    ok: bool,
    backups: Vec<VerifyReport>,
    /// Manifests whose backup lacks stored objects (only when verifying every backup).
    damaged: Vec<Damaged>,
    wal: Vec<TimelineWal>,
}

pub async fn run(
    settings: &Settings,
    args: &VerifyArgs,
    json: bool,
    out: &Output,
) -> Result<(), Failure> {
    let repo = Repository::open(settings.repo.clone(), &settings.store)?;
    let (manifests, damaged) = match &args.backup {
        Some(selector) => (
            vec![find_backup(&repo, &selector.parse::<BackupSelector>()?).await?],
            Vec::new(),
        ),
        None => {
            let list = list_backups(&repo).await?;
            let damaged = list
                .damaged
                .iter()
                .map(|d| Damaged {
                    id: d.manifest.id.to_string(),
                    missing: d.missing.clone(),
                })
                .collect();
            (list.backups, damaged)
        }
    };
    let parallel = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let mut backups = Vec::new();
    for manifest in &manifests {
        let progress = Arc::new(Progress::default());
        let display = ProgressDisplay::start(progress.clone(), "verify", !json);
        let report = verify_backup(&repo, manifest, parallel, progress).await;
        drop(display);
        backups.push(report?);
    }
    let wal = match repo.identity().await? {
        Some(identity) => summarize(&list_wal(&repo).await?, identity.wal_segment_size).timelines,
        None => Vec::new(),
    };
    let ok = backups.iter().all(VerifyReport::ok)
        && damaged.is_empty()
        && wal.iter().all(|t| t.gaps.is_empty());
    let result = VerifyResult {
        ok,
        backups,
        damaged,
        wal,
    };
    out.result(&result, Some(human(&result)));
    if result.ok {
        Ok(())
    } else {
        Err(anyhow!("verification found problems (listed above)").into())
    }
}

fn human(result: &VerifyResult) -> String {
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
