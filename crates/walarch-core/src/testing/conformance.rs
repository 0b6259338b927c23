//! The storage conformance suite: one set of checks that every backend walarch claims runs
//! (the local file system here, S3, Azure Blob and Google Cloud Storage from `tests/`), so a
//! backend counts as supported only once it behaves as the data-safety contract needs:
//!
//! - WAL round trip through the engine (push, byte-identical fetch, a second push finds the
//!   copy, a missing file is "not found");
//! - create-only puts: a second create of a key fails and the first object stays, also with
//!   writers racing; two pushes of different content under one name: one wins, the other is
//!   refused, the winner's bytes are what a fetch returns;
//! - a backend without conditional puts: detected once, then the documented check-before-put;
//! - listing by prefix over several pages (thousands of keys), a listing that fails
//!   half-way is an error and never a shorter list, batched delete;
//! - multipart upload of a backup-sized object and its abort (nothing visible);
//! - how errors are classified, and failing closed: a body cut short, a store that goes down
//!   half-way, throttling (through [`FaultStore`]).
//!
//! Every case works under its own key prefix and removes what it wrote.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use super::faults::{FaultStore, Faults};
use super::synthetic_segment;
use crate::archive::{FetchOutcome, PushOutcome, fetch_wal_file, push_wal_file};
use crate::codec::{Codec, Compression};
use crate::error::{ErrorKind, store_error_kind};
use crate::repo::{PutOutcome, Repository};
use crate::store::{RepoLocation, keys};
use crate::wal::{SegmentName, SegmentNo, SystemId, TimelineId, WalFileName, WalSegmentSize};

/// One backend under test.
pub struct Backend {
    /// A short name for messages (`s3`, `azure`, ...).
    pub name: String,
    /// The store, opened as the engine opens it (`store::open`).
    pub store: Arc<dyn ObjectStore>,
    /// Where it is, for the repository's messages.
    pub location: RepoLocation,
    /// Whether the store does create-only puts itself; `false` expects the check-before-put
    /// fallback, which cannot settle a race between two writers.
    pub conditional_put: bool,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("location", &self.location)
            .field("conditional_put", &self.conditional_put)
            .finish()
    }
}

/// Sizes of the suite's work.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Keys written for the listing and batched-delete case (more than two pages of 1000).
    pub listed_keys: usize,
    /// Bytes of the multipart upload.
    pub multipart_bytes: usize,
    /// Part size of the multipart upload (5 MiB is S3's and GCS's smallest).
    pub part_size: usize,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            listed_keys: 2500,
            multipart_bytes: 12 << 20,
            part_size: 5 << 20,
        }
    }
}

/// The cases, by name, in the order they run.
pub const CASES: &[&str] = &[
    "wal_round_trip",
    "create_only",
    "racing_pushes",
    "fallback_without_conditional_put",
    "listing_pages_and_batched_delete",
    "multipart_upload_and_abort",
    "error_classification",
    "truncated_read_fails_closed",
    "store_down_midway_fails_closed",
    "throttling_is_transient",
];

/// Runs every case against `backend`; panics naming the backend and the case that failed.
/// Returns the names of the cases that ran.
pub async fn run(backend: &Backend, options: &SuiteOptions) -> Vec<&'static str> {
    let mut ran = Vec::new();
    for &case in CASES {
        eprintln!("conformance [{}] {case}", backend.name);
        let scope = Scope::new(backend, case);
        match case {
            "wal_round_trip" => wal_round_trip(&scope).await,
            "create_only" => create_only(&scope).await,
            "racing_pushes" => racing_pushes(&scope).await,
            "fallback_without_conditional_put" => fallback_without_conditional_put(&scope).await,
            "listing_pages_and_batched_delete" => {
                listing_pages_and_batched_delete(&scope, options.listed_keys).await
            }
            "multipart_upload_and_abort" => multipart_upload_and_abort(&scope, options).await,
            "error_classification" => error_classification(&scope).await,
            "truncated_read_fails_closed" => truncated_read_fails_closed(&scope).await,
            "store_down_midway_fails_closed" => store_down_midway_fails_closed(&scope).await,
            "throttling_is_transient" => throttling_is_transient(&scope).await,
            other => unreachable!("case {other} has no body"),
        }
        scope.clean_up().await;
        ran.push(case);
    }
    ran
}

/// One case's own corner of the backend: a unique key prefix and a scratch directory.
struct Scope<'a> {
    backend: &'a Backend,
    case: &'static str,
    store: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
}

