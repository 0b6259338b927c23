//! The retention planner, pure: from what the repository holds, a policy and the current time
//! to a plan that says which backups stay (and why), which go, and which WAL files no kept
//! backup needs. No I/O, so `--dry-run` prints exactly what a real run would do.
//!
//! Backups are ordered by when they finished (completion time, then stop time, then stop
//! LSN), never by id: an id is a start time, and a long backup that started first can finish
//! last.
//!
//! WAL follows the timelines (DESIGN.md §2.7). A kept backup that started at LSN `s` on
//! timeline `b` can recover onto every timeline `T` whose path (its history) passes through
//! `b` before leaving it; such a recovery reads, on each timeline of that path from the one
//! holding `s` on, every segment from the backup's start segment onward. Per timeline, the
//! lowest such segment over all kept backups and all targets is where its WAL must start; what
//! lies below goes. A timeline no kept backup can reach loses all its WAL, except when its
//! history file is missing: where it branched off is then unknown, so all of it stays.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{RetentionError, RetentionPolicy};
use crate::backup::{BackupId, Manifest};
use crate::catalog::{ListedWal, Timelines};
use crate::wal::{Lsn, SegmentName, SegmentNo, TimelineId, WalSegmentSize, path_passes};

/// What retention needs to know about one complete backup (read from its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupFacts {
    /// The backup's ID.
    pub id: BackupId,
    /// The timeline the backup started on.
    pub timeline: TimelineId,
    /// Where recovery from the backup starts reading WAL.
    pub start_lsn: Lsn,
    /// The backup's end: recovery must replay up to here to be consistent.
    pub stop_lsn: Lsn,
    /// When walarch started the backup on the server.
    pub started_at: DateTime<Utc>,
    /// When the server's backup was stopped, after the files were copied.
    pub stopped_at: DateTime<Utc>,
    /// When the backup was complete in the repository, its WAL up to `stop_lsn` included; backups
    /// are ordered by this.
    pub completed_at: DateTime<Utc>,
    /// Bytes stored for the backup's parts.
    pub stored_bytes: u64,
}

impl From<&Manifest> for BackupFacts {
    fn from(manifest: &Manifest) -> Self {
        BackupFacts {
            id: manifest.id.clone(),
            timeline: manifest.timeline,
            start_lsn: manifest.start_lsn,
            stop_lsn: manifest.stop_lsn,
            started_at: manifest.started_at,
            stopped_at: manifest.stopped_at,
            completed_at: manifest.completed_at,
            stored_bytes: manifest.stored_bytes(),
        }
    }
}

impl BackupFacts {
    /// Real-time order: when the backup finished, with the stop LSN (then the id) to settle ties.
    fn finish_order(&self) -> (DateTime<Utc>, DateTime<Utc>, Lsn, &BackupId) {
        (self.completed_at, self.stopped_at, self.stop_lsn, &self.id)
    }
}

/// Everything the planner looks at: plain data, read by [`super::load_inputs`] or made up by tests.
#[derive(Debug, Clone)]
pub struct RetentionInputs {
    /// Complete backups, in any order.
    pub backups: Vec<BackupFacts>,
    /// Backup folders without a manifest: interrupted, or still running.
    pub incomplete: Vec<BackupId>,
    /// Backups whose manifest names objects the repository lacks: never restorable, so
    /// never kept and never counted towards a policy.
    pub damaged: Vec<BackupId>,
    /// One listing of `wal/`.
    pub wal: Vec<ListedWal>,
    /// The repository's timeline histories, which say which timelines a backup can recover onto.
    pub timelines: Timelines,
    /// The cluster's WAL segment size, from `walarch.json`.
    pub segment_size: WalSegmentSize,
}

/// Whether the plan keeps or deletes a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// It stays.
    Keep,
    /// It is deleted.
    Delete,
}

/// Why a complete backup is kept or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackupReason {
    /// The newest complete backup is never deleted, whatever the policy.
    Newest,
    /// Among the `keep` newest; `rank` 1 is the newest.
    AmongNewest {
        /// The backup's place by completion, 1 for the newest.
        rank: u32,
        /// How many newest backups the policy keeps.
        keep: u32,
    },
    /// Completed within the window.
    WithinWindow,
    /// The newest backup completed at or before the window's start: recovery to the
    /// window's first moments starts from it.
    WindowAnchor,
    /// Older than the `keep` newest.
    NotAmongNewest {
        /// How many newest backups the policy keeps.
        keep: u32,
    },
    /// Completed before the window's anchor: the window does not need it.
    BeforeWindowAnchor,
}

impl BackupReason {
    fn keeps(self) -> bool {
        matches!(
            self,
            BackupReason::Newest
                | BackupReason::AmongNewest { .. }
                | BackupReason::WithinWindow
                | BackupReason::WindowAnchor
        )
    }
}

impl fmt::Display for BackupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupReason::Newest => f.write_str("newest backup"),
            BackupReason::AmongNewest { rank, keep } => write!(f, "#{rank} of the {keep} newest"),
            BackupReason::WithinWindow => f.write_str("completed within the window"),
            BackupReason::WindowAnchor => f.write_str("recovery to the window's start begins here"),
            BackupReason::NotAmongNewest { keep } => write!(f, "older than the {keep} newest"),
            BackupReason::BeforeWindowAnchor => f.write_str("older than what the window needs"),
        }
    }
}

/// The plan for one complete backup: the action and the reasons for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupDecision {
    /// The backup.
    #[serde(flatten)]
    pub backup: BackupFacts,
    /// Whether it is kept or deleted.
    pub action: Action,
    /// Every rule of the policy that keeps it or, when it is deleted, every rule it falls outside
    /// of.
    pub reasons: Vec<BackupReason>,
}

