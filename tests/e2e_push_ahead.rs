//! Push-ahead with a real PostgreSQL 15: WAL piles up while archiving is off, then
//! archive_command = walarch wal-push drains the backlog through the background worker. The
//! archive must end complete and byte-identical even when the worker is killed with SIGKILL
//! mid-upload again and again, and a store outage must leave PostgreSQL's `.ready` files in
//! place with no success recorded.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use walarch_tests::{Cluster, S3Server, Scratch, walarch, walarch_binary};

/// A cluster with `segments` segments of 1 MiB queued `.ready` and archiving still off.
fn cluster_with_backlog(
    scratch: &Scratch,
    envs: &[(String, String)],
    segsize_mib: u32,
    rows: u32,
) -> Cluster {
    let mut cluster = Cluster::init(scratch, "primary", segsize_mib).with_env(envs);
    cluster.append_conf(
        "archive_mode = on\narchive_command = ''\nwal_keep_size = '4GB'\nmax_wal_size = '4GB'\n",
    );
    cluster.start_and_wait();
    cluster.sql("create table t (id bigint, payload text)");
    for batch in 0..4 {
        cluster.sql(&format!(
            "insert into t select g, repeat(md5(g::text), 8) from generate_series({}, {}) g",
            batch * rows + 1,
            (batch + 1) * rows
        ));
        cluster.sql("select pg_switch_wal()");
    }
    cluster
}

fn enable_archiving(cluster: &Cluster, bin: &Path, repo: &str) {
    cluster.sql(&format!(
        "alter system set archive_command = '{} wal-push --repo {repo} %p'",
        bin.display()
    ));
    cluster.sql("select pg_reload_conf()");
}

/// Every file PostgreSQL marked archived fetches back byte-identical.
fn assert_archive_complete(
    cluster: &Cluster,
    bin: &Path,
    repo: &str,
    envs: &[(String, String)],
    scratch: &Scratch,
    label: &str,
) {
    let archived = cluster.archived_names();
    assert!(!archived.is_empty());
    let out = scratch.subdir(&format!("fetched-{label}"));
    for name in &archived {
        let dest = out.join(name);
        let run = walarch(
            bin,
            envs,
            &["--repo", repo, "wal-fetch", name, dest.to_str().unwrap()],
        );
        assert_eq!(run.code, 0, "{name}: {run:?}");
        let original = std::fs::read(cluster.data.join("pg_wal").join(name)).unwrap();
        assert!(std::fs::read(&dest).unwrap() == original, "{name} differs");
    }
}

#[test]
fn backlog_drains_through_the_worker_and_survives_sigkill_mid_upload() {
    let scratch = Scratch::new("pushahead");
    let bin = walarch_binary(&scratch);
    let repo = scratch.subdir("repo");
    let repo = repo.to_str().unwrap();
    // Logs from archive_command go to the server log; info level shows fast-path calls.
    let envs = vec![("WALARCH_LOG".to_string(), "info".to_string())];
    let mut cluster = cluster_with_backlog(&scratch, &envs, 16, 60_000);
    let backlog = cluster.ready_count();
    assert!(backlog >= 6, "backlog of {backlog} segments");

    enable_archiving(&cluster, &bin, repo);
    // Kill every push worker with SIGKILL as soon as it appears, for the first seconds of
    // the drain: uploads die half-way, PostgreSQL retries, nothing may be lost.
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut kills = 0;
    while Instant::now() < deadline {
        let killed = Command::new("pkill")
            .args(["-KILL", "-f", &format!("{} .*push-worker", bin.display())])
            .status()
            .unwrap();
        kills += usize::from(killed.success());
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(kills > 0, "no push worker was ever running to kill");

    // Then let it drain.
    cluster.switch_and_wait_archived(Duration::from_secs(180));
    assert_archive_complete(&cluster, &bin, repo, &envs, &scratch, "after-kills");

    // A second backlog, drained undisturbed: PostgreSQL's calls now find files the worker
    // pushed ahead and return at once.
    cluster.sql("alter system set archive_command = ''");
    cluster.sql("select pg_reload_conf()");
    cluster
        .sql("insert into t select g, repeat(md5(g::text), 8) from generate_series(1, 150000) g");
    for _ in 0..4 {
        cluster.sql("insert into t select g, 'x' from generate_series(1, 1000) g");
        cluster.sql("select pg_switch_wal()");
    }
    assert!(cluster.ready_count() >= 6, "second backlog");
    enable_archiving(&cluster, &bin, repo);
    cluster.switch_and_wait_archived(Duration::from_secs(180));
    assert_archive_complete(&cluster, &bin, repo, &envs, &scratch, "second");
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert!(
        log.contains("already pushed ahead"),
        "PostgreSQL's calls found files pushed ahead\n{}",
        cluster.log_tail()
    );
    cluster.stop();
}

#[test]
fn store_outage_leaves_ready_files_and_records_no_success() {
    let scratch = Scratch::new("outage");
    let bin = walarch_binary(&scratch);
    let s3 = S3Server::start(&scratch, "walarch-outage");
    let repo = format!("s3://{}/x", s3.bucket);
    let mut envs = s3.env();
    envs.push(("WALARCH_RETRIES".into(), "1".into()));
    envs.push(("WALARCH_RETRY_TIMEOUT".into(), "2".into()));
    let cluster = cluster_with_backlog(&scratch, &envs, 1, 5_000);
    let backlog = cluster.ready_count();
    assert!(backlog >= 4, "backlog of {backlog}");
    drop(s3); // the store goes away

    enable_archiving(&cluster, &bin, &repo);
    // Give the archiver and the worker time to try (and fail) several times.
    walarch_tests::wait_for("archive failures", Duration::from_secs(60), || {
        let failed: u64 = cluster
            .sql("select failed_count from pg_stat_archiver")
            .parse()
            .unwrap();
        (failed >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        cluster.ready_count() >= backlog,
        "every queued file is still .ready"
    );
    let spool = cluster.data.join("pg_wal/walarch/push");
    let records: Vec<_> = std::fs::read_dir(&spool)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".ok"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        records.is_empty(),
        "no success recorded during the outage: {records:?}"
    );
    assert_eq!(
        cluster.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver"),
        "",
        "nothing archived"
    );
}
