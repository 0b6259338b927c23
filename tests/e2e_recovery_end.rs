//! The end of recovery, with real PostgreSQL 15 servers restored from one repository:
//!
//! - two restored copies promoting one after the other pick different timeline ids: the
//!   second, whose recovery started before the first promoted (and so probed the archive for
//!   `00000002.history` and found nothing), asks the archive again when it ends recovery and
//!   sees the first's history file (issue 10, item 5);
//! - a copy that does not archive still loses its fetch spool once it has promoted, and what
//!   a killed `wal-fetch` left in its pg_wal is swept (issue 10, item 6).

use std::path::Path;
use std::time::Duration;

use walarch_tests::{Cluster, Scratch, wait_for, walarch_as_postgres, walarch_backup};

fn restore(bin: &Path, repo: &str, target: &Path, extra: &[&str]) {
    let mut args = vec![
        "--repo",
        repo,
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = walarch_as_postgres(bin, &[], &args);
    assert_eq!(run.code, 0, "restore into {}: {run:?}", target.display());
}

/// The timeline of the WAL the server writes now.
fn timeline(cluster: &Cluster) -> String {
    cluster.sql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
}

fn promoted(cluster: &Cluster) -> Option<()> {
    (cluster.try_sql("select pg_is_in_recovery()")? == "f").then_some(())
}

#[test]
fn copies_promoting_in_turn_pick_distinct_timelines_and_leave_no_spool() {
    let scratch = Scratch::new("recovery-end");
    let repo_dir = scratch.subdir("repo");
    let repo = repo_dir.to_str().unwrap().to_owned();
    let bin = walarch_tests::walarch_binary(&scratch);

    let mut primary = Cluster::init(&scratch, "primary", 1);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\n",
        bin.display()
    ));
    primary.start_and_wait();
    primary.sql("create table t as select g from generate_series(1, 1000) g");
    let run = walarch_backup(&bin, &[], &repo, &primary);
    assert_eq!(run.code, 0, "{run:?}");
    primary.sql("insert into t select g from generate_series(1001, 2000) g");
    primary.switch_and_wait_archived(Duration::from_secs(60));
    primary.stop();

    // Copy B: no archiving; recovery to the latest timeline, paused at consistency. Its
    // recovery starts now, while the repository has no 00000002.history.
    let b_data = scratch.subdir("b").join("data");
    restore(
        &bin,
        &repo,
        &b_data,
        &[
            "--target",
            "immediate",
            "--target-action",
            "pause",
            "--set",
            "archive_mode=off",
        ],
    );
    std::fs::write(
        b_data.join("postgresql.auto.conf"),
        std::fs::read_to_string(b_data.join("postgresql.auto.conf")).unwrap()
            + "recovery_target_timeline = 'latest'\n",
    )
    .unwrap();
    // What a wal-fetch killed mid-download leaves: a segment under its temporary name.
    let dead_pid = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let leftover = b_data.join(format!("pg_wal/.RECOVERYXLOG.walarch-{dead_pid}.tmp"));
    std::fs::write(&leftover, vec![0u8; 1 << 20]).unwrap();
    scratch.give_to_postgres(&leftover);
    let mut b = Cluster::from_data_dir(b_data.clone());
    b.start();
    wait_for(
        &format!("B to pause at consistency\n{}", b.log_tail()),
        Duration::from_secs(60),
        || (b.try_sql("select pg_get_wal_replay_pause_state()")? == "paused").then_some(()),
    );

    // Copy A takes the repository over, promotes to timeline 2 and archives its history.
    let a_data = scratch.subdir("a").join("data");
    restore(
        &bin,
        &repo,
        &a_data,
        &["--take-over", "--target-action", "promote"],
    );
    let mut a = Cluster::from_data_dir(a_data);
    a.start();
    wait_for(
        &format!("A to promote\n{}", a.log_tail()),
        Duration::from_secs(60),
        || promoted(&a),
    );
    assert_eq!(timeline(&a), "00000002");
    wait_for(
        "A's 00000002.history in the repository",
        Duration::from_secs(60),
        || {
            repo_dir
                .join("wal/00000002.history")
                .is_file()
                .then_some(())
        },
    );

    // B ends recovery now: timeline 2 is taken, so it must choose 3.
    b.sql("select pg_wal_replay_resume()");
    wait_for(
        &format!("B to promote\n{}", b.log_tail()),
        Duration::from_secs(60),
        || promoted(&b),
    );
    assert_eq!(
        timeline(&b),
        "00000003",
        "B must not reuse timeline 2, which A took\n{}",
        b.log_tail()
    );

    // B does not archive, yet its fetch spool goes once it has promoted; the leftover of the
    // killed fetch went too.
    let spool = b_data.join("pg_wal/walarch/fetch");
    wait_for(
        &format!("B's fetch spool {} to be removed", spool.display()),
        Duration::from_secs(30),
        || (!spool.exists()).then_some(()),
    );
    assert!(
        !leftover.exists(),
        "the killed fetch's temporary file is swept"
    );
}
