//! `plan`: can this repository recover to that target, from which backup, along which
//! timelines, with which WAL, and how much must be fetched? Answered from the listing, the
//! history files and the decoded WAL, without restoring anything. `restore` runs the same
//! check before it downloads a byte.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::scan::{ReadCounters, Scan, ScanEnd, WalReading, scan_path};
use super::summary::SummaryRecord;
use super::target::{RecoveryTarget, TargetSpec, TimelineChoice};
use super::{PlanError, RepositoryView};
use crate::backup::{BackupSelector, Manifest};
use crate::catalog::Snapshot;
use crate::repo::Repository;
use crate::wal::{Lsn, RecordEvent, SegmentName, SegmentNo, TimelineId, TimelineSpan, path_passes};

/// The backup a recovery plan restores.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedBackup {
    /// The backup's ID.
    pub id: String,
    /// The timeline the backup was taken on.
    pub timeline: TimelineId,
    /// Where the backup started in the WAL (`START WAL LOCATION` in its backup label): replay
    /// begins here.
    pub start_lsn: Lsn,
    /// Where the backup ends: recovery is consistent once it has replayed WAL to here.
    pub stop_lsn: Lsn,
    /// When the backup finished.
    pub stopped_at: DateTime<Utc>,
    /// Bytes stored for the backup's parts (compressed).
    pub stored_bytes: u64,
    /// The PostgreSQL major version the backup is of: the restored copy starts only with that
    /// version's binaries.
    pub pg_major: u32,
}

/// The WAL read from one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTimeline {
    /// The timeline.
    pub timeline: TimelineId,
    /// The name of the first segment read from this timeline.
    pub first_segment: String,
    /// The name of the last segment read from this timeline.
    pub last_segment: String,
    /// How many segments are read from this timeline.
    pub segments: u64,
    /// Bytes stored for those segments (compressed).
    pub stored_bytes: u64,
}

/// The record recovery stops at (or, for `latest`, the end of the archived WAL).
#[derive(Debug, Clone, Serialize)]
pub struct StopPoint {
    /// What PostgreSQL will do there, in words.
    pub description: String,
    /// The position of the record recovery stops at, or for `latest` the end of the archived WAL.
    pub lsn: Lsn,
    /// Where PostgreSQL's replay ends, as `pg_last_wal_replay_lsn()` reports it once recovery
    /// stopped there: the end of the last record replayed (the one before the stop record when
    /// recovery stops before it), aligned to 8 bytes as PostgreSQL reads records, or the end of
    /// its segment for a WAL switch. For `latest`, the end of the archived WAL.
    pub replay_end: Lsn,
    /// The name of the segment holding that position.
    pub segment: String,
    /// The commit, abort or restore point time of the stop record; for `latest`, the time of the
    /// last commit or abort; `None` when there is none.
    pub time: Option<DateTime<Utc>>,
    /// The transaction ID of the stop record's commit or abort; for `latest`, that of the last
    /// commit or abort; `None` when there is none.
    pub xid: Option<u32>,
}

/// How recovery to a target will go: the backup to restore, the WAL to replay, where recovery stops
/// and the settings that make PostgreSQL stop there.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPlan {
    /// The target, in words (for example `time 2026-11-21T11:32:00Z`).
    pub target: String,
    /// `recovery_target_inclusive` as requested.
    pub inclusive: bool,
    /// The backup to restore.
    pub backup: PlannedBackup,
    /// The timeline recovery ends on.
    pub target_timeline: TimelineId,
    /// History file recovery reads to follow the timelines (none on timeline 1).
    pub history_file: Option<String>,
    /// The WAL read from each timeline, in the order recovery reads it.
    pub timelines: Vec<PlannedTimeline>,
    /// The number of segments recovery reads, over all timelines.
    pub wal_segments: u64,
    /// Bytes stored for those segments (compressed).
    pub wal_bytes: u64,
    /// Backup parts plus WAL, as stored (compressed).
    pub fetch_bytes: u64,
    /// Where recovery stops.
    pub stop: StopPoint,
    /// The `recovery_target*` settings that carry out this plan.
    pub settings: Vec<(String, String)>,
    /// What planning read to find the stop: segments decoded from downloaded WAL, segments read
    /// from their summaries, bytes of WAL downloaded.
    #[serde(flatten)]
    pub wal_read: WalReading,
}

