//! The long page header (`XLogLongPageHeaderData`) that opens every WAL segment. It names the
//! cluster (`xlp_sysid`), the segment size and the WAL address of the page, which lets walarch
//! check a file's content against its name before storing it.
//!
//! Layout (little-endian, as written by PostgreSQL on the platforms walarch supports):
//! ```text
//!  0 u16 xlp_magic      2 u16 xlp_info     4 u32 xlp_tli    8 u64 xlp_pageaddr
//! 16 u32 xlp_rem_len   20 (padding)       24 u64 xlp_sysid 32 u32 xlp_seg_size
//! 36 u32 xlp_xlog_blcksz
//! ```

use super::{Lsn, SegmentName, SystemId, TimelineId, WalError, WalSegmentSize};

/// `SizeOfXLogLongPHD`.
pub const XLOG_LONG_PAGE_HEADER_LEN: usize = 40;

/// `XLP_FIRST_IS_CONTRECORD`: the page begins with the rest of a record from earlier pages.
pub(super) const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`: set on the first page of every segment.
pub(super) const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD` (PostgreSQL 14+): the record left unfinished before
/// this page was abandoned after a crash.
pub(super) const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`: `XLP_FIRST_IS_CONTRECORD` (1), `XLP_LONG_HEADER` (2),
/// `XLP_BKP_REMOVABLE` (4) and `XLP_FIRST_IS_OVERWRITE_CONTRECORD` (8, written after a crash
/// left a record unfinished at a page boundary). Any other bit means this is not a page
/// header we understand.
const XLP_ALL_FLAGS: u16 = 0x000F;

/// The PostgreSQL major version a WAL page magic belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgMajor(u32);

impl PgMajor {
    /// `XLOG_PAGE_MAGIC` of each supported major version.
    const MAGICS: [(u16, u32); 6] = [
        (0xD106, 13),
        (0xD10D, 14),
        (0xD110, 15),
        (0xD113, 16),
        (0xD116, 17),
        (0xD118, 18),
    ];

    /// The major version whose `XLOG_PAGE_MAGIC` is `magic`; an error for versions other than 13 to
    /// 18.
    pub fn from_page_magic(magic: u16) -> Result<Self, WalError> {
        Self::MAGICS
            .iter()
            .find(|(m, _)| *m == magic)
            .map(|(_, major)| PgMajor(*major))
            .ok_or(WalError::UnknownPageMagic { magic })
    }

    /// The major version `major` (for example 15), unchecked.
    pub fn new(major: u32) -> Self {
        PgMajor(major)
    }

    /// The major version number, for example 15.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for PgMajor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The decoded long page header of a segment's first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// The PostgreSQL major version, from `xlp_magic`.
    pub pg_major: PgMajor,
    /// The page flags (`xlp_info`); `XLP_LONG_HEADER` is always set.
    pub info: u16,
    /// Timeline of the first record on the page. After a timeline switch, the first page of
    /// the new timeline's first segment still carries the parent timeline (PostgreSQL copies it).
    pub timeline: TimelineId,
    /// The WAL position of the page (`xlp_pageaddr`), always at the start of a segment.
    pub page_addr: Lsn,
    /// The cluster's system identifier (`xlp_sysid`).
    pub system_id: SystemId,
    /// The cluster's segment size (`xlp_seg_size`).
    pub segment_size: WalSegmentSize,
    /// The WAL block (page) size in bytes (`xlp_xlog_blcksz`), a power of two from 1 KiB to 64 KiB.
    pub block_size: u32,
}

impl LongPageHeader {
    /// Decodes the header from the first bytes of a segment.
    pub fn decode(bytes: &[u8]) -> Result<Self, WalError> {
        let invalid = |reason: String| WalError::InvalidPageHeader { reason };
        let Some(header) = bytes.get(..XLOG_LONG_PAGE_HEADER_LEN) else {
            return Err(invalid(format!(
                "need {XLOG_LONG_PAGE_HEADER_LEN} bytes, got {}",
                bytes.len()
            )));
        };
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());

        let pg_major = PgMajor::from_page_magic(u16_at(0))?;
        let info = u16_at(2);
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(invalid(format!(
                "unknown flag bits in xlp_info {info:#06X}"
            )));
        }
        if info & XLP_LONG_HEADER == 0 {
            return Err(invalid("first page lacks the long header flag".into()));
        }
        let timeline = TimelineId::new(u32_at(4)).map_err(|_| invalid("xlp_tli is 0".into()))?;
        let segment_size = WalSegmentSize::new(u64::from(u32_at(32))).map_err(|_| {
            invalid(format!(
                "xlp_seg_size {} is not a valid segment size",
                u32_at(32)
            ))
        })?;
        let block_size = u32_at(36);
        if !block_size.is_power_of_two() || !(1024..=65536).contains(&block_size) {
            return Err(invalid(format!(
                "xlp_xlog_blcksz {block_size} is not a valid WAL block size"
            )));
        }
        let page_addr = Lsn::new(u64_at(8));
        if page_addr.segment_offset(segment_size) != 0 {
            return Err(invalid(format!(
                "xlp_pageaddr {page_addr} is not at a segment start"
            )));
        }
        Ok(LongPageHeader {
            pg_major,
            info,
            timeline,
            page_addr,
            system_id: SystemId::new(u64_at(24)),
            segment_size,
            block_size,
        })
    }

    /// Checks that this header opens the segment `name`: same segment number, and a page
    /// timeline that is the file's timeline or an ancestor of it.
    pub fn check_matches(&self, name: &SegmentName) -> Result<(), WalError> {
        let expected = name.segment_no(self.segment_size)?;
        let actual = self.page_addr.segment(self.segment_size);
        if actual != expected {
            return Err(WalError::InvalidPageHeader {
                reason: format!(
                    "content is segment {} (xlp_pageaddr {}) but the file is named {name}",
                    SegmentName::new(name.timeline(), actual, self.segment_size),
                    self.page_addr
                ),
            });
        }
        if self.timeline > name.timeline() {
            return Err(WalError::InvalidPageHeader {
                reason: format!(
                    "content is from timeline {} but the file is named for timeline {}",
                    self.timeline,
                    name.timeline()
                ),
            });
        }
        Ok(())
    }

    /// Builds the header bytes; used by tests, fuzz seeds and benches to make synthetic
    /// segments that PostgreSQL would accept.
    pub fn encode(&self) -> [u8; XLOG_LONG_PAGE_HEADER_LEN] {
        let magic = PgMajor::MAGICS
            .iter()
            .find(|(_, major)| *major == self.pg_major.get())
            .map_or(0, |(m, _)| *m);
        let mut out = [0u8; XLOG_LONG_PAGE_HEADER_LEN];
        out[0..2].copy_from_slice(&magic.to_le_bytes());
        out[2..4].copy_from_slice(&self.info.to_le_bytes());
        out[4..8].copy_from_slice(&self.timeline.get().to_le_bytes());
        out[8..16].copy_from_slice(&self.page_addr.as_u64().to_le_bytes());
        out[24..32].copy_from_slice(&self.system_id.get().to_le_bytes());
        out[32..36].copy_from_slice(&(self.segment_size.bytes() as u32).to_le_bytes());
        out[36..40].copy_from_slice(&self.block_size.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{SegmentNo, WalFileName};

    fn header(segno: u64, tli: u32) -> LongPageHeader {
        let size = WalSegmentSize::DEFAULT;
        LongPageHeader {
            pg_major: PgMajor::new(15),
            info: XLP_LONG_HEADER,
            timeline: TimelineId::new(tli).unwrap(),
            page_addr: Lsn::new(segno * size.bytes()),
            system_id: SystemId::new(7_300_000_000_000_000_001),
            segment_size: size,
            block_size: 8192,
        }
    }

    fn segment_name(text: &str) -> SegmentName {
        match text.parse::<WalFileName>().unwrap() {
            WalFileName::Segment(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_what_it_encodes() {
        let h = header(0x2F, 1);
        assert_eq!(LongPageHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn recognises_postgresql_13_to_18() {
        for (magic, major) in [
            (0xD106u16, 13),
            (0xD10D, 14),
            (0xD110, 15),
            (0xD113, 16),
            (0xD116, 17),
            (0xD118, 18),
        ] {
            assert_eq!(PgMajor::from_page_magic(magic).unwrap().get(), major);
        }
        // PostgreSQL 12's and an unreleased version's magic stay refused.
        for magic in [0xD101u16, 0xD119, 0xD11A, 0, 0xFFFF] {
            assert_eq!(
                PgMajor::from_page_magic(magic),
                Err(WalError::UnknownPageMagic { magic })
            );
        }
    }

    #[test]
    fn matches_name_or_says_why_not() {
        let h = header(0x12F, 1);
        h.check_matches(&segment_name("00000001000000010000002F"))
            .unwrap();
        // the first segment of timeline 2 still carries timeline 1 in its first page
        h.check_matches(&segment_name("00000002000000010000002F"))
            .unwrap();
        let err = h
            .check_matches(&segment_name("000000010000000100000030"))
            .unwrap_err();
        assert!(
            err.to_string().contains("00000001000000010000002F"),
            "{err}"
        );
        let newer = header(0x12F, 3);
        assert!(
            newer
                .check_matches(&segment_name("00000002000000010000002F"))
                .is_err()
        );
    }

    #[test]
    fn rejects_garbage_headers() {
        let good = header(1, 1).encode();
        assert!(LongPageHeader::decode(&good[..39]).is_err());
        assert!(LongPageHeader::decode(&[0u8; 40]).is_err());
        let mutate = |at: usize, bytes: &[u8]| {
            let mut h = good;
            h[at..at + bytes.len()].copy_from_slice(bytes);
            LongPageHeader::decode(&h)
        };
        assert!(mutate(0, &[0x16, 0xD1]).is_ok(), "PG 17 magic is fine");
        assert!(matches!(
            mutate(0, &[0x01, 0xD1]),
            Err(WalError::UnknownPageMagic { .. })
        ));
        assert!(
            mutate(2, &[0x00, 0x00]).is_err(),
            "long header flag missing"
        );
        assert!(mutate(2, &[0x1A, 0x00]).is_err(), "unknown flag");
        // A crash mid-record marks the next page "first is overwrite contrecord" (0x0008).
        assert!(
            mutate(2, &[0x0B, 0x00]).is_ok(),
            "all of PostgreSQL's flags are accepted"
        );
        assert!(mutate(4, &[0, 0, 0, 0]).is_err(), "timeline 0");
        assert!(
            mutate(8, &[0x28, 0, 0, 0]).is_err(),
            "page address not at segment start"
        );
        assert!(mutate(32, &[0, 0, 0x30, 0]).is_err(), "3 MiB segments");
        assert!(mutate(36, &[0, 0x30, 0, 0]).is_err(), "12 KiB block");
    }

    #[test]
    fn segment_number_is_checked_with_the_header_segment_size() {
        // With 1 MiB segments the same name means a different segment number.
        let mut h = header(0, 1);
        h.segment_size = WalSegmentSize::new(1 << 20).unwrap();
        h.page_addr = Lsn::new(0x12F * (1 << 20));
        let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(0x12F), h.segment_size);
        assert_eq!(name.to_string(), "00000001000000000000012F");
        h.check_matches(&name).unwrap();
    }
}
