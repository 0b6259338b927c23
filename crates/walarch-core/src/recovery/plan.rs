//! `plan`: can this repository recover to that target, from which backup, along which
//! timelines, with which WAL, and how much must be fetched? Answered from the listing, the
//! history files and the decoded WAL, without restoring anything. `restore` runs the same
//! check before it downloads a byte.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::scan::{Scan, ScanEnd, scan_path};
use super::target::{RecoveryTarget, TargetSpec, TimelineChoice};
use super::{PlanError, RepositoryView};
use crate::backup::{BackupSelector, Manifest};
use crate::repo::Repository;
use crate::wal::{
    Lsn, RecordEvent, SegmentName, SegmentNo, TimelineId, TimelineSpan, WalRecord, path_passes,
};

/// A commit's archive upload time is after its commit time. Segments uploaded this long
/// before a target time cannot hold the commit recovery stops at, so a time target's search
/// starts after them; the margin absorbs clock differences between database and store.
const UPLOAD_CLOCK_MARGIN: Duration = Duration::minutes(10);

#[derive(Debug, Clone, Serialize)]
pub struct PlannedBackup {
    pub id: String,
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub stopped_at: DateTime<Utc>,
    pub stored_bytes: u64,
}

/// The WAL read from one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTimeline {
    pub timeline: TimelineId,
    pub first_segment: String,
    pub last_segment: String,
    pub segments: u64,
    pub stored_bytes: u64,
}