/// Why a backup folder without a manifest is deleted or left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IncompleteReason {
    /// It started before the oldest kept backup: an interrupted backup, not a running one.
    StartedBeforeOldestKept,
    /// It may still be running: a backup is left alone until it is older than every kept one.
    MayStillBeRunning,
    /// It started less than `INCOMPLETE_GRACE` ago: a long backup may still be running.
    StartedRecently,
}

/// How old a folder without a manifest must be before retention takes it for interrupted,
/// whatever the kept backups: a backup still running must never lose its parts.
pub const INCOMPLETE_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

impl fmt::Display for IncompleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IncompleteReason::StartedBeforeOldestKept => {
                "interrupted before the oldest kept backup"
            }
            IncompleteReason::MayStillBeRunning => "may still be running",
            IncompleteReason::StartedRecently => "started less than 24 hours ago",
        })
    }
}

/// The plan for one backup folder without a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncompleteDecision {
    /// The folder's backup ID.
    pub id: BackupId,
    /// Whether the folder is kept or deleted.
    pub action: Action,
    /// Why.
    pub reason: IncompleteReason,
}

/// What happens to one timeline's WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimelineStatus {
    /// A kept backup recovers onto or through this timeline: its WAL from `keep_from` on
    /// stays; `by` is the backup that needs the oldest of it.
    Needed {
        /// The name of the oldest segment of this timeline that stays.
        keep_from: String,
        /// The kept backup that needs that segment.
        by: BackupId,
    },
    /// No kept backup can reach this timeline: all of its WAL goes (its history file stays).
    Unreachable,
    /// The timeline's history file is missing, so its ancestry is unknown: all of it stays.
    HistoryMissing,
    /// No kept backup reaches this timeline, but it is the repository's newest and newer
    /// than every kept backup's: it may be the live timeline of a copy that took the
    /// repository over and has no backup of its own yet (one may be running). All of it stays.
    NewerThanBackups,
}

/// One timeline's WAL files (segments, `.partial` and `.backup` files) before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineWalPlan {
    /// The timeline.
    pub timeline: TimelineId,
    /// What happens to the timeline's WAL, and why.
    #[serde(flatten)]
    pub status: TimelineStatus,
    /// How many of its WAL files are deleted.
    pub deleted_files: u64,
    /// Stored bytes of the deleted WAL files.
    pub deleted_bytes: u64,
    /// The name of the oldest WAL file deleted; `None` when none is.
    pub first_deleted: Option<String>,
    /// The name of the newest WAL file deleted; `None` when none is.
    pub last_deleted: Option<String>,
    /// How many of its WAL files stay.
    pub kept_files: u64,
    /// Stored bytes of the WAL files that stay.
    pub kept_bytes: u64,
}

/// The plan's counts, over all backups and timelines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanTotals {
    /// Complete backups kept.
    pub backups_kept: u64,
    /// Complete backups deleted.
    pub backups_deleted: u64,
    /// Stored bytes of the deleted backups' parts.
    pub backup_bytes_deleted: u64,
    /// Interrupted backup folders deleted.
    pub incomplete_deleted: u64,
    /// Damaged backups deleted.
    pub damaged_deleted: u64,
    /// WAL files deleted (segments, `.partial` and `.backup` files).
    pub wal_files_deleted: u64,
    /// Stored bytes of the deleted WAL files.
    pub wal_bytes_deleted: u64,
    /// WAL files kept (history files not counted).
    pub wal_files_kept: u64,
}

/// What a retention run does; apply it with [`super::apply_retention`].
#[derive(Debug, Clone, Serialize)]
pub struct RetentionPlan {
    /// The policy planned for.
    pub policy: RetentionPolicy,
    /// The time the plan was made for; the window reaches back from it.
    pub now: DateTime<Utc>,
    /// `now` minus the window, when the policy has one.
    pub window_start: Option<DateTime<Utc>>,
    /// Every complete backup, oldest first by completion.
    pub backups: Vec<BackupDecision>,
    /// Every backup folder without a manifest, by id.
    pub incomplete: Vec<IncompleteDecision>,
    /// Every damaged backup (a manifest without all of its parts), by id: all are deleted.
    pub damaged: Vec<BackupId>,
    /// Every timeline with WAL files, by number.
    pub timelines: Vec<TimelineWalPlan>,
    /// The plan's counts.
    pub totals: PlanTotals,
    /// The WAL files to delete, oldest segment first (too many to print; counted above).
    #[serde(skip)]
    wal_to_delete: Vec<ListedWal>,
}

impl RetentionPlan {
    /// The complete backups to delete, oldest first.
    pub fn backups_to_delete(&self) -> impl Iterator<Item = &BackupFacts> {
        self.backups
            .iter()
            .filter(|d| d.action == Action::Delete)
            .map(|d| &d.backup)
    }

    /// The complete backups to keep, oldest first.
    pub fn backups_to_keep(&self) -> impl Iterator<Item = &BackupFacts> {
        self.backups
            .iter()
            .filter(|d| d.action == Action::Keep)
            .map(|d| &d.backup)
    }

    /// The IDs of the interrupted backup folders to delete.
    pub fn incomplete_to_delete(&self) -> impl Iterator<Item = &BackupId> {
        self.incomplete
            .iter()
            .filter(|d| d.action == Action::Delete)
            .map(|d| &d.id)
    }

    /// Damaged backups: their manifests go with those of the deleted backups.
    pub fn damaged_to_delete(&self) -> impl Iterator<Item = &BackupId> {
        self.damaged.iter()
    }

    /// The WAL files to delete, oldest segment first.
    pub fn wal_to_delete(&self) -> &[ListedWal] {
        &self.wal_to_delete
    }

    /// Whether applying the plan would delete nothing at all.
    pub fn deletes_nothing(&self) -> bool {
        self.totals.backups_deleted == 0
            && self.totals.incomplete_deleted == 0
            && self.totals.damaged_deleted == 0
            && self.wal_to_delete.is_empty()
    }
}

