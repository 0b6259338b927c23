//! Push-ahead: archive the files PostgreSQL has queued (`pg_wal/archive_status/*.ready`)
//! before it asks for them, so that its serial archive_command loop finds each one done.
//!
//! State lives in a spool inside `pg_wal` (`pg_wal/walarch/push/`): on the same file system
//! as the WAL, and outside base backups, which skip pg_wal's contents.
//! - `<name>.ok`: written only after the object is durably stored (temporary file, fsync,
//!   rename, directory fsync). It names the repository and the local file's identity (device,
//!   inode, size, modification time), so a record never vouches for another repository or a
//!   different file under the same name.
//! - `<name>.error`: the worker's last failure for that file, for `walarch info`. It never
//!   counts as success: PostgreSQL's own call pushes the file itself and reports its error.
//!
//! PostgreSQL's call for a file returns at once when the file is recorded; while a worker
//! runs it waits for the worker's record instead of pushing the same file twice.
//! - `worker.lock`: held (advisory lock) by the one running worker.
//!
//! A kill -9 at any moment leaves at worst an object stored without its record; the next
//! push of that file finds the identical object and records it.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;

use super::in_flight::InFlight;
use super::push::push_wal_file;
use super::spool::Spool;
use crate::codec::Compression;
use crate::local_files::write_durably;
use crate::repo::Repository;
use crate::wal::WalFileName;

/// The push-ahead spool of one data directory's pg_wal.
#[derive(Debug, Clone)]
pub struct PushSpool {
    spool: Spool,
}

/// What a `.ok` record vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PushRecord {
    repository: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    key: String,
    stored_bytes: u64,
}

impl PushRecord {
    fn of(repository: &str, meta: &std::fs::Metadata, key: &str, stored_bytes: u64) -> Self {
        PushRecord {
            repository: repository.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            key: key.to_owned(),
            stored_bytes,
        }
    }
}

impl PushSpool {
    /// The spool for a file PostgreSQL asks to archive, when it lives in a `pg_wal` directory.
    pub fn for_wal_file(path: &Path) -> Option<PushSpool> {
        Spool::pg_wal_of(path).map(Self::for_pg_wal)
    }

    /// The spool of `pg_wal`.
    pub fn for_pg_wal(pg_wal: &Path) -> PushSpool {
        PushSpool {
            spool: Spool::new(pg_wal, "push"),
        }
    }

    /// The `pg_wal` directory this spool serves.
    pub fn pg_wal(&self) -> &Path {
        self.spool.pg_wal()
    }

    /// The spool directory itself.
    pub fn dir(&self) -> &Path {
        self.spool.dir()
    }

    fn record_path(&self, name: &WalFileName) -> PathBuf {
        self.spool.file(&format!("{name}.ok"))
    }

    fn error_path(&self, name: &WalFileName) -> PathBuf {
        self.spool.file(&format!("{name}.error"))
    }

    /// The record for `path`, when there is one for this repository and this very file.
    /// Local only: two `stat`s and one small read.
    fn local_record(
        &self,
        repo: &Repository,
        path: &Path,
        name: &WalFileName,
    ) -> Option<PushRecord> {
        let record: PushRecord =
            serde_json::from_slice(&std::fs::read(self.record_path(name)).ok()?).ok()?;
        let meta = std::fs::metadata(path).ok()?;
        let expected = PushRecord::of(
            &repo.location().to_string(),
            &meta,
            &record.key,
            record.stored_bytes,
        );
        (record == expected).then_some(record)
    }

    /// Cheap check used by the worker to skip files it already pushed.
    pub fn is_recorded(&self, repo: &Repository, path: &Path, name: &WalFileName) -> bool {
        self.local_record(repo, path, name).is_some()
    }

    /// For PostgreSQL's call: a record for this file, confirmed against the store (the object
    /// is there with the recorded size). A record cannot vouch for a repository that was
    /// emptied or re-created, or for another server behind the same URL.
    pub async fn is_confirmed(&self, repo: &Repository, path: &Path, name: &WalFileName) -> bool {
        let Some(record) = self.local_record(repo, path, name) else {
            return false;
        };
        let key = object_store::path::Path::from(record.key.as_str());
        matches!(repo.object_size(&key).await, Ok(Some(size)) if size == record.stored_bytes)
    }

