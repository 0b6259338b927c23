//! wal-push: archive one file from `pg_wal` (PostgreSQL's `archive_command`).
//!
//! Order of work: name → content validation → repository identity → existing copies →
//! compress → create-only put. Nothing is written unless every check passed, and an
//! existing object is never replaced: a re-push of identical content succeeds (PostgreSQL
//! retries after crashes), different content fails loudly and both copies stay.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::stored::{ChecksumError, open_history, seal_history};
use super::validate::{ContentError, ValidatedContent, validate_segment, validate_wal_content};
use crate::backup::marker::{MarkerError, check_restored_copy};
use crate::codec::{Codec, CodecError, Compression};
use crate::error::{ErrorKind, io_error_kind};
use crate::repo::{Identity, PutOutcome, RepoError, Repository, StoredWal};
use crate::store::keys;
use crate::wal::{
    SystemId, WalFileName, WalSegmentSize, XLOG_LONG_PAGE_HEADER_LEN, system_id_from_pg_control,
};

/// History and backup history files are a few hundred bytes; anything far larger is not one.
const MAX_TEXT_FILE_LEN: u64 = 1 << 20;

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// The file is now stored.
    Stored,
    /// An identical copy was already stored; nothing was written.
    AlreadyArchived,
    /// The push-ahead worker had stored it, and the store confirmed it.
    PushedAhead,
}

/// What a successful push did, for logs and metrics.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// The WAL file that was pushed.
    pub name: WalFileName,
    /// Whether it was stored now or found already stored.
    pub outcome: PushOutcome,
    /// The key of the stored object: the new one, or the existing identical copy.
    pub key: String,
    /// Size of the local file, in bytes.
    pub original_bytes: u64,
    /// Size of the stored object (after compression), in bytes.
    pub stored_bytes: u64,
    /// Wall-clock time the whole push took.
    pub elapsed: Duration,
}

/// Archives the WAL file at `path`. Returns only once the object is durably stored (or an
/// identical one was found). The file is streamed: memory holds its compressed form only.
pub async fn push_wal_file(
    repo: &Repository,
    path: &Path,
    compression: Compression,
    data_dir: Option<&Path>,
) -> Result<PushReport, PushError> {
    let started = Instant::now();
    let name = wal_name_of(path)?;
    let local = blocking({
        let path = path.to_owned();
        move || LocalWal::open(&path, &name)
    })
    .await?;

    // The repository's identity and any stored copy of this name, in one round trip.
    let (identity, stored) = futures::join!(repo.identity(), repo.find_wal(&name));
    let (identity, stored) = (identity?, stored?);
    match (local.validated, identity) {
        (ValidatedContent::Segment(header), identity) => {
            let file = Identity::new(header.system_id, header.segment_size, header.pg_major.get());
            let identity = match identity {
                Some(identity) => identity,
                None => repo.ensure_identity(&file).await?,
            };
            check_same_system(repo, &name, &identity, &file)?;
            repo.check_can_write(&identity)?;
        }
        // History and backup files carry no system identifier; the data directory they come
        // from does.
        (ValidatedContent::Text, Some(identity)) => {
            repo.check_can_write(&identity)?;
            if let Some(data_dir) = data_dir {
                check_data_directory_system(repo, data_dir, &name, &identity)?
            }
        }
        (ValidatedContent::Text, None) => {}
    }
    // A restored copy must not write into its source's repository (DESIGN.md §2.5).
    if let Some(data_dir) = data_dir {
        check_restored_copy(repo, data_dir).await?;
    }

    let report = |outcome, key: String, stored_bytes| PushReport {
        name,
        outcome,
        key,
        original_bytes: local.len,
        stored_bytes,
        elapsed: started.elapsed(),
    };
    if let Some(existing) = compare_with_stored(repo, &name, &local, stored).await? {
        return Ok(report(
            PushOutcome::AlreadyArchived,
            existing.key.to_string(),
            existing.size,
        ));
    }

    // History files stay plain text, so an operator can read them directly, sealed with a
    // checksum line that PostgreSQL ignores (`stored`).
    let compression = if matches!(name, WalFileName::History(_)) {
        None
    } else {
        Some(compression)
    };
    let encoded = blocking({
        let (path, len) = (local.path.clone(), local.len);
        let keyring = repo.keyring().cloned();
        move || {
            let read_err = |source| PushError::Read {
                path: path.display().to_string(),
                source,
            };
            let file = std::fs::File::open(&path).map_err(read_err)?;
            match compression {
                Some(compression) => {
                    let compressed = compression.encode_reader(file, Some(len))?;
                    // What holds table data is sealed when encryption is on; history files
                    // stay readable (the crypto module's documentation says why).
                    Ok(match keyring {
                        Some(keyring) => keyring.seal(&compressed),
                        None => compressed,
                    })
                }
                None => {
                    let mut content = Vec::new();
                    file.take(MAX_TEXT_FILE_LEN)
                        .read_to_end(&mut content)
                        .map_err(read_err)?;
                    Ok(seal_history(&content))
                }
            }
        }
    })
    .await?;
    let codec = compression.map_or(Codec::None, Compression::codec);
    let stored_bytes = encoded.len() as u64;
    let key = keys::wal_file(&name, codec);
    match repo.put_new(&key, Bytes::from(encoded)).await? {
        PutOutcome::Created => Ok(report(PushOutcome::Stored, key.to_string(), stored_bytes)),
        // Another pusher won a race for the same name: its content decides.
        PutOutcome::AlreadyExists => {
            let stored = repo.find_wal(&name).await?;
            match compare_with_stored(repo, &name, &local, stored).await {
                Ok(Some(existing)) => Ok(report(
                    PushOutcome::AlreadyArchived,
                    existing.key.to_string(),
                    existing.size,
                )),
                Ok(None) => Err(PushError::Vanished {
                    key: key.to_string(),
                }),
                // Nothing was stored under the name when this push looked, and a different
                // file is now: another writer archived the same name at the same moment.
                Err(PushError::AlreadyArchivedDifferent { name, key }) => {
                    Err(PushError::ConcurrentWriter { name, key })
                }
                Err(other) => Err(other),
            }
        }
    }
}

