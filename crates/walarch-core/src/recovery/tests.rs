//! Planning with segment summaries, on a local file repository: what the second plan reads,
//! and that a summary is never trusted over the WAL it describes.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::*;
use crate::catalog::Snapshot;
use crate::codec::{Codec, Compression};
use crate::repo::{Identity, Repository};
use crate::store::{RepoLocation, keys};
use crate::testing::{SyntheticRecord, segments_with_records, synthetic_backup};
use crate::wal::{Lsn, SegmentName, SegmentNo, SystemId, TimelineId, WalFileName, WalSegmentSize};

const SEGMENT: u64 = 1 << 20;
/// Filler record and commit pairs: big records, so most segment boundaries fall inside one.
const TRANSACTIONS: u32 = 100;
const FIRST_XID: u32 = 1000;

/// A local file store that counts reads of WAL objects and can refuse summary writes.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    wal_reads: AtomicU64,
    summary_reads: AtomicU64,
    summary_writes: AtomicU64,
    refuse_summary_writes: AtomicBool,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().starts_with("summaries/") {
            self.summary_writes.fetch_add(1, Ordering::SeqCst);
        }
        if location.as_ref().starts_with("summaries/")
            && self.refuse_summary_writes.load(Ordering::SeqCst)
        {
            return Err(object_store::Error::Generic {
                store: "test",
                source: "permission denied".into(),
            });
        }
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
        if location.as_ref().starts_with("wal/") {
            self.wal_reads.fetch_add(1, Ordering::SeqCst);
        } else if location.as_ref().starts_with("summaries/") {
            self.summary_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
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

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Arc<Counting>,
    repo: Repository,
    /// The segments stored, in order.
    segments: Vec<SegmentName>,
}

fn at(second: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::seconds(i64::from(second))
}

fn size() -> WalSegmentSize {
    WalSegmentSize::new(SEGMENT).unwrap()
}

fn zstd(level: i32, data: &[u8]) -> Vec<u8> {
    Compression::new(Codec::Zstd, Some(level))
        .unwrap()
        .encode(data)
        .unwrap()
}

/// A repository holding one backup at the start of segment 1 and WAL of [`TRANSACTIONS`]
/// transactions (a filler record of 60 000 bytes, then the commit of xid `FIRST_XID + i` at
/// second `i`, and a restore point "half" halfway), about seven 1 MiB segments.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir(&root).unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
    let store = Arc::new(Counting {
        inner: local,
        wal_reads: AtomicU64::new(0),
        summary_reads: AtomicU64::new(0),
        summary_writes: AtomicU64::new(0),
        refuse_summary_writes: AtomicBool::new(false),
    });
    let repo = Repository::from_store(store.clone(), RepoLocation::Local(root.clone()));
    repo.ensure_identity(&Identity::new(
        SystemId::new(7_000_000_000_000_000_001),
        size(),
        15,
    ))
    .await
    .unwrap();
    let mut records = Vec::new();
    for i in 0..TRANSACTIONS {
        records.push(SyntheticRecord::filler(60_000));
        records.push(SyntheticRecord::commit(FIRST_XID + i, at(i)));
        if i == TRANSACTIONS / 2 {
            records.push(SyntheticRecord::restore_point("half", at(i)));
        }
    }
    let mut segments = Vec::new();
    for (i, bytes) in segments_with_records(1, &records).into_iter().enumerate() {
        let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(1 + i as u64), size());
        put_segment(&repo, &name, &zstd(3, &bytes)).await;
        segments.push(name);
    }
    synthetic_backup(
        &repo,
        &"20261121T000000Z".parse().unwrap(),
        Lsn::new(SEGMENT + 0x28),
        Lsn::new(SEGMENT + 0x100),
        &[],
        &[("PG_VERSION", b"15\n")],
    )
    .await;
    store.wal_reads.store(0, Ordering::SeqCst);
    Fixture {
        _dir: dir,
        root,
        store,
        repo,
        segments,
    }
}

