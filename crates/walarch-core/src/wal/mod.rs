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

pub use control::{ControlCheckpoint, checkpoint_from_pg_control, system_id_from_pg_control};
pub use history::{HistoryEntry, TimelineHistory, TimelineSpan, path_passes};
pub use ids::{SegmentNo, SystemId, TimelineId, WalSegmentSize};
pub use lsn::Lsn;
pub use name::{SegmentName, WalFileName};
pub use page::{LongPageHeader, PgMajor, XLOG_LONG_PAGE_HEADER_LEN};
pub use record::{DecodeEnd, RecordEvent, SegmentRecords, WalDecoder, WalRecord, postgres_micros};

/// Everything that can be wrong with a WAL name, a history file or a page header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    #[error("invalid LSN {text:?}: expected two hexadecimal halves like 16/B374D848")]
    InvalidLsn { text: String },
    #[error("timeline 0 does not exist (timelines start at 1)")]
    ZeroTimeline,
    #[error("invalid WAL segment size {bytes}: must be a power of two from 1 MiB to 1 GiB")]
    InvalidSegmentSize { bytes: u64 },
    #[error("{name:?} is not a WAL file name (segment, .partial, .backup or .history)")]
    InvalidFileName { name: String },
    #[error("{name:?}: segment part {seg:#X} is out of range for {size} segments")]
    SegmentOutOfRange {
        name: String,
        seg: u32,
        size: WalSegmentSize,
    },
    #[error("timeline history line {line}: {reason}")]
    InvalidHistory { line: usize, reason: String },
    #[error("WAL page header: {reason}")]
    InvalidPageHeader { reason: String },
    #[error("invalid pg_control: {reason}")]
    InvalidControlFile { reason: String },
    #[error("unsupported WAL page magic {magic:#06X}: walarch reads PostgreSQL 13 to 17")]
    UnknownPageMagic { magic: u16 },
}
