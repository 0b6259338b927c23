//! Synthetic WAL for tests, fuzz seeds and benches: segments with a valid long page header and
//! WAL-like content. Not a substitute for real PostgreSQL WAL in end-to-end tests.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub mod faults;

use crate::wal::{LongPageHeader, PgMajor, SegmentNo, SystemId, TimelineId, WalSegmentSize};

/// A segment PostgreSQL 15 could have written: valid long page header, then pages of
/// compressible, deterministic filler.
pub fn synthetic_segment(
    system_id: SystemId,
    timeline: TimelineId,
    segno: SegmentNo,
    size: WalSegmentSize,
) -> Vec<u8> {
    let header = LongPageHeader {
        pg_major: PgMajor::new(15),
        info: 0x0002,
        timeline,
        page_addr: crate::wal::Lsn::new(segno.as_u64() * size.bytes()),
        system_id,
        segment_size: size,
        block_size: 8192,
    };
    let mut out = vec![0u8; size.bytes() as usize];
    out[..header.encode().len()].copy_from_slice(&header.encode());
    // Deterministic pseudo-random records separated by zero padding, like real WAL pages.
    let mut state = segno.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out[64..].chunks_mut(256) {
        for byte in chunk.iter_mut().take(96) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = (state & 0x3F) as u8;
        }
    }
    out
}

/// One record for [`segments_with_records`]: resource manager, info bits, transaction id and
/// the body after the 24-byte record header (block headers, data).
#[derive(Debug, Clone)]
pub struct SyntheticRecord {
    pub rmid: u8,
    pub info: u8,
    pub xid: u32,
    pub body: Vec<u8>,
}

impl SyntheticRecord {
    /// A transaction commit at `time`, with only the main data (`xl_xact_commit`).
    pub fn commit(xid: u32, time: chrono::DateTime<chrono::Utc>) -> Self {
        let micros = crate::wal::postgres_micros(time);
        SyntheticRecord {
            rmid: 1,
            info: 0x00,
            xid,
            body: Self::main_data(&micros.to_le_bytes()),
        }
    }

    /// `pg_create_restore_point(name)` at `time`.
    pub fn restore_point(name: &str, time: chrono::DateTime<chrono::Utc>) -> Self {
        let mut data = crate::wal::postgres_micros(time).to_le_bytes().to_vec();
        let mut field = [0u8; 64];
        field[..name.len().min(63)].copy_from_slice(&name.as_bytes()[..name.len().min(63)]);
        data.extend_from_slice(&field);
        SyntheticRecord {
            rmid: 0,
            info: 0x70,
            xid: 0,
            body: Self::main_data(&data),
        }
    }

    /// A heap-like record carrying `len` bytes of block data (to cross pages and segments).
    pub fn filler(len: u16) -> Self {
        // Block 0: fork flags 0, data length, RelFileNode, block number; then the data.
        let mut body = vec![0u8, 0u8];
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&[0u8; 16]);
        body.extend(std::iter::repeat_n(0xAB, usize::from(len)));
        SyntheticRecord {
            rmid: 10,
            info: 0x00,
            xid: 0,
            body,
        }
    }

    /// A body holding only main data (`XLR_BLOCK_ID_DATA_SHORT` or `_LONG`).
    pub fn main_data(data: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(data.len() + 5);
        match u8::try_from(data.len()) {
            Ok(short) => body.extend_from_slice(&[255, short]),
            Err(_) => {
                body.push(254);
                body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
        }
        body.extend_from_slice(data);
        body
    }
}

