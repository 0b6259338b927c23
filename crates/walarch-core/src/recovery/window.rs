//! The recoverable window per timeline: from the end of the oldest usable backup to the last
//! commit in the WAL that follows it without a gap. Time targets inside a window are
//! reachable; the window's end is the last commit actually archived.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::scan::{ReadCounters, Scan, scan_path};
use super::{PlanError, RepositoryView};
use crate::catalog::Snapshot;
use crate::repo::Repository;
use crate::wal::{Lsn, RecordEvent, SegmentNo, TimelineId, path_passes};

/// A stretch of one timeline that recovery can reach: from where a backup became consistent to the
/// end of the WAL archived after it without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoverableWindow {
    /// The timeline the window lies on.
    pub timeline: TimelineId,
    /// The oldest backup this stretch can be reached from.
    pub backup: String,
    /// The earliest point: where that backup became consistent.
    pub start_lsn: Lsn,
    /// When that backup became consistent (its stop time).
    pub start_time: DateTime<Utc>,
    /// The last commit (or abort) in the archived WAL that follows without a gap.
    pub end_time: Option<DateTime<Utc>>,
    /// Where the last commit (or abort) is; `None` when the WAL holds none.
    pub last_commit_lsn: Option<Lsn>,
    /// The end of the last valid record: how far `--target latest` replays.
    pub end_lsn: Lsn,
    /// The name of the last segment stored without a gap.
    pub last_segment: String,
    /// The first segment recovery would ask for and not find.
    pub next_missing: String,
}

/// The recoverable windows of every timeline with stored WAL, oldest timeline first; a
/// timeline can have several windows when a gap separates backups.
pub async fn recoverable_windows(
    repo: &Repository,
    snapshot: &Snapshot,
) -> Result<Vec<RecoverableWindow>, PlanError> {
    let view = RepositoryView::of(snapshot)?;
    let index = &view.index;
    let size = index.segment_size();
    let mut windows = Vec::new();
    // `info` reports no reading costs; the scans still use and write segment summaries.
    let counters = ReadCounters::default();
    for timeline in index.timelines() {
        let Some(path) = view.timelines.spans(timeline) else {
            continue; // history file missing: recovery to this timeline is impossible
        };
        let mut backups: Vec<_> = view
            .backups
            .iter()
            .filter(|m| path_passes(&path, m.timeline, m.stop_lsn))
            .collect();
        backups.sort_by_key(|m| (m.stopped_at, m.stop_lsn));
        let mut seen_ends: Vec<SegmentNo> = Vec::new();
        for manifest in backups {
            let start = manifest.start_lsn.segment(size);
            let (last, next_missing) = index.contiguous_from(&path, start);
            let Some(last) = last.filter(|l| *l >= manifest.stop_lsn.segment(size)) else {
                continue; // the backup cannot become consistent from this archive
            };
            if seen_ends.contains(&last) {
                continue; // an older backup already opens this stretch
            }
            seen_ends.push(last);
            let (end_lsn, last_commit) =
                last_commit_before(repo, &view, &path, start, last, &counters).await?;
            windows.push(RecoverableWindow {
                timeline,
                backup: manifest.id.to_string(),
                start_lsn: manifest.stop_lsn,
                start_time: manifest.stopped_at,
                end_time: last_commit.map(|(_, time)| time),
                last_commit_lsn: last_commit.map(|(lsn, _)| lsn),
                end_lsn: end_lsn.unwrap_or(manifest.stop_lsn),
                last_segment: index.name_on_path(&path, last).to_string(),
                next_missing: next_missing.to_string(),
            });
        }
    }
    Ok(windows)
}

/// Decodes the WAL up to segment `last` backwards in growing steps until a commit is found:
/// returns the end of the last valid record and the last commit's position and time.
async fn last_commit_before(
    repo: &Repository,
    view: &RepositoryView,
    path: &[crate::wal::TimelineSpan],
    start: SegmentNo,
    last: SegmentNo,
    counters: &ReadCounters,
) -> Result<(Option<Lsn>, Option<(Lsn, DateTime<Utc>)>), PlanError> {
    let mut end_lsn = None;
    let mut step = 2u64;
    let mut to = last;
    loop {
        let from = SegmentNo::new(to.as_u64().saturating_sub(step - 1).max(start.as_u64()));
        let mut found = None;
        let mut segment_end = None;
        let _ = scan_path::<()>(
            repo,
            &view.index,
            path,
            from,
            Some(to),
            counters,
            |_, segment| {
                for record in &segment.records {
                    if let Some(
                        RecordEvent::Commit { time, .. } | RecordEvent::Abort { time, .. },
                    ) = &record.event
                    {
                        found = Some((record.lsn, *time));
                    }
                    segment_end = Some(record.end);
                }
                Scan::Continue
            },
        )
        .await?;
        if end_lsn.is_none() {
            end_lsn = segment_end;
        }
        if found.is_some() || from <= start {
            return Ok((end_lsn, found));
        }
        to = SegmentNo::new(from.as_u64() - 1);
        step *= 4;
    }
}