/// Plans recovery to `spec`, from `backup` when given, else from the backup the target
/// calls for (time and LSN: the newest that finished before it; otherwise the newest): a
/// function of the repository's `snapshot` and the WAL it decodes (read from `repo`).
pub async fn plan_recovery(
    repo: &Repository,
    snapshot: &Snapshot,
    spec: &TargetSpec,
    backup: Option<&BackupSelector>,
) -> Result<RecoveryPlan, PlanError> {
    let view = RepositoryView::of(snapshot)?;
    // The newest suitable backup whose timeline the target timeline descends from (it must
    // have ended before the target timeline branched off, as PostgreSQL checks).
    let mut refused = None;
    let mut chosen = None;
    for manifest in candidate_backups(&view.backups, spec, backup)? {
        let target_timeline = resolve_timeline(&view, spec.timeline, manifest.timeline);
        let Some(path) = view.timelines.spans(target_timeline) else {
            return Err(PlanError::Missing {
                name: format!("{:08X}.history", target_timeline.get()),
                why: format!("recovery to timeline {target_timeline} follows it"),
            });
        };
        if path_passes(&path, manifest.timeline, manifest.stop_lsn) {
            chosen = Some((manifest, target_timeline, path));
            break;
        }
        refused.get_or_insert_with(|| {
            format!(
                "backup {} (timeline {}, ending at {}) is not an ancestor of timeline {target_timeline}: that timeline branched off before the backup ended; {}",
                manifest.id,
                manifest.timeline,
                manifest.stop_lsn,
                if backup.is_some() {
                    "choose an older backup or another target timeline"
                } else {
                    "no older backup is either; choose another target timeline"
                }
            )
        });
    }
    let Some((manifest, target_timeline, path)) = chosen else {
        return Err(PlanError::Unreachable(refused.unwrap_or_default()));
    };
    let index = &view.index;
    let size = index.segment_size();
    let start = manifest.start_lsn.segment(size);

    // Every segment from the backup's start to where recovery stops is stored, and its
    // records decode (CRC, back links) up to there: PostgreSQL ends recovery at the first
    // invalid record, so a damaged segment on the way is as fatal as a missing one.
    require_present(
        index,
        &path,
        start,
        end_segment(manifest.stop_lsn, size),
        &manifest.id,
    )?;
    let counters = ReadCounters::default();
    let (stop, stop_segment) = walk_to_stop(repo, index, &path, spec, manifest, &counters).await?;
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
            pg_major: manifest.pg_major(),
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
        wal_read: counters.reading(),
    })
}

/// The backups to restore from, best first: the one named, or those suited to the target
/// (time, LSN: finished before it), newest first.
fn candidate_backups<'a>(
    backups: &'a [Manifest],
    spec: &TargetSpec,
    selector: Option<&BackupSelector>,
) -> Result<Vec<&'a Manifest>, PlanError> {
    if backups.is_empty() {
        return Err(PlanError::NoBackup(
            "the repository holds no complete backup yet".into(),
        ));
    }
    // By real time (completion, then position), not by id.
    let mut newest_first: Vec<&Manifest> = backups.iter().collect();
    newest_first.sort_by_key(|m| std::cmp::Reverse((m.stopped_at, m.stop_lsn)));
    match selector {
        Some(BackupSelector::Id(id)) => {
            return backups
                .iter()
                .find(|m| &m.id == id)
                .map(|m| vec![m])
                .ok_or_else(|| PlanError::NoBackup(format!("no complete backup {id}")));
        }
        Some(BackupSelector::Latest) => return Ok(vec![newest_first[0]]),
        None => {}
    }
    let oldest = newest_first[newest_first.len() - 1];
    let suited: Vec<&Manifest> = match &spec.target {
        RecoveryTarget::Time(time) => newest_first
            .iter()
            .filter(|m| m.stopped_at < *time)
            .copied()
            .collect(),
        RecoveryTarget::Lsn(lsn) => newest_first
            .iter()
            .filter(|m| m.stop_lsn <= *lsn)
            .copied()
            .collect(),
        _ => newest_first.clone(),
    };
    if suited.is_empty() {
        return Err(PlanError::NoBackup(match &spec.target {
            RecoveryTarget::Time(time) => format!(
                "no backup finished before {}: the oldest, {}, finished at {}",
                time.to_rfc3339(),
                oldest.id,
                oldest.stopped_at.to_rfc3339()
            ),
            _ => format!(
                "no backup is consistent by {}: the oldest, {}, ends at {}",
                spec.target, oldest.id, oldest.stop_lsn
            ),
        }));
    }
    Ok(suited)
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

