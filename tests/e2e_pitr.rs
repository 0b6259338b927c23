//! Point-in-time recovery drills with a real PostgreSQL 15: rows are written one transaction
//! at a time, a target is noted, a destructive statement runs, writing goes on; then
//! `walarch restore --start` recovers to the target and the database must hold exactly the
//! rows committed up to it. By time, LSN, xid, named restore point and `immediate`, and by
//! time on timeline 2 after a failover (recovery follows 00000002.history). `plan` must
//! choose the right backup, and must name a deliberately deleted segment, with `restore`
//! refusing to start; `info` must report a recoverable window that ends at the last commit
//! actually archived.

use std::time::{Duration, Instant};

use walarch_tests::{
    Cluster, Scratch, run_ok, wait_for, walarch, walarch_as_postgres, walarch_backup,
    walarch_binary,
};

/// Every row, in order, with its phase: the state a drill must get back exactly.
const SNAPSHOT_SQL: &str =
    "select coalesce(string_agg(id || ':' || phase, ',' order by id), '') from drill";

/// Inserts rows `from..=to`, one committed transaction each.
fn write_rows(cluster: &Cluster, from: u32, to: u32, phase: &str) {
    cluster.sql(&format!(
        "do $$ begin for i in {from}..{to} loop \
         insert into drill (id, phase) values (i, '{phase}'); commit; end loop; end $$"
    ));
}

/// Some megabytes of WAL, so that targets lie several (1 MiB) segments apart.
fn churn(cluster: &Cluster) {
    cluster.sql(
        "insert into filler select g, repeat(md5(g::text), 16) from generate_series(1, 4000) g",
    );
}

/// The server's clock now, with its zone, to microseconds.
fn server_time(cluster: &Cluster) -> String {
    cluster.sql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    )
}

/// A pause long enough that no commit's timestamp falls on the wrong side of a noted time.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

struct Drill<'a> {
    name: &'a str,
    args: Vec<String>,
    expected_rows: String,
    expected_backup: &'a str,
    /// What the server should be once recovery reached its target.
    expected_state: &'a str,
}

struct Setup {
    scratch: Scratch,
    bin: std::path::PathBuf,
    repo: String,
}

impl Setup {
    fn walarch(&self, args: &[&str]) -> walarch_tests::WalarchRun {
        let mut all = vec!["--repo", self.repo.as_str(), "--json"];
        all.extend_from_slice(args);
        walarch_as_postgres(&self.bin, &[], &all)
    }

    fn backup(&self, cluster: &Cluster) -> String {
        let run = walarch_backup(&self.bin, &[], &self.repo, cluster);
        assert_eq!(run.code, 0, "backup: {run:?}");
        run.json()["id"].as_str().unwrap().to_owned()
    }

    /// Restores for `drill` with `--start`, checks the rows, and reports the times.
    fn run_drill(&self, drill: &Drill) {
        let dir = self.scratch.subdir(drill.name);
        let data = dir.join("data");
        let port = walarch_tests::free_port();
        let mut args: Vec<String> = vec![
            "restore".into(),
            "--pgdata".into(),
            data.to_str().unwrap().into(),
            "--start".into(),
            "--pg-bin".into(),
            walarch_tests::pg::PG_BIN.into(),
            "--start-timeout".into(),
            "300".into(),
            "--set".into(),
            format!("port={port}"),
            "--set".into(),
            format!("unix_socket_directories={}", dir.display()),
            "--set".into(),
            "listen_addresses=127.0.0.1".into(),
            // A drill's copy must not archive anywhere (its source's repository refuses it
            // anyway, see the restore marker).
            "--set".into(),
            "archive_mode=off".into(),
        ];
        args.extend(drill.args.iter().cloned());
        let started = Instant::now();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = self.walarch(&refs);
        let wall = started.elapsed().as_secs_f64();
        let log =
            std::fs::read_to_string(data.join("log/walarch-recovery.log")).unwrap_or_default();
        assert_eq!(run.code, 0, "{}: {run:?}\n{log}", drill.name);
        let result = run.json();
        let restored = Cluster::adopt(data.clone(), port);
        assert_eq!(
            result["plan"]["backup"]["id"], drill.expected_backup,
            "{}: backup chosen\n{result}",
            drill.name
        );
        assert_eq!(
            result["recovery"]["state"], drill.expected_state,
            "{}\n{result}",
            drill.name
        );
        if drill.expected_state == "shut down" {
            assert!(
                !data.join("postmaster.pid").exists(),
                "{}: the server stopped at the target",
                drill.name
            );
            eprintln!(
                "drill {:<10} restore {:.2} s + recovery {:.2} s (walarch wall {wall:.2} s): shut down at the target",
                drill.name,
                result["seconds"].as_f64().unwrap(),
                result["recovery"]["seconds"].as_f64().unwrap(),
            );
            return;
        }
        let rows = restored.sql(SNAPSHOT_SQL);
        assert_eq!(
            rows, drill.expected_rows,
            "{}: the restored rows must be exactly those committed up to the target\n{result}\n{log}",
            drill.name
        );
        assert_eq!(
            result["plan"]["stop"]["replay_end"], result["recovery"]["replayed_to"],
            "{}: the plan's stop LSN is where recovery stopped\n{result}",
            drill.name
        );
        let recovery_seconds = result["recovery"]["seconds"].as_f64().unwrap();
        eprintln!(
            "drill {:<10} restore {:.2} s + recovery {:.2} s (walarch wall {:.2} s): {}",
            drill.name,
            result["seconds"].as_f64().unwrap(),
            recovery_seconds,
            wall,
            result["recovery"]["stop_message"]
        );
        drop(restored);
    }
}