async fn put_segment(repo: &Repository, name: &SegmentName, stored: &[u8]) {
    let key = keys::wal_file(&WalFileName::Segment(*name), Codec::Zstd);
    repo.store()
        .put_opts(
            &key,
            Bytes::copy_from_slice(stored).into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
}

fn spec(target: RecoveryTarget) -> TargetSpec {
    TargetSpec {
        target,
        timeline: TimelineChoice::Latest,
        inclusive: true,
    }
}

impl Fixture {
    async fn plan(&self, spec: &TargetSpec) -> Result<RecoveryPlan, PlanError> {
        let snapshot = Snapshot::load(&self.repo).await.unwrap();
        plan_recovery(&self.repo, &snapshot, spec, None).await
    }

    /// The summary files stored, sorted.
    fn summary_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let dir = self.root.join("summaries");
        let Ok(groups) = std::fs::read_dir(&dir) else {
            return files;
        };
        for group in groups {
            for file in std::fs::read_dir(group.unwrap().path()).unwrap() {
                files.push(file.unwrap().path());
            }
        }
        files.sort();
        files
    }

    fn summary_of(&self, segment: &SegmentName) -> PathBuf {
        let files: Vec<_> = self
            .summary_files()
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&segment.to_string())
            })
            .collect();
        assert_eq!(files.len(), 1, "one summary of {segment}: {files:?}");
        files.into_iter().next().unwrap()
    }

    fn wal_path(&self, segment: &SegmentName) -> PathBuf {
        self.root
            .join(keys::wal_file(&WalFileName::Segment(*segment), Codec::Zstd).as_ref())
    }
}

/// The plan without what reading it cost.
fn outcome(plan: &RecoveryPlan) -> serde_json::Value {
    let mut value = serde_json::to_value(plan).unwrap();
    let object = value.as_object_mut().unwrap();
    for key in [
        "wal_segments_decoded",
        "wal_segments_from_summaries",
        "wal_bytes_downloaded",
        "summaries_written",
        "summary_bytes_read",
    ] {
        assert!(object.remove(key).is_some(), "{key} is reported");
    }
    value
}

fn near_the_end() -> TargetSpec {
    spec(RecoveryTarget::Xid(FIRST_XID + TRANSACTIONS - 5))
}

#[tokio::test]
async fn a_second_plan_reads_summaries_and_downloads_no_wal() {
    let fx = fixture().await;
    let first = fx.plan(&near_the_end()).await.unwrap();
    let read = first.wal_read;
    assert_eq!(read.wal_segments_decoded, first.wal_segments, "{read:?}");
    assert_eq!(read.wal_segments_from_summaries, 0);
    assert_eq!(read.summaries_written, first.wal_segments);
    assert!(read.wal_bytes_downloaded > 0);
    assert!(fx.store.wal_reads.load(Ordering::SeqCst) >= first.wal_segments);
    assert_eq!(fx.summary_files().len() as u64, first.wal_segments);
    assert!(first.wal_segments >= 6, "the fixture spans segments");

    fx.store.wal_reads.store(0, Ordering::SeqCst);
    let second = fx.plan(&near_the_end()).await.unwrap();
    let read = second.wal_read;
    assert_eq!(read.wal_segments_decoded, 0, "{read:?}");
    assert_eq!(read.wal_bytes_downloaded, 0);
    assert_eq!(read.wal_segments_from_summaries, first.wal_segments);
    assert_eq!(read.summaries_written, 0);
    assert_eq!(
        fx.store.wal_reads.load(Ordering::SeqCst),
        0,
        "no WAL object read"
    );
    assert_eq!(outcome(&first), outcome(&second));
    assert_eq!(second.stop.xid, Some(FIRST_XID + TRANSACTIONS - 5));
}

