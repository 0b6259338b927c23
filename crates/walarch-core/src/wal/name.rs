//! WAL file names as PostgreSQL writes them into `pg_wal` and hands them to
//! `archive_command` / `restore_command`:
//!
//! - segment `000000010000000A0000002F` (timeline, log id, segment within the log id),
//! - partial segment `000000010000000A0000002F.partial` (left behind at a timeline switch),
//! - backup history `000000010000000A0000002F.00000028.backup`,
//! - timeline history `00000002.history`.
//!
//! Only upper-case hexadecimal is accepted, as PostgreSQL's own `IsXLogFileName` does.

use std::fmt;
use std::str::FromStr;

use super::{SegmentNo, TimelineId, WalError, WalSegmentSize};

/// The 24-hex-digit name of one segment on one timeline. The split of the segment number into
/// "log id" and "segment" depends on the segment size, so the raw halves are kept and the
/// segment number is computed only once the size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentName {
    timeline: TimelineId,
    log_id: u32,
    seg: u32,
}

impl SegmentName {
    /// The name PostgreSQL gives segment `segno` of `timeline`.
    #[doc(alias = "XLogFileName")]
    pub fn new(timeline: TimelineId, segno: SegmentNo, size: WalSegmentSize) -> Self {
        let per_id = size.segments_per_log_id();
        SegmentName {
            timeline,
            // The quotient fits: segno <= u64::MAX / size, so segno / per_id < 2^32.
            log_id: (segno.as_u64() / per_id) as u32,
            seg: (segno.as_u64() % per_id) as u32,
        }
    }

    /// The timeline the segment belongs to (the first 8 hex digits).
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// The segment number, valid only if the name's segment part fits the segment size
    /// (with 1 GiB segments, only `00000000`..`00000003` exist).
    #[doc(alias = "XLogFromFileName")]
    pub fn segment_no(&self, size: WalSegmentSize) -> Result<SegmentNo, WalError> {
        let per_id = size.segments_per_log_id();
        if u64::from(self.seg) >= per_id {
            return Err(WalError::SegmentOutOfRange {
                name: self.to_string(),
                seg: self.seg,
                size,
            });
        }
        Ok(SegmentNo::new(
            u64::from(self.log_id) * per_id + u64::from(self.seg),
        ))
    }

    /// The first 16 hex digits (timeline and log id): the store groups segments by them.
    pub fn timeline_and_log_id(&self) -> String {
        format!("{:08X}{:08X}", self.timeline.get(), self.log_id)
    }

    fn parse(text: &str) -> Option<SegmentName> {
        if text.len() != 24 || !is_upper_hex(text) {
            return None;
        }
        let timeline = TimelineId::new(u32::from_str_radix(&text[0..8], 16).ok()?).ok()?;
        let log_id = u32::from_str_radix(&text[8..16], 16).ok()?;
        let seg = u32::from_str_radix(&text[16..24], 16).ok()?;
        Some(SegmentName {
            timeline,
            log_id,
            seg,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08X}{:08X}{:08X}",
            self.timeline.get(),
            self.log_id,
            self.seg
        )
    }
}

/// Any file PostgreSQL archives or asks back from the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// A complete segment, `000000010000000A0000002F`.
    Segment(SegmentName),
    /// A partial segment left behind at a timeline switch, `<segment>.partial`.
    Partial(SegmentName),
    /// A backup history file; `offset` is the backup's start offset within the segment.
    Backup {
        /// The segment the backup started in.
        segment: SegmentName,
        /// The backup's start offset within the segment, in bytes.
        offset: u32,
    },
    /// A timeline history file, `<TLI>.history`.
    History(TimelineId),
}

impl WalFileName {
    /// The timeline the file belongs to (a history file's own timeline).
    pub fn timeline(&self) -> TimelineId {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => s.timeline,
            WalFileName::Backup { segment, .. } => segment.timeline,
            WalFileName::History(tli) => *tli,
        }
    }

    /// The segment a segment, partial or backup file belongs to.
    pub fn segment(&self) -> Option<&SegmentName> {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => Some(s),
            WalFileName::Backup { segment, .. } => Some(segment),
            WalFileName::History(_) => None,
        }
    }

    /// Files whose content is a whole WAL segment with a long page header.
    pub fn holds_segment_data(&self) -> bool {
        matches!(self, WalFileName::Segment(_) | WalFileName::Partial(_))
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(s) => write!(f, "{s}"),
            WalFileName::Partial(s) => write!(f, "{s}.partial"),
            WalFileName::Backup { segment, offset } => write!(f, "{segment}.{offset:08X}.backup"),
            WalFileName::History(tli) => write!(f, "{:08X}.history", tli.get()),
        }
    }
}