/// The local file being pushed, validated against its name from its header and length (a
/// segment is not read whole here).
#[derive(Debug, Clone)]
struct LocalWal {
    path: PathBuf,
    len: u64,
    validated: ValidatedContent,
}

impl LocalWal {
    fn open(path: &Path, name: &WalFileName) -> Result<LocalWal, PushError> {
        let read_err = |source| PushError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let validated = if name.holds_segment_data() {
            let mut head = Vec::with_capacity(XLOG_LONG_PAGE_HEADER_LEN);
            (&mut file)
                .take(XLOG_LONG_PAGE_HEADER_LEN as u64)
                .read_to_end(&mut head)
                .map_err(read_err)?;
            ValidatedContent::Segment(validate_segment(name, &head, len)?)
        } else {
            let mut content = Vec::new();
            file.take(MAX_TEXT_FILE_LEN)
                .read_to_end(&mut content)
                .map_err(read_err)?;
            validate_wal_content(name, &content)?
        };
        Ok(LocalWal {
            path: path.to_owned(),
            len,
            validated,
        })
    }
}

/// Runs blocking file and CPU work off the async executor, so that several pushes can
/// proceed at once in one process.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PushError> + Send + 'static,
) -> Result<T, PushError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn wal_name_of(path: &Path) -> Result<WalFileName, PushError> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    file_name.parse().map_err(|_| PushError::NotAWalFile {
        path: path.display().to_string(),
    })
}

fn check_same_system(
    repo: &Repository,
    name: &WalFileName,
    identity: &Identity,
    file: &Identity,
) -> Result<(), PushError> {
    // The major first: pg_upgrade gives the new cluster a new system identifier too, and
    // "a major upgrade starts a new repository" is what that user needs to read.
    if identity.pg_major != file.pg_major {
        return Err(PushError::MajorVersionMismatch {
            name: name.to_string(),
            file: file.pg_major,
            repo: identity.pg_major,
        });
    }
    if identity.system_id != file.system_id {
        return Err(PushError::ForeignSystem {
            name: name.to_string(),
            file_system_id: file.system_id,
            repo_system_id: identity.system_id,
            location: repo.location().to_string(),
        });
    }
    if identity.wal_segment_size != file.wal_segment_size {
        return Err(PushError::SegmentSizeMismatch {
            name: name.to_string(),
            file: file.wal_segment_size,
            repo: identity.wal_segment_size,
        });
    }
    Ok(())
}

