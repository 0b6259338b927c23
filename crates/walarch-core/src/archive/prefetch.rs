//! Fetch-ahead: while recovery replays segment N, a worker downloads the segments after it
//! into a spool beside the WAL (`pg_wal/walarch/fetch/`), so that PostgreSQL's next
//! restore_command call only renames a file into place.
//!
//! - A spooled file is verified as it is downloaded (the stored object's checksum, the
//!   segment header against the name, the length), arrives complete and durable (temporary
//!   name, fsync, rename), and is then stamped: its modification time is set to a fixed
//!   instant long past ([`verified_mtime`]) and a sidecar `<name>.check` records its CRC-32,
//!   length, device, inode, change time and repository. PostgreSQL's call hands the file over
//!   only while all of that still holds: any write to or truncation of the file through the
//!   file system since would have set its time to now (and its change time, which no program
//!   sets), a replaced file has another inode. A file that waited in the spool longer than
//!   30 s (a delayed or paused recovery) has its CRC-32 computed again as well: the stamp says
//!   nothing wrote to it, not that the disk kept its bytes. Anything else is dropped and the
//!   segment fetched from the store instead. (Reading the 16 MiB again on every call cost
//!   ~3 ms of it, on replay's path: benches/README.md, issue 17.) The file reaches `%p` with
//!   a current modification time.
//! - Why fsync a cache: PostgreSQL fsyncs every segment it restores (`durable_rename` on
//!   replay's path); a file the worker already flushed makes that fsync cheap. Without the
//!   worker's fsync recovery measured slower, not faster. After a crash, a file whose stamp
//!   was lost or that was cut short fails the check and is fetched again.
//! - `position` holds the last file PostgreSQL asked for; the worker keeps the window after
//!   it filled, bounded in bytes, and removes spooled segments behind it.
//! - `misses/<name>` remembers that the store said a segment does not exist, for the rest of
//!   this recovery (the postmaster's pid and start time, from `postmaster.pid`): PostgreSQL
//!   asks for the segment past the end of the archive again and again. On a standby
//!   (`standby.signal`) new WAL keeps arriving, so there a miss is remembered for a few
//!   seconds only. History files are always asked of the store: at the end of recovery
//!   PostgreSQL probes them to pick its new timeline id, precisely to see servers that
//!   promoted meanwhile, and an answer from memory could make two copies pick the same id.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;

use super::fetch::{FetchOutcome, fetch_wal_file_sharing};
use super::in_flight::InFlight;
use super::spool::Spool;
use crate::codec::Codec;
use crate::local_files::sweep_stale_temp_files;
use crate::repo::Repository;
use crate::store::RepoLocation;
use crate::wal::{SegmentName, WalFileName, WalSegmentSize};

/// How long a miss is trusted on a standby, where the archive keeps growing.
const STANDBY_MISS_TTL: Duration = Duration::from_secs(5);
/// Remembered misses older than this are removed.
const MISS_PRUNE_AGE: Duration = Duration::from_secs(600);

/// The fetch-ahead spool of one data directory's pg_wal.
#[derive(Debug, Clone)]
pub struct FetchSpool {
    spool: Spool,
}

/// The modification time a spooled file gets once verified. The kernel sets a file's time to
/// the current time on every write and truncation through the file system, so a file still
/// carrying this instant has not been written since; the change time recorded beside it
/// (which no program can set) covers someone setting the time back.
fn verified_mtime() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(86_400)
}

/// How long a spooled file is handed over on its stamp alone. One that waited longer (a
/// delayed or paused recovery) has its CRC-32 computed again first: the stamp proves that
/// nothing wrote to the file, not that the disk kept its bytes.
const STAMP_TRUSTED_FOR: Duration = Duration::from_secs(30);

/// The sidecar of a spooled file: what the worker verified, and which file it stamped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SpooledCheck {
    len: u64,
    crc32: u32,
    dev: u64,
    inode: u64,
    /// The change time after stamping (seconds, nanoseconds).
    ctime: (i64, i64),
    /// The repository the copy came from: a spool left from other settings is not used.
    repository: String,
}

impl SpooledCheck {
    /// Whether `meta` is still the file this check was written for, as stamped.
    fn is_stamped(&self, meta: &std::fs::Metadata) -> bool {
        meta.is_file()
            && meta.len() == self.len
            && (meta.dev(), meta.ino()) == (self.dev, self.inode)
            && (meta.ctime(), meta.ctime_nsec()) == self.ctime
            && meta.modified().is_ok_and(|t| t == verified_mtime())
    }

    /// How long ago the file was stamped.
    fn age(&self) -> Duration {
        let (secs, nanos) = self.ctime;
        let stamped = u64::try_from(secs)
            .ok()
            .zip(u32::try_from(nanos).ok())
            .map(|(s, n)| SystemTime::UNIX_EPOCH + Duration::new(s, n));
        stamped
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::MAX)
    }
}

