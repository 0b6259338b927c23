//! Compression of stored objects: zstd (default), gzip or none, in their standard formats so
//! that an operator can restore by hand with `zstd -d` or `gunzip`. zstd frames carry their
//! content checksum and gzip members their CRC-32, so decoding also verifies the data.
//!
//! "none" still stores a checksum (DESIGN.md §2.11): the data goes uncompressed into a gzip
//! member made of deflate's stored blocks (5 bytes of framing per 64 KiB, no compression
//! work), whose CRC-32 and length `gunzip` and every fetch check. [`Codec::None`] is the
//! format of objects stored as raw bytes, which carry no checksum of their own: history
//! files, sealed with a checksum line of their own (`archive::stored`), and objects written
//! by hand or by an earlier walarch.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

/// The format of a stored object; fixes its file-name extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum Codec {
    /// A zstd frame with its content checksum; key extension `.zst`.
    Zstd,
    /// A gzip member; key extension `.gz`. Also what `compression = none` writes.
    Gzip,
    /// Raw bytes under the file's own name, with no checksum of their own.
    None,
}

impl Codec {
    /// Every codec: zstd, gzip, none.
    pub const ALL: [Codec; 3] = [Codec::Zstd, Codec::Gzip, Codec::None];

    /// Extension appended to the object key; `None` stores the file under its own name.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Codec::Zstd => Some("zst"),
            Codec::Gzip => Some("gz"),
            Codec::None => None,
        }
    }

    /// The codec a key extension (without the dot) names; `None` for any other extension.
    pub fn from_extension(ext: &str) -> Option<Codec> {
        match ext {
            "zst" => Some(Codec::Zstd),
            "gz" => Some(Codec::Gzip),
            _ => None,
        }
    }

    /// Decodes `data` into `out` without holding the decoded bytes in memory. Returns the
    /// number of bytes written. Errors from `out` and from the data come back alike as
    /// `io::Error`; a caller that must tell them apart watches its writer.
    pub fn decode_into<W: Write>(self, data: &[u8], out: &mut W) -> std::io::Result<u64> {
        // Decoded bytes reach `out` in 1 MiB writes: with `io::copy`'s own 8 KiB buffer a
        // 16 MiB segment took 2048 write calls, and a one-shot wal-fetch 15 % longer. (`io::copy`
        // decodes straight into a `BufWriter`'s buffer.)
        let mut out = std::io::BufWriter::with_capacity(DECODE_BUFFER_SIZE, out);
        let decoded = match self {
            Codec::Zstd => zstd::stream::read::Decoder::with_buffer(data)
                .and_then(|mut decoder| std::io::copy(&mut decoder, &mut out)),
            Codec::Gzip => std::io::copy(&mut flate2::bufread::GzDecoder::new(data), &mut out),
            Codec::None => out.write_all(data).map(|()| data.len() as u64),
        }
        .and_then(|written| out.flush().map(|()| written));
        if decoded.is_err() {
            // Dropped unwritten: a BufWriter's drop would hand `out` the buffer again, after
            // it (or the data) already failed.
            let _ = out.into_parts();
        }
        decoded
    }

    /// Decodes a whole object of at most `max_len` decoded bytes (a corrupt or hostile object
    /// must not exhaust memory). Truncated or corrupted input is an error, never short output.
    pub fn decode(self, data: &[u8], max_len: usize) -> Result<Vec<u8>, CodecError> {
        // Reserving up front keeps the output from being copied as it grows (2.4x faster on
        // 16 MiB segments); untouched reserved pages cost nothing.
        let mut out = Vec::with_capacity(max_len.saturating_add(1).min(64 << 20));
        let limit = max_len as u64 + 1;
        let result = match self {
            Codec::Zstd => zstd::stream::read::Decoder::with_buffer(data)
                .and_then(|d| d.take(limit).read_to_end(&mut out)),
            Codec::Gzip => flate2::bufread::GzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out),
            Codec::None => data.take(limit).read_to_end(&mut out),
        };
        result.map_err(|source| CodecError::Corrupt {
            codec: self,
            source,
        })?;
        if out.len() > max_len {
            return Err(CodecError::TooLarge {
                codec: self,
                max_len,
            });
        }
        Ok(out)
    }
}

/// The buffer [`Codec::decode_into`] collects decoded bytes in before each write.
const DECODE_BUFFER_SIZE: usize = 1 << 20;

impl From<Codec> for String {
    fn from(codec: Codec) -> String {
        codec.to_string()
    }
}

impl TryFrom<String> for Codec {
    type Error = CodecError;
    fn try_from(name: String) -> Result<Codec, CodecError> {
        name.parse()
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
            Codec::None => "none",
        })
    }
}

