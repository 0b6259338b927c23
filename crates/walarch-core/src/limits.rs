//! Limits on what bulk transfers take from a server's network and CPU: a bandwidth limit for
//! backups, restores and verification ([`RateLimit`]), and a base backup's deference to WAL
//! archiving ([`ArchiveGate`]): while the server it backs up has finished segments waiting to
//! be archived, the backup's upload pauses, so archiving (which decides how much a crash
//! loses) is never queued behind it.
//!
//! Both act inside the synchronous reader/writer chains of backup parts ([`Limited`]): a pause
//! there stops the whole pipeline (reading, compressing, sealing, uploading) and gives its
//! CPU back too.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much unused budget a transfer may catch up on after a pause.
const BURST: Duration = Duration::from_millis(250);
/// How often the gate counts the server's waiting segments.
const GATE_POLL: Duration = Duration::from_millis(50);
/// The gate stops deferring when archiving made no progress for this long: a failing
/// archive_command does not get better by starving the backup (which needs that WAL too).
const STALLED_ARCHIVER: Duration = Duration::from_secs(10);
/// The longest a backup waits at a stretch; then it writes for [`GRANTED`] whatever waits.
/// A server that writes WAL as fast as it is archived always has a segment waiting: the
/// backup then gets at least a third of the time instead of none.
const LONGEST_DEFERRAL: Duration = Duration::from_secs(2);
/// How long writes go through after a deferral ran out.
const GRANTED: Duration = Duration::from_secs(1);

/// A byte rate shared by every worker of one transfer (a leaky bucket).
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: u64,
    /// When the budget spent so far is paid off.
    paid_until: Mutex<Instant>,
}

impl RateLimit {
    /// At most `bytes_per_second` on average (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimit {
            bytes_per_second: bytes_per_second.max(1),
            // A transfer may start with a burst, as after any pause.
            paid_until: Mutex::new(
                Instant::now()
                    .checked_sub(BURST)
                    .unwrap_or_else(Instant::now),
            ),
        }
    }

    /// The configured rate.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// Spends `bytes` of the budget; returns how long the caller must wait before going on.
    pub fn spend(&self, bytes: usize) -> Duration {
        let now = Instant::now();
        let mut paid_until = self.paid_until.lock().expect("rate limit lock");
        let start = (*paid_until).max(now.checked_sub(BURST).unwrap_or(now));
        *paid_until = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        paid_until.saturating_duration_since(now)
    }

    /// Spends `bytes` and sleeps as long as needed (on a blocking thread).
    pub fn wait(&self, bytes: usize) {
        let wait = self.spend(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// Watches a server's `pg_wal/archive_status` while a backup of it runs: finished segments
/// waiting for archive_command (`.ready` files) make [`ArchiveGate::wait_turn`] block.
#[derive(Debug)]
pub struct ArchiveGate {
    waiting: AtomicUsize,
    /// The archiver removed a `.ready` file (or none was waiting) within [`STALLED_ARCHIVER`].
    progressing: AtomicBool,
    stop: AtomicBool,
    /// Time the backup spent waiting, in milliseconds.
    deferred_ms: AtomicU64,
    /// Until when writes go through regardless (after a deferral ran out).
    granted_until: Mutex<Option<Instant>>,
}

impl ArchiveGate {
    /// Starts watching `pg_wal` (a thread that stops when the gate is dropped).
    pub fn watch(pg_wal: &Path) -> Arc<ArchiveGate> {
        let gate = Arc::new(ArchiveGate {
            waiting: AtomicUsize::new(0),
            progressing: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            deferred_ms: AtomicU64::new(0),
            granted_until: Mutex::new(None),
        });
        let weak = Arc::downgrade(&gate);
        let status = pg_wal.join("archive_status");
        std::thread::Builder::new()
            .name("walarch-archive-gate".into())
            .spawn(move || watch_loop(weak, status))
            .expect("start the archive gate thread");
        gate
    }

    /// Blocks while the server has finished segments waiting to be archived and its
    /// archiver is making progress, at most two seconds at a stretch (then writes go
    /// through for a second).
    pub fn wait_turn(&self) {
        if self
            .granted_until
            .lock()
            .expect("gate lock")
            .is_some_and(|until| Instant::now() < until)
        {
            return;
        }
        let started = Instant::now();
        while self.should_defer() {
            if started.elapsed() >= LONGEST_DEFERRAL {
                *self.granted_until.lock().expect("gate lock") = Some(Instant::now() + GRANTED);
                break;
            }
            std::thread::sleep(GATE_POLL / 2);
        }
        let waited = started.elapsed().as_millis() as u64;
        if waited > 0 {
            self.deferred_ms.fetch_add(waited, Ordering::Relaxed);
        }
    }

    fn should_defer(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.waiting.load(Ordering::Relaxed) > 0
            && self.progressing.load(Ordering::Relaxed)
    }

    /// How long the backup waited for archiving so far.
    pub fn deferred(&self) -> Duration {
        Duration::from_millis(self.deferred_ms.load(Ordering::Relaxed))
    }

    /// Stops deferring (the uploads are done, failed or were cancelled).
    pub fn open(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn watch_loop(gate: std::sync::Weak<ArchiveGate>, status: PathBuf) {
    let mut previous: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut last_progress = Instant::now();
    while let Some(gate) = gate.upgrade() {
        if gate.stop.load(Ordering::Relaxed) {
            return;
        }
        // An unreadable directory (no archiving, not this server's) defers nothing.
        let ready: std::collections::HashSet<String> = std::fs::read_dir(&status)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".ready"))
                    .collect()
            })
            .unwrap_or_default();
        if ready.is_empty() || previous.iter().any(|name| !ready.contains(name)) {
            last_progress = Instant::now();
        }
        gate.waiting.store(ready.len(), Ordering::Relaxed);
        gate.progressing.store(
            last_progress.elapsed() < STALLED_ARCHIVER,
            Ordering::Relaxed,
        );
        previous = ready;
        drop(gate);
        std::thread::sleep(GATE_POLL);
    }
}

