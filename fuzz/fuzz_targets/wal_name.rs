//! WAL file names and LSNs arrive from PostgreSQL's `%f` and from operators: any text must
//! parse or be refused without panicking, and whatever parses must print back unchanged
//! (the store keys objects by the printed form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::wal::{Lsn, WalFileName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = text.parse::<WalFileName>() {
        assert_eq!(name.to_string(), text, "WalFileName Display must round-trip");
        assert_eq!(text.parse::<WalFileName>().ok(), Some(name));
    }
    if let Ok(lsn) = text.parse::<Lsn>() {
        // Display is canonical (upper case, no leading zeros), so compare the values.
        let printed = lsn.to_string();
        assert_eq!(printed.parse::<Lsn>().ok(), Some(lsn), "Lsn {printed}");
    }
});
