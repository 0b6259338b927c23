//! End to end with a real PostgreSQL 15: `archive_command = walarch wal-push %p` archives a
//! write workload, every file PostgreSQL marked archived fetches back byte-identical, and a
//! second server recovering with `restore_command = walarch wal-fetch %f %p` to an LSN in the
//! middle of the last segment reaches exactly the primary's data at that point. It then
//! promotes to timeline 2 and keeps archiving into the same repository (history file, and a
//! timeline-2 segment that begins with timeline-1 pages). Once into a local repository
//! (16 MiB segments), once into a real S3-compatible server on 127.0.0.1 (1 MiB segments).

use std::path::Path;
use std::time::Duration;

use walarch_tests::{Cluster, S3Server, Scratch, files_below, wait_for, walarch, walarch_binary};

const CHECKSUM_SQL: &str =
    "select count(*), sum(id), md5(string_agg(payload, ',' order by id)) from t";

/// Archives a workload from one cluster and recovers it on another.
fn archive_and_recover(
    scratch: &Scratch,
    repo: &str,
    envs: &[(String, String)],
    segsize_mib: u32,
    batches: u32,
    rows_per_batch: u32,
) {
    let bin = walarch_binary(scratch);
    let mut primary = Cluster::init(scratch, "primary", segsize_mib).with_env(envs);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-push --repo {repo} %p'\nwal_keep_size = '4GB'\nmax_wal_size = '4GB'\n",
        bin.display()
    ));
    primary.start_and_wait();

    // The base backup comes first, so recovery must replay the whole workload from the archive.
    let replica_dir = scratch.subdir("replica");
    primary.base_backup(&replica_dir.join("data"));

    primary.sql("create table t (id bigint primary key, payload text)");
    for batch in 0..batches {
        let (from, to) = (batch * rows_per_batch + 1, (batch + 1) * rows_per_batch);
        primary.sql(&format!(
            "insert into t select g, repeat(md5(g::text), 8) from generate_series({from}, {to}) g"
        ));
        primary.sql("select pg_switch_wal()");
    }
    primary.sql("create table after_target (x int)");
    primary.sql("update t set payload = upper(payload) where id % 7 = 0");
    let expected = primary.sql(CHECKSUM_SQL);
    // Recovery stops here, in the middle of a segment, so promotion must write a .partial
    // segment and start timeline 2 inside a segment that began on timeline 1.
    let target_lsn = primary.sql("select pg_current_wal_lsn()");
    primary.sql("insert into after_target select generate_series(1, 1000)");
    let last = primary.switch_and_wait_archived(Duration::from_secs(180));
    assert_eq!(
        primary.sql("select failed_count from pg_stat_archiver"),
        "0",
        "no archive_command failure\n{}",
        primary.log_tail()
    );

    // Every file PostgreSQL considers archived fetches back byte-identical.
    let archived = primary.archived_names();
    let segments = archived.iter().filter(|n| n.len() == 24).count();
    assert!(
        segments >= 8,
        "the workload should span many segments, got {archived:?}"
    );
    assert!(
        archived.iter().any(|n| n.ends_with(".backup")),
        "the backup history file is archived too: {archived:?}"
    );
    let fetched_dir = scratch.subdir("fetched");
    for name in &archived {
        let dest = fetched_dir.join(name);
        let run = walarch(
            &bin,
            envs,
            &["--repo", repo, "wal-fetch", name, dest.to_str().unwrap()],
        );
        assert_eq!(run.code, 0, "wal-fetch {name}: {run:?}");
        let original = std::fs::read(primary.data.join("pg_wal").join(name)).unwrap();
        assert!(
            std::fs::read(&dest).unwrap() == original,
            "{name} fetched back different from pg_wal/{name}"
        );
    }
    primary.stop();

    // A second server recovers from the archive alone and reaches the same data.
    let replica_data = replica_dir.join("data");
    let mut replica_envs = envs.to_vec();
    replica_envs.push(("WALARCH_LOG".into(), "info".into()));
    let mut replica = Cluster::from_data_dir(replica_data.clone()).with_env(&replica_envs);
    replica.append_conf(&format!(
        "restore_command = '{bin} wal-fetch --repo {repo} %f %p'\nlog_min_messages = log\n\
         recovery_target_lsn = '{target_lsn}'\nrecovery_target_action = 'promote'\n\
         archive_mode = on\narchive_command = '{bin} wal-push --repo {repo} %p'\n",
        bin = bin.display()
    ));
    std::fs::write(replica_data.join("recovery.signal"), "").unwrap();
    scratch.give_to_postgres(&replica_data);
    replica.start();
    wait_for(
        &format!("recovery to finish\n{}", replica.log_tail()),
        Duration::from_secs(300),
        || {
            replica
                .try_sql("select pg_is_in_recovery()")
                .filter(|r| r == "f")
        },
    );
    assert_eq!(
        replica.sql(CHECKSUM_SQL),
        expected,
        "recovered data differs from the primary's"
    );
    assert_eq!(
        replica.sql("select count(*) from after_target"),
        "0",
        "nothing after the target is replayed"
    );
    let log = std::fs::read_to_string(replica.log_path()).unwrap();
    assert!(
        log.contains("restored from the prefetch spool"),
        "recovery was served by fetch-ahead\n{}",
        replica.log_tail()
    );
    assert!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "the last segment came from the archive\n{}",
        replica.log_tail()
    );

    // Promotion started timeline 2: the promoted server keeps archiving into the same
    // repository, including the history file and a first timeline-2 segment whose page header
    // still carries timeline 1. (PostgreSQL writes a .partial only when the old segment is in
    // pg_wal, as on a promoted streaming standby; after archive recovery it is not.)
    replica.sql("insert into t values (-1, 'after promotion')");
    let last_tli2 = replica.switch_and_wait_archived(Duration::from_secs(120));
    assert!(last_tli2.starts_with("00000002"), "{last_tli2}");
    assert_eq!(
        replica.sql("select failed_count from pg_stat_archiver"),
        "0",
        "{}",
        replica.log_tail()
    );
    let archived = replica.archived_names();
    assert!(
        archived.contains(&"00000002.history".to_owned()),
        "{archived:?}"
    );
    // Recovery stopped inside segment `last`, so timeline 2 begins in a segment of the same
    // number whose first page PostgreSQL copied from timeline 1 (header timeline 1).
    let first_tli2 = archived
        .iter()
        .find(|n| n.len() == 24 && n.starts_with("00000002"))
        .expect("a timeline-2 segment");
    assert_eq!(
        first_tli2[8..],
        last[8..],
        "timeline 2 starts inside the segment where recovery stopped"
    );
    let head = std::fs::read(replica.data.join("pg_wal").join(first_tli2)).unwrap();
    assert_eq!(
        u32::from_le_bytes(head[4..8].try_into().unwrap()),
        1,
        "its first page still carries timeline 1"
    );
    for name in archived.iter().filter(|n| n.starts_with("00000002")) {
        let dest = fetched_dir.join(format!("tli2-{name}"));
        let run = walarch(
            &bin,
            envs,
            &["--repo", repo, "wal-fetch", name, dest.to_str().unwrap()],
        );
        assert_eq!(run.code, 0, "wal-fetch {name}: {run:?}");
        let original = std::fs::read(replica.data.join("pg_wal").join(name)).unwrap();
        assert!(
            std::fs::read(&dest).unwrap() == original,
            "{name} fetched back different"
        );
    }
}

