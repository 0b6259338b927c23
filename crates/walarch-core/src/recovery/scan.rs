//! Reading archived WAL the way recovery will: segment after segment along a timeline path,
//! each from its segment summary when a usable one is stored (see [`super::summary`]), else
//! downloaded (a few ahead while decoding), decompressed and decoded in order — and then
//! summarized, so the next scan need not download it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::catalog::{ListedWal, WalIndex};
use crate::repo::Repository;
use crate::wal::{
    DecodeEnd, Lsn, SegmentName, SegmentNo, TimelineSpan, WalDecoder, WalFileName, WalSegmentSize,
};

use super::PlanError;
use super::summary::{self, ObjectIdentity, ScanContext, SegmentSummary, UsableSummary};

/// Segments looked up (summaries) or downloaded (WAL, while decoding) ahead of the decoder.
const READ_AHEAD: usize = 3;

/// What the visitor of [`scan_path`] wants next.
pub enum Scan<T> {
    Continue,
    Stop(T),
}

/// Why a scan ended without the visitor stopping it.
#[derive(Debug)]
pub enum ScanEnd {
    /// The next segment on the path is not stored.
    Missing(SegmentName),
    /// The WAL stops being valid inside `segment` (`reason`).
    Invalid {
        segment: SegmentName,
        reason: String,
    },
}

/// What reading the WAL for a plan cost: how many segments were decoded from downloaded WAL
/// and how many were read from segment summaries instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WalReading {
    /// Segments downloaded and decoded (including those decoded again only to carry a record
    /// into the next segment).
    pub wal_segments_decoded: u64,
    /// Segments read from their stored summaries, without downloading them.
    pub wal_segments_from_summaries: u64,
    /// Bytes of WAL objects downloaded (as stored: compressed, and sealed if encrypted).
    pub wal_bytes_downloaded: u64,
    /// Segment summaries stored for the next plan.
    pub summaries_written: u64,
    /// Bytes of segment summaries read (compressed), usable or not.
    pub summary_bytes_read: u64,
}

/// Counts what scans read; shared by the scans of one plan.
#[derive(Debug, Default)]
pub(crate) struct ReadCounters {
    decoded: AtomicU64,
    from_summaries: AtomicU64,
    bytes_downloaded: AtomicU64,
    summaries_written: AtomicU64,
    summary_bytes_read: AtomicU64,
    /// Set once a summary write failed: a store that refuses one (read-only credentials)
    /// refuses the rest, and each would cost a round trip and a warning.
    writes_failed: AtomicBool,
}