/// Lays `records` out as PostgreSQL 15 does, from the start of segment `segno` (1 MiB
/// segments, 8 KiB pages) and on into the following segments as needed: page headers with
/// continuation lengths, 8-byte alignment, back links and CRC-32C. Returns the segments.
pub fn segments_with_records(segno: u64, records: &[SyntheticRecord]) -> Vec<Vec<u8>> {
    const SEGMENT: usize = 1 << 20;
    const PAGE: usize = 8192;
    let base = segno * SEGMENT as u64;
    let mut wal: Vec<u8> = Vec::new();
    // Writes `bytes` at the current end, putting page headers in as pages begin; `left` is
    // how much of the current record is still to come (for xlp_rem_len).
    let put = |wal: &mut Vec<u8>, bytes: &[u8]| {
        let mut rest = bytes;
        loop {
            if wal.len().is_multiple_of(PAGE) {
                let page_addr = base + wal.len() as u64;
                // A page that begins inside the record continues it.
                let left = if rest.len() < bytes.len() {
                    rest.len()
                } else {
                    0
                };
                let continuation = u16::from(left > 0);
                if wal.len().is_multiple_of(SEGMENT) {
                    let header = LongPageHeader {
                        pg_major: PgMajor::new(15),
                        info: 0x0002 | continuation,
                        timeline: TimelineId::FIRST,
                        page_addr: crate::wal::Lsn::new(page_addr),
                        system_id: SystemId::new(7_000_000_000_000_000_001),
                        segment_size: WalSegmentSize::new(SEGMENT as u64).unwrap(),
                        block_size: PAGE as u32,
                    };
                    let mut encoded = header.encode();
                    encoded[16..20].copy_from_slice(&(left as u32).to_le_bytes());
                    wal.extend_from_slice(&encoded);
                } else {
                    let mut short = [0u8; 24];
                    short[..2].copy_from_slice(&0xD110u16.to_le_bytes());
                    short[2..4].copy_from_slice(&continuation.to_le_bytes());
                    short[4..8].copy_from_slice(&1u32.to_le_bytes());
                    short[8..16].copy_from_slice(&page_addr.to_le_bytes());
                    short[16..20].copy_from_slice(&(left as u32).to_le_bytes());
                    wal.extend_from_slice(&short);
                }
            }
            if rest.is_empty() {
                return;
            }
            let room = PAGE - wal.len() % PAGE;
            let n = room.min(rest.len());
            wal.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if rest.is_empty() {
                return;
            }
        }
    };
    put(&mut wal, &[]); // the long header, even for a segment without records
    let mut prev = 0u64;
    for record in records {
        while !wal.len().is_multiple_of(8) {
            wal.push(0);
        }
        if wal.len().is_multiple_of(PAGE) {
            put(&mut wal, &[]);
        }
        let lsn = base + wal.len() as u64;
        let total = 24 + record.body.len();
        let mut header = [0u8; 24];
        header[..4].copy_from_slice(&(total as u32).to_le_bytes());
        header[4..8].copy_from_slice(&record.xid.to_le_bytes());
        header[8..16].copy_from_slice(&prev.to_le_bytes());
        header[16] = record.info;
        header[17] = record.rmid;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&record.body), &header[..20]);
        header[20..24].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&record.body);
        put(&mut wal, &bytes);
        prev = lsn;
    }
    let segments = wal.len().div_ceil(SEGMENT).max(1);
    wal.resize(segments * SEGMENT, 0);
    // Pages after the last record: headers, no data (as PostgreSQL initialises them).
    wal.chunks(SEGMENT).map(<[u8]>::to_vec).collect()
}

