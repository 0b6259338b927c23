//! PostgreSQL's WAL vocabulary: positions, timelines, segment numbers and sizes, system
//! identifiers, WAL file names, timeline history files and the long page header that opens
//! every segment. Pure code: no I/O, so every parser here can be fuzzed.

mod control;
mod history;
mod ids;
mod lsn;
mod name;
mod page;
mod record;

pub use control::{
    ClusterState, ControlCheckpoint, checkpoint_from_pg_control, system_id_from_pg_control,
};
pub use history::{HistoryEntry, TimelineHistory, TimelineSpan, path_passes};
pub use ids::{SegmentNo, SystemId, TimelineId, WalSegmentSize};
pub use lsn::Lsn;
pub use name::{SegmentName, WalFileName};
pub use page::{LongPageHeader, PgMajor, XLOG_LONG_PAGE_HEADER_LEN};
pub(crate) use record::DecoderState;
pub use record::{DecodeEnd, RecordEvent, SegmentRecords, WalDecoder, WalRecord, postgres_micros};

/// Everything that can be wrong with a WAL name, a history file or a page header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Text that is not an LSN in PostgreSQL's `X/X` notation.
    #[error("invalid LSN {text:?}: expected two hexadecimal halves like 16/B374D848")]
    InvalidLsn {
        /// The text as given.
        text: String,
    },
    /// A timeline ID of 0.
    #[error("timeline 0 does not exist (timelines start at 1)")]
    ZeroTimeline,
    /// A segment size that is not a power of two from 1 MiB to 1 GiB.
    #[error("invalid WAL segment size {bytes}: must be a power of two from 1 MiB to 1 GiB")]
    InvalidSegmentSize {
        /// The refused size, in bytes.
        bytes: u64,
    },
    /// A name that is not a segment, `.partial`, `.backup` or `.history` file name.
    #[error("{name:?} is not a WAL file name (segment, .partial, .backup or .history)")]
    InvalidFileName {
        /// The name as given.
        name: String,
    },
    /// A segment name whose last 8 hex digits exceed the segments per log id of the segment
    /// size.
    #[error("{name:?}: segment part {seg:#X} is out of range for {size} segments")]
    SegmentOutOfRange {
        /// The segment name.
        name: String,
        /// Its last 8 hex digits (the segment within the log id).
        seg: u32,
        /// The segment size the name was read with.
        size: WalSegmentSize,
    },
    /// A timeline history file that cannot be parsed or does not fit its timeline.
    #[error("timeline history line {line}: {reason}")]
    InvalidHistory {
        /// The 1-based line number of the offending line; 0 when the file as a whole is wrong.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A long page header that is not a valid first page of a segment.
    #[error("WAL page header: {reason}")]
    InvalidPageHeader {
        /// What is wrong.
        reason: String,
    },
    /// A `global/pg_control` that is too short, has an unknown `pg_control_version` or no
    /// valid CRC.
    #[error("invalid pg_control: {reason}")]
    InvalidControlFile {
        /// What is wrong.
        reason: String,
    },
    /// An `xlp_magic` (`XLOG_PAGE_MAGIC`) of a PostgreSQL version other than 13 to 18.
    #[error("unsupported WAL page magic {magic:#06X}: walarch reads PostgreSQL 13 to 18")]
    UnknownPageMagic {
        /// The page magic found.
        magic: u16,
    },
}
