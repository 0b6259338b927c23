//! `walarch check` with a real PostgreSQL 15: passes on a server archiving into the
//! repository (settings name it, a forced WAL switch arrives, the newest backup is restorable),
//! and fails naming the cause when archive_command points at another repository and when the
//! store is down.

use walarch_tests::{Cluster, Scratch, WalarchRun, walarch, walarch_backup, walarch_binary};

fn item<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name} item: {run}"))
}

/// The report (the first JSON line: a failed check also prints the error object).
fn report(run: &WalarchRun) -> serde_json::Value {
    let first = run.stdout.lines().next().unwrap_or_default();
    serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

#[test]
fn check_passes_on_a_working_archive_and_names_what_is_broken() {
    let scratch = Scratch::new("check");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let repo = format!("file://{}", repo_dir.display());
    let mut primary = Cluster::init(&scratch, "primary", 1);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\nwal_level = replica\n",
        bin.display()
    ));
    primary.start_and_wait();
    let conninfo = primary.conninfo();
    let check = |repo: &str, extra: &[&str]| {
        let mut args = vec!["--repo", repo];
        args.extend_from_slice(extra);
        args.extend(["--json", "check", "--dbname", &conninfo, "--timeout", "20"]);
        walarch(&bin, &[], &args)
    };

    // Before any backup: archiving works, the backup item fails.
    let run = check(&repo, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let result = report(&run);
    assert_eq!(item(&result, "archiving")["status"], "ok", "{result}");
    assert_eq!(item(&result, "backup")["status"], "failed", "{result}");

    // Healthy: everything ok (restore_command is not set on a primary: a warning).
    let backup = walarch_backup(&bin, &[], &repo, &primary);
    assert_eq!(backup.code, 0, "{backup:?}");
    let run = check(&repo, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let result = report(&run);
    assert_eq!(result["passed"], true, "{result}");
    for name in [
        "server",
        "repository",
        "archive_command",
        "archiving",
        "backup",
    ] {
        assert_eq!(item(&result, name)["status"], "ok", "{name}: {result}");
    }
    assert_eq!(
        item(&result, "restore_command")["status"],
        "warning",
        "{result}"
    );
    let human = walarch(
        &bin,
        &[],
        &["--repo", &repo, "check", "--dbname", &conninfo],
    );
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.contains("ok       archiving"), "{human:?}");
    eprintln!("{}", human.stdout);

    // archive_command points at another repository: named, and the segment does not arrive.
    let other = scratch.subdir("other-repo");
    primary.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{} --repo file://{} wal-push %p'",
        bin.display(),
        other.display()
    ));
    primary.sql("SELECT pg_reload_conf()");
    // Until the archiver runs the new command and the push-ahead worker started for the old
    // repository has gone idle, a switched segment may still reach the old one.
    walarch_tests::wait_for(
        "segments to go to the other repository only",
        std::time::Duration::from_secs(120),
        || {
            let switched = primary.sql(
                "SELECT pg_walfile_name(pg_create_restore_point('settle')) || ' ' || pg_switch_wal()::text",
            );
            let segment = switched.split(' ').next().unwrap().to_owned();
            std::thread::sleep(std::time::Duration::from_secs(3));
            let named = |dir: &std::path::Path| {
                walarch_tests::files_below(dir)
                    .iter()
                    .any(|f| f.to_string_lossy().contains(&segment))
            };
            (named(&other) && !named(&repo_dir)).then_some(())
        },
    );
    let run = check(&repo, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let result = report(&run);
    let archive_command = item(&result, "archive_command");
    assert_eq!(archive_command["status"], "failed", "{result}");
    assert!(
        archive_command["detail"]
            .as_str()
            .unwrap()
            .contains(other.to_str().unwrap()),
        "{result}"
    );
    assert_eq!(item(&result, "archiving")["status"], "failed", "{result}");
    assert!(run.stderr.contains("check failed"), "{run:?}");

    // The store is down: the repository item fails with the store's error, nothing else is tried.
    let down = format!("http://127.0.0.1:{}", walarch_tests::free_port());
    let run = walarch(
        &bin,
        &[
            ("AWS_ACCESS_KEY_ID".into(), "x".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "y".into()),
        ],
        &[
            "--repo",
            "s3://bucket/main",
            "--s3-endpoint",
            &down,
            "--s3-allow-http",
            "true",
            "--retries",
            "1",
            "--json",
            "check",
            "--dbname",
            &conninfo,
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let result = report(&run);
    let repository = item(&result, "repository");
    assert_eq!(repository["status"], "failed", "{result}");
    assert!(
        repository["detail"].as_str().unwrap().contains("127.0.0.1"),
        "names the store: {result}"
    );
    assert_eq!(item(&result, "archiving")["status"], "failed", "{result}");
}
