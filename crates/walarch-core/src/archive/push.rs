//! wal-push: archive one file from `pg_wal` (PostgreSQL's `archive_command`).
//!
//! Order of work: name → content validation → repository identity → existing copies →
//! compress → create-only put. Nothing is written unless every check passed, and an
//! existing object is never replaced: a re-push of identical content succeeds (PostgreSQL
//! retries after crashes), different content fails loudly and both copies stay.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::validate::{ContentError, ValidatedContent, validate_wal_content};
use crate::codec::{CodecError, Compression};
use crate::repo::{Identity, PutOutcome, RepoError, Repository, StoredWal};
use crate::store::keys;
use crate::wal::{SystemId, WalFileName, WalSegmentSize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file is now stored.
    Stored,
    /// An identical copy was already stored; nothing was written.
    AlreadyArchived,
}

#[derive(Debug, Clone)]
pub struct PushReport {
    pub name: WalFileName,
    pub outcome: PushOutcome,
    pub key: String,
    pub original_bytes: u64,
    pub stored_bytes: u64,
    pub elapsed: Duration,
}

/// Archives the WAL file at `path`. Returns only once the object is durably stored (or an
/// identical one was found).
pub async fn push_wal_file(
    repo: &Repository,
    path: &Path,
    compression: Compression,
) -> Result<PushReport, PushError> {
    let started = Instant::now();
    let name = wal_name_of(path)?;
    let content = tokio::fs::read(path)
        .await
        .map_err(|source| PushError::Read {
            path: path.display().to_string(),
            source,
        })?;
    let validated = validate_wal_content(&name, &content)?;
    if let ValidatedContent::Segment(header) = validated {
        let proposed = Identity::new(header.system_id, header.segment_size, header.pg_major.get());
        let identity = repo.ensure_identity(&proposed).await?;
        check_same_system(repo, &name, &identity, &proposed)?;
    }

    let report = |outcome, key: String, stored_bytes| PushReport {
        name,
        outcome,
        key,
        original_bytes: content.len() as u64,
        stored_bytes,
        elapsed: started.elapsed(),
    };
    if let Some(existing) = compare_with_stored(repo, &name, &content).await? {
        return Ok(report(
            PushOutcome::AlreadyArchived,
            existing.key.to_string(),
            existing.size,
        ));
    }

    let codec = if matches!(name, WalFileName::History(_)) {
        Compression::new(crate::codec::Codec::None, None)?
    } else {
        compression
    };
    let encoded = codec.encode(&content)?;
    let stored_bytes = encoded.len() as u64;
    let key = keys::wal_file(&name, codec.codec());
    match repo.put_new(&key, Bytes::from(encoded)).await? {
        PutOutcome::Created => Ok(report(PushOutcome::Stored, key.to_string(), stored_bytes)),
        // Another pusher won a race for the same name: its content decides.
        PutOutcome::AlreadyExists => match compare_with_stored(repo, &name, &content).await? {
            Some(existing) => Ok(report(
                PushOutcome::AlreadyArchived,
                existing.key.to_string(),
                existing.size,
            )),
            None => Err(PushError::Vanished {
                key: key.to_string(),
            }),
        },
    }
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
    if identity.pg_major != file.pg_major {
        return Err(PushError::MajorVersionMismatch {
            name: name.to_string(),
            file: file.pg_major,
            repo: identity.pg_major,
        });
    }
    Ok(())
}

