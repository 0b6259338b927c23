//! What the repository holds: WAL per timeline (first and last segment, count, stored bytes,
//! gaps), history files, and the most recent archive. Built from one listing of `wal/`;
//! the summary itself is plain data, so it can be printed, serialised and tested.
//!
//! [`Snapshot`] is the one loader of everything the repository holds (identity, backups, the
//! WAL listing, the history files): planning, retention, verification and `info` read it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use serde::Serialize;

use crate::archive::stored::open_history;
use crate::codec::Codec;
use crate::repo::{RepoError, Repository};
use crate::wal::{
    SegmentName, SegmentNo, TimelineHistory, TimelineId, TimelineSpan, WalFileName, WalSegmentSize,
};

/// Everything the repository holds, read once: its identity, its backups (whole, damaged,
/// interrupted), one listing of `wal/`, and every history file, parsed. Planning recovery is
/// a function of a snapshot plus the WAL it decodes; retention plans from one; verification
/// and `info` report on one.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `walarch.json`, if anything was ever archived.
    pub identity: Option<crate::repo::Identity>,
    /// The backups, as [`crate::backup::list_backups`] sorts them.
    pub backups: crate::backup::BackupList,
    /// Every WAL object.
    pub wal: Vec<ListedWal>,
    /// Every history file, parsed and checked.
    pub timelines: Timelines,
}

impl Snapshot {
    /// Reads the snapshot: identity, backups and the WAL listing concurrently, then the
    /// history files the listing names.
    pub async fn load(repo: &Repository) -> Result<Snapshot, crate::backup::RestoreError> {
        let (identity, backups, wal) = futures::join!(
            repo.identity(),
            crate::backup::list_backups(repo),
            list_wal(repo)
        );
        let (identity, backups, wal) = (identity?, backups?, wal?);
        let timelines = Timelines::load(repo, &wal).await?;
        Ok(Snapshot {
            identity,
            backups,
            wal,
            timelines,
        })
    }

    /// Whether the location holds a walarch repository at all: an identity, WAL or backups.
    pub fn is_repository(&self) -> bool {
        self.identity.is_some()
            || !self.wal.is_empty()
            || !self.backups.backups.is_empty()
            || !self.backups.incomplete.is_empty()
            || !self.backups.damaged.is_empty()
    }
}

/// One stored WAL object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedWal {
    /// The WAL file the object holds, from its key.
    pub name: WalFileName,
    /// How the object is encoded, from its key's extension.
    pub codec: Codec,
    /// The object's key, as listed (retention deletes exactly what it saw).
    pub key: Path,
    /// The object's size in the store, in bytes.
    pub size: u64,
    /// When the store last wrote the object.
    pub last_modified: DateTime<Utc>,
    /// The store's entity tag for the object, when it gives one: with the size, what binds a
    /// segment summary to the exact object it was made from.
    pub e_tag: Option<String>,
}

/// The WAL one timeline holds in the repository (only timelines with at least one whole
/// segment are summarised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineWal {
    /// The timeline id.
    pub timeline: u32,
    /// The name of the lowest stored segment.
    pub first: String,
    /// The name of the highest stored segment.
    pub last: String,
    /// Number of distinct whole segments stored.
    pub segments: u64,
    /// Number of `.partial` segments stored.
    pub partial_segments: u64,
    /// Bytes stored for the timeline's segments and `.partial` segments.
    pub stored_bytes: u64,
    /// Missing stretches between `first` and `last`, as (first missing, last missing).
    pub gaps: Vec<(String, String)>,
}

/// What a WAL listing holds, as [`summarize`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalSummary {
    /// Per timeline, in ascending order.
    pub timelines: Vec<TimelineWal>,
    /// The timelines whose history file is stored, ascending.
    pub history_files: Vec<u32>,
    /// Number of backup history files (`.backup`) stored.
    pub backup_history_files: u64,
    /// The name of the most recently written WAL object of any kind; `None` when none is
    /// stored.
    pub last_archived: Option<String>,
    /// When that object was written.
    pub last_archived_at: Option<DateTime<Utc>>,
}