/// For files without a page header: the data directory's `global/pg_control` names the
/// system they belong to.
fn check_data_directory_system(
    repo: &Repository,
    data_dir: &Path,
    name: &WalFileName,
    identity: &Identity,
) -> Result<(), PushError> {
    let control = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&control).map_err(|source| PushError::Read {
        path: control.display().to_string(),
        source,
    })?;
    let system_id =
        system_id_from_pg_control(&bytes).map_err(|source| PushError::InvalidControlFile {
            path: control.display().to_string(),
            source,
        })?;
    if system_id != identity.system_id {
        return Err(PushError::ForeignSystem {
            name: name.to_string(),
            file_system_id: system_id,
            repo_system_id: identity.system_id,
            location: repo.location().to_string(),
        });
    }
    Ok(())
}

/// Compares the local file with every stored copy of `name` in `stored`. `Some` when at
/// least one copy was read and every copy read holds exactly the local bytes; `None` when none
/// could be read (all deleted since the lookup); an error when any copy differs.
async fn compare_with_stored(
    repo: &Repository,
    name: &WalFileName,
    local: &LocalWal,
    stored: Vec<StoredWal>,
) -> Result<Option<StoredWal>, PushError> {
    let mut confirmed = None;
    for copy in stored {
        let Some(bytes) = repo.get_if_exists(&copy.key).await? else {
            continue; // deleted since the lookup (retention): not a copy
        };
        let bytes = repo.open_wal(name, &copy.key, bytes)?;
        let (codec, path, key, label) = (
            copy.codec,
            local.path.clone(),
            copy.key.to_string(),
            name.to_string(),
        );
        let history = matches!(name, WalFileName::History(_));
        let same = blocking(move || {
            let content = if history && codec == Codec::None {
                open_history(&bytes).map_err(|source| PushError::StoredCopyUnchecked {
                    name: label.clone(),
                    key: key.clone(),
                    source,
                })?
            } else {
                &bytes[..]
            };
            same_content(codec, content, &path, &key, &label)
        })
        .await?;
        if !same {
            return Err(PushError::AlreadyArchivedDifferent {
                name: name.to_string(),
                key: copy.key.to_string(),
            });
        }
        confirmed.get_or_insert(copy);
    }
    Ok(confirmed)
}

/// Decodes `stored` and compares it with the file at `path` as it streams, stopping at the
/// first difference.
fn same_content(
    codec: Codec,
    stored: &[u8],
    path: &Path,
    key: &str,
    name: &str,
) -> Result<bool, PushError> {
    let read_err = |source| PushError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut sink = CompareWriter {
        local: std::io::BufReader::with_capacity(1 << 20, file),
        scratch: Vec::new(),
        differs: false,
        read_error: None,
    };
    let decoded = codec.decode_into(stored, &mut sink);
    if let Some(source) = sink.read_error {
        return Err(read_err(source));
    }
    if sink.differs {
        return Ok(false);
    }
    decoded.map_err(|source| PushError::StoredCopyUnreadable {
        name: name.to_owned(),
        key: key.to_owned(),
        source: CodecError::Corrupt { codec, source },
    })?;
    // Equal so far: equal only if the local file has nothing more.
    let mut one = [0u8; 1];
    Ok(sink.local.read(&mut one).map_err(read_err)? == 0)
}

/// A writer that checks everything written to it against the next bytes of a local file.
struct CompareWriter<R> {
    local: R,
    scratch: Vec<u8>,
    differs: bool,
    read_error: Option<std::io::Error>,
}

