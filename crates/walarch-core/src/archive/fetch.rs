//! wal-fetch: bring one WAL file back from the repository (PostgreSQL's `restore_command`).
//!
//! The outcome is a contract with PostgreSQL: [`FetchOutcome::NotFound`] only when the store
//! answered that no copy exists in a repository that does exist; every other failure is an
//! error, which the command line turns into an exit status that stops recovery instead of
//! promoting early. The destination appears only complete (temporary file, then rename).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::Instrument;

use super::stored::{ChecksumError, check_checksummed, open_history};
use super::validate::{ContentError, validate_segment, validate_wal_content};
use crate::codec::{Codec, CodecError};
use crate::error::{ErrorKind, io_error_kind};
use crate::repo::{RepoError, Repository, StoredWal};
use crate::store::keys;
use crate::wal::{LongPageHeader, SystemId, WalFileName, XLOG_LONG_PAGE_HEADER_LEN};

/// History and backup history files are a few hundred bytes; anything far larger is not one.
const MAX_TEXT_FILE_LEN: usize = 1 << 20;

/// What a fetch from the store brought back, for logs and metrics.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The key of the stored object that was restored.
    pub key: String,
    /// Size of the stored object (compressed, if it was), in bytes.
    pub stored_bytes: u64,
    /// Size of the file written to the destination, in bytes.
    pub restored_bytes: u64,
    /// CRC-32 of the restored bytes, computed as they were written.
    pub crc32: u32,
    /// Wall-clock time the whole fetch took.
    pub elapsed: Duration,
}

/// What a fetch did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FetchOutcome {
    /// The file was fetched from the store.
    Fetched(FetchReport),
    /// A copy the fetch-ahead worker had downloaded was checked again and renamed into place.
    FromSpool,
    /// The store answered that the file does not exist (under any codec), now or earlier in
    /// this recovery (a segment past the end of the archive).
    NotFound,
}

/// Fetches `name` into `dest`. `preferred` is the codec tried first (the one this
/// configuration pushes with); the others are looked up only on a miss.
pub async fn fetch_wal_file(
    repo: &Repository,
    name: &WalFileName,
    dest: &Path,
    preferred: Codec,
    durable: bool,
) -> Result<FetchOutcome, FetchError> {
    fetch_wal_file_sharing(repo, name, dest, preferred, durable, None).await
}

/// [`fetch_wal_file`], decoding and writing a segment (its fsync and rename included) only
/// with a permit of `decoders` when given: the fetch-ahead worker keeps its downloads
/// overlapping but its decompression off the cores replay needs.
pub(crate) async fn fetch_wal_file_sharing(
    repo: &Repository,
    name: &WalFileName,
    dest: &Path,
    preferred: Codec,
    durable: bool,
    decoders: Option<&tokio::sync::Semaphore>,
) -> Result<FetchOutcome, FetchError> {
    let started = Instant::now();
    let preferred = if keys::possible_codecs(name).contains(&preferred) {
        preferred
    } else {
        Codec::None
    };
    let preferred_key = keys::wal_file(name, preferred);
    // The identity comes along in the same round trip: it names the system whose WAL this
    // repository holds, and tells a miss in a real repository from a wrong location.
    let (object, identity) =
        async { futures::join!(repo.get_if_exists(&preferred_key), repo.identity()) }
            .instrument(tracing::debug_span!("fetch phase", phase = "get"))
            .await;
    let identity = identity?;
    let (key, codec, stored) = match object? {
        Some(bytes) => (preferred_key, preferred, bytes),
        None => match find_other_copy(repo, name, preferred, identity.is_some()).await? {
            Some((copy, bytes)) => (copy.key, copy.codec, bytes),
            None => return Ok(FetchOutcome::NotFound),
        },
    };
    let expected_system = identity.map(|i| i.system_id);
    let stored = repo.open_wal(name, &key, stored)?;

    let key_text = key.to_string();
    check_checksummed(name, codec, &stored).map_err(|source| FetchError::Unchecked {
        key: key_text.clone(),
        source,
    })?;
    let (restored_bytes, crc32) = if name.holds_segment_data() {
        // Decoding 16 MiB and more is CPU work: keep it off the async executor.
        let (name, dest) = (*name, dest.to_owned());
        let stored = stored.clone();
        // A closed semaphore (never, here) only means no limit.
        let _permit = match decoders {
            Some(decoders) => decoders
                .acquire()
                .instrument(tracing::debug_span!(
                    "fetch phase",
                    phase = "wait to decode"
                ))
                .await
                .ok(),
            None => None,
        };
        let span = tracing::debug_span!("fetch phase", phase = "decode and write");
        tokio::task::spawn_blocking(move || {
            let _span = span.entered();
            restore_segment(
                &name,
                codec,
                &stored,
                &dest,
                &key_text,
                expected_system,
                durable,
            )
        })
        .await
        .map_err(|e| FetchError::Write {
            path: PathBuf::from("<restore task>"),
            source: std::io::Error::other(e),
        })??
    } else {
        // History and backup history files are a few hundred bytes.
        let content = if matches!(name, WalFileName::History(_)) && codec == Codec::None {
            open_history(&stored)
                .map_err(|source| FetchError::Unchecked {
                    key: key_text.clone(),
                    source,
                })?
                .to_vec()
        } else {
            codec
                .decode(&stored, MAX_TEXT_FILE_LEN)
                .map_err(|source| FetchError::Corrupt {
                    key: key_text.clone(),
                    source,
                })?
        };
        validate_wal_content(name, &content).map_err(|source| FetchError::InvalidContent {
            key: key_text.clone(),
            source,
        })?;
        write_through_temp(dest, durable, |file| {
            file.write_all(&content)
                .map_err(|source| FetchError::Write {
                    path: dest.to_owned(),
                    source,
                })
        })?;
        (content.len() as u64, crc32fast::hash(&content))
    };
    Ok(FetchOutcome::Fetched(FetchReport {
        key: key.to_string(),
        stored_bytes: stored.len() as u64,
        restored_bytes,
        crc32,
        elapsed: started.elapsed(),
    }))
}