/// A reader or writer of a bulk transfer, paced by an optional rate limit and, for writers,
/// an optional archive gate.
#[derive(Debug)]
pub struct Limited<T> {
    inner: T,
    rate: Option<Arc<RateLimit>>,
    gate: Option<Arc<ArchiveGate>>,
}

impl<T> Limited<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, rate: Option<Arc<RateLimit>>, gate: Option<Arc<ArchiveGate>>) -> Self {
        Limited { inner, rate, gate }
    }

    /// The wrapped reader or writer.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(gate) = &self.gate {
            gate.wait_turn();
        }
        let written = self.inner.write(buf)?;
        if let Some(rate) = &self.rate {
            rate.wait(written);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if let Some(rate) = &self.rate {
            rate.wait(read);
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_spreads_spending_over_time() {
        let limit = RateLimit::new(1 << 20);
        // The first quarter second is a burst allowance; past it, each MiB costs a second.
        assert!(limit.spend(256 << 10).is_zero());
        let wait = limit.spend(1 << 20);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000),
            "{wait:?}"
        );
        let wait = limit.spend(1 << 20);
        assert!(wait > Duration::from_millis(1900), "{wait:?}");
    }

    #[test]
    fn the_gate_defers_while_segments_wait_and_the_archiver_moves() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir(&status).unwrap();
        let gate = ArchiveGate::watch(dir.path());
        std::thread::sleep(GATE_POLL * 3);
        assert!(!gate.should_defer(), "nothing waiting");
        std::fs::write(status.join("000000010000000000000001.ready"), "").unwrap();
        std::thread::sleep(GATE_POLL * 3);
        assert!(gate.should_defer(), "a segment waits");
        // The archiver takes it: the writer goes on.
        std::fs::rename(
            status.join("000000010000000000000001.ready"),
            status.join("000000010000000000000001.done"),
        )
        .unwrap();
        let started = Instant::now();
        gate.wait_turn();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!gate.should_defer());
        gate.open();
        std::fs::write(status.join("000000010000000000000002.ready"), "").unwrap();
        std::thread::sleep(GATE_POLL * 3);
        assert!(!gate.should_defer(), "an opened gate defers nothing");
    }

    #[test]
    fn a_backlog_that_never_empties_defers_a_writer_only_so_long() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir(&status).unwrap();
        let gate = ArchiveGate::watch(dir.path());
        // An archiver that keeps up but is never done: a new segment for each archived one.
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (status, stop) = (status.clone(), stop.clone());
            std::thread::spawn(move || {
                let ready = |n: u64| status.join(format!("{n:024}.ready"));
                std::fs::write(ready(0), "").unwrap();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(GATE_POLL * 2);
                    // The next segment is finished before this one is archived: never empty.
                    std::fs::write(ready(n + 1), "").unwrap();
                    std::fs::remove_file(ready(n)).unwrap();
                }
            })
        };
        std::thread::sleep(GATE_POLL * 3);
        let started = Instant::now();
        gate.wait_turn();
        let waited = started.elapsed();
        assert!(
            waited >= LONGEST_DEFERRAL && waited < LONGEST_DEFERRAL * 3,
            "{waited:?}"
        );
        // Then writes go through for a while.
        let started = Instant::now();
        gate.wait_turn();
        assert!(started.elapsed() < GATE_POLL, "granted");
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    }
}