/// Plans a retention run. Refuses (deletes nothing) when the repository holds WAL or
/// interrupted backups but no complete backup: with nothing to keep, the policy would throw
/// everything away.
pub fn plan_retention(
    inputs: &RetentionInputs,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<RetentionPlan, RetentionError> {
    let window_start = policy.window().map(|window| {
        now.checked_sub_signed(window.as_time_delta())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    });
    let mut plan = RetentionPlan {
        policy: *policy,
        now,
        window_start,
        backups: Vec::new(),
        incomplete: Vec::new(),
        damaged: Vec::new(),
        timelines: Vec::new(),
        totals: PlanTotals::default(),
        wal_to_delete: Vec::new(),
    };
    if inputs.backups.is_empty() {
        if inputs.wal.is_empty() && inputs.incomplete.is_empty() && inputs.damaged.is_empty() {
            return Ok(plan); // an empty repository: nothing to do
        }
        return Err(RetentionError::NoCompleteBackups {
            wal_files: inputs.wal.len(),
            incomplete: inputs.incomplete.len(),
            damaged: inputs.damaged.len(),
        });
    }

    let mut ordered: Vec<&BackupFacts> = inputs.backups.iter().collect();
    ordered.sort_by(|a, b| a.finish_order().cmp(&b.finish_order()));
    // The window is about the live timeline: its anchor must be a backup recovery to the
    // newest timeline can start from (not one on an abandoned branch).
    let live_path = inputs.timelines.spans(inputs.timelines.latest());
    plan.backups = decide_backups(&ordered, policy, window_start, live_path.as_deref());
    let kept: Vec<BackupFacts> = plan.backups_to_keep().cloned().collect();

    // A folder whose id (its start time) is older than every kept backup's start is taken
    // to be interrupted: a backup still running then would overlap all the kept ones.
    let oldest_kept_start = kept
        .iter()
        .map(|b| b.started_at)
        .min()
        .expect("the newest backup is always kept");
    let mut incomplete: Vec<&BackupId> = inputs.incomplete.iter().collect();
    incomplete.sort();
    plan.incomplete = incomplete
        .into_iter()
        .map(|id| {
            let (action, reason) = if id.time() >= oldest_kept_start {
                (Action::Keep, IncompleteReason::MayStillBeRunning)
            } else if id.time() > now - INCOMPLETE_GRACE {
                (Action::Keep, IncompleteReason::StartedRecently)
            } else {
                (Action::Delete, IncompleteReason::StartedBeforeOldestKept)
            };
            IncompleteDecision {
                id: id.clone(),
                action,
                reason,
            }
        })
        .collect();

    // A damaged backup cannot be restored, so nothing keeps it; its WAL is kept only if a
    // whole backup needs it.
    plan.damaged = inputs.damaged.clone();
    plan.damaged.sort();

    let needs = WalNeeds::of(&kept, inputs);
    plan.timelines = plan_wal(inputs, &needs, &mut plan.wal_to_delete);

    plan.totals = PlanTotals {
        backups_kept: kept.len() as u64,
        backups_deleted: plan.backups_to_delete().count() as u64,
        backup_bytes_deleted: plan.backups_to_delete().map(|b| b.stored_bytes).sum(),
        incomplete_deleted: plan.incomplete_to_delete().count() as u64,
        damaged_deleted: plan.damaged.len() as u64,
        wal_files_deleted: plan.wal_to_delete.len() as u64,
        wal_bytes_deleted: plan.wal_to_delete.iter().map(|w| w.size).sum(),
        wal_files_kept: plan.timelines.iter().map(|t| t.kept_files).sum(),
    };
    Ok(plan)
}

/// Applies the policy to backups ordered oldest first; the union of what each part keeps.
fn decide_backups(
    ordered: &[&BackupFacts],
    policy: &RetentionPolicy,
    window_start: Option<DateTime<Utc>>,
    live_path: Option<&[crate::wal::TimelineSpan]>,
) -> Vec<BackupDecision> {
    let count = ordered.len();
    let mut reasons: Vec<Vec<BackupReason>> = vec![Vec::new(); count];
    reasons[count - 1].push(BackupReason::Newest);
    if let Some(keep) = policy.keep() {
        for (rank, index) in (0..count).rev().take(keep as usize).enumerate() {
            reasons[index].push(BackupReason::AmongNewest {
                rank: rank as u32 + 1,
                keep,
            });
        }
    }
    if let Some(start) = window_start {
        // Ordered by completion, so every backup after the anchor completed within the
        // window. Without an anchor, every backup did.
        let before = |b: &&BackupFacts| b.completed_at <= start;
        let on_live_path = |b: &&BackupFacts| {
            live_path.is_none_or(|path| path_passes(path, b.timeline, b.stop_lsn))
        };
        let anchor = ordered
            .iter()
            .rposition(|b| before(b) && on_live_path(b))
            .or_else(|| ordered.iter().rposition(before));
        for (index, backup) in ordered.iter().enumerate() {
            if backup.completed_at > start {
                reasons[index].push(BackupReason::WithinWindow);
            } else if Some(index) == anchor {
                reasons[index].push(BackupReason::WindowAnchor);
            }
        }
    }
    ordered
        .iter()
        .zip(reasons)
        .map(|(backup, mut reasons)| {
            let action = if reasons.iter().any(|r| r.keeps()) {
                Action::Keep
            } else {
                if let Some(keep) = policy.keep() {
                    reasons.push(BackupReason::NotAmongNewest { keep });
                }
                if policy.window().is_some() {
                    reasons.push(BackupReason::BeforeWindowAnchor);
                }
                Action::Delete
            };
            BackupDecision {
                backup: (*backup).clone(),
                action,
                reasons,
            }
        })
        .collect()
}

/// Per timeline, the oldest segment some kept backup needs.
#[derive(Debug)]
struct WalNeeds<'a> {
    lowest_needed: BTreeMap<TimelineId, (SegmentNo, &'a BackupId)>,
    history_missing: BTreeSet<TimelineId>,
    newer_than_backups: BTreeSet<TimelineId>,
}

impl<'a> WalNeeds<'a> {
    fn of(kept: &'a [BackupFacts], inputs: &RetentionInputs) -> Self {
        let size = inputs.segment_size;
        let mut targets: BTreeSet<TimelineId> = inputs.timelines.known().collect();
        targets.extend(
            inputs
                .wal
                .iter()
                .filter(|w| w.name.segment().is_some())
                .map(|w| w.name.timeline()),
        );
        let mut needs = WalNeeds {
            lowest_needed: BTreeMap::new(),
            history_missing: BTreeSet::new(),
            newer_than_backups: BTreeSet::new(),
        };
        let newest_backup_timeline = kept.iter().map(|b| b.timeline).max();
        let newest_timeline = targets.iter().next_back().copied();
        for &target in &targets {
            let Some(spans) = inputs.timelines.spans(target) else {
                needs.history_missing.insert(target);
                continue;
            };
            for backup in kept {
                if !path_passes(&spans, backup.timeline, backup.start_lsn) {
                    continue;
                }
                let first = backup.start_lsn.segment(size);
                // Recovery reads the path from the span holding the start LSN on; ancestors
                // that ended before it are never read.
                for span in spans
                    .iter()
                    .filter(|span| span.end.is_none_or(|end| backup.start_lsn < end))
                {
                    needs
                        .lowest_needed
                        .entry(span.timeline)
                        .and_modify(|(lowest, by)| {
                            if first < *lowest {
                                (*lowest, *by) = (first, &backup.id);
                            }
                        })
                        .or_insert((first, &backup.id));
                }
            }
        }
        needs.newer_than_backups = targets
            .into_iter()
            .filter(|t| !needs.lowest_needed.contains_key(t) && !needs.history_missing.contains(t))
            .filter(|t| Some(*t) == newest_timeline)
            .filter(|t| newest_backup_timeline.is_some_and(|newest| *t > newest))
            .collect();
        needs
    }

    /// Whether a WAL file (segment, `.partial` or `.backup`) must stay.
    fn keeps(&self, item: &ListedWal, size: WalSegmentSize) -> bool {
        let Some(segment) = item.name.segment() else {
            return true; // history files are never deleted (see the module of `retention`)
        };
        let timeline = segment.timeline();
        if self.history_missing.contains(&timeline) || self.newer_than_backups.contains(&timeline) {
            return true;
        }
        let Ok(number) = segment.segment_no(size) else {
            return true; // a name this segment size cannot produce: not ours to judge
        };
        self.lowest_needed
            .get(&timeline)
            .is_some_and(|(lowest, _)| number >= *lowest)
    }

    fn status(&self, timeline: TimelineId, size: WalSegmentSize) -> TimelineStatus {
        if self.history_missing.contains(&timeline) {
            return TimelineStatus::HistoryMissing;
        }
        if self.newer_than_backups.contains(&timeline) {
            return TimelineStatus::NewerThanBackups;
        }
        match self.lowest_needed.get(&timeline) {
            Some((lowest, by)) => TimelineStatus::Needed {
                keep_from: SegmentName::new(timeline, *lowest, size).to_string(),
                by: (*by).clone(),
            },
            None => TimelineStatus::Unreachable,
        }
    }
}

/// Sorts the listing into kept and deleted WAL files; returns the per-timeline summary and
/// fills `to_delete`, oldest segment first.
fn plan_wal(
    inputs: &RetentionInputs,
    needs: &WalNeeds<'_>,
    to_delete: &mut Vec<ListedWal>,
) -> Vec<TimelineWalPlan> {
    let size = inputs.segment_size;
    let order = |item: &ListedWal| {
        let segment = item.name.segment().expect("only segment files are deleted");
        (
            segment.segment_no(size).map(SegmentNo::as_u64).unwrap_or(0),
            segment.timeline(),
            item.name.to_string(),
        )
    };
    let mut per_timeline: BTreeMap<TimelineId, TimelineWalPlan> = BTreeMap::new();
    for item in inputs.wal.iter().filter(|w| w.name.segment().is_some()) {
        let timeline = item.name.timeline();
        let entry = per_timeline
            .entry(timeline)
            .or_insert_with(|| TimelineWalPlan {
                timeline,
                status: needs.status(timeline, size),
                deleted_files: 0,
                deleted_bytes: 0,
                first_deleted: None,
                last_deleted: None,
                kept_files: 0,
                kept_bytes: 0,
            });
        if needs.keeps(item, size) {
            entry.kept_files += 1;
            entry.kept_bytes += item.size;
        } else {
            entry.deleted_files += 1;
            entry.deleted_bytes += item.size;
            to_delete.push(item.clone());
        }
    }
    to_delete.sort_by_cached_key(order);
    for item in to_delete.iter() {
        let entry = per_timeline
            .get_mut(&item.name.timeline())
            .expect("counted above");
        let name = item.name.to_string();
        entry.first_deleted.get_or_insert_with(|| name.clone());
        entry.last_deleted = Some(name);
    }
    per_timeline.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeDelta;
    use object_store::path::Path;

    use super::*;
    use crate::codec::Codec;
    use crate::retention::RetentionWindow;
    use crate::store::keys;
    use crate::wal::{TimelineHistory, WalFileName};

    const SEGMENT: u64 = 16 << 20;

    fn t0() -> DateTime<Utc> {
        "2026-11-01T00:00:00Z".parse().unwrap()
    }

    fn hours(h: i64) -> DateTime<Utc> {
        t0() + TimeDelta::hours(h)
    }

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    /// The id of a backup that started `h` hours after t0.
    fn id(h: i64) -> BackupId {
        BackupId::from_time(hours(h))
    }

    /// A backup started `start_h` hours after t0 at 0x28 into segment `segment` of `timeline`,
    /// stopped one segment later, completed at `completed_h`.
    fn backup(start_h: i64, timeline: u32, segment: u64, completed_h: i64) -> BackupFacts {
        let start_lsn = Lsn::new(segment * SEGMENT + 0x28);
        BackupFacts {
            id: id(start_h),
            timeline: tli(timeline),
            start_lsn,
            stop_lsn: Lsn::new(start_lsn.as_u64() + SEGMENT),
            started_at: hours(start_h),
            stopped_at: hours(completed_h) - TimeDelta::minutes(1),
            completed_at: hours(completed_h),
            stored_bytes: 1000,
        }
    }

    fn listed(name: WalFileName) -> ListedWal {
        let codec = match name {
            WalFileName::History(_) => Codec::None,
            _ => Codec::Zstd,
        };
        ListedWal {
            name,
            key: keys::wal_file(&name, codec),
            codec,
            size: 100,
            last_modified: t0(),
            e_tag: None,
        }
    }

    fn name(timeline: u32, segment: u64) -> SegmentName {
        SegmentName::new(
            tli(timeline),
            SegmentNo::new(segment),
            WalSegmentSize::DEFAULT,
        )
    }

    /// Segments `range` of `timeline`.
    fn segments(timeline: u32, range: std::ops::RangeInclusive<u64>) -> Vec<ListedWal> {
        range
            .map(|n| listed(WalFileName::Segment(name(timeline, n))))
            .collect()
    }

    fn partial(timeline: u32, segment: u64) -> ListedWal {
        listed(WalFileName::Partial(name(timeline, segment)))
    }

    /// The `.backup` file a backup started 0x28 into `segment` leaves.
    fn backup_file(timeline: u32, segment: u64) -> ListedWal {
        listed(WalFileName::Backup {
            segment: name(timeline, segment),
            offset: 0x28,
        })
    }

    fn history_file(timeline: u32) -> ListedWal {
        listed(WalFileName::History(tli(timeline)))
    }

    /// Timelines from history file contents; each one's file is also added to the listing.
    fn timelines(histories: &[(u32, &str)]) -> Timelines {
        Timelines::new(
            histories
                .iter()
                .map(|(t, text)| (tli(*t), TimelineHistory::parse(text.as_bytes()).unwrap()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn keep(n: u32) -> RetentionPolicy {
        RetentionPolicy::new(Some(n), None).unwrap()
    }

    fn window(text: &str) -> RetentionPolicy {
        RetentionPolicy::new(None, Some(text.parse::<RetentionWindow>().unwrap())).unwrap()
    }

    struct Case {
        name: &'static str,
        backups: Vec<BackupFacts>,
        incomplete: Vec<BackupId>,
        wal: Vec<ListedWal>,
        histories: Vec<(u32, &'static str)>,
        policy: RetentionPolicy,
        now: DateTime<Utc>,
        /// Ids (start hours) of the backups kept.
        kept: Vec<i64>,
        /// Ids (start hours) of the incomplete backups deleted.
        incomplete_deleted: Vec<i64>,
        /// Names of the WAL files deleted, in deletion order.
        wal_deleted: Vec<String>,
    }

    fn names(files: &[ListedWal]) -> Vec<String> {
        files.iter().map(|f| f.name.to_string()).collect()
    }

    fn with(
        mut files: Vec<ListedWal>,
        more: impl IntoIterator<Item = ListedWal>,
    ) -> Vec<ListedWal> {
        files.extend(more);
        files
    }

    fn cases() -> Vec<Case> {
        // Three backups on timeline 1, each a day apart, starting in segments 2, 5 and 8.
        let three = vec![
            backup(0, 1, 2, 1),
            backup(24, 1, 5, 25),
            backup(48, 1, 8, 49),
        ];
        let tli1_wal = with(
            segments(1, 1..=10),
            [backup_file(1, 2), backup_file(1, 5), backup_file(1, 8)],
        );
        // Timeline 2 branched off timeline 1 in the middle of segment 6.
        let switch_to_2 = (2, "1\t0/6800000\tno recovery target specified\n");
        let two_timelines = with(
            segments(1, 1..=6),
            with(
                segments(2, 6..=10),
                [
                    partial(1, 6),
                    backup_file(1, 2),
                    backup_file(1, 4),
                    backup_file(2, 8),
                    history_file(2),
                ],
            ),
        );
        vec![
            Case {
                name: "keep 2 of 3: the oldest backup and the WAL before the second go",
                backups: three.clone(),
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: keep(2),
                now: hours(50),
                kept: vec![24, 48],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=4)))
                    .collect(),
            },
            Case {
                name: "keep more than there are: nothing goes",
                backups: three.clone(),
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: keep(5),
                now: hours(50),
                kept: vec![0, 24, 48],
                incomplete_deleted: vec![],
                // Only what lies before the oldest backup.
                wal_deleted: names(&segments(1, 1..=1)),
            },
            Case {
                name: "window: the backups within it and the newest one before its start",
                backups: vec![
                    backup(0, 1, 2, 1),
                    backup(24, 1, 5, 25),
                    backup(48, 1, 8, 49),
                    backup(72, 1, 9, 73),
                ],
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                // Window start: hour 40; backup 24 is the anchor.
                policy: window("2d"),
                now: hours(88),
                kept: vec![24, 48, 72],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=4)))
                    .collect(),
            },
            Case {
                name: "window: a backup completed exactly at its start is the anchor",
                backups: three.clone(),
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: window("24h"),
                now: hours(49),
                kept: vec![24, 48],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=4)))
                    .collect(),
            },
            Case {
                name: "window: when no backup completed before its start, all stay",
                backups: three.clone(),
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: window("30d"),
                now: hours(50),
                kept: vec![0, 24, 48],
                incomplete_deleted: vec![],
                wal_deleted: names(&segments(1, 1..=1)),
            },
            Case {
                name: "window shorter than the time since the newest backup: the newest stays",
                backups: three.clone(),
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: window("1s"),
                now: hours(1000),
                kept: vec![48],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&with(segments(1, 3..=5), [backup_file(1, 5)])))
                    .chain(names(&segments(1, 6..=7)))
                    .collect(),
            },
            Case {
                name: "keep and window together: the window keeps more",
                backups: vec![
                    backup(0, 1, 2, 1),
                    backup(24, 1, 5, 25),
                    backup(48, 1, 8, 49),
                    backup(72, 1, 9, 73),
                ],
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                // keep 1 keeps 72; the window (start 60) keeps 48 (anchor) and 72.
                policy: RetentionPolicy::new(Some(1), "1d".parse().ok()).unwrap(),
                now: hours(84),
                kept: vec![48, 72],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&with(segments(1, 3..=5), [backup_file(1, 5)])))
                    .chain(names(&segments(1, 6..=7)))
                    .collect(),
            },
            Case {
                name: "keep and window together: the count keeps more",
                backups: vec![
                    backup(0, 1, 2, 1),
                    backup(24, 1, 5, 25),
                    backup(48, 1, 8, 49),
                    backup(72, 1, 9, 73),
                ],
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                // keep 3 keeps 24, 48, 72; the window (start 60) keeps 48 (anchor) and 72.
                policy: RetentionPolicy::new(Some(3), "1d".parse().ok()).unwrap(),
                now: hours(84),
                kept: vec![24, 48, 72],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=4)))
                    .collect(),
            },
            Case {
                name: "ordered by completion, not by id",
                // Backup 48 started last but finished first (started on a clock running
                // ahead, or a long backup overlapping): by real time it is the oldest.
                backups: vec![
                    backup(48, 1, 2, 10),
                    backup(0, 1, 5, 20),
                    backup(24, 1, 8, 30),
                ],
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: keep(2),
                now: hours(50),
                kept: vec![0, 24],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=4)))
                    .collect(),
            },
            Case {
                name: "same completion time: the stop LSN decides",
                backups: vec![backup(0, 1, 5, 30), backup(24, 1, 2, 30)],
                incomplete: vec![],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: keep(1),
                now: hours(50),
                kept: vec![0],
                incomplete_deleted: vec![],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=4)))
                    .collect(),
            },
            Case {
                name: "a kept backup on timeline 1 keeps timeline 2, which branched after it",
                backups: vec![backup(0, 1, 2, 1), backup(24, 1, 4, 25)],
                incomplete: vec![],
                wal: two_timelines.clone(),
                histories: vec![switch_to_2],
                policy: keep(1),
                now: hours(50),
                kept: vec![24],
                incomplete_deleted: vec![],
                // Timeline 1 from segment 4 on stays, its .partial included; all of
                // timeline 2 (segments 6..) is at or above segment 4.
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=3)))
                    .collect(),
            },
            Case {
                name: "only a backup on timeline 2 kept: timeline 1 is not read by it",
                backups: vec![
                    backup(0, 1, 2, 1),
                    backup(24, 1, 4, 25),
                    backup(48, 2, 8, 49),
                ],
                incomplete: vec![],
                wal: two_timelines.clone(),
                histories: vec![switch_to_2],
                policy: keep(1),
                now: hours(50),
                kept: vec![48],
                incomplete_deleted: vec![],
                // Recovery from 0/8000028 on timeline 2 never reads timeline 1 (it left it
                // at 0/6800000); timeline 2 keeps segment 8 on.
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=3)))
                    .chain(names(&with(segments(1, 4..=4), [backup_file(1, 4)])))
                    .chain(names(&segments(1, 5..=5)))
                    .chain(names(&[
                        listed(WalFileName::Segment(name(1, 6))),
                        partial(1, 6),
                    ]))
                    .chain(names(&segments(2, 6..=6)))
                    .chain(names(&segments(2, 7..=7)))
                    .collect(),
            },
            Case {
                name: "a backup on timeline 2 that starts in the switch segment",
                backups: vec![
                    backup(0, 1, 2, 1),
                    BackupFacts {
                        // 0/6900000: on timeline 2, in the segment where it branched off.
                        start_lsn: Lsn::new(6 * SEGMENT + 0x90_0000),
                        ..backup(48, 2, 6, 49)
                    },
                ],
                incomplete: vec![],
                wal: two_timelines.clone(),
                histories: vec![switch_to_2],
                policy: keep(1),
                now: hours(50),
                kept: vec![48],
                incomplete_deleted: vec![],
                // PostgreSQL reads segment 6 from timeline 2 (the newest timeline that
                // began at or before it), so timeline 1 is not needed at all.
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=3)))
                    .chain(names(&with(segments(1, 4..=4), [backup_file(1, 4)])))
                    .chain(names(&segments(1, 5..=5)))
                    .chain(names(&[
                        listed(WalFileName::Segment(name(1, 6))),
                        partial(1, 6),
                    ]))
                    .collect(),
            },
            Case {
                name: "an abandoned branch no kept backup reaches loses its WAL, not its history",
                backups: vec![backup(0, 1, 2, 1), backup(24, 1, 5, 25)],
                incomplete: vec![],
                // Timeline 2 branched at 0/3800000 (a clone, abandoned); timeline 3 branched
                // at 0/7800000, after the kept backup.
                wal: with(
                    segments(1, 1..=9),
                    with(
                        segments(2, 3..=4),
                        with(segments(3, 7..=9), [history_file(2), history_file(3)]),
                    ),
                ),
                histories: vec![
                    (2, "1\t0/3800000\tclone\n"),
                    (3, "1\t0/7800000\tfailover\n"),
                ],
                policy: keep(1),
                now: hours(50),
                kept: vec![24],
                incomplete_deleted: vec![],
                wal_deleted: names(&segments(1, 1..=2))
                    .into_iter()
                    .chain(names(&[
                        listed(WalFileName::Segment(name(1, 3))),
                        listed(WalFileName::Segment(name(2, 3))),
                        listed(WalFileName::Segment(name(1, 4))),
                        listed(WalFileName::Segment(name(2, 4))),
                    ]))
                    .collect(),
            },
            Case {
                name: "the newest timeline, unreachable and newer than every backup, stays whole (a take-over awaiting its first backup)",
                backups: vec![backup(0, 1, 2, 1), backup(24, 1, 5, 25)],
                incomplete: vec![],
                // Timeline 2 branched at 0/3800000, before the kept backup: a copy restored
                // to an earlier point that took the repository over.
                wal: with(
                    segments(1, 1..=7),
                    with(segments(2, 3..=6), [history_file(2)]),
                ),
                histories: vec![(2, "1\t0/3800000\ttake-over\n")],
                policy: keep(1),
                now: hours(50),
                kept: vec![24],
                incomplete_deleted: vec![],
                wal_deleted: names(&segments(1, 1..=4)),
            },
            Case {
                name: "a timeline without its history file keeps all of its WAL",
                backups: vec![backup(0, 1, 2, 1), backup(24, 1, 5, 25)],
                incomplete: vec![],
                wal: with(segments(1, 1..=7), segments(2, 3..=8)),
                histories: vec![],
                policy: keep(1),
                now: hours(50),
                kept: vec![24],
                incomplete_deleted: vec![],
                wal_deleted: names(&segments(1, 1..=4)),
            },
            Case {
                name: "the window's anchor is a backup the live timeline descends from, not one on an abandoned branch",
                // Backup at 0 h on TLI 1; TLI 2 branched at 0/3800000 and was abandoned, with a
                // backup at 20 h; TLI 3 branched from TLI 1 at 0/7800000 and is live. Window 30 h
                // at 50 h starts at 20 h: the anchor must be the TLI-1 backup.
                backups: vec![
                    backup(0, 1, 2, 1),
                    backup(19, 2, 4, 20),
                    backup(40, 3, 9, 41),
                ],
                incomplete: vec![],
                wal: with(
                    segments(1, 1..=8),
                    with(
                        segments(2, 3..=5),
                        with(segments(3, 7..=10), [history_file(2), history_file(3)]),
                    ),
                ),
                histories: vec![
                    (2, "1\t0/3800000\tclone\n"),
                    (3, "1\t0/7800000\tfailover\n"),
                ],
                policy: window("30h"),
                now: hours(50),
                kept: vec![0, 40],
                incomplete_deleted: vec![],
                // The TLI-1 backup can still recover onto TLI 2, so its WAL stays too.
                wal_deleted: names(&segments(1, 1..=1)),
            },
            Case {
                name: "a folder without manifest younger than a day stays, even before the oldest kept backup",
                backups: vec![backup(0, 1, 2, 1), backup(24, 1, 5, 25)],
                incomplete: vec![id(20)],
                wal: segments(1, 1..=7),
                histories: vec![],
                policy: keep(1),
                now: hours(30),
                kept: vec![24],
                incomplete_deleted: vec![],
                wal_deleted: names(&segments(1, 1..=4)),
            },
            Case {
                name: "interrupted backups go once older than every kept one; newer ones may be running",
                backups: three.clone(),
                incomplete: vec![id(-5), id(10), id(30), id(60)],
                wal: tli1_wal.clone(),
                histories: vec![],
                policy: keep(2),
                now: hours(61),
                kept: vec![24, 48],
                incomplete_deleted: vec![-5, 10],
                wal_deleted: names(&with(segments(1, 1..=2), [backup_file(1, 2)]))
                    .into_iter()
                    .chain(names(&segments(1, 3..=4)))
                    .collect(),
            },
        ]
    }

    #[test]
    fn plans_follow_the_policy_and_the_timelines() {
        for case in cases() {
            let wal: Vec<ListedWal> = case.wal.clone();
            let inputs = RetentionInputs {
                backups: case.backups.clone(),
                incomplete: case.incomplete.clone(),
                damaged: vec![],
                wal,
                timelines: timelines(&case.histories),
                segment_size: WalSegmentSize::DEFAULT,
            };
            let plan = plan_retention(&inputs, &case.policy, case.now)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let kept: Vec<BackupId> = plan.backups_to_keep().map(|b| b.id.clone()).collect();
            let mut expected_kept: Vec<BackupId> = case.kept.iter().map(|h| id(*h)).collect();
            expected_kept.sort_by_key(|id| {
                case.backups
                    .iter()
                    .find(|b| &b.id == id)
                    .map(|b| b.finish_order().0)
            });
            assert_eq!(kept, expected_kept, "{}: kept backups", case.name);
            let incomplete: Vec<BackupId> = plan.incomplete_to_delete().cloned().collect();
            let expected: Vec<BackupId> = case.incomplete_deleted.iter().map(|h| id(*h)).collect();
            assert_eq!(
                incomplete, expected,
                "{}: interrupted backups deleted",
                case.name
            );
            assert_eq!(
                names(plan.wal_to_delete()),
                case.wal_deleted,
                "{}: WAL deleted",
                case.name
            );
            assert_keeps_what_kept_backups_need(&plan, &inputs, case.name);
        }
    }

    /// The safety property itself, checked on every case: nothing on a kept backup's own
    /// timeline from its start segment on is deleted, no history file is deleted, and the
    /// newest backup is kept.
    fn assert_keeps_what_kept_backups_need(
        plan: &RetentionPlan,
        inputs: &RetentionInputs,
        case: &str,
    ) {
        let size = inputs.segment_size;
        for backup in plan.backups_to_keep() {
            let first = backup.start_lsn.segment(size);
            for deleted in plan.wal_to_delete() {
                let segment = deleted.name.segment().unwrap();
                assert!(
                    segment.timeline() != backup.timeline
                        || segment.segment_no(size).unwrap() < first,
                    "{case}: {} is needed by kept backup {}",
                    deleted.name,
                    backup.id
                );
            }
        }
        assert!(
            plan.wal_to_delete()
                .iter()
                .all(|w| !matches!(w.name, WalFileName::History(_)))
        );
        let newest = inputs
            .backups
            .iter()
            .max_by_key(|b| b.finish_order())
            .unwrap();
        assert!(
            plan.backups_to_keep().any(|b| b.id == newest.id),
            "{case}: the newest backup is kept"
        );
        assert_eq!(
            plan.totals.wal_files_deleted + plan.totals.wal_files_kept,
            inputs
                .wal
                .iter()
                .filter(|w| w.name.segment().is_some())
                .count() as u64,
            "{case}: every WAL file is counted once"
        );
    }

    #[test]
    fn reasons_and_timeline_summaries_say_why() {
        let inputs = RetentionInputs {
            backups: vec![backup(0, 1, 2, 1), backup(24, 1, 4, 25)],
            incomplete: vec![],
            damaged: vec![],
            wal: with(segments(1, 1..=6), segments(2, 6..=7)),
            timelines: timelines(&[(2, "1\t0/6800000\tx\n")]),
            segment_size: WalSegmentSize::DEFAULT,
        };
        let policy = RetentionPolicy::new(Some(1), "1h".parse().ok()).unwrap();
        let plan = plan_retention(&inputs, &policy, hours(30)).unwrap();
        assert_eq!(plan.window_start, Some(hours(29)));
        assert_eq!(plan.backups[0].action, Action::Delete);
        assert_eq!(
            plan.backups[0].reasons,
            vec![
                BackupReason::NotAmongNewest { keep: 1 },
                BackupReason::BeforeWindowAnchor
            ]
        );
        assert_eq!(plan.backups[1].action, Action::Keep);
        assert_eq!(
            plan.backups[1].reasons,
            vec![
                BackupReason::Newest,
                BackupReason::AmongNewest { rank: 1, keep: 1 },
                BackupReason::WindowAnchor
            ]
        );
        let tli1 = &plan.timelines[0];
        assert_eq!(
            tli1.status,
            TimelineStatus::Needed {
                keep_from: "000000010000000000000004".into(),
                by: id(24)
            }
        );
        assert_eq!((tli1.deleted_files, tli1.kept_files), (3, 3));
        assert_eq!(
            tli1.first_deleted.as_deref(),
            Some("000000010000000000000001")
        );
        assert_eq!(
            tli1.last_deleted.as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(
            (
                plan.timelines[1].deleted_files,
                plan.timelines[1].kept_files
            ),
            (0, 2)
        );
        assert_eq!(plan.totals.backups_deleted, 1);
        assert_eq!(plan.totals.backup_bytes_deleted, 1000);
        assert_eq!(plan.totals.wal_bytes_deleted, 300);

        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["backups"][0]["action"], "delete");
        assert_eq!(
            json["backups"][0]["reasons"][0]["reason"],
            "not_among_newest"
        );
        assert_eq!(json["backups"][1]["id"], "20261102T000000Z");
        assert_eq!(json["timelines"][0]["status"], "needed");
        assert_eq!(
            json["timelines"][0]["keep_from"],
            "000000010000000000000004"
        );
        assert_eq!(json["totals"]["wal_files_deleted"], 3);
    }

    #[test]
    fn no_complete_backup_means_nothing_is_deleted() {
        let policy = keep(1);
        let empty = RetentionInputs {
            backups: vec![],
            incomplete: vec![],
            damaged: vec![],
            wal: vec![],
            timelines: Timelines::default(),
            segment_size: WalSegmentSize::DEFAULT,
        };
        let plan = plan_retention(&empty, &policy, hours(1)).unwrap();
        assert!(plan.deletes_nothing(), "an empty repository: nothing to do");

        let wal_only = RetentionInputs {
            wal: segments(1, 1..=3),
            ..empty.clone()
        };
        assert!(matches!(
            plan_retention(&wal_only, &policy, hours(1)),
            Err(RetentionError::NoCompleteBackups {
                wal_files: 3,
                incomplete: 0,
                damaged: 0
            })
        ));
        let interrupted_only = RetentionInputs {
            incomplete: vec![id(0)],
            ..empty
        };
        assert!(matches!(
            plan_retention(&interrupted_only, &policy, hours(1)),
            Err(RetentionError::NoCompleteBackups {
                wal_files: 0,
                incomplete: 1,
                damaged: 0
            })
        ));
    }

    #[test]
    fn the_deleted_keys_are_the_listed_ones() {
        let mut odd = listed(WalFileName::Segment(name(1, 1)));
        odd.key = Path::from("wal/0000000100000000/000000010000000000000001.gz");
        let inputs = RetentionInputs {
            backups: vec![backup(0, 1, 2, 1)],
            incomplete: vec![],
            damaged: vec![],
            wal: vec![odd.clone()],
            timelines: Timelines::default(),
            segment_size: WalSegmentSize::DEFAULT,
        };
        let plan = plan_retention(&inputs, &keep(1), hours(2)).unwrap();
        assert_eq!(plan.wal_to_delete(), &[odd]);
    }
}
