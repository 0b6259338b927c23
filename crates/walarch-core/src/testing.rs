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

/// One record for [`segment_with_records`]: resource manager, info bits, transaction id and
/// the body after the 24-byte record header (block headers, data).
#[derive(Debug, Clone)]
pub struct SyntheticRecord {
    pub rmid: u8,
    pub info: u8,
    pub xid: u32,
    pub body: Vec<u8>,
}

impl SyntheticRecord {
    /// A transaction commit at `time`, with only the main data (`xl_xact_commit`).
    pub fn commit(xid: u32, time: chrono::DateTime<chrono::Utc>) -> Self {
        let micros = crate::wal::postgres_micros(time);
        SyntheticRecord {
            rmid: 1,
            info: 0x00,
            xid,
            body: Self::main_data(&micros.to_le_bytes()),
        }
    }

    /// `pg_create_restore_point(name)` at `time`.
    pub fn restore_point(name: &str, time: chrono::DateTime<chrono::Utc>) -> Self {
        let mut data = crate::wal::postgres_micros(time).to_le_bytes().to_vec();
        let mut field = [0u8; 64];
        field[..name.len().min(63)].copy_from_slice(&name.as_bytes()[..name.len().min(63)]);
        data.extend_from_slice(&field);
        SyntheticRecord {
            rmid: 0,
            info: 0x70,
            xid: 0,
            body: Self::main_data(&data),
        }
    }

    /// A heap-like record carrying `len` bytes of block data (to cross pages and segments).
    pub fn filler(len: u16) -> Self {
        // Block 0: fork flags 0, data length, RelFileNode, block number; then the data.
        let mut body = vec![0u8, 0u8];
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&[0u8; 16]);
        body.extend(std::iter::repeat_n(0xAB, usize::from(len)));
        SyntheticRecord {
            rmid: 10,
            info: 0x00,
            xid: 0,
            body,
        }
    }

    /// A body holding only main data (`XLR_BLOCK_ID_DATA_SHORT` or `_LONG`).
    pub fn main_data(data: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(data.len() + 5);
        match u8::try_from(data.len()) {
            Ok(short) => body.extend_from_slice(&[255, short]),
            Err(_) => {
                body.push(254);
                body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
        }
        body.extend_from_slice(data);
        body
    }
}

/// Lays `records` out as PostgreSQL 15 does, from the start of segment `segno` (1 MiB
/// segments, 8 KiB pages) and on into the following segments as needed: page headers with
/// continuation lengths, 8-byte alignment, back links and CRC-32C. Returns the segments.
pub fn segments_with_records(segno: u64, records: &[SyntheticRecord]) -> Vec<Vec<u8>> {
    const SEGMENT: usize = 1 << 20;
    const PAGE: usize = 8192;
    let base = segno * SEGMENT as u64;
    let mut wal: Vec<u8> = Vec::new();
    // Writes `bytes` at the current end, putting page headers in as pages begin; `left` is
    // how much of the current record is still to come (for xlp_rem_len).
    let put = |wal: &mut Vec<u8>, bytes: &[u8]| {
        let mut rest = bytes;
        loop {
            if wal.len().is_multiple_of(PAGE) {
                let page_addr = base + wal.len() as u64;
                // A page that begins inside the record continues it.
                let left = if rest.len() < bytes.len() {
                    rest.len()
                } else {
                    0
                };
                let continuation = u16::from(left > 0);
                if wal.len().is_multiple_of(SEGMENT) {
                    let header = LongPageHeader {
                        pg_major: PgMajor::new(15),
                        info: 0x0002 | continuation,
                        timeline: TimelineId::FIRST,
                        page_addr: crate::wal::Lsn::new(page_addr),
                        system_id: SystemId::new(7_000_000_000_000_000_001),
                        segment_size: WalSegmentSize::new(SEGMENT as u64).unwrap(),
                        block_size: PAGE as u32,
                    };
                    let mut encoded = header.encode();
                    encoded[16..20].copy_from_slice(&(left as u32).to_le_bytes());
                    wal.extend_from_slice(&encoded);
                } else {
                    let mut short = [0u8; 24];
                    short[..2].copy_from_slice(&0xD110u16.to_le_bytes());
                    short[2..4].copy_from_slice(&continuation.to_le_bytes());
                    short[4..8].copy_from_slice(&1u32.to_le_bytes());
                    short[8..16].copy_from_slice(&page_addr.to_le_bytes());
                    short[16..20].copy_from_slice(&(left as u32).to_le_bytes());
                    wal.extend_from_slice(&short);
                }
            }
            if rest.is_empty() {
                return;
            }
            let room = PAGE - wal.len() % PAGE;
            let n = room.min(rest.len());
            wal.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if rest.is_empty() {
                return;
            }
        }
    };
    put(&mut wal, &[]); // the long header, even for a segment without records
    let mut prev = 0u64;
    for record in records {
        while !wal.len().is_multiple_of(8) {
            wal.push(0);
        }
        if wal.len().is_multiple_of(PAGE) {
            put(&mut wal, &[]);
        }
        let lsn = base + wal.len() as u64;
        let total = 24 + record.body.len();
        let mut header = [0u8; 24];
        header[..4].copy_from_slice(&(total as u32).to_le_bytes());
        header[4..8].copy_from_slice(&record.xid.to_le_bytes());
        header[8..16].copy_from_slice(&prev.to_le_bytes());
        header[16] = record.info;
        header[17] = record.rmid;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&record.body), &header[..20]);
        header[20..24].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&record.body);
        put(&mut wal, &bytes);
        prev = lsn;
    }
    let segments = wal.len().div_ceil(SEGMENT).max(1);
    wal.resize(segments * SEGMENT, 0);
    // Pages after the last record: headers, no data (as PostgreSQL initialises them).
    wal.chunks(SEGMENT).map(<[u8]>::to_vec).collect()
}
