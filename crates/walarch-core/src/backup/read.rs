//! Reading a backup part back: a streaming GET, decompression and tar, entry by entry, with
//! every entry's name checked before anyone sees it. Shared by restore and verify.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::manifest::{Manifest, safe_relative_path};
use crate::error::ErrorKind;
use crate::store::keys;

/// What a part entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Directory,
    File,
}

/// A failure while reading a part, naming the part and, when known, the entry.
/// A backup part could not be read back, or one of its entries could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("backup part {part}{}: {message}", entry.as_ref().map(|e| format!(" (at {e})")).unwrap_or_default())]
pub struct PartReadError {
    /// The part's key.
    pub part: String,
    /// The entry being read, if the failure is about one.
    pub entry: Option<String>,
    /// What went wrong, secrets removed.
    pub message: String,
    /// What kind of failure this is.
    pub kind: ErrorKind,
}

/// Why an entry of a part was not accepted: a damaged or unexpected entry (corrupt), or a
/// local write that failed.
#[derive(Debug)]
pub(crate) struct EntryError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EntryError {
    /// A local write failed.
    pub fn io(message: String, source: &io::Error) -> Self {
        EntryError {
            kind: crate::error::io_error_kind(source),
            message,
        }
    }
}

impl From<String> for EntryError {
    /// The entry does not agree with the manifest.
    fn from(message: String) -> Self {
        EntryError {
            kind: ErrorKind::Corrupt,
            message,
        }
    }
}

impl From<&str> for EntryError {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

/// Opens backup parts as the repository says: sealed ones with its keys; plaintext ones
/// refused in a repository created with encryption.
#[derive(Debug, Clone)]
pub(crate) struct PartOpener {
    keyring: Option<Arc<crate::crypto::Keyring>>,
    must_be_sealed: bool,
    rate_limit: Option<Arc<crate::limits::RateLimit>>,
}

impl PartOpener {
    /// For `repo` (its identity read before), downloading within `rate_limit`.
    pub(crate) fn of(
        repo: &crate::repo::Repository,
        rate_limit: Option<Arc<crate::limits::RateLimit>>,
    ) -> Self {
        PartOpener {
            keyring: repo.keyring().cloned(),
            must_be_sealed: repo.must_be_sealed(),
            rate_limit,
        }
    }

    /// Looks at the stream's first bytes: age's header → opened with the keys (the header
    /// checked now, every chunk as it is read); else the stream as it is.
    fn open<'a, R: Read + 'a>(
        &self,
        mut body: R,
    ) -> Result<Box<dyn Read + 'a>, (ErrorKind, String)> {
        let mut head = Vec::with_capacity(crate::crypto::SEALED_MAGIC.len());
        (&mut body)
            .take(crate::crypto::SEALED_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| (ErrorKind::Transient, e.to_string()))?;
        let sealed = crate::crypto::is_sealed(&head);
        let body = io::Cursor::new(head).chain(body);
        if !sealed {
            if self.must_be_sealed {
                let e = crate::crypto::SealError::Unsealed;
                return Err((e.kind(), e.to_string()));
            }
            return Ok(Box::new(body));
        }
        let Some(keyring) = &self.keyring else {
            let e = crate::crypto::SealError::NoKey { key_id: None };
            return Err((e.kind(), e.to_string()));
        };
        keyring
            .open_reader(body)
            .map_err(|e| (e.kind(), e.to_string()))
    }
}

/// Reads part `index` of `manifest`, calling `visit(kind, path, clean_path, data)` for every
/// entry. Entries that are not plain files or directories, and names that are absolute or
/// contain `..`, are refused before `visit` is called (DESIGN.md §2.8). Runs on a blocking
/// thread; `runtime` drives the download.
pub(crate) fn read_part(
    store: &Arc<dyn ObjectStore>,
    opener: &PartOpener,
    runtime: &tokio::runtime::Handle,
    manifest: &Manifest,
    index: u32,
    mut visit: impl FnMut(EntryKind, &str, PathBuf, &mut dyn Read) -> Result<(), EntryError>,
) -> Result<(), PartReadError> {
    let key = keys::backup_part(manifest.id.as_str(), index, manifest.codec);
    let fail_as = |kind: ErrorKind, entry: Option<&str>, message: String| PartReadError {
        part: key.to_string(),
        entry: entry.map(str::to_owned),
        message,
        kind,
    };
    // A download that breaks mid-stream reaches the decoder as a read error: remember that it
    // was the store, so that it is reported as transient, not as damaged data.
    let download_failed = Arc::new(AtomicBool::new(false));
    let fail = |entry: Option<&str>, message: String| {
        let kind = if download_failed.load(Ordering::Relaxed) {
            ErrorKind::Transient
        } else {
            ErrorKind::Corrupt
        };
        fail_as(kind, entry, message)
    };
    let got = runtime.block_on(store.get(&key)).map_err(|e| {
        fail_as(
            crate::error::store_error_kind(&e),
            None,
            crate::store::redact_secrets(&e.to_string()),
        )
    })?;
    let stream = got.into_stream().map_err({
        let download_failed = download_failed.clone();
        move |e| {
            download_failed.store(true, Ordering::Relaxed);
            io::Error::other(crate::store::redact_secrets(&e.to_string()))
        }
    });
    let body = SyncIoBridge::new_with_handle(StreamReader::new(stream), runtime.clone());
    let body = crate::limits::Limited::new(body, opener.rate_limit.clone(), None);
    let body = opener
        .open(io::BufReader::with_capacity(1 << 20, body))
        .map_err(|(kind, message)| {
            // A download that broke while the header was read is the store's failure.
            if download_failed.load(Ordering::Relaxed) {
                fail_as(ErrorKind::Transient, None, message)
            } else {
                fail_as(kind, None, message)
            }
        })?;
    let decoded = manifest
        .codec
        .reader(io::BufReader::with_capacity(1 << 20, body))
        .map_err(|e| fail(None, e.to_string()))?;
    let mut archive = tar::Archive::new(decoded);
    let entries = archive.entries().map_err(|e| fail(None, e.to_string()))?;
    let mut last: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(last.as_deref(), format!("damaged: {e}")))?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| fail(last.as_deref(), "an entry name is not UTF-8".into()))?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Directory,
            other => {
                return Err(fail(
                    Some(&name),
                    format!(
                        "refusing entry of type {other:?}: backups hold only files and directories"
                    ),
                ));
            }
        };
        let clean = safe_relative_path(&name).map_err(|e| fail(Some(&name), e.to_string()))?;
        let path = name.trim_end_matches('/').to_owned();
        visit(kind, &path, clean, &mut entry)
            .map_err(|e| fail_as(e.kind, Some(&path), e.message))?;
        last = Some(path);
    }
    // Reading to the end of the decoder verifies the zstd frame checksum; tar stops at its
    // end-of-archive blocks, so drain what is left.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| fail(last.as_deref(), format!("damaged: {e}")))?;
    Ok(())
}