impl FromStr for WalFileName {
    type Err = WalError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = || WalError::InvalidFileName {
            name: name.to_owned(),
        };
        if !name.is_ascii() {
            return Err(invalid());
        }
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() != 8 || !is_upper_hex(tli) {
                return Err(invalid());
            }
            let tli = u32::from_str_radix(tli, 16).map_err(|_| invalid())?;
            return TimelineId::new(tli)
                .map(WalFileName::History)
                .map_err(|_| invalid());
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return SegmentName::parse(seg)
                .map(WalFileName::Partial)
                .ok_or_else(invalid);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            // <segment>.<8 hex digits of offset>
            if rest.len() != 24 + 1 + 8 || rest.as_bytes()[24] != b'.' || !is_upper_hex(&rest[25..])
            {
                return Err(invalid());
            }
            let segment = SegmentName::parse(&rest[..24]).ok_or_else(invalid)?;
            let offset = u32::from_str_radix(&rest[25..], 16).map_err(|_| invalid())?;
            return Ok(WalFileName::Backup { segment, offset });
        }
        SegmentName::parse(name)
            .map(WalFileName::Segment)
            .ok_or_else(invalid)
    }
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    #[test]
    fn classifies_every_kind_and_round_trips() {
        let cases = [
            "000000010000000A0000002F",
            "000000020000000000000001.partial",
            "000000010000000000000002.00000028.backup",
            "0000000A.history",
        ];
        for text in cases {
            let name: WalFileName = text.parse().unwrap();
            assert_eq!(name.to_string(), text);
        }
        assert!(matches!(
            "000000010000000A0000002F".parse().unwrap(),
            WalFileName::Segment(_)
        ));
        assert_eq!(
            "0000000A.history".parse::<WalFileName>().unwrap(),
            WalFileName::History(tli(10))
        );
        match "000000010000000000000002.00000028.backup".parse().unwrap() {
            WalFileName::Backup { offset, segment } => {
                assert_eq!(offset, 0x28);
                assert_eq!(segment.to_string(), "000000010000000000000002");
            }
            other => panic!("wrong kind {other:?}"),
        }
    }

    #[test]
    fn rejects_hostile_names() {
        let bad = [
            "",
            "0",
            "00000001000000000000002",   // 23 digits
            "0000000100000000000000021", // 25 digits
            "000000010000000a0000002f",  // lower case
            "00000000000000000000002F",  // timeline 0
            "0000000G0000000000000001",  // not hex
            "00000001000000000000000 ",  // space
            "000000010000000000000001.part",
            "000000010000000000000001.partial.partial",
            "00000001.History",
            "1.history",
            "00000000.history",
            "000000010000000000000002.0000028.backup",
            "000000010000000000000002.000000280.backup",
            "000000010000000000000002_00000028.backup",
            "000000010000000000000002.0000002g.backup",
            "../000000010000000000000001",
            "00000001000000000000000\u{e9}",
            "\u{e9}\u{e9}\u{e9}\u{e9}.history",
        ];
        for text in bad {
            assert!(
                text.parse::<WalFileName>().is_err(),
                "{text:?} must be refused"
            );
        }
    }

    #[test]
    fn segment_numbers_depend_on_segment_size() {
        let mib16 = WalSegmentSize::DEFAULT;
        let name = SegmentName::parse("000000010000000A0000002F").unwrap();
        assert_eq!(name.segment_no(mib16).unwrap().as_u64(), 0xA * 256 + 0x2F);
        assert_eq!(SegmentName::new(tli(1), SegmentNo::new(0xA2F), mib16), name);

        let gib = WalSegmentSize::new(1 << 30).unwrap();
        assert!(
            name.segment_no(gib).is_err(),
            "segment 0x2F does not exist with 1 GiB segments"
        );
        let ok = SegmentName::parse("000000010000000A00000003").unwrap();
        assert_eq!(ok.segment_no(gib).unwrap().as_u64(), 0xA * 4 + 3);
    }

    #[test]
    fn names_round_trip_through_segment_numbers() {
        for size in [1u64 << 20, 16 << 20, 1 << 30] {
            let size = WalSegmentSize::new(size).unwrap();
            for segno in [
                0u64,
                1,
                255,
                256,
                4095,
                4096,
                1 << 20,
                u64::MAX / size.bytes(),
            ] {
                let name = SegmentName::new(tli(3), SegmentNo::new(segno), size);
                let parsed = SegmentName::parse(&name.to_string()).unwrap();
                assert_eq!(parsed.segment_no(size).unwrap().as_u64(), segno);
            }
        }
    }
}
