//! Limits, end to end with a real PostgreSQL 15: a base backup pauses its upload while the
//! server has finished WAL segments waiting for archive_command (archiving is never queued
//! behind a backup), and `--max-rate-mib` holds backup and restore transfers to their
//! bandwidth (a lower bound on their duration that no machine can beat; the speed of WAL
//! archiving during a full-speed backup is measured in benches/e2e/archive_lag.py).

use std::time::{Duration, Instant};

use walarch_tests::{Cluster, Scratch, walarch_as_postgres, walarch_binary};

/// Seconds the backup reports it waited for archiving (its info log line).
fn waited_for_archiving(stderr: &str) -> Option<f64> {
    stderr
        .lines()
        .find(|l| l.contains("waited for WAL archiving"))
        .and_then(|l| l.split("seconds=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_backup_yields_to_waiting_wal_and_transfers_keep_their_bandwidth_limit() {
    let scratch = Scratch::new("limits");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let repo = format!("file://{}", repo_dir.display());
    // A slow archiver: two seconds per segment, one at a time.
    let mut primary = Cluster::init(&scratch, "primary", 1);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = 'sleep 2 && {} --repo {repo} --push-ahead 0 wal-push %p'\n\
         wal_level = replica\n",
        bin.display()
    ));
    primary.start_and_wait();
    primary.sql("create table t (g int, payload text)");
    let data = primary.data.to_str().unwrap().to_owned();
    let conninfo = primary.conninfo();
    let env = vec![("WALARCH_LOG".to_owned(), "info".to_owned())];
    let backup = |extra: &[&str]| {
        let mut args = vec![
            "--repo", &repo, "--json", "backup", "--pgdata", &data, "--dbname", &conninfo,
        ];
        args.extend_from_slice(extra);
        walarch_as_postgres(&bin, &env, &args)
    };
    let queue_segments = |count: usize| {
        for _ in 0..count {
            primary.sql("insert into t select g, md5(g::text) from generate_series(1, 2000) g");
            primary.sql("select pg_switch_wal()");
        }
        assert!(primary.ready_count() >= 2, "segments wait for the archiver");
    };

    // Segments wait: the backup's upload waits for them.
    queue_segments(4);
    let run = backup(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    let waited = waited_for_archiving(&run.stderr).expect("the backup reports its wait");
    assert!(
        waited > 1.0,
        "the upload paused for waiting WAL: {waited} s\n{}",
        run.stderr
    );
    eprintln!("backup with segments waiting: its upload waited {waited:.2} s for archiving");

    // With --no-wal-priority it does not.
    queue_segments(4);
    let run = backup(&["--no-wal-priority"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        waited_for_archiving(&run.stderr),
        None,
        "no gate, no wait: {}",
        run.stderr
    );
    primary.switch_and_wait_archived(Duration::from_secs(120));

    // A bandwidth limit of 1 MiB/s: a backup storing S bytes cannot take less than S/1 MiB
    // seconds, less the quarter second of burst a transfer may start with.
    let limited = |args: &[&str]| {
        let mut all = vec!["--repo", repo.as_str(), "--max-rate-mib", "1", "--json"];
        all.extend_from_slice(args);
        let started = Instant::now();
        let run = walarch_as_postgres(&bin, &[], &all);
        (run, started.elapsed().as_secs_f64())
    };
    let (run, seconds) = limited(&[
        "backup",
        "--pgdata",
        &data,
        "--dbname",
        &conninfo,
        "--no-wal-priority",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let stored = run.json()["stored_bytes"].as_u64().expect("stored_bytes");
    let floor = stored as f64 / (1 << 20) as f64 - 0.25;
    assert!(
        stored > 2 << 20 && seconds >= floor,
        "backup of {stored} bytes at 1 MiB/s took {seconds:.2} s (at least {floor:.2})"
    );
    eprintln!("backup of {stored} bytes at 1 MiB/s: {seconds:.2} s (floor {floor:.2})");
    let target = scratch.subdir("restored").join("data");
    let (run, seconds) = limited(&["restore", "--pgdata", target.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        seconds >= floor,
        "restore of {stored} bytes at 1 MiB/s took {seconds:.2} s (at least {floor:.2})"
    );
    eprintln!("restore of {stored} bytes at 1 MiB/s: {seconds:.2} s (floor {floor:.2})");
}