fn wait_caught_up(primary: &Cluster, standby: &Cluster) {
    let target = primary.sql("select pg_current_wal_lsn()");
    wait_for("the standby to replay", Duration::from_secs(120), || {
        standby
            .try_sql(&format!(
                "select pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            ))
            .filter(|r| r == "t")
    });
}

#[test]
fn pitr_drills_by_time_lsn_xid_name_immediate_and_across_a_promotion() {
    let scratch = Scratch::new("pitr");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let setup = Setup {
        repo: format!("file://{}", repo_dir.display()),
        bin,
        scratch,
    };

    let mut primary = Cluster::init(&setup.scratch, "primary", 1);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {} wal-push %p'\n\
         wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n\
         autovacuum = off\ntrack_commit_timestamp = on\n",
        setup.bin.display(),
        setup.repo
    ));
    primary.start_and_wait();
    primary.sql("create table drill (id int primary key, phase text not null)");
    primary.sql("create table filler (g int, payload text)");
    write_rows(&primary, 1, 5, "seed");
    let expected_immediate = primary.sql(SNAPSHOT_SQL);
    let backup1 = setup.backup(&primary);

    // Time: T1 between two commits, then a destructive DELETE, then more writes.
    write_rows(&primary, 6, 10, "a");
    churn(&primary);
    settle();
    let time1 = server_time(&primary);
    let expected_time = primary.sql(SNAPSHOT_SQL);
    settle();
    primary.sql("delete from drill where id <= 8");
    write_rows(&primary, 11, 15, "after-delete");
    churn(&primary);

    // LSN: the insert position after row 18 committed, then an UPDATE of every row.
    write_rows(&primary, 16, 18, "b");
    let expected_lsn = primary.sql(SNAPSHOT_SQL);
    let lsn = primary.sql("select pg_current_wal_insert_lsn()");
    primary.sql("update drill set phase = 'clobbered'");
    write_rows(&primary, 19, 20, "after-update");
    churn(&primary);

    // Xid: the transaction that inserted row 21, then a DELETE of everything.
    let xid = primary.sql("insert into drill values (21, 'xid') returning txid_current()");
    let expected_xid = primary.sql(SNAPSHOT_SQL);
    primary.sql("delete from drill");
    write_rows(&primary, 22, 23, "after-xid");
    churn(&primary);

    // A second backup: time targets after it must be recovered from it.
    let backup2 = setup.backup(&primary);

    // Named restore point, then a TRUNCATE.
    write_rows(&primary, 24, 25, "c");
    let expected_name = primary.sql(SNAPSHOT_SQL);
    primary.sql("select pg_create_restore_point('before-truncate')");
    primary.sql("truncate drill");
    write_rows(&primary, 26, 27, "after-truncate");
    churn(&primary);
    primary.switch_and_wait_archived(Duration::from_secs(120));

    // Failover: a streaming standby takes over and becomes timeline 2.
    let standby_data = setup.scratch.subdir("standby").join("data");
    primary.standby_copy(&standby_data);
    let mut standby = Cluster::from_data_dir(standby_data);
    standby.start();
    standby.wait_ready(Duration::from_secs(60));
    wait_caught_up(&primary, &standby);
    primary.stop();
    standby.sql("select pg_promote()");
    wait_for("the promotion", Duration::from_secs(60), || {
        standby
            .try_sql("select pg_is_in_recovery()")
            .filter(|r| r == "f")
    });
    write_rows(&standby, 28, 30, "tl2");
    churn(&standby);
    settle();
    let time2 = server_time(&standby);
    let expected_tl2 = standby.sql(SNAPSHOT_SQL);
    settle();
    standby.sql("delete from drill where phase <> 'tl2'");
    write_rows(&standby, 31, 32, "after-tl2");
    standby.switch_and_wait_archived(Duration::from_secs(120));
    assert!(
        repo_dir.join("wal/00000002.history").is_file(),
        "the promoted standby archived its history file"
    );

    // info: the recoverable window of timeline 2 ends at the last commit archived (row 32).
    let info = setup.walarch(&["info"]);
    assert_eq!(info.code, 0, "{info:?}");
    let info = info.json();
    let windows = info["recoverable_windows"].as_array().unwrap();
    let tl2 = windows
        .iter()
        .find(|w| w["timeline"] == 2)
        .unwrap_or_else(|| panic!("a window on timeline 2: {info}"));
    let end_time = tl2["end_time"].as_str().unwrap();
    assert_eq!(
        standby.sql(&format!(
            "select pg_xact_commit_timestamp(xmin) = '{end_time}'::timestamptz from drill where id = 32"
        )),
        "t",
        "window end {end_time} is the commit time of the last archived transaction\n{info}"
    );
    assert_eq!(tl2["backup"], backup1.as_str(), "{info}");
    assert!(
        windows.iter().any(|w| w["timeline"] == 1),
        "timeline 1 has a window too: {info}"
    );
    standby.stop();

    // Plans: an xid committed before the newest backup cannot be reached from it.
    let plan = setup.walarch(&["plan", "--target-xid", &xid]);
    assert_ne!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stderr.contains("older backup"),
        "the refusal says what to do: {plan:?}"
    );
    let plan = setup.walarch(&["plan", "--target-time", &time2]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let plan = plan.json();
    assert_eq!(plan["backup"]["id"], backup2.as_str(), "{plan}");
    assert_eq!(plan["target_timeline"], 2, "{plan}");
    assert_eq!(plan["history_file"], "00000002.history", "{plan}");
    let timelines: Vec<_> = plan["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(timelines, vec![1, 2], "{plan}");

    let drills = [
        Drill {
            name: "time",
            args: vec![
                "--target-time".into(),
                time1.clone(),
                "--target-action".into(),
                "promote".into(),
            ],
            expected_rows: expected_time,
            expected_backup: &backup1,
            expected_state: "promoted",
        },
        Drill {
            name: "lsn",
            args: vec!["--target-lsn".into(), lsn.clone()],
            expected_rows: expected_lsn,
            expected_backup: &backup1,
            expected_state: "paused",
        },
        Drill {
            name: "xid",
            args: vec![
                "--target-xid".into(),
                xid.clone(),
                "--backup".into(),
                backup1.clone(),
                "--target-action".into(),
                "promote".into(),
            ],
            expected_rows: expected_xid,
            expected_backup: &backup1,
            expected_state: "promoted",
        },
        Drill {
            name: "name",
            args: vec!["--target-name".into(), "before-truncate".into()],
            expected_rows: expected_name,
            expected_backup: &backup2,
            expected_state: "paused",
        },
        Drill {
            name: "immediate",
            args: vec![
                "--target".into(),
                "immediate".into(),
                "--backup".into(),
                backup1.clone(),
            ],
            expected_rows: expected_immediate,
            expected_backup: &backup1,
            expected_state: "paused",
        },
        Drill {
            name: "shutdown",
            args: vec![
                "--target-lsn".into(),
                lsn.clone(),
                "--target-action".into(),
                "shutdown".into(),
            ],
            expected_rows: String::new(),
            expected_backup: &backup1,
            expected_state: "shut down",
        },
        Drill {
            name: "timeline2",
            args: vec![
                "--target-time".into(),
                time2.clone(),
                "--target-action".into(),
                "promote".into(),
            ],
            expected_rows: expected_tl2,
            expected_backup: &backup2,
            expected_state: "promoted",
        },
    ];
    for drill in &drills {
        setup.run_drill(drill);
    }

    // A deliberately deleted segment: plan names it and fails; restore refuses to start.
    let broken_dir = setup.scratch.path().join("broken-repo");
    run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&repo_dir)
            .arg(&broken_dir),
    );
    let good = setup.walarch(&["plan", "--target-time", &time1]);
    assert_eq!(good.code, 0, "{good:?}");
    let good = good.json();
    let first = good["timelines"][0]["first_segment"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = good["timelines"][0]["last_segment"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = next_segment_name(&first);
    let damaged = previous_segment_name(&last);
    assert!(
        damaged > victim,
        "the drill spans enough segments: {first} .. {last}"
    );
    damaged_segment_is_refused(&setup, &repo_dir, &damaged, &time1);
    let victim_path = broken_dir
        .join("wal")
        .join(&victim[..16])
        .join(format!("{victim}.zst"));
    std::fs::remove_file(&victim_path)
        .unwrap_or_else(|e| panic!("remove {}: {e}", victim_path.display()));
    let broken = format!("file://{}", broken_dir.display());
    let plan = walarch(
        &setup.bin,
        &[],
        &["--repo", &broken, "plan", "--target-time", &time1],
    );
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(&victim) && plan.stderr.contains("missing"),
        "plan names the deleted segment: {plan:?}"
    );
    let target = setup.scratch.subdir("refused").join("data");
    let restore = walarch_as_postgres(
        &setup.bin,
        &[],
        &[
            "--repo",
            &broken,
            "restore",
            "--pgdata",
            target.to_str().unwrap(),
            "--target-time",
            &time1,
        ],
    );
    assert_eq!(restore.code, 1, "{restore:?}");
    assert!(restore.stderr.contains(&victim), "{restore:?}");
    assert!(
        !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
        "nothing was restored"
    );
}