/// Whether recovery stops at `record` for `spec` (PostgreSQL's `recoveryStopsBefore` /
/// `recoveryStopsAfter`): what it does there, and whether it replays the record first.
fn stops_at(record: &SummaryRecord, spec: &TargetSpec) -> Option<(String, bool)> {
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
                (
                    format!(
                        "stops before the {what} of transaction {xid} at {} (the first after the target)",
                        time.to_rfc3339()
                    ),
                    false,
                )
            })
        }
        (RecoveryTarget::Xid(target), Some((what, xid, _)), _) if xid == *target => Some((
            format!("stops {before_after} the {what} of transaction {xid}"),
            spec.inclusive,
        )),
        (RecoveryTarget::Name(name), _, Some(RecordEvent::RestorePoint { name: found, .. }))
            if found == name =>
        {
            Some((format!("stops at restore point {name:?}"), true))
        }
        (RecoveryTarget::Lsn(target), _, _) if record.lsn >= *target => Some((
            format!(
                "stops {before_after} the record at {} (the first at or past the target)",
                record.lsn
            ),
            spec.inclusive,
        )),
        _ => None,
    }
}

/// Where replay stands after `record`, as PostgreSQL's `EndRecPtr`: its end aligned to 8 bytes
/// (`MAXALIGN`), and for a WAL switch the end of its segment (the rest is skipped).
fn replay_end_of(record: &SummaryRecord, size: crate::wal::WalSegmentSize) -> Lsn {
    if matches!(record.event, Some(RecordEvent::Switch)) {
        let segment_bytes = size.bytes();
        Lsn::new((record.lsn.as_u64() / segment_bytes + 1) * segment_bytes)
    } else {
        Lsn::new(record.end.as_u64().next_multiple_of(8))
    }
}

/// The segment holding the last byte before `end` (an end position exactly on a segment
/// boundary needs nothing of the next segment).
fn end_segment(end: Lsn, size: crate::wal::WalSegmentSize) -> SegmentNo {
    Lsn::new(end.as_u64().saturating_sub(1)).segment(size)
}