impl FetchSpool {
    /// The spool for PostgreSQL's `%p` when it points into a `pg_wal` directory.
    pub fn for_destination(dest: &Path) -> Option<FetchSpool> {
        Spool::pg_wal_of(dest).map(Self::for_pg_wal)
    }

    /// The spool of `pg_wal`.
    pub fn for_pg_wal(pg_wal: &Path) -> FetchSpool {
        FetchSpool {
            spool: Spool::new(pg_wal, "fetch"),
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

    fn data_path(&self, name: &WalFileName) -> PathBuf {
        self.spool.file(&name.to_string())
    }

    fn check_path(&self, name: &WalFileName) -> PathBuf {
        self.spool.file(&format!("{name}.check"))
    }

    fn miss_path(&self, name: &WalFileName) -> PathBuf {
        self.dir().join("misses").join(name.to_string())
    }

    fn is_spooled(&self, name: &WalFileName) -> bool {
        self.check_path(name).exists()
    }

    /// Moves a spooled copy of `name` to `dest` if it is still the file the worker verified
    /// and stamped, from `repository` (and, if it waited in the spool longer than 30 s, still
    /// has the CRC-32 it was verified with). `false` when there is none, or it did not check
    /// out (it is then removed).
    pub fn take(&self, repository: &RepoLocation, name: &WalFileName, dest: &Path) -> bool {
        self.take_trusting_stamps_for(repository, name, dest, STAMP_TRUSTED_FOR)
    }

    fn take_trusting_stamps_for(
        &self,
        repository: &RepoLocation,
        name: &WalFileName,
        dest: &Path,
        trusted_for: Duration,
    ) -> bool {
        let (data, check) = (self.data_path(name), self.check_path(name));
        let Some(expected) = std::fs::read(&check)
            .ok()
            .and_then(|b| serde_json::from_slice::<SpooledCheck>(&b).ok())
        else {
            return false;
        };
        let same_repository = expected.repository == repository.to_string();
        let stamped =
            same_repository && std::fs::metadata(&data).is_ok_and(|m| expected.is_stamped(&m));
        let intact = stamped
            && (expected.age() <= trusted_for
                || crc_of_file(&data)
                    .is_ok_and(|(len, crc32)| len == expected.len && crc32 == expected.crc32));
        // Handed over with a current modification time: the fixed instant marks the spool's
        // copy, not the segment PostgreSQL keeps.
        let taken = intact
            && set_modified(&data, SystemTime::now()).is_ok()
            && std::fs::rename(&data, dest).is_ok();
        if !taken {
            tracing::warn!(file = %name, same_repository, "spooled copy not used; fetching from the store");
            let _ = std::fs::remove_file(&data);
        }
        let _ = std::fs::remove_file(&check);
        taken
    }

    /// Records what PostgreSQL asked for last, for the worker: a segment moves the window; a
    /// history file means recovery is between segments (starting, or ending) and stops it.
    ///
    /// Written in place, not through a temporary file renamed over the old one: on ext4 that
    /// rename makes the kernel flush the new file at once, and under recovery's I/O it cost
    /// 0.5 ms per call in the median and 5 ms at the 90th percentile, on replay's path
    /// (benches/README.md, issue 17). A record read while it is being rewritten fails its
    /// CRC-32 and is read again.
    pub fn set_position(&self, name: &WalFileName) {
        let _ = std::fs::create_dir_all(self.dir());
        let record = PositionRecord::encode(name);
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.spool.file("position"))
            .and_then(|file| std::os::unix::fs::FileExt::write_all_at(&file, &record, 0));
    }

    fn position(&self) -> Option<WalFileName> {
        // A read racing the rewrite sees a mix of two records; the next read sees one.
        (0..3).find_map(|_| {
            let bytes = std::fs::read(self.spool.file("position")).ok()?;
            PositionRecord::decode(&bytes)
        })
    }

    /// This recovery's identity and whether the server is a standby.
    fn recovery(&self) -> Option<(String, bool)> {
        let data_dir = self.spool.data_dir()?;
        let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let (pid, _, start) = (lines.next()?, lines.next()?, lines.next()?);
        Some((
            format!("{pid} {start}"),
            data_dir.join("standby.signal").exists(),
        ))
    }

    /// True when the store said segment `name` does not exist, earlier in this same recovery
    /// (on a standby: within seconds). Never for a history file (see the module doc).
    pub fn is_known_missing(&self, name: &WalFileName) -> bool {
        if matches!(name, WalFileName::History(_)) {
            return false;
        }
        let Some((recovery, standby)) = self.recovery() else {
            return false;
        };
        let path = self.miss_path(name);
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        let ttl = if standby {
            STANDBY_MISS_TTL
        } else {
            Duration::MAX
        };
        std::fs::read_to_string(&path).is_ok_and(|r| r == recovery) && age.is_some_and(|a| a < ttl)
    }

    /// Remembers that the store said segment `name` does not exist (history files are not
    /// remembered).
    pub fn remember_missing(&self, name: &WalFileName) {
        if matches!(name, WalFileName::History(_)) {
            return;
        }
        if let Some((recovery, _)) = self.recovery() {
            let _ = std::fs::create_dir_all(self.dir().join("misses"));
            let _ = std::fs::write(self.miss_path(name), recovery);
        }
    }

    /// Records that fetching `name` for PostgreSQL failed (not "not found": a failure), with
    /// why, for `walarch info` and `walarch metrics`; best effort, and only while recovery
    /// runs: the worker removes the spool, and these records with it, once it is over.
    pub fn record_failure(&self, name: &WalFileName, message: &str) {
        if self.recovery().is_some() {
            let _ = std::fs::create_dir_all(self.dir().join("failures"));
            let _ = std::fs::write(self.dir().join("failures").join(name.to_string()), message);
        }
    }

    /// Forgets an earlier failure to fetch `name`: it has been fetched since.
    pub fn clear_failure(&self, name: &WalFileName) {
        let _ = std::fs::remove_file(self.dir().join("failures").join(name.to_string()));
    }

    /// Spooled segments, their bytes, and whether a worker runs: for `walarch info`.
    pub fn status(&self) -> FetchSpoolStatus {
        let mut status = FetchSpoolStatus {
            worker_running: self.worker_running(),
            ..Default::default()
        };
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.parse::<WalFileName>().is_ok() {
                    status.spooled_files += 1;
                    status.spooled_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        status.remembered_misses = std::fs::read_dir(self.dir().join("misses"))
            .map(|d| d.count())
            .unwrap_or(0);
        status.position = self.position().map(|n| n.to_string());
        if let Ok(entries) = std::fs::read_dir(self.dir().join("failures")) {
            for entry in entries.filter_map(|e| e.ok()) {
                let message = std::fs::read_to_string(entry.path()).unwrap_or_default();
                status
                    .failures
                    .push((entry.file_name().to_string_lossy().into_owned(), message));
            }
            status.failures.sort();
        }
        status
    }

    /// Removes what killed processes left behind (temporary files, in the spool and in
    /// pg_wal) and misses too old to matter, so the spool cannot grow without bound.
    fn sweep(&self) {
        self.spool.sweep();
        sweep_stale_temp_files(self.pg_wal());
        let old = |entry: &std::fs::DirEntry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > MISS_PRUNE_AGE)
        };
        for records in ["misses", "failures"] {
            if let Ok(entries) = std::fs::read_dir(self.dir().join(records)) {
                for entry in entries.filter_map(|e| e.ok()).filter(old) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Whether the spool directory exists.
    pub fn dir_exists(&self) -> bool {
        self.spool.exists()
    }

    /// Removes the whole spool (recovery is over).
    pub fn remove(&self) {
        self.spool.remove();
    }

    /// True once the data directory around this pg_wal has left recovery: PostgreSQL removes
    /// `recovery.signal` and `standby.signal` when it promotes. A server shut down at its
    /// target keeps its signal file, and its spool.
    pub fn recovery_is_over(&self) -> bool {
        let Some(data_dir) = self.spool.data_dir() else {
            return false;
        };
        data_dir.join("PG_VERSION").is_file()
            && !data_dir.join("recovery.signal").exists()
            && !data_dir.join("standby.signal").exists()
    }

    /// Whether pg_wal's file system has room for one more download of `segment` bytes with
    /// `in_flight` others under way, leaving `reserve` bytes free. Unknown space counts as
    /// room: the reserve is a courtesy to PostgreSQL, and its own calls still fetch.
    fn has_room(&self, segment: u64, in_flight: usize, reserve: u64) -> bool {
        match rustix::fs::statvfs(self.pg_wal()) {
            Ok(fs) => room_for_download(
                fs.f_bavail.saturating_mul(fs.f_frsize),
                reserve,
                segment,
                in_flight,
            ),
            Err(_) => true,
        }
    }

    /// Whether a worker holds the spool's lock right now.
    pub fn worker_running(&self) -> bool {
        self.spool.worker_running()
    }

    /// Takes the worker lock; `None` if another worker holds it.
    pub fn try_lock_worker(&self) -> std::io::Result<Option<std::fs::File>> {
        self.spool.try_lock_worker()
    }

    /// Removes spooled segments before `position` on any timeline: recovery has moved on. (The
    /// position's own segment is left to PostgreSQL's call, which may be taking it right now.)
    fn prune_behind(&self, position: &SegmentName, size: WalSegmentSize) {
        let Ok(current) = position.segment_no(size) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let file = entry.file_name().to_string_lossy().into_owned();
            // `.crc`: the sidecar of earlier versions.
            let base = [".check", ".crc"]
                .iter()
                .find_map(|suffix| file.strip_suffix(suffix))
                .unwrap_or(&file);
            if let Ok(WalFileName::Segment(segment)) = base.parse::<WalFileName>()
                && segment.segment_no(size).is_ok_and(|n| n < current)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The `position` file's one record: the file name and the CRC-32 of it, padded to a fixed
/// length so that each write covers the one before it whole.
struct PositionRecord;

impl PositionRecord {
    const LEN: usize = 48;

    fn encode(name: &WalFileName) -> [u8; Self::LEN] {
        let name = name.to_string();
        let text = format!("{name} {:08x}", crc32fast::hash(name.as_bytes()));
        let mut record = [b' '; Self::LEN];
        record[..text.len()].copy_from_slice(text.as_bytes());
        record[Self::LEN - 1] = b'\n';
        record
    }

    fn decode(bytes: &[u8]) -> Option<WalFileName> {
        let text = std::str::from_utf8(bytes.get(..Self::LEN)?).ok()?;
        let (name, crc) = text.trim_end().split_once(' ')?;
        (u32::from_str_radix(crc, 16).ok()? == crc32fast::hash(name.as_bytes()))
            .then(|| name.parse().ok())
            .flatten()
    }
}

/// See [`FetchSpool::status`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchSpoolStatus {
    /// The last file PostgreSQL asked for; `None` before its first call (or if unreadable).
    pub position: Option<String>,
    /// Number of WAL files downloaded into the spool and not yet taken.
    pub spooled_files: usize,
    /// Total size of those files, in bytes.
    pub spooled_bytes: u64,
    /// Number of segments remembered as missing from the store.
    pub remembered_misses: usize,
    /// Whether a fetch-ahead worker holds the spool's lock.
    pub worker_running: bool,
    /// Files whose last fetch for PostgreSQL failed, as (file name, error message), sorted.
    pub failures: Vec<(String, String)>,
}

/// How many segments the fetch-ahead worker decompresses at once on this machine: one core
/// fewer than it has (at least one). PostgreSQL replays on a single core; with as many
/// decompressing downloads as cores, recovery on 2 cores measured slower than with one
/// (benches/README.md, issue 17).
pub fn decoders_for_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Room for one more download: free space, less what the downloads under way will take,
/// still holds the download and the reserve.
fn room_for_download(free: u64, reserve: u64, segment: u64, in_flight: usize) -> bool {
    free.saturating_sub(segment.saturating_mul(in_flight as u64)) >= reserve.saturating_add(segment)
}

/// Settings of the fetch-ahead worker ([`run_prefetch_worker`]).
#[derive(Debug, Clone, Copy)]
pub struct PrefetchOptions {
    /// The codec looked up first in the store (the one this configuration pushes with).
    pub preferred: Codec,
    /// Downloads run at once; 0 counts as 1.
    pub parallelism: usize,
    /// Segments decompressed and written (with their fsync and rename) at once, at least one:
    /// fewer than the cores, so that replay, which runs on one, always has it
    /// ([`decoders_for_cores`]).
    pub decoders: usize,
    /// Bytes of WAL kept downloaded ahead of replay.
    pub max_bytes: u64,
    /// Free space left on pg_wal's file system: downloading ahead pauses below it.
    pub reserve_bytes: u64,
    /// The worker exits once PostgreSQL has asked for nothing new for this long.
    pub idle_exit: Duration,
}

/// What a run of the fetch-ahead worker did.
#[derive(Debug, Clone, Default)]
pub struct PrefetchReport {
    /// Segments downloaded into the spool with their sidecar.
    pub fetched: usize,
    /// Downloads that failed (PostgreSQL's own call fetches those segments).
    pub failed: usize,
    /// Downloads not started because pg_wal's file system was down to its reserve.
    pub paused_for_space: usize,
    /// The spool was removed because recovery had ended.
    pub spool_removed: bool,
}

/// The fetch-ahead worker: keeps the segments after PostgreSQL's position downloaded (as many
/// as fit in `max_bytes`), `parallelism` at a time. Stops extending the window at the first
/// segment the store does not have (the end of the archive), retrying it now and then for a
/// standby. Call with the worker lock held.
pub async fn run_prefetch_worker(
    repo: &Repository,
    spool: &FetchSpool,
    options: PrefetchOptions,
    cancel: &CancellationToken,
) -> PrefetchReport {
    let mut report = PrefetchReport::default();
    let Ok(Some(identity)) = repo.identity().await else {
        return report; // nothing sensible to prefetch from
    };
    let size = identity.wal_segment_size;
    spool.sweep();
    let window = (options.max_bytes / size.bytes()).max(1);
    let parallelism = options.parallelism.max(1);
    let mut last_position: Option<WalFileName> = None;
    let mut last_progress = Instant::now();
    // Segments the store did not have, and when we asked.
    let mut missing: Option<(SegmentName, Instant)> = None;
    let decoders = tokio::sync::Semaphore::new(options.decoders.max(1));
    let mut in_flight = InFlight::new(parallelism);
    loop {
        let position = spool.position();
        if position != last_position {
            last_position = position;
            last_progress = Instant::now();
        }
        // Idle: recovery has asked for nothing new for a while and nothing is in flight.
        let idle = last_progress.elapsed() >= options.idle_exit;
        // While PostgreSQL asks for history files (or nothing yet) there is nothing to guess,
        // but what is in flight must still be driven to completion, or the worker never idles.
        if let Some(WalFileName::Segment(current)) = position {
            spool.prune_behind(&current, size);
            let Ok(current_no) = current.segment_no(size) else {
                return report;
            };
            // The window after the position that is neither spooled, in flight, nor past a miss.
            let candidates = (1..=window)
                .filter_map(|ahead| current_no.as_u64().checked_add(ahead))
                .map(|n| SegmentName::new(current.timeline(), crate::wal::SegmentNo::new(n), size));
            for segment in candidates {
                if !in_flight.has_room() || cancel.is_cancelled() {
                    break;
                }
                if let Some((miss, at)) = &missing {
                    let retry_after = if spool.recovery().is_some_and(|(_, standby)| standby) {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_secs(5)
                    };
                    if segment >= *miss && at.elapsed() < retry_after {
                        break;
                    }
                }
                let name = WalFileName::Segment(segment);
                let text = name.to_string();
                if spool.is_spooled(&name) || in_flight.skips(&text) {
                    continue;
                }
                if !spool.has_room(size.bytes(), in_flight.len(), options.reserve_bytes) {
                    if report.paused_for_space == 0 {
                        tracing::warn!(
                            reserve_mib = options.reserve_bytes >> 20,
                            "pg_wal's file system is down to its reserve: not downloading ahead"
                        );
                    }
                    report.paused_for_space += 1;
                    break;
                }
                let decoders = &decoders;
                in_flight.start(text, async move {
                    let result = fetch_wal_file_sharing(
                        repo,
                        &name,
                        &spool.data_path(&name),
                        options.preferred,
                        true,
                        Some(decoders),
                    )
                    .await;
                    (name, (segment, result))
                });
            }
        }
        let Some((name, (segment, result))) = in_flight.next().await else {
            // Nothing could be scheduled: the window is full, or ends at a miss.
            if cancel.is_cancelled() {
                return report;
            }
            if idle {
                // Recovery has ended (promoted): the spool is of no more use, whether or not
                // this server archives (a wal-push would remove it too).
                if spool.recovery_is_over() {
                    spool.remove();
                    report.spool_removed = true;
                }
                return report;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = cancel.cancelled() => {}
            }
            continue;
        };
        match result {
            Ok(FetchOutcome::Fetched(fetched)) => {
                // Without its stamp and sidecar the file is never handed over (PostgreSQL's
                // call fetches the segment itself).
                let stamped = stamp_verified(
                    &spool.data_path(&name),
                    fetched.restored_bytes,
                    fetched.crc32,
                    repo.location().to_string(),
                )
                .and_then(|check| {
                    std::fs::write(
                        spool.check_path(&name),
                        serde_json::to_vec(&check).expect("serialises"),
                    )
                });
                match stamped {
                    Ok(()) => report.fetched += 1,
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "could not stamp a spooled file")
                    }
                }
                if missing.is_some_and(|(m, _)| segment >= m) {
                    missing = None;
                }
            }
            Ok(FetchOutcome::NotFound) => {
                // Remember the earliest segment the store lacks: the end of the archive.
                if missing.is_none_or(|(m, _)| segment <= m) {
                    missing = Some((segment, Instant::now()));
                }
            }
            // fetch_wal_file never answers from a spool.
            Ok(FetchOutcome::FromSpool) => {}
            Err(e) => {
                // PostgreSQL's own call fetches it and reports; do not hammer a failing store.
                tracing::warn!(file = %name, error = %e, "prefetch failed");
                in_flight.failed(name.to_string());
                report.failed += 1;
            }
        }
    }
}

/// Stamps a freshly verified spooled file: its time set to [`verified_mtime`], and the
/// sidecar's description of it (`crc32` of the `len` bytes just written) returned.
fn stamp_verified(
    path: &Path,
    len: u64,
    crc32: u32,
    repository: String,
) -> std::io::Result<SpooledCheck> {
    let meta = set_modified(path, verified_mtime())?.metadata()?;
    if meta.len() != len {
        return Err(std::io::Error::other("spooled file changed while stamped"));
    }
    Ok(SpooledCheck {
        len,
        crc32,
        dev: meta.dev(),
        inode: meta.ino(),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        repository,
    })
}

/// Sets the modification time of the file at `path`; returns it, open.
fn set_modified(path: &Path, time: SystemTime) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_modified(time)?;
    Ok(file)
}

fn crc_of_file(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::push_wal_file;
    use crate::codec::Compression;
    use crate::store::RepoLocation;
    use crate::testing::synthetic_segment;
    use crate::wal::{SegmentNo, SystemId, TimelineId};

    struct Fixture {
        _dir: tempfile::TempDir,
        data_dir: PathBuf,
        pg_wal: PathBuf,
        repo: Repository,
        segments: Vec<(WalFileName, Vec<u8>)>,
    }

    /// A repository holding segments 1..=n of 1 MiB, and a data directory recovering from it.
    async fn fixture(n: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let pg_wal = data_dir.join("pg_wal");
        std::fs::create_dir_all(&pg_wal).unwrap();
        std::fs::write(data_dir.join("postmaster.pid"), "4242\n/data\n1763700000\n").unwrap();
        std::fs::write(data_dir.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(data_dir.join("recovery.signal"), "").unwrap();
        let repo = Repository::open_for_write(
            RepoLocation::Local(dir.path().join("repo")),
            &Default::default(),
        )
        .unwrap();
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        let mut segments = Vec::new();
        for segno in 1..=n {
            let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(segno), size);
            let content = synthetic_segment(
                SystemId::new(3),
                TimelineId::FIRST,
                SegmentNo::new(segno),
                size,
            );
            std::fs::write(source.join(name.to_string()), &content).unwrap();
            push_wal_file(
                &repo,
                &source.join(name.to_string()),
                Compression::default(),
                None,
            )
            .await
            .unwrap();
            segments.push((WalFileName::Segment(name), content));
        }
        Fixture {
            _dir: dir,
            data_dir,
            pg_wal,
            repo,
            segments,
        }
    }

    /// [`fixture`] of `n` segments, with the worker run once from the first: the window after
    /// it spooled.
    async fn spooled_after_first(n: u64) -> (Fixture, FetchSpool) {
        let fx = fixture(n).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        spool.set_position(&fx.segments[0].0);
        run_prefetch_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        (fx, spool)
    }

    fn options() -> PrefetchOptions {
        PrefetchOptions {
            preferred: Codec::Zstd,
            parallelism: 2,
            decoders: 1,
            max_bytes: 3 << 20,
            reserve_bytes: 0,
            idle_exit: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn worker_exits_when_recovery_moves_on_to_history_files_mid_fetch() {
        // After promotion PostgreSQL asks for .history files: downloads still in flight must
        // complete and the worker go idle, not spin forever (seen as workers outliving
        // restored test servers).
        let fx = fixture(12).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        spool.set_position(&fx.segments[0].0);
        let history: WalFileName = "00000002.history".parse().unwrap();
        let switch = async {
            while !spool.is_spooled(&fx.segments[1].0) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            spool.set_position(&history);
        };
        let mut opts = options();
        opts.max_bytes = 10 << 20;
        let cancel = CancellationToken::new();
        let worker = tokio::time::timeout(
            Duration::from_secs(30),
            run_prefetch_worker(&fx.repo, &spool, opts, &cancel),
        );
        let (report, ()) = tokio::join!(worker, switch);
        let report = report.expect("the worker exits once idle");
        assert!(report.fetched >= 1, "{report:?}");
    }

    #[tokio::test]
    async fn worker_fills_the_window_after_the_position_and_files_check_out() {
        let fx = fixture(8).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        spool.set_position(&fx.segments[0].0);
        let report =
            run_prefetch_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert_eq!(
            report.fetched, 3,
            "window of 3 MiB = 3 segments: {report:?}"
        );
        for (name, content) in &fx.segments[1..4] {
            let dest = fx.pg_wal.join("RECOVERYXLOG");
            assert!(
                spool.take(fx.repo.location(), name, &dest),
                "{name} spooled"
            );
            assert_eq!(&std::fs::read(&dest).unwrap(), content);
        }
        assert!(
            !spool.take(
                fx.repo.location(),
                &fx.segments[4].0,
                &fx.pg_wal.join("RECOVERYXLOG")
            ),
            "beyond the window"
        );
    }

    #[tokio::test]
    async fn a_damaged_or_truncated_spool_file_is_never_handed_over() {
        let (fx, spool) = spooled_after_first(4).await;
        let dest = fx.pg_wal.join("RECOVERYXLOG");

        let flipped = spool.data_path(&fx.segments[1].0);
        let mut bytes = std::fs::read(&flipped).unwrap();
        bytes[500_000] ^= 0x01;
        std::fs::write(&flipped, bytes).unwrap();
        assert!(!spool.take(fx.repo.location(), &fx.segments[1].0, &dest));
        assert!(!dest.exists() && !flipped.exists());

        let truncated = spool.data_path(&fx.segments[2].0);
        let bytes = std::fs::read(&truncated).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        assert!(!spool.take(fx.repo.location(), &fx.segments[2].0, &dest));
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn a_spooled_file_is_handed_over_only_as_the_worker_left_it() {
        let (fx, spool) = spooled_after_first(4).await;
        let dest = fx.pg_wal.join("RECOVERYXLOG");

        // The same bytes in another file, even carrying the stamp: not the verified file.
        let replaced = spool.data_path(&fx.segments[1].0);
        let bytes = std::fs::read(&replaced).unwrap();
        // Moved aside, not removed: a removed file's inode number can be reused at once.
        std::fs::rename(&replaced, fx.pg_wal.join("aside")).unwrap();
        std::fs::write(&replaced, &bytes).unwrap();
        stamp_verified(&replaced, bytes.len() as u64, 0, String::new()).unwrap();
        assert!(!spool.take(fx.repo.location(), &fx.segments[1].0, &dest));
        assert!(!dest.exists() && !replaced.exists());

        // The stamp gone (a crash lost it, or the file was touched): not handed over.
        let touched = spool.data_path(&fx.segments[2].0);
        std::fs::File::options()
            .write(true)
            .open(&touched)
            .unwrap()
            .set_modified(SystemTime::now())
            .unwrap();
        assert!(!spool.take(fx.repo.location(), &fx.segments[2].0, &dest));
        assert!(!dest.exists());

        // Spooled from another repository: not used with this one.
        let other = RepoLocation::Local(fx.pg_wal.join("elsewhere"));
        assert!(!spool.take(&other, &fx.segments[3].0, &dest));
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn a_file_long_in_the_spool_is_checked_again_and_a_time_set_back_is_seen() {
        let (fx, spool) = spooled_after_first(4).await;
        let location = fx.repo.location();

        // Stamped longer ago than trusted: the CRC-32 decides. Intact, it is handed over, and
        // with a current modification time.
        let dest = fx.pg_wal.join("RECOVERYXLOG");
        let (name, content) = &fx.segments[1];
        assert!(spool.take_trusting_stamps_for(location, name, &dest, Duration::ZERO));
        assert_eq!(&std::fs::read(&dest).unwrap(), content);
        let mtime = std::fs::metadata(&dest).unwrap().modified().unwrap();
        assert!(
            mtime.elapsed().unwrap() < Duration::from_secs(60),
            "{mtime:?}"
        );

        // Bytes that no longer match the CRC-32 they were verified with: refused.
        let other_dest = fx.pg_wal.join("RECOVERYXLOG.2");
        let name = &fx.segments[2].0;
        let check_path = spool.check_path(name);
        let mut check: SpooledCheck =
            serde_json::from_slice(&std::fs::read(&check_path).unwrap()).unwrap();
        check.crc32 ^= 1;
        std::fs::write(&check_path, serde_json::to_vec(&check).unwrap()).unwrap();
        assert!(!spool.take_trusting_stamps_for(location, name, &other_dest, Duration::ZERO));
        assert!(!other_dest.exists());

        // Written to, then its time set back to the stamp's: its change time moved on.
        std::thread::sleep(Duration::from_millis(50));
        let name = &fx.segments[3].0;
        let data = spool.data_path(name);
        let file = std::fs::File::options().write(true).open(&data).unwrap();
        std::os::unix::fs::FileExt::write_at(&file, &[0x42], 100).unwrap();
        file.set_modified(verified_mtime()).unwrap();
        drop(file);
        assert!(!spool.take(location, name, &other_dest));
        assert!(!other_dest.exists());
    }

    #[test]
    fn a_position_read_while_it_is_rewritten_is_not_taken_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let spool = FetchSpool::for_pg_wal(dir.path());
        let (first, later): (WalFileName, WalFileName) = (
            "000000010000000000000009".parse().unwrap(),
            "00000002.history".parse().unwrap(),
        );
        spool.set_position(&first);
        assert_eq!(spool.position(), Some(first));
        // A shorter name written over a longer one leaves nothing of it behind.
        spool.set_position(&later);
        assert_eq!(spool.position(), Some(later));

        // A read racing a write can see the new name with the old CRC-32 behind it: a valid
        // name, and still no position.
        let next: WalFileName = "00000001000000000000000A".parse().unwrap();
        let (old, new) = (
            PositionRecord::encode(&first),
            PositionRecord::encode(&next),
        );
        let mut torn = old;
        torn[..24].copy_from_slice(&new[..24]);
        assert_eq!(PositionRecord::decode(&torn), None);
        assert_eq!(PositionRecord::decode(&new), Some(next));
        // A bare name (earlier versions) or a short read: no position, not a wrong one.
        assert_eq!(PositionRecord::decode(b"000000010000000000000009"), None);
        assert_eq!(PositionRecord::decode(&new[..20]), None);
    }

    #[tokio::test]
    async fn misses_are_remembered_for_this_recovery_only() {
        let fx = fixture(1).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        let beyond: WalFileName = "000000010000000000000002".parse().unwrap();
        assert!(!spool.is_known_missing(&beyond));
        spool.remember_missing(&beyond);
        assert!(spool.is_known_missing(&beyond));
        // A restart is another recovery.
        std::fs::write(
            fx.data_dir.join("postmaster.pid"),
            "4243\n/data\n1763700100\n",
        )
        .unwrap();
        assert!(!spool.is_known_missing(&beyond));
    }

    #[tokio::test]
    async fn fetch_failures_are_recorded_until_the_file_is_fetched() {
        let fx = fixture(1).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        let name = &fx.segments[0].0;
        spool.record_failure(name, "checksum mismatch");
        assert_eq!(
            spool.status().failures,
            vec![(name.to_string(), "checksum mismatch".to_owned())]
        );
        spool.clear_failure(name);
        assert!(spool.status().failures.is_empty());
        // Not in recovery: nothing is recorded (nothing would ever remove it).
        std::fs::remove_file(fx.data_dir.join("postmaster.pid")).unwrap();
        spool.record_failure(name, "checksum mismatch");
        assert!(spool.status().failures.is_empty());
    }

    #[tokio::test]
    async fn history_misses_are_never_answered_from_memory() {
        // Issue 10, item 5: at the end of recovery PostgreSQL probes history files to pick a
        // timeline id no other server took; a remembered miss could hand it a taken one.
        let fx = fixture(1).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        let history: WalFileName = "00000002.history".parse().unwrap();
        spool.remember_missing(&history);
        assert!(!spool.is_known_missing(&history));
    }

    #[tokio::test]
    async fn the_window_stops_at_the_end_of_the_archive() {
        let fx = fixture(3).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        spool.set_position(&fx.segments[1].0);
        let report =
            run_prefetch_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert_eq!(
            report.fetched, 1,
            "only segment 3 exists after 2: {report:?}"
        );
        assert_eq!(report.failed, 0);
    }

    #[tokio::test]
    async fn the_spool_goes_once_recovery_is_over_whatever_archiving_does() {
        // Issue 10, item 6: only a wal-push removed the spool after recovery, so a copy that
        // does not archive kept up to prefetch_mib of segments in pg_wal for ever.
        let fx = fixture(4).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        spool.set_position(&fx.segments[0].0);
        let report =
            run_prefetch_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert!(report.fetched > 0 && !report.spool_removed);
        assert!(spool.dir_exists(), "still recovering: the spool stays");

        std::fs::remove_file(fx.data_dir.join("recovery.signal")).unwrap(); // promoted
        spool.set_position(&"00000002.history".parse().unwrap());
        let report =
            run_prefetch_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert!(report.spool_removed, "{report:?}");
        assert!(!spool.dir_exists());
    }

    #[tokio::test]
    async fn downloading_ahead_pauses_at_the_free_space_reserve() {
        let fx = fixture(4).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        spool.set_position(&fx.segments[0].0);
        let mut opts = options();
        opts.reserve_bytes = u64::MAX / 2; // more than any file system has free
        let report = run_prefetch_worker(&fx.repo, &spool, opts, &CancellationToken::new()).await;
        assert_eq!(report.fetched, 0, "{report:?}");
        assert!(report.paused_for_space > 0, "{report:?}");
        assert!(!spool.is_spooled(&fx.segments[1].0));

        let mib = 1 << 20;
        assert!(room_for_download(100 * mib, 50 * mib, 16 * mib, 0));
        assert!(room_for_download(100 * mib, 50 * mib, 16 * mib, 2));
        assert!(!room_for_download(100 * mib, 50 * mib, 16 * mib, 3));
        assert!(!room_for_download(60 * mib, 50 * mib, 16 * mib, 0));
        assert!(!room_for_download(0, 0, 16 * mib, 0));
    }

    #[tokio::test]
    async fn what_a_killed_fetch_left_in_pg_wal_is_swept() {
        // Issue 10, item 6: a wal-fetch killed mid-download leaves up to a segment under a
        // temporary name in pg_wal; a killed fetch-ahead download one in the spool.
        let fx = fixture(2).await;
        let spool = FetchSpool::for_pg_wal(&fx.pg_wal);
        spool.set_position(&fx.segments[0].0);
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            child.id()
        };
        let left_in_pg_wal = fx.pg_wal.join(format!(".RECOVERYXLOG.walarch-{dead}.tmp"));
        let left_in_spool = spool
            .dir()
            .join(format!(".{}.walarch-{dead}.tmp", fx.segments[1].0));
        std::fs::write(&left_in_pg_wal, vec![0u8; 1 << 20]).unwrap();
        std::fs::write(&left_in_spool, vec![0u8; 1 << 20]).unwrap();
        run_prefetch_worker(&fx.repo, &spool, options(), &CancellationToken::new()).await;
        assert!(!left_in_pg_wal.exists() && !left_in_spool.exists());
    }
}
