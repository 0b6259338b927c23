//! Timeline history files come from the archive, possibly written by another tool or
//! damaged: parsing, and opening the checksum line walarch stores them with, must never
//! panic, and a history that opens is exactly what was sealed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::archive::stored::{open_history, seal_history};
use walarch_core::wal::TimelineHistory;

fuzz_target!(|data: &[u8]| {
    let _ = TimelineHistory::parse(data);
    if let Ok(content) = open_history(data) {
        assert_eq!(seal_history(content), data, "an opened history re-seals to its object");
        let _ = TimelineHistory::parse(content);
    }
    if data.is_empty() || data.ends_with(b"\n") {
        assert_eq!(open_history(&seal_history(data)), Ok(data));
    }
});