/// A segment on the way to a target whose WAL is damaged (a valid zstd frame, a record with
/// a bad CRC inside): PostgreSQL would end recovery there, so plan must refuse, naming it.
fn damaged_segment_is_refused(setup: &Setup, repo_dir: &std::path::Path, victim: &str, time: &str) {
    let damaged_dir = setup.scratch.path().join("damaged-repo");
    run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(repo_dir)
            .arg(&damaged_dir),
    );
    let path = damaged_dir
        .join("wal")
        .join(&victim[..16])
        .join(format!("{victim}.zst"));
    let compressed = std::fs::read(&path).unwrap();
    let out = run_ok(
        std::process::Command::new("zstd")
            .args(["-d", "-q", "-c"])
            .arg(&path),
    );
    let mut segment = out.stdout;
    assert_eq!(
        segment.len(),
        compressed.len().max(1 << 20),
        "a 1 MiB segment"
    );
    segment[300_000] ^= 0x5A;
    let raw = damaged_dir.join("raw");
    std::fs::write(&raw, &segment).unwrap();
    std::fs::remove_file(&path).unwrap();
    run_ok(
        std::process::Command::new("zstd")
            .args(["-q", "-1", "-o"])
            .arg(&path)
            .arg(&raw),
    );
    let damaged = format!("file://{}", damaged_dir.display());
    let plan = walarch(
        &setup.bin,
        &[],
        &["--repo", &damaged, "plan", "--target-time", time],
    );
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(victim) && plan.stderr.contains("valid"),
        "plan names the damaged segment: {plan:?}"
    );
}

/// The WAL file name after `name` (same timeline; 1 MiB segments never wrap in this test).
fn next_segment_name(name: &str) -> String {
    let segment = u32::from_str_radix(&name[16..], 16).unwrap();
    format!("{}{:08X}", &name[..16], segment + 1)
}

fn previous_segment_name(name: &str) -> String {
    let segment = u32::from_str_radix(&name[16..], 16).unwrap();
    format!("{}{:08X}", &name[..16], segment - 1)
}
