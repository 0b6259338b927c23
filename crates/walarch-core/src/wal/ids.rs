//! Small identifiers: timeline, segment number, segment size and system identifier.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::WalError;

/// A timeline (`TimeLineID`). Timeline 0 does not exist.
#[doc(alias = "TimeLineID")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub struct TimelineId(u32);

impl From<TimelineId> for u32 {
    fn from(timeline: TimelineId) -> u32 {
        timeline.0
    }
}

impl TryFrom<u32> for TimelineId {
    type Error = WalError;
    fn try_from(value: u32) -> Result<TimelineId, WalError> {
        TimelineId::new(value)
    }
}

impl TimelineId {
    /// The first timeline, which `initdb` creates.
    pub const FIRST: TimelineId = TimelineId(1);

    /// A timeline ID; refuses 0.
    pub fn new(value: u32) -> Result<Self, WalError> {
        if value == 0 {
            Err(WalError::ZeroTimeline)
        } else {
            Ok(TimelineId(value))
        }
    }

    /// The timeline ID as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A WAL segment number (`XLogSegNo`): the LSN divided by the segment size.
#[doc(alias = "XLogSegNo")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentNo(u64);

impl SegmentNo {
    /// The segment number `value`.
    pub const fn new(value: u64) -> Self {
        SegmentNo(value)
    }

    /// The segment number as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The following segment; `None` on overflow.
    pub fn next(self) -> Option<SegmentNo> {
        self.0.checked_add(1).map(SegmentNo)
    }
}

impl fmt::Display for SegmentNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

/// The WAL segment size of a cluster (`wal_segment_size`, chosen at initdb): a power of two
/// from 1 MiB to 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct WalSegmentSize(u32);

impl WalSegmentSize {
    /// The smallest segment size PostgreSQL allows, in bytes (1 MiB).
    pub const MIN: u64 = 1 << 20;
    /// The largest segment size PostgreSQL allows, in bytes (1 GiB).
    pub const MAX: u64 = 1 << 30;
    /// PostgreSQL's default segment size (16 MiB).
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(16 << 20);

    /// A segment size of `bytes`; refuses anything but a power of two from 1 MiB to 1 GiB.
    pub fn new(bytes: u64) -> Result<Self, WalError> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(WalSegmentSize(bytes as u32))
        } else {
            Err(WalError::InvalidSegmentSize { bytes })
        }
    }

    /// The segment size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0 as u64
    }

    /// How many segments share one "log id" (the middle 8 hex digits of a segment name).
    #[doc(alias = "XLogSegmentsPerXLogId")]
    pub const fn segments_per_log_id(self) -> u64 {
        0x1_0000_0000 / self.0 as u64
    }
}

impl TryFrom<u64> for WalSegmentSize {
    type Error = WalError;
    fn try_from(bytes: u64) -> Result<Self, WalError> {
        WalSegmentSize::new(bytes)
    }
}

impl From<WalSegmentSize> for u64 {
    fn from(size: WalSegmentSize) -> u64 {
        size.bytes()
    }
}

impl fmt::Display for WalSegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 30 {
            write!(f, "{} GiB", self.0 >> 30)
        } else {
            write!(f, "{} MiB", self.0 >> 20)
        }
    }
}

/// The database system identifier chosen by initdb (`system_identifier` in pg_control and
/// `xlp_sysid` in every long page header). Serialised as a decimal string, because JSON
/// readers lose precision on integers above 2^53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SystemId(u64);

impl SystemId {
    /// The system identifier `value`.
    pub const fn new(value: u64) -> Self {
        SystemId(value)
    }

    /// The system identifier as a number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SystemId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(SystemId)
    }
}

impl From<SystemId> for String {
    fn from(id: SystemId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for SystemId {
    type Error = std::num::ParseIntError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_zero_is_refused() {
        assert_eq!(TimelineId::new(0), Err(WalError::ZeroTimeline));
        assert_eq!(TimelineId::new(7).unwrap().get(), 7);
    }

    #[test]
    fn segment_sizes_are_powers_of_two_between_1mib_and_1gib() {
        for ok in [1u64 << 20, 2 << 20, 16 << 20, 64 << 20, 1 << 30] {
            assert_eq!(WalSegmentSize::new(ok).unwrap().bytes(), ok);
        }
        for bad in [
            0u64,
            1,
            512 << 10,
            (16 << 20) + 1,
            3 << 20,
            2 << 30,
            u64::MAX,
        ] {
            assert!(WalSegmentSize::new(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(WalSegmentSize::DEFAULT.segments_per_log_id(), 256);
        assert_eq!(
            WalSegmentSize::new(1 << 20).unwrap().segments_per_log_id(),
            4096
        );
        assert_eq!(
            WalSegmentSize::new(1 << 30).unwrap().segments_per_log_id(),
            4
        );
    }

    #[test]
    fn system_id_round_trips_through_json_as_a_string() {
        let id = SystemId::new(7_311_234_567_890_123_456);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"7311234567890123456\"");
        assert_eq!(serde_json::from_str::<SystemId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SystemId>("\"12x\"").is_err());
    }

    #[test]
    fn segment_size_deserialisation_validates() {
        assert!(serde_json::from_str::<WalSegmentSize>("16777216").is_ok());
        assert!(serde_json::from_str::<WalSegmentSize>("1000").is_err());
    }
}