/// Runs `work(part)` for every part index below `parts` on up to `parallel` blocking threads,
/// each taking the next part nobody has taken. After a failure no further part is started;
/// the first error is returned. Restore and verify share it.
pub(crate) async fn for_each_part<E, F>(parts: usize, parallel: usize, work: F) -> Result<(), E>
where
    E: Send + 'static,
    F: Fn(u32) -> Result<(), E> + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicU32::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..parallel.max(1).min(parts.max(1)))
        .map(|_| {
            let (work, next, failed) = (work.clone(), next.clone(), failed.clone());
            tokio::task::spawn_blocking(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index as usize >= parts || failed.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    if let Err(e) = work(index) {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            })
        })
        .collect();
    let mut first_error = None;
    for worker in workers {
        if let Err(e) = worker.await.expect("a part worker does not panic") {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Copies `data` to `out` through a 1 MiB buffer, returning (bytes, CRC-32).
pub(crate) fn copy_with_crc(
    data: &mut dyn Read,
    out: &mut dyn io::Write,
    buffer: &mut [u8],
) -> io::Result<(u64, u32)> {
    let mut crc = crc32fast::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = match data.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc.update(&buffer[..n]);
        out.write_all(&buffer[..n])?;
        total += n as u64;
    }
    Ok((total, crc.finalize()))
}

/// Like [`copy_with_crc`], but `out` is written by a thread of its own while the next chunks
/// are read (decompressed) and checksummed: a large relation file would otherwise be restored
/// at the speed of one core doing both. Memory: a few 1 MiB buffers.
pub(crate) fn copy_with_crc_pipelined(
    data: &mut dyn Read,
    out: &mut std::fs::File,
) -> io::Result<(u64, u32)> {
    use std::io::Write as _;
    const CHUNK: usize = 1 << 20;
    const IN_FLIGHT: usize = 4;
    // Every this many bytes written, the disk flush of what is written so far starts on a
    // third thread, so that writing to the page cache and writing to disk overlap.
    const FLUSH_EVERY: u64 = 64 << 20;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<std::fs::File>(1);
        let flusher = scope.spawn(move || -> io::Result<()> {
            for file in flush_rx {
                file.sync_data()?;
            }
            Ok(())
        });
        let writer = scope.spawn(move || -> io::Result<()> {
            let mut unflushed = 0u64;
            for chunk in full_rx {
                out.write_all(&chunk)?;
                unflushed += chunk.len() as u64;
                if unflushed >= FLUSH_EVERY {
                    // Skipped while the previous flush runs: the next one covers this too.
                    if flush_tx.try_send(out.try_clone()?).is_ok() {
                        unflushed = 0;
                    }
                }
                // The reader may have finished already; then the buffer is simply dropped.
                let _ = empty_tx.send(chunk);
            }
            drop(flush_tx);
            Ok(())
        });
        let mut spare = (0..IN_FLIGHT).map(|_| vec![0u8; CHUNK]).collect::<Vec<_>>();
        let mut crc = crc32fast::Hasher::new();
        let mut total = 0u64;
        let read_result = loop {
            let mut chunk = match spare.pop() {
                Some(chunk) => chunk,
                None => match empty_rx.recv() {
                    Ok(chunk) => chunk,
                    // The writer stopped: its error is reported below.
                    Err(_) => break Ok(()),
                },
            };
            chunk.resize(CHUNK, 0);
            let mut filled = 0;
            while filled < CHUNK {
                match data.read(&mut chunk[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                break Ok(());
            }
            chunk.truncate(filled);
            crc.update(&chunk);
            total += filled as u64;
            if full_tx.send(chunk).is_err() {
                break Ok(());
            }
        };
        drop(full_tx);
        writer.join().expect("the writer thread does not panic")?;
        flusher.join().expect("the flush thread does not panic")?;
        read_result.map(|()| (total, crc.finalize()))
    })
}
