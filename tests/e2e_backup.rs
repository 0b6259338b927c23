//! Base backups end to end with a real PostgreSQL 15: `walarch backup` of a pgbench database
//! while pgbench keeps writing, more writes after it, `walarch restore` into a new directory,
//! and a server started on it recovers from the archive to exactly the source's data
//! (`pgbench_accounts` sums, counts and a checksum of every balance; pg_amcheck clean). Into
//! a local repository and into a real S3-compatible server on 127.0.0.1; from a primary and
//! from a standby. The restored copy is refused when it tries to archive into its source's
//! repository (restore marker).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use walarch_tests::pg::pg_command;
use walarch_tests::{
    Cluster, KillOnDrop, S3Server, Scratch, run_ok, wait_for, walarch_as_postgres,
    walarch_as_postgres_command, walarch_binary,
};

/// What must match between source and restored copy.
const ACCOUNTS_SQL: &str = "select count(*), sum(abalance), \
     md5(string_agg(abalance::text, ',' order by aid)) from pgbench_accounts";
const HISTORY_SQL: &str = "select count(*), coalesce(sum(delta), 0) from pgbench_history";

fn archiving_primary(
    scratch: &Scratch,
    bin: &Path,
    repo: &str,
    envs: &[(String, String)],
) -> Cluster {
    let mut primary = Cluster::init(scratch, "primary", 16).with_env(envs);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\nmax_wal_size = '2GB'\n\
         wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n",
        bin.display()
    ));
    primary.start_and_wait();
    primary
}

/// Restores the latest backup into `<scratch>/<name>/data`, starts a server on it (which
/// recovers everything archived, then promotes) and returns it once it accepts writes.
fn restore_and_recover(
    scratch: &Scratch,
    bin: &Path,
    repo: &str,
    envs: &[(String, String)],
    name: &str,
    extra_conf: &str,
) -> Cluster {
    let target = scratch.subdir(name).join("data");
    let target_text = target.to_str().unwrap();
    let run = walarch_as_postgres(
        bin,
        envs,
        &["--repo", repo, "--json", "restore", "--pgdata", target_text],
    );
    assert_eq!(run.code, 0, "restore: {run:?}");
    let result = run.json();
    assert!(result["files"].as_u64().unwrap() > 500, "{result}");
    assert!(target.join("recovery.signal").is_file());
    assert!(target.join("backup_label").is_file());
    assert!(
        target.join("walarch_restore.json").is_file(),
        "the restore marker is left"
    );
    assert!(target.join("pg_wal/archive_status").is_dir());
    let auto_conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("restore_command = '") && auto_conf.contains("wal-fetch %f %p"),
        "{auto_conf}"
    );

    let mut restored = Cluster::from_data_dir(target).with_env(envs);
    restored.append_conf(extra_conf);
    restored.start();
    wait_for(
        &format!("recovery to finish\n{}", restored.log_tail()),
        Duration::from_secs(300),
        || {
            restored
                .try_sql("select pg_is_in_recovery()")
                .filter(|r| r == "f")
        },
    );
    restored
}

fn assert_amcheck_clean(cluster: &Cluster) {
    run_ok(pg_command("pg_amcheck", &[]).args([
        "-h",
        "127.0.0.1",
        "-p",
        &cluster.port.to_string(),
        "-U",
        "postgres",
        "--install-missing",
        "--heapallindexed",
        "-d",
        "postgres",
    ]));
}

/// Stops a background pgbench: its connections are terminated (killing the child alone
/// would leave pgbench running under runuser), then it is waited for.
fn stop_pgbench(cluster: &Cluster, mut load: KillOnDrop) {
    cluster.sql(
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pgbench'",
    );
    wait_for("pgbench to exit", Duration::from_secs(30), || {
        load.0.try_wait().unwrap()
    });
}

