//! The long page header is read from files walarch is about to archive or hand back to
//! PostgreSQL: arbitrary bytes must decode or be refused, and a decoded header must survive
//! encode/decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::archive::{validate_segment, validate_wal_content};
use walarch_core::wal::{LongPageHeader, WalFileName};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = LongPageHeader::decode(data) {
        let again = LongPageHeader::decode(&header.encode());
        assert_eq!(
            again.as_ref().ok(),
            Some(&header),
            "encode/decode round-trip"
        );
    }
    let name: WalFileName = "000000010000000000000003".parse().unwrap();
    // Whole content: inputs are small, so this mostly ends at the length check.
    let _ = validate_wal_content(&name, data);
    // Streaming check with the length of a 16 MiB segment: reaches the name matching.
    if let Ok(header) = validate_segment(&name, data, 16 << 20) {
        assert_eq!(LongPageHeader::decode(data).ok(), Some(header));
    }
});