/// On a miss for the preferred codec (`missed`): looks for the file under the other codecs. A miss
/// counts as "not found" only in a repository that exists (has its identity, or holds WAL),
/// so that a wrong bucket, prefix or unmounted directory is an error and not an "end of WAL"
/// that would end recovery early.
async fn find_other_copy(
    repo: &Repository,
    name: &WalFileName,
    missed: Codec,
    repository_exists: bool,
) -> Result<Option<(StoredWal, Bytes)>, FetchError> {
    // The get that missed answered for the preferred codec's key.
    let copies = repo.find_wal_except(name, missed).await?;
    if !repository_exists && copies.is_empty() {
        return Err(FetchError::NotARepository {
            location: repo.location().to_string(),
        });
    }
    for copy in copies {
        if let Some(bytes) = repo.get_if_exists(&copy.key).await? {
            return Ok(Some((copy, bytes)));
        }
    }
    Ok(None)
}

/// Decodes a stored segment straight into a temporary file next to `dest`, checks its header,
/// length and system on the way, and renames it into place only if everything holds. Memory
/// stays at the size of the stored (compressed) object plus the decoder's window.
fn restore_segment(
    name: &WalFileName,
    codec: Codec,
    stored: &[u8],
    dest: &Path,
    key: &str,
    expected_system: Option<SystemId>,
    durable: bool,
) -> Result<(u64, u32), FetchError> {
    write_through_temp(dest, durable, |file| {
        let mut sink = SegmentSink::new(file);
        let decoded = codec.decode_into(stored, &mut sink);
        if let Some(source) = sink.write_error.take() {
            return Err(FetchError::Write {
                path: dest.to_owned(),
                source,
            });
        }
        let invalid = |source| FetchError::InvalidContent {
            key: key.to_owned(),
            source,
        };
        if sink.overflowed {
            // Longer than its header allows (or no valid header at all): report why.
            validate_segment(name, &sink.head, sink.written + 1).map_err(invalid)?;
        }
        decoded.map_err(|source| FetchError::Corrupt {
            key: key.to_owned(),
            source: CodecError::Corrupt { codec, source },
        })?;
        let header = validate_segment(name, &sink.head, sink.written).map_err(invalid)?;
        if let Some(expected) = expected_system.filter(|id| *id != header.system_id) {
            return Err(FetchError::ForeignSystem {
                key: key.to_owned(),
                found: header.system_id,
                expected,
            });
        }
        Ok((sink.written, sink.crc.finalize()))
    })
}

/// A writer that keeps the first bytes (the page header), counts the rest, stops once the
/// output exceeds the segment size the header announces (a corrupt or hostile object must not
/// fill pg_wal), and remembers its own write failures so that a full disk is not mistaken
/// for corrupt data.
struct SegmentSink<'a> {
    file: &'a mut std::fs::File,
    head: Vec<u8>,
    written: u64,
    limit: u64,
    overflowed: bool,
    write_error: Option<std::io::Error>,
    crc: crc32fast::Hasher,
}