impl ReadCounters {
    pub fn reading(&self) -> WalReading {
        WalReading {
            wal_segments_decoded: self.decoded.load(Ordering::Relaxed),
            wal_segments_from_summaries: self.from_summaries.load(Ordering::Relaxed),
            wal_bytes_downloaded: self.bytes_downloaded.load(Ordering::Relaxed),
            summaries_written: self.summaries_written.load(Ordering::Relaxed),
            summary_bytes_read: self.summary_bytes_read.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One segment on the path, as fetched ahead of the decoder.
enum Fetched {
    /// The listing holds no such segment.
    Unlisted,
    /// The store no longer has it (deleted since the listing).
    Gone,
    /// A summary that matches the listed object.
    Summary(Box<UsableSummary>),
    /// The segment's content, decompressed.
    Wal(Vec<u8>),
    /// No usable summary, and not downloaded ahead: the decoder downloads it when it gets there.
    Later,
}

/// Decodes segments `from..=to` (or until the visitor stops, a segment is missing, or the
/// WAL ends) along `path`, calling `visit` with each segment's records in order.
///
/// Decoder continuity: records cross segment boundaries, and the decoder carries a record in
/// progress and the back link the next record must name from one segment into the next. A
/// summary records the state its segment was decoded in and the state it leaves, and is used
/// only when the first equals the state the scan arrives with. When a segment must be decoded
/// after one read from its summary, the decoder is rebuilt from that state: with no record in
/// progress the state is complete (two positions); otherwise the segments holding the record's
/// bytes so far (usually just the previous one) are downloaded and decoded again, and the back
/// link is set from the state (a decode begun mid-record cannot know it). That is simpler than
/// storing the record's bytes, which would put table content into summaries.
pub async fn scan_path<T>(
    repo: &Repository,
    index: &WalIndex,
    path: &[TimelineSpan],
    from: SegmentNo,
    to: Option<SegmentNo>,
    counters: &ReadCounters,
    mut visit: impl FnMut(&SegmentName, &SegmentSummary) -> Scan<T>,
) -> Result<Result<T, ScanEnd>, PlanError> {
    let size = index.segment_size();
    // WAL is downloaded ahead only while the scan is decoding: after a segment read from its
    // summary, the next segment without one is downloaded when the decoder gets to it, so a
    // scan that stops inside summarized WAL downloads nothing beyond it.
    let download_ahead = AtomicBool::new(false);
    let download_ahead = &download_ahead;
    let numbers = std::iter::successors(Some(from), |n| n.next())
        .take_while(|n| to.is_none_or(|to| *n <= to))
        .map(|segno| index.name_on_path(path, segno));
    let mut fetched = futures::stream::iter(numbers.enumerate())
        .map(|(i, name)| async move {
            let segno = name.segment_no(size).expect("in range");
            let Some(listed) = index.get(name.timeline(), segno) else {
                return Ok((name, None, Fetched::Unlisted));
            };
            let object = ObjectIdentity::of(listed);
            let predecessor = predecessor_on_path(index, path, segno, i == 0);
            let (usable, read) = summary::load(repo, &name, &object, predecessor.as_ref()).await;
            ReadCounters::add(&counters.summary_bytes_read, read);
            if let Some(usable) = usable {
                return Ok((name, Some(listed), Fetched::Summary(Box::new(usable))));
            }
            if !download_ahead.load(Ordering::Relaxed) {
                return Ok((name, Some(listed), Fetched::Later));
            }
            let fetched = match download(repo, &name, listed, size, counters).await? {
                Some(bytes) => Fetched::Wal(bytes),
                None => Fetched::Gone,
            };
            Ok::<_, PlanError>((name, Some(listed), fetched))
        })
        .buffered(READ_AHEAD);

    // The state the next segment is entered with, and the decoder in that state when the
    // previous segment was decoded (rather than read from its summary).
    let mut context = ScanContext::default();
    let mut decoder = Some(WalDecoder::new());
    // The segments holding the bytes of the record in progress (as `context.carry_sources`).
    let mut carry_listed: Vec<(SegmentName, &ListedWal)> = Vec::new();
    // The object of the segment before, on the path.
    let mut previous: Option<ObjectIdentity> = None;
    while let Some((name, listed, fetched)) = fetched.try_next().await? {
        let Some(listed) = listed else {
            return Ok(Err(ScanEnd::Missing(name)));
        };
        let object = ObjectIdentity::of(listed);
        let (records, exit) = match fetched {
            Fetched::Unlisted | Fetched::Gone => return Ok(Err(ScanEnd::Missing(name))),
            Fetched::Summary(usable) if usable.entering == context => {
                ReadCounters::add(&counters.from_summaries, 1);
                download_ahead.store(false, Ordering::Relaxed);
                decoder = None;
                let UsableSummary { summary, exit, .. } = *usable;
                (summary, exit)
            }
            fetched => {
                download_ahead.store(true, Ordering::Relaxed);
                let bytes = match fetched {
                    Fetched::Wal(bytes) => bytes,
                    _ => match download(repo, &name, listed, size, counters).await? {
                        Some(bytes) => bytes,
                        None => return Ok(Err(ScanEnd::Missing(name))),
                    },
                };
                let mut live = match decoder.take() {
                    Some(live) => live,
                    None => match rebuild(repo, &context, &carry_listed, size, counters).await? {
                        Ok(live) => live,
                        Err(gone) => return Ok(Err(ScanEnd::Missing(gone))),
                    },
                };
                let decoded = live
                    .decode_segment(&bytes)
                    .map_err(|e| PlanError::Corrupt {
                        key: name.to_string(),
                        reason: e.to_string(),
                    })?;
                ReadCounters::add(&counters.decoded, 1);
                let exit = context.after(&object, live.state(), decoded.segment_start);
                let records = SegmentSummary::of(&decoded);
                if repo.writes_summaries() && !counters.writes_failed.load(Ordering::Relaxed) {
                    let encoded = summary::encode(&name, &object, &context, &exit, &records);
                    let predecessor = previous
                        .as_ref()
                        .filter(|_| context != ScanContext::default());
                    match summary::store(repo, &name, &object, predecessor, encoded).await {
                        summary::Stored::Written => {
                            ReadCounters::add(&counters.summaries_written, 1);
                        }
                        summary::Stored::AlreadyThere => {}
                        summary::Stored::Failed => {
                            counters.writes_failed.store(true, Ordering::Relaxed);
                        }
                    }
                }
                decoder = Some(live);
                (records, exit)
            }
        };
        // Which segments the record in progress (if any) was read from, for a rebuild.
        match &exit.decoder.carry {
            None => carry_listed.clear(),
            Some(carry) if Lsn::new(carry.lsn).segment(size) == listed_segno(&name, size) => {
                carry_listed = vec![(name, listed)];
            }
            Some(_) => carry_listed.push((name, listed)),
        }
        context = exit;
        previous = Some(object);
        if let Scan::Stop(found) = visit(&name, &records) {
            return Ok(Ok(found));
        }
        if let DecodeEnd::Invalid { at, reason } = &records.end {
            return Ok(Err(ScanEnd::Invalid {
                segment: name,
                reason: format!("{reason} (at {at})"),
            }));
        }
    }
    Ok(Err(ScanEnd::Missing(index.name_on_path(
        path,
        to.and_then(|t| t.next()).unwrap_or(from),
    ))))
}

/// The object of the segment before `segno` on `path`, for a segment not first in its scan.
fn predecessor_on_path(
    index: &WalIndex,
    path: &[TimelineSpan],
    segno: SegmentNo,
    first: bool,
) -> Option<ObjectIdentity> {
    if first {
        return None;
    }
    let before = SegmentNo::new(segno.as_u64().checked_sub(1)?);
    let name = index.name_on_path(path, before);
    let size = index.segment_size();
    index
        .get(name.timeline(), name.segment_no(size).ok()?)
        .map(ObjectIdentity::of)
}

fn listed_segno(name: &SegmentName, size: WalSegmentSize) -> SegmentNo {
    name.segment_no(size)
        .expect("names on the path are in range")
}

/// Downloads, opens (if sealed) and decompresses one listed segment; `None` when the store
/// says it no longer exists.
async fn download(
    repo: &Repository,
    name: &SegmentName,
    listed: &ListedWal,
    size: WalSegmentSize,
    counters: &ReadCounters,
) -> Result<Option<Vec<u8>>, PlanError> {
    let key = listed.key.clone();
    let Some(stored) = repo.get_if_exists(&key).await? else {
        return Ok(None); // deleted since the listing
    };
    ReadCounters::add(&counters.bytes_downloaded, stored.len() as u64);
    let stored = repo.open_wal(&WalFileName::Segment(*name), &key, stored)?;
    let codec = listed.codec;
    let bytes = tokio::task::spawn_blocking(move || codec.decode(&stored, size.bytes() as usize))
        .await
        .expect("decompression does not panic")
        .map_err(|e| PlanError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    Ok(Some(bytes))
}

/// A decoder in `context`, for decoding the segment after one read from its summary. `Err`
/// names a segment holding part of a carried record that the store no longer has.
async fn rebuild(
    repo: &Repository,
    context: &ScanContext,
    carry_listed: &[(SegmentName, &ListedWal)],
    size: WalSegmentSize,
    counters: &ReadCounters,
) -> Result<Result<WalDecoder, SegmentName>, PlanError> {
    if context.decoder.carry.is_none() {
        return Ok(Ok(WalDecoder::resume(&context.decoder)));
    }
    // Decode again the segments the record in progress began in and continued through.
    let mut decoder = WalDecoder::new();
    for (name, listed) in carry_listed {
        let Some(bytes) = download(repo, name, listed, size, counters).await? else {
            return Ok(Err(*name));
        };
        decoder
            .decode_segment(&bytes)
            .map_err(|e| PlanError::Corrupt {
                key: name.to_string(),
                reason: e.to_string(),
            })?;
        ReadCounters::add(&counters.decoded, 1);
    }
    let state = decoder.state();
    if state.carry == context.decoder.carry && state.next_segment == context.decoder.next_segment {
        // Decoding began inside the WAL, so the decoder may not know the record before the
        // carried one; the summary's state does.
        decoder.set_last_record(context.decoder.last_record);
    } else {
        // The summaries disagree with the WAL they were made from: go on with what the WAL
        // says (the back link of the carried record is then not checked).
        tracing::warn!(
            expected = ?context.decoder,
            found = ?state,
            "segment summaries disagree with the WAL; decoding on from the WAL"
        );
    }
    Ok(Ok(decoder))
}