    /// Records that `path` is durably stored at `key` (`stored_bytes` long). Call only after
    /// the store confirmed the object; the record itself is durable too.
    pub fn record(
        &self,
        repo: &Repository,
        path: &Path,
        name: &WalFileName,
        key: &str,
        stored_bytes: u64,
    ) -> std::io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let record = PushRecord::of(&repo.location().to_string(), &meta, key, stored_bytes);
        write_durably(
            &self.record_path(name),
            &serde_json::to_vec(&record).expect("record serialises"),
        )?;
        let _ = std::fs::remove_file(self.error_path(name));
        Ok(())
    }

    /// Marks `name` as being pushed by the worker right now (not durable: a hint for the
    /// waiting call, which re-checks the worker anyway).
    fn claim_path(&self, name: &WalFileName) -> PathBuf {
        self.spool.file(&format!("{name}.pushing"))
    }

    fn record_error(&self, name: &WalFileName, message: &str) {
        let _ = write_durably(&self.error_path(name), message.as_bytes());
    }

    /// The files PostgreSQL has queued, in the order its archiver takes them: history files
    /// first, then by name (oldest segment first).
    pub fn ready_files(&self) -> std::io::Result<Vec<WalFileName>> {
        let mut ready: Vec<WalFileName> = std::fs::read_dir(self.pg_wal().join("archive_status"))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_suffix(".ready")?
                    .parse()
                    .ok()
            })
            .collect();
        ready.sort_by_key(|name| (!matches!(name, WalFileName::History(_)), name.to_string()));
        Ok(ready)
    }

    /// Removes records and errors of files PostgreSQL no longer waits on.
    fn prune(&self, ready: &BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let name = file
                .strip_suffix(".ok")
                .or_else(|| file.strip_suffix(".error"))
                .or_else(|| file.strip_suffix(".pushing"));
            if name.is_some_and(|n| !ready.contains(n)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// A summary for `walarch info`: queued files, the oldest one's age, records, failures.
    pub fn status(&self) -> std::io::Result<PushSpoolStatus> {
        let ready = self.ready_files()?;
        let oldest_ready_age = ready
            .iter()
            .filter_map(|n| {
                std::fs::metadata(
                    self.pg_wal()
                        .join("archive_status")
                        .join(format!("{n}.ready")),
                )
                .ok()
            })
            .filter_map(|m| m.modified().ok())
            .min()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        let queued: BTreeSet<String> = ready.iter().map(ToString::to_string).collect();
        let mut pushed_ahead = 0;
        let mut failures = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for entry in entries.filter_map(|e| e.ok()) {
                let file = entry.file_name().to_string_lossy().into_owned();
                // Only records of files still queued count; older ones await pruning.
                if file.strip_suffix(".ok").is_some_and(|n| queued.contains(n)) {
                    pushed_ahead += 1;
                } else if let Some(name) = file.strip_suffix(".error") {
                    let message = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    failures.push((name.to_owned(), message));
                }
            }
        }
        failures.sort();
        Ok(PushSpoolStatus {
            ready: ready.len(),
            oldest_ready_age,
            pushed_ahead,
            failures,
            worker_running: self.worker_running(),
        })
    }

    fn call_path(&self) -> PathBuf {
        self.spool.file("last-call")
    }

    /// Marks that PostgreSQL is calling archive_command now, for `repo`. The worker pushes ahead only
    /// while these calls continue: when an operator pauses archiving (`archive_command = ''`)
    /// or the server stops, the worker stops too.
    pub fn note_call(&self, repo: &Repository) {
        let _ = std::fs::create_dir_all(self.dir());
        let location = repo.location().to_string();
        if std::fs::read_to_string(self.call_path()).is_ok_and(|current| current == location) {
            if let Ok(file) = std::fs::OpenOptions::new()
                .write(true)
                .open(self.call_path())
            {
                let _ = file.set_modified(SystemTime::now());
            }
        } else {
            let _ = std::fs::write(self.call_path(), location);
        }
    }

    /// Whether PostgreSQL's latest call archives to `repo`: a worker started with other
    /// settings (the configuration changed) must stop.
    fn calls_are_for(&self, repo: &Repository) -> bool {
        std::fs::read_to_string(self.call_path())
            .is_ok_and(|current| current == repo.location().to_string())
    }

    fn since_last_call(&self) -> Duration {
        std::fs::metadata(self.call_path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::MAX)
    }

    /// Whether a worker holds the spool's lock right now.
    pub fn worker_running(&self) -> bool {
        self.spool.worker_running()
    }

    /// Takes the worker lock; `None` if another worker holds it.
    pub fn try_lock_worker(&self) -> std::io::Result<Option<std::fs::File>> {
        self.spool.try_lock_worker()
    }
}

