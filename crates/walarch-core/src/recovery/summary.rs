//! Segment summaries: what planning reads from one WAL segment, kept in the repository so that
//! the next plan over the same WAL does not download and decode it again.
//!
//! A summary holds exactly what the planner and the recoverable windows consume from a decoded
//! segment — every record's start and end, the commit/abort times and transaction ids, restore
//! point names, WAL switches, and where and why valid WAL ends — plus the decoder state it was
//! decoded in and leaves behind. It holds no table content, so it is stored unencrypted even in
//! an encrypted repository, like manifests and history files.
//!
//! A summary is a cache, never a source of truth. It is used only when
//! - it is found under the key of the segment as the listing reports it now
//!   (`store::keys::segment_summary`: the object's size and entity tag, and for a segment
//!   decoded after another, that one's too),
//! - it parses, its zstd frame's content checksum holds, and its format is this one,
//! - the WAL object it was made from (key, size, entity tag or modification time) is the one
//!   the listing reports now, and
//! - it was decoded with the same decoder state the scan arrives with (what a record crossing
//!   into the segment carries, and the back link the next record must name).
//!
//! Otherwise it is ignored and the segment is downloaded and decoded as if there were no
//! summary. Whether a segment is present comes from the listing alone, never from a summary.
//! Summaries are written create-only (`Repository::put_new`), never rewritten (a damaged one
//! stays, ignored, until retention deletes it with its segment); a failed write never fails
//! the plan. Recovery itself never uses them: PostgreSQL reads the real segments.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::ListedWal;
use crate::codec::{Codec, Compression};
use crate::repo::{PutOutcome, Repository};
use crate::store::keys;
use crate::wal::{
    DecodeEnd, DecoderState, Lsn, RecordEvent, SegmentName, SegmentRecords, WalFileName,
};

/// The format string every summary carries; a summary of any other format is ignored.
const FORMAT: &str = "walarch-segment-summary/1";

/// A summary larger than this, decompressed, is refused (a segment of 1 GiB holding records of
/// 24 bytes would still fit).
const MAX_SUMMARY_BYTES: usize = 512 << 20;

/// One record, as planning reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SummaryRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where it ends (before alignment).
    pub end: Lsn,
    /// What the record means for recovery targets.
    pub event: Option<RecordEvent>,
}

/// What planning reads from one segment: its records in order and where decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    /// The records that complete in the segment, in WAL order.
    pub records: Vec<SummaryRecord>,
    /// Where and why decoding of the segment stopped.
    pub end: DecodeEnd,
}

impl SegmentSummary {
    /// The planner's view of decoded records.
    pub fn of(decoded: &SegmentRecords) -> Self {
        SegmentSummary {
            records: decoded
                .records
                .iter()
                .map(|r| SummaryRecord {
                    lsn: r.lsn,
                    end: r.end,
                    event: r.event.clone(),
                })
                .collect(),
            end: decoded.end.clone(),
        }
    }
}

/// The exact stored WAL object a summary was made from, as the listing reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectIdentity {
    key: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e_tag: Option<String>,
    /// Only when the store gives no entity tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<DateTime<Utc>>,
}

impl ObjectIdentity {
    pub fn of(listed: &ListedWal) -> Self {
        ObjectIdentity {
            key: listed.key.to_string(),
            size: listed.size,
            e_tag: listed.e_tag.clone(),
            last_modified: listed.e_tag.is_none().then_some(listed.last_modified),
        }
    }

    fn hash_into(&self, hasher: &mut Sha256) {
        hasher.update(self.size.to_le_bytes());
        match (&self.e_tag, &self.last_modified) {
            (Some(tag), _) => hasher.update(format!("etag:{tag};")),
            (None, Some(time)) => hasher.update(format!("modified:{};", time.to_rfc3339())),
            (None, None) => hasher.update(";"),
        }
    }

    /// A short hash of the object's size and entity tag (or time), and of the predecessor's
    /// when the segment is decoded after it, for the summary's key: a segment (or the segment
    /// before it) stored anew gets a new key, so create-only writes never leave a segment
    /// without a usable summary.
    fn hash(&self, predecessor: Option<&ObjectIdentity>) -> String {
        let mut hasher = Sha256::new();
        self.hash_into(&mut hasher);
        if let Some(predecessor) = predecessor {
            predecessor.hash_into(&mut hasher);
        }
        hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The decoder state a segment is decoded in (or leaves behind), and the objects the bytes of
/// a record in progress came from: together with the segment's own object, they determine
/// the decoding exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScanContext {
    pub decoder: DecoderState,
    /// The objects holding the carried record's bytes so far, oldest first (empty without one).
    pub carry_sources: Vec<ObjectIdentity>,
}

impl ScanContext {
    /// The context after a segment decoded from `object` in context `self`, leaving `decoder`.
    pub fn after(&self, object: &ObjectIdentity, decoder: DecoderState, start: Lsn) -> Self {
        let carry_sources = match &decoder.carry {
            None => Vec::new(),
            Some(carry) if carry.lsn >= start.as_u64() => vec![object.clone()],
            Some(_) => {
                let mut sources = self.carry_sources.clone();
                sources.push(object.clone());
                sources
            }
        };
        ScanContext {
            decoder,
            carry_sources,
        }
    }

