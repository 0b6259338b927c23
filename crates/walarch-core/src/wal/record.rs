//! WAL record decoding, as far as recovery targets need it: where each record starts and ends,
//! and for transaction commits and aborts and restore points, their time, transaction id and
//! name. Pure code (segment bytes in, records out), so it is fuzzed.
//!
//! The reading follows PostgreSQL's `xlogreader.c`: every page opens with a header (long on a
//! segment's first page); records are 8-byte aligned, may cross page and segment boundaries
//! (the continuation pages say how much of the record is left in `xlp_rem_len`); a record is
//! accepted only when its CRC-32C and its back link (`xl_prev`) are right. Where the WAL
//! stops being valid (zeroes after a switch, a recycled page from an older segment, a torn
//! record) decoding ends, and the end says why: that is the end of what recovery can replay.
//!
//! Record layout (`XLogRecord`, 24 bytes, little-endian):
//! ```text
//!  0 u32 xl_tot_len   4 u32 xl_xid   8 u64 xl_prev   16 u8 xl_info   17 u8 xl_rmid
//! 18 (padding)       20 u32 xl_crc  -- then block headers, main-data header, data
//! ```

use chrono::{DateTime, TimeDelta, Utc};

use super::page::{XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER};
use super::{LongPageHeader, Lsn, PgMajor, WalError};

/// `SizeOfXLogRecord`.
const RECORD_HEADER_LEN: usize = 24;
/// `SizeOfXLogShortPHD`.
const SHORT_PAGE_HEADER_LEN: usize = 24;
/// PostgreSQL refuses records larger than `XLogRecordMaxSize` (1020 MiB).
const MAX_RECORD_LEN: u32 = 1020 * 1024 * 1024;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;

/// `MAXFNAMELEN`: the size of a restore point's name field.
const RESTORE_POINT_NAME_LEN: usize = 64;

/// What a record means for recovery targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordEvent {
    /// A transaction committed (`recovery_target_time` and `_xid` stop at these).
    Commit {
        /// The committed transaction's ID (for `COMMIT PREPARED`, the prepared transaction's).
        xid: u32,
        /// The commit timestamp (`xact_time`).
        time: DateTime<Utc>,
    },
    /// A transaction aborted (also a possible stopping point for time and xid targets).
    Abort {
        /// The aborted transaction's ID (for `ROLLBACK PREPARED`, the prepared transaction's).
        xid: u32,
        /// The abort timestamp (`xact_time`).
        time: DateTime<Utc>,
    },
    /// `pg_create_restore_point(name)` (`recovery_target_name`).
    RestorePoint {
        /// The restore point's name (`rp_name`).
        name: String,
        /// When the restore point was created (`rp_time`).
        time: DateTime<Utc>,
    },
    /// `pg_switch_wal()`: the rest of the segment is unused.
    Switch,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where it ends (the first byte after it, before alignment): replaying it reaches here.
    pub end: Lsn,
    /// The resource manager that wrote the record (`xl_rmid`).
    pub rmid: u8,
    /// The record's info bits (`xl_info`); the meaning of the upper four depends on the resource
    /// manager.
    pub info: u8,
    /// The transaction ID in the record header (`xl_xid`); 0 for records written outside a
    /// transaction.
    pub xid: u32,
    /// What the record means for recovery targets; `None` for all other records.
    pub event: Option<RecordEvent>,
}

/// Why decoding of a segment stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeEnd {
    /// The segment was read to its end; WAL continues in the next segment.
    SegmentEnd,
    /// A WAL switch record: the rest of the segment is unused, WAL continues in the next one.
    Switch,
    /// Valid WAL ends at `at` (zeroes, a page or record that is not the continuation of what
    /// came before, a torn or truncated record). Recovery from this archive cannot go further
    /// unless a later segment continues the WAL.
    Invalid {
        /// The first position that is not valid WAL.
        at: Lsn,
        /// Why the WAL at `at` is not accepted.
        reason: String,
    },
}

/// The records decoded from one segment, and where and why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecords {
    /// The WAL position of the segment's first byte (its `xlp_pageaddr`).
    pub segment_start: Lsn,
    /// The records that start in this segment (or finish in it, having started in the previous
    /// one), in WAL order.
    pub records: Vec<WalRecord>,
    /// Where and why decoding of the segment stopped.
    pub end: DecodeEnd,
}

/// A record begun in one page whose rest is on the following pages.
#[derive(Debug, Clone)]
struct PartialRecord {
    lsn: Lsn,
    total: usize,
    bytes: Vec<u8>,
}

