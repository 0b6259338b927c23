//! Base backups and restores given bad input, with a real PostgreSQL 15: the outcome is a
//! clear error and nothing lost or written where it must not be.
//!
//! - restore into a non-empty directory is refused and the directory left as it was;
//! - a backup part whose tar holds `../` or a symbolic link is refused, nothing written outside
//!   the target;
//! - a corrupted part fails restore (and verify) with a message naming the part and file;
//! - a backup whose WAL never reaches the repository times out without a manifest;
//! - a backup killed with SIGKILL leaves no manifest, is not listed as a backup, and the
//!   server is not left in backup mode (the next backup works);
//! - a data directory that is not the connected server's is refused: another system's, and
//!   the primary's own paused standby (same system identifier, lagging files);
//! - a restore whose take-over record cannot be stored leaves a directory PostgreSQL refuses
//!   to start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use walarch_tests::pg::pg_command;
use walarch_tests::{
    Cluster, Scratch, files_below, free_port, run_ok, wait_for, walarch_as_postgres,
    walarch_as_postgres_command, walarch_binary,
};

fn backups_json(bin: &Path, repo: &str) -> serde_json::Value {
    let run = walarch_as_postgres(bin, &[], &["--repo", repo, "--json", "backups"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

/// Writes a backup `id` into the local repository whose only part is `tar_script`'s output
/// (Python building a tar in `out`), compressed with the zstd CLI, and whose manifest is the
/// `good` manifest with the file list cut to PG_VERSION.
fn craft_backup(repo: &Path, good: &serde_json::Value, id: &str, tar_script: &str) {
    let dir = repo.join("backups").join(id);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let tar = dir.join("data/0.tar");
    run_ok(Command::new("python3").args([
        "-c",
        &format!(
            "import io, tarfile\nout = {:?}\n{tar_script}",
            tar.to_str().unwrap()
        ),
    ]));
    run_ok(
        Command::new("zstd")
            .args(["-q", "--rm", "-o"])
            .arg(dir.join("data/0.tar.zst"))
            .arg(&tar),
    );
    let stored = std::fs::metadata(dir.join("data/0.tar.zst")).unwrap().len();
    let good_id = good["id"].as_str().unwrap();
    std::fs::copy(
        repo.join("backups").join(good_id).join("backup_label"),
        dir.join("backup_label"),
    )
    .unwrap();
    let mut manifest = good.clone();
    manifest["id"] = id.into();
    manifest["tablespaces"] = serde_json::json!([]);
    manifest["directories"] = serde_json::json!([]);
    manifest["files"] =
        serde_json::json!([{"path": "PG_VERSION", "size": 3, "crc32": 0, "mode": 384, "part": 0}]);
    manifest["parts"] =
        serde_json::json!([{"index": 0, "tar_bytes": 10240, "stored_bytes": stored, "files": 1}]);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn backup_and_restore_refuse_bad_input() {
    let scratch = Scratch::new("backup-bad");
    let repo_dir = scratch.subdir("repo");
    let repo = repo_dir.to_str().unwrap().to_owned();
    let bin = walarch_binary(&scratch);
    let mut primary = Cluster::init(&scratch, "primary", 16);
    primary.append_conf(&format!(
        // No push-ahead worker: it would keep archiving for a moment after archive_command
        // is switched to /bin/false below.
        "archive_mode = on\narchive_command = '{} --repo {repo} --push-ahead 0 wal-push %p'\n",
        bin.display()
    ));
    primary.start_and_wait();
    run_ok(&mut primary.pgbench(&["-i", "-q", "-s", "1"]));
    let data = primary.data.to_str().unwrap().to_owned();
    let conninfo = primary.conninfo();
    let backup_args = [
        "--repo",
        repo.as_str(),
        "--json",
        "backup",
        "--pgdata",
        data.as_str(),
        "--dbname",
        conninfo.as_str(),
    ];

    let run = walarch_as_postgres(&bin, &[], &backup_args);
    assert_eq!(run.code, 0, "{run:?}");
    let good_id = run.json()["id"].as_str().unwrap().to_owned();
    let good_manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            repo_dir
                .join("backups")
                .join(&good_id)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();

    // Another cluster's data directory under this server's backup label: refused.
    let other = Cluster::init(&scratch, "other", 16);
    let other_data = other.data.to_str().unwrap().to_owned();
    let mut wrong_dir_args = backup_args;
    wrong_dir_args[5] = other_data.as_str();
    let run = walarch_as_postgres(&bin, &[], &wrong_dir_args);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("belongs to database system"), "{run:?}");

    // Issue 10, item 3: the data directory of the primary's paused standby shares its system
    // identifier, but its files lag behind: a backup of the primary that reads them would
    // restore without the changes the standby has not replayed. Refused, naming the server
    // the files belong to.
    let standby_parent = scratch.subdir("standby");
    let standby_data = standby_parent.join("data");
    primary.standby_copy(&standby_data);
    let mut standby = Cluster::from_data_dir(standby_data.clone());
    standby.start_and_wait();
    standby.sql("select pg_wal_replay_pause()");
    primary.sql("create table after_pause as select 1 as x");
    let standby_dir = standby_data.to_str().unwrap().to_owned();
    let mut standby_args = backup_args;
    standby_args[5] = standby_dir.as_str();
    let run = walarch_as_postgres(&bin, &[], &standby_args);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "holds the files of the server in {standby_dir} on port {}",
            standby.port
        )) && run.stderr.contains("postmaster.pid"),
        "says which server the files belong to: {run:?}"
    );
    drop(standby);

    // Restore into a non-empty directory: refused, the directory untouched.
    let occupied = scratch.subdir("occupied");
    std::fs::write(occupied.join("keep"), "mine").unwrap();
    let run = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo",
            &repo,
            "restore",
            "--pgdata",
            occupied.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("is not empty"), "{run:?}");
    assert_eq!(files_below(&occupied), [Path::new("keep")]);
    assert_eq!(
        std::fs::read_to_string(occupied.join("keep")).unwrap(),
        "mine"
    );

    // Parts that try to write outside the target: refused before anything is written there.
    let cases = [
        (
            "20990101T000000Z",
            "escape-dotdot",
            "t = tarfile.open(out, 'w', format=tarfile.GNU_FORMAT)\n\
             i = tarfile.TarInfo('../escape-dotdot'); i.size = 1\n\
             t.addfile(i, io.BytesIO(b'x'))\nt.close()",
            "not a plain relative path",
        ),
        (
            "20990101T000001Z",
            "escape-link",
            "t = tarfile.open(out, 'w', format=tarfile.GNU_FORMAT)\n\
             i = tarfile.TarInfo('pg_wal2'); i.type = tarfile.SYMTYPE; i.linkname = '..'\n\
             t.addfile(i)\n\
             j = tarfile.TarInfo('pg_wal2/escape-link'); j.size = 1\n\
             t.addfile(j, io.BytesIO(b'x'))\nt.close()",
            "refusing entry of type Symlink",
        ),
    ];
    for (id, escape, script, message) in cases {
        craft_backup(&repo_dir, &good_manifest, id, script);
        let parent = scratch.subdir(&format!("target-{escape}"));
        let target = parent.join("data");
        let run = walarch_as_postgres(
            &bin,
            &[],
            &[
                "--repo",
                &repo,
                "restore",
                "--backup",
                id,
                "--pgdata",
                target.to_str().unwrap(),
            ],
        );
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stderr.contains(message), "{run:?}");
        assert!(
            !parent.join(escape).exists(),
            "{escape} was written outside the target"
        );
        assert!(!scratch.path().join(escape).exists());
        assert!(!target.join("pg_wal2").exists(), "no link was created");
    }

    // A backup whose WAL never reaches the repository is not complete: it times out without
    // a manifest. Then a backup killed with SIGKILL while it waits: no manifest, not listed,
    // and the server is not left in backup mode.
    primary.sql("alter system set archive_command = '/bin/false'");
    primary.sql("select pg_reload_conf()");
    let mut timeout_args = backup_args.to_vec();
    timeout_args.extend(["--wal-timeout", "2"]);
    let run = walarch_as_postgres(&bin, &[], &timeout_args);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("did not reach the repository"),
        "{run:?}"
    );

    let before = backups_json(&bin, &repo);
    let child = walarch_as_postgres_command(&bin, &[], &backup_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start backup");
    let mut child = walarch_tests::KillOnDrop(child);
    // Its files are uploaded once backup_label is; then it waits for WAL that cannot come.
    let killed_id = wait_for(
        "the backup to upload its files",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(repo_dir.join("backups"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .find(|id| {
                    !before["incomplete"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|i| i == id.as_str())
                        && *id != good_id
                        && !id.starts_with("2099")
                        && repo_dir
                            .join("backups")
                            .join(id)
                            .join("backup_label")
                            .exists()
                })
        },
    );
    let pattern = format!("{} --repo {repo} --json backup", bin.display());
    run_ok(Command::new("pkill").args(["-KILL", "-f", &pattern]));
    child.0.wait().unwrap();
    assert!(
        !repo_dir
            .join("backups")
            .join(&killed_id)
            .join("manifest.json")
            .exists()
    );
    let listed = backups_json(&bin, &repo);
    let ids: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&killed_id.as_str()),
        "the killed backup is not a backup: {listed}"
    );
    assert!(ids.contains(&good_id.as_str()));
    assert!(
        listed["incomplete"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == killed_id.as_str()),
        "it is reported as incomplete: {listed}"
    );
    wait_for(
        "the killed backup's session to end",
        Duration::from_secs(30),
        || {
            (primary.sql(
                "select count(*) from pg_stat_activity where application_name = 'walarch backup'",
            ) == "0")
                .then_some(())
        },
    );
    primary.sql("alter system reset archive_command");
    primary.sql("select pg_reload_conf()");
    let run = walarch_as_postgres(&bin, &[], &backup_args);
    assert_eq!(
        run.code, 0,
        "a new backup works after the killed one: {run:?}"
    );

    // Issue 10, item 4: a restore that fails after its files are in place (here the store
    // refuses the take-over record) leaves a directory PostgreSQL will not start, so the copy
    // cannot promote and archive a new timeline into its source's repository.
    let blocker = repo_dir.join("takeovers");
    std::fs::write(&blocker, "not a directory").unwrap();
    let target = scratch.subdir("takeover-refused").join("data");
    let run = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo",
            &repo,
            "restore",
            "--take-over",
            "--backup",
            &good_id,
            "--pgdata",
            target.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("takeovers/"), "{run:?}");
    assert!(
        target.join("backup_label").is_file(),
        "the files were restored before the failure"
    );
    let log = scratch.path().join("takeover-refused/server.log");
    let start = pg_command("pg_ctl", &[])
        .arg("-D")
        .arg(&target)
        .arg("-l")
        .arg(&log)
        .args([
            "-o",
            &format!("-p {} -k /tmp", free_port()),
            "-w",
            "-t",
            "20",
            "start",
        ])
        .output()
        .unwrap();
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    if start.status.success() {
        let _ = pg_command("pg_ctl", &[])
            .arg("-D")
            .arg(&target)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
    assert!(
        !start.status.success() && server_log.contains("pg_control"),
        "PostgreSQL started on a failed restore: {server_log}"
    );

    // A corrupted part: restore fails naming the part and the file, verify reports it.
    let part = repo_dir
        .join("backups")
        .join(&good_id)
        .join("data/0.tar.zst");
    let mut bytes = std::fs::read(&part).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&part, &bytes).unwrap();
    let target = scratch.subdir("corrupt").join("data");
    let run = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo",
            &repo,
            "restore",
            "--backup",
            &good_id,
            "--pgdata",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("backups/{good_id}/data/0.tar.zst"))
            && run.stderr.contains("(at "),
        "names the part and the file: {run:?}"
    );
    assert!(
        !target.join("global/pg_control").exists(),
        "a failed restore leaves no pg_control, so PostgreSQL cannot be started on it"
    );
    let verify = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", &repo, "--json", "verify", "--backup", &good_id],
    );
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(verify.stdout.contains("0.tar.zst"), "{verify:?}");
}
