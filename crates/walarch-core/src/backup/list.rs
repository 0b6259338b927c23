//! What backups the repository holds. A backup exists only once its manifest does; folders
//! without one (interrupted backups) are reported apart, for retention to clean up.

use futures::{StreamExt, TryStreamExt};

use super::BackupSelector;
use super::manifest::{BackupId, Manifest};
use super::restore::RestoreError;
use crate::repo::{RepoError, Repository};
use crate::store::keys;

#[derive(Debug, Clone, Default)]
pub struct BackupList {
    /// Complete backups, oldest first.
    pub backups: Vec<Manifest>,
    /// Backup folders without a manifest: interrupted or still running.
    pub incomplete: Vec<BackupId>,
}

/// Lists the backups; manifests are read concurrently.
pub async fn list_backups(repo: &Repository) -> Result<BackupList, RestoreError> {
    let mut ids = backup_ids(repo).await?;
    ids.sort();
    let manifests: Vec<(BackupId, Option<Manifest>)> = futures::stream::iter(ids)
        .map(|id| async move {
            let manifest = read_manifest(repo, &id).await?;
            Ok::<_, RestoreError>((id, manifest))
        })
        .buffered(8)
        .try_collect()
        .await?;
    let mut list = BackupList::default();
    for (id, manifest) in manifests {
        match manifest {
            Some(m) => list.backups.push(m),
            None => list.incomplete.push(id),
        }
    }
    Ok(list)
}

/// The manifest of the selected backup; a clear error when there is none.
pub async fn find_backup(
    repo: &Repository,
    selector: &BackupSelector,
) -> Result<Manifest, RestoreError> {
    match selector {
        BackupSelector::Id(id) => read_manifest(repo, id).await?.ok_or_else(|| {
            RestoreError::NotFound(format!(
                "{} holds no complete backup {id} (see `walarch backups`)",
                repo.location()
            ))
        }),
        BackupSelector::Latest => {
            let mut ids = backup_ids(repo).await?;
            ids.sort();
            for id in ids.iter().rev() {
                if let Some(manifest) = read_manifest(repo, id).await? {
                    return Ok(manifest);
                }
            }
            Err(RestoreError::NotFound(format!(
                "{} holds no complete backup yet",
                repo.location()
            )))
        }
    }
}

async fn backup_ids(repo: &Repository) -> Result<Vec<BackupId>, RepoError> {
    let prefix = keys::backups();
    let listing = repo
        .store()
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| repo.store_error("list", &prefix, e))?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename()?.parse().ok())
        .collect())
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