impl<'a> SegmentSink<'a> {
    fn new(file: &'a mut std::fs::File) -> Self {
        SegmentSink {
            file,
            head: Vec::with_capacity(XLOG_LONG_PAGE_HEADER_LEN),
            written: 0,
            limit: XLOG_LONG_PAGE_HEADER_LEN as u64,
            overflowed: false,
            write_error: None,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl Write for SegmentSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.head.len() < XLOG_LONG_PAGE_HEADER_LEN {
            let take = buf.len().min(XLOG_LONG_PAGE_HEADER_LEN - self.head.len());
            self.head.extend_from_slice(&buf[..take]);
            if self.head.len() == XLOG_LONG_PAGE_HEADER_LEN {
                // Until the header is known the limit is the header itself; a header that
                // does not decode stops the output right there.
                self.limit = LongPageHeader::decode(&self.head)
                    .map_or(self.limit, |h| h.segment_size.bytes());
            }
        }
        if self.written + buf.len() as u64 > self.limit
            && self.head.len() == XLOG_LONG_PAGE_HEADER_LEN
        {
            self.overflowed = true;
            return Err(std::io::Error::other(
                "decoded data is longer than a WAL segment",
            ));
        }
        // write_all: the header bookkeeping above assumes all of `buf` lands.
        if let Err(e) = self.file.write_all(buf) {
            let reported = std::io::Error::new(e.kind(), e.to_string());
            self.write_error = Some(e);
            return Err(reported);
        }
        self.written += buf.len() as u64;
        self.crc.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// [`crate::local_files::write_through_temp`] with this module's error for the file itself.
fn write_through_temp<T>(
    dest: &Path,
    durable: bool,
    fill: impl FnOnce(&mut std::fs::File) -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    crate::local_files::write_through_temp(
        dest,
        durable,
        |path, source| FetchError::Write {
            path: path.to_owned(),
            source,
        },
        fill,
    )
}

/// Why a fetch failed. None of these means "not found", which is [`FetchOutcome::NotFound`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The location has no repository identity and holds no copy of the file, so a miss
    /// there cannot be reported as "not found".
    #[error(
        "{location} holds no walarch repository (no walarch.json): check the repository URL, bucket and mount; \
         refusing to report the file as missing"
    )]
    NotARepository {
        /// The repository location, as displayed to the user.
        location: String,
    },
    /// The stored segment's page header names another database system than the repository's.
    #[error(
        "stored object {key} holds WAL of database system {found}, but this repository belongs to system {expected}; \
         the repository location may be wrong"
    )]
    ForeignSystem {
        /// The stored object's key.
        key: String,
        /// The system identifier in the stored segment's header.
        found: SystemId,
        /// The system identifier the repository belongs to.
        expected: SystemId,
    },
    /// The stored object does not decode with its codec.
    #[error("stored object {key} is corrupt: {source}")]
    Corrupt {
        /// The stored object's key.
        key: String,
        /// Why decoding failed.
        source: CodecError,
    },
    /// The stored object carries no checksum that fetch can verify, or its history file's
    /// checksum line is missing or does not match.
    #[error("stored object {key} is not handed over: {source}")]
    Unchecked {
        /// The stored object's key.
        key: String,
        /// What is wrong with the object's checksum.
        source: ChecksumError,
    },
    /// The stored object decodes, but not to a valid copy of the requested file.
    #[error("stored object {key} does not hold the requested file: {source}")]
    InvalidContent {
        /// The stored object's key.
        key: String,
        /// What is wrong with the decoded content.
        source: ContentError,
    },
    /// Writing the destination file (or its temporary file) failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The repository or its store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl FetchError {
    /// What kind of failure this is. A file the store does not have is not an error but
    /// [`FetchOutcome::NotFound`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::NotARepository { .. } => ErrorKind::Configuration,
            FetchError::ForeignSystem { .. } => ErrorKind::Refused,
            FetchError::Corrupt { .. }
            | FetchError::Unchecked { .. }
            | FetchError::InvalidContent { .. } => ErrorKind::Corrupt,
            FetchError::Write { source, .. } => io_error_kind(source),
            FetchError::Repo(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::push_wal_file;
    use crate::codec::Compression;
    use crate::store::RepoLocation;
    use crate::testing::synthetic_segment;
    use crate::wal::{SegmentName, SegmentNo, SystemId, TimelineId, WalSegmentSize};

    async fn fixture() -> (tempfile::TempDir, Repository, String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_for_write(
            RepoLocation::Local(dir.path().join("repo")),
            &Default::default(),
        )
        .unwrap();
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let content =
            synthetic_segment(SystemId::new(9), TimelineId::FIRST, SegmentNo::new(2), size);
        let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(2), size).to_string();
        std::fs::write(dir.path().join(&name), &content).unwrap();
        push_wal_file(&repo, &dir.path().join(&name), Compression::default(), None)
            .await
            .unwrap();
        (dir, repo, name, content)
    }

    #[tokio::test]
    async fn fetches_byte_identical_under_any_preferred_codec() {
        let (dir, repo, name, content) = fixture().await;
        for preferred in Codec::ALL {
            let dest = dir.path().join(format!("RECOVERYXLOG-{preferred}"));
            let outcome = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, preferred, false)
                .await
                .unwrap();
            assert!(matches!(outcome, FetchOutcome::Fetched(_)));
            assert_eq!(std::fs::read(&dest).unwrap(), content);
        }
    }

    #[tokio::test]
    async fn missing_file_is_not_found_only_in_a_real_repository() {
        let (dir, repo, _, _) = fixture().await;
        let dest = dir.path().join("RECOVERYXLOG");
        let missing: WalFileName = "000000010000000000000003".parse().unwrap();
        assert!(matches!(
            fetch_wal_file(&repo, &missing, &dest, Codec::Zstd, false)
                .await
                .unwrap(),
            FetchOutcome::NotFound
        ));
        assert!(!dest.exists());

        let empty_dir = dir.path().join("not-a-repo");
        std::fs::create_dir(&empty_dir).unwrap();
        let not_repo =
            Repository::open(RepoLocation::Local(empty_dir), &Default::default()).unwrap();
        let err = fetch_wal_file(&not_repo, &missing, &dest, Codec::Zstd, false)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::NotARepository { .. }), "{err}");
    }

    #[tokio::test]
    async fn corrupt_or_mislabelled_objects_are_errors_and_leave_no_file() {
        let (dir, repo, name, _) = fixture().await;
        let stored = dir
            .path()
            .join(format!("repo/wal/0000000100000000/{name}.zst"));
        let mut bytes = std::fs::read(&stored).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        std::fs::write(&stored, &bytes).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd, false)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Corrupt { .. }), "{err}");
        assert!(!dest.exists());

        // A valid object stored under the wrong name is caught by the header check.
        let other = Compression::default()
            .encode(&synthetic_segment(
                SystemId::new(9),
                TimelineId::FIRST,
                SegmentNo::new(7),
                WalSegmentSize::new(1 << 20).unwrap(),
            ))
            .unwrap();
        std::fs::write(&stored, other).unwrap();
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd, false)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::InvalidContent { .. }), "{err}");
        assert!(!dest.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("walarch"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[tokio::test]
    async fn a_zstd_frame_without_its_checksum_is_not_handed_over() {
        let (dir, repo, name, content) = fixture().await;
        let stored = dir
            .path()
            .join(format!("repo/wal/0000000100000000/{name}.zst"));
        // A valid frame of the right segment, made without a content checksum (as
        // `zstd --no-check` does): nothing proves it is what was stored.
        std::fs::write(&stored, zstd::bulk::compress(&content, 1).unwrap()).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd, false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::Unchecked {
                    source: ChecksumError::ZstdWithoutChecksum,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn unwritable_destination_is_an_error() {
        let (dir, repo, name, _) = fixture().await;
        let dest = dir.path().join("no-such-dir/RECOVERYXLOG");
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd, false)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Write { .. }), "{err}");
    }

    #[tokio::test]
    async fn another_systems_segment_in_the_repository_is_an_error() {
        let (dir, repo, name, _) = fixture().await;
        let stored = dir
            .path()
            .join(format!("repo/wal/0000000100000000/{name}.zst"));
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let foreign = synthetic_segment(
            SystemId::new(10),
            TimelineId::FIRST,
            SegmentNo::new(2),
            size,
        );
        std::fs::write(&stored, Compression::default().encode(&foreign).unwrap()).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd, false)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::ForeignSystem { .. }), "{err}");
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn an_object_longer_than_a_segment_stops_early_and_writes_nothing() {
        let (dir, repo, name, content) = fixture().await;
        let stored = dir
            .path()
            .join(format!("repo/wal/0000000100000000/{name}.zst"));
        let mut bomb = content.clone();
        bomb.extend(std::iter::repeat_n(0u8, 64 << 20)); // 65 MiB decoded from a small object
        std::fs::write(&stored, Compression::default().encode(&bomb).unwrap()).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd, false)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::InvalidContent { .. }), "{err}");
        assert!(!dest.exists());
    }
}
