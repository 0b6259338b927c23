//! The WAL record decoder against real PostgreSQL 15 WAL (1 MiB segments made by
//! `fixtures/wal/make.sh`), with `pg_waldump`'s reading of the same segments as the answer.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};
use walarch_core::wal::{DecodeEnd, Lsn, RecordEvent, WalDecoder, WalRecord};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal")
}

/// The fixture segments, decompressed, in order.
fn segments() -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<_> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".zst"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "fixture segments missing: {names:?}");
    names
        .into_iter()
        .map(|name| {
            let compressed = std::fs::read(fixture_dir().join(&name)).unwrap();
            let bytes = zstd::decode_all(&compressed[..]).unwrap();
            assert_eq!(bytes.len(), 1 << 20, "{name} is a 1 MiB segment");
            (name, bytes)
        })
        .collect()
}

/// pg_waldump's events: (lsn, event).
fn expected() -> Vec<(Lsn, RecordEvent)> {
    let text = std::fs::read_to_string(fixture_dir().join("expected.txt")).unwrap();
    let time = |s: &str| -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s.trim_end_matches(" UTC"), "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc()
    };
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(4, ' ');
            let lsn: Lsn = fields.next().unwrap().parse().unwrap();
            let header_xid: u32 = fields.next().unwrap().parse().unwrap();
            let kind = fields.next().unwrap();
            let rest = fields.next().unwrap_or("").trim();
            let event = match kind {
                "COMMIT" => RecordEvent::Commit {
                    xid: header_xid,
                    time: time(rest),
                },
                "ABORT" => RecordEvent::Abort {
                    xid: header_xid,
                    time: time(rest),
                },
                "COMMIT_PREPARED" | "ABORT_PREPARED" => {
                    let (xid, when) = rest.split_once(": ").unwrap();
                    let (xid, time) = (xid.parse().unwrap(), time(when));
                    if kind == "COMMIT_PREPARED" {
                        RecordEvent::Commit { xid, time }
                    } else {
                        RecordEvent::Abort { xid, time }
                    }
                }
                "RESTORE_POINT" => RecordEvent::RestorePoint {
                    name: rest.to_owned(),
                    time: DateTime::UNIX_EPOCH, // pg_waldump does not print it
                },
                "SWITCH" => RecordEvent::Switch,
                other => panic!("unexpected kind {other}"),
            };
            (lsn, event)
        })
        .collect()
}

fn events(records: &[WalRecord]) -> Vec<(Lsn, RecordEvent)> {
    records
        .iter()
        .filter_map(|r| r.event.clone().map(|e| (r.lsn, e)))
        .map(|(lsn, event)| match event {
            RecordEvent::RestorePoint { name, .. } => (
                lsn,
                RecordEvent::RestorePoint {
                    name,
                    time: DateTime::UNIX_EPOCH,
                },
            ),
            other => (lsn, other),
        })
        .collect()
}

#[test]
fn finds_every_commit_abort_restore_point_and_switch_pg_waldump_finds() {
    let mut decoder = WalDecoder::new();
    let mut records = Vec::new();
    let segments = segments();
    for (index, (name, bytes)) in segments.iter().enumerate() {
        let decoded = decoder.decode_segment(bytes).unwrap();
        let last = index + 1 == segments.len();
        let expected_end = if last {
            DecodeEnd::Switch
        } else {
            DecodeEnd::SegmentEnd
        };
        assert_eq!(decoded.end, expected_end, "{name}");
        records.extend(decoded.records);
    }
    assert_eq!(events(&records), expected());

    // The fixture must exercise what the decoder claims to handle.
    let crossing_pages = records
        .iter()
        .filter(|r| r.lsn.as_u64() / 8192 != (r.end.as_u64() - 1) / 8192)
        .count();
    let crossing_segments: Vec<_> = records
        .iter()
        .filter(|r| r.lsn.as_u64() >> 20 != (r.end.as_u64() - 1) >> 20)
        .collect();
    assert!(crossing_pages > 100, "{crossing_pages} records cross pages");
    assert!(
        !crossing_segments.is_empty(),
        "some record crosses a segment boundary"
    );
    // Records are contiguous: each starts at the aligned end of the one before (or, after a
    // switch, at the next segment).
    for pair in records.windows(2) {
        let aligned = (pair[0].end.as_u64() + 7) & !7;
        let next_page_start = aligned.div_ceil(8192) * 8192;
        let gap = pair[1].lsn.as_u64() - aligned;
        assert!(
            gap == 0 || pair[1].lsn.as_u64() == next_page_start + header_len(next_page_start),
            "record at {} does not follow {}",
            pair[1].lsn,
            pair[0].lsn
        );
    }
}

