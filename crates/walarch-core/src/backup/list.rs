//! What backups the repository holds. A backup exists only once its manifest does, and is
//! usable only while every object its manifest names is still there: folders without a
//! manifest (interrupted backups) and manifests whose parts are gone (damaged backups) are
//! reported apart, never as backups to restore or to keep.
//!
//! A manifest whose parts are missing can be left by a backup that lost a race with
//! retention (its folder was taken for interrupted and emptied, then its manifest landed and
//! the backup was killed before it could remove it), or by objects deleted by hand.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;

use super::BackupSelector;
use super::manifest::{BackupId, Manifest};
use super::restore::RestoreError;
use crate::repo::{RepoError, Repository};
use crate::store::keys;

/// The repository's backup folders, sorted into usable, incomplete and damaged backups.
#[derive(Debug, Clone, Default)]
pub struct BackupList {
    /// Complete backups whose every part is stored, oldest first.
    pub backups: Vec<Manifest>,
    /// Backup folders without a manifest: interrupted or still running.
    pub incomplete: Vec<BackupId>,
    /// Backups with a manifest but without every object it names: not restorable.
    pub damaged: Vec<DamagedBackup>,
}

/// A manifest whose backup lacks stored objects.
#[derive(Debug, Clone)]
pub struct DamagedBackup {
    /// The backup's manifest, as stored.
    pub manifest: Manifest,
    /// The keys of the missing objects (or stored with another size than recorded).
    pub missing: Vec<String>,
}

impl DamagedBackup {
    /// One line for messages: the id and the first missing objects.
    pub fn describe(&self) -> String {
        let shown: Vec<&str> = self.missing.iter().take(3).map(String::as_str).collect();
        let more = self.missing.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(
            "backup {} has a manifest but lacks {}{more}",
            self.manifest.id,
            shown.join(", ")
        )
    }
}

/// Lists the backups: one listing of `backups/`, then the manifests, read concurrently, each
/// checked against the listing.
pub async fn list_backups(repo: &Repository) -> Result<BackupList, RestoreError> {
    let folders = list_folders(repo).await?;
    let states: Vec<FolderState> = futures::stream::iter(folders)
        .map(|(id, objects)| async move {
            if !objects.contains_key(&keys::backup_manifest(id.as_str())) {
                return Ok::<_, RestoreError>(FolderState::Incomplete(id));
            }
            let Some(manifest) = read_manifest(repo, &id).await? else {
                // Deleted since the listing (retention): gone, not incomplete.
                return Ok(FolderState::Incomplete(id));
            };
            let missing = missing_objects(repo, &manifest, Some(&objects)).await?;
            Ok(if missing.is_empty() {
                FolderState::Whole(manifest)
            } else {
                FolderState::Damaged(DamagedBackup { manifest, missing })
            })
        })
        .buffered(8)
        .try_collect()
        .await?;
    let mut list = BackupList::default();
    for state in states {
        match state {
            FolderState::Whole(manifest) => list.backups.push(manifest),
            FolderState::Damaged(damaged) => list.damaged.push(damaged),
            FolderState::Incomplete(id) => list.incomplete.push(id),
        }
    }
    Ok(list)
}

/// What one backup folder holds.
enum FolderState {
    Whole(Manifest),
    Damaged(DamagedBackup),
    Incomplete(BackupId),
}

/// The manifest of the selected backup, if that backup is whole; a clear error otherwise.
pub async fn find_backup(
    repo: &Repository,
    selector: &BackupSelector,
) -> Result<Manifest, RestoreError> {
    match selector {
        BackupSelector::Id(id) => {
            let manifest = read_manifest(repo, id).await?.ok_or_else(|| {
                RestoreError::NotFound(format!("{} holds no complete backup {id}", repo.location()))
            })?;
            let missing = missing_objects(repo, &manifest, None).await?;
            if missing.is_empty() {
                Ok(manifest)
            } else {
                Err(RestoreError::Damaged(
                    DamagedBackup { manifest, missing }.describe(),
                ))
            }
        }
        BackupSelector::Latest => list_backups(repo).await?.backups.pop().ok_or_else(|| {
            RestoreError::NotFound(format!("{} holds no complete backup yet", repo.location()))
        }),
    }
}

/// Every object under `backups/`, by backup folder (key → size). Names that are not backup
/// ids are ignored.
async fn list_folders(
    repo: &Repository,
) -> Result<BTreeMap<BackupId, HashMap<StorePath, u64>>, RepoError> {
    let prefix = keys::backups();
    let objects: Vec<object_store::ObjectMeta> = repo
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| repo.store_error("list", &prefix, e))?;
    let mut folders: BTreeMap<BackupId, HashMap<StorePath, u64>> = BTreeMap::new();
    for object in objects {
        let Some(id) = object
            .location
            .parts()
            .nth(1)
            .and_then(|part| part.as_ref().parse::<BackupId>().ok())
        else {
            continue;
        };
        folders
            .entry(id)
            .or_default()
            .insert(object.location, object.size);
    }
    Ok(folders)
}

