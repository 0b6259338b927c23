//! Stored objects may be truncated or corrupted: decoding must return an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::codec::Codec;

/// Bigger inputs only slow the fuzzer down; the decoders' state machines are reached sooner.
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    for codec in [Codec::Zstd, Codec::Gzip] {
        let _ = codec.decode(data, 0);
    }
});
