//! Writing a backup's content as compressed tar parts, in parallel and in bounded memory.
//!
//! Each worker thread takes the next file from a shared queue (largest first) and appends it
//! to its own part: tar → compression → a multipart upload whose buffers are bounded
//! (`UPLOAD_CHUNK` × `UPLOADS_IN_FLIGHT` per worker), so memory does not grow with the
//! database. A part is closed once it holds `part_size` bytes of tar.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use tokio_util::io::SyncIoBridge;

use super::Progress;
use super::manifest::{DirectoryEntry, FileEntry, PartEntry};
use super::scan::SourceFile;
use crate::codec::Compression;
use crate::limits::{ArchiveGate, Limited, RateLimit};
use crate::store::keys;

/// Bytes per upload request of a part.
const UPLOAD_CHUNK: usize = 8 << 20;
/// Upload requests in flight per part being written.
const UPLOADS_IN_FLIGHT: usize = 2;
/// Read buffer per file.
const READ_BUFFER: usize = 256 << 10;

/// What one queue item is: a directory entry (carried in the tar so a hand restore recreates
/// empty directories) or a file.
#[derive(Debug)]
pub(crate) enum Item {
    Directory(DirectoryEntry),
    File(SourceFile),
}

/// One finished part and what it holds.
#[derive(Debug)]
pub(crate) struct WrittenPart {
    pub part: PartEntry,
    pub files: Vec<FileEntry>,
}

pub(crate) struct PartsJob {
    pub store: Arc<dyn ObjectStore>,
    pub backup_id: String,
    pub compression: Compression,
    pub part_size: u64,
    pub queue: Mutex<VecDeque<Item>>,
    pub next_part: AtomicU32,
    pub failed: AtomicBool,
    pub progress: Arc<Progress>,
    pub runtime: tokio::runtime::Handle,
    /// Seals each part after compression when encryption is on.
    pub keyring: Option<Arc<crate::crypto::Keyring>>,
    /// The upload's bandwidth limit, shared by every worker.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Pauses the upload while the server's finished WAL waits to be archived.
    pub archive_gate: Option<Arc<ArchiveGate>>,
}

impl std::fmt::Debug for PartsJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartsJob")
            .field("backup_id", &self.backup_id)
            .finish_non_exhaustive()
    }
}

impl PartsJob {
    fn next_item(&self) -> Option<Item> {
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        self.queue.lock().expect("queue lock").pop_front()
    }

    /// Runs one worker until the queue is empty; returns the parts it wrote.
    pub(crate) fn run_worker(&self) -> Result<Vec<WrittenPart>, PartError> {
        let result = self.write_parts();
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// Stops every worker between files, and any waiting for archiving at once.
    pub(crate) fn stop(&self) {
        self.failed.store(true, Ordering::Relaxed);
        if let Some(gate) = &self.archive_gate {
            gate.open();
        }
    }

    fn write_parts(&self) -> Result<Vec<WrittenPart>, PartError> {
        let mut written = Vec::new();
        let mut pending = self.next_item();
        while let Some(first) = pending.take() {
            let index = self.next_part.fetch_add(1, Ordering::Relaxed);
            let key = keys::backup_part(&self.backup_id, index, self.compression.codec());
            let mut part = PartWriter::open(self, &key)?;
            let mut files = Vec::new();
            let mut item = Some(first);
            while let Some(current) = item.take() {
                if let Some(file) = part.append(current, index).map_err(|e| e.at(&key))? {
                    files.push(file);
                }
                if part.tar_bytes() >= self.part_size {
                    pending = self.next_item();
                    break;
                }
                item = self.next_item();
            }
            let (tar_bytes, stored_bytes) = part.finish().map_err(|e| e.at(&key))?;
            written.push(WrittenPart {
                part: PartEntry {
                    index,
                    tar_bytes,
                    stored_bytes,
                    files: files.len() as u32,
                },
                files,
            });
        }
        Ok(written)
    }
}

type Upload = SyncIoBridge<BufWriter>;

/// What a part's compressed stream goes into: sealing (when encryption is on), then the
/// count of stored bytes, then the limits, then the upload.
type StoredStream = Sealing<Counted<Limited<Upload>>>;

/// tar → compression → [`StoredStream`].
struct PartWriter<'job> {
    job: &'job PartsJob,
    tar: tar::Builder<Counted<crate::codec::EncodingWriter<StoredStream>>>,
}

/// The sealing layer of a part: age's stream writer, or nothing.
enum Sealing<W: Write> {
    Plain(W),
    Sealed(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealing<W> {
    fn new(keyring: Option<&crate::crypto::Keyring>, inner: W) -> io::Result<Self> {
        Ok(match keyring {
            Some(keyring) => Sealing::Sealed(keyring.seal_writer(inner)?),
            None => Sealing::Plain(inner),
        })
    }

    /// Writes the last authenticated chunk (sealed) and hands back the writer below.
    fn finish(self) -> io::Result<W> {
        match self {
            Sealing::Plain(inner) => Ok(inner),
            Sealing::Sealed(writer) => writer.finish(),
        }
    }
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealing::Plain(inner) => inner.write(buf),
            Sealing::Sealed(writer) => writer.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealing::Plain(inner) => inner.flush(),
            Sealing::Sealed(writer) => writer.flush(),
        }
    }
}