/// Decodes consecutive segments of one timeline. Fed one segment at a time, it completes
/// records that cross from one segment into the next; fed a segment that does not follow the
/// previous one, it starts afresh (skipping the tail of a record whose start it never saw).
#[derive(Debug, Clone, Default)]
pub struct WalDecoder {
    partial: Option<PartialRecord>,
    /// Start of the last accepted record, which the next record's `xl_prev` must name.
    last_record: Option<Lsn>,
    /// Where the next segment must begin for the state above to carry over.
    next_segment: Option<Lsn>,
}

impl WalDecoder {
    /// A decoder with no carried-over state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the segment whose whole content is `bytes` (a shorter slice decodes what is
    /// there and ends as truncated). Errors only when the first page is not a WAL segment's
    /// long header; anything wrong later ends decoding with [`DecodeEnd::Invalid`].
    pub fn decode_segment(&mut self, bytes: &[u8]) -> Result<SegmentRecords, WalError> {
        let header = LongPageHeader::decode(bytes)?;
        let segment_start = header.page_addr;
        if self.next_segment != Some(segment_start) {
            self.partial = None;
            self.last_record = None;
        }
        let mut run = SegmentRun {
            decoder: self,
            bytes: &bytes[..bytes.len().min(header.segment_size.bytes() as usize)],
            header,
            records: Vec::new(),
        };
        let end = run.decode();
        let records = run.records;
        self.next_segment = match end {
            DecodeEnd::Invalid { .. } => None,
            DecodeEnd::Switch => {
                self.partial = None;
                segment_start.checked_add(header.segment_size.bytes())
            }
            DecodeEnd::SegmentEnd => segment_start.checked_add(header.segment_size.bytes()),
        };
        if self.next_segment.is_none() {
            self.partial = None;
            self.last_record = None;
        }
        Ok(SegmentRecords {
            segment_start,
            records,
            end,
        })
    }
}

/// What a [`WalDecoder`] carries from one segment into the next, without the bytes of a record
/// still in progress: enough to tell whether two decoders would read the next segment the same
/// way (given the same bytes), and to resume one where no record is in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DecoderState {
    /// Where the next segment must begin for the state to carry over.
    pub next_segment: Option<u64>,
    /// Start of the last accepted record (the next record's `xl_prev`).
    pub last_record: Option<u64>,
    /// A record begun but not finished: its start, total length and the bytes read so far.
    pub carry: Option<CarriedRecord>,
}

/// A record in progress across a segment boundary, by position and length only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CarriedRecord {
    /// Where the record starts.
    pub lsn: u64,
    /// Its total length (`xl_tot_len`).
    pub total: u64,
    /// How many of its bytes were read.
    pub have: u64,
}

impl WalDecoder {
    /// The state this decoder carries into the next segment.
    pub(crate) fn state(&self) -> DecoderState {
        DecoderState {
            next_segment: self.next_segment.map(Lsn::as_u64),
            last_record: self.last_record.map(Lsn::as_u64),
            carry: self.partial.as_ref().map(|p| CarriedRecord {
                lsn: p.lsn.as_u64(),
                total: p.total as u64,
                have: p.bytes.len() as u64,
            }),
        }
    }

    /// A decoder in `state`, which must carry no record in progress (its bytes are not in
    /// the state): exactly the decoder that produced `state`.
    pub(crate) fn resume(state: &DecoderState) -> Self {
        debug_assert!(state.carry.is_none(), "a carried record needs its bytes");
        WalDecoder {
            partial: None,
            last_record: state.last_record.map(Lsn::new),
            next_segment: state.next_segment.map(Lsn::new),
        }
    }

    /// Sets the start of the last accepted record, which the next record must point back to.
    pub(crate) fn set_last_record(&mut self, last_record: Option<u64>) {
        self.last_record = last_record.map(Lsn::new);
    }
}

/// Decoding of one segment.
struct SegmentRun<'a> {
    decoder: &'a mut WalDecoder,
    bytes: &'a [u8],
    header: LongPageHeader,
    records: Vec<WalRecord>,
}

/// A page header's fields that matter for reading records.
struct PageHeader {
    len: usize,
    continuation: bool,
    overwrites_contrecord: bool,
    rem_len: u32,
}