#[tokio::test]
async fn every_kind_of_target_plans_the_same_from_summaries() {
    let fx = fixture().await;
    let mut targets = vec![
        spec(RecoveryTarget::Latest),
        spec(RecoveryTarget::Immediate),
        spec(RecoveryTarget::Name("half".into())),
        spec(RecoveryTarget::Time(at(70))),
        spec(RecoveryTarget::Xid(FIRST_XID + 33)),
        TargetSpec {
            inclusive: false,
            ..spec(RecoveryTarget::Xid(FIRST_XID + 33))
        },
        // Inside a record, and on a record's exact start (found from the cold plan below).
        spec(RecoveryTarget::Lsn(Lsn::new(3 * SEGMENT + 12_345))),
    ];
    // Summaries of the whole WAL, from a plan to its end.
    fx.plan(&spec(RecoveryTarget::Latest)).await.unwrap();
    let warm_latest = fx.plan(&spec(RecoveryTarget::Latest)).await.unwrap();
    let stop_lsn = warm_latest.stop.lsn;
    let named = fx
        .plan(&spec(RecoveryTarget::Name("half".into())))
        .await
        .unwrap();
    targets.push(spec(RecoveryTarget::Lsn(named.stop.lsn)));
    targets.push(TargetSpec {
        inclusive: false,
        ..spec(RecoveryTarget::Lsn(named.stop.lsn))
    });
    assert!(stop_lsn > named.stop.lsn);
    for target in &targets {
        let warm = fx.plan(target).await;
        // The same plan made from the WAL alone: summaries moved away meanwhile.
        let aside = fx.root.join("aside");
        std::fs::rename(fx.root.join("summaries"), &aside).unwrap();
        let cold = fx.plan(target).await;
        std::fs::remove_dir_all(fx.root.join("summaries")).unwrap();
        std::fs::rename(&aside, fx.root.join("summaries")).unwrap();
        match (warm, cold) {
            (Ok(warm), Ok(cold)) => {
                assert_eq!(outcome(&warm), outcome(&cold), "{target:?}");
                assert_eq!(warm.wal_read.wal_segments_decoded, 0, "{target:?}");
                assert!(cold.wal_read.wal_segments_decoded > 0, "{target:?}");
            }
            (warm, cold) => panic!("{target:?}: warm {warm:?}, cold {cold:?}"),
        }
    }
    // And the recoverable windows `info` reports.
    let snapshot = Snapshot::load(&fx.repo).await.unwrap();
    let cold = recoverable_windows(&fx.repo, &snapshot).await.unwrap();
    fx.store.wal_reads.store(0, Ordering::SeqCst);
    let warm = recoverable_windows(&fx.repo, &snapshot).await.unwrap();
    assert_eq!(cold, warm);
    assert_eq!(fx.store.wal_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn damaged_summaries_are_ignored() {
    let fx = fixture().await;
    let first = fx.plan(&near_the_end()).await.unwrap();
    // One with a flipped byte (the zstd checksum fails), one of garbage, one that is valid
    // zstd of another format, one that parses but claims another segment's records.
    let flipped = fx.summary_of(&fx.segments[1]);
    let mut bytes = std::fs::read(&flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    std::fs::write(fx.summary_of(&fx.segments[2]), b"not a summary").unwrap();
    let other_format = fx.summary_of(&fx.segments[3]);
    let json = Codec::Zstd
        .decode(&std::fs::read(&other_format).unwrap(), 64 << 20)
        .unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(json.contains("walarch-segment-summary/1"));
    let changed = json.replace("walarch-segment-summary/1", "walarch-segment-summary/2");
    std::fs::write(&other_format, zstd(3, changed.as_bytes())).unwrap();
    // The summary of segment 4 swapped for that of segment 5: same format, wrong segment.
    std::fs::copy(
        fx.summary_of(&fx.segments[5]),
        fx.summary_of(&fx.segments[4]),
    )
    .unwrap();
    // The summary of segment 5, well formed, but decoded in another state than the one the
    // scan arrives with (another back link).
    let other_state = fx.summary_of(&fx.segments[5]);
    let json = Codec::Zstd
        .decode(&std::fs::read(&other_state).unwrap(), 64 << 20)
        .unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let last_record = &mut value["entering"]["decoder"]["last_record"];
    *last_record = (last_record.as_u64().unwrap() + 8).into();
    std::fs::write(&other_state, zstd(3, &serde_json::to_vec(&value).unwrap())).unwrap();

    let second = fx.plan(&near_the_end()).await.unwrap();
    assert_eq!(outcome(&first), outcome(&second));
    let read = second.wal_read;
    assert_eq!(
        read.wal_segments_from_summaries, 1,
        "only the first: {read:?}"
    );
    assert!(read.wal_segments_decoded >= 5, "{read:?}");
    assert!(read.wal_segments_from_summaries >= 1, "{read:?}");
    assert!(read.wal_bytes_downloaded > 0);
    // Damaged summaries stay as they are (never rewritten), so they are decoded around again.
    assert_eq!(read.summaries_written, 0, "{read:?}");
}

#[tokio::test]
async fn a_summary_of_a_replaced_segment_is_ignored() {
    let fx = fixture().await;
    let target = spec(RecoveryTarget::Xid(FIRST_XID + TRANSACTIONS - 1));
    let first = fx.plan(&target).await.unwrap();
    let last = *fx.segments.last().unwrap();
    assert_eq!(first.stop.segment, last.to_string());
    let old_summary = fx.summary_of(&last);

    // The same content stored anew (another compression level): another size and entity tag.
    let same = Codec::Zstd
        .decode(
            &std::fs::read(fx.wal_path(&last)).unwrap(),
            SEGMENT as usize,
        )
        .unwrap();
    std::fs::write(fx.wal_path(&last), zstd(19, &same)).unwrap();
    let second = fx.plan(&target).await.unwrap();
    // The same stop; only the stored size differs.
    assert_eq!(
        serde_json::to_value(&first.stop).unwrap(),
        serde_json::to_value(&second.stop).unwrap()
    );
    assert_ne!(first.wal_bytes, second.wal_bytes);
    assert_eq!(
        second.wal_read.summaries_written, 1,
        "{:?}",
        second.wal_read
    );
    assert!(second.wal_read.wal_segments_decoded >= 1);
    assert!(
        old_summary.exists(),
        "summaries are never rewritten or removed by plan"
    );

    // Different content under the same name: the commit is not in it, whatever the summary
    // made from the previous object says.
    let empty = crate::testing::synthetic_segment(
        SystemId::new(7_000_000_000_000_000_001),
        TimelineId::FIRST,
        last.segment_no(size()).unwrap(),
        size(),
    );
    std::fs::write(fx.wal_path(&last), zstd(3, &empty)).unwrap();
    let err = fx.plan(&target).await.unwrap_err();
    assert!(
        matches!(err, PlanError::Unreachable(_) | PlanError::Corrupt { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn presence_comes_from_the_listing_never_from_summaries() {
    let fx = fixture().await;
    fx.plan(&near_the_end()).await.unwrap();
    let gone = fx.segments[3];
    std::fs::remove_file(fx.wal_path(&gone)).unwrap();
    let err = fx.plan(&near_the_end()).await.unwrap_err();
    match err {
        PlanError::Missing { name, .. } => assert_eq!(name, gone.to_string()),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_summary_that_cannot_be_written_does_not_fail_the_plan() {
    let fx = fixture().await;
    fx.store.refuse_summary_writes.store(true, Ordering::SeqCst);
    let first = fx.plan(&near_the_end()).await.unwrap();
    assert_eq!(first.wal_read.summaries_written, 0);
    assert!(fx.summary_files().is_empty());
    assert_eq!(
        fx.store.summary_writes.load(Ordering::SeqCst),
        1,
        "a refused write is not tried again for every segment"
    );
    let second = fx.plan(&near_the_end()).await.unwrap();
    assert_eq!(outcome(&first), outcome(&second));
    assert_eq!(second.wal_read.wal_segments_decoded, first.wal_segments);
}

#[tokio::test]
async fn decoding_resumes_correctly_after_summarized_segments() {
    let fx = fixture().await;
    let target = spec(RecoveryTarget::Latest);
    let first = fx.plan(&target).await.unwrap();
    // Segments 1..=3 keep their summaries; the rest are decoded again. The record that
    // crosses from the third into the fourth must be read whole, with its back link checked.
    let resume = fx.segments[3];
    let decoded = {
        let bytes = Codec::Zstd
            .decode(
                &std::fs::read(fx.wal_path(&resume)).unwrap(),
                SEGMENT as usize,
            )
            .unwrap();
        let before = Codec::Zstd
            .decode(
                &std::fs::read(fx.wal_path(&fx.segments[2])).unwrap(),
                SEGMENT as usize,
            )
            .unwrap();
        let mut decoder = crate::wal::WalDecoder::new();
        decoder.decode_segment(&before).unwrap();
        assert!(
            decoder.state().carry.is_some(),
            "a record crosses the boundary"
        );
        decoder.decode_segment(&bytes).unwrap()
    };
    let crossing = &decoded.records[0];
    assert!(crossing.lsn < decoded.segment_start, "{crossing:?}");
    for segment in &fx.segments[3..] {
        std::fs::remove_file(fx.summary_of(segment)).unwrap();
    }
    fx.store.wal_reads.store(0, Ordering::SeqCst);
    let second = fx.plan(&target).await.unwrap();
    assert_eq!(outcome(&first), outcome(&second));
    let after = (fx.segments.len() - 3) as u64;
    let read = second.wal_read;
    assert_eq!(read.wal_segments_from_summaries, 3, "{read:?}");
    // The decoded ones, and the third again to carry the crossing record into the fourth.
    assert_eq!(read.wal_segments_decoded, after + 1, "{read:?}");
    assert_eq!(read.summaries_written, after, "{read:?}");

    // The time target just after the crossing record's commit stops at the same place.
    let crossing_commit = decoded
        .records
        .iter()
        .find_map(|r| match r.event {
            Some(crate::wal::RecordEvent::Commit { xid, .. }) => Some(xid),
            _ => None,
        })
        .unwrap();
    for segment in &fx.segments[3..] {
        std::fs::remove_file(fx.summary_of(segment)).unwrap();
    }
    let by_xid = fx
        .plan(&spec(RecoveryTarget::Xid(crossing_commit)))
        .await
        .unwrap();
    assert_eq!(by_xid.stop.segment, resume.to_string());
    assert_eq!(by_xid.wal_read.wal_segments_from_summaries, 3);
}

#[tokio::test]
async fn a_summary_made_after_another_predecessor_is_ignored() {
    let fx = fixture().await;
    let target = spec(RecoveryTarget::Latest);
    let first = fx.plan(&target).await.unwrap();
    // The segment before the last stored anew: its own summary no longer matches, and the
    // last segment's summary was made with a record carried in from the previous object.
    let before_last = fx.segments[fx.segments.len() - 2];
    let same = Codec::Zstd
        .decode(
            &std::fs::read(fx.wal_path(&before_last)).unwrap(),
            SEGMENT as usize,
        )
        .unwrap();
    std::fs::write(fx.wal_path(&before_last), zstd(19, &same)).unwrap();
    let second = fx.plan(&target).await.unwrap();
    assert_eq!(
        serde_json::to_value(&first.stop).unwrap(),
        serde_json::to_value(&second.stop).unwrap()
    );
    let read = second.wal_read;
    assert_eq!(read.summaries_written, 2, "{read:?}");
    assert_eq!(read.wal_segments_from_summaries, first.wal_segments - 2);
}

/// Lays out `records` from segment 1, as [`fixture`] does, into a fresh repository.
async fn fixture_with(records: &[SyntheticRecord], patch: impl FnOnce(&mut [Vec<u8>])) -> Fixture {
    let fx = fixture().await;
    for segment in &fx.segments {
        std::fs::remove_file(fx.wal_path(segment)).unwrap();
    }
    let mut segments = segments_with_records(1, records);
    patch(&mut segments);
    let mut names = Vec::new();
    for (i, bytes) in segments.iter().enumerate() {
        let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(1 + i as u64), size());
        put_segment(&fx.repo, &name, &zstd(3, bytes)).await;
        names.push(name);
    }
    Fixture {
        segments: names,
        ..fx
    }
}

#[tokio::test]
async fn a_carried_record_keeps_its_back_link_checked_after_summaries() {
    // Eighteen fillers: the last crosses from segment 1 into 2. Then a record of 1.5 MiB, the
    // first to start in segment 2, crossing into 3; its back link is wrong. A plan that stops
    // in segment 2 never finishes that record, so its summaries cannot know; the plan after
    // it, which resumes decoding at segment 3 from summaries, must still refuse the record as
    // a decoder reading from the start does.
    let big = SyntheticRecord {
        rmid: 10,
        info: 0,
        xid: 0,
        body: SyntheticRecord::main_data(&vec![0xCD; 1_500_000]),
    };
    let mut records = vec![SyntheticRecord::filler(60_000); 18];
    records.push(big.clone());
    records.push(SyntheticRecord::commit(FIRST_XID, at(1)));
    let fx = fixture_with(&records, |segments| {
        let mut decoder = crate::wal::WalDecoder::new();
        let one = decoder.decode_segment(&segments[0]).unwrap();
        let two = decoder.decode_segment(&segments[1]).unwrap();
        assert_eq!(
            two.records.len(),
            1,
            "only the crossing filler completes in 2"
        );
        assert!(two.records[0].lsn < two.segment_start);
        let carry = decoder
            .state()
            .carry
            .expect("the big record is carried into 3");
        let offset = (carry.lsn - two.segment_start.as_u64()) as usize;
        assert!(offset % 8192 + 24 <= 8192, "the header lies on one page");
        let header = &mut segments[1][offset..offset + 24];
        let wrong_prev = one.records.last().unwrap().lsn.as_u64(); // not the crossing filler
        header[8..16].copy_from_slice(&wrong_prev.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&big.body), &header[..20]);
        header[20..24].copy_from_slice(&crc.to_le_bytes());
    })
    .await;
    assert_eq!(fx.segments.len(), 3);
    // The crossing filler's own position: the first plan stops on it, in segment 2.
    let filler_lsn = {
        let mut decoder = crate::wal::WalDecoder::new();
        let bytes = |s: &SegmentName| {
            Codec::Zstd
                .decode(&std::fs::read(fx.wal_path(s)).unwrap(), SEGMENT as usize)
                .unwrap()
        };
        decoder.decode_segment(&bytes(&fx.segments[0])).unwrap();
        decoder
            .decode_segment(&bytes(&fx.segments[1]))
            .unwrap()
            .records[0]
            .lsn
    };
    let stop_in_two = fx
        .plan(&spec(RecoveryTarget::Lsn(filler_lsn)))
        .await
        .unwrap();
    assert_eq!(stop_in_two.stop.segment, fx.segments[1].to_string());
    assert_eq!(stop_in_two.wal_read.summaries_written, 2);

    let latest = spec(RecoveryTarget::Latest);
    let warm = fx.plan(&latest).await.unwrap();
    assert_eq!(warm.wal_read.wal_segments_from_summaries, 2);
    std::fs::remove_dir_all(fx.root.join("summaries")).unwrap();
    let cold = fx.plan(&latest).await.unwrap();
    assert_eq!(outcome(&warm), outcome(&cold));
    // The big record was refused: the archived WAL ends with the filler before it.
    assert!(
        cold.stop.lsn < Lsn::new(carry_start(&fx).await),
        "{:?}",
        cold.stop
    );
}

/// Where the record carried out of segment 2 starts.
async fn carry_start(fx: &Fixture) -> u64 {
    let mut decoder = crate::wal::WalDecoder::new();
    for s in &fx.segments[..2] {
        let bytes = Codec::Zstd
            .decode(&std::fs::read(fx.wal_path(s)).unwrap(), SEGMENT as usize)
            .unwrap();
        decoder.decode_segment(&bytes).unwrap();
    }
    decoder.state().carry.unwrap().lsn
}

#[tokio::test]
async fn a_repository_only_read_gets_no_summaries_but_its_stored_ones_are_used() {
    let fx = fixture().await;
    let read_only = Repository::from_store(fx.store.clone(), RepoLocation::Local(fx.root.clone()))
        .with_summary_writes(false);
    let first = plan_with(&read_only).await;
    assert_eq!(first.wal_read.summaries_written, 0);
    assert_eq!(fx.store.summary_writes.load(Ordering::SeqCst), 0);
    assert!(fx.summary_files().is_empty());
    // Summaries another plan stored are read all the same.
    fx.plan(&near_the_end()).await.unwrap();
    let second = plan_with(&read_only).await;
    assert_eq!(second.wal_read.wal_bytes_downloaded, 0);
    assert_eq!(outcome(&first), outcome(&second));
}

async fn plan_with(repo: &Repository) -> RecoveryPlan {
    let snapshot = Snapshot::load(repo).await.unwrap();
    plan_recovery(repo, &snapshot, &near_the_end(), None)
        .await
        .unwrap()
}
