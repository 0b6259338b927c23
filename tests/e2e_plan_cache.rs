//! Segment summaries with a real PostgreSQL 15 (issue 16, part 4): the first `walarch plan`
//! to an xid decodes the WAL and stores what it read under `summaries/`; the second plan to
//! the same xid downloads no WAL at all and finds the same stop record; `restore --start` to
//! that xid (whose own plan also reads the summaries) still recovers exactly the rows
//! committed by then, PostgreSQL reading the real segments. `info` and `verify` are
//! undisturbed by `summaries/`.

use std::time::{Duration, Instant};

use walarch_tests::{Cluster, Scratch, walarch_as_postgres, walarch_backup, walarch_binary};

const SNAPSHOT_SQL: &str =
    "select coalesce(string_agg(id || ':' || phase, ',' order by id), '') from drill";

fn write_rows(cluster: &Cluster, from: u32, to: u32, phase: &str) {
    cluster.sql(&format!(
        "do $$ begin for i in {from}..{to} loop \
         insert into drill (id, phase) values (i, '{phase}'); commit; end loop; end $$"
    ));
}

/// Some megabytes of WAL: the target lies several (1 MiB) segments after the backup.
fn churn(cluster: &Cluster) {
    cluster.sql(
        "insert into filler select g, repeat(md5(g::text), 16) from generate_series(1, 4000) g",
    );
}

#[test]
fn a_second_plan_reads_summaries_instead_of_wal_and_restore_still_recovers_exactly() {
    let scratch = Scratch::new("plan-cache");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let repo = format!("file://{}", repo_dir.display());
    let walarch = |args: &[&str]| {
        let mut all = vec!["--repo", repo.as_str()];
        all.extend_from_slice(args);
        walarch_as_postgres(&bin, &[], &all)
    };

    let mut primary = Cluster::init(&scratch, "primary", 1);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\n\
         wal_level = replica\nautovacuum = off\n",
        bin.display(),
    ));
    primary.start_and_wait();
    primary.sql("create table drill (id int primary key, phase text not null)");
    primary.sql("create table filler (g int, payload text)");
    write_rows(&primary, 1, 5, "seed");
    let backup = walarch_backup(&bin, &[], &repo, &primary);
    assert_eq!(backup.code, 0, "backup: {backup:?}");
    for _ in 0..3 {
        write_rows(&primary, 6, 6, "churn");
        primary.sql("delete from drill where id = 6");
        churn(&primary);
    }
    let xid = primary.sql("insert into drill values (100, 'xid') returning txid_current()");
    let expected_rows = primary.sql(SNAPSHOT_SQL);
    primary.sql("delete from drill");
    write_rows(&primary, 200, 210, "after-xid");
    churn(&primary);
    primary.switch_and_wait_archived(Duration::from_secs(120));
    primary.stop();

    // First plan: decodes every segment from the backup's start to the xid's commit.
    let started = Instant::now();
    let cold = walarch(&["--json", "plan", "--target-xid", &xid]);
    let cold_seconds = started.elapsed().as_secs_f64();
    assert_eq!(cold.code, 0, "{cold:?}");
    let cold = cold.json();
    let segments = cold["wal_segments"].as_u64().unwrap();
    assert!(segments >= 4, "the target lies segments away: {cold}");
    assert_eq!(
        cold["wal_segments_decoded"].as_u64(),
        Some(segments),
        "{cold}"
    );
    assert_eq!(cold["wal_segments_from_summaries"], 0, "{cold}");
    assert_eq!(cold["summaries_written"].as_u64(), Some(segments), "{cold}");
    assert!(cold["wal_bytes_downloaded"].as_u64().unwrap() > 0, "{cold}");
    assert!(repo_dir.join("summaries").is_dir());

    // Second plan: no WAL downloaded, the same stop.
    let started = Instant::now();
    let warm = walarch(&["--json", "plan", "--target-xid", &xid]);
    let warm_seconds = started.elapsed().as_secs_f64();
    assert_eq!(warm.code, 0, "{warm:?}");
    let warm = warm.json();
    assert_eq!(warm["wal_bytes_downloaded"], 0, "{warm}");
    assert_eq!(warm["wal_segments_decoded"], 0, "{warm}");
    assert_eq!(warm["wal_segments_from_summaries"].as_u64(), Some(segments));
    assert_eq!(warm["stop"], cold["stop"]);
    assert_eq!(warm["stop"]["xid"].as_u64(), Some(xid.parse().unwrap()));
    assert_eq!(warm["backup"], cold["backup"]);
    assert_eq!(warm["timelines"], cold["timelines"]);
    eprintln!(
        "plan to xid {xid} over {segments} segments: cold {cold_seconds:.2} s ({} B of WAL), warm {warm_seconds:.2} s (0 B)",
        cold["wal_bytes_downloaded"]
    );

    // What a person reads.
    let human = walarch(&["plan", "--target-xid", &xid]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human.stdout.contains(&format!(
            "read 0 B of WAL (0 segments decoded, {segments} from summaries)"
        )),
        "{human:?}"
    );

    // Listings, verify and info do not mistake summaries for WAL or backups.
    let info = walarch(&["--json", "info"]);
    assert_eq!(info.code, 0, "{info:?}");
    let verify = walarch(&["--json", "verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");

    // Restore to the xid: its plan reads the summaries, PostgreSQL the real segments.
    let dir = scratch.subdir("restored");
    let data = dir.join("data");
    let port = walarch_tests::free_port();
    let data_arg = data.to_str().unwrap().to_owned();
    let port_arg = format!("port={port}");
    let socket_arg = format!("unix_socket_directories={}", dir.display());
    let run = walarch(&[
        "--json",
        "restore",
        "--pgdata",
        &data_arg,
        "--start",
        "--pg-bin",
        walarch_tests::pg::PG_BIN,
        "--start-timeout",
        "300",
        "--set",
        &port_arg,
        "--set",
        &socket_arg,
        "--set",
        "listen_addresses=127.0.0.1",
        "--set",
        "archive_mode=off",
        "--target-xid",
        &xid,
        "--target-action",
        "promote",
    ]);
    let log = std::fs::read_to_string(data.join("log/walarch-recovery.log")).unwrap_or_default();
    assert_eq!(run.code, 0, "{run:?}\n{log}");
    let result = run.json();
    assert_eq!(result["plan"]["wal_bytes_downloaded"], 0, "{result}");
    assert_eq!(result["plan"]["stop"], cold["stop"], "{result}");
    let restored = Cluster::adopt(data.clone(), port);
    assert_eq!(
        restored.sql(SNAPSHOT_SQL),
        expected_rows,
        "the restored rows are exactly those committed up to the xid\n{result}\n{log}"
    );
    assert_eq!(
        result["plan"]["stop"]["replay_end"], result["recovery"]["replayed_to"],
        "the plan's stop is where recovery stopped\n{result}"
    );
    drop(restored);
}
