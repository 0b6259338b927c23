//! walarch-core used as a library, with no `walarch` binary in the loop, against a real
//! PostgreSQL 15: the test is the server's archiver (every `.ready` file goes through
//! `Engine::push_for_server`, push-ahead workers running as tasks in this process), takes a
//! backup, plans recovery to a time, restores, puts the WAL the plan names in place with
//! `Engine::fetch`, starts the copy and finds exactly the rows committed before that time.
//! The same test cancels a backup while it waits for its WAL and a restore half-way, and
//! checks what each leaves; a stopped S3 server is a transient error. The two examples of
//! walarch-core run against the same kind of server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use walarch_core::backup::{Phase, Progress};
use walarch_core::postgres::StartOptions;
use walarch_core::recovery::{RecoveryTarget, TargetSpec, TimelineChoice};
use walarch_core::store::{CloudSettings, RepoLocation};
use walarch_core::wal::{SegmentName, WalFileName};
use walarch_core::{
    BackupRequest, CancellationToken, Engine, EngineConfig, ErrorKind, InProcessWorkers,
    RestoreCommand, RestoreRequest, TargetAction,
};
use walarch_tests::pg::PG_BIN;
use walarch_tests::{
    Cluster, S3Server, Scratch, free_port, run_ok, running_as_root, wait_for, walarch_binary,
};

/// PostgreSQL refuses to run as root: as root, `pg_ctl` and `pg_controldata` for
/// `start_restored` are wrappers that run the real ones as the `postgres` OS user.
fn pg_bin_for_this_user(scratch: &Scratch) -> PathBuf {
    if !running_as_root() {
        return PathBuf::from(PG_BIN);
    }
    let dir = scratch.subdir("pg-bin");
    for program in ["pg_ctl", "pg_controldata"] {
        let wrapper = dir.join(program);
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec runuser -u postgres -- {PG_BIN}/{program} \"$@\"\n"),
        )
        .unwrap();
        run_ok(std::process::Command::new("chmod").arg("755").arg(&wrapper));
    }
    dir
}

fn connection(cluster: &Cluster) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres");
    config
}