/// A codec with its level: what the writer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    codec: Codec,
    level: i32,
    /// zstd's minimum match length, when walarch chose the level itself (see
    /// [`Compression::WAL_MIN_MATCH`]); `None` keeps zstd's default for the level.
    min_match: Option<u32>,
}

impl Compression {
    /// zstd level 1: WAL compresses well already at the fastest level, and archive latency
    /// is what limits PostgreSQL's serial archiver.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
    /// Minimum match length used with the default level. WAL is made of 8-byte aligned
    /// structures; on real pgbench WAL, matches from 5 bytes stored 13 % less than level 1's
    /// default of 6, at the same speed, and less than level 3 (benches/README.md).
    pub const WAL_MIN_MATCH: u32 = 5;
    /// gzip level used when none is given.
    pub const DEFAULT_GZIP_LEVEL: i32 = 6;

    /// The compression for `codec` at `level` (`None`: walarch's default for the codec).
    /// [`Codec::None`] gives gzip without compression (level 0): see the module documentation.
    pub fn new(codec: Codec, level: Option<i32>) -> Result<Self, CodecError> {
        if codec == Codec::None {
            return Ok(Compression {
                codec: Codec::Gzip,
                level: 0,
                min_match: None,
            });
        }
        let min_match = (codec == Codec::Zstd && level.is_none()).then_some(Self::WAL_MIN_MATCH);
        let level = match (codec, level) {
            (Codec::Zstd, None) => Self::DEFAULT_ZSTD_LEVEL,
            (Codec::Gzip, None) => Self::DEFAULT_GZIP_LEVEL,
            (Codec::None, _) => unreachable!("handled above"),
            (Codec::Zstd, Some(l)) if zstd::compression_level_range().contains(&l) => l,
            (Codec::Gzip, Some(l)) if (0..=9).contains(&l) => l,
            (_, Some(level)) => return Err(CodecError::InvalidLevel { codec, level }),
        };
        Ok(Compression {
            codec,
            level,
            min_match,
        })
    }

    /// The format objects are stored in (gzip for "none").
    pub fn codec(self) -> Codec {
        self.codec
    }

    /// The compression level (0 for "none").
    pub fn level(self) -> i32 {
        self.level
    }

    /// Compresses a whole buffer into the codec's standard format.
    pub fn encode(self, data: &[u8]) -> Result<Vec<u8>, CodecError> {
        let io = |source| CodecError::Encode {
            codec: self.codec,
            source,
        };
        match self.codec {
            Codec::Zstd => {
                let mut compressor = zstd::bulk::Compressor::new(self.level).map_err(io)?;
                if let Some(min_match) = self.min_match {
                    compressor
                        .set_parameter(zstd::stream::raw::CParameter::MinMatch(min_match))
                        .map_err(io)?;
                }
                compressor.include_checksum(true).map_err(io)?;
                compressor.include_contentsize(true).map_err(io)?;
                compressor.compress(data).map_err(io)
            }
            Codec::Gzip => {
                let out = Vec::with_capacity(data.len() / 4);
                let mut encoder =
                    flate2::write::GzEncoder::new(out, flate2::Compression::new(self.level as u32));
                encoder.write_all(data).map_err(io)?;
                encoder.finish().map_err(io)
            }
            Codec::None => Ok(data.to_vec()),
        }
    }
}

impl Compression {
    /// Compresses everything `reader` yields, holding only the compressed output in memory.
    /// `len` (the input size, when known) goes into the zstd frame header.
    pub fn encode_reader<R: Read>(
        self,
        mut reader: R,
        len: Option<u64>,
    ) -> Result<Vec<u8>, CodecError> {
        let io = |source| CodecError::Encode {
            codec: self.codec,
            source,
        };
        let guess = len.map_or(1 << 20, |l| (l / 4).min(64 << 20) as usize);
        match self.codec {
            Codec::Zstd => {
                let mut encoder =
                    zstd::stream::write::Encoder::new(Vec::with_capacity(guess), self.level)
                        .map_err(io)?;
                if let Some(min_match) = self.min_match {
                    encoder
                        .set_parameter(zstd::stream::raw::CParameter::MinMatch(min_match))
                        .map_err(io)?;
                }
                encoder.include_checksum(true).map_err(io)?;
                encoder.set_pledged_src_size(len).map_err(io)?;
                std::io::copy(&mut reader, &mut encoder).map_err(io)?;
                encoder.finish().map_err(io)
            }
            Codec::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(guess),
                    flate2::Compression::new(self.level as u32),
                );
                std::io::copy(&mut reader, &mut encoder).map_err(io)?;
                encoder.finish().map_err(io)
            }
            Codec::None => {
                let mut out = Vec::with_capacity(len.unwrap_or(0).min(64 << 20) as usize);
                reader.read_to_end(&mut out).map_err(io)?;
                Ok(out)
            }
        }
    }
}

