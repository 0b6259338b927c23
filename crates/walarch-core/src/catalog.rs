//! What the repository holds: WAL per timeline (first and last segment, count, stored bytes,
//! gaps), history files, and the most recent archive. Built from one listing of `wal/`;
//! the summary itself is plain data, so it can be printed, serialised and tested.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use serde::Serialize;

use crate::codec::Codec;
use crate::repo::{RepoError, Repository};
use crate::store::keys;
use crate::wal::{
    SegmentName, SegmentNo, TimelineHistory, TimelineId, TimelineSpan, WalFileName, WalSegmentSize,
};

/// One stored WAL object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedWal {
    pub name: WalFileName,
    /// The object's key, as listed (retention deletes exactly what it saw).
    pub key: Path,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineWal {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    pub partial_segments: u64,
    pub stored_bytes: u64,
    /// Missing stretches between `first` and `last`, as (first missing, last missing).
    pub gaps: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalSummary {
    pub timelines: Vec<TimelineWal>,
    pub history_files: Vec<u32>,
    pub backup_history_files: u64,
    pub last_archived: Option<String>,
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
            let base = ["zst", "gz"]
                .iter()
                .find_map(|ext| file.strip_suffix(&format!(".{ext}")))
                .unwrap_or(file);
            let name = base.parse().ok()?;
            Some(ListedWal {
                name,
                key: meta.location.clone(),
                size: meta.size,
                last_modified: meta.last_modified,
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
            let key = keys::wal_file(&item.name, Codec::None);
            let Some(content) = repo.get_if_exists(&key).await? else {
                continue; // deleted since the listing
            };
            let history = TimelineHistory::parse(&content)
                .and_then(|h| h.validate_for(timeline).map(|()| h))
                .map_err(|e| RepoError::Store {
                    action: "parse",
                    key: key.to_string(),
                    location: repo.location().to_string(),
                    message: e.to_string(),
                })?;
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

    pub fn known(&self) -> impl Iterator<Item = TimelineId> + '_ {
        std::iter::once(TimelineId::FIRST)
            .chain(self.histories.keys().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
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
                key: Path::from(format!("wal/{n}")),
                size: 100,
                last_modified: DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
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
    fn an_empty_repository_summarises_to_nothing() {
        let summary = summarize(&[], WalSegmentSize::DEFAULT);
        assert!(summary.timelines.is_empty() && summary.last_archived.is_none());
    }
}
