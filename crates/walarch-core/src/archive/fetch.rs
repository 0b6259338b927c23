//! wal-fetch: bring one WAL file back from the repository (PostgreSQL's `restore_command`).
//!
//! The outcome is a contract with PostgreSQL: [`FetchOutcome::NotFound`] only when the store
//! answered that no copy exists in a repository that does exist; every other failure is an
//! error, which the command line turns into an exit status that stops recovery instead of
//! promoting early. The destination appears only complete (temporary file, then rename).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::validate::{ContentError, validate_wal_content};
use crate::codec::{Codec, CodecError};
use crate::repo::{RepoError, Repository, StoredWal};
use crate::store::keys;
use crate::wal::WalFileName;

#[derive(Debug, Clone)]
pub struct FetchReport {
    pub key: String,
    pub stored_bytes: u64,
    pub restored_bytes: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub enum FetchOutcome {
    Fetched(FetchReport),
    /// The store answered that the file does not exist (under any codec).
    NotFound,
}

/// Fetches `name` into `dest`. `preferred` is the codec tried first (the one this
/// configuration pushes with); the others are looked up only on a miss.
pub async fn fetch_wal_file(
    repo: &Repository,
    name: &WalFileName,
    dest: &Path,
    preferred: Codec,
) -> Result<FetchOutcome, FetchError> {
    let started = Instant::now();
    let preferred = if keys::possible_codecs(name).contains(&preferred) {
        preferred
    } else {
        Codec::None
    };
    let preferred_key = keys::wal_file(name, preferred);
    let (key, codec, stored) = match repo.get_if_exists(&preferred_key).await? {
        Some(bytes) => (preferred_key, preferred, bytes),
        None => match find_other_copy(repo, name).await? {
            Some((copy, bytes)) => (copy.key, copy.codec, bytes),
            None => return Ok(FetchOutcome::NotFound),
        },
    };

    let content = codec
        .decode(&stored, 16 << 20)
        .map_err(|source| FetchError::Corrupt {
            key: key.to_string(),
            source,
        })?;
    validate_wal_content(name, &content).map_err(|source| FetchError::InvalidContent {
        key: key.to_string(),
        source,
    })?;
    write_atomically(dest, &content).await?;
    Ok(FetchOutcome::Fetched(FetchReport {
        key: key.to_string(),
        stored_bytes: stored.len() as u64,
        restored_bytes: content.len() as u64,
        elapsed: started.elapsed(),
    }))
}

/// On a miss for the preferred codec: looks for the file under the other codecs, and makes
/// sure the repository itself exists, so that a wrong bucket or prefix is an error and not
/// an "end of WAL" that would end recovery early.
async fn find_other_copy(
    repo: &Repository,
    name: &WalFileName,
) -> Result<Option<(StoredWal, Bytes)>, FetchError> {
    let (copies, identity) = futures::join!(repo.find_wal(name), repo.identity());
    let copies = copies?;
    if identity?.is_none() && copies.is_empty() {
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

async fn write_atomically(dest: &Path, content: &[u8]) -> Result<(), FetchError> {
    let write_err = |path: &Path, source| FetchError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = dest
        .file_name()
        .ok_or_else(|| write_err(dest, std::io::Error::other("destination has no file name")))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".walarch-{}.tmp", std::process::id()));
    let temp = dest.with_file_name(temp_name);
    // No fsync: PostgreSQL fetches again after a crash, and never relies on a restored file
    // surviving one. The rename keeps a partial file from ever appearing under `dest`.
    let result = match tokio::fs::write(&temp, content).await {
        Ok(()) => tokio::fs::rename(&temp, dest)
            .await
            .map_err(|e| write_err(dest, e)),
        Err(e) => Err(write_err(&temp, e)),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error(
        "{location} holds no walarch repository (no walarch.json): check the repository URL, bucket and mount; \
         refusing to report the file as missing"
    )]
    NotARepository { location: String },
    #[error("stored object {key} is corrupt: {source}")]
    Corrupt { key: String, source: CodecError },
    #[error("stored object {key} does not hold the requested file: {source}")]
    InvalidContent { key: String, source: ContentError },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
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
        push_wal_file(&repo, &dir.path().join(&name), Compression::default())
            .await
            .unwrap();
        (dir, repo, name, content)
    }

    #[tokio::test]
    async fn fetches_byte_identical_under_any_preferred_codec() {
        let (dir, repo, name, content) = fixture().await;
        for preferred in Codec::ALL {
            let dest = dir.path().join(format!("RECOVERYXLOG-{preferred}"));
            let outcome = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, preferred)
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
            fetch_wal_file(&repo, &missing, &dest, Codec::Zstd)
                .await
                .unwrap(),
            FetchOutcome::NotFound
        ));
        assert!(!dest.exists());

        let empty_dir = dir.path().join("not-a-repo");
        std::fs::create_dir(&empty_dir).unwrap();
        let not_repo =
            Repository::open(RepoLocation::Local(empty_dir), &Default::default()).unwrap();
        let err = fetch_wal_file(&not_repo, &missing, &dest, Codec::Zstd)
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
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd)
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
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd)
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
    async fn unwritable_destination_is_an_error() {
        let (dir, repo, name, _) = fixture().await;
        let dest = dir.path().join("no-such-dir/RECOVERYXLOG");
        let err = fetch_wal_file(&repo, &name.parse().unwrap(), &dest, Codec::Zstd)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Write { .. }), "{err}");
    }
}
