//! Encrypted objects are read back from the store, which another writer (or damage) may have
//! changed, and key files from disk: opening must never panic, and nothing but what the key
//! sealed may ever come out. A fresh key seals a known text; the fuzzer's bytes are tried
//! as a sealed object, spliced into the real one, and as a key file.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use walarch_core::crypto::{Keyring, open_stored, sealed_key_id};

const TEXT: &[u8] = b"what the key sealed";

fn ring() -> &'static (Keyring, Vec<u8>) {
    static RING: OnceLock<(Keyring, Vec<u8>)> = OnceLock::new();
    RING.get_or_init(|| {
        let ring = Keyring::parse(&Keyring::generate()).expect("a fresh key parses");
        let sealed = ring.seal(TEXT);
        (ring, sealed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (ring, sealed) = ring();
    let _ = sealed_key_id(data);
    if let Ok(plain) = ring.open(data) {
        // Only an object this key sealed opens; the fuzzer cannot forge one.
        assert_eq!(plain, TEXT);
    }
    // The real object with the fuzzer's bytes written over part of it.
    if let Some((&at, patch)) = data.split_first() {
        let mut spliced = sealed.clone();
        let start = usize::from(at) * spliced.len() / 256;
        for (i, b) in patch.iter().enumerate().take(spliced.len() - start) {
            spliced[start + i] = *b;
        }
        match open_stored(Some(ring), spliced.clone().into(), true) {
            Ok(plain) => assert!(spliced == *sealed && plain == TEXT),
            Err(_) => assert!(spliced != *sealed),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Keyring::parse(text);
    }
});