    /// Whether this is the context a scan starts in (nothing carried over).
    fn is_first(&self) -> bool {
        *self == ScanContext::default()
    }
}

/// The key of the summary of `segment` (stored as `object`) decoded first in a scan
/// (`predecessor` `None`) or after the object `predecessor` of the segment before it.
pub(crate) fn key_for(
    segment: &SegmentName,
    object: &ObjectIdentity,
    predecessor: Option<&ObjectIdentity>,
) -> object_store::path::Path {
    let context = if predecessor.is_none() {
        "first"
    } else {
        "next"
    };
    keys::segment_summary(segment, context, &object.hash(predecessor))
}

/// A summary as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSummary {
    format: String,
    segment: String,
    object: ObjectIdentity,
    entering: ScanContext,
    exit: ScanContext,
    /// The first record's start (0 without records).
    first_lsn: u64,
    /// Per record, two numbers: its distance from the previous record's end (the first: from
    /// `first_lsn`) and its length.
    bounds: Vec<u64>,
    /// The records that mean something for recovery targets, by index into the records.
    events: Vec<(u32, StoredEvent)>,
    end: StoredEnd,
}

#[derive(Debug, Serialize, Deserialize)]
enum StoredEvent {
    /// xid, time (microseconds since the Unix epoch)
    #[serde(rename = "c")]
    Commit(u32, i64),
    #[serde(rename = "a")]
    Abort(u32, i64),
    #[serde(rename = "r")]
    RestorePoint(String, i64),
    #[serde(rename = "s")]
    Switch,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredEnd {
    SegmentEnd,
    Switch,
    Invalid { at: u64, reason: String },
}

/// A summary read back and checked against what the listing and the scan expect.
pub(crate) struct UsableSummary {
    pub summary: SegmentSummary,
    /// The state the decoder would be in after the segment.
    pub exit: ScanContext,
    /// The state it was decoded in.
    pub entering: ScanContext,
}

/// Serialises and compresses the summary of `segment` (stored as `object`), decoded in
/// `entering` and leaving `exit`.
pub(crate) fn encode(
    segment: &SegmentName,
    object: &ObjectIdentity,
    entering: &ScanContext,
    exit: &ScanContext,
    summary: &SegmentSummary,
) -> Vec<u8> {
    let first_lsn = summary.records.first().map_or(0, |r| r.lsn.as_u64());
    let mut bounds = Vec::with_capacity(summary.records.len() * 2);
    let mut events = Vec::new();
    let mut previous_end = first_lsn;
    for (i, record) in summary.records.iter().enumerate() {
        bounds.push(record.lsn.as_u64() - previous_end);
        bounds.push(record.end.as_u64() - record.lsn.as_u64());
        previous_end = record.end.as_u64();
        let event = match &record.event {
            None => continue,
            Some(RecordEvent::Commit { xid, time }) => {
                StoredEvent::Commit(*xid, time.timestamp_micros())
            }
            Some(RecordEvent::Abort { xid, time }) => {
                StoredEvent::Abort(*xid, time.timestamp_micros())
            }
            Some(RecordEvent::RestorePoint { name, time }) => {
                StoredEvent::RestorePoint(name.clone(), time.timestamp_micros())
            }
            Some(RecordEvent::Switch) => StoredEvent::Switch,
        };
        events.push((i as u32, event));
    }
    let stored = StoredSummary {
        format: FORMAT.into(),
        segment: segment.to_string(),
        object: object.clone(),
        entering: entering.clone(),
        exit: exit.clone(),
        first_lsn,
        bounds,
        events,
        end: match &summary.end {
            DecodeEnd::SegmentEnd => StoredEnd::SegmentEnd,
            DecodeEnd::Switch => StoredEnd::Switch,
            DecodeEnd::Invalid { at, reason } => StoredEnd::Invalid {
                at: at.as_u64(),
                reason: reason.clone(),
            },
        },
    };
    let json = serde_json::to_vec(&stored).expect("a summary serialises");
    Compression::new(Codec::Zstd, None)
        .and_then(|c| c.encode(&json))
        .expect("zstd compresses a buffer")
}

/// Reads back a stored summary; `Err` says why it cannot be used.
pub(crate) fn decode(
    stored: &[u8],
    segment: &SegmentName,
    object: &ObjectIdentity,
) -> Result<UsableSummary, String> {
    crate::archive::stored::check_checksummed(&WalFileName::Segment(*segment), Codec::Zstd, stored)
        .map_err(|e| e.to_string())?;
    let json = Codec::Zstd
        .decode(stored, MAX_SUMMARY_BYTES)
        .map_err(|e| e.to_string())?;
    let stored: StoredSummary = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    if stored.format != FORMAT {
        return Err(format!("format {:?}, not {FORMAT:?}", stored.format));
    }
    if stored.segment != segment.to_string() {
        return Err(format!("it summarizes {}", stored.segment));
    }
    if stored.object != *object {
        return Err(format!(
            "it was made from another object ({:?}, now {:?})",
            stored.object, object
        ));
    }
    if !stored.bounds.len().is_multiple_of(2) {
        return Err("odd number of record bounds".into());
    }
    let overflow = || "record bounds overflow".to_string();
    let mut records = Vec::with_capacity(stored.bounds.len() / 2);
    let mut previous_end = stored.first_lsn;
    for pair in stored.bounds.chunks_exact(2) {
        let lsn = previous_end.checked_add(pair[0]).ok_or_else(overflow)?;
        let end = lsn.checked_add(pair[1]).ok_or_else(overflow)?;
        records.push(SummaryRecord {
            lsn: Lsn::new(lsn),
            end: Lsn::new(end),
            event: None,
        });
        previous_end = end;
    }
    let time = |micros: i64| {
        DateTime::from_timestamp_micros(micros).ok_or_else(|| format!("time {micros} out of range"))
    };
    for (index, event) in stored.events {
        let record = records
            .get_mut(index as usize)
            .ok_or_else(|| format!("event for record {index}, which does not exist"))?;
        record.event = Some(match event {
            StoredEvent::Commit(xid, micros) => RecordEvent::Commit {
                xid,
                time: time(micros)?,
            },
            StoredEvent::Abort(xid, micros) => RecordEvent::Abort {
                xid,
                time: time(micros)?,
            },
            StoredEvent::RestorePoint(name, micros) => RecordEvent::RestorePoint {
                name,
                time: time(micros)?,
            },
            StoredEvent::Switch => RecordEvent::Switch,
        });
    }
    Ok(UsableSummary {
        summary: SegmentSummary {
            records,
            end: match stored.end {
                StoredEnd::SegmentEnd => DecodeEnd::SegmentEnd,
                StoredEnd::Switch => DecodeEnd::Switch,
                StoredEnd::Invalid { at, reason } => DecodeEnd::Invalid {
                    at: Lsn::new(at),
                    reason,
                },
            },
        },
        exit: stored.exit,
        entering: stored.entering,
    })
}

/// Looks up the summary of `segment` (stored as `object`) for a scan starting at it
/// (`predecessor` `None`) or arriving from the object `predecessor`; `None` when there is none
/// or it cannot be used (the reason is logged), and the bytes read. Never an error: a summary
/// is only a shortcut.
pub(crate) async fn load(
    repo: &Repository,
    segment: &SegmentName,
    object: &ObjectIdentity,
    predecessor: Option<&ObjectIdentity>,
) -> (Option<UsableSummary>, u64) {
    let first = predecessor.is_none();
    let key = key_for(segment, object, predecessor);
    let stored = match repo.get_if_exists(&key).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return (None, 0),
        Err(e) => {
            tracing::debug!(%key, error = %e, "segment summary not readable; decoding the segment");
            return (None, 0);
        }
    };
    let read = stored.len() as u64;
    let usable = match decode(&stored, segment, object) {
        Ok(usable) if usable.entering.is_first() == first => Some(usable),
        Ok(_) => {
            tracing::warn!(%key, "segment summary made in another context; ignored");
            None
        }
        Err(reason) => {
            tracing::warn!(%key, %reason, "segment summary ignored; decoding the segment");
            None
        }
    };
    (usable, read)
}