impl SegmentRun<'_> {
    fn lsn_at(&self, offset: usize) -> Lsn {
        Lsn::new(self.header.page_addr.as_u64() + offset as u64)
    }

    fn invalid(&self, offset: usize, reason: impl Into<String>) -> DecodeEnd {
        DecodeEnd::Invalid {
            at: self.lsn_at(offset),
            reason: reason.into(),
        }
    }

    fn decode(&mut self) -> DecodeEnd {
        let block = self.header.block_size as usize;
        let segment_len = self.header.segment_size.bytes() as usize;
        let mut page_start = 0;
        while page_start < segment_len {
            if page_start >= self.bytes.len() {
                return self.invalid(page_start, "segment is truncated");
            }
            let page_end = (page_start + block).min(self.bytes.len());
            let page = match self.page_header(page_start) {
                Ok(page) => page,
                Err(reason) => return self.invalid(page_start, reason),
            };
            let mut at = page_start + page.len;
            let resumes = self.decoder.partial.as_ref().is_some_and(|partial| {
                page.continuation && page.rem_len as usize == partial.total - partial.bytes.len()
            });
            if !resumes && self.decoder.partial.is_some() {
                if !page.overwrites_contrecord {
                    // PostgreSQL ends WAL here: the record it was reading is not continued.
                    return self.invalid(
                        page_start,
                        "the record begun on the previous page is not continued here",
                    );
                }
                // A crash left the record unfinished and PostgreSQL wrote on after it,
                // marking the page (XLP_FIRST_IS_OVERWRITE_CONTRECORD): drop the record and
                // read on, as recovery does.
                self.decoder.partial = None;
                self.decoder.last_record = None;
            }
            if let Some(partial) = self.decoder.partial.as_mut() {
                let left = partial.total - partial.bytes.len();
                let take = left.min(page_end - at);
                partial.bytes.extend_from_slice(&self.bytes[at..at + take]);
                at += take;
                if partial.bytes.len() < partial.total {
                    if page_end - page_start < block {
                        return self.invalid(page_end, "segment is truncated inside a record");
                    }
                    page_start += block;
                    continue;
                }
                let partial = self.decoder.partial.take().expect("checked above");
                match self.accept(partial, at) {
                    Ok(true) => return DecodeEnd::Switch,
                    Ok(false) => {}
                    Err(end) => return end,
                }
                at = align8(at);
            } else if page.continuation {
                // The tail of a record whose start is in a segment we were not given.
                let skip = page.rem_len as usize;
                if skip >= page_end - at {
                    page_start += block;
                    continue;
                }
                at = align8(at + skip);
            }
            // Records that start on this page.
            while at + 4 <= page_end {
                let total = u32_at(self.bytes, at);
                if total == 0 {
                    return self.invalid(at, "no record here (zeroes: end of WAL)");
                }
                if (total as usize) < RECORD_HEADER_LEN || total > MAX_RECORD_LEN {
                    return self.invalid(at, format!("invalid record length {total}"));
                }
                let take = (total as usize).min(page_end - at);
                let partial = PartialRecord {
                    lsn: self.lsn_at(at),
                    total: total as usize,
                    bytes: self.bytes[at..at + take].to_vec(),
                };
                at += take;
                if partial.bytes.len() < partial.total {
                    if page_end - page_start < block {
                        return self.invalid(page_end, "segment is truncated inside a record");
                    }
                    self.decoder.partial = Some(partial);
                    break;
                }
                match self.accept(partial, at) {
                    Ok(true) => return DecodeEnd::Switch,
                    Ok(false) => {}
                    Err(end) => return end,
                }
                at = align8(at);
            }
            if page_end - page_start < block {
                return self.invalid(page_end, "segment is truncated");
            }
            page_start += block;
        }
        DecodeEnd::SegmentEnd
    }

    /// Reads and checks the header of the page at `offset`: same format as the segment's
    /// first page, and addressed where it lies (a recycled page from an older segment is not).
    fn page_header(&self, offset: usize) -> Result<PageHeader, String> {
        let bytes = &self.bytes[offset..];
        if bytes.len() < SHORT_PAGE_HEADER_LEN {
            return Err("page header is truncated".into());
        }
        let magic = u16_at(bytes, 0);
        let info = u16_at(bytes, 2);
        let page_addr = Lsn::new(u64_at(bytes, 8));
        if PgMajor::from_page_magic(magic).ok() != Some(self.header.pg_major) {
            return Err(format!(
                "page magic {magic:#06X} differs from the segment's"
            ));
        }
        if page_addr != self.lsn_at(offset) {
            return Err(format!(
                "page is addressed {page_addr}, not {} (a recycled page)",
                self.lsn_at(offset)
            ));
        }
        let long = info & XLP_LONG_HEADER != 0;
        if long != (offset == 0) {
            return Err("long page header flag in the wrong place".into());
        }
        Ok(PageHeader {
            len: if long {
                super::XLOG_LONG_PAGE_HEADER_LEN
            } else {
                SHORT_PAGE_HEADER_LEN
            },
            continuation: info & XLP_FIRST_IS_CONTRECORD != 0,
            overwrites_contrecord: info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0,
            rem_len: u32_at(bytes, 16),
        })
    }

    /// Checks a complete record and keeps it; `Ok(true)` for a WAL switch. `end_offset` is
    /// the segment offset just past the record.
    fn accept(&mut self, partial: PartialRecord, end_offset: usize) -> Result<bool, DecodeEnd> {
        let record = &partial.bytes;
        let invalid = |reason: String| DecodeEnd::Invalid {
            at: partial.lsn,
            reason,
        };
        let prev = Lsn::new(u64_at(record, 8));
        if let Some(last) = self.decoder.last_record
            && prev != last
        {
            return Err(invalid(format!(
                "record points back to {prev}, not to the previous record at {last}"
            )));
        }
        let stored_crc = u32_at(record, 20);
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&record[RECORD_HEADER_LEN..]), &record[..20]);
        if crc != stored_crc {
            return Err(invalid("record checksum mismatch".into()));
        }
        let decoded = decode_record(record, self.header.pg_major)
            .map_err(|reason| invalid(format!("malformed record: {reason}")))?;
        let is_switch = decoded.rmid == RM_XLOG_ID && decoded.info & 0xF0 == XLOG_SWITCH;
        self.decoder.last_record = Some(partial.lsn);
        self.records.push(WalRecord {
            lsn: partial.lsn,
            end: self.lsn_at(end_offset),
            ..decoded
        });
        Ok(is_switch)
    }
}

