//! Retention end to end with a real PostgreSQL 15 archiving into a local repository: three
//! backups with pgbench writes and segment switches between them, then `walarch retention
//! --keep 2 --dry-run` (nothing changes) and `walarch retention --keep 2`, which must delete
//! the oldest backup and the WAL before the second backup's start segment and nothing else.
//! `walarch verify` passes afterwards, and each kept backup still restores and reaches
//! consistency. Then the newest backup loses its parts: it is reported damaged, and
//! `--keep 1` keeps the whole backup before it (issue 10, item 2).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use walarch_tests::{
    Cluster, Scratch, files_below, run_ok, wait_for, walarch_as_postgres, walarch_backup,
    walarch_binary,
};

/// Segments per 4 GiB "log id" with 16 MiB segments: the middle 8 hex digits of a name.
const SEGMENTS_PER_LOG_ID: u64 = 0x100;

/// The segment number an LSN like `0/5000028` lies in (16 MiB segments).
fn segment_of(lsn: &str) -> u64 {
    let (high, low) = lsn.split_once('/').expect("an LSN");
    let lsn =
        (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap();
    lsn / (16 << 20)
}

/// For a stored WAL segment, `.partial` or `.backup` file: its timeline and segment number.
fn wal_position(path: &Path) -> Option<(u32, u64)> {
    let name = path.file_name()?.to_str()?;
    if !(path.starts_with("wal") || path.starts_with("summaries"))
        || name.len() < 24
        || name.contains(".history")
    {
        return None;
    }
    let hex = |range: std::ops::Range<usize>| u64::from_str_radix(&name[range], 16).ok();
    let timeline = hex(0..8)? as u32;
    Some((timeline, hex(8..16)? * SEGMENTS_PER_LOG_ID + hex(16..24)?))
}

fn restore_and_check(
    scratch: &Scratch,
    bin: &Path,
    repo: &str,
    backup_id: &str,
    marks_expected: usize,
) {
    let target = scratch.subdir(&format!("restore-{backup_id}")).join("data");
    let run = walarch_as_postgres(
        bin,
        &[],
        &[
            "--repo",
            repo,
            "restore",
            "--pgdata",
            target.to_str().unwrap(),
            "--backup",
            backup_id,
            "--target",
            "immediate",
        ],
    );
    assert_eq!(run.code, 0, "restore {backup_id}: {run:?}");
    let mut restored = Cluster::from_data_dir(target);
    restored.start();
    // Recovery stops (paused, read-only) as soon as the backup is consistent: every mark
    // inserted before the backup started is there, none inserted after it ended.
    let marks = wait_for(
        &format!("{backup_id} to reach consistency\n{}", restored.log_tail()),
        Duration::from_secs(120),
        || restored.try_sql("select count(*), max(n) from marks"),
    );
    assert_eq!(
        marks,
        format!("{marks_expected}|{marks_expected}"),
        "restored {backup_id}"
    );
    assert_eq!(
        restored.sql("select count(*) from pgbench_accounts"),
        "100000"
    );
    restored.stop();
}

#[test]
fn keep_two_deletes_the_oldest_backup_and_the_wal_only_it_needed() {
    let started = Instant::now();
    let scratch = Scratch::new("retention");
    let repo_dir: PathBuf = scratch.subdir("repo");
    let repo = repo_dir.to_str().unwrap().to_owned();
    let bin = walarch_binary(&scratch);

    // No push-ahead worker: nothing may reach the repository after the server stops.
    let mut primary = Cluster::init(&scratch, "primary", 16)
        .with_env(&[("WALARCH_PUSH_AHEAD".into(), "0".into())]);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\nwal_level = replica\n",
        bin.display()
    ));
    primary.start_and_wait();
    run_ok(&mut primary.pgbench(&["-i", "-q", "-s", "1"]));
    primary.sql("create table marks (n int)");

    let mut ids = Vec::new();
    for n in 1..=3 {
        primary.sql(&format!("insert into marks values ({n})"));
        run_ok(&mut primary.pgbench(&["-n", "-t", "300"]));
        primary.switch_and_wait_archived(Duration::from_secs(60));
        let run = walarch_backup(&bin, &[], &repo, &primary);
        assert_eq!(run.code, 0, "backup {n}: {run:?}\n{}", primary.log_tail());
        ids.push(run.json()["id"].as_str().unwrap().to_owned());
    }
    // Writes after the last backup, all archived; then nothing changes the repository.
    primary.sql("insert into marks values (4)");
    run_ok(&mut primary.pgbench(&["-n", "-t", "300"]));
    primary.switch_and_wait_archived(Duration::from_secs(60));
    primary.stop();

    let listed = walarch_as_postgres(&bin, &[], &["--repo", &repo, "--json", "backups"]).json();
    let backups = listed["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 3, "{listed}");
    let second_start = segment_of(backups[1]["start_lsn"].as_str().unwrap());
    assert_eq!(backups[1]["timeline"], 1);
    // A plan over all the WAL from the oldest backup leaves a summary of every segment.
    let plan_all = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo", &repo, "plan", "--target", "latest", "--backup", &ids[0],
        ],
    );
    assert_eq!(plan_all.code, 0, "{plan_all:?}");
    let before: BTreeSet<PathBuf> = files_below(&repo_dir).into_iter().collect();
    assert!(
        before.iter().any(|p| p.starts_with("summaries")),
        "{before:#?}"
    );

    // What --keep 2 must delete: the oldest backup's folder, and every WAL file (segments
    // and .backup files) before the second backup's start segment, with their summaries.
    let expected_gone: BTreeSet<PathBuf> = before
        .iter()
        .filter(|p| {
            p.starts_with(Path::new("backups").join(&ids[0]))
                || wal_position(p)
                    .is_some_and(|(timeline, segment)| timeline == 1 && segment < second_start)
        })
        .cloned()
        .collect();
    let wal_gone = expected_gone
        .iter()
        .filter(|p| p.starts_with("wal"))
        .count();
    assert!(
        wal_gone >= 4,
        "WAL before the second backup: {expected_gone:#?}"
    );

    let dry = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo",
            &repo,
            "--json",
            "retention",
            "--keep",
            "2",
            "--dry-run",
        ],
    );
    assert_eq!(dry.code, 0, "dry run: {dry:?}");
    let plan = dry.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["deleted"], serde_json::Value::Null);
    assert_eq!(plan["plan"]["backups"][0]["id"], ids[0].as_str());
    assert_eq!(plan["plan"]["backups"][0]["action"], "delete");
    assert_eq!(plan["plan"]["backups"][1]["action"], "keep");
    assert_eq!(plan["plan"]["backups"][2]["action"], "keep");
    assert_eq!(plan["plan"]["totals"]["wal_files_deleted"], wal_gone);
    let human = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", &repo, "retention", "--keep", "2", "--dry-run"],
    );
    assert!(
        human.stdout.contains("dry run: nothing deleted") && human.stdout.contains(&ids[0]),
        "{human:?}"
    );
    let after_dry: BTreeSet<PathBuf> = files_below(&repo_dir).into_iter().collect();
    assert_eq!(after_dry, before, "a dry run deletes nothing");

    let real = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", &repo, "--json", "retention", "--keep", "2"],
    );
    assert_eq!(real.code, 0, "retention: {real:?}");
    let result = real.json();
    assert_eq!(
        result["deleted"]["backups_deleted"],
        serde_json::json!([ids[0]])
    );
    assert_eq!(result["deleted"]["wal_files_deleted"], wal_gone);
    let summaries_gone = expected_gone
        .iter()
        .filter(|p| p.starts_with("summaries"))
        .count();
    assert!(summaries_gone >= 2, "{expected_gone:#?}");
    assert_eq!(result["deleted"]["summaries_deleted"], summaries_gone);
    let after: BTreeSet<PathBuf> = files_below(&repo_dir).into_iter().collect();
    let gone: BTreeSet<PathBuf> = before.difference(&after).cloned().collect();
    assert_eq!(gone, expected_gone, "exactly the planned files are gone");
    assert!(after.is_subset(&before), "nothing new appeared");
    assert!(
        !repo_dir.join("backups").join(&ids[0]).exists(),
        "the deleted backup's folder is gone"
    );

    let listed = walarch_as_postgres(&bin, &[], &["--repo", &repo, "--json", "backups"]).json();
    let remaining: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(remaining, [ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(listed["incomplete"], serde_json::json!([]), "{listed}");

    let verify = walarch_as_postgres(&bin, &[], &["--repo", &repo, "--json", "verify"]);
    assert_eq!(verify.code, 0, "verify after retention: {verify:?}");

    // Every point of the remaining window is still reachable: `plan` from its start (just
    // after the second backup finished) through its middle to just before the last commit;
    // a time before it, whose backup was deleted, is not.
    let info = walarch_as_postgres(&bin, &[], &["--repo", &repo, "--json", "info"]).json();
    let windows = info["recoverable_windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{info}");
    let window = &windows[0];
    assert_eq!(window["backup"], ids[1].as_str(), "{info}");
    let time = |key: &str| {
        chrono::DateTime::parse_from_rfc3339(window[key].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let (first, last) = (time("start_time"), time("end_time"));
    let millis = chrono::TimeDelta::milliseconds;
    let third_stopped =
        chrono::DateTime::parse_from_rfc3339(backups[2]["stopped_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
    for point in [
        first + millis(1),
        first + (last - first) / 2,
        last - millis(1),
    ] {
        // The newest backup that finished before the point.
        let expected = if third_stopped < point {
            &ids[2]
        } else {
            &ids[1]
        };
        let point = point.to_rfc3339();
        let plan = walarch_as_postgres(
            &bin,
            &[],
            &["--repo", &repo, "--json", "plan", "--target-time", &point],
        );
        assert_eq!(plan.code, 0, "{point} lies in the window: {plan:?}");
        assert_eq!(plan.json()["backup"]["id"], expected.as_str(), "{point}");
    }
    let latest = walarch_as_postgres(&bin, &[], &["--repo", &repo, "plan"]);
    assert_eq!(latest.code, 0, "{latest:?}");
    let before_window = (first - millis(1)).to_rfc3339();
    let gone = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", &repo, "plan", "--target-time", &before_window],
    );
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(
        gone.stderr.contains("no backup finished before"),
        "{gone:?}"
    );

    let again = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", &repo, "--json", "retention", "--keep", "2"],
    );
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["deleted"]["wal_files_deleted"], 0);
    // Plans since the first run stored summaries of the WAL they read; none of the rest went.
    let now: BTreeSet<PathBuf> = files_below(&repo_dir).into_iter().collect();
    assert!(after.is_subset(&now), "a second run has nothing to do");
    for new in now.difference(&after) {
        assert!(new.starts_with("summaries"), "{new:?}");
        let (timeline, segment) = wal_position(new).unwrap();
        assert!(timeline == 1 && segment >= second_start, "{new:?}");
    }

    restore_and_check(&scratch, &bin, &repo, &ids[1], 2);
    restore_and_check(&scratch, &bin, &repo, &ids[2], 3);

    // Issue 10, item 2, as a user hit it: the newest backup's parts are gone but its
    // manifest remains. It is reported as damaged, not listed as a backup, fails verify, is
    // never kept by retention, and `restore` (latest) uses the whole backup before it.
    let newest_parts = repo_dir.join("backups").join(&ids[2]).join("data");
    std::fs::remove_dir_all(&newest_parts).unwrap();
    let listed = walarch_as_postgres(&bin, &[], &["--repo", &repo, "--json", "backups"]).json();
    let remaining: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(remaining, [ids[1].as_str()], "{listed}");
    assert_eq!(listed["damaged"][0]["id"], ids[2].as_str(), "{listed}");
    let verify = walarch_as_postgres(&bin, &[], &["--repo", &repo, "verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify
            .stdout
            .contains(&format!("backup {}: FAILED", ids[2])),
        "{verify:?}"
    );
    let keep_one = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", &repo, "--json", "retention", "--keep", "1"],
    );
    assert_eq!(keep_one.code, 0, "{keep_one:?}");
    let result = keep_one.json();
    assert_eq!(result["deleted"]["backups_deleted"], serde_json::json!([]));
    assert_eq!(
        result["deleted"]["damaged_deleted"],
        serde_json::json!([ids[2]])
    );
    assert!(
        repo_dir
            .join("backups")
            .join(&ids[1])
            .join("manifest.json")
            .is_file(),
        "the only restorable backup stays"
    );
    let target = scratch.subdir("restore-latest").join("data");
    let run = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo",
            &repo,
            "--json",
            "restore",
            "--pgdata",
            target.to_str().unwrap(),
            "--target",
            "immediate",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["backup"], ids[1].as_str(), "{run:?}");
    eprintln!("e2e_retention took {:?}", started.elapsed());
}
