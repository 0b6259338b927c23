//! Carrying out a retention plan. The order is what keeps an interrupted run safe:
//!
//! 1. the manifests of the backups to delete (and of damaged ones): each of those backups
//!    then no longer exists (DESIGN.md §3), so nothing lists it while its parts go;
//! 2. the rest of those backups' folders, and the folders of interrupted backups, whose
//!    manifest path is deleted once more at the end of this step (a backup still running may
//!    have written one after the folder was listed);
//! 3. the segment summaries of the WAL to delete (a cache planning keeps beside the WAL,
//!    `summaries/`): gone first, so that no run, finished or not, leaves a summary behind
//!    for a segment it deleted;
//! 4. WAL, oldest segment first.
//!
//! Each step finishes before the next begins, and backups go before WAL, so a run stopped at
//! any point never leaves a listed backup without its files or the WAL it needs. Deletes go
//! through `ObjectStore::delete_stream`, which batches (S3: 1000 keys per request) and bounds
//! its own concurrency per backend. An object already gone counts as deleted: a rerun plans
//! again from what is left and finishes.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;
use serde::Serialize;

use super::{RetentionError, RetentionPlan};
use crate::backup::{BackupId, Progress};
use crate::repo::Repository;
use crate::store::keys;
use tokio_util::sync::CancellationToken;

/// What a retention run deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Complete backups deleted.
    pub backups_deleted: Vec<BackupId>,
    /// Interrupted backups whose folders were deleted.
    pub incomplete_deleted: Vec<BackupId>,
    /// Backups whose manifest named missing objects.
    pub damaged_deleted: Vec<BackupId>,
    /// Interrupted-looking backups left alone because their manifest appeared after the
    /// plan was made: they were still running and are complete now.
    pub completed_since_planned: Vec<BackupId>,
    /// Objects deleted from backup folders, manifests included.
    pub backup_objects_deleted: u64,
    /// WAL objects deleted (segments, partial segments and backup history files; never history
    /// files).
    pub wal_files_deleted: u64,
    /// Segment summaries of the deleted WAL that were deleted with it.
    pub summaries_deleted: u64,
    /// Bytes of the deleted objects whose size was known (manifests are not counted).
    pub bytes_deleted: u64,
}