/// Decodes one complete, checksum-verified record: header fields and, for the records that
/// recovery targets stop at, the event. The `lsn`/`end` fields are left for the caller.
fn decode_record(record: &[u8], major: PgMajor) -> Result<WalRecord, String> {
    let xid = u32_at(record, 4);
    let info = record[16];
    let rmid = record[17];
    let main_data = main_data(&record[RECORD_HEADER_LEN..], major)?;
    let event = match (rmid, info) {
        (RM_XLOG_ID, info) if info & 0xF0 == XLOG_SWITCH => Some(RecordEvent::Switch),
        (RM_XLOG_ID, info) if info & 0xF0 == XLOG_RESTORE_POINT => {
            let time = timestamp(main_data)?;
            let name_field = main_data
                .get(8..8 + RESTORE_POINT_NAME_LEN)
                .ok_or("restore point record is too short")?;
            let name_len = name_field
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_field.len());
            Some(RecordEvent::RestorePoint {
                name: String::from_utf8_lossy(&name_field[..name_len]).into_owned(),
                time,
            })
        }
        (RM_XACT_ID, info) => {
            let op = info & XLOG_XACT_OPMASK;
            let commit = matches!(op, XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED);
            let abort = matches!(op, XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED);
            if commit || abort {
                let time = timestamp(main_data)?;
                let prepared = matches!(op, XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_ABORT_PREPARED);
                let xid = if prepared && info & XLOG_XACT_HAS_INFO != 0 {
                    prepared_xid(&main_data[8..], commit, major).unwrap_or(xid)
                } else {
                    xid
                };
                Some(if commit {
                    RecordEvent::Commit { xid, time }
                } else {
                    RecordEvent::Abort { xid, time }
                })
            } else {
                None
            }
        }
        _ => None,
    };
    Ok(WalRecord {
        lsn: Lsn::new(0),
        end: Lsn::new(0),
        rmid,
        info,
        xid,
        event,
    })
}