impl<'a> Scope<'a> {
    fn new(backend: &'a Backend, case: &'static str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("conformance/{case}-{}-{nanos}", std::process::id());
        Scope {
            backend,
            case,
            store: Arc::new(PrefixStore::new(backend.store.clone(), prefix)),
            dir: tempfile::tempdir().expect("scratch directory"),
        }
    }

    fn context(&self) -> String {
        format!("[{}] {}", self.backend.name, self.case)
    }

    fn repo(&self) -> Repository {
        Repository::from_store(self.store.clone(), self.backend.location.clone())
    }

    /// A repository over this scope's store wrapped with `faults`.
    fn faulty(&self, faults: Faults) -> (Arc<FaultStore>, Repository) {
        let store = Arc::new(FaultStore::new(self.store.clone(), faults));
        let repo = Repository::from_store(store.clone(), self.backend.location.clone());
        (store, repo)
    }

    /// Writes a synthetic segment (1 MiB segments) into the scratch directory; `variant`
    /// changes its content but not its name or header.
    fn segment(&self, segno: u64, variant: u8, subdir: &str) -> (std::path::PathBuf, Vec<u8>) {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let mut content = synthetic_segment(
            SystemId::new(7_000_000_000_000_000_001),
            TimelineId::FIRST,
            SegmentNo::new(segno),
            size,
        );
        *content.last_mut().unwrap() = variant;
        let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(segno), size).to_string();
        let dir = self.dir.path().join(subdir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &content).unwrap();
        (path, content)
    }

    fn dest(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    async fn clean_up(&self) {
        let keys = self.store.list(None).map_ok(|meta| meta.location).boxed();
        let failed: Vec<_> = self
            .store
            .delete_stream(keys)
            .filter_map(|result| async move {
                match result {
                    Err(object_store::Error::NotFound { .. }) | Ok(_) => None,
                    Err(e) => Some(e),
                }
            })
            .collect()
            .await;
        assert!(
            failed.is_empty(),
            "{}: clean-up: {failed:?}",
            self.context()
        );
    }
}