impl Compression {
    /// A streaming encoder writing the codec's standard format into `inner`: what base
    /// backups use, so a part is never held in memory whole. Call
    /// [`EncodingWriter::finish`] to end the frame and get `inner` back.
    pub fn writer<W: Write>(self, inner: W) -> Result<EncodingWriter<W>, CodecError> {
        let io = |source| CodecError::Encode {
            codec: self.codec,
            source,
        };
        Ok(match self.codec {
            Codec::Zstd => {
                let mut encoder =
                    zstd::stream::write::Encoder::new(inner, self.level).map_err(io)?;
                if let Some(min_match) = self.min_match {
                    encoder
                        .set_parameter(zstd::stream::raw::CParameter::MinMatch(min_match))
                        .map_err(io)?;
                }
                encoder.include_checksum(true).map_err(io)?;
                EncodingWriter::Zstd(encoder)
            }
            Codec::Gzip => EncodingWriter::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(self.level as u32),
            )),
            Codec::None => EncodingWriter::None(inner),
        })
    }
}

/// A streaming encoder made by [`Compression::writer`].
#[allow(missing_debug_implementations)] // zstd's encoder has no Debug
pub enum EncodingWriter<W: Write> {
    /// Writes one zstd frame with its content checksum.
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// Writes one gzip member.
    Gzip(flate2::write::GzEncoder<W>),
    /// Passes the bytes through unchanged.
    None(W),
}

impl<W: Write> EncodingWriter<W> {
    /// Ends the compressed stream (zstd frame epilogue with its checksum, gzip trailer).
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            EncodingWriter::Zstd(encoder) => encoder.finish(),
            EncodingWriter::Gzip(encoder) => encoder.finish(),
            EncodingWriter::None(inner) => Ok(inner),
        }
    }
}

impl<W: Write> Write for EncodingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            EncodingWriter::Zstd(encoder) => encoder.write(buf),
            EncodingWriter::Gzip(encoder) => encoder.write(buf),
            EncodingWriter::None(inner) => inner.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            EncodingWriter::Zstd(encoder) => encoder.flush(),
            EncodingWriter::Gzip(encoder) => encoder.flush(),
            EncodingWriter::None(inner) => inner.flush(),
        }
    }
}

impl Codec {
    /// A streaming decoder over `inner`. Reading to the end verifies the format's checksum
    /// (zstd content checksum, gzip CRC-32); a damaged stream is an `io::Error`.
    pub fn reader<'a, R: Read + 'a>(self, inner: R) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Codec::None => Box::new(inner),
        })
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::new(Codec::Zstd, None).expect("the default compression is valid")
    }
}

impl FromStr for Codec {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" | "zst" => Ok(Codec::Zstd),
            "gzip" | "gz" => Ok(Codec::Gzip),
            "none" => Ok(Codec::None),
            other => Err(CodecError::UnknownCodec {
                name: other.to_owned(),
            }),
        }
    }
}

/// Why data could not be compressed or decompressed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The compression name is not one walarch knows.
    #[error("unknown compression {name:?}: use zstd, gzip or none")]
    UnknownCodec {
        /// The name given.
        name: String,
    },
    /// The compression level is outside the codec's range.
    #[error("compression level {level} is out of range for {codec}")]
    InvalidLevel {
        /// The codec the level was given for.
        codec: Codec,
        /// The level given.
        level: i32,
    },
    /// Compressing failed, or reading the input to compress failed.
    #[error("{codec} compression failed: {source}")]
    Encode {
        /// The codec compressing.
        codec: Codec,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The stored object decodes to more bytes than allowed.
    #[error("stored {codec} data decodes to more than {max_len} bytes")]
    TooLarge {
        /// The codec of the stored object.
        codec: Codec,
        /// The largest decoded size allowed, in bytes.
        max_len: usize,
    },
    /// The stored object does not decode: damaged, truncated, or its checksum does not match.
    #[error("stored {codec} data is corrupt or truncated: {source}")]
    Corrupt {
        /// The codec of the stored object.
        codec: Codec,
        /// The decoder's error.
        source: std::io::Error,
    },
}

