//! `verify_backup`: reads every part of a backup back and checks each file's size and CRC-32
//! against the manifest, that every manifest file is present, and that the WAL from the
//! backup's start to its stop LSN is in the archive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::Progress;
use super::manifest::{BackupId, Manifest};
use super::read::{EntryError, EntryKind, PartOpener, copy_with_crc, for_each_part, read_part};
use super::restore::RestoreError;
use crate::repo::Repository;
use tokio_util::sync::CancellationToken;

/// What a verify found. Problems are listed here; they are not errors.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup that was verified.
    pub backup: BackupId,
    /// Number of distinct file paths read back from the parts.
    pub files_checked: usize,
    /// Bytes of file content in the backup, as its manifest records them.
    pub bytes_checked: u64,
    /// Everything wrong, each naming the part and file.
    pub problems: Vec<String>,
    /// WAL segments between start and stop that the archive lacks.
    pub missing_wal: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong: no problem found and no WAL missing.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.missing_wal.is_empty()
    }
}

/// Reads every part of the backup `manifest` describes and checks each file against it, its
/// `backup_label`, and the WAL it needs. Problems are reported, not returned as errors.
pub async fn verify_backup(
    repo: &Repository,
    manifest: &Manifest,
    parallel: usize,
    rate_limit: Option<Arc<crate::limits::RateLimit>>,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<VerifyReport, RestoreError> {
    progress.restart(
        super::Phase::Verifying,
        manifest.data_bytes(),
        manifest.files.len() as u64,
    );
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch_cancel = tokio::spawn({
        let (cancel, cancelled) = (cancel.clone(), cancelled.clone());
        async move {
            cancel.cancelled().await;
            cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let manifest = Arc::new(manifest.clone());
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let problems: Arc<Mutex<Vec<String>>> = Arc::default();
    // Problems are collected, not returned: verify reports everything it finds.
    let _ = for_each_part(manifest.parts.len(), parallel, {
        let (store, manifest, seen, problems) =
            (repo.store().clone(), manifest.clone(), seen.clone(), problems.clone());
        let opener = PartOpener::of(repo, rate_limit.clone());
        let (cancelled, progress) = (cancelled.clone(), progress.clone());
        let runtime = tokio::runtime::Handle::current();
        move |index| -> Result<(), std::convert::Infallible> {
            let expected: HashMap<&str, _> =
                manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();
            let mut buffer = vec![0u8; 1 << 20];
            let problem = |text: String| problems.lock().expect("lock").push(text);
            let result = read_part(&store, &opener, &runtime, &manifest, index, |kind, path, _, data| {
                if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(EntryError {
                        kind: crate::error::ErrorKind::Cancelled,
                        message: "cancelled".into(),
                    });
                }
                if kind == EntryKind::Directory {
                    return Ok(());
                }
                let (size, crc) = copy_with_crc(data, &mut std::io::sink(), &mut buffer)
                    .map_err(|e| format!("damaged: {e}"))?;
                progress.add(size);
                progress.add_file();
                *seen.lock().expect("lock").entry(path.to_owned()).or_default() += 1;
                match expected.get(path) {
                    None => problem(format!("part {index} holds {path}, which the manifest does not list")),
                    Some(f) if f.part != index => problem(format!(
                        "{path} is in part {index}, the manifest says part {}",
                        f.part
                    )),
                    Some(f) if f.size != size || f.crc32 != crc => problem(format!(
                        "{path} (part {index}): {size} bytes with CRC-32 {crc:08x}, the manifest says {} bytes with {:08x}",
                        f.size, f.crc32
                    )),
                    Some(_) => {}
                }
                Ok(())
            });
            if let Err(e) = result {
                problem(e.to_string());
            }
            Ok(())
        }
    })
    .await;
    watch_cancel.abort();
    if cancel.is_cancelled() {
        return Err(RestoreError::Cancelled(format!(
            "verify of backup {}",
            manifest.id
        )));
    }
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    let mut problems = std::mem::take(&mut *problems.lock().expect("lock"));
    for file in &manifest.files {
        match seen.get(&file.path) {
            None => problems.push(format!("{} (part {}) is missing", file.path, file.part)),
            Some(n) if *n > 1 => problems.push(format!("{} is stored {n} times", file.path)),
            Some(_) => {}
        }
    }

    let label = repo
        .get_if_exists(&crate::store::keys::backup_file(
            manifest.id.as_str(),
            "backup_label",
        ))
        .await?;
    match label {
        None => problems.push(format!("backup {} has no backup_label", manifest.id)),
        Some(label) => {
            if let Err(e) = super::restore::check_backup_label(&manifest, &label) {
                problems.push(e.to_string());
            }
        }
    }

    let mut missing_wal = Vec::new();
    for name in manifest.wal_segments() {
        if repo.find_wal(&name).await?.is_empty() {
            missing_wal.push(name.to_string());
        }
    }
    Ok(VerifyReport {
        backup: manifest.id.clone(),
        files_checked: seen.len(),
        bytes_checked: manifest.data_bytes(),
        problems,
        missing_wal,
    })
}