/// Decodes the WAL along `path` from the backup's start, as recovery will replay it, to the
/// record where recovery stops (for `latest` and `immediate`: the end of the stored WAL, or
/// the backup's end). Returns the stop and the last segment recovery reads.
async fn walk_to_stop(
    repo: &Repository,
    index: &crate::catalog::WalIndex,
    path: &[TimelineSpan],
    spec: &TargetSpec,
    manifest: &Manifest,
    counters: &ReadCounters,
) -> Result<(StopPoint, SegmentNo), PlanError> {
    let size = index.segment_size();
    let start = manifest.start_lsn.segment(size);
    let mut last: Option<(Lsn, SegmentName)> = None;
    let mut last_commit: Option<(Lsn, DateTime<Utc>, u32)> = None;
    // The replay end of the record before the current one: where replay stands when recovery
    // stops before the current record.
    let mut previous_replay_end: Option<Lsn> = None;
    let found = scan_path(repo, index, path, start, None, counters, |name, segment| {
        for record in &segment.records {
            let record_replay_end = replay_end_of(record, size);
            if record.lsn < manifest.start_lsn {
                previous_replay_end = Some(record_replay_end);
                continue;
            }
            let stop = match &spec.target {
                RecoveryTarget::Immediate => (record_replay_end >= manifest.stop_lsn).then(|| {
                    (
                        format!(
                            "stops once consistent, at the end of the backup ({})",
                            manifest.stop_lsn
                        ),
                        true,
                    )
                }),
                RecoveryTarget::Latest => None,
                _ => stops_at(record, spec),
            };
            if let Some((description, after)) = stop {
                let (time, xid) = match &record.event {
                    Some(RecordEvent::Commit { xid, time } | RecordEvent::Abort { xid, time }) => {
                        (Some(*time), Some(*xid))
                    }
                    Some(RecordEvent::RestorePoint { time, .. }) => (Some(*time), None),
                    _ => (None, None),
                };
                return Scan::Stop((
                    StopPoint {
                        description,
                        lsn: record.lsn,
                        replay_end: if after {
                            record_replay_end
                        } else {
                            previous_replay_end.unwrap_or(record.lsn)
                        },
                        segment: name.to_string(),
                        time,
                        xid,
                    },
                    *name,
                ));
            }
            if let Some(RecordEvent::Commit { time, xid } | RecordEvent::Abort { time, xid }) =
                &record.event
            {
                last_commit = Some((record.lsn, *time, *xid));
            }
            last = Some((record.end, *name));
            previous_replay_end = Some(record_replay_end);
        }
        Scan::Continue
    })
    .await?;
    let segno = |name: &SegmentName| {
        name.segment_no(size)
            .expect("names on the path are in range")
    };
    let (stop, segment) = match found {
        Ok(found) => found,
        Err(end) => {
            // The stored WAL ends (or stops being valid) before the target.
            let (end_name, invalid) = match end {
                ScanEnd::Missing(name) => (name, None),
                ScanEnd::Invalid { segment, reason } => (segment, Some(reason)),
            };
            if let Some(beyond) = index.any_after(path, segno(&end_name)) {
                return Err(match invalid {
                    None => PlanError::Missing {
                        name: end_name.to_string(),
                        why: format!(
                            "recovery to {} reads it; the archive holds WAL after it ({beyond}), so it was lost or deleted",
                            spec.target
                        ),
                    },
                    Some(reason) => PlanError::Corrupt {
                        key: end_name.to_string(),
                        reason: format!(
                            "its WAL stops being valid ({reason}), so recovery would end there although the archive holds WAL after it ({beyond})"
                        ),
                    },
                });
            }
            let (wal_end, last_segment) = last.unwrap_or((manifest.stop_lsn, end_name));
            if matches!(spec.target, RecoveryTarget::Latest) {
                if wal_end < manifest.stop_lsn {
                    return Err(PlanError::Unreachable(format!(
                        "the archived WAL ends at {wal_end}, before backup {} becomes consistent at {}",
                        manifest.id, manifest.stop_lsn
                    )));
                }
                let stop = StopPoint {
                    description: format!("replays all archived WAL, to {wal_end}"),
                    lsn: wal_end,
                    replay_end: previous_replay_end.unwrap_or(wal_end),
                    segment: last_segment.to_string(),
                    time: last_commit.map(|c| c.1),
                    xid: last_commit.map(|c| c.2),
                };
                return Ok((stop, segno(&last_segment)));
            }
            let last = match last_commit {
                Some((lsn, time, _)) => {
                    format!("; its last commit is at {} ({lsn})", time.to_rfc3339())
                }
                None => String::new(),
            };
            let reason = match invalid {
                None => format!("the archived WAL ends before segment {end_name}"),
                Some(reason) => {
                    format!("the WAL stops being valid in segment {end_name}: {reason}")
                }
            };
            let hint = match spec.target {
                RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => {
                    " (if it lies before this backup, name an older backup)"
                }
                _ => "",
            };
            return Err(PlanError::Unreachable(format!(
                "{} is not in the archived WAL after backup {}{hint}: {reason}, at {wal_end}{last}",
                spec.target, manifest.id
            )));
        }
    };
    // Consistent once replay has passed the backup's end.
    if stop.replay_end < manifest.stop_lsn {
        return Err(PlanError::Unreachable(format!(
            "{} lies before backup {} became consistent ({}): recovery would stop at {} — choose an older backup",
            spec.target, manifest.id, manifest.stop_lsn, stop.lsn
        )));
    }
    Ok((stop, segno(&segment)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lsn: u64, event: Option<RecordEvent>) -> SummaryRecord {
        SummaryRecord {
            lsn: Lsn::new(lsn),
            end: Lsn::new(lsn + 40),
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
