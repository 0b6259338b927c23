//! The WAL record decoder on real WAL of every supported PostgreSQL major, 13 to 18
//! (`fixtures/wal-majors/make.sh`): each commit, abort, prepared commit and rollback, restore
//! point and switch the server reported is found, once, at an LSN inside the range the server
//! gave around the statement that wrote it, with its transaction id and, for commits, the
//! commit timestamp the server recorded. Nothing else is taken for a commit or an abort, and
//! the fixtures hold full-page images and records that cross pages and segments. The
//! full-page images are both uncompressed and pglz-compressed: their flags differ between
//! 13/14 and 15+, and one misread makes the record's lengths not add up, so every segment
//! must decode to its end.

use std::path::PathBuf;

use chrono::NaiveDateTime;
use walarch_core::wal::{DecodeEnd, LongPageHeader, Lsn, RecordEvent, WalDecoder, WalRecord};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-majors")
}

/// What the server said about one record.
#[derive(Debug)]
struct Expected {
    kind: String,
    xid: u32,
    from: Lsn,
    to: Lsn,
    /// The commit timestamp, or the restore point's name.
    detail: Option<String>,
}

fn expected(major: u32) -> Vec<Expected> {
    let text = std::fs::read_to_string(fixtures().join(format!("pg{major}/expected.txt"))).unwrap();
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(5, ' ');
            let mut next = || fields.next().unwrap().to_owned();
            let (kind, xid, from, to) = (next(), next(), next(), next());
            Expected {
                kind,
                xid: xid.parse().unwrap(),
                from: from.parse().unwrap(),
                to: to.parse().unwrap(),
                detail: fields.next().map(str::to_owned),
            }
        })
        .collect()
}

/// The segments of `major`'s fixture, decoded in order: every record, and how each segment ended.
fn decode(major: u32) -> (Vec<WalRecord>, Vec<DecodeEnd>) {
    let dir = fixtures().join(format!("pg{major}"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".zst"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 3,
        "PostgreSQL {major}: segments missing: {names:?}"
    );
    let mut decoder = WalDecoder::new();
    let (mut records, mut ends) = (Vec::new(), Vec::new());
    for name in names {
        let bytes = zstd::decode_all(&std::fs::read(dir.join(&name)).unwrap()[..]).unwrap();
        let header = LongPageHeader::decode(&bytes).unwrap();
        assert_eq!(
            header.pg_major.get(),
            major,
            "{name}: the page magic's version"
        );
        let decoded = decoder
            .decode_segment(&bytes)
            .unwrap_or_else(|e| panic!("PostgreSQL {major} {name}: {e}"));
        records.extend(decoded.records);
        ends.push(decoded.end);
    }
    (records, ends)
}

fn check(major: u32) {
    let (records, ends) = decode(major);
    let (last, earlier) = ends.split_last().unwrap();
    assert_eq!(
        *last,
        DecodeEnd::Switch,
        "PostgreSQL {major}: ends at the switch"
    );
    assert!(
        earlier.iter().all(|e| *e == DecodeEnd::SegmentEnd),
        "PostgreSQL {major}: every other segment is read to its end: {earlier:?}"
    );
    let events: Vec<(Lsn, &RecordEvent)> = records
        .iter()
        .filter_map(|r| r.event.as_ref().map(|e| (r.lsn, e)))
        .collect();
    let expected = expected(major);
    for want in &expected {
        let found: Vec<&(Lsn, &RecordEvent)> = events
            .iter()
            .filter(|(lsn, _)| want.from <= *lsn && *lsn < want.to)
            .filter(|(_, event)| match (want.kind.as_str(), event) {
                ("COMMIT", RecordEvent::Commit { xid, .. })
                | ("ABORT", RecordEvent::Abort { xid, .. }) => *xid == want.xid,
                ("RESTORE_POINT", RecordEvent::RestorePoint { name, .. }) => {
                    Some(name) == want.detail.as_ref()
                }
                ("SWITCH", RecordEvent::Switch) => true,
                _ => false,
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "PostgreSQL {major}: {want:?} found {found:?}\nall events: {events:#?}"
        );
        if let (RecordEvent::Commit { time, .. }, Some(text)) = (found[0].1, &want.detail) {
            let recorded = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .unwrap()
                .and_utc();
            assert_eq!(
                *time, recorded,
                "PostgreSQL {major}: commit time of {want:?}"
            );
        }
    }
    let decoded_xacts = events
        .iter()
        .filter(|(_, e)| matches!(e, RecordEvent::Commit { .. } | RecordEvent::Abort { .. }))
        .count();
    let expected_xacts = expected
        .iter()
        .filter(|e| e.kind == "COMMIT" || e.kind == "ABORT")
        .count();
    assert_eq!(
        decoded_xacts, expected_xacts,
        "PostgreSQL {major}: no commit or abort the server did not write\n{events:#?}"
    );

    // What the fixture must exercise: full-page images, records across pages and segments.
    let size = 1u64 << 20;
    assert!(
        records
            .iter()
            .any(|r| r.lsn.as_u64() / 8192 != (r.end.as_u64() - 1) / 8192),
        "PostgreSQL {major}: a record crossing a page"
    );
    assert!(
        records
            .iter()
            .any(|r| r.lsn.as_u64() / size != (r.end.as_u64() - 1) / size),
        "PostgreSQL {major}: a record crossing a segment"
    );
    assert!(
        records
            .iter()
            .any(|r| r.end.as_u64() - r.lsn.as_u64() > 4096),
        "PostgreSQL {major}: a record holding a full-page image"
    );
}

#[test]
fn postgresql_13() {
    check(13);
}

#[test]
fn postgresql_14() {
    check(14);
}

#[test]
fn postgresql_15() {
    check(15);
}

#[test]
fn postgresql_16() {
    check(16);
}

#[test]
fn postgresql_17() {
    check(17);
}

#[test]
fn postgresql_18() {
    check(18);
}