/// The archiver: every `.ready` file of the server, oldest first, through the engine's
/// server path; `.ready` becomes `.done` as PostgreSQL's own archiver would do it. Stops
/// archiving while `paused`; failures are collected for the test to assert on.
async fn archive_loop(
    engine: Arc<Engine>,
    data_dir: PathBuf,
    workers: InProcessWorkers,
    stop: CancellationToken,
    paused: Arc<AtomicBool>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let status = data_dir.join("pg_wal/archive_status");
    while !stop.is_cancelled() {
        if !paused.load(Ordering::Relaxed) {
            let mut ready: Vec<String> = std::fs::read_dir(&status)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()?
                                .strip_suffix(".ready")
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            ready.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
            for name in ready {
                let file = data_dir.join("pg_wal").join(&name);
                match engine.push_for_server(&file, &data_dir, &workers).await {
                    Ok(_) => {
                        let _ = std::fs::rename(
                            status.join(format!("{name}.ready")),
                            status.join(format!("{name}.done")),
                        );
                    }
                    Err(e) => failures.lock().unwrap().push(format!("{name}: {e}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inserts rows `from..=to` of `marks`, one transaction each.
fn write_rows(cluster: &Cluster, from: u32, to: u32) {
    for n in from..=to {
        cluster.sql(&format!("insert into marks values ({n})"));
    }
}

/// Waits until PostgreSQL has no `.ready` file left (the archiver above took them all).
fn wait_archived(cluster: &Cluster) {
    wait_for("the archive to catch up", Duration::from_secs(60), || {
        (cluster.ready_count() == 0).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_archives_backs_up_and_recovers_to_a_time_through_its_public_api() {
    let scratch = Scratch::new("library");
    let repo_dir = scratch.subdir("repo");
    let mut cluster = Cluster::init(&scratch, "primary", 1);
    // archive_command empty: PostgreSQL queues .ready files and this test archives them.
    cluster.append_conf("archive_mode = on\narchive_command = ''\nwal_keep_size = '1GB'\n");
    cluster.start_and_wait();
    let mut config = EngineConfig::new(RepoLocation::Local(repo_dir.clone()));
    // Push-ahead workers (tasks of this process) stop soon after archiving pauses.
    config.push_ahead.idle_exit = Duration::from_millis(300);
    let engine = Arc::new(Engine::open_for_write(config.clone()).unwrap());
    let stop = CancellationToken::new();
    let paused = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let archiver = tokio::spawn(archive_loop(
        engine.clone(),
        cluster.data.clone(),
        InProcessWorkers::new(engine.clone(), stop.clone()),
        stop.clone(),
        paused.clone(),
        failures.clone(),
    ));

    run_ok(&mut cluster.pgbench(&["-i", "-q", "-s", "2"]));
    cluster.sql("create table marks (n int)");
    let backup_request = || {
        let mut request = BackupRequest::new(connection(&cluster));
        request.pgdata = Some(cluster.data.clone());
        request
    };
    let manifest = engine
        .backup(
            backup_request(),
            Arc::new(Progress::default()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();

    // Five rows, the moment, five more rows; all of it archived.
    write_rows(&cluster, 1, 5);
    let moment = chrono::DateTime::parse_from_rfc3339(&cluster.sql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    ))
    .unwrap()
    .with_timezone(&chrono::Utc);
    std::thread::sleep(Duration::from_millis(20));
    write_rows(&cluster, 6, 10);
    cluster.sql("select pg_switch_wal()");
    wait_archived(&cluster);

    let spec = TargetSpec {
        target: RecoveryTarget::Time(moment),
        timeline: TimelineChoice::Latest,
        inclusive: true,
    };
    let plan = engine
        .plan(&spec, None, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(plan.plan().backup.id, manifest.id.to_string());

    // Restore; the copy fetches no WAL itself: the test puts in its pg_wal, through the
    // engine, every segment the plan names (what restore_command would have fetched).
    let target = scratch.subdir("copy").join("data");
    let copy_port = free_port();
    let mut request = RestoreRequest::new(&target, RestoreCommand::Custom("/bin/false".into()));
    request.target_action = Some(TargetAction::Promote);
    request.settings = vec![
        ("port".into(), copy_port.to_string()),
        ("archive_mode".into(), "off".into()),
    ];
    let restored = engine
        .restore(
            &plan,
            request,
            Arc::new(Progress::default()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(restored.backup, manifest.id);
    let size = engine
        .repository()
        .unwrap()
        .identity()
        .await
        .unwrap()
        .unwrap()
        .wal_segment_size;
    for timeline in &plan.plan().timelines {
        let segment = |text: &str| match text.parse::<WalFileName>().unwrap() {
            WalFileName::Segment(segment) => segment,
            other => panic!("{other} is not a segment"),
        };
        let (first, last) = (
            segment(&timeline.first_segment),
            segment(&timeline.last_segment),
        );
        let (from, to) = (
            first.segment_no(size).unwrap().as_u64(),
            last.segment_no(size).unwrap().as_u64(),
        );
        for n in from..=to {
            let name =
                SegmentName::new(first.timeline(), walarch_core::wal::SegmentNo::new(n), size);
            let outcome = engine
                .fetch(
                    &WalFileName::Segment(name),
                    &target.join("pg_wal").join(name.to_string()),
                )
                .await
                .unwrap();
            assert!(
                matches!(outcome, walarch_core::archive::FetchOutcome::Fetched(_)),
                "{name}: {outcome:?}"
            );
        }
    }
    // start_restored logs into <pgdata>/log: made here, so that the postgres OS user owns it.
    std::fs::create_dir_all(target.join("log")).unwrap();
    scratch.give_to_postgres(target.parent().unwrap());
    let outcome = engine
        .start_restored(&StartOptions {
            pgdata: target.clone(),
            binaries: walarch_core::postgres::ServerBinaries {
                dir: pg_bin_for_this_user(&scratch),
                major: 15,
            },
            user: "postgres".into(),
            action: "promote".into(),
            timeout: Duration::from_secs(120),
        })
        .await
        .unwrap();
    assert_eq!(outcome.state, "promoted", "{outcome:?}");
    let copy = Cluster::adopt(target.clone(), copy_port);
    assert_eq!(
        copy.sql("select string_agg(n::text, ',' order by n) from marks"),
        "1,2,3,4,5",
        "exactly the rows committed before the moment"
    );
    drop(copy);

    // A backup cancelled while it waits for its WAL: no manifest, its claim withdrawn, the
    // server's backup stopped.
    paused.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await; // the push-ahead worker goes idle too
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let cancelled = tokio::spawn({
        let (engine, progress, cancel, request) = (
            engine.clone(),
            progress.clone(),
            cancel.clone(),
            backup_request(),
        );
        async move { engine.backup(request, progress, &cancel).await }
    });
    let waited = Instant::now();
    while progress.snapshot().phase != Phase::WaitingForWal {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the backup reached {:?}",
            progress.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let err = cancelled.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    let list = engine.backups().await.unwrap();
    assert_eq!(list.backups.len(), 1, "only the first backup exists");
    let [interrupted] = list.incomplete.as_slice() else {
        panic!("the cancelled backup's folder is an interrupted one: {list:?}");
    };
    let folder = repo_dir.join("backups").join(interrupted.as_str());
    assert!(!folder.join("manifest.json").exists());
    assert!(!folder.join("started").exists(), "its claim is withdrawn");
    wait_for(
        "the cancelled backup's session to end",
        Duration::from_secs(30),
        || {
            (cluster.sql(
                "select count(*) from pg_stat_activity where application_name = 'walarch backup'",
            ) == "0")
                .then_some(())
        },
    );
    paused.store(false, Ordering::Relaxed);

    // A restore cancelled half-way: no pg_control (PostgreSQL will not start it); the same
    // request again is refused as an interrupted restore; with force it completes.
    let mut one_at_a_time = config.clone();
    one_at_a_time.parallelism = 1;
    let slow = Arc::new(Engine::open_for_write(one_at_a_time).unwrap());
    let half = scratch.subdir("half").join("data");
    let request = || {
        let mut request = RestoreRequest::new(&half, RestoreCommand::Custom("/bin/false".into()));
        request.target_action = Some(TargetAction::Promote);
        request
    };
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let watcher = tokio::spawn({
        let (progress, cancel) = (progress.clone(), cancel.clone());
        async move {
            while progress.snapshot().files_done == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            cancel.cancel();
            progress.snapshot()
        }
    });
    let err = slow
        .restore(&plan, request(), progress.clone(), &cancel)
        .await
        .unwrap_err();
    let at_cancel = watcher.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        at_cancel.files_done < at_cancel.files_total,
        "cancelled half-way: {at_cancel:?}"
    );
    assert!(!half.join("global/pg_control").exists());
    let again = slow
        .restore(&plan, request(), Arc::default(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Refused, "{again}");
    assert!(again.to_string().contains("interrupted restore"), "{again}");
    let mut forced = request();
    forced.force = true;
    slow.restore(&plan, forced, Arc::default(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(half.join("global/pg_control").is_file());

    stop.cancel();
    archiver.await.unwrap();
    assert!(
        failures.lock().unwrap().is_empty(),
        "archiving failed: {:?}",
        failures.lock().unwrap()
    );
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_s3_server_is_a_transient_error_and_missing_credentials_a_setting() {
    let scratch = Scratch::new("library-s3");
    let s3 = S3Server::start(&scratch, "walarch-library");
    let mut config =
        EngineConfig::new(RepoLocation::parse(&format!("s3://{}/r", s3.bucket)).unwrap());
    config.store.s3.endpoint = Some(s3.endpoint());
    config.store.s3.allow_http = Some(true);
    config.store.retry.max_retries = 1;
    config.store.retry.timeout = Duration::from_secs(2);
    config.store.cloud = CloudSettings::from_vars(
        [
            ("AWS_ACCESS_KEY_ID", "walarch-test"),
            ("AWS_SECRET_ACCESS_KEY", "walarch-test-secret"),
            ("AWS_REGION", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    // Without credentials object_store asks the instance metadata service (kept on
    // loopback here): the error says no credentials were found, a setting to fix.
    let mut without = config.clone();
    without.store.cloud = CloudSettings::from_vars([
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        (
            "AWS_METADATA_ENDPOINT".to_owned(),
            format!("http://127.0.0.1:{}", free_port()),
        ),
    ]);
    let engine = Engine::open_for_write(without).unwrap();
    let segments = synthetic_segments(&scratch);
    let err = engine.push(&segments[0], None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("no S3 credentials found"), "{err}");

    let engine = Engine::open_for_write(config).unwrap();
    engine.push(&segments[0], None).await.unwrap();
    drop(s3); // the server goes away
    let err = engine.push(&segments[1], None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.kind().is_retryable());
}

/// Two 1 MiB segments of one synthetic system, in a scratch directory.
fn synthetic_segments(scratch: &Scratch) -> Vec<PathBuf> {
    use walarch_core::wal::{SegmentNo, SystemId, TimelineId, WalSegmentSize};
    let size = WalSegmentSize::new(1 << 20).unwrap();
    let dir = scratch.subdir("segments");
    (1..=2)
        .map(|n| {
            let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(n), size);
            let path = dir.join(name.to_string());
            std::fs::write(
                &path,
                walarch_core::testing::synthetic_segment(
                    SystemId::new(77),
                    TimelineId::FIRST,
                    SegmentNo::new(n),
                    size,
                ),
            )
            .unwrap();
            path
        })
        .collect()
}

/// The examples of walarch-core, built by `cargo test` next to the test binaries.
fn example(name: &str, scratch: &Scratch) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let built = target.join("debug/examples").join(name);
    assert!(
        built.is_file(),
        "{} not built: run `cargo test --workspace` (it builds the examples)",
        built.display()
    );
    let copy = scratch.subdir("examples").join(name);
    std::fs::copy(&built, &copy).unwrap();
    scratch.give_to_postgres(&copy);
    copy
}

#[test]
fn the_examples_archive_and_fetch_and_recover_to_a_moment() {
    let scratch = Scratch::new("examples");
    let bin = walarch_binary(&scratch);
    let repo = scratch.subdir("repo");
    let mut cluster = Cluster::init(&scratch, "primary", 1);
    cluster.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {} wal-push %p'\nwal_keep_size = '1GB'\n",
        bin.display(),
        repo.display()
    ));
    cluster.start_and_wait();
    let segment = cluster.sql("select pg_walfile_name(pg_current_wal_lsn())");
    cluster.switch_and_wait_archived(Duration::from_secs(60));

    let own_repo = scratch.subdir("example-repo");
    let run = walarch_tests::walarch_as_postgres(
        &example("archive_and_fetch", &scratch),
        &[],
        &[
            own_repo.to_str().unwrap(),
            cluster.data.to_str().unwrap(),
            &segment,
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("fetched back byte-identical"),
        "{run:?}"
    );

    let target = scratch.subdir("example-copy").join("data");
    let run = walarch_tests::walarch_as_postgres(
        &example("backup_plan_restore", &scratch),
        &[("USER".into(), "postgres".into())],
        &[
            repo.to_str().unwrap(),
            &cluster.conninfo(),
            target.to_str().unwrap(),
            bin.to_str().unwrap(),
            PG_BIN,
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("the copy holds {1}"), "{run:?}");
    cluster.stop();
}