/// The record recovery stops at (or, for `latest`, the end of the archived WAL).
#[derive(Debug, Clone, Serialize)]
pub struct StopPoint {
    /// What PostgreSQL will do there, in words.
    pub description: String,
    pub lsn: Lsn,
    pub segment: String,
    pub time: Option<DateTime<Utc>>,
    pub xid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPlan {
    pub target: String,
    pub inclusive: bool,
    pub backup: PlannedBackup,
    pub target_timeline: TimelineId,
    /// History file recovery reads to follow the timelines (none on timeline 1).
    pub history_file: Option<String>,
    pub timelines: Vec<PlannedTimeline>,
    pub wal_segments: u64,
    pub wal_bytes: u64,
    /// Backup parts plus WAL, as stored (compressed).
    pub fetch_bytes: u64,
    pub stop: StopPoint,
    /// The `recovery_target*` settings that carry out this plan.
    pub settings: Vec<(String, String)>,
}

/// Plans recovery to `spec`, from `backup` when given, else from the backup the target
/// calls for (time and LSN: the newest that finished before it; otherwise the newest).
pub async fn plan_recovery(
    repo: &Repository,
    spec: &TargetSpec,
    backup: Option<&BackupSelector>,
) -> Result<RecoveryPlan, PlanError> {
    let view = RepositoryView::load(repo).await?;
    let manifest = choose_backup(&view.backups, spec, backup)?;
    let target_timeline = resolve_timeline(&view, spec.timeline, manifest.timeline);
    let path = view
        .timelines
        .spans(target_timeline)
        .ok_or_else(|| PlanError::Missing {
            name: format!("{:08X}.history", target_timeline.get()),
            why: format!("recovery to timeline {target_timeline} follows it"),
        })?;
    if !path_passes(&path, manifest.timeline, manifest.start_lsn) {
        return Err(PlanError::Unreachable(format!(
            "backup {} (timeline {}, {}) is not an ancestor of timeline {target_timeline}: that timeline branched off earlier{}",
            manifest.id,
            manifest.timeline,
            manifest.start_lsn,
            if backup.is_some() {
                "; choose an older backup or another --target-timeline"
            } else {
                "; give --target-timeline or --backup"
            }
        )));
    }
    let index = &view.index;
    let size = index.segment_size();
    let start = manifest.start_lsn.segment(size);
    let consistent = manifest.stop_lsn.segment(size);

    // Where recovery ends, and the segment holding that point.
    let stop = match &spec.target {
        RecoveryTarget::Immediate => StopPoint {
            description: format!(
                "stops once consistent, at the end of the backup ({})",
                manifest.stop_lsn
            ),
            lsn: manifest.stop_lsn,
            segment: index.name_on_path(&path, consistent).to_string(),
            time: Some(manifest.stopped_at),
            xid: None,
        },
        RecoveryTarget::Latest => latest_end(repo, index, &path, manifest).await?,
        target => {
            require_present(index, &path, start, consistent, &manifest.id)?;
            let (last_stored, _) = index.contiguous_from(&path, start);
            let last_stored = last_stored.expect("checked present");
            let scan_from = match target {
                // One segment earlier, so that a commit record crossing into the first
                // candidate segment is decoded whole.
                RecoveryTarget::Time(time) => {
                    let first = first_segment_after(index, &path, consistent, *time);
                    SegmentNo::new(first.as_u64().saturating_sub(1).max(start.as_u64()))
                }
                RecoveryTarget::Lsn(lsn) => lsn.segment(size).max(start).min(last_stored),
                _ => start,
            };
            find_stop(repo, index, &path, scan_from, spec, manifest).await?
        }
    };
    let stop_segment: SegmentNo = stop.lsn.segment(size).max(consistent);
    require_present(index, &path, start, stop_segment, &manifest.id)?;

    let mut timelines: Vec<PlannedTimeline> = Vec::new();
    let mut segno = start;
    loop {
        let name = index.name_on_path(&path, segno);
        let stored = index.get(name.timeline(), segno).map_or(0, |l| l.size);
        match timelines.last_mut() {
            Some(group) if group.timeline == name.timeline() => {
                group.last_segment = name.to_string();
                group.segments += 1;
                group.stored_bytes += stored;
            }
            _ => timelines.push(PlannedTimeline {
                timeline: name.timeline(),
                first_segment: name.to_string(),
                last_segment: name.to_string(),
                segments: 1,
                stored_bytes: stored,
            }),
        }
        if segno >= stop_segment {
            break;
        }
        segno = segno.next().expect("below the stop segment");
    }
    let wal_segments = timelines.iter().map(|t| t.segments).sum();
    let wal_bytes = timelines.iter().map(|t| t.stored_bytes).sum();
    let resolved = (target_timeline != manifest.timeline
        || spec.timeline != TimelineChoice::Current)
        .then_some(target_timeline);
    Ok(RecoveryPlan {
        target: spec.target.to_string(),
        inclusive: spec.inclusive,
        backup: PlannedBackup {
            id: manifest.id.to_string(),
            timeline: manifest.timeline,
            start_lsn: manifest.start_lsn,
            stop_lsn: manifest.stop_lsn,
            stopped_at: manifest.stopped_at,
            stored_bytes: manifest.stored_bytes(),
        },
        target_timeline,
        history_file: (target_timeline.get() > 1)
            .then(|| format!("{:08X}.history", target_timeline.get())),
        timelines,
        wal_segments,
        wal_bytes,
        fetch_bytes: manifest.stored_bytes() + wal_bytes,
        stop,
        settings: spec.settings(resolved),
    })
}

/// The backup to restore: the one named, or the newest suited to the target.
fn choose_backup<'a>(
    backups: &'a [Manifest],
    spec: &TargetSpec,
    selector: Option<&BackupSelector>,
) -> Result<&'a Manifest, PlanError> {
    if backups.is_empty() {
        return Err(PlanError::NoBackup(
            "the repository holds no complete backup (take one with `walarch backup`)".into(),
        ));
    }
    let newest_first = {
        let mut sorted: Vec<&Manifest> = backups.iter().collect();
        sorted.sort_by_key(|m| std::cmp::Reverse((m.stopped_at, m.stop_lsn)));
        sorted
    };
    match selector {
        Some(BackupSelector::Id(id)) => {
            return backups.iter().find(|m| &m.id == id).ok_or_else(|| {
                PlanError::NoBackup(format!("no complete backup {id} (see `walarch backups`)"))
            });
        }
        Some(BackupSelector::Latest) => return Ok(newest_first[0]),
        None => {}
    }
    let oldest = newest_first[newest_first.len() - 1];
    match &spec.target {
        RecoveryTarget::Time(time) => newest_first
            .iter()
            .find(|m| m.stopped_at < *time)
            .copied()
            .ok_or_else(|| {
                PlanError::NoBackup(format!(
                    "no backup finished before {}: the oldest, {}, finished at {}",
                    time.to_rfc3339(),
                    oldest.id,
                    oldest.stopped_at.to_rfc3339()
                ))
            }),
        RecoveryTarget::Lsn(lsn) => newest_first
            .iter()
            .find(|m| m.stop_lsn <= *lsn)
            .copied()
            .ok_or_else(|| {
                PlanError::NoBackup(format!(
                    "no backup is consistent by {lsn}: the oldest, {}, ends at {}",
                    oldest.id, oldest.stop_lsn
                ))
            }),
        _ => Ok(newest_first[0]),
    }
}