impl<'job> PartWriter<'job> {
    fn open(job: &'job PartsJob, key: &StorePath) -> Result<Self, PartError> {
        let upload = BufWriter::with_capacity(job.store.clone(), key.clone(), UPLOAD_CHUNK)
            .with_max_concurrency(UPLOADS_IN_FLIGHT);
        let upload = SyncIoBridge::new_with_handle(upload, job.runtime.clone());
        let upload = Limited::new(upload, job.rate_limit.clone(), job.archive_gate.clone());
        let sealing = Sealing::new(job.keyring.as_deref(), Counted::new(upload))
            .map_err(|e| PartError::Io(e).at(key))?;
        let encoder = job
            .compression
            .writer(sealing)
            .map_err(|e| PartError::Io(io::Error::other(e.to_string())).at(key))?;
        let mut tar = tar::Builder::new(Counted::new(encoder));
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(PartWriter { job, tar })
    }

    fn tar_bytes(&self) -> u64 {
        self.tar.get_ref().count
    }

    /// Appends a directory or a file; returns the file's manifest entry (`None` for a
    /// directory or a file that vanished before it could be opened).
    fn append(&mut self, item: Item, part: u32) -> Result<Option<FileEntry>, PartError> {
        match item {
            Item::Directory(dir) => {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(dir.mode);
                header.set_size(0);
                header.set_mtime(0);
                self.tar
                    .append_data(&mut header, format!("{}/", dir.path), io::empty())?;
                Ok(None)
            }
            Item::File(file) => {
                let source = match File::open(&file.source) {
                    Ok(f) => f,
                    // Dropped since the scan: WAL replay removes it anyway.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.job.progress.add(file.size);
                        return Ok(None);
                    }
                    Err(e) => {
                        return Err(PartError::Read {
                            path: file.source.display().to_string(),
                            source: e,
                        });
                    }
                };
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(file.mode);
                header.set_size(file.size);
                header.set_mtime(file.mtime);
                let mut reader = ExactLength::new(
                    BufReader::with_capacity(READ_BUFFER, source),
                    file.size,
                    &self.job.progress,
                );
                let appended = self.tar.append_data(&mut header, &file.path, &mut reader);
                if let Some(source) = reader.read_error.take() {
                    return Err(PartError::Read {
                        path: file.source.display().to_string(),
                        source,
                    });
                }
                appended?;
                if reader.padded {
                    tracing::debug!(file = %file.path, "file shrank while being copied; WAL replay restores it");
                }
                self.job.progress.add_file();
                Ok(Some(FileEntry {
                    path: file.path,
                    size: file.size,
                    crc32: reader.crc.finalize(),
                    mode: file.mode,
                    part,
                }))
            }
        }
    }

    /// Ends the tar stream and the compressed frame and completes the upload. Returns the
    /// tar bytes and the stored bytes.
    fn finish(self) -> Result<(u64, u64), PartError> {
        let counted_tar = self.tar.into_inner()?;
        let tar_bytes = counted_tar.count;
        let counted_upload = counted_tar.inner.finish()?.finish()?;
        let stored_bytes = counted_upload.count;
        let mut upload = counted_upload.inner.into_inner();
        upload.flush()?;
        upload.shutdown()?;
        Ok((tar_bytes, stored_bytes))
    }
}

/// Yields exactly `len` bytes of a file whose size was read during the scan: a file that
/// grew is cut at `len` (the rest is in the WAL), one that shrank is padded with zeros, as
/// PostgreSQL's own base backup does; the tar header already promised `len` bytes.
struct ExactLength<'p, R> {
    inner: R,
    remaining: u64,
    crc: crc32fast::Hasher,
    padded: bool,
    read_error: Option<io::Error>,
    progress: &'p Progress,
}

impl<'p, R: Read> ExactLength<'p, R> {
    fn new(inner: R, len: u64, progress: &'p Progress) -> Self {
        ExactLength {
            inner,
            remaining: len,
            crc: crc32fast::Hasher::new(),
            padded: false,
            read_error: None,
            progress,
        }
    }
}

impl<R: Read> Read for ExactLength<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = if self.padded {
            0
        } else {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    // Kept so the error names the file rather than the part.
                    let message = e.to_string();
                    self.read_error = Some(e);
                    return Err(io::Error::other(message));
                }
            }
        };
        let n = if n == 0 {
            self.padded = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.crc.update(&buf[..n]);
        self.remaining -= n as u64;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Counts the bytes written through it.
struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Self {
        Counted { inner, count: 0 }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why writing a backup part failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// A file of the data directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Building the part failed before it was known which (compression, tar).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The part could not be uploaded.
    #[error("cannot write backup part {key}: {source}")]
    Write {
        /// The part's key in the store.
        key: String,
        /// The I/O error.
        source: io::Error,
    },
}

impl PartError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            PartError::Read { source, .. }
            | PartError::Io(source)
            | PartError::Write { source, .. } => crate::error::io_error_kind(source),
        }
    }
}

impl PartError {
    fn at(self, key: &StorePath) -> PartError {
        match self {
            PartError::Io(source) => PartError::Write {
                key: key.to_string(),
                source,
            },
            other => other,
        }
    }
}
