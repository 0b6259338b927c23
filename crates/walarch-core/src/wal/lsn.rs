//! `Lsn`: a byte position in the WAL stream (`XLogRecPtr`), written `X/X` by PostgreSQL.

use std::fmt;
use std::str::FromStr;

use super::{SegmentNo, WalError, WalSegmentSize};

/// A WAL position. Displayed and parsed as PostgreSQL does: high and low 32-bit halves in
/// upper-case hexadecimal, `16/B374D848`.
#[doc(alias = "XLogRecPtr")]
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Lsn(u64);

impl From<Lsn> for String {
    fn from(lsn: Lsn) -> String {
        lsn.to_string()
    }
}

impl TryFrom<String> for Lsn {
    type Error = WalError;
    fn try_from(text: String) -> Result<Lsn, WalError> {
        text.parse()
    }
}

impl Lsn {
    /// `InvalidXLogRecPtr`: no record can start at 0.
    pub const INVALID: Lsn = Lsn(0);

    /// The position `value`, in bytes from the start of the WAL stream.
    pub const fn new(value: u64) -> Self {
        Lsn(value)
    }

    /// The position in bytes from the start of the WAL stream.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The position `bytes` further on; `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// The distance in bytes from `other` up to this position; `None` if `other` is later.
    pub fn checked_sub(self, other: Lsn) -> Option<u64> {
        self.0.checked_sub(other.0)
    }

    /// The segment that holds this position.
    #[doc(alias = "XLByteToSeg")]
    pub fn segment(self, size: WalSegmentSize) -> SegmentNo {
        SegmentNo::new(self.0 / size.bytes())
    }

    /// Offset of this position inside its segment.
    #[doc(alias = "XLogSegmentOffset")]
    pub fn segment_offset(self, size: WalSegmentSize) -> u64 {
        self.0 % size.bytes()
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = WalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || WalError::InvalidLsn {
            text: text.to_owned(),
        };
        let (high, low) = text.split_once('/').ok_or_else(invalid)?;
        let half = |s: &str| {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            u32::from_str_radix(s, 16).map_err(|_| invalid())
        };
        Ok(Lsn((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_like_postgresql() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.as_u64(), 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::INVALID);
        assert_eq!(
            "ffffffff/ffffffff".parse::<Lsn>().unwrap().as_u64(),
            u64::MAX
        );
        assert_eq!(Lsn::new(0x1_0000_0028).to_string(), "1/28");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            "g/0",
            "0/x1",
            "123456789/0",
            "0/-1",
            " 1/2",
            "1/+2",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn segment_math_uses_the_segment_size() {
        let mib16 = WalSegmentSize::new(16 << 20).unwrap();
        let lsn: Lsn = "1/2A000028".parse().unwrap();
        assert_eq!(lsn.segment(mib16).as_u64(), 0x12A);
        assert_eq!(lsn.segment_offset(mib16), 0x28);
        let mib1 = WalSegmentSize::new(1 << 20).unwrap();
        assert_eq!(lsn.segment(mib1).as_u64(), 0x12A0);
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Lsn::new(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn::new(10).checked_sub(Lsn::new(11)), None);
        assert_eq!(Lsn::new(10).checked_sub(Lsn::new(4)), Some(6));
    }
}