impl CodecError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            CodecError::UnknownCodec { .. } | CodecError::InvalidLevel { .. } => {
                ErrorKind::Configuration
            }
            CodecError::Encode { source, .. } => crate::error::io_error_kind(source),
            CodecError::TooLarge { .. } | CodecError::Corrupt { .. } => ErrorKind::Corrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        // WAL-like: long runs of zeros with some structured bytes.
        (0..1_000_000u32)
            .map(|i| if i % 97 < 10 { (i % 251) as u8 } else { 0 })
            .collect()
    }

    #[test]
    fn round_trips_every_codec() {
        let data = sample();
        for requested in Codec::ALL {
            let c = Compression::new(requested, None).unwrap();
            let codec = c.codec();
            let encoded = c.encode(&data).unwrap();
            if requested != Codec::None {
                assert!(encoded.len() < data.len() / 4, "{codec} should compress");
            }
            assert_eq!(codec.decode(&encoded, data.len()).unwrap(), data);
            let too_small = codec.decode(&encoded, data.len() - 1).unwrap_err();
            assert!(
                matches!(too_small, CodecError::TooLarge { .. }),
                "{too_small}"
            );
        }
    }

    #[test]
    fn standard_formats_carry_their_magic() {
        let data = sample();
        let zst = Compression::new(Codec::Zstd, None)
            .unwrap()
            .encode(&data)
            .unwrap();
        assert_eq!(&zst[..4], &[0x28, 0xB5, 0x2F, 0xFD]);
        let gz = Compression::new(Codec::Gzip, None)
            .unwrap()
            .encode(&data)
            .unwrap();
        assert_eq!(&gz[..2], &[0x1F, 0x8B]);
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let data = sample();
        for codec in [Codec::Zstd, Codec::Gzip] {
            let encoded = Compression::new(codec, None)
                .unwrap()
                .encode(&data)
                .unwrap();
            let truncated = &encoded[..encoded.len() - 5];
            assert!(
                codec.decode(truncated, usize::MAX - 1).is_err(),
                "{codec}: truncated input must fail"
            );
            // Flip a byte in the middle of the compressed stream.
            let mut flipped = encoded.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x55;
            assert!(
                codec.decode(&flipped, usize::MAX - 1).is_err(),
                "{codec}: corrupt input must fail"
            );
            assert!(codec.decode(b"not compressed at all", 1 << 20).is_err());
        }
    }

    #[test]
    fn streaming_decode_matches_whole_buffer_decode() {
        let data = sample();
        for codec in Codec::ALL {
            let encoded = match codec {
                Codec::None => data.clone(),
                _ => Compression::new(codec, None)
                    .unwrap()
                    .encode(&data)
                    .unwrap(),
            };
            let mut out = Vec::new();
            assert_eq!(
                codec.decode_into(&encoded, &mut out).unwrap(),
                data.len() as u64
            );
            assert_eq!(out, data);
            if codec != Codec::None {
                assert!(
                    codec
                        .decode_into(&encoded[..encoded.len() - 3], &mut Vec::new())
                        .is_err()
                );
            }
        }
    }

    #[test]
    fn streaming_encode_decodes_like_whole_buffer_encode() {
        let data = sample();
        for requested in Codec::ALL {
            let c = Compression::new(requested, None).unwrap();
            let streamed = c.encode_reader(&data[..], Some(data.len() as u64)).unwrap();
            assert_eq!(c.codec().decode(&streamed, data.len()).unwrap(), data);
        }
        // A wrong pledged size is an error, not a silently wrong frame.
        let c = Compression::default();
        assert!(
            c.encode_reader(&data[..], Some(data.len() as u64 + 1))
                .is_err()
        );
    }

    #[test]
    fn none_stores_uncompressed_in_a_gzip_member_whose_crc_catches_damage() {
        let data = sample();
        let none = Compression::new(Codec::None, Some(9)).unwrap();
        assert_eq!((none.codec(), none.level()), (Codec::Gzip, 0));
        let stored = none.encode(&data).unwrap();
        assert_eq!(&stored[..2], &[0x1F, 0x8B], "a gzip member");
        assert!(
            stored.len() < data.len() + data.len() / 1000 + 64,
            "stored blocks: {} bytes for {}",
            stored.len(),
            data.len()
        );
        // The data is there as it was (an operator can see it), and one flipped byte in it
        // fails the CRC-32.
        let at = stored
            .windows(64)
            .position(|w| w == &data[500_000..500_064])
            .expect("uncompressed")
            + 10;
        let mut flipped = stored.clone();
        flipped[at] ^= 0x01;
        assert!(Codec::Gzip.decode(&flipped, data.len()).is_err());
        let mut out = Vec::new();
        assert!(Codec::Gzip.decode_into(&flipped, &mut out).is_err());
        assert_eq!(Codec::Gzip.decode(&stored, data.len()).unwrap(), data);
    }

    #[test]
    fn levels_are_validated() {
        assert!(Compression::new(Codec::Zstd, Some(23)).is_err());
        assert!(Compression::new(Codec::Gzip, Some(10)).is_err());
        assert_eq!(Compression::new(Codec::Zstd, Some(19)).unwrap().level(), 19);
        assert_eq!("gz".parse::<Codec>().unwrap(), Codec::Gzip);
        assert!("lz4".parse::<Codec>().is_err());
    }
}