/// A backup written straight into `repo` without PostgreSQL, for tests of listing, restore and
/// retention: one zstd part holding `files` (path, content) and `directories`, a
/// `backup_label`, the `started` claim and, last, the manifest. `id` is the backup's id and
/// start time; the backup covers `start_lsn..stop_lsn` on timeline 1.
pub async fn synthetic_backup(
    repo: &crate::repo::Repository,
    id: &crate::backup::BackupId,
    start_lsn: crate::wal::Lsn,
    stop_lsn: crate::wal::Lsn,
    directories: &[&str],
    files: &[(&str, &[u8])],
) -> crate::backup::Manifest {
    use crate::backup::{DirectoryEntry, FileEntry, MANIFEST_FORMAT, Manifest, PartEntry};
    use crate::codec::{Codec, Compression};
    use crate::store::keys;

    let mut tar = tar::Builder::new(Vec::new());
    for dir in directories {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o700);
        header.set_size(0);
        tar.append_data(&mut header, format!("{dir}/"), std::io::empty())
            .expect("tar into memory");
    }
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_size(content.len() as u64);
        tar.append_data(&mut header, path, *content)
            .expect("tar into memory");
    }
    let tar = tar.into_inner().expect("tar into memory");
    let stored = Compression::default().encode(&tar).expect("zstd");
    let stored_bytes = stored.len() as u64;
    let put = |key: object_store::path::Path, body: Vec<u8>| async move {
        repo.put_new(&key, body.into()).await.expect("put");
    };
    let started_at = id.time();
    put(keys::backup_file(id.as_str(), "started"), b"{}".to_vec()).await;
    put(keys::backup_part(id.as_str(), 0, Codec::Zstd), stored).await;
    let label =
        format!("START WAL LOCATION: {start_lsn} (file 000000010000000000000001)\n").into_bytes();
    let backup_label_crc32 = Some(crc32fast::hash(&label));
    put(keys::backup_file(id.as_str(), "backup_label"), label).await;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        kind: "full".into(),
        tool_version: "walarch test".into(),
        system_id: SystemId::new(7_000_000_000_000_000_001),
        pg_version_num: 150_000,
        wal_segment_size: WalSegmentSize::DEFAULT,
        timeline: TimelineId::FIRST,
        start_lsn,
        stop_lsn,
        started_at,
        stopped_at: started_at + chrono::TimeDelta::seconds(10),
        completed_at: started_at + chrono::TimeDelta::seconds(11),
        from_standby: false,
        codec: Codec::Zstd,
        has_tablespace_map: false,
        backup_label_crc32,
        tablespaces: vec![],
        directories: directories
            .iter()
            .map(|d| DirectoryEntry {
                path: (*d).to_owned(),
                mode: 0o700,
            })
            .collect(),
        files: files
            .iter()
            .map(|(path, content)| FileEntry {
                path: (*path).to_owned(),
                size: content.len() as u64,
                crc32: crc32fast::hash(content),
                mode: 0o600,
                part: 0,
            })
            .collect(),
        parts: vec![PartEntry {
            index: 0,
            tar_bytes: tar.len() as u64,
            stored_bytes,
            files: files.len() as u32,
        }],
    };
    put(keys::backup_manifest(id.as_str()), manifest.to_json()).await;
    manifest
}

/// A store that runs test code at chosen moments of another store's work, to make races
/// deterministic: before a put lands, and after a listing was taken but before its caller
/// sees it.
#[cfg(test)]
pub(crate) mod hooks {
    use std::fmt;
    use std::sync::Arc;

    use async_trait::async_trait;
    use futures::future::BoxFuture;
    use futures::stream::BoxStream;
    use futures::{StreamExt, TryStreamExt};
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    /// Test code run with the key (or listing prefix) concerned and the inner store.
    pub type Hook = Arc<dyn Fn(Path, Arc<dyn ObjectStore>) -> BoxFuture<'static, ()> + Send + Sync>;

    #[derive(Clone)]
    pub struct HookStore {
        inner: Arc<dyn ObjectStore>,
        pub before_put: Option<Hook>,
        pub after_list: Option<Hook>,
    }

    impl HookStore {
        pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
            HookStore {
                inner,
                before_put: None,
                after_list: None,
            }
        }

        fn inner(&self) -> &Arc<dyn ObjectStore> {
            &self.inner
        }
    }

    impl fmt::Debug for HookStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "HookStore")
        }
    }

    impl fmt::Display for HookStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "HookStore({})", self.inner())
        }
    }

    #[async_trait]
    impl ObjectStore for HookStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            if let Some(hook) = &self.before_put {
                hook(location.clone(), self.inner().clone()).await;
            }
            self.inner().put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner().put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner().get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner().delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            let Some(hook) = self.after_list.clone() else {
                return self.inner().list(prefix);
            };
            let (inner, prefix) = (self.inner().clone(), prefix.cloned().unwrap_or_default());
            futures::stream::once(async move {
                let listed: Vec<ObjectMeta> = inner.list(Some(&prefix)).try_collect().await?;
                hook(prefix, inner).await;
                Ok::<_, object_store::Error>(futures::stream::iter(listed.into_iter().map(Ok)))
            })
            .try_flatten()
            .boxed()
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner().list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner().copy_opts(from, to, options).await
        }
    }
}
