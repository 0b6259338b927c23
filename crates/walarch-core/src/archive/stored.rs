//! The checksum every stored WAL object carries, checked before anything reaches PostgreSQL
//! (DESIGN.md §2.11):
//!
//! - zstd objects: the frame's content checksum (XXH64), which walarch always writes; a frame
//!   without one is refused, as is anything after the frame;
//! - gzip objects (also what `compression = none` writes, see [`crate::codec`]): the member's
//!   CRC-32 and length, checked by the decoder at the end of the member;
//! - history files, stored as plain text so that an operator can read them: PostgreSQL's file
//!   followed by one comment line, `# walarch crc32c XXXXXXXX`, holding the CRC-32C of
//!   everything before it. PostgreSQL skips `#` lines when it reads a history file, so the
//!   stored object is still a valid history file; fetch checks the line and removes it.
//!
//! Any other object stored as raw bytes (by hand, or by an earlier walarch with `none`)
//! carries no checksum and is refused on the way back rather than handed over unchecked.

use crate::codec::Codec;
use crate::wal::WalFileName;

/// The comment line that seals a stored history file, up to the checksum's hex digits.
const SEAL_PREFIX: &[u8] = b"# walarch crc32c ";
/// `SEAL_PREFIX`, 8 hex digits and a newline.
const SEAL_LEN: usize = SEAL_PREFIX.len() + 8 + 1;
/// zstd's frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Why a stored object's checksum cannot be trusted, found before or while it is decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumError {
    /// A segment stored as raw bytes, which carry no checksum.
    #[error(
        "it is stored as raw bytes without a checksum (by hand, or by an earlier walarch with \
         compression none), so it cannot be verified: check it (pg_waldump), delete it and \
         archive the file again"
    )]
    Unverifiable,
    /// A zstd frame written without its content checksum.
    #[error("its zstd frame carries no content checksum, so it cannot be verified")]
    ZstdWithoutChecksum,
    /// A zstd object that does not start with a frame, or holds bytes after its first frame.
    #[error("it is not a single zstd frame")]
    NotOneZstdFrame,
    /// A stored history file whose last line is not a well-formed `# walarch crc32c` line.
    #[error("its checksum line (# walarch crc32c ...) is missing or malformed")]
    NoSeal,
    /// A stored history file whose content does not match its checksum line.
    #[error("its CRC-32C is {actual:08x}, but {recorded:08x} was recorded when it was stored")]
    Mismatch {
        /// The CRC-32C written in the checksum line when the file was stored.
        recorded: u32,
        /// The CRC-32C of the content as read back.
        actual: u32,
    },
}

/// A history file as stored: `content` (which must end with a newline, as PostgreSQL writes
/// it) and the checksum line.
pub fn seal_history(content: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(content.len() + SEAL_LEN);
    sealed.extend_from_slice(content);
    sealed.extend_from_slice(SEAL_PREFIX);
    sealed.extend_from_slice(format!("{:08x}\n", crc32c::crc32c(content)).as_bytes());
    sealed
}

/// The history file in a stored object, once its checksum line checks out.
pub fn open_history(stored: &[u8]) -> Result<&[u8], ChecksumError> {
    let split = stored
        .len()
        .checked_sub(SEAL_LEN)
        .ok_or(ChecksumError::NoSeal)?;
    let (content, seal) = stored.split_at(split);
    let hex = seal
        .strip_prefix(SEAL_PREFIX)
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        .ok_or(ChecksumError::NoSeal)?;
    // The seal is a line of its own: what precedes it ends a line (or is nothing).
    if !(content.is_empty() || content.ends_with(b"\n")) {
        return Err(ChecksumError::NoSeal);
    }
    let recorded = std::str::from_utf8(hex)
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or(ChecksumError::NoSeal)?;
    let actual = crc32c::crc32c(content);
    if actual != recorded {
        return Err(ChecksumError::Mismatch { recorded, actual });
    }
    Ok(content)
}