/// `latest` follows history files upward from the backup's timeline, one by one, as
/// PostgreSQL's `findNewestTimeLine` does.
fn resolve_timeline(
    view: &RepositoryView,
    choice: TimelineChoice,
    backup_timeline: TimelineId,
) -> TimelineId {
    match choice {
        TimelineChoice::Id(timeline) => timeline,
        TimelineChoice::Current => backup_timeline,
        TimelineChoice::Latest => {
            let mut newest = backup_timeline;
            while let Some(next) = TimelineId::new(newest.get() + 1).ok()
                && view.timelines.spans(next).is_some()
            {
                newest = next;
            }
            newest
        }
    }
}

/// Every segment from `from` to `to` on `path` must be stored; the first missing is named.
fn require_present(
    index: &crate::catalog::WalIndex,
    path: &[TimelineSpan],
    from: SegmentNo,
    to: SegmentNo,
    backup: &crate::backup::BackupId,
) -> Result<(), PlanError> {
    let (last, first_missing) = index.contiguous_from(path, from);
    if last.is_none_or(|last| last < to) {
        return Err(PlanError::Missing {
            name: first_missing.to_string(),
            why: format!("recovery from backup {backup} reads it"),
        });
    }
    Ok(())
}

/// The first segment that may hold a commit after `time`: segments uploaded well before
/// `time` cannot (see [`UPLOAD_CLOCK_MARGIN`]). Never past the last stored segment.
fn first_segment_after(
    index: &crate::catalog::WalIndex,
    path: &[TimelineSpan],
    from: SegmentNo,
    time: DateTime<Utc>,
) -> SegmentNo {
    let cutoff = time - UPLOAD_CLOCK_MARGIN;
    let stored = |segno: SegmentNo| index.get(index.timeline_for(path, segno), segno);
    let mut segno = from;
    while let Some(listed) = stored(segno)
        && listed.last_modified < cutoff
        && let Some(next) = segno.next()
        && stored(next).is_some()
    {
        segno = next;
    }
    segno
}

/// Whether recovery stops at `record` for `spec` (PostgreSQL's `recoveryStopsBefore` /
/// `recoveryStopsAfter`), with a description of what it does there.
fn stops_at(record: &WalRecord, spec: &TargetSpec) -> Option<String> {
    let event = record.event.as_ref();
    let xact = match event {
        Some(RecordEvent::Commit { xid, time }) => Some(("commit", *xid, *time)),
        Some(RecordEvent::Abort { xid, time }) => Some(("abort", *xid, *time)),
        _ => None,
    };
    let before_after = if spec.inclusive { "after" } else { "before" };
    match (&spec.target, xact, event) {
        (RecoveryTarget::Time(target), Some((what, xid, time)), _) => {
            let stops = if spec.inclusive {
                time > *target
            } else {
                time >= *target
            };
            stops.then(|| {
                format!(
                    "stops before the {what} of transaction {xid} at {} (the first after the target)",
                    time.to_rfc3339()
                )
            })
        }
        (RecoveryTarget::Xid(target), Some((what, xid, _)), _) if xid == *target => Some(format!(
            "stops {before_after} the {what} of transaction {xid}"
        )),
        (RecoveryTarget::Name(name), _, Some(RecordEvent::RestorePoint { name: found, .. }))
            if found == name =>
        {
            Some(format!("stops at restore point {name:?}"))
        }
        (RecoveryTarget::Lsn(target), _, _) if record.lsn >= *target => Some(format!(
            "stops {before_after} the record at {} (the first at or past the target)",
            record.lsn
        )),
        _ => None,
    }
}

