//! A store that misbehaves on purpose: latency, throttling, a store that goes down after N
//! requests, bodies cut short, and no create-only puts. It wraps any store, so the
//! conformance suite can show on every backend that the engine fails closed (a clear error,
//! nothing half-stored, nothing wrong handed on) without a cloud that misbehaves on cue.
//!
//! Retries themselves happen inside object_store's HTTP clients, below this trait; they are
//! shown against the emulators through a fault-injecting HTTP proxy (`tests/`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// Items of a listing that count as one request (one page of an S3 or GCS listing).
const LIST_PAGE: usize = 1000;

/// What goes wrong, and when. The default injects nothing (a counting pass-through).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added before every request.
    pub latency: Duration,
    /// The first this many requests are refused as throttled ("503 SlowDown").
    pub throttle_first: u64,
    /// Every request after the first this many fails as if the store went down.
    pub fail_after: Option<u64>,
    /// Bodies of reads end halfway, cleanly (the worst case: no transport error to notice).
    pub truncate_reads: bool,
    /// Create-only puts are answered "not implemented", as by an S3-compatible server
    /// without `If-None-Match`.
    pub no_conditional_put: bool,
}

/// The fault-injecting wrapper; see the module documentation.
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    create_puts: AtomicU64,
}

impl FaultStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> Self {
        FaultStore {
            inner,
            faults,
            counters: Arc::default(),
        }
    }

    /// Requests seen so far (a listing counts one per page of [`LIST_PAGE`] items).
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Create-only puts attempted so far (answered or refused).
    pub fn create_puts(&self) -> u64 {
        self.counters.create_puts.load(Ordering::SeqCst)
    }

    async fn request(&self) -> object_store::Result<()> {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        admit(&self.faults, &self.counters)
    }
}

/// Counts one request and decides whether it fails.
fn admit(faults: &Faults, counters: &Counters) -> object_store::Result<()> {
    let n = counters.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if n <= faults.throttle_first {
        return Err(injected(
            "503 Service Unavailable: SlowDown, reduce your request rate",
        ));
    }
    if faults.fail_after.is_some_and(|limit| n > limit) {
        return Err(injected("connection refused: the store is down"));
    }
    Ok(())
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: format!("injected fault: {what}").into(),
    }
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStore")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if matches!(opts.mode, PutMode::Create) {
            self.counters.create_puts.fetch_add(1, Ordering::SeqCst);
            if self.faults.no_conditional_put {
                return Err(object_store::Error::NotImplemented {
                    operation: "create-only put".into(),
                    implementer: "FaultStore".into(),
                });
            }
        }
        self.request().await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.request().await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultUpload {
            inner,
            faults: self.faults.clone(),
            counters: self.counters.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.request().await?;
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if !self.faults.truncate_reads || head {
            return Ok(result);
        }
        let (meta, range, attributes, extensions) = (
            result.meta.clone(),
            result.range.clone(),
            result.attributes.clone(),
            result.extensions.clone(),
        );
        let body = result.bytes().await?;
        let cut = Bytes::copy_from_slice(&body[..body.len() / 2]);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(cut) }).boxed()),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (faults, counters) = (self.faults.clone(), self.counters.clone());
        let admitted = locations
            .map(move |location| location.and_then(|l| admit(&faults, &counters).map(|()| l)));
        self.inner.delete_stream(admitted.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (faults, counters) = (self.faults.clone(), self.counters.clone());
        // One request per page: a store going down mid-listing yields the pages before it,
        // then an error, as a cloud listing does.
        self.inner
            .list(prefix)
            .enumerate()
            .map(move |(i, item)| {
                if i % LIST_PAGE == 0 {
                    admit(&faults, &counters)?;
                }
                item
            })
            .scan(false, |failed, item| {
                // Nothing after the first error, as a paged listing cannot continue.
                let done = *failed;
                *failed |= item.is_err();
                futures::future::ready((!done).then_some(item))
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.request().await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.request().await?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload whose part uploads and completion count as requests.
#[derive(Debug)]
struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Faults,
    counters: Arc<Counters>,
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match admit(&self.faults, &self.counters) {
            Ok(()) => self.inner.put_part(data),
            Err(e) => Box::pin(futures::future::ready(Err(e))),
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        admit(&self.faults, &self.counters)?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
