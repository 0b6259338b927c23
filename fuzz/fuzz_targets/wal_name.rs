//! WAL file names and LSNs arrive from PostgreSQL's `%f` and from operators: any text must
//! parse or be refused without panicking, whatever parses must print back unchanged (the
//! store keys objects by the printed form), and segment numbers must map back to the name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::wal::{Lsn, SegmentName, WalFileName, WalSegmentSize};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = text.parse::<WalFileName>() {
        assert_eq!(
            name.to_string(),
            text,
            "WalFileName Display must round-trip"
        );
        assert_eq!(text.parse::<WalFileName>().ok(), Some(name));
        if let Some(segment) = name.segment() {
            for bytes in [1 << 20, 16 << 20, 1 << 30] {
                let size = WalSegmentSize::new(bytes).unwrap();
                if let Ok(segno) = segment.segment_no(size) {
                    let back = SegmentName::new(segment.timeline(), segno, size);
                    assert_eq!(&back, segment, "segment number round-trip at {size}");
                }
            }
        }
    }
    if let Ok(lsn) = text.parse::<Lsn>() {
        // Display is canonical (upper case, no leading zeros), so compare the values.
        let printed = lsn.to_string();
        assert_eq!(printed.parse::<Lsn>().ok(), Some(lsn), "Lsn {printed}");
    }
});