fn header_len(page_start: u64) -> u64 {
    if page_start.is_multiple_of(1 << 20) {
        40
    } else {
        24
    }
}

#[test]
fn each_segment_decodes_on_its_own_except_records_begun_before_it() {
    let mut all = Vec::new();
    for (name, bytes) in segments() {
        let decoded = WalDecoder::new().decode_segment(&bytes).unwrap();
        assert!(
            decoded
                .records
                .iter()
                .all(|r| r.lsn >= decoded.segment_start),
            "{name}: a record begun in an earlier segment cannot be completed alone"
        );
        all.extend(decoded.records);
    }
    // Alone, a segment loses only the record that began in the segment before it; the
    // fixture has no commit across a segment boundary, so every event is still found.
    assert_eq!(events(&all), expected());
}

#[test]
fn a_corrupted_record_ends_decoding_with_its_position_and_loses_nothing_before_it() {
    let segments = segments();
    let (_, bytes) = segments
        .iter()
        .find(|(name, _)| name.starts_with("00000001000000000000000F"))
        .unwrap();
    let clean = WalDecoder::new().decode_segment(bytes).unwrap();
    let victim = &clean.records[clean.records.len() / 2];
    let offset = (victim.lsn.as_u64() - clean.segment_start.as_u64()) as usize;
    let mut damaged = bytes.clone();
    damaged[offset + 26] ^= 0xFF; // inside the record, past its header
    let decoded = WalDecoder::new().decode_segment(&damaged).unwrap();
    match &decoded.end {
        DecodeEnd::Invalid { at, reason } => {
            assert_eq!(*at, victim.lsn);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected an invalid end, got {other:?}"),
    }
    assert_eq!(
        decoded.records[..],
        clean.records[..clean.records.len() / 2]
    );
}

#[test]
fn truncated_and_zeroed_segments_end_cleanly() {
    let segments = segments();
    let (_, bytes) = &segments[2];
    let clean = WalDecoder::new().decode_segment(bytes).unwrap();
    let cut = 300_000;
    let truncated = WalDecoder::new().decode_segment(&bytes[..cut]).unwrap();
    assert!(matches!(truncated.end, DecodeEnd::Invalid { .. }));
    let complete_before_cut: Vec<_> = clean
        .records
        .iter()
        .filter(|r| r.end.as_u64() - clean.segment_start.as_u64() <= cut as u64)
        .cloned()
        .collect();
    assert_eq!(truncated.records, complete_before_cut);

    let mut zeroed = bytes.clone();
    zeroed[cut..].fill(0);
    let decoded = WalDecoder::new().decode_segment(&zeroed).unwrap();
    assert!(matches!(decoded.end, DecodeEnd::Invalid { .. }));
    assert!(decoded.records.len() >= complete_before_cut.len() - 1);
}

#[test]
fn a_gap_between_segments_resets_the_decoder() {
    let segments = segments();
    let mut decoder = WalDecoder::new();
    decoder.decode_segment(&segments[1].1).unwrap();
    // Skip segments[2]: what ended unfinished in [1] must not be glued onto [3].
    let after_gap = decoder.decode_segment(&segments[3].1).unwrap();
    let alone = WalDecoder::new().decode_segment(&segments[3].1).unwrap();
    assert_eq!(after_gap, alone);
}