/// How storing a summary went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    Written,
    /// A summary was already stored under the key; it is kept as it is.
    AlreadyThere,
    /// The store refused or failed (a read-only credential, an outage).
    Failed,
}

/// Stores a summary create-only. A failure (a summary already there, a store error, a
/// read-only store) is logged and otherwise ignored: planning goes on.
pub(crate) async fn store(
    repo: &Repository,
    segment: &SegmentName,
    object: &ObjectIdentity,
    predecessor: Option<&ObjectIdentity>,
    data: Vec<u8>,
) -> Stored {
    let key = key_for(segment, object, predecessor);
    match repo.put_new(&key, Bytes::from(data)).await {
        Ok(PutOutcome::Created) => Stored::Written,
        Ok(PutOutcome::AlreadyExists) => {
            tracing::debug!(%key, "a segment summary is already stored; kept as it is");
            Stored::AlreadyThere
        }
        Err(e) => {
            tracing::warn!(%key, error = %e, "could not store a segment summary; planning goes on without storing more");
            Stored::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{SegmentNo, TimelineId, WalSegmentSize};

    fn segment() -> SegmentName {
        SegmentName::new(
            TimelineId::FIRST,
            SegmentNo::new(3),
            WalSegmentSize::DEFAULT,
        )
    }

    fn object() -> ObjectIdentity {
        ObjectIdentity {
            key: "wal/0000000100000000/000000010000000000000003.zst".into(),
            size: 100,
            e_tag: Some("\"abc\"".into()),
            last_modified: None,
        }
    }

    fn summary() -> SegmentSummary {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 123_456_000).unwrap();
        SegmentSummary {
            records: vec![
                SummaryRecord {
                    lsn: Lsn::new(0x2FF_FFF0),
                    end: Lsn::new(0x300_0050),
                    event: None,
                },
                SummaryRecord {
                    lsn: Lsn::new(0x300_0050),
                    end: Lsn::new(0x300_0072),
                    event: Some(RecordEvent::Commit {
                        xid: 7,
                        time: at(1),
                    }),
                },
                SummaryRecord {
                    lsn: Lsn::new(0x300_0078),
                    end: Lsn::new(0x300_00D0),
                    event: Some(RecordEvent::RestorePoint {
                        name: "p".into(),
                        time: at(2),
                    }),
                },
                SummaryRecord {
                    lsn: Lsn::new(0x300_00D0),
                    end: Lsn::new(0x300_00F0),
                    event: Some(RecordEvent::Abort {
                        xid: 8,
                        time: at(3),
                    }),
                },
                SummaryRecord {
                    lsn: Lsn::new(0x300_00F0),
                    end: Lsn::new(0x300_0108),
                    event: Some(RecordEvent::Switch),
                },
            ],
            end: DecodeEnd::Switch,
        }
    }

    /// The stored JSON of [`summary`], for tampering with.
    fn stored_json() -> serde_json::Value {
        let encoded = encode(
            &segment(),
            &object(),
            &ScanContext::default(),
            &ScanContext::default(),
            &summary(),
        );
        serde_json::from_slice(&Codec::Zstd.decode(&encoded, 1 << 20).unwrap()).unwrap()
    }

    fn decode_json(value: &serde_json::Value) -> Result<UsableSummary, String> {
        let bytes = Compression::new(Codec::Zstd, None)
            .unwrap()
            .encode(&serde_json::to_vec(value).unwrap())
            .unwrap();
        decode(&bytes, &segment(), &object())
    }

    #[test]
    fn round_trips_every_event_and_bound_exactly() {
        let back = decode_json(&stored_json()).unwrap();
        assert_eq!(back.summary, summary());
        assert_eq!(back.entering, ScanContext::default());
    }

    #[test]
    fn hostile_summaries_are_refused_never_trusted_and_never_panic() {
        type Tamper = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Tamper)> = vec![
            (
                "odd bounds",
                Box::new(|v| v["bounds"].as_array_mut().unwrap().push(1.into())),
            ),
            (
                "event past the records",
                Box::new(|v| v["events"][0][0] = 99.into()),
            ),
            (
                "overflowing bounds",
                Box::new(|v| v["bounds"][0] = u64::MAX.into()),
            ),
            (
                "time out of range",
                Box::new(|v| v["events"][0][1]["c"][1] = i64::MAX.into()),
            ),
            (
                "another format",
                Box::new(|v| v["format"] = "walarch-segment-summary/0".into()),
            ),
            (
                "another segment",
                Box::new(|v| v["segment"] = "000000010000000000000004".into()),
            ),
            (
                "another object",
                Box::new(|v| v["object"]["size"] = 101.into()),
            ),
            (
                "not an object",
                Box::new(|v| *v = serde_json::json!([1, 2, 3])),
            ),
        ];
        for (what, tamper) in cases {
            let mut value = stored_json();
            tamper(&mut value);
            assert!(decode_json(&value).is_err(), "{what}");
        }
        // Not zstd, zstd without its checksum, cut short.
        assert!(decode(b"{}", &segment(), &object()).is_err());
        let unchecked = zstd::bulk::compress(b"{}", 3).unwrap();
        assert!(decode(&unchecked, &segment(), &object()).is_err());
        let good = encode(
            &segment(),
            &object(),
            &ScanContext::default(),
            &ScanContext::default(),
            &summary(),
        );
        for cut in [0, 4, good.len() / 2, good.len() - 1] {
            assert!(
                decode(&good[..cut], &segment(), &object()).is_err(),
                "cut at {cut}"
            );
        }
    }
}