/// Scans WAL from `from` for the record recovery stops at.
async fn find_stop(
    repo: &Repository,
    index: &crate::catalog::WalIndex,
    path: &[TimelineSpan],
    from: SegmentNo,
    spec: &TargetSpec,
    manifest: &Manifest,
) -> Result<StopPoint, PlanError> {
    let mut last_commit: Option<(Lsn, DateTime<Utc>)> = None;
    let mut wal_end = manifest.stop_lsn;
    let found = scan_path(repo, index, path, from, None, |name, segment| {
        for record in &segment.records {
            if let Some(description) = stops_at(record, spec) {
                let (time, xid) = match &record.event {
                    Some(RecordEvent::Commit { xid, time } | RecordEvent::Abort { xid, time }) => {
                        (Some(*time), Some(*xid))
                    }
                    Some(RecordEvent::RestorePoint { time, .. }) => (Some(*time), None),
                    _ => (None, None),
                };
                return Scan::Stop(StopPoint {
                    description,
                    lsn: record.lsn,
                    segment: name.to_string(),
                    time,
                    xid,
                });
            }
            if let Some(RecordEvent::Commit { time, .. } | RecordEvent::Abort { time, .. }) =
                &record.event
            {
                last_commit = Some((record.lsn, *time));
            }
            wal_end = record.end;
        }
        Scan::Continue
    })
    .await?;
    let stop = match found {
        Ok(stop) => stop,
        Err(end) => {
            let last = match last_commit {
                Some((lsn, time)) => {
                    format!("; its last commit is at {} ({lsn})", time.to_rfc3339())
                }
                None => String::new(),
            };
            let reason = match end {
                ScanEnd::Missing(name) => {
                    let segno = name.segment_no(index.segment_size()).expect("in range");
                    if let Some(beyond) = index.any_after(path, segno) {
                        return Err(PlanError::Missing {
                            name: name.to_string(),
                            why: format!(
                                "recovery to {} reads it; the archive holds WAL after it ({beyond}), so it was lost or deleted",
                                spec.target
                            ),
                        });
                    }
                    format!("the archived WAL ends before segment {name}")
                }
                ScanEnd::Invalid { segment, reason } => {
                    format!("the WAL stops being valid in segment {segment}: {reason}")
                }
            };
            let hint = match spec.target {
                RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => {
                    " (if it lies before this backup, name an older backup with --backup)"
                }
                _ => "",
            };
            return Err(PlanError::Unreachable(format!(
                "{} is not in the archived WAL after backup {}{hint}: {reason}, at {wal_end}{last}",
                spec.target, manifest.id
            )));
        }
    };
    if stop.lsn < manifest.stop_lsn {
        return Err(PlanError::Unreachable(format!(
            "{} lies before backup {} became consistent ({}): recovery would stop at {} — choose an older backup",
            spec.target, manifest.id, manifest.stop_lsn, stop.lsn
        )));
    }
    Ok(stop)
}