/// The record's main data: walks the block headers (as `DecodeXLogRecord` does) to learn the
/// main data's length; it is the last part of the record.
fn main_data(body: &[u8], major: PgMajor) -> Result<&[u8], String> {
    const BLOCK_ID_DATA_SHORT: u8 = 255;
    const BLOCK_ID_DATA_LONG: u8 = 254;
    const BLOCK_ID_ORIGIN: u8 = 253;
    const BLOCK_ID_TOPLEVEL_XID: u8 = 252;
    const MAX_BLOCK_ID: u8 = 32;
    const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
    const BKPBLOCK_SAME_REL: u8 = 0x80;
    const BKPIMAGE_HAS_HOLE: u8 = 0x01;

    let mut cursor = Cursor { bytes: body, at: 0 };
    let mut data_total: usize = 0;
    let mut main_len: usize = 0;
    while body.len() - cursor.at > data_total {
        match cursor.u8()? {
            BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(cursor.u8()?);
                data_total += main_len;
                break;
            }
            BLOCK_ID_DATA_LONG => {
                main_len = cursor.u32()? as usize;
                data_total += main_len;
                break;
            }
            BLOCK_ID_ORIGIN => cursor.skip(2)?,
            BLOCK_ID_TOPLEVEL_XID => cursor.skip(4)?,
            id if id <= MAX_BLOCK_ID => {
                let fork_flags = cursor.u8()?;
                data_total += usize::from(cursor.u16()?);
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    data_total += usize::from(cursor.u16()?); // bimg_len
                    cursor.skip(2)?; // hole_offset
                    let bimg_info = cursor.u8()?;
                    // Before 15 one bit said "compressed"; since 15 one bit per method.
                    let compressed = if major.get() >= 15 {
                        bimg_info & (0x04 | 0x08 | 0x10) != 0
                    } else {
                        bimg_info & 0x02 != 0
                    };
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && compressed {
                        cursor.skip(2)?; // hole_length
                    }
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    cursor.skip(12)?; // RelFileNode
                }
                cursor.skip(4)?; // BlockNumber
            }
            other => return Err(format!("invalid block id {other}")),
        }
    }
    if body.len() - cursor.at != data_total {
        return Err("block data lengths do not add up to the record length".into());
    }
    Ok(&body[body.len() - main_len..])
}

/// The transaction id of a prepared transaction's commit or abort (`xl_xact_twophase`),
/// after the optional parts that precede it (`ParseCommitRecord` / `ParseAbortRecord`).
fn prepared_xid(after_time: &[u8], commit: bool, major: PgMajor) -> Option<u32> {
    const HAS_DBINFO: u32 = 1 << 0;
    const HAS_SUBXACTS: u32 = 1 << 1;
    const HAS_RELFILENODES: u32 = 1 << 2;
    const HAS_INVALS: u32 = 1 << 3;
    const HAS_TWOPHASE: u32 = 1 << 4;
    const HAS_DROPPED_STATS: u32 = 1 << 8;

    let mut cursor = Cursor {
        bytes: after_time,
        at: 0,
    };
    let xinfo = cursor.u32().ok()?;
    if xinfo & HAS_DBINFO != 0 {
        cursor.skip(8).ok()?;
    }
    let mut skip_array = |flag: u32, item: usize| -> Option<()> {
        if xinfo & flag != 0 {
            let count = cursor.u32().ok()? as usize;
            cursor.skip(count.checked_mul(item)?).ok()?;
        }
        Some(())
    };
    skip_array(HAS_SUBXACTS, 4)?;
    skip_array(HAS_RELFILENODES, 12)?;
    // `xl_xact_stats_item`: kind, dboid, objoid (12 bytes) in 15 to 17; 18 widened the object
    // id to 64 bits (objid_lo, objid_hi: 16 bytes).
    match major.get() {
        15..=17 => skip_array(HAS_DROPPED_STATS, 12)?,
        18.. => skip_array(HAS_DROPPED_STATS, 16)?,
        _ => {}
    }
    if commit {
        skip_array(HAS_INVALS, 16)?;
    }
    if xinfo & HAS_TWOPHASE == 0 {
        return None;
    }
    cursor.u32().ok()
}

/// A `TimestampTz` (microseconds since 2000-01-01 00:00 UTC) at the start of `data`.
fn timestamp(data: &[u8]) -> Result<DateTime<Utc>, String> {
    let micros = i64::from_le_bytes(
        data.get(..8)
            .ok_or("record too short for its timestamp")?
            .try_into()
            .expect("8 bytes"),
    );
    postgres_epoch()
        .checked_add_signed(TimeDelta::microseconds(micros))
        .ok_or_else(|| format!("timestamp {micros} out of range"))
}

/// PostgreSQL's timestamp epoch.
fn postgres_epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01 is representable")
}

/// Microseconds since PostgreSQL's epoch (the inverse of `timestamp`; for tests and seeds).
pub fn postgres_micros(time: DateTime<Utc>) -> i64 {
    (time - postgres_epoch())
        .num_microseconds()
        .unwrap_or(i64::MAX)
}

