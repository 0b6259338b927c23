//! Reading archived WAL the way recovery will: segment after segment along a timeline path,
//! downloaded a few ahead, decompressed and decoded in order.

use futures::{StreamExt, TryStreamExt};

use crate::catalog::WalIndex;
use crate::repo::Repository;
use crate::wal::{SegmentName, SegmentNo, SegmentRecords, TimelineSpan, WalDecoder};

use super::PlanError;

/// Segments downloaded ahead of the decoder.
const READ_AHEAD: usize = 2;

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

/// Decodes segments `from..=to` (or until the visitor stops, a segment is missing, or the
/// WAL ends) along `path`, calling `visit` with each segment's records in order.
pub async fn scan_path<T>(
    repo: &Repository,
    index: &WalIndex,
    path: &[TimelineSpan],
    from: SegmentNo,
    to: Option<SegmentNo>,
    mut visit: impl FnMut(&SegmentName, &SegmentRecords) -> Scan<T>,
) -> Result<Result<T, ScanEnd>, PlanError> {
    let size = index.segment_size();
    let numbers = std::iter::successors(Some(from), |n| n.next())
        .take_while(|n| to.is_none_or(|to| *n <= to))
        .map(|segno| index.name_on_path(path, segno));
    let mut reads = futures::stream::iter(numbers)
        .map(|name| async move {
            let Some(listed) = index.get(name.timeline(), name.segment_no(size).expect("in range"))
            else {
                return Ok((name, None));
            };
            let key = listed.key.clone();
            let Some(stored) = repo.get_if_exists(&key).await? else {
                return Ok((name, None)); // deleted since the listing
            };
            let stored = repo.open_wal(&crate::wal::WalFileName::Segment(name), &key, stored)?;
            let codec = listed.codec;
            let bytes =
                tokio::task::spawn_blocking(move || codec.decode(&stored, size.bytes() as usize))
                    .await
                    .expect("decompression does not panic")
                    .map_err(|e| PlanError::Corrupt {
                        key: key.to_string(),
                        reason: e.to_string(),
                    })?;
            Ok::<_, PlanError>((name, Some(bytes)))
        })
        .buffered(READ_AHEAD);
    let mut decoder = WalDecoder::new();
    while let Some((name, bytes)) = reads.try_next().await? {
        let Some(bytes) = bytes else {
            return Ok(Err(ScanEnd::Missing(name)));
        };
        let records = decoder
            .decode_segment(&bytes)
            .map_err(|e| PlanError::Corrupt {
                key: name.to_string(),
                reason: e.to_string(),
            })?;
        if let Scan::Stop(found) = visit(&name, &records) {
            return Ok(Ok(found));
        }
        if let crate::wal::DecodeEnd::Invalid { at, reason } = &records.end {
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
