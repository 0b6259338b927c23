//! Stored objects may be truncated, corrupted or hostile: decoding must return an error,
//! never panic, never exceed its output bound, and the buffered (`decode`) and streaming
//! (`decode_into`, what wal-fetch uses) paths must agree.
#![no_main]

use std::io::{self, Write};

use libfuzzer_sys::fuzz_target;
use walarch_core::archive::stored::check_checksummed;
use walarch_core::codec::Codec;
use walarch_core::wal::WalFileName;

/// Bigger inputs only slow the fuzzer down; the decoders' state machines are reached sooner.
const MAX_INPUT: usize = 64 * 1024;
/// Output bound for both paths: a 64 KiB zstd input can describe gigabytes of output.
const MAX_DECODED: usize = 1 << 20;

/// A writer that refuses to grow past `MAX_DECODED`, as wal-fetch's sink stops at the
/// segment size.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_DECODED {
            return Err(io::Error::other("output bound reached"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let segment: WalFileName = "000000010000000000000002".parse().expect("a segment name");
    for codec in Codec::ALL {
        let _ = check_checksummed(&segment, codec, data);
    }
    for codec in [Codec::Zstd, Codec::Gzip] {
        let buffered = codec.decode(data, MAX_DECODED);
        if let Ok(out) = &buffered {
            assert!(out.len() <= MAX_DECODED, "{codec}: decode exceeded max_len");
        }
        let mut sink = Capped(Vec::new());
        let streamed = codec.decode_into(data, &mut sink);
        match (&buffered, &streamed) {
            (Ok(out), Ok(written)) => {
                assert_eq!(*written, out.len() as u64, "{codec}: lengths differ");
                assert_eq!(&sink.0, out, "{codec}: decoded bytes differ");
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{codec}: decode gave {a:?}, decode_into gave {b:?}"),
        }
    }
});