/// The objects `manifest` names (parts with their stored size, `backup_label`, and
/// `tablespace_map` when it has one) that are not stored. What a listing lacks is looked up
/// once more: the listing may have been taken before the manifest was written, and every
/// object of a backup is stored before its manifest.
async fn missing_objects(
    repo: &Repository,
    manifest: &Manifest,
    listed: Option<&HashMap<StorePath, u64>>,
) -> Result<Vec<String>, RepoError> {
    let id = manifest.id.as_str();
    let mut expected: Vec<(StorePath, Option<u64>)> = manifest
        .parts
        .iter()
        .map(|part| {
            (
                keys::backup_part(id, part.index, manifest.codec),
                Some(part.stored_bytes),
            )
        })
        .collect();
    expected.push((keys::backup_file(id, "backup_label"), None));
    if manifest.has_tablespace_map {
        expected.push((keys::backup_file(id, "tablespace_map"), None));
    }
    let mut missing = Vec::new();
    for (key, size) in expected {
        let found = match listed.and_then(|objects| objects.get(&key)) {
            Some(&listed_size) => Some(listed_size),
            None => repo.object_size(&key).await?,
        };
        match (found, size) {
            (None, _) => missing.push(key.to_string()),
            (Some(found), Some(recorded)) if found != recorded => {
                missing.push(format!("{key} ({found} bytes stored, {recorded} recorded)"))
            }
            _ => {}
        }
    }
    Ok(missing)
}

async fn read_manifest(repo: &Repository, id: &BackupId) -> Result<Option<Manifest>, RestoreError> {
    let key = keys::backup_manifest(id.as_str());
    let Some(bytes) = repo.get_if_exists(&key).await? else {
        return Ok(None);
    };
    let manifest =
        Manifest::from_json(&bytes).map_err(|e| RestoreError::Invalid(format!("{key}: {e}")))?;
    if &manifest.id != id {
        return Err(RestoreError::Invalid(format!(
            "{key} describes backup {}",
            manifest.id
        )));
    }
    Ok(Some(manifest))
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::store::RepoLocation;
    use crate::testing::synthetic_backup;
    use crate::wal::Lsn;

    async fn two_backups() -> (tempfile::TempDir, Repository, Manifest, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_for_write(
            RepoLocation::Local(dir.path().join("repo")),
            &Default::default(),
        )
        .unwrap();
        let files: &[(&str, &[u8])] = &[("PG_VERSION", b"15\n"), ("global/pg_control", b"c")];
        let older = synthetic_backup(
            &repo,
            &"20261120T000000Z".parse().unwrap(),
            Lsn::new(0x100_0028),
            Lsn::new(0x100_0100),
            &["global"],
            files,
        )
        .await;
        let newer = synthetic_backup(
            &repo,
            &"20261121T000000Z".parse().unwrap(),
            Lsn::new(0x300_0028),
            Lsn::new(0x300_0100),
            &["global"],
            files,
        )
        .await;
        (dir, repo, older, newer)
    }

    #[tokio::test]
    async fn a_manifest_whose_parts_are_gone_is_damaged_not_a_backup() {
        // Issue 10, item 2: the newer backup's parts are gone, its manifest remains.
        let (_dir, repo, older, newer) = two_backups().await;
        let part = keys::backup_part(newer.id.as_str(), 0, newer.codec);
        repo.store().delete(&part).await.unwrap();

        let list = list_backups(&repo).await.unwrap();
        assert_eq!(
            list.backups,
            std::slice::from_ref(&older),
            "only the whole backup is one"
        );
        assert_eq!(list.damaged.len(), 1);
        assert_eq!(list.damaged[0].manifest.id, newer.id);
        assert_eq!(list.damaged[0].missing, [part.to_string()]);

        let latest = find_backup(&repo, &BackupSelector::Latest).await.unwrap();
        assert_eq!(latest.id, older.id, "latest skips the damaged backup");
        let err = find_backup(&repo, &BackupSelector::Id(newer.id.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RestoreError::Damaged(text) if text.contains(part.as_ref())),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_part_of_another_size_than_recorded_is_damage() {
        let (_dir, repo, _, newer) = two_backups().await;
        let part = keys::backup_part(newer.id.as_str(), 0, newer.codec);
        repo.store()
            .put(&part, bytes::Bytes::from_static(b"short").into())
            .await
            .unwrap();
        let list = list_backups(&repo).await.unwrap();
        assert_eq!(list.damaged.len(), 1);
        assert!(list.damaged[0].missing[0].contains("5 bytes stored"));
    }

    #[tokio::test]
    async fn folders_without_a_manifest_are_incomplete() {
        let (_dir, repo, older, newer) = two_backups().await;
        repo.store()
            .delete(&keys::backup_manifest(newer.id.as_str()))
            .await
            .unwrap();
        let list = list_backups(&repo).await.unwrap();
        assert_eq!(list.backups, [older]);
        assert_eq!(list.incomplete, [newer.id]);
        assert!(list.damaged.is_empty());
    }
}