fn backup_and_restore(scratch: &Scratch, repo: &str, envs: &[(String, String)], scale: u32) {
    let bin = walarch_binary(scratch);
    let mut primary = archiving_primary(scratch, &bin, repo, envs);
    run_ok(&mut primary.pgbench(&["-i", "-q", "-s", &scale.to_string()]));

    // pgbench keeps writing while the backup runs.
    let load = KillOnDrop(
        primary
            .pgbench(&["-n", "-c", "2", "-j", "2", "-T", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbench"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let history_before = primary.sql("select count(*) from pgbench_history");
    let data = primary.data.to_str().unwrap().to_owned();
    let run = walarch_as_postgres(
        &bin,
        envs,
        &[
            "--repo",
            repo,
            "--json",
            "backup",
            "--pgdata",
            &data,
            "--dbname",
            &primary.conninfo(),
        ],
    );
    assert_eq!(run.code, 0, "backup: {run:?}\n{}", primary.log_tail());
    let backup = run.json();
    let history_after = primary.sql("select count(*) from pgbench_history");
    assert_ne!(
        history_before, history_after,
        "pgbench wrote during the backup"
    );
    stop_pgbench(&primary, load);

    let data_bytes = backup["data_bytes"].as_u64().unwrap();
    let stored_bytes = backup["stored_bytes"].as_u64().unwrap();
    assert!(data_bytes > u64::from(scale) * 12_000_000, "{backup}");
    assert!(
        stored_bytes > 0 && stored_bytes < data_bytes / 4,
        "pgbench data compresses: {backup}"
    );
    assert_eq!(backup["timeline"], 1);
    assert_eq!(backup["from_standby"], false);

    // More writes after the backup: recovery must replay them from the archive.
    run_ok(&mut primary.pgbench(&["-n", "-c", "2", "-j", "2", "-t", "300"]));
    primary.sql("create table after_backup as select generate_series(1, 1000) as g");
    let expected_accounts = primary.sql(ACCOUNTS_SQL);
    let expected_history = primary.sql(HISTORY_SQL);
    primary.switch_and_wait_archived(Duration::from_secs(180));
    primary.stop();

    let list = walarch_as_postgres(&bin, envs, &["--repo", repo, "--json", "backups"]);
    assert_eq!(list.code, 0, "{list:?}");
    let listed = list.json();
    assert_eq!(listed["backups"][0]["id"], backup["id"], "{listed}");
    assert_eq!(listed["backups"][0]["stored_bytes"], backup["stored_bytes"]);
    assert_eq!(
        listed["incomplete"].as_array().unwrap().len(),
        0,
        "{listed}"
    );

    let verify = walarch_as_postgres(&bin, envs, &["--repo", repo, "--json", "verify"]);
    assert_eq!(verify.code, 0, "verify: {verify:?}");
    assert_eq!(verify.json()["ok"], true);

    // The restored copy keeps archive_command pointing at its source's repository: the
    // restore marker must make it refuse, so its timeline-2 history never lands there.
    let restored =
        restore_and_recover(scratch, &bin, repo, envs, "restored", "archive_mode = on\n");
    assert_eq!(
        restored.sql(ACCOUNTS_SQL),
        expected_accounts,
        "accounts after recovery (history {} vs {expected_history})\n{}",
        restored.sql(HISTORY_SQL),
        std::fs::read_to_string(restored.log_path()).unwrap_or_default()
    );
    assert_eq!(
        restored.sql(HISTORY_SQL),
        expected_history,
        "history after recovery"
    );
    assert_eq!(restored.sql("select count(*) from after_backup"), "1000");
    assert_amcheck_clean(&restored);

    wait_for(
        &format!(
            "the restored copy's archiver to be refused\n{}",
            restored.log_tail()
        ),
        Duration::from_secs(60),
        || {
            let failed: u64 = restored
                .sql("select failed_count from pg_stat_archiver")
                .parse()
                .unwrap();
            (failed > 0).then_some(())
        },
    );
    let log = std::fs::read_to_string(restored.log_path()).unwrap();
    assert!(
        log.contains("was restored from backup") && log.contains("--take-over"),
        "{}",
        restored.log_tail()
    );
    let fetch = walarch_as_postgres(
        &bin,
        envs,
        &[
            "--repo",
            repo,
            "wal-fetch",
            "--no-prefetch",
            "00000002.history",
            "/dev/null",
        ],
    );
    assert_eq!(
        fetch.code, 1,
        "nothing of the copy's timeline reached the source's repository: {fetch:?}"
    );
}

#[test]
fn backup_while_writing_restores_through_a_local_repository() {
    let scratch = Scratch::new("backup-local");
    let repo = scratch.subdir("repo");
    backup_and_restore(&scratch, repo.to_str().unwrap(), &[], 20);
}

#[test]
fn backup_while_writing_restores_through_s3() {
    let scratch = Scratch::new("backup-s3");
    let s3 = S3Server::start(&scratch, "walarch-backup");
    let repo = format!("s3://{}/cluster", s3.bucket);
    backup_and_restore(&scratch, &repo, &s3.env(), 5);
}

#[test]
fn backup_from_a_standby_is_restorable() {
    let scratch = Scratch::new("backup-standby");
    let repo_dir = scratch.subdir("repo");
    let repo = repo_dir.to_str().unwrap();
    let bin = walarch_binary(&scratch);
    let mut primary = archiving_primary(&scratch, &bin, repo, &[]);
    run_ok(&mut primary.pgbench(&["-i", "-q", "-s", "3"]));

    let standby_data = scratch.subdir("standby").join("data");
    primary.standby_copy(&standby_data);
    let mut standby = Cluster::from_data_dir(standby_data.clone());
    standby.start_and_wait();
    assert_eq!(standby.sql("select pg_is_in_recovery()"), "t");

    // On a standby the backup's last segment is archived by the primary once it switches.
    let mut backup = walarch_as_postgres_command(
        &bin,
        &[],
        &[
            "--repo",
            repo,
            "--json",
            "backup",
            "--pgdata",
            standby_data.to_str().unwrap(),
            "--dbname",
            &standby.conninfo(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start backup");
    let started = Instant::now();
    while backup.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "backup from standby did not finish"
        );
        primary.sql(
            "insert into pgbench_history (tid, bid, aid, delta, mtime) values (1, 1, 1, 7, now())",
        );
        primary.sql("select pg_switch_wal()");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "backup from standby: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["from_standby"], true, "{result}");

    run_ok(&mut primary.pgbench(&["-n", "-t", "200"]));
    let expected_accounts = primary.sql(ACCOUNTS_SQL);
    let expected_history = primary.sql(HISTORY_SQL);
    primary.switch_and_wait_archived(Duration::from_secs(120));
    standby.stop();
    primary.stop();

    let restored = restore_and_recover(
        &scratch,
        &bin,
        repo,
        &[],
        "restored",
        "archive_mode = off\n",
    );
    assert_eq!(restored.sql(ACCOUNTS_SQL), expected_accounts);
    assert_eq!(restored.sql(HISTORY_SQL), expected_history);
    assert_amcheck_clean(&restored);
}