#[test]
fn archives_and_recovers_through_a_local_repository() {
    let scratch = Scratch::new("local");
    let repo = scratch.subdir("repo");
    archive_and_recover(&scratch, repo.to_str().unwrap(), &[], 16, 4, 100_000);
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("walarch.json")).unwrap()).unwrap();
    assert_eq!(identity["wal_segment_size"], 16 << 20);
    assert_eq!(identity["pg_major"], 15);
    assert_stored_as_standard_zstd(&repo);
}

#[test]
fn archives_and_recovers_through_s3() {
    let scratch = Scratch::new("s3");
    let s3 = S3Server::start(&scratch, "walarch-e2e");
    let repo = format!("s3://{}/cluster-a", s3.bucket);
    archive_and_recover(&scratch, &repo, &s3.env(), 1, 6, 20_000);
}

/// Objects are plain zstd frames an operator could decompress by hand: check the frame magic
/// and that `zstd -d` (when installed) gives back a whole segment.
fn assert_stored_as_standard_zstd(repo: &Path) {
    let segment = files_below(repo)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "zst") && p.to_string_lossy().len() > 30)
        .expect("a stored segment");
    let bytes = std::fs::read(repo.join(&segment)).unwrap();
    assert_eq!(
        &bytes[..4],
        &[0x28, 0xB5, 0x2F, 0xFD],
        "{} is a zstd frame",
        segment.display()
    );
    if let Ok(out) = std::process::Command::new("zstd")
        .args(["-d", "-c"])
        .arg(repo.join(&segment))
        .output()
    {
        assert!(
            out.status.success(),
            "zstd -d failed on {}",
            segment.display()
        );
        assert_eq!(out.stdout.len(), 16 << 20);
    }
}
