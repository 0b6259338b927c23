//! `walarch drill` with a real PostgreSQL 15: a drill to a time passes (the copy holds exactly
//! the rows committed before the target, amcheck and a `--check` query pass, RTO and RPO are
//! reported), and fails for each reason — a `--check` that returns false, the copy never
//! reaching its target (a setting of the backup that PostgreSQL cannot start with), a
//! missing segment — with the scratch directory removed every time and nothing written into
//! the repository but the drill reports. `info` shows the last successful drill.

use std::path::Path;
use std::time::Duration;

use walarch_tests::{
    Cluster, Scratch, WalarchRun, files_below, run_ok, walarch, walarch_as_postgres,
    walarch_backup, walarch_binary,
};

/// Inserts rows `from..=to`, one committed transaction each.
fn write_rows(cluster: &Cluster, from: u32, to: u32) {
    cluster.sql(&format!(
        "do $$ begin for i in {from}..{to} loop \
         insert into drill (id) values (i); commit; end loop; end $$"
    ));
}

/// The report (the first JSON line: a failed drill also prints the error object).
fn report(run: &WalarchRun) -> serde_json::Value {
    let first = run.stdout.lines().next().unwrap_or_default();
    serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report}"))
}

/// Nothing of the drill is left in its scratch parent, and no server runs from there.
fn assert_cleaned_up(scratch: &Path) {
    let left: Vec<_> = std::fs::read_dir(scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    let running = std::process::Command::new("pgrep")
        .args(["-f", &scratch.display().to_string()])
        .output()
        .unwrap();
    assert!(
        running.stdout.is_empty(),
        "a server of the drill still runs: {}",
        String::from_utf8_lossy(&running.stdout)
    );
}

#[test]
fn drill_proves_a_recovery_and_fails_for_each_reason() {
    let scratch = Scratch::new("drill");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let repo = format!("file://{}", repo_dir.display());
    let drills = scratch.subdir("drills");
    scratch.give_to_postgres(&drills);
    let mut source = Cluster::init(&scratch, "source", 1);
    source.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\nwal_level = replica\n",
        bin.display()
    ));
    source.start_and_wait();
    source.sql("create table drill (id int primary key, at timestamptz default clock_timestamp())");
    write_rows(&source, 1, 50);
    let backup = walarch_backup(&bin, &[], &repo, &source);
    assert_eq!(backup.code, 0, "{backup:?}");
    let backup = backup.json()["id"].as_str().unwrap().to_owned();
    write_rows(&source, 51, 100);
    std::thread::sleep(Duration::from_millis(300));
    let target = source.sql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_millis(300));
    write_rows(&source, 101, 150);
    source.sql("insert into drill select g from generate_series(1000, 40000) g");
    // A backup PostgreSQL cannot start from on this host: a library that is not installed.
    source.sql("ALTER SYSTEM SET shared_preload_libraries = 'walarch_no_such_library'");
    let unstartable = walarch_backup(&bin, &[], &repo, &source);
    assert_eq!(unstartable.code, 0, "{unstartable:?}");
    let unstartable = unstartable.json()["id"].as_str().unwrap().to_owned();
    source.switch_and_wait_archived(Duration::from_secs(60));
    // From here the repository holds still: whatever appears in it is the drills'.
    source.stop();
    let before = files_below(&repo_dir);

    let drill = |extra: &[&str]| {
        let mut args = vec![
            "--repo",
            repo.as_str(),
            "--json",
            "drill",
            "--scratch",
            drills.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        walarch_as_postgres(&bin, &[], &args)
    };

    // A drill that passes: exactly the rows committed before the target.
    let passed = drill(&[
        "--target-time",
        &target,
        "--check",
        "SELECT count(*) = 100 AND max(id) = 100 FROM drill",
    ]);
    assert_eq!(passed.code, 0, "{passed:?}");
    let passed = report(&passed);
    assert_eq!(passed["ok"], true, "{passed}");
    for name in ["connect", "databases", "amcheck"] {
        assert_eq!(check(&passed, name)["status"], "ok", "{name}: {passed}");
    }
    assert!(
        check(&passed, "amcheck")["detail"]
            .as_str()
            .unwrap()
            .contains("indexes checked"),
        "{passed}"
    );
    assert_eq!(
        check(
            &passed,
            "check: SELECT count(*) = 100 AND max(id) = 100 FROM drill"
        )["status"],
        "ok",
        "{passed}"
    );
    let restore = passed["restore_seconds"].as_f64().unwrap();
    let recovery = passed["recovery_seconds"].as_f64().unwrap();
    let rto = passed["rto_seconds"].as_f64().unwrap();
    assert!(restore > 0.0 && recovery > 0.0, "{passed}");
    assert!((rto - (restore + recovery)).abs() < 1e-6, "{passed}");
    // RPO: the last archived commit is row 40000's, before the drill started; the copy's
    // last commit is row 100's, before the target.
    let behind_now = passed["rpo"]["seconds_behind_now"].as_f64().unwrap();
    assert!(behind_now >= 0.0, "{passed}");
    let behind_target = passed["rpo"]["seconds_behind_target"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&behind_target), "{passed}");
    assert!(passed["backup_bytes"].as_u64().unwrap() > 0, "{passed}");
    assert!(passed["wal_segments"].as_u64().unwrap() > 0, "{passed}");
    assert_eq!(passed["backup"], backup, "{passed}");
    let passed_id = passed["id"].as_str().unwrap().to_owned();
    assert_eq!(
        passed["stored_at"],
        format!("drills/{passed_id}.json"),
        "{passed}"
    );
    assert_cleaned_up(&drills);
    // The human report says it in words.
    let human = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo",
            &repo,
            "drill",
            "--scratch",
            drills.to_str().unwrap(),
            "--target-time",
            &target,
        ],
    );
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human.stdout.contains("passed") && human.stdout.contains("RTO"),
        "{human:?}"
    );
    eprintln!("{}", human.stdout);
    assert_cleaned_up(&drills);

    // A --check that returns false.
    let run = drill(&[
        "--target-time",
        &target,
        "--check",
        "SELECT count(*) = 150 FROM drill",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let failed = report(&run);
    assert_eq!(failed["ok"], false, "{failed}");
    assert_eq!(failed["failed_stage"], "checks", "{failed}");
    let query = check(&failed, "check: SELECT count(*) = 150 FROM drill");
    assert_eq!(query["status"], "failed", "{failed}");
    assert!(
        query["detail"].as_str().unwrap().contains("not true"),
        "{failed}"
    );
    assert!(run.stderr.contains("drill failed"), "{run:?}");
    assert_cleaned_up(&drills);

    // The copy never reaches its target: PostgreSQL cannot start with the backup's settings.
    let run = drill(&["--backup", &unstartable, "--target", "latest"]);
    assert_eq!(run.code, 1, "{run:?}");
    let failed = report(&run);
    assert_eq!(failed["failed_stage"], "recovery", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("walarch_no_such_library"),
        "the error quotes PostgreSQL's reason: {failed}"
    );
    assert_cleaned_up(&drills);

    // A segment recovery needs is missing: the plan names it, nothing is restored.
    let plan = walarch(
        &bin,
        &[],
        &["--repo", &repo, "--json", "plan", "--target-time", &target],
    );
    assert_eq!(plan.code, 0, "{plan:?}");
    let last = plan.json()["timelines"][0]["last_segment"]
        .as_str()
        .unwrap()
        .to_owned();
    let segment = repo_dir
        .join("wal")
        .join(&last[..16])
        .join(format!("{last}.zst"));
    let aside = scratch.path().join("aside.zst");
    std::fs::rename(&segment, &aside).unwrap();
    let run = drill(&["--target-time", &target]);
    std::fs::rename(&aside, &segment).unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    let failed = report(&run);
    assert_eq!(failed["failed_stage"], "plan", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains(&last),
        "the error names the missing segment: {failed}"
    );
    assert!(failed["restore_seconds"].is_null(), "{failed}");
    assert_cleaned_up(&drills);

    // Nothing but the five reports was written into the repository, besides the segment
    // summaries its plans leave for the next plan (a cache of the repository's own WAL).
    let after = files_below(&repo_dir);
    let added: Vec<_> = after
        .iter()
        .filter(|f| !before.contains(f) && !f.starts_with("summaries"))
        .collect();
    assert_eq!(added.len(), 5, "{added:?}");
    assert!(
        added.iter().all(|f| f.starts_with("drills")),
        "only drill reports: {added:?}"
    );
    assert!(before.iter().all(|f| after.contains(f)));

    // info: the last drill failed; the last successful one is named.
    let info = walarch(&bin, &[], &["--repo", &repo, "--json", "info"]);
    assert_eq!(info.code, 0, "{info:?}");
    let info = info.json();
    assert_eq!(info["drills"]["count"], 5, "{info}");
    assert_eq!(info["drills"]["last"]["ok"], false, "{info}");
    assert_eq!(info["drills"]["last_successful"]["ok"], true, "{info}");
    let human = walarch(&bin, &[], &["--repo", &repo, "info"]);
    assert!(
        human.stdout.contains("drill        last passed") && human.stdout.contains("FAILED"),
        "{human:?}"
    );
    // The --keep copy stays, stopped.
    let kept = drill(&["--backup", &backup, "--target", "immediate", "--keep"]);
    assert_eq!(kept.code, 0, "{kept:?}");
    let kept = report(&kept);
    let kept_dir = Path::new(kept["scratch"].as_str().unwrap());
    assert!(kept_dir.join("pgdata/PG_VERSION").is_file(), "{kept}");
    assert!(!kept_dir.join("pgdata/postmaster.pid").exists(), "{kept}");
    run_ok(std::process::Command::new("rm").arg("-rf").arg(kept_dir));
    assert_cleaned_up(&drills);
}