fn align8(offset: usize) -> usize {
    (offset + 7) & !7
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Bounds-checked reading of a record's header section.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or("record header section is truncated")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16_at(self.take(2)?, 0))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SyntheticRecord, segments_with_records};

    fn at(seconds: i64, micros: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, micros * 1000).unwrap()
    }

    #[test]
    fn reads_commit_times_restore_point_names_and_record_bounds() {
        let records = [
            SyntheticRecord::commit(500, at(1_800_000_000, 123_456)),
            SyntheticRecord::restore_point("before-delete", at(1_800_000_001, 7)),
            SyntheticRecord::commit(501, at(1_800_000_002, 0)),
        ];
        let segments = segments_with_records(3, &records);
        let decoded = WalDecoder::new().decode_segment(&segments[0]).unwrap();
        let events: Vec<_> = decoded.records.iter().map(|r| r.event.clone()).collect();
        assert_eq!(
            events,
            vec![
                Some(RecordEvent::Commit {
                    xid: 500,
                    time: at(1_800_000_000, 123_456)
                }),
                Some(RecordEvent::RestorePoint {
                    name: "before-delete".into(),
                    time: at(1_800_000_001, 7)
                }),
                Some(RecordEvent::Commit {
                    xid: 501,
                    time: at(1_800_000_002, 0)
                }),
            ]
        );
        assert_eq!(decoded.records[0].lsn, Lsn::new(3 * (1 << 20) + 40));
        assert_eq!(
            decoded.records[0].end,
            Lsn::new(3 * (1 << 20) + 40 + 24 + 2 + 8)
        );
        assert!(
            matches!(decoded.end, DecodeEnd::Invalid { .. }),
            "zeroes end it"
        );
    }

    #[test]
    fn a_record_crossing_into_the_next_segment_is_completed_from_it() {
        // 130 records of 8 KB fill the segment; the 20 KB one after them runs into the next.
        let mut records = vec![SyntheticRecord::commit(1, at(1_800_000_000, 0))];
        records.extend(std::iter::repeat_n(SyntheticRecord::filler(8000), 130));
        records.push(SyntheticRecord::filler(20_000));
        records.push(SyntheticRecord::commit(2, at(1_800_000_100, 0)));
        let segments = segments_with_records(7, &records);
        assert_eq!(segments.len(), 2);
        let mut decoder = WalDecoder::new();
        let first = decoder.decode_segment(&segments[0]).unwrap();
        assert_eq!(first.end, DecodeEnd::SegmentEnd);
        let second = decoder.decode_segment(&segments[1]).unwrap();
        assert_eq!(first.records.len() + second.records.len(), records.len());
        let crossing = &second.records[0];
        assert!(crossing.lsn < second.segment_start && crossing.end > second.segment_start);
        assert_eq!(
            second.records.last().unwrap().event,
            Some(RecordEvent::Commit {
                xid: 2,
                time: at(1_800_000_100, 0)
            })
        );
        // Alone, the second segment skips the tail it cannot complete and reads on.
        let alone = WalDecoder::new().decode_segment(&segments[1]).unwrap();
        assert_eq!(alone.records, second.records[1..]);
    }

    #[test]
    fn a_record_whose_back_link_is_wrong_ends_the_wal() {
        let records = [
            SyntheticRecord::commit(1, at(1_800_000_000, 0)),
            SyntheticRecord::commit(2, at(1_800_000_001, 0)),
        ];
        let mut segment = segments_with_records(1, &records).remove(0);
        // Point the second record's xl_prev elsewhere and fix its CRC: only the link is wrong.
        let second = WalDecoder::new().decode_segment(&segment).unwrap().records[1].clone();
        let offset = (second.lsn.as_u64() - (1 << 20)) as usize;
        segment[offset + 8..offset + 16].copy_from_slice(&0x1234u64.to_le_bytes());
        let total = u32_at(&segment, offset) as usize;
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&segment[offset + 24..offset + total]),
            &segment[offset..offset + 20],
        );
        segment[offset + 20..offset + 24].copy_from_slice(&crc.to_le_bytes());
        let decoded = WalDecoder::new().decode_segment(&segment).unwrap();
        assert_eq!(decoded.records.len(), 1);
        match decoded.end {
            DecodeEnd::Invalid { at, reason } => {
                assert_eq!(at, second.lsn);
                assert!(reason.contains("points back"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_a_segment_is_an_error() {
        assert!(WalDecoder::new().decode_segment(&[0u8; 100]).is_err());
        assert!(WalDecoder::new().decode_segment(&[]).is_err());
    }
}