/// For `latest`: the end of the WAL that follows the backup without a gap. WAL stored beyond
/// a gap would silently not be replayed, so a gap is a missing piece, not an end.
async fn latest_end(
    repo: &Repository,
    index: &crate::catalog::WalIndex,
    path: &[TimelineSpan],
    manifest: &Manifest,
) -> Result<StopPoint, PlanError> {
    let size = index.segment_size();
    let start = manifest.start_lsn.segment(size);
    let (last, first_missing) = index.contiguous_from(path, start);
    let consistent = manifest.stop_lsn.segment(size);
    let Some(last) = last.filter(|last| *last >= consistent) else {
        return Err(PlanError::Missing {
            name: first_missing.to_string(),
            why: format!("recovery from backup {} reads it", manifest.id),
        });
    };
    if let Some(beyond) = index.any_after(path, last) {
        return Err(PlanError::Missing {
            name: first_missing.to_string(),
            why: format!(
                "WAL after it ({beyond} and on) would not be replayed; recover to a target before the gap, or find the segment"
            ),
        });
    }
    let from = last.as_u64().saturating_sub(1).max(start.as_u64());
    let mut end: Option<(Lsn, SegmentName)> = None;
    let mut last_commit: Option<(DateTime<Utc>, u32)> = None;
    let _ = scan_path::<()>(
        repo,
        index,
        path,
        SegmentNo::new(from),
        Some(last),
        |name, segment| {
            for record in &segment.records {
                if let Some(RecordEvent::Commit { xid, time } | RecordEvent::Abort { xid, time }) =
                    &record.event
                {
                    last_commit = Some((*time, *xid));
                }
                end = Some((record.end, *name));
            }
            Scan::Continue
        },
    )
    .await?;
    let (lsn, segment) = end.unwrap_or((manifest.stop_lsn, index.name_on_path(path, last)));
    let commit = last_commit;
    Ok(StopPoint {
        description: format!("replays all archived WAL, to {lsn}"),
        lsn,
        segment: segment.to_string(),
        time: commit.map(|c| c.0),
        xid: commit.map(|c| c.1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lsn: u64, event: Option<RecordEvent>) -> WalRecord {
        WalRecord {
            lsn: Lsn::new(lsn),
            end: Lsn::new(lsn + 40),
            rmid: 1,
            info: 0,
            xid: 0,
            event,
        }
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap()
    }

    fn spec(target: RecoveryTarget, inclusive: bool) -> TargetSpec {
        TargetSpec {
            target,
            timeline: TimelineChoice::Latest,
            inclusive,
        }
    }

    #[test]
    fn stops_where_postgresql_stops() {
        let commit = |xid, second| {
            Some(RecordEvent::Commit {
                xid,
                time: at(second),
            })
        };
        let at_10 = record(100, commit(7, 10));
        // Time, inclusive: commits at the target time are replayed; the first later one stops it.
        let inclusive = spec(RecoveryTarget::Time(at(10)), true);
        assert!(stops_at(&at_10, &inclusive).is_none());
        assert!(stops_at(&record(200, commit(8, 11)), &inclusive).is_some());
        // Exclusive: a commit at exactly the target time already stops it.
        assert!(stops_at(&at_10, &spec(RecoveryTarget::Time(at(10)), false)).is_some());
        // Restore points and other records never stop a time target.
        let point = record(
            150,
            Some(RecordEvent::RestorePoint {
                name: "p".into(),
                time: at(99),
            }),
        );
        assert!(stops_at(&point, &inclusive).is_none());
        assert!(stops_at(&point, &spec(RecoveryTarget::Name("p".into()), true)).is_some());
        assert!(stops_at(&point, &spec(RecoveryTarget::Name("q".into()), true)).is_none());
        // Xid: the commit (or abort) of that transaction only.
        let xid = spec(RecoveryTarget::Xid(7), true);
        assert!(stops_at(&at_10, &xid).is_some());
        assert!(stops_at(&record(200, commit(8, 11)), &xid).is_none());
        // LSN: the first record at or past it.
        let lsn = spec(RecoveryTarget::Lsn(Lsn::new(120)), true);
        assert!(stops_at(&record(100, None), &lsn).is_none());
        assert!(stops_at(&record(120, None), &lsn).is_some());
    }
}
