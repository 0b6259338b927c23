//! Timeline history files come from the archive, possibly written by another tool: parsing
//! must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::wal::TimelineHistory;

fuzz_target!(|data: &[u8]| {
    let _ = TimelineHistory::parse(data);
});
