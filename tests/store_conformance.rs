//! The storage conformance suite (`walarch_core::testing::conformance`) on every backend
//! walarch claims, each a real server on 127.0.0.1 started here: S3 (moto), S3 without
//! conditional puts (the documented fallback), Azure Blob (azurite). The local file system
//! runs it in walarch-core's own tests. Google Cloud Storage runs it against a real bucket
//! only: no emulator installable here speaks the XML API object_store uses (tests/README.md).
//!
//! Then the retries: a fault-injecting HTTP proxy in front of each emulator answers 5xx and
//! throttling statuses and cuts bodies short, and the engine must either get through (the
//! store client retried) or fail with a transient error, with nothing half-stored and nothing
//! wrong handed on.

use std::sync::Arc;

use object_store::ObjectStore;
use walarch_core::archive::{FetchOutcome, PushOutcome, fetch_wal_file, push_wal_file};
use walarch_core::codec::{Codec, Compression};
use walarch_core::repo::Repository;
use walarch_core::store::{CloudSettings, RepoLocation, RetryOptions, S3Options, StoreOptions};
use walarch_core::testing::conformance::{self, Backend, CASES, SuiteOptions};
use walarch_core::testing::synthetic_segment;
use walarch_core::wal::{SegmentName, SegmentNo, SystemId, TimelineId, WalSegmentSize};
use walarch_core::{ErrorKind, store};
use walarch_tests::azure::AzuriteServer;
use walarch_tests::fault_proxy::{Fault, FaultProxy};
use walarch_tests::{S3Server, Scratch};

fn s3_options(endpoint: &str, env: Vec<(String, String)>, conditional_put: bool) -> StoreOptions {
    StoreOptions {
        s3: S3Options {
            endpoint: Some(endpoint.to_owned()),
            region: Some("us-east-1".into()),
            allow_http: Some(true),
            conditional_put: (!conditional_put).then_some(false),
        },
        cloud: CloudSettings::from_vars(env),
        ..StoreOptions::default()
    }
}

fn open(location: &str, options: &StoreOptions) -> (RepoLocation, Arc<dyn ObjectStore>) {
    let location = RepoLocation::parse(location).unwrap();
    let store = store::open(&location, options, false).expect("open the store");
    (location, store)
}