/// Checks, before decoding, that a stored object of `name` in `codec` carries a checksum the
/// decoding will verify. History files are checked by [`open_history`] instead.
pub fn check_checksummed(
    name: &WalFileName,
    codec: Codec,
    stored: &[u8],
) -> Result<(), ChecksumError> {
    match codec {
        Codec::Gzip => Ok(()),
        Codec::None if matches!(name, WalFileName::History(_)) => Ok(()),
        Codec::None => Err(ChecksumError::Unverifiable),
        Codec::Zstd => {
            // The frame header descriptor follows the magic; bit 2 is Content_Checksum_flag.
            if stored.get(..4) != Some(&ZSTD_MAGIC[..]) {
                return Err(ChecksumError::NotOneZstdFrame);
            }
            let descriptor = stored.get(4).copied().unwrap_or(0);
            if descriptor & 0x04 == 0 {
                return Err(ChecksumError::ZstdWithoutChecksum);
            }
            match zstd::zstd_safe::find_frame_compressed_size(stored) {
                Ok(len) if len == stored.len() => Ok(()),
                _ => Err(ChecksumError::NotOneZstdFrame),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;

    const HISTORY: &[u8] = b"1\t0/3000000\tno recovery target specified\n";

    #[test]
    fn a_sealed_history_file_opens_to_its_content_and_stays_a_history_file() {
        let sealed = seal_history(HISTORY);
        assert!(sealed.starts_with(HISTORY));
        assert_eq!(open_history(&sealed).unwrap(), HISTORY);
        // PostgreSQL (and walarch) read the stored object as the same history.
        let parsed = crate::wal::TimelineHistory::parse(&sealed).unwrap();
        assert_eq!(parsed, crate::wal::TimelineHistory::parse(HISTORY).unwrap());
        assert_eq!(open_history(&seal_history(b"")).unwrap(), b"");
    }

    #[test]
    fn damaged_or_unsealed_history_files_are_refused() {
        let sealed = seal_history(HISTORY);
        // A digit of the switch point changed: still a valid history file, wrong content.
        let mut digit = sealed.clone();
        digit[3] = b'4';
        assert!(matches!(
            open_history(&digit),
            Err(ChecksumError::Mismatch { .. })
        ));
        assert_eq!(open_history(HISTORY), Err(ChecksumError::NoSeal));
        assert_eq!(
            open_history(&sealed[..sealed.len() - 1]),
            Err(ChecksumError::NoSeal)
        );
        let mut hex = sealed.clone();
        let last = hex.len() - 2;
        hex[last] = b'g';
        assert_eq!(open_history(&hex), Err(ChecksumError::NoSeal));
    }

    #[test]
    fn only_objects_with_a_checksum_pass() {
        let segment: WalFileName = "000000010000000000000002".parse().unwrap();
        let history: WalFileName = "00000002.history".parse().unwrap();
        let data = vec![7u8; 100_000];
        let zstd = Compression::default().encode(&data).unwrap();
        assert_eq!(check_checksummed(&segment, Codec::Zstd, &zstd), Ok(()));
        let gzip = Compression::new(Codec::None, None)
            .unwrap()
            .encode(&data)
            .unwrap();
        assert_eq!(check_checksummed(&segment, Codec::Gzip, &gzip), Ok(()));
        assert_eq!(
            check_checksummed(&segment, Codec::None, &data),
            Err(ChecksumError::Unverifiable)
        );
        assert_eq!(check_checksummed(&history, Codec::None, HISTORY), Ok(()));

        let unchecked = zstd::bulk::compress(&data, 1).unwrap(); // no checksum by default
        assert_eq!(
            check_checksummed(&segment, Codec::Zstd, &unchecked),
            Err(ChecksumError::ZstdWithoutChecksum)
        );
        let mut two = zstd.clone();
        two.extend_from_slice(&unchecked);
        assert_eq!(
            check_checksummed(&segment, Codec::Zstd, &two),
            Err(ChecksumError::NotOneZstdFrame)
        );
        assert_eq!(
            check_checksummed(&segment, Codec::Zstd, b"junk"),
            Err(ChecksumError::NotOneZstdFrame)
        );
    }
}
