//! Synthetic WAL for tests, fuzz seeds and benches: segments with a valid long page header and
//! WAL-like content. Not a substitute for real PostgreSQL WAL in end-to-end tests.

use crate::wal::{LongPageHeader, PgMajor, SegmentNo, SystemId, TimelineId, WalSegmentSize};

/// A segment PostgreSQL 15 could have written: valid long page header, then pages of
/// compressible, deterministic filler.
pub fn synthetic_segment(
    system_id: SystemId,
    timeline: TimelineId,
    segno: SegmentNo,
    size: WalSegmentSize,
) -> Vec<u8> {
    let header = LongPageHeader {
        pg_major: PgMajor::new(15),
        info: 0x0002,
        timeline,
        page_addr: crate::wal::Lsn::new(segno.as_u64() * size.bytes()),
        system_id,
        segment_size: size,
        block_size: 8192,
    };
    let mut out = vec![0u8; size.bytes() as usize];
    out[..header.encode().len()].copy_from_slice(&header.encode());
    // Deterministic pseudo-random records separated by zero padding, like real WAL pages.
    let mut state = segno.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out[64..].chunks_mut(256) {
        for byte in chunk.iter_mut().take(96) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = (state & 0x3F) as u8;
        }
    }
    out
}