/// Lists every WAL object in the repository.
pub async fn list_wal(repo: &Repository) -> Result<Vec<ListedWal>, RepoError> {
    let objects: Vec<_> = repo
        .store()
        .list(Some(&Path::from("wal")))
        .try_collect()
        .await
        .map_err(|source| repo.store_error("list", &Path::from("wal"), source))?;
    Ok(objects
        .into_iter()
        .filter_map(|meta| {
            let file = meta.location.filename()?;
            let (base, codec) = [Codec::Zstd, Codec::Gzip]
                .iter()
                .find_map(|&codec| {
                    let ext = codec.extension()?;
                    Some((file.strip_suffix(&format!(".{ext}"))?, codec))
                })
                .unwrap_or((file, Codec::None));
            let name = base.parse().ok()?;
            Some(ListedWal {
                name,
                codec,
                key: meta.location.clone(),
                size: meta.size,
                last_modified: meta.last_modified,
                e_tag: meta.e_tag.clone(),
            })
        })
        .collect())
}

/// The timeline history files of a repository, parsed: what recovery follows to reach a
/// timeline. Timeline 1 has no history file; a timeline whose file is missing is unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timelines {
    histories: BTreeMap<TimelineId, TimelineHistory>,
}

impl Timelines {
    /// Timelines from already parsed history files, by the timeline each file is for.
    pub fn new(histories: BTreeMap<TimelineId, TimelineHistory>) -> Self {
        Timelines { histories }
    }

    /// Reads every history file in `listed`. A history file that cannot be parsed is an
    /// error: planning around it could send recovery down the wrong branch.
    pub async fn load(repo: &Repository, listed: &[ListedWal]) -> Result<Self, RepoError> {
        let mut histories = BTreeMap::new();
        for item in listed {
            let WalFileName::History(timeline) = item.name else {
                continue;
            };
            let key = &item.key;
            let Some(content) = repo.get_if_exists(key).await? else {
                continue; // deleted since the listing
            };
            let invalid = |message: String| RepoError::Invalid {
                action: "parse",
                key: key.to_string(),
                location: repo.location().to_string(),
                message,
            };
            let content = match item.codec {
                Codec::None => open_history(&content).map_err(|e| invalid(e.to_string()))?,
                _ => return Err(invalid("history files are stored as plain text".into())),
            };
            let history = TimelineHistory::parse(content)
                .and_then(|h| h.validate_for(timeline).map(|()| h))
                .map_err(|e| invalid(e.to_string()))?;
            histories.insert(timeline, history);
        }
        Ok(Timelines { histories })
    }

    /// The path recovery follows to reach `timeline`, or `None` when that timeline's history
    /// file is not in the repository (timeline 1 needs none).
    pub fn spans(&self, timeline: TimelineId) -> Option<Vec<TimelineSpan>> {
        match self.histories.get(&timeline) {
            Some(history) => Some(history.spans(timeline)),
            None if timeline.get() == 1 => Some(TimelineHistory::default().spans(timeline)),
            None => None,
        }
    }

    /// The newest timeline with a history file (what `recovery_target_timeline = latest`
    /// finds), at least 1.
    pub fn latest(&self) -> TimelineId {
        self.histories
            .keys()
            .next_back()
            .copied()
            .unwrap_or(TimelineId::FIRST)
    }

    /// Timeline 1 and every timeline with a history file, in ascending order.
    pub fn known(&self) -> impl Iterator<Item = TimelineId> + '_ {
        std::iter::once(TimelineId::FIRST)
            .chain(self.histories.keys().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
    }
}

/// The stored segments of a listing by timeline and number: what recovery can read.
#[derive(Debug, Clone)]
pub struct WalIndex {
    size: WalSegmentSize,
    segments: BTreeMap<(TimelineId, SegmentNo), ListedWal>,
}

impl WalIndex {
    /// Indexes the whole segments in `listed` (other files are left out).
    pub fn new(listed: &[ListedWal], size: WalSegmentSize) -> Self {
        let segments = listed
            .iter()
            .filter_map(|item| match item.name {
                WalFileName::Segment(segment) => {
                    let number = segment.segment_no(size).ok()?;
                    Some(((segment.timeline(), number), item.clone()))
                }
                _ => None,
            })
            .collect();
        WalIndex { size, segments }
    }