fn name_of(path: &FsPath) -> WalFileName {
    path.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

async fn fetch_bytes(repo: &Repository, name: &WalFileName, dest: &FsPath) -> Vec<u8> {
    match fetch_wal_file(repo, name, dest, Codec::Zstd, false).await {
        Ok(FetchOutcome::Fetched(_)) => std::fs::read(dest).unwrap(),
        other => panic!("fetch {name}: {other:?}"),
    }
}

async fn wal_round_trip(scope: &Scope<'_>) {
    let cx = scope.context();
    let repo = scope.repo();
    let (path, content) = scope.segment(3, 0, "pg_wal");
    let name = name_of(&path);
    let pushed = push_wal_file(&repo, &path, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: push: {e}"));
    assert_eq!(pushed.outcome, PushOutcome::Stored, "{cx}");
    assert!(
        pushed.stored_bytes < content.len() as u64,
        "{cx}: compressed"
    );
    assert_eq!(
        fetch_bytes(&repo, &name, &scope.dest("RECOVERYXLOG")).await,
        content,
        "{cx}: byte-identical"
    );
    // A second push of the same bytes finds the copy (PostgreSQL retries after a crash).
    let again = push_wal_file(&repo, &path, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: push again: {e}"));
    assert_eq!(again.outcome, PushOutcome::AlreadyArchived, "{cx}");
    // A timeline history file (stored as sealed plain text).
    let history = scope.dir.path().join("00000002.history");
    std::fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
    push_wal_file(&repo, &history, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: push history: {e}"));
    assert_eq!(
        fetch_bytes(&repo, &name_of(&history), &scope.dest("RECOVERYHISTORY")).await,
        std::fs::read(&history).unwrap(),
        "{cx}: history byte-identical"
    );
    // A file the store does not have is "not found" (exit 1 for PostgreSQL), nothing written.
    let missing: WalFileName = "000000010000000000000063".parse().unwrap();
    let dest = scope.dest("MISSING");
    assert!(
        matches!(
            fetch_wal_file(&repo, &missing, &dest, Codec::Zstd, false).await,
            Ok(FetchOutcome::NotFound)
        ),
        "{cx}: missing file"
    );
    assert!(!dest.exists(), "{cx}");
}

async fn create_only(scope: &Scope<'_>) {
    let cx = scope.context();
    let repo = scope.repo();
    let key = Path::from("objects/first");
    let put = |data: &'static str| repo.put_new(&key, Bytes::from_static(data.as_bytes()));
    assert_eq!(put("first").await.unwrap(), PutOutcome::Created, "{cx}");
    assert_eq!(
        put("second").await.unwrap(),
        PutOutcome::AlreadyExists,
        "{cx}"
    );
    assert_eq!(read(&scope.store, &key).await, b"first"[..], "{cx}: intact");

    if !scope.backend.conditional_put {
        return;
    }
    // Eight writers race for one key: exactly one creates it, and its bytes are what stays.
    let key = Path::from("objects/raced");
    let writers = (0..8u8).map(|i| {
        let (repo, key) = (scope.repo(), key.clone());
        async move {
            let outcome = repo.put_new(&key, Bytes::from(vec![i; 4096])).await;
            (i, outcome)
        }
    });
    let outcomes = futures::future::join_all(writers).await;
    let winners: Vec<u8> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Ok(PutOutcome::Created)))
        .map(|(i, _)| *i)
        .collect();
    for (i, outcome) in &outcomes {
        assert!(outcome.is_ok(), "{cx}: writer {i}: {outcome:?}");
    }
    assert_eq!(winners.len(), 1, "{cx}: one creator, got {winners:?}");
    assert_eq!(
        read(&scope.store, &key).await,
        vec![winners[0]; 4096],
        "{cx}"
    );
}

async fn racing_pushes(scope: &Scope<'_>) {
    let cx = scope.context();
    if !scope.backend.conditional_put {
        // Without create-only puts two writers can both pass the check; the suite shows the
        // fallback's sequential behaviour in `fallback_without_conditional_put`.
        return;
    }
    let (a, content_a) = scope.segment(5, 1, "a");
    let (b, content_b) = scope.segment(5, 2, "b");
    let (repo_a, repo_b) = (scope.repo(), scope.repo());
    let (result_a, result_b) = futures::join!(
        push_wal_file(&repo_a, &a, Compression::default(), None),
        push_wal_file(&repo_b, &b, Compression::default(), None)
    );
    let winner = match (&result_a, &result_b) {
        (Ok(_), Err(e)) => {
            assert!(refused_or_lost(e.kind()), "{cx}: loser's error: {e}");
            content_a
        }
        (Err(e), Ok(_)) => {
            assert!(refused_or_lost(e.kind()), "{cx}: loser's error: {e}");
            content_b
        }
        other => panic!("{cx}: exactly one push must win: {other:?}"),
    };
    let fetched = fetch_bytes(&scope.repo(), &name_of(&a), &scope.dest("RECOVERYXLOG")).await;
    assert!(fetched == winner, "{cx}: the winner's bytes are stored");
}

/// A push of different content is refused: seen before it wrote (`Refused`) or found by
/// the create-only put it lost (`Conflict`).
fn refused_or_lost(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Refused | ErrorKind::Conflict)
}

async fn fallback_without_conditional_put(scope: &Scope<'_>) {
    let cx = scope.context();
    let (store, repo) = scope.faulty(Faults {
        no_conditional_put: true,
        ..Faults::default()
    });
    for i in 0..3 {
        let key = Path::from(format!("objects/{i}"));
        let created = repo.put_new(&key, Bytes::from(vec![i; 10])).await.unwrap();
        assert_eq!(created, PutOutcome::Created, "{cx}");
        let again = repo.put_new(&key, Bytes::from(vec![9; 10])).await.unwrap();
        assert_eq!(again, PutOutcome::AlreadyExists, "{cx}");
        assert_eq!(read(&scope.store, &key).await, vec![i; 10], "{cx}: intact");
    }
    // Detected once: the first create-only put was refused, every later one checked first.
    assert_eq!(store.create_puts(), 1, "{cx}: create-only puts tried");
    // The engine still refuses different content under a stored name.
    let (a, content_a) = scope.segment(6, 1, "a");
    let (b, _) = scope.segment(6, 2, "b");
    push_wal_file(&repo, &a, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: push: {e}"));
    let refused = push_wal_file(&repo, &b, Compression::default(), None)
        .await
        .expect_err("different content under a stored name");
    assert_eq!(refused.kind(), ErrorKind::Refused, "{cx}: {refused}");
    assert_eq!(
        fetch_bytes(&repo, &name_of(&a), &scope.dest("RECOVERYXLOG")).await,
        content_a,
        "{cx}"
    );
}

async fn listing_pages_and_batched_delete(scope: &Scope<'_>, count: usize) {
    let cx = scope.context();
    let repo = scope.repo();
    let size = WalSegmentSize::new(1 << 20).unwrap();
    let names: Vec<WalFileName> = (1..=count as u64)
        .map(|segno| {
            WalFileName::Segment(SegmentName::new(
                TimelineId::FIRST,
                SegmentNo::new(segno),
                size,
            ))
        })
        .collect();
    let store = scope.store.clone();
    futures::stream::iter(names.iter().map(|name| keys::wal_file(name, Codec::Zstd)))
        .map(|key| {
            let store = store.clone();
            async move { store.put(&key, PutPayload::from_static(b"x")).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_or_else(|e| panic!("{cx}: writing {count} keys: {e}"));
    // A sibling whose name starts the same must not be listed under `wal/`.
    store
        .put(&Path::from("walx/other"), PutPayload::from_static(b"y"))
        .await
        .unwrap();

    let listed = crate::catalog::list_wal(&repo)
        .await
        .unwrap_or_else(|e| panic!("{cx}: list: {e}"));
    let mut listed_names: Vec<String> = listed.iter().map(|w| w.name.to_string()).collect();
    listed_names.sort();
    let expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(listed_names, expected, "{cx}: every key, once");

    // A listing that fails after its first page is an error, never a shorter archive.
    let (_, broken) = scope.faulty(Faults {
        fail_after: Some(1),
        ..Faults::default()
    });
    let err = crate::catalog::list_wal(&broken)
        .await
        .expect_err("a listing cut after one page");
    assert_eq!(err.kind(), ErrorKind::Transient, "{cx}: {err}");

    // Batched delete, with one key that is already gone.
    let mut doomed: Vec<Path> = listed.iter().map(|w| w.key.clone()).collect();
    doomed.push(Path::from("wal/000000010000000000000000.zst"));
    let failures: Vec<_> = store
        .delete_stream(futures::stream::iter(doomed.into_iter().map(Ok)).boxed())
        .filter_map(|result| async move {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => Some(e.to_string()),
            }
        })
        .collect()
        .await;
    assert!(failures.is_empty(), "{cx}: delete: {failures:?}");
    let left = crate::catalog::list_wal(&repo).await.unwrap();
    assert!(
        left.is_empty(),
        "{cx}: {} keys left after delete",
        left.len()
    );
}

async fn multipart_upload_and_abort(scope: &Scope<'_>, options: &SuiteOptions) {
    let cx = scope.context();
    let data = noise(options.multipart_bytes);
    let key = Path::from("backups/20261201T000000Z/part-0001.tar.zst");
    let mut upload = BufWriter::with_capacity(scope.store.clone(), key.clone(), options.part_size);
    for chunk in data.chunks(1 << 20) {
        upload.write_all(chunk).await.unwrap();
    }
    upload
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("{cx}: complete: {e}"));
    let meta = scope.store.head(&key).await.unwrap();
    assert_eq!(meta.size, data.len() as u64, "{cx}");
    assert!(read(&scope.store, &key).await == data, "{cx}: identical");

    // An aborted upload leaves nothing under its key, not even a prefix of it.
    let aborted = Path::from("backups/20261201T000000Z/part-0002.tar.zst");
    let mut upload =
        BufWriter::with_capacity(scope.store.clone(), aborted.clone(), options.part_size);
    for chunk in data.chunks(1 << 20) {
        upload.write_all(chunk).await.unwrap();
    }
    upload
        .abort()
        .await
        .unwrap_or_else(|e| panic!("{cx}: abort: {e}"));
    assert!(
        matches!(
            scope.store.head(&aborted).await,
            Err(object_store::Error::NotFound { .. })
        ),
        "{cx}: aborted upload visible"
    );
    let listed: Vec<_> = scope.store.list(None).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "{cx}: only the completed part: {listed:?}");
}

async fn error_classification(scope: &Scope<'_>) {
    let cx = scope.context();
    let store = &scope.store;
    let missing = Path::from("nothing/here");
    let err = store.get(&missing).await.expect_err("missing object");
    assert_eq!(
        store_error_kind(&err),
        ErrorKind::NotFound,
        "{cx}: get: {err}"
    );
    let err = store.head(&missing).await.expect_err("missing object");
    assert_eq!(
        store_error_kind(&err),
        ErrorKind::NotFound,
        "{cx}: head: {err}"
    );
    assert!(
        scope
            .repo()
            .get_if_exists(&missing)
            .await
            .unwrap()
            .is_none()
    );

    let key = Path::from("objects/exists");
    store
        .put(&key, PutPayload::from_static(b"a"))
        .await
        .unwrap();
    if scope.backend.conditional_put {
        let err = store
            .put_opts(
                &key,
                PutPayload::from_static(b"b"),
                object_store::PutMode::Create.into(),
            )
            .await
            .expect_err("create-only put on an existing key");
        assert_eq!(store_error_kind(&err), ErrorKind::Conflict, "{cx}: {err}");
    }
    // Reading a range past the end is the caller's mistake, not a transient failure.
    let err = store
        .get_opts(
            &key,
            object_store::GetOptions {
                range: Some((10..20).into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("a range past the end");
    assert_ne!(store_error_kind(&err), ErrorKind::NotFound, "{cx}: {err}");
}

async fn truncated_read_fails_closed(scope: &Scope<'_>) {
    let cx = scope.context();
    let (path, _) = scope.segment(7, 0, "pg_wal");
    push_wal_file(&scope.repo(), &path, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: push: {e}"));
    let (_, repo) = scope.faulty(Faults {
        truncate_reads: true,
        ..Faults::default()
    });
    let dest_dir = scope.dir.path().join("restore");
    std::fs::create_dir(&dest_dir).unwrap();
    let dest = dest_dir.join("RECOVERYXLOG");
    let err = fetch_wal_file(&repo, &name_of(&path), &dest, Codec::Zstd, false)
        .await
        .expect_err("a body cut in half");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{cx}: {err}");
    assert_eq!(
        std::fs::read_dir(&dest_dir).unwrap().count(),
        0,
        "{cx}: nothing handed to PostgreSQL, no temporary file left"
    );
}

async fn store_down_midway_fails_closed(scope: &Scope<'_>) {
    let cx = scope.context();
    // The repository exists (an earlier segment created its identity).
    let (earlier, _) = scope.segment(2, 0, "earlier");
    push_wal_file(&scope.repo(), &earlier, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: push: {e}"));
    let (path, content) = scope.segment(8, 0, "pg_wal");
    // The store goes down after 0, 1, 2, ... requests, until a push gets through.
    let mut stored_after = None;
    for limit in 0..10 {
        let (_, repo) = scope.faulty(Faults {
            fail_after: Some(limit),
            ..Faults::default()
        });
        match push_wal_file(&repo, &path, Compression::default(), None).await {
            Ok(_) => {
                stored_after = Some(limit);
                break;
            }
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::Transient,
                    "{cx}: down after {limit}: {e}"
                );
                // Whatever the store holds now is either nothing or the whole file.
                let repo = scope.repo();
                let dest = scope.dest(&format!("check-{limit}"));
                match fetch_wal_file(&repo, &name_of(&path), &dest, Codec::Zstd, false).await {
                    Ok(FetchOutcome::NotFound) => {}
                    Ok(FetchOutcome::Fetched(_)) => {
                        assert!(std::fs::read(&dest).unwrap() == content, "{cx}: whole file")
                    }
                    other => panic!("{cx}: after a failed push: {other:?}"),
                }
            }
        }
    }
    assert!(stored_after.is_some(), "{cx}: a push never got through");
    // The store back: PostgreSQL's retry finds the file stored, or stores it; nothing lost.
    push_wal_file(&scope.repo(), &path, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: retry: {e}"));
    assert!(
        fetch_bytes(&scope.repo(), &name_of(&path), &scope.dest("RECOVERYXLOG")).await == content,
        "{cx}"
    );
}

async fn throttling_is_transient(scope: &Scope<'_>) {
    let cx = scope.context();
    let (path, content) = scope.segment(9, 0, "pg_wal");
    let (store, repo) = scope.faulty(Faults {
        throttle_first: 1,
        ..Faults::default()
    });
    let err = push_wal_file(&repo, &path, Compression::default(), None)
        .await
        .expect_err("throttled");
    assert_eq!(err.kind(), ErrorKind::Transient, "{cx}: {err}");
    // The next attempt (PostgreSQL retries archive_command) goes through.
    push_wal_file(&repo, &path, Compression::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{cx}: after throttling: {e}"));
    assert!(store.requests() > 1, "{cx}");
    assert!(
        fetch_bytes(&repo, &name_of(&path), &scope.dest("RECOVERYXLOG")).await == content,
        "{cx}"
    );
}

async fn read(store: &Arc<dyn ObjectStore>, key: &Path) -> Bytes {
    store.get(key).await.unwrap().bytes().await.unwrap()
}

/// Incompressible deterministic bytes (a backup part's worth of zstd output).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_local_file_system_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let location = RepoLocation::Local(dir.path().to_owned());
        let store = crate::store::open(&location, &Default::default(), true).unwrap();
        let backend = Backend {
            name: "local".into(),
            store,
            location,
            conditional_put: true,
        };
        assert_eq!(run(&backend, &SuiteOptions::default()).await, CASES);
    }
}