async fn conforms(name: &str, location: &str, options: &StoreOptions, conditional_put: bool) {
    let (location, store) = open(location, options);
    let backend = Backend {
        name: name.to_owned(),
        store,
        location,
        conditional_put,
    };
    let ran = conformance::run(&backend, &SuiteOptions::default()).await;
    assert_eq!(ran, CASES, "[{name}] every case ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_conforms() {
    let scratch = Scratch::new("conformance-s3");
    let s3 = S3Server::start(&scratch, "walarch-conformance");
    let options = s3_options(&s3.endpoint(), s3.env(), true);
    conforms("s3", "s3://walarch-conformance/repo", &options, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_without_conditional_puts_conforms_with_the_fallback() {
    let scratch = Scratch::new("conformance-s3-fallback");
    let s3 = S3Server::start(&scratch, "walarch-conformance");
    let options = s3_options(&s3.endpoint(), s3.env(), false);
    conforms(
        "s3-no-conditional-put",
        "s3://walarch-conformance/repo",
        &options,
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_conforms() {
    let scratch = Scratch::new("conformance-azure");
    let azure = AzuriteServer::start(&scratch, "walarch");
    let options = StoreOptions {
        cloud: CloudSettings::from_vars(azure.env()),
        ..StoreOptions::default()
    };
    conforms("azure", "az://walarch/repo", &options, true).await;
}

/// Google Cloud Storage: a real bucket, named by `WALARCH_TEST_GCS_BUCKET`, with credentials
/// from `GOOGLE_SERVICE_ACCOUNT` (or `GOOGLE_APPLICATION_CREDENTIALS`). Run with
/// `cargo test -p walarch-tests --test store_conformance -- --ignored gcs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real GCS bucket (WALARCH_TEST_GCS_BUCKET): no emulator here speaks GCS's XML API"]
async fn gcs_conforms() {
    let bucket = std::env::var("WALARCH_TEST_GCS_BUCKET")
        .expect("WALARCH_TEST_GCS_BUCKET names the bucket to test against");
    let options = StoreOptions {
        cloud: CloudSettings::from_vars(std::env::vars()),
        ..StoreOptions::default()
    };
    conforms(
        "gcs",
        &format!("gs://{bucket}/walarch-conformance"),
        &options,
        true,
    )
    .await;
}

/// A short retry budget, so "gives up" comes quickly.
fn quick_retries(mut options: StoreOptions) -> StoreOptions {
    options.retry = RetryOptions {
        max_retries: 3,
        timeout: std::time::Duration::from_secs(20),
    };
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_retries_throttling_and_server_errors_and_fails_closed() {
    let scratch = Scratch::new("retries-s3");
    let s3 = S3Server::start(&scratch, "walarch-retries");
    let proxy = FaultProxy::start(s3.port);
    let through_proxy = quick_retries(s3_options(&proxy.url(), s3.env(), true));
    let direct = s3_options(&s3.endpoint(), s3.env(), true);
    let slow_down =
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    retries(
        &scratch,
        &proxy,
        "s3://walarch-retries/repo",
        &through_proxy,
        &direct,
        Fault::Status(503, slow_down),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_retries_throttling_and_server_errors_and_fails_closed() {
    let scratch = Scratch::new("retries-azure");
    let azure = AzuriteServer::start(&scratch, "walarch");
    let proxy = FaultProxy::start(azure.port);
    let endpoint = format!("{}/{}", proxy.url(), walarch_tests::azure::ACCOUNT);
    let through_proxy = quick_retries(StoreOptions {
        cloud: CloudSettings::from_vars(AzuriteServer::env_with_endpoint(&endpoint)),
        ..StoreOptions::default()
    });
    let direct = StoreOptions {
        cloud: CloudSettings::from_vars(azure.env()),
        ..StoreOptions::default()
    };
    let server_busy = "<Error><Code>ServerBusy</Code><Message>Ingress is over the account limit.</Message></Error>";
    retries(
        &scratch,
        &proxy,
        "az://walarch/repo",
        &through_proxy,
        &direct,
        Fault::Status(503, server_busy),
    )
    .await;
}

/// The retry cases for one backend: `through_proxy` reaches the emulator through `proxy`,
/// `direct` without it (to see what the store really holds).
async fn retries(
    scratch: &Scratch,
    proxy: &FaultProxy,
    location: &str,
    through_proxy: &StoreOptions,
    direct: &StoreOptions,
    throttled: Fault,
) {
    let (repo_location, proxied) = open(location, through_proxy);
    let repo = Repository::from_store(proxied, repo_location.clone());
    let (_, direct_store) = open(location, direct);
    let direct_repo = Repository::from_store(direct_store, repo_location);
    let wal = scratch.subdir("pg_wal");
    let segment = |segno: u64| {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let content = synthetic_segment(
            SystemId::new(7_000_000_000_000_000_002),
            TimelineId::FIRST,
            SegmentNo::new(segno),
            size,
        );
        let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(segno), size).to_string();
        let path = wal.join(&name);
        std::fs::write(&path, &content).unwrap();
        (path, name.parse().unwrap(), content)
    };
    let fetch = |name, dest: std::path::PathBuf| {
        let repo = &repo;
        async move { fetch_wal_file(repo, &name, &dest, Codec::Zstd, false).await }
    };

    // The store throttles the first two requests: the client backs off and gets through.
    let (path, name, content) = segment(1);
    proxy.next(2, None, throttled.clone());
    let pushed = push_wal_file(&repo, &path, Compression::default(), None)
        .await
        .expect("a push through throttling");
    assert_eq!(pushed.outcome, PushOutcome::Stored);
    assert_eq!(
        proxy.faults_injected(),
        2,
        "both throttled answers were seen"
    );
    let dest = scratch.path().join("fetched-1");
    assert!(matches!(
        fetch(name, dest.clone()).await,
        Ok(FetchOutcome::Fetched(_))
    ));
    assert!(std::fs::read(&dest).unwrap() == content);

    // 500 and 502 from the store, then 429: retried too.
    proxy.reset();
    let (path, _, _) = segment(2);
    proxy.next(
        1,
        Some("PUT"),
        Fault::Status(500, "<Error><Code>InternalError</Code></Error>"),
    );
    proxy.next(1, None, Fault::Status(502, "bad gateway"));
    proxy.next(
        1,
        None,
        Fault::Status(429, "<Error><Code>TooManyRequests</Code></Error>"),
    );
    push_wal_file(&repo, &path, Compression::default(), None)
        .await
        .expect("a push through 500, 502 and 429");
    assert_eq!(proxy.faults_injected(), 3);

    // The store fails every request: the client gives up after its retries with a transient
    // error (exit 126 in restore_command, PostgreSQL retries archive_command), and the
    // store holds nothing under the name.
    proxy.reset();
    let (path, name, _) = segment(3);
    proxy.always(Some(Fault::Status(
        503,
        "<Error><Code>ServiceUnavailable</Code></Error>",
    )));
    let err = push_wal_file(&repo, &path, Compression::default(), None)
        .await
        .expect_err("a store that always fails");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(proxy.requests() > 1, "the client retried before giving up");
    let dest = scratch.path().join("fetched-3");
    let err = fetch(name, dest.clone())
        .await
        .expect_err("a fetch from a failing store");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(!dest.exists());
    proxy.always(None);
    let checked = fetch_wal_file(&direct_repo, &name, &dest, Codec::Zstd, false)
        .await
        .unwrap();
    assert!(
        matches!(checked, FetchOutcome::NotFound),
        "nothing stored: {checked:?}"
    );

    // A response body cut in half: either the client notices and retries (the bytes come
    // whole), or the fetch fails; PostgreSQL is never handed the half.
    for attempt in 0..2 {
        proxy.reset();
        proxy.next(1 + attempt, Some("GET"), Fault::TruncateBody);
        let dest = scratch.path().join(format!("truncated-{attempt}"));
        match fetch("000000010000000000000001".parse().unwrap(), dest.clone()).await {
            Ok(FetchOutcome::Fetched(_)) => {
                eprintln!("body cut {} time(s): the client retried", 1 + attempt);
                let (_, _, content) = segment(1);
                assert!(
                    std::fs::read(&dest).unwrap() == content,
                    "whole bytes after a retry"
                );
            }
            Ok(other) => panic!("a cut body must not read as {other:?}"),
            Err(e) => {
                eprintln!("body cut {} time(s): {e}", 1 + attempt);
                assert!(
                    matches!(e.kind(), ErrorKind::Transient | ErrorKind::Corrupt),
                    "{e}"
                );
                assert!(!dest.exists(), "nothing handed on");
            }
        }
        assert!(proxy.faults_injected() >= 1, "the cut was made");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_is_a_transient_error() {
    // Nothing listens on the port: connections are refused, retried, then given up.
    let port = walarch_tests::free_port();
    let scratch = Scratch::new("store-down");
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), "walarch-test".to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "walarch-test-secret".to_owned(),
        ),
    ];
    let options = quick_retries(s3_options(&format!("http://127.0.0.1:{port}"), env, true));
    let (location, store) = open("s3://nowhere/repo", &options);
    let repo = Repository::from_store(store, location);
    let dest = scratch.path().join("RECOVERYXLOG");
    let err = fetch_wal_file(
        &repo,
        &"000000010000000000000001".parse().unwrap(),
        &dest,
        Codec::Zstd,
        false,
    )
    .await
    .expect_err("a store that is down");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(!dest.exists());
}