    /// The segment size the index was built with.
    pub fn segment_size(&self) -> WalSegmentSize {
        self.size
    }

    /// The stored segment `segno` of `timeline`; `None` when it is not stored.
    pub fn get(&self, timeline: TimelineId, segno: SegmentNo) -> Option<&ListedWal> {
        self.segments.get(&(timeline, segno))
    }

    /// Timelines that hold at least one segment.
    pub fn timelines(&self) -> Vec<TimelineId> {
        let mut timelines: Vec<_> = self.segments.keys().map(|(t, _)| *t).collect();
        timelines.dedup();
        timelines
    }

    /// The timeline whose copy of segment `segno` recovery reads when following `path`: the
    /// newest timeline on the path that had begun by that segment (PostgreSQL's
    /// `XLogFileReadAnyTLI`). The segment holding a switch point is read from the new
    /// timeline, which carries the old one's WAL up to the switch.
    pub fn timeline_for(&self, path: &[TimelineSpan], segno: SegmentNo) -> TimelineId {
        path.iter()
            .rev()
            .find(|span| span.begin.segment(self.size) <= segno)
            .map_or(TimelineId::FIRST, |span| span.timeline)
    }

    /// The segment name recovery asks for at `segno` on `path`.
    pub fn name_on_path(&self, path: &[TimelineSpan], segno: SegmentNo) -> SegmentName {
        SegmentName::new(self.timeline_for(path, segno), segno, self.size)
    }

    /// Walks `path` from segment `from` while the segments are stored; returns the last one
    /// present (`None` if `from` itself is missing) and the first missing one.
    pub fn contiguous_from(
        &self,
        path: &[TimelineSpan],
        from: SegmentNo,
    ) -> (Option<SegmentNo>, SegmentName) {
        let mut last = None;
        let mut segno = from;
        loop {
            let timeline = self.timeline_for(path, segno);
            if self.get(timeline, segno).is_none() {
                return (last, SegmentName::new(timeline, segno, self.size));
            }
            last = Some(segno);
            match segno.next() {
                Some(next) => segno = next,
                None => return (last, SegmentName::new(timeline, segno, self.size)),
            }
        }
    }

    /// Whether any segment on `path` after `segno` is stored (WAL beyond a gap).
    pub fn any_after(&self, path: &[TimelineSpan], segno: SegmentNo) -> Option<SegmentName> {
        path.iter().find_map(|span| {
            let end = span.end.map(|end| end.segment(self.size));
            self.segments
                .range((span.timeline, segno)..)
                .filter(|((t, n), _)| *t == span.timeline && *n > segno)
                .find(|((_, n), _)| end.is_none_or(|end| *n <= end))
                .map(|((t, n), _)| SegmentName::new(*t, *n, self.size))
        })
    }
}