/// Looks for stored copies of `name`. `Some` when one exists and every copy holds exactly
/// `content`; an error when any copy differs.
async fn compare_with_stored(
    repo: &Repository,
    name: &WalFileName,
    content: &[u8],
) -> Result<Option<StoredWal>, PushError> {
    let stored = repo.find_wal(name).await?;
    for copy in &stored {
        let Some(bytes) = repo.get_if_exists(&copy.key).await? else {
            continue; // deleted since the lookup (retention); treat as absent
        };
        let decoded = copy.codec.decode(&bytes, content.len()).map_err(|source| {
            PushError::StoredCopyUnreadable {
                name: name.to_string(),
                key: copy.key.to_string(),
                source,
            }
        })?;
        if decoded != content {
            return Err(PushError::AlreadyArchivedDifferent {
                name: name.to_string(),
                key: copy.key.to_string(),
            });
        }
    }
    Ok(stored.into_iter().next())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error(
        "{path} is not a WAL file name PostgreSQL archives (segment, .partial, .backup or .history)"
    )]
    NotAWalFile { path: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("refusing to archive: {0}")]
    InvalidContent(#[from] ContentError),
    #[error(
        "refusing to archive {name}: it belongs to database system {file_system_id} but repository {location} \
         belongs to system {repo_system_id}; point this cluster at its own repository"
    )]
    ForeignSystem {
        name: String,
        file_system_id: SystemId,
        repo_system_id: SystemId,
        location: String,
    },
    #[error(
        "refusing to archive {name}: its segment size is {file} but the repository holds {repo} segments"
    )]
    SegmentSizeMismatch {
        name: String,
        file: WalSegmentSize,
        repo: WalSegmentSize,
    },
    #[error(
        "refusing to archive {name}: it is PostgreSQL {file} WAL but the repository holds PostgreSQL {repo} WAL; \
         use a new repository after a major upgrade"
    )]
    MajorVersionMismatch { name: String, file: u32, repo: u32 },
    #[error(
        "refusing to archive {name}: {key} already holds different content; both are kept. Another cluster may be \
         archiving into this repository"
    )]
    AlreadyArchivedDifferent { name: String, key: String },
    #[error(
        "cannot compare {name} with the stored copy {key}: {source}; the stored copy is kept, investigate it"
    )]
    StoredCopyUnreadable {
        name: String,
        key: String,
        source: CodecError,
    },
    #[error("{key} was reported to exist but could not be found; retry")]
    Vanished { key: String },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
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
        let first = push_wal_file(&fx.repo, &path, Compression::default())
            .await
            .unwrap();
        assert_eq!(first.outcome, PushOutcome::Stored);
        assert!(first.stored_bytes < first.original_bytes / 2);
        let again = push_wal_file(&fx.repo, &path, Compression::default())
            .await
            .unwrap();
        assert_eq!(again.outcome, PushOutcome::AlreadyArchived);
        // Changing the compression does not create a second copy of the same file.
        let gz = push_wal_file(
            &fx.repo,
            &path,
            Compression::new(Codec::Gzip, None).unwrap(),
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
        push_wal_file(&fx.repo, &path, Compression::default())
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
        let err = push_wal_file(&fx.repo, &path, Compression::default())
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
        )
        .await
        .unwrap();
        let err = push_wal_file(
            &fx.repo,
            &fx.write_segment(8, 6, None),
            Compression::default(),
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
            push_wal_file(&fx.repo, &misnamed, Compression::default()).await,
            Err(PushError::InvalidContent(_))
        ));
        let path = fx.write_segment(7, 5, None);
        let content = std::fs::read(&path).unwrap();
        std::fs::write(&path, &content[..content.len() / 2]).unwrap();
        let err = push_wal_file(&fx.repo, &path, Compression::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let other = fx.dir.path().join("postgresql.conf");
        std::fs::write(&other, "x").unwrap();
        assert!(matches!(
            push_wal_file(&fx.repo, &other, Compression::default()).await,
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
            push_wal_file(&fx.repo, &path, Compression::default())
                .await
                .unwrap()
                .outcome,
            PushOutcome::Stored
        );
        assert_eq!(
            std::fs::read_to_string(fx.dir.path().join("repo/wal/00000002.history")).unwrap(),
            "1\t0/3000148\tno recovery target specified\n"
        );
        std::fs::write(&path, "1\t0/4000000\tother history\n").unwrap();
        let err = push_wal_file(&fx.repo, &path, Compression::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushError::AlreadyArchivedDifferent { .. }),
            "{err}"
        );
    }
}
