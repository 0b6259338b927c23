//! The WAL record decoder reads segments from the store to find commit times: arbitrary bytes
//! must decode or end cleanly, never panic. Two shapes of input: raw bytes behind a valid long
//! page header (what a damaged segment looks like), and well-formed WAL built from the input's
//! records (page headers, continuations, CRCs right), so the fuzzer reaches the record parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::testing::{SyntheticRecord, segments_with_records};
use walarch_core::wal::{DecodeEnd, WalDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Raw: the input after a valid first page header, cut at the input's length.
        let mut segment = segments_with_records(1, &[]).remove(0);
        let len = (40 + rest.len()).min(segment.len());
        segment[40..len].copy_from_slice(&rest[..len - 40]);
        let decoded = WalDecoder::new().decode_segment(&segment[..len.max(64)]);
        if let Ok(decoded) = decoded {
            assert!(decoded.records.iter().all(|r| r.end > r.lsn));
        }
        return;
    }
    // Records: [rmid, info, len_lo, len_hi, body...] repeated.
    let mut records = Vec::new();
    let mut input = rest;
    while input.len() >= 4 && records.len() < 64 {
        let len = usize::from(u16::from_le_bytes([input[2], input[3]])).min(input.len() - 4);
        records.push(SyntheticRecord {
            rmid: input[0],
            info: input[1],
            xid: len as u32,
            body: input[4..4 + len].to_vec(),
        });
        input = &input[4 + len..];
    }
    let mut decoder = WalDecoder::new();
    let mut decoded = 0;
    for segment in segments_with_records(2, &records) {
        let result = decoder.decode_segment(&segment).expect("valid first page");
        decoded += result.records.len();
        if let DecodeEnd::Invalid { .. } = result.end {
            break;
        }
    }
    assert!(decoded <= records.len());
});