/// Deletes what `plan` says, in the safe order. `progress` counts bytes deleted.
/// Cancelled, it stops between batches of deletes, leaving what an interrupted run leaves: a
/// repository in which every listed backup is whole and has its WAL.
pub async fn apply_retention(
    repo: &Repository,
    plan: &RetentionPlan,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<RetentionReport, RetentionError> {
    progress.set_phase(crate::backup::Phase::Deleting);
    let mut report = RetentionReport::default();
    let mut deleter = Deleter {
        repo,
        progress,
        cancel,
        deleted: 0,
    };

    let doomed: Vec<BackupId> = plan.backups_to_delete().map(|b| b.id.clone()).collect();
    let damaged: Vec<BackupId> = plan.damaged_to_delete().cloned().collect();
    let manifests = doomed
        .iter()
        .chain(&damaged)
        .map(|id| (keys::backup_manifest(id.as_str()), 0))
        .collect();
    let (manifests_deleted, _) = deleter.delete(manifests, "backup manifests").await?;
    report.backups_deleted = doomed.clone();
    report.damaged_deleted = damaged.clone();

    let mut interrupted = Vec::new();
    for id in plan.incomplete_to_delete() {
        // Withdraw the folder's claim first: a backup that is in fact still running checks
        // its claim before and after writing its manifest, and gives up (removing the
        // manifest it wrote) without it. Then, if it completed in the meantime, it is a
        // backup now and stays.
        let claim = keys::backup_file(id.as_str(), "started");
        deleter.delete(vec![(claim, 0)], "backup claims").await?;
        if repo
            .object_size(&keys::backup_manifest(id.as_str()))
            .await?
            .is_some()
        {
            report.completed_since_planned.push(id.clone());
        } else {
            interrupted.push(id.clone());
        }
    }
    let folders: Vec<BackupId> = doomed
        .iter()
        .chain(&damaged)
        .chain(&interrupted)
        .cloned()
        .collect();
    let folder_objects = list_folders(repo, &folders).await?;
    let wal: Vec<(Path, u64)> = plan
        .wal_to_delete()
        .iter()
        .map(|w| (w.key.clone(), w.size))
        .collect();
    progress.set_total(
        folder_objects.iter().map(|(_, size)| size).sum::<u64>()
            + wal.iter().map(|(_, size)| size).sum::<u64>(),
    );
    let (files_deleted, folder_bytes) = deleter.delete(folder_objects, "backup files").await?;
    // A backup that lost its claim may still have written its manifest after the folder was
    // listed (and been killed before removing it): delete the manifests of interrupted
    // folders last, whether or not the listing showed one, so that none outlives the parts.
    let late_manifests = interrupted
        .iter()
        .map(|id| (keys::backup_manifest(id.as_str()), 0))
        .collect();
    deleter.delete(late_manifests, "backup manifests").await?;
    report.incomplete_deleted = interrupted;
    report.backup_objects_deleted = manifests_deleted + files_deleted;

    let summaries = summaries_of(repo, plan.wal_to_delete()).await?;
    let (summaries_deleted, _) = deleter.delete(summaries, "segment summaries").await?;
    report.summaries_deleted = summaries_deleted;
    let (wal_deleted, wal_bytes) = deleter.delete(wal, "WAL files").await?;
    report.wal_files_deleted = wal_deleted;
    report.bytes_deleted = folder_bytes + wal_bytes;
    Ok(report)
}

/// Every object under the given backup folders, with its size.
async fn list_folders(
    repo: &Repository,
    ids: &[BackupId],
) -> Result<Vec<(Path, u64)>, RetentionError> {
    // Owned ids: a closure over borrowed ones makes the future !Send for the compiler in
    // generic callers (a spawned task, a controller's stream).
    let listings: Vec<Vec<ObjectMeta>> = futures::stream::iter(ids.iter().cloned())
        .map(|id: BackupId| async move {
            let folder = keys::backup_dir(id.as_str());
            repo.store()
                .list(Some(&folder))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| repo.store_error("list", &folder, e))
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(listings
        .into_iter()
        .flatten()
        .map(|meta| (meta.location, meta.size))
        .collect())
}

/// The stored summaries of the segments among `wal` (sizes not counted: progress and the
/// report's bytes are about backups and WAL).
async fn summaries_of(
    repo: &Repository,
    wal: &[crate::catalog::ListedWal],
) -> Result<Vec<(Path, u64)>, RetentionError> {
    let segments: std::collections::BTreeSet<crate::wal::SegmentName> = wal
        .iter()
        .filter_map(|w| match w.name {
            crate::wal::WalFileName::Segment(segment) => Some(segment),
            _ => None,
        })
        .collect();
    let groups: std::collections::BTreeSet<String> = segments
        .iter()
        .map(|s| keys::summary_dir(s).to_string())
        .collect();
    let listings: Vec<Vec<ObjectMeta>> = futures::stream::iter(groups)
        .map(|group| async move {
            let group = Path::from(group);
            repo.store()
                .list(Some(&group))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| repo.store_error("list", &group, e))
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(listings
        .into_iter()
        .flatten()
        .filter(|meta| {
            keys::summarized_segment(&meta.location).is_some_and(|s| segments.contains(&s))
        })
        .map(|meta| (meta.location, 0))
        .collect())
}

/// Deletes handed to the store at once (S3's batch limit), with a cancellation check between.
const DELETE_BATCH: usize = 1000;

#[derive(Debug)]
struct Deleter<'a> {
    repo: &'a Repository,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
    /// Objects deleted by this run so far, for the failure message.
    deleted: u64,
}

impl Deleter<'_> {
    /// Deletes `objects` (key, size) in the order given, as far as the store's batching
    /// allows; stops at the first failure other than "not found". Returns how many objects
    /// are gone and the bytes of those this call deleted.
    async fn delete(
        &mut self,
        objects: Vec<(Path, u64)>,
        what: &'static str,
    ) -> Result<(u64, u64), RetentionError> {
        let sizes: HashMap<Path, u64> = objects.iter().cloned().collect();
        let (mut gone, mut bytes) = (0, 0);
        for batch in objects.chunks(DELETE_BATCH) {
            if self.cancel.is_cancelled() {
                return Err(RetentionError::Cancelled {
                    deleted: self.deleted,
                });
            }
            let keys = futures::stream::iter(
                batch
                    .iter()
                    .map(|(key, _)| Ok(key.clone()))
                    .collect::<Vec<_>>(),
            )
            .boxed();
            let mut results = self.repo.store().delete_stream(keys);
            while let Some(result) = results.next().await {
                match result {
                    Ok(key) => {
                        let size = sizes.get(&key).copied().unwrap_or(0);
                        self.progress.add(size);
                        bytes += size;
                    }
                    // Already gone: deleted by an earlier, interrupted run.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(source) => {
                        return Err(RetentionError::DeleteFailed {
                            what,
                            location: self.repo.location().to_string(),
                            source: crate::error::StoreFailure::new(source),
                            deleted: self.deleted,
                        });
                    }
                }
                gone += 1;
                self.deleted += 1;
            }
        }
        Ok((gone, bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fmt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use chrono::{DateTime, TimeDelta, Utc};
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    use super::*;
    use crate::backup::{MANIFEST_FORMAT, Manifest, PartEntry, list_backups};
    use crate::catalog::list_wal;
    use crate::codec::Codec;
    use crate::repo::Identity;
    use crate::retention::{RetentionPolicy, load_inputs, plan_retention};
    use crate::store::RepoLocation;
    use crate::testing::hooks::HookStore;
    use crate::wal::{
        Lsn, SegmentName, SegmentNo, SystemId, TimelineId, WalFileName, WalSegmentSize,
    };
    use object_store::ObjectStoreExt;

    /// A store whose deletes start failing after `allowed` objects: a store going down, or
    /// a run killed part-way, as far as the repository can tell.
    #[derive(Debug)]
    struct FailingDeletes {
        inner: Arc<dyn ObjectStore>,
        allowed: Arc<AtomicUsize>,
    }

    impl fmt::Display for FailingDeletes {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "FailingDeletes({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for FailingDeletes {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            let allowed = self.allowed.clone();
            let passed = locations
                .map(move |location| {
                    let location = location?;
                    let granted = allowed
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if granted {
                        Ok(location)
                    } else {
                        Err(object_store::Error::Generic {
                            store: "test",
                            source: format!("store down, {location} not deleted").into(),
                        })
                    }
                })
                .boxed();
            // Refused keys never reach the inner store; granted ones are deleted by it.
            let inner = self.inner.clone();
            passed
                .then(move |location| {
                    let inner = inner.clone();
                    async move {
                        let location = location?;
                        inner
                            .delete_stream(futures::stream::iter([Ok(location)]).boxed())
                            .next()
                            .await
                            .expect("one result per key")
                    }
                })
                .boxed()
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    const SIZE: WalSegmentSize = WalSegmentSize::DEFAULT;

    fn t0() -> DateTime<Utc> {
        "2026-11-01T00:00:00Z".parse().unwrap()
    }

    fn segment(timeline: u32, n: u64) -> SegmentName {
        SegmentName::new(TimelineId::new(timeline).unwrap(), SegmentNo::new(n), SIZE)
    }

    async fn put(repo: &Repository, key: Path, data: &'static [u8]) {
        repo.put_new(&key, Bytes::from_static(data)).await.unwrap();
    }

    async fn put_wal(repo: &Repository, name: WalFileName) {
        let codec = if matches!(name, WalFileName::History(_)) {
            Codec::None
        } else {
            Codec::Zstd
        };
        let content = match name {
            WalFileName::History(_) => {
                crate::archive::stored::seal_history(b"1\t0/C800000\tpromoted\n")
            }
            _ => b"wal".to_vec(),
        };
        repo.put_new(&keys::wal_file(&name, codec), content.into())
            .await
            .unwrap();
    }

    /// A complete backup started `day` days after t0, 0x28 into segment `start` of timeline 1.
    async fn put_backup(repo: &Repository, day: i64, start: u64) -> BackupId {
        let started_at = t0() + TimeDelta::days(day);
        let id = BackupId::from_time(started_at);
        let start_lsn = Lsn::new(start * SIZE.bytes() + 0x28);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            kind: "full".into(),
            tool_version: "test".into(),
            system_id: SystemId::new(7),
            pg_version_num: 150_000,
            wal_segment_size: SIZE,
            timeline: TimelineId::FIRST,
            start_lsn,
            stop_lsn: Lsn::new(start_lsn.as_u64() + SIZE.bytes()),
            started_at,
            stopped_at: started_at + TimeDelta::minutes(5),
            completed_at: started_at + TimeDelta::minutes(6),
            from_standby: false,
            codec: Codec::Zstd,
            has_tablespace_map: false,
            backup_label_crc32: None,
            tablespaces: vec![],
            directories: vec![],
            files: vec![],
            parts: vec![
                PartEntry {
                    index: 0,
                    tar_bytes: 10,
                    stored_bytes: 5,
                    files: 0,
                },
                PartEntry {
                    index: 1,
                    tar_bytes: 10,
                    stored_bytes: 5,
                    files: 0,
                },
            ],
        };
        let folder = id.as_str();
        put(repo, keys::backup_file(folder, "started"), b"{}").await;
        put(repo, keys::backup_part(folder, 0, Codec::Zstd), b"part0").await;
        put(repo, keys::backup_part(folder, 1, Codec::Zstd), b"part1").await;
        put(repo, keys::backup_file(folder, "backup_label"), b"label").await;
        put_wal(
            repo,
            WalFileName::Backup {
                segment: segment(1, start),
                offset: 0x28,
            },
        )
        .await;
        repo.put_new(&keys::backup_manifest(folder), manifest.to_json().into())
            .await
            .unwrap();
        id
    }

    /// Four backups on timeline 1 (segments 2, 5, 8, 11), an interrupted one before them,
    /// timeline 2 branching off at 0/C800000, and WAL up to segment 14.
    async fn populate(repo: &Repository) {
        repo.ensure_identity(&Identity::new(SystemId::new(7), SIZE, 15))
            .await
            .unwrap();
        let interrupted = BackupId::from_time(t0() - TimeDelta::days(1));
        put(
            repo,
            keys::backup_file(interrupted.as_str(), "started"),
            b"{}",
        )
        .await;
        put(
            repo,
            keys::backup_part(interrupted.as_str(), 0, Codec::Zstd),
            b"p",
        )
        .await;
        for (day, start) in [(0, 2), (1, 5), (2, 8), (3, 11)] {
            put_backup(repo, day, start).await;
        }
        for n in 1..=12 {
            put_wal(repo, WalFileName::Segment(segment(1, n))).await;
        }
        put_wal(repo, WalFileName::Partial(segment(1, 12))).await;
        put_wal(repo, WalFileName::History(TimelineId::new(2).unwrap())).await;
        for n in 12..=14 {
            put_wal(repo, WalFileName::Segment(segment(2, n))).await;
        }
    }

    async fn all_keys(store: &Arc<dyn ObjectStore>) -> BTreeSet<Path> {
        store
            .list(None)
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .unwrap()
    }

    /// What the repository promises after any run, finished or not: every listed backup has
    /// its files, and every WAL file it needs that was there before is still there.
    async fn assert_consistent(repo: &Repository, before: &BTreeSet<Path>, context: &str) {
        let now = all_keys(repo.store()).await;
        let listed = list_backups(repo).await.unwrap();
        assert!(
            !listed.backups.is_empty(),
            "{context}: the newest backup stays"
        );
        for manifest in &listed.backups {
            let id = manifest.id.as_str();
            for key in [
                keys::backup_part(id, 0, Codec::Zstd),
                keys::backup_part(id, 1, Codec::Zstd),
                keys::backup_file(id, "backup_label"),
            ] {
                assert!(
                    now.contains(&key),
                    "{context}: listed backup {id} lost {key}"
                );
            }
            let first = manifest.start_lsn.segment(SIZE);
            for wal in list_wal_keys(before) {
                let needed = wal.0.segment().is_none_or(|s| {
                    s.timeline() == manifest.timeline && s.segment_no(SIZE).unwrap() >= first
                });
                assert!(
                    !needed || now.contains(&wal.1),
                    "{context}: {} needed by listed backup {id} is gone",
                    wal.1
                );
            }
        }
    }

    /// The WAL names among `keys`.
    fn list_wal_keys(keys: &BTreeSet<Path>) -> Vec<(WalFileName, Path)> {
        keys.iter()
            .filter(|k| k.as_ref().starts_with("wal/"))
            .map(|k| {
                let file = k.filename().unwrap();
                let base = file.strip_suffix(".zst").unwrap_or(file);
                (base.parse().unwrap(), k.clone())
            })
            .collect()
    }

    #[tokio::test]
    async fn an_interrupted_run_leaves_a_consistent_repository_and_a_rerun_finishes() {
        let policy = RetentionPolicy::new(Some(2), None).unwrap();
        let now = t0() + TimeDelta::days(10);
        for allowed in [0, 1, 2, 3, 4, 6, 9, 12, 15, 18, 25, usize::MAX] {
            let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let budget = Arc::new(AtomicUsize::new(usize::MAX));
            let failing: Arc<dyn ObjectStore> = Arc::new(FailingDeletes {
                inner: memory.clone(),
                allowed: budget.clone(),
            });
            let repo = Repository::from_store(failing, RepoLocation::Local("/mem".into()));
            populate(&repo).await;
            let before = all_keys(&memory).await;

            let plan = plan_retention(&load_inputs(&repo).await.unwrap(), &policy, now).unwrap();
            let doomed: Vec<&str> = plan
                .backups_to_delete()
                .map(|b| b.id.as_str())
                .chain(plan.incomplete_to_delete().map(BackupId::as_str))
                .collect();
            assert_eq!(doomed.len(), 3, "two backups and the interrupted one");
            let planned: BTreeSet<Path> = before
                .iter()
                .filter(|k| {
                    doomed
                        .iter()
                        .any(|id| k.as_ref().starts_with(&format!("backups/{id}/")))
                })
                .cloned()
                .chain(plan.wal_to_delete().iter().map(|w| w.key.clone()))
                .collect();
            // Backups 0 and 1 (3 + 5 objects), the interrupted one (2), WAL 1..=7 and the
            // .backup files in segments 2 and 5.
            assert_eq!(planned.len(), 5 + 5 + 2 + 7 + 2, "{planned:#?}");

            budget.store(allowed, Ordering::SeqCst);
            let first = apply_retention(
                &repo,
                &plan,
                &Progress::default(),
                &CancellationToken::new(),
            )
            .await;
            let context = format!("stopped after {allowed} deletes");
            if allowed >= planned.len() {
                let report = first.unwrap();
                assert_eq!(report.backups_deleted.len(), 2);
                assert_eq!(report.incomplete_deleted.len(), 1);
                assert_eq!(report.wal_files_deleted, 9);
            } else {
                let error = first.expect_err(&context);
                assert!(
                    matches!(&error, RetentionError::DeleteFailed { deleted, .. } if *deleted == allowed as u64),
                    "{context}: {error}"
                );
                assert!(error.to_string().contains("run retention again"), "{error}");
            }
            assert_consistent(&repo, &before, &context).await;

            // Store back: plan again from what is left and finish.
            budget.store(usize::MAX, Ordering::SeqCst);
            let replan = plan_retention(&load_inputs(&repo).await.unwrap(), &policy, now).unwrap();
            apply_retention(
                &repo,
                &replan,
                &Progress::default(),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
            let after = all_keys(&memory).await;
            let expected: BTreeSet<Path> = before.difference(&planned).cloned().collect();
            assert_eq!(
                after, expected,
                "{context}: exactly the planned set is gone"
            );
            assert_consistent(&repo, &before, &context).await;
            assert!(
                plan_retention(&load_inputs(&repo).await.unwrap(), &policy, now)
                    .unwrap()
                    .deletes_nothing(),
                "{context}: a third run has nothing left to do"
            );
            let wal_left = list_wal(&repo).await.unwrap();
            assert_eq!(
                wal_left.len(),
                21 - 9,
                "{context}: the rest of the WAL stays"
            );
            assert!(
                wal_left
                    .iter()
                    .any(|w| matches!(w.name, WalFileName::History(_))),
                "{context}: history files are never deleted"
            );
        }
    }

    #[tokio::test]
    async fn the_summaries_of_deleted_wal_go_with_it_and_no_listing_mistakes_them() {
        let policy = RetentionPolicy::new(Some(2), None).unwrap();
        let now = t0() + TimeDelta::days(10);
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let repo = Repository::from_store(memory.clone(), RepoLocation::Local("/mem".into()));
        populate(&repo).await;
        let wal_before = list_wal(&repo).await.unwrap();
        let backups_before = list_backups(&repo).await.unwrap();
        let plan_before = plan_retention(&load_inputs(&repo).await.unwrap(), &policy, now).unwrap();
        // Two summaries (first in a scan, after the one before) of every segment.
        let mut summaries = Vec::new();
        for (timeline, range) in [(1, 1..=12), (2, 12..=14)] {
            for n in range {
                for context in ["first", "next"] {
                    let key = keys::segment_summary(&segment(timeline, n), context, "00ff");
                    put(&repo, key.clone(), b"summary").await;
                    summaries.push(((timeline, n), key));
                }
            }
        }
        assert_eq!(list_wal(&repo).await.unwrap(), wal_before);
        assert_eq!(
            format!("{:?}", list_backups(&repo).await.unwrap()),
            format!("{backups_before:?}")
        );
        let plan = plan_retention(&load_inputs(&repo).await.unwrap(), &policy, now).unwrap();
        assert_eq!(format!("{plan:?}"), format!("{plan_before:?}"));

        let report = apply_retention(
            &repo,
            &plan,
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        // WAL 1..=7 of timeline 1 went (see the test above): so did their summaries.
        assert_eq!(report.summaries_deleted, 7 * 2);
        let left = all_keys(&memory).await;
        for ((timeline, n), key) in summaries {
            let deleted = timeline == 1 && n <= 7;
            assert_eq!(!left.contains(&key), deleted, "{key}");
        }
    }

    #[tokio::test]
    async fn a_manifest_landing_after_its_folder_was_listed_does_not_outlive_the_parts() {
        // Issue 10, item 2: retention withdraws an interrupted-looking backup's claim, finds
        // no manifest, lists the folder; the backup's manifest lands right after the listing
        // (and the backup is killed before it can remove it). The manifest must go too.
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let seed = Repository::from_store(memory.clone(), RepoLocation::Local("/mem".into()));
        populate(&seed).await;
        let interrupted = BackupId::from_time(t0() - TimeDelta::days(1));
        let donor = list_backups(&seed).await.unwrap().backups[0].clone();
        let late = Manifest {
            id: interrupted.clone(),
            ..donor
        };
        let folder = keys::backup_dir(interrupted.as_str());
        let mut hooked = HookStore::new(memory.clone());
        hooked.after_list = Some(Arc::new(move |prefix, inner| {
            let (folder, late) = (folder.clone(), late.clone());
            Box::pin(async move {
                if prefix == folder {
                    let key = keys::backup_manifest(late.id.as_str());
                    inner.put(&key, late.to_json().into()).await.unwrap();
                }
            })
        }));
        let repo = Repository::from_store(Arc::new(hooked), RepoLocation::Local("/mem".into()));
        let policy = RetentionPolicy::new(Some(2), None).unwrap();
        let now = t0() + TimeDelta::days(10);
        let plan = plan_retention(&load_inputs(&repo).await.unwrap(), &policy, now).unwrap();
        assert_eq!(
            plan.incomplete_to_delete().collect::<Vec<_>>(),
            [&interrupted]
        );
        let report = apply_retention(
            &repo,
            &plan,
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            report.incomplete_deleted,
            std::slice::from_ref(&interrupted)
        );
        let left: Vec<Path> = all_keys(&memory)
            .await
            .into_iter()
            .filter(|k| k.as_ref().starts_with(&format!("backups/{interrupted}/")))
            .collect();
        assert!(left.is_empty(), "left in the interrupted folder: {left:?}");
        let listed = list_backups(&seed).await.unwrap();
        assert!(listed.damaged.is_empty() && listed.backups.len() == 2);
    }

    #[tokio::test]
    async fn a_damaged_backup_is_never_kept_and_the_whole_one_before_it_stays() {
        // Issue 10, item 2, as reproduced: the newest backup's parts are gone, its manifest
        // remains; `--keep 1` must keep the newest whole backup, not the damaged one.
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let repo = Repository::from_store(memory.clone(), RepoLocation::Local("/mem".into()));
        populate(&repo).await;
        let backups = list_backups(&repo).await.unwrap().backups;
        let (whole, damaged) = (&backups[2], &backups[3]);
        for index in 0..2 {
            memory
                .delete(&keys::backup_part(damaged.id.as_str(), index, Codec::Zstd))
                .await
                .unwrap();
        }
        let policy = RetentionPolicy::new(Some(1), None).unwrap();
        let now = t0() + TimeDelta::days(10);
        let plan = plan_retention(&load_inputs(&repo).await.unwrap(), &policy, now).unwrap();
        let kept: Vec<&BackupId> = plan.backups_to_keep().map(|b| &b.id).collect();
        assert_eq!(kept, [&whole.id], "the newest whole backup is the one kept");
        assert_eq!(plan.damaged, std::slice::from_ref(&damaged.id));
        let report = apply_retention(
            &repo,
            &plan,
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(report.damaged_deleted, std::slice::from_ref(&damaged.id));
        let listed = list_backups(&repo).await.unwrap();
        assert_eq!(
            listed.backups.iter().map(|b| &b.id).collect::<Vec<_>>(),
            [&whole.id]
        );
        assert!(listed.damaged.is_empty(), "the damaged manifest is gone");
        let before: BTreeSet<Path> = all_keys(&memory).await;
        assert_consistent(&repo, &before, "after keep 1").await;
    }
}