/// Summarises a listing (pure: no I/O).
pub fn summarize(listed: &[ListedWal], size: WalSegmentSize) -> WalSummary {
    let mut per_timeline: BTreeMap<u32, (Vec<SegmentNo>, u64, u64)> = BTreeMap::new();
    let mut history_files = Vec::new();
    let mut backup_history_files = 0;
    for item in listed {
        match item.name {
            WalFileName::Segment(segment) => {
                if let Ok(n) = segment.segment_no(size) {
                    let entry = per_timeline.entry(segment.timeline().get()).or_default();
                    entry.0.push(n);
                    entry.2 += item.size;
                }
            }
            WalFileName::Partial(segment) => {
                let entry = per_timeline.entry(segment.timeline().get()).or_default();
                entry.1 += 1;
                entry.2 += item.size;
            }
            WalFileName::History(tli) => history_files.push(tli.get()),
            WalFileName::Backup { .. } => backup_history_files += 1,
        }
    }
    history_files.sort_unstable();
    let timelines = per_timeline
        .into_iter()
        .filter(|(_, (segments, _, _))| !segments.is_empty())
        .map(|(tli, (mut segments, partial_segments, stored_bytes))| {
            segments.sort_unstable();
            segments.dedup();
            let timeline =
                crate::wal::TimelineId::new(tli).expect("listed names have valid timelines");
            let name = |n: u64| SegmentName::new(timeline, SegmentNo::new(n), size).to_string();
            let gaps = segments
                .windows(2)
                .filter(|w| w[1].as_u64() > w[0].as_u64() + 1)
                .map(|w| (name(w[0].as_u64() + 1), name(w[1].as_u64() - 1)))
                .collect();
            TimelineWal {
                timeline: tli,
                first: name(segments[0].as_u64()),
                last: name(segments[segments.len() - 1].as_u64()),
                segments: segments.len() as u64,
                partial_segments,
                stored_bytes,
                gaps,
            }
        })
        .collect();
    let last = listed.iter().max_by_key(|item| item.last_modified);
    WalSummary {
        timelines,
        history_files,
        backup_history_files,
        last_archived: last.map(|item| item.name.to_string()),
        last_archived_at: last.map(|item| item.last_modified),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> Vec<ListedWal> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| ListedWal {
                name: n.parse().unwrap(),
                codec: Codec::Zstd,
                key: Path::from(format!("wal/{n}")),
                size: 100,
                last_modified: DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
                e_tag: None,
            })
            .collect()
    }

    #[test]
    fn reports_ranges_gaps_and_the_latest_file_per_timeline() {
        let size = WalSegmentSize::DEFAULT;
        let summary = summarize(
            &listed(&[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000005",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001.partial",
                "00000002.history",
                "000000020000000100000001",
                "000000010000000000000002.00000028.backup",
            ]),
            size,
        );
        assert_eq!(summary.timelines.len(), 2);
        let tli1 = &summary.timelines[0];
        assert_eq!(
            (tli1.first.as_str(), tli1.last.as_str(), tli1.segments),
            ("000000010000000000000001", "000000010000000100000000", 5)
        );
        assert_eq!(
            tli1.gaps,
            vec![
                (
                    "000000010000000000000003".to_owned(),
                    "000000010000000000000004".to_owned()
                ),
                (
                    "000000010000000000000006".to_owned(),
                    "0000000100000000000000FE".to_owned()
                )
            ]
        );
        assert_eq!(tli1.partial_segments, 1);
        assert_eq!(summary.timelines[1].gaps, vec![]);
        assert_eq!(summary.history_files, vec![2]);
        assert_eq!(summary.backup_history_files, 1);
        assert_eq!(
            summary.last_archived.as_deref(),
            Some("000000010000000000000002.00000028.backup")
        );
    }

    #[test]
    fn the_index_follows_a_timeline_path_like_postgresql() {
        // Timeline 2 branched from 1 inside segment 5 (1 MiB segments); segment 7 of
        // timeline 2 is missing, and 8 is stored beyond the gap.
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let index = WalIndex::new(
            &listed(&[
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000010000000000000006",
                "000000020000000000000005",
                "000000020000000000000006",
                "000000020000000000000008",
            ]),
            size,
        );
        let history = crate::wal::TimelineHistory::parse(b"1\t0/500100\tx\n").unwrap();
        let tli = |n| TimelineId::new(n).unwrap();
        let path = history.spans(tli(2));
        let seg = SegmentNo::new;
        assert_eq!(index.timeline_for(&path, seg(4)), tli(1));
        assert_eq!(
            index.timeline_for(&path, seg(5)),
            tli(2),
            "the switch segment comes from the new timeline"
        );
        let (last, missing) = index.contiguous_from(&path, seg(3));
        assert_eq!(last, Some(seg(6)));
        assert_eq!(missing.to_string(), "000000020000000000000007");
        assert_eq!(
            index.any_after(&path, seg(6)).map(|n| n.to_string()),
            Some("000000020000000000000008".to_owned())
        );
        // Timeline 1 alone runs on through its own segment 6.
        let own = crate::wal::TimelineHistory::default().spans(tli(1));
        assert_eq!(index.contiguous_from(&own, seg(3)).0, Some(seg(6)));
        assert_eq!(index.any_after(&own, seg(6)), None);
        assert_eq!(index.timelines(), vec![tli(1), tli(2)]);
    }

    #[test]
    fn an_empty_repository_summarises_to_nothing() {
        let summary = summarize(&[], WalSegmentSize::DEFAULT);
        assert!(summary.timelines.is_empty() && summary.last_archived.is_none());
    }
}