impl<R: Read> std::io::Write for CompareWriter<R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.scratch.resize(buf.len(), 0);
        let stop = |this: &mut Self| {
            Err(std::io::Error::other(if this.differs {
                "content differs"
            } else {
                "local read failed"
            }))
        };
        match self.local.read_exact(&mut self.scratch) {
            Ok(()) if self.scratch == buf => Ok(buf.len()),
            Ok(()) => {
                self.differs = true;
                stop(self)
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.differs = true; // the stored copy is longer
                stop(self)
            }
            Err(e) => {
                self.read_error = Some(e);
                stop(self)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a push failed. Nothing was stored, and no existing object was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The data directory is a restored copy that may not write into this repository, or its
    /// restore marker could not be used.
    #[error(transparent)]
    RestoredCopy(#[from] MarkerError),
    /// The file name is not one PostgreSQL archives.
    #[error(
        "{path} is not a WAL file name PostgreSQL archives (segment, .partial, .backup or .history)"
    )]
    NotAWalFile {
        /// The path given to push.
        path: String,
    },
    /// A local file (the WAL file, or the data directory's `global/pg_control`) could not be
    /// read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's content is not what its name says.
    #[error("refusing to archive: {0}")]
    InvalidContent(#[from] ContentError),
    /// The file belongs to another database system than the repository.
    #[error(
        "refusing to archive {name}: it belongs to database system {file_system_id} but repository {location} \
         belongs to system {repo_system_id}; point this cluster at its own repository"
    )]
    ForeignSystem {
        /// The WAL file name.
        name: String,
        /// The system identifier of the file (from its page header, or from `pg_control` for
        /// files without one).
        file_system_id: SystemId,
        /// The system identifier the repository belongs to.
        repo_system_id: SystemId,
        /// The repository location, as displayed to the user.
        location: String,
    },
    /// The segment's size differs from the segment size of the WAL the repository holds.
    #[error(
        "refusing to archive {name}: its segment size is {file} but the repository holds {repo} segments"
    )]
    SegmentSizeMismatch {
        /// The WAL file name.
        name: String,
        /// The segment size in the file's header.
        file: WalSegmentSize,
        /// The segment size recorded in the repository's identity.
        repo: WalSegmentSize,
    },
    /// The segment was written by another PostgreSQL major version than the repository's WAL.
    #[error(
        "refusing to archive {name}: it is PostgreSQL {file} WAL but the repository holds PostgreSQL {repo} WAL; \
         a major upgrade starts a new repository"
    )]
    MajorVersionMismatch {
        /// The WAL file name.
        name: String,
        /// The PostgreSQL major version of the file, from its page header.
        file: u32,
        /// The PostgreSQL major version recorded in the repository's identity.
        repo: u32,
    },
    /// A stored copy under this name holds different content; it is left as it is.
    #[error(
        "refusing to archive {name}: {key} already holds different content; both are kept. Another cluster may be \
         archiving into this repository"
    )]
    AlreadyArchivedDifferent {
        /// The WAL file name.
        name: String,
        /// The key of the stored copy that differs.
        key: String,
    },
    /// Another writer stored different content under the same name while this push ran.
    #[error(
        "refusing to archive {name}: another writer stored different content at {key} while this \
         push ran; both are kept. Two clusters are archiving into this repository"
    )]
    ConcurrentWriter {
        /// The WAL file name.
        name: String,
        /// The key of the other writer's object.
        key: String,
    },
    /// A stored copy could not be decoded to compare it with the local file.
    #[error(
        "cannot compare {name} with the stored copy {key}: {source}; the stored copy is kept, investigate it"
    )]
    StoredCopyUnreadable {
        /// The WAL file name.
        name: String,
        /// The key of the stored copy.
        key: String,
        /// Why decoding failed.
        source: CodecError,
    },
    /// A stored history file's checksum line is missing or does not match, so it could not be
    /// compared with the local file.
    #[error(
        "cannot compare {name} with its stored copy {key}: {source}; the stored copy was left as it is"
    )]
    StoredCopyUnchecked {
        /// The WAL file name.
        name: String,
        /// The key of the stored copy.
        key: String,
        /// What is wrong with its checksum.
        source: ChecksumError,
    },
    /// The data directory's `global/pg_control` does not yield a system identifier.
    #[error("cannot read the system identifier from {path}: {source}")]
    InvalidControlFile {
        /// The path of `pg_control`.
        path: String,
        /// Why it could not be read.
        source: crate::wal::WalError,
    },
    /// The store refused to create the object because it exists, but no copy could then be
    /// read (deleted in between).
    #[error("{key} was reported to exist but could not be found; retry")]
    Vanished {
        /// The key the push tried to create.
        key: String,
    },
    /// Compressing the file failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The repository or its store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl PushError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PushError::RestoredCopy(e) => e.kind(),
            PushError::NotAWalFile { .. }
            | PushError::InvalidContent(_)
            | PushError::ForeignSystem { .. }
            | PushError::SegmentSizeMismatch { .. }
            | PushError::MajorVersionMismatch { .. }
            | PushError::AlreadyArchivedDifferent { .. }
            | PushError::InvalidControlFile { .. } => ErrorKind::Refused,
            PushError::Read { source, .. } => io_error_kind(source),
            PushError::StoredCopyUnreadable { .. } | PushError::StoredCopyUnchecked { .. } => {
                ErrorKind::Corrupt
            }
            PushError::Vanished { .. } | PushError::ConcurrentWriter { .. } => ErrorKind::Conflict,
            PushError::Codec(e) => e.kind(),
            PushError::Repo(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::store::RepoLocation;
    use crate::testing::synthetic_segment;
    use crate::wal::{SegmentName, SegmentNo, TimelineId};

    struct Fixture {
        dir: tempfile::TempDir,
        repo: Repository,
        size: WalSegmentSize,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let location = RepoLocation::Local(dir.path().join("repo"));
            let repo = Repository::open_for_write(location, &Default::default()).unwrap();
            Fixture {
                dir,
                repo,
                size: WalSegmentSize::new(1 << 20).unwrap(),
            }
        }

        fn write_segment(
            &self,
            system: u64,
            segno: u64,
            file_name: Option<&str>,
        ) -> std::path::PathBuf {
            let content = synthetic_segment(
                SystemId::new(system),
                TimelineId::FIRST,
                SegmentNo::new(segno),
                self.size,
            );
            let name = file_name.map(str::to_owned).unwrap_or_else(|| {
                SegmentName::new(TimelineId::FIRST, SegmentNo::new(segno), self.size).to_string()
            });
            let path = self.dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        }

        fn stored_files(&self) -> Vec<String> {
            let mut out = Vec::new();
            let root = self.dir.path().join("repo");
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p)
                    } else {
                        out.push(p.strip_prefix(&root).unwrap().display().to_string())
                    }
                }
            }
            out.sort();
            out
        }
    }

    #[tokio::test]
    async fn stores_once_then_accepts_identical_repushes() {
        let fx = Fixture::new();
        let path = fx.write_segment(7, 5, None);
        let first = push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap();
        assert_eq!(first.outcome, PushOutcome::Stored);
        assert!(first.stored_bytes < first.original_bytes / 2);
        let again = push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap();
        assert_eq!(again.outcome, PushOutcome::AlreadyArchived);
        // Changing the compression does not create a second copy of the same file.
        let gz = push_wal_file(
            &fx.repo,
            &path,
            Compression::new(Codec::Gzip, None).unwrap(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(gz.outcome, PushOutcome::AlreadyArchived);
        assert_eq!(
            fx.stored_files(),
            vec![
                "wal/0000000100000000/000000010000000000000005.zst",
                "walarch.json"
            ]
        );
        let identity = fx.repo.identity().await.unwrap().unwrap();
        assert_eq!(identity.system_id, SystemId::new(7));
        assert_eq!(identity.wal_segment_size, fx.size);
    }

    #[tokio::test]
    async fn refuses_different_content_and_keeps_the_stored_copy() {
        let fx = Fixture::new();
        let path = fx.write_segment(7, 5, None);
        push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap();
        let stored = std::fs::read(
            fx.dir
                .path()
                .join("repo/wal/0000000100000000/000000010000000000000005.zst"),
        )
        .unwrap();
        let mut content = std::fs::read(&path).unwrap();
        content[100_000] ^= 1;
        std::fs::write(&path, &content).unwrap();
        let err = push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushError::AlreadyArchivedDifferent { .. }),
            "{err}"
        );
        let after = std::fs::read(
            fx.dir
                .path()
                .join("repo/wal/0000000100000000/000000010000000000000005.zst"),
        )
        .unwrap();
        assert_eq!(stored, after, "the stored object must be untouched");
    }

    #[tokio::test]
    async fn refuses_another_systems_wal_naming_both_ids() {
        let fx = Fixture::new();
        push_wal_file(
            &fx.repo,
            &fx.write_segment(7, 5, None),
            Compression::default(),
            None,
        )
        .await
        .unwrap();
        let err = push_wal_file(
            &fx.repo,
            &fx.write_segment(8, 6, None),
            Compression::default(),
            None,
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PushError::ForeignSystem { .. }));
        assert!(msg.contains("system 8") || msg.contains(" 8 "), "{msg}");
        assert!(msg.contains('7') && msg.contains('8'), "{msg}");
        assert_eq!(
            fx.stored_files().len(),
            2,
            "nothing of the foreign system is stored"
        );
    }

    #[tokio::test]
    async fn refuses_misnamed_truncated_and_non_wal_files() {
        let fx = Fixture::new();
        let misnamed = fx.write_segment(7, 5, Some("000000010000000000000009"));
        assert!(matches!(
            push_wal_file(&fx.repo, &misnamed, Compression::default(), None).await,
            Err(PushError::InvalidContent(_))
        ));
        let path = fx.write_segment(7, 5, None);
        let content = std::fs::read(&path).unwrap();
        std::fs::write(&path, &content[..content.len() / 2]).unwrap();
        let err = push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let other = fx.dir.path().join("postgresql.conf");
        std::fs::write(&other, "x").unwrap();
        assert!(matches!(
            push_wal_file(&fx.repo, &other, Compression::default(), None).await,
            Err(PushError::NotAWalFile { .. })
        ));
        assert!(
            fx.stored_files().is_empty(),
            "nothing stored: {:?}",
            fx.stored_files()
        );
    }

    #[tokio::test]
    async fn history_files_are_stored_plain_and_never_replaced() {
        let fx = Fixture::new();
        let path = fx.dir.path().join("00000002.history");
        std::fs::write(&path, "1\t0/3000148\tno recovery target specified\n").unwrap();
        assert_eq!(
            push_wal_file(&fx.repo, &path, Compression::default(), None)
                .await
                .unwrap()
                .outcome,
            PushOutcome::Stored
        );
        // PostgreSQL's text, then the checksum line (a comment PostgreSQL skips).
        assert_eq!(
            std::fs::read_to_string(fx.dir.path().join("repo/wal/00000002.history")).unwrap(),
            format!(
                "1\t0/3000148\tno recovery target specified\n# walarch crc32c {:08x}\n",
                crc32c::crc32c(b"1\t0/3000148\tno recovery target specified\n")
            )
        );
        assert_eq!(
            push_wal_file(&fx.repo, &path, Compression::default(), None)
                .await
                .unwrap()
                .outcome,
            PushOutcome::AlreadyArchived,
            "the same history again is already archived"
        );
        std::fs::write(&path, "1\t0/4000000\tother history\n").unwrap();
        let err = push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushError::AlreadyArchivedDifferent { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn history_files_from_another_systems_data_directory_are_refused() {
        let fx = Fixture::new();
        push_wal_file(
            &fx.repo,
            &fx.write_segment(7, 5, None),
            Compression::default(),
            None,
        )
        .await
        .unwrap();
        let pgdata = fx.dir.path().join("pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
        std::fs::create_dir_all(pgdata.join("global")).unwrap();
        let control = |system: u64| {
            let mut bytes = vec![0u8; 8192];
            bytes[0..8].copy_from_slice(&system.to_le_bytes());
            bytes[8..12].copy_from_slice(&1300u32.to_le_bytes());
            std::fs::write(pgdata.join("global/pg_control"), bytes).unwrap();
        };
        let history = pgdata.join("pg_wal/00000002.history");
        std::fs::write(&history, "1\t0/3000148\tno recovery target specified\n").unwrap();

        control(8);
        let err = push_wal_file(&fx.repo, &history, Compression::default(), Some(&pgdata))
            .await
            .unwrap_err();
        assert!(matches!(err, PushError::ForeignSystem { .. }), "{err}");
        assert!(!fx.stored_files().iter().any(|f| f.ends_with(".history")));

        control(7);
        let ok = push_wal_file(&fx.repo, &history, Compression::default(), Some(&pgdata))
            .await
            .unwrap();
        assert_eq!(ok.outcome, PushOutcome::Stored);
    }

    #[tokio::test]
    async fn two_writers_racing_on_one_name_with_different_content_is_a_conflict() {
        // The other writer's object lands between this push's lookup (nothing stored) and
        // its create-only put: deterministic with a hook before the put.
        let fx = Fixture::new();
        let path = fx.write_segment(7, 5, None);
        let theirs = Compression::default()
            .encode(&{
                let mut other = std::fs::read(&path).unwrap();
                let last = other.len() - 1;
                other[last] ^= 1;
                other
            })
            .unwrap();
        let mut store = crate::testing::hooks::HookStore::new(fx.repo.store().clone());
        store.before_put = Some(std::sync::Arc::new(move |key, inner| {
            let theirs = theirs.clone();
            Box::pin(async move {
                if key.as_ref().ends_with(".zst") && key.as_ref().starts_with("wal/") {
                    let _ = inner.put(&key, theirs.into()).await;
                }
            })
        }));
        let racing = Repository::from_store(std::sync::Arc::new(store), fx.repo.location().clone());
        let err = push_wal_file(&racing, &path, Compression::default(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, PushError::ConcurrentWriter { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        // Asked again, the stored copy simply differs: refused by the contract.
        let again = push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Refused, "{again}");
    }
}
