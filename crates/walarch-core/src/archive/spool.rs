//! What the push-ahead and fetch-ahead spools share: a directory inside a server's `pg_wal`
//! (on the same file system as the WAL, and outside base backups, which skip pg_wal's
//! contents), one worker per spool holding an advisory lock on `worker.lock`, and the sweep
//! of temporary files a killed process left there.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A spool directory, `pg_wal/walarch/<kind>/`.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    pg_wal: PathBuf,
    dir: PathBuf,
}

impl Spool {
    pub fn new(pg_wal: &Path, kind: &str) -> Spool {
        Spool {
            pg_wal: pg_wal.to_owned(),
            dir: pg_wal.join("walarch").join(kind),
        }
    }

    /// The `pg_wal` directory `file` is in, when it is one (as PostgreSQL's `%p` is).
    pub fn pg_wal_of(file: &Path) -> Option<&Path> {
        file.parent()
            .filter(|dir| dir.file_name().is_some_and(|n| n == "pg_wal"))
    }

    pub fn pg_wal(&self) -> &Path {
        &self.pg_wal
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory around `pg_wal`.
    pub fn data_dir(&self) -> Option<&Path> {
        self.pg_wal.parent()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Removes the whole spool.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Removes what killed processes left behind in the spool.
    pub fn sweep(&self) {
        crate::local_files::sweep_stale_temp_files(&self.dir);
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("worker.lock")
    }

    /// Whether a worker holds the lock right now. Only "would block" means yes: any other
    /// error (no lock file yet, a file system without locks) means no worker to wait for.
    pub fn worker_running(&self) -> bool {
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.lock_path())
        else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    /// Takes the worker lock, retrying briefly (a `worker_running` check by another process
    /// holds it for an instant); `None` when a worker really holds it. The lock is released
    /// when the returned file is dropped or the process dies.
    pub fn try_lock_worker(&self) -> std::io::Result<Option<std::fs::File>> {
        std::fs::create_dir_all(&self.dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.lock_path())?;
        for _ in 0..20 {
            match file.try_lock() {
                Ok(()) => return Ok(Some(file)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(None)
    }
}
