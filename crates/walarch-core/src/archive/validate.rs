//! Checks that the bytes of a WAL file are what its name says they are. Used before storing
//! (never archive a mislabelled or truncated file) and after fetching (never hand PostgreSQL
//! the wrong file).

use crate::wal::{
    LongPageHeader, TimelineHistory, WalError, WalFileName, XLOG_LONG_PAGE_HEADER_LEN,
};

/// What the content of a validated WAL file told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatedContent {
    /// A whole segment (or `.partial`) with its long page header.
    Segment(LongPageHeader),
    /// A history or backup history file: text, no header.
    Text,
}

/// Why the bytes of a WAL file are not what its name says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The segment's long page header does not decode or does not match the file name, or the
    /// name is not a segment's.
    #[error("{name}: {source}")]
    Header {
        /// The WAL file name.
        name: String,
        /// What is wrong with the header.
        source: WalError,
    },
    /// The segment's length differs from the segment size in its header.
    #[error(
        "{name} is {actual} bytes but its header says segments are {expected} bytes (truncated or padded file)"
    )]
    WrongLength {
        /// The WAL file name.
        name: String,
        /// The file's length, in bytes.
        actual: u64,
        /// The segment size from the header, in bytes.
        expected: u64,
    },
    /// The timeline history file does not parse, or does not fit its timeline.
    #[error("{name}: {source}")]
    History {
        /// The WAL file name.
        name: String,
        /// Why the history file is invalid.
        source: WalError,
    },
    /// The backup history file does not start with `START WAL LOCATION: `.
    #[error("{name} is not a PostgreSQL backup history file")]
    NotBackupHistory {
        /// The WAL file name.
        name: String,
    },
}

/// Validates a segment (or `.partial`) from its first bytes and total length, so that a
/// segment can be checked while it streams, without holding it in memory.
pub fn validate_segment(
    name: &WalFileName,
    head: &[u8],
    total_len: u64,
) -> Result<LongPageHeader, ContentError> {
    let label = || name.to_string();
    let Some(segment) = name.segment().filter(|_| name.holds_segment_data()) else {
        return Err(ContentError::Header {
            name: label(),
            source: WalError::InvalidPageHeader {
                reason: "not a segment file".into(),
            },
        });
    };
    let header = LongPageHeader::decode(head).map_err(|source| ContentError::Header {
        name: label(),
        source,
    })?;
    let expected = header.segment_size.bytes();
    if total_len != expected {
        return Err(ContentError::WrongLength {
            name: label(),
            actual: total_len,
            expected,
        });
    }
    header
        .check_matches(segment)
        .map_err(|source| ContentError::Header {
            name: label(),
            source,
        })?;
    Ok(header)
}

/// Validates `content` against `name`.
pub fn validate_wal_content(
    name: &WalFileName,
    content: &[u8],
) -> Result<ValidatedContent, ContentError> {
    let label = || name.to_string();
    match name {
        WalFileName::Segment(_) | WalFileName::Partial(_) => {
            let head = &content[..content.len().min(XLOG_LONG_PAGE_HEADER_LEN)];
            validate_segment(name, head, content.len() as u64).map(ValidatedContent::Segment)
        }
        WalFileName::History(timeline) => {
            let history =
                TimelineHistory::parse(content).map_err(|source| ContentError::History {
                    name: label(),
                    source,
                })?;
            history
                .validate_for(*timeline)
                .map_err(|source| ContentError::History {
                    name: label(),
                    source,
                })?;
            Ok(ValidatedContent::Text)
        }
        WalFileName::Backup { .. } => {
            // pg_backup_stop writes "START WAL LOCATION: 0/2000028 (file 00000001...)" first.
            // Not necessarily UTF-8: the label is in the cluster's encoding.
            if content.starts_with(b"START WAL LOCATION: ") {
                Ok(ValidatedContent::Text)
            } else {
                Err(ContentError::NotBackupHistory { name: label() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::synthetic_segment;
    use crate::wal::{SegmentNo, SystemId, TimelineId, WalSegmentSize};

    fn name(text: &str) -> WalFileName {
        text.parse().unwrap()
    }

    #[test]
    fn accepts_a_well_formed_segment_and_partial() {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let seg = synthetic_segment(
            SystemId::new(42),
            TimelineId::FIRST,
            SegmentNo::new(3),
            size,
        );
        let n = crate::wal::SegmentName::new(TimelineId::FIRST, SegmentNo::new(3), size);
        assert!(matches!(
            validate_wal_content(&name(&n.to_string()), &seg),
            Ok(ValidatedContent::Segment(_))
        ));
        assert!(validate_wal_content(&name(&format!("{n}.partial")), &seg).is_ok());
    }

    #[test]
    fn refuses_truncated_misnamed_and_garbage_segments() {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let seg = synthetic_segment(
            SystemId::new(42),
            TimelineId::FIRST,
            SegmentNo::new(3),
            size,
        );
        let right = "000000010000000000000003";
        let truncated = validate_wal_content(&name(right), &seg[..seg.len() - 8192]).unwrap_err();
        assert!(
            matches!(truncated, ContentError::WrongLength { .. }),
            "{truncated}"
        );
        let misnamed = validate_wal_content(&name("000000010000000000000004"), &seg).unwrap_err();
        assert!(
            misnamed.to_string().contains("000000010000000000000003"),
            "{misnamed}"
        );
        assert!(validate_wal_content(&name(right), &vec![0u8; 1 << 20]).is_err());
        assert!(validate_wal_content(&name(right), b"").is_err());
    }

    #[test]
    fn checks_history_and_backup_files() {
        assert!(
            validate_wal_content(
                &name("00000002.history"),
                b"1\t0/3000148\tno recovery target specified\n"
            )
            .is_ok()
        );
        assert!(validate_wal_content(&name("00000001.history"), b"1\t0/3000148\tx\n").is_err());
        assert!(validate_wal_content(&name("00000002.history"), b"garbage").is_err());
        let label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTOP WAL LOCATION: 0/2000100\n";
        let backup = name("000000010000000000000002.00000028.backup");
        assert!(validate_wal_content(&backup, label).is_ok());
        assert!(validate_wal_content(&backup, b"\x00\x01binary").is_err());
        let latin1 =
            b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: caf\xe9\n";
        assert!(validate_wal_content(&backup, latin1).is_ok());
    }
}