/// See [`PushSpool::status`].
#[derive(Debug, Clone, Serialize)]
pub struct PushSpoolStatus {
    /// Number of files PostgreSQL has queued for archiving (`archive_status/*.ready`).
    pub ready: usize,
    /// Age of the oldest `.ready` file (serialised in seconds); `None` when none is queued.
    #[serde(serialize_with = "secs")]
    pub oldest_ready_age: Option<Duration>,
    /// Number of queued files the worker has already stored and recorded (`.ok`).
    pub pushed_ahead: usize,
    /// The worker's last failure per file, as (file name, error message), sorted by name.
    pub failures: Vec<(String, String)>,
    /// Whether a push-ahead worker holds the spool's lock.
    pub worker_running: bool,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// How the worker runs.
#[derive(Debug, Clone, Copy)]
pub struct PushAheadOptions {
    /// How files are compressed before they are stored.
    pub compression: Compression,
    /// Files pushed at once.
    pub parallelism: usize,
    /// The worker exits when PostgreSQL has not called archive_command for this long.
    pub idle_exit: Duration,
}

/// What a worker did before it exited.
#[derive(Debug, Clone, Default)]
pub struct PushAheadReport {
    /// Files stored (or found already stored) and recorded in the spool.
    pub pushed: usize,
    /// Files whose push failed while the file was still in pg_wal; each left a `.error` record.
    pub failed: usize,
}

/// The push-ahead worker: keeps `parallelism` pushes of queued files in flight, oldest first,
/// for as long as PostgreSQL keeps calling archive_command for this repository (see
/// [`PushSpool::note_call`]). Stops at once if it cannot write its spool (a full pg_wal):
/// records it cannot write would only make PostgreSQL's calls wait. Call with the worker lock
/// held.
pub async fn run_push_worker(
    repo: &Repository,
    spool: &PushSpool,
    options: PushAheadOptions,
    cancel: &CancellationToken,
) -> PushAheadReport {
    let mut report = PushAheadReport::default();
    let parallelism = options.parallelism.max(1);
    spool.spool.sweep();
    let mut in_flight = InFlight::new(parallelism);
    let mut spool_broken = false;
    loop {
        // New pushes only while PostgreSQL keeps calling, for this repository, and the
        // worker is not cancelled; those in flight always finish.
        let calling = !spool_broken
            && !cancel.is_cancelled()
            && spool.since_last_call() < options.idle_exit
            && spool.calls_are_for(repo);
        if calling && in_flight.has_room() {
            // Rescanned whenever a slot is free, so that a file PostgreSQL queued meanwhile
            // (a new history file first of all) is not stuck behind an old queue.
            let ready = spool.ready_files().unwrap_or_default();
            spool.prune(&ready.iter().map(ToString::to_string).collect());
            for name in ready {
                if !in_flight.has_room() {
                    break;
                }
                let text = name.to_string();
                if in_flight.skips(&text)
                    || spool.is_recorded(repo, &spool.pg_wal().join(&text), &name)
                {
                    continue;
                }
                let _ = std::fs::write(spool.claim_path(&name), b"");
                in_flight.start(text, async move {
                    let path = spool.pg_wal().join(name.to_string());
                    let result =
                        push_wal_file(repo, &path, options.compression, spool.pg_wal().parent())
                            .await;
                    (name, (path, result))
                });
            }
        }
        let Some((name, (path, result))) = in_flight.next().await else {
            if !calling {
                return report;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = cancel.cancelled() => {}
            }
            continue;
        };
        let outcome = match result {
            Ok(pushed) => spool
                .record(repo, &path, &name, &pushed.key, pushed.stored_bytes)
                .map_err(|e| (format!("cannot record {name} in the spool: {e}"), true)),
            Err(e) => Err((e.to_string(), false)),
        };
        let _ = std::fs::remove_file(spool.claim_path(&name));
        match outcome {
            Ok(()) => report.pushed += 1,
            Err((message, spool_error)) => {
                // The file may have been archived and removed meanwhile; only real failures
                // are worth a record.
                if path.exists() {
                    tracing::warn!(file = %name, error = %message, "push-ahead failed; PostgreSQL's call will retry it");
                    spool.record_error(&name, &message);
                    report.failed += 1;
                }
                in_flight.failed(name.to_string());
                spool_broken |= spool_error;
            }
        }
    }
}

impl PushSpool {
    /// For PostgreSQL's call: waits while a worker is (or was just started and is about to
    /// be) running, until `path` is recorded and confirmed in the store (true), or until the
    /// worker fails on it, is not working on it, exits, or `timeout` passes (false: the caller
    /// pushes the file itself).
    pub async fn wait_for_worker(
        &self,
        repo: &Repository,
        path: &Path,
        name: &WalFileName,
        started: Option<Instant>,
        timeout: Duration,
    ) -> bool {
        // A worker just spawned needs a moment to take its lock, and a running one a moment
        // to rescan and claim a newly queued file.
        const START_GRACE: Duration = Duration::from_millis(500);
        const CLAIM_GRACE: Duration = Duration::from_millis(300);
        let waiting_since = Instant::now();
        let deadline = waiting_since + timeout;
        loop {
            if self.is_recorded(repo, path, name) {
                return self.is_confirmed(repo, path, name).await;
            }
            let starting = started.is_some_and(|t| t.elapsed() < START_GRACE);
            let claimed = self.claim_path(name).exists();
            let gone = !starting && !self.worker_running();
            let unclaimed = !claimed
                && waiting_since.elapsed()
                    > CLAIM_GRACE.max(
                        started.map_or(Duration::ZERO, |t| START_GRACE.saturating_sub(t.elapsed())),
                    );
            if self.error_path(name).exists() || gone || unclaimed || Instant::now() >= deadline {
                return false;
            }
            // This call is still in progress: keep the worker going.
            if self.since_last_call() > Duration::from_millis(200) {
                self.note_call(repo);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RepoLocation;
    use crate::testing::synthetic_segment;
    use crate::wal::{SegmentName, SegmentNo, SystemId, TimelineId, WalSegmentSize};

    struct Fixture {
        _dir: tempfile::TempDir,
        pg_wal: PathBuf,
        repo: Repository,
        repo_dir: PathBuf,
    }

    fn fixture(segments: std::ops::Range<u64>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        let size = WalSegmentSize::new(1 << 20).unwrap();
        for segno in segments {
            let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(segno), size);
            let content = synthetic_segment(
                SystemId::new(5),
                TimelineId::FIRST,
                SegmentNo::new(segno),
                size,
            );
            std::fs::write(pg_wal.join(name.to_string()), content).unwrap();
            std::fs::write(pg_wal.join(format!("archive_status/{name}.ready")), "").unwrap();
        }
        let repo_dir = dir.path().join("repo");
        let repo =
            Repository::open_for_write(RepoLocation::Local(repo_dir.clone()), &Default::default())
                .unwrap();
        Fixture {
            _dir: dir,
            pg_wal,
            repo,
            repo_dir,
        }
    }

    /// PostgreSQL "calls" while the test worker runs.
    fn calling(spool: &PushSpool, repo: &Repository) {
        spool.note_call(repo);
    }

    fn options() -> PushAheadOptions {
        PushAheadOptions {
            compression: Compression::default(),
            parallelism: 2,
            // PostgreSQL "called" once at the start of each test; a loaded CI machine needs
            // time to push a few segments in a debug build.
            idle_exit: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn worker_pushes_every_queued_file_and_records_each() {
        let fx = fixture(1..6);
        let spool = PushSpool::for_pg_wal(&fx.pg_wal);
        let _lock = spool.try_lock_worker().unwrap().unwrap();
        calling(&spool, &fx.repo);
        let report = run_push_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert_eq!(report.pushed, 5, "{report:?}");
        for name in &spool.ready_files().unwrap() {
            assert!(
                spool.is_recorded(&fx.repo, &fx.pg_wal.join(name.to_string()), name),
                "{name}"
            );
            let key = fx
                .repo_dir
                .join("wal/0000000100000000")
                .join(format!("{name}.zst"));
            assert!(key.exists(), "{} stored", key.display());
        }
        assert_eq!(spool.status().unwrap().pushed_ahead, 5);
    }

    #[tokio::test]
    async fn postgresqls_call_waits_for_the_running_worker_instead_of_pushing_twice() {
        let fx = fixture(1..4);
        let spool = PushSpool::for_pg_wal(&fx.pg_wal);
        let name: WalFileName = "000000010000000000000001".parse().unwrap();
        let path = fx.pg_wal.join(name.to_string());
        // No worker: do not wait.
        assert!(
            !spool
                .wait_for_worker(&fx.repo, &path, &name, None, Duration::from_secs(5))
                .await
        );
        // A worker running: the call sees its record appear.
        let lock = spool.try_lock_worker().unwrap().unwrap();
        let cancel = CancellationToken::new();
        let (waited, report) = tokio::join!(
            spool.wait_for_worker(&fx.repo, &path, &name, None, Duration::from_secs(30)),
            run_push_worker(&fx.repo, &spool, options(), &cancel)
        );
        drop(lock);
        assert!(waited, "{report:?}");
    }

    #[tokio::test]
    async fn a_record_vouches_only_for_the_same_file_and_repository() {
        let fx = fixture(1..3);
        let spool = PushSpool::for_pg_wal(&fx.pg_wal);
        let name: WalFileName = "000000010000000000000002".parse().unwrap();
        let path = fx.pg_wal.join(name.to_string());
        let pushed = push_wal_file(&fx.repo, &path, Compression::default(), None)
            .await
            .unwrap();
        spool
            .record(&fx.repo, &path, &name, &pushed.key, pushed.stored_bytes)
            .unwrap();
        assert!(spool.is_recorded(&fx.repo, &path, &name));
        assert!(spool.is_confirmed(&fx.repo, &path, &name).await);

        let other = Repository::open_for_write(
            RepoLocation::Local(fx.repo_dir.join("other")),
            &Default::default(),
        )
        .unwrap();
        assert!(
            !spool.is_recorded(&other, &path, &name),
            "another repository"
        );

        // The repository was emptied behind our back: the record no longer confirms.
        let object = fx.repo_dir.join(&pushed.key);
        let stored = std::fs::read(&object).unwrap();
        std::fs::remove_file(&object).unwrap();
        assert!(
            !spool.is_confirmed(&fx.repo, &path, &name).await,
            "object gone"
        );
        std::fs::write(&object, stored).unwrap();

        // A different file under the same name (new inode).
        let content = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, content).unwrap();
        assert!(!spool.is_recorded(&fx.repo, &path, &name), "replaced file");
    }

    #[tokio::test]
    async fn failures_are_recorded_as_errors_never_as_success() {
        let fx = fixture(1..4);
        // Segment 3 is misnamed content: the worker must refuse it.
        let bad = fx.pg_wal.join("000000010000000000000003");
        let good = std::fs::read(fx.pg_wal.join("000000010000000000000002")).unwrap();
        std::fs::write(&bad, good).unwrap();
        let spool = PushSpool::for_pg_wal(&fx.pg_wal);
        calling(&spool, &fx.repo);
        let report = run_push_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert_eq!((report.pushed, report.failed), (2, 1), "{report:?}");
        let name: WalFileName = "000000010000000000000003".parse().unwrap();
        assert!(!spool.is_recorded(&fx.repo, &bad, &name));
        let status = spool.status().unwrap();
        assert_eq!(status.failures.len(), 1);
        assert!(
            status.failures[0].1.contains("refusing"),
            "{:?}",
            status.failures
        );
    }

    #[tokio::test]
    async fn records_of_files_no_longer_queued_are_pruned() {
        let fx = fixture(1..4);
        let spool = PushSpool::for_pg_wal(&fx.pg_wal);
        calling(&spool, &fx.repo);
        run_push_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        // PostgreSQL archived 2 and 3 (.ready -> .done).
        for n in ["000000010000000000000002", "000000010000000000000003"] {
            std::fs::rename(
                fx.pg_wal.join(format!("archive_status/{n}.ready")),
                fx.pg_wal.join(format!("archive_status/{n}.done")),
            )
            .unwrap();
        }
        calling(&spool, &fx.repo);
        run_push_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        // Only segment 1, still queued, keeps its record.
        assert_eq!(spool.status().unwrap().pushed_ahead, 1);
        let records = std::fs::read_dir(fx.pg_wal.join("walarch/push"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".ok")
            })
            .count();
        assert_eq!(records, 1);
    }

    #[tokio::test]
    async fn the_worker_stops_when_postgresql_stops_calling() {
        // archive_command = '' pauses archiving: .ready files pile up but no call comes.
        let fx = fixture(1..4);
        let spool = PushSpool::for_pg_wal(&fx.pg_wal);
        let report = run_push_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert_eq!(report.pushed, 0, "{report:?}");
        assert!(
            !fx.repo_dir.join("wal").exists(),
            "nothing archived while paused"
        );
    }
}
