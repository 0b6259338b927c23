//! Every supported PostgreSQL major, 13 to 18, end to end with the built `walarch`: archive
//! through `wal-push` under a write load, `walarch backup` while the load runs, then
//! point-in-time drills with `restore --start` that must give back exactly the rows committed
//! up to the target, and a drill across a promotion (a restored copy that takes the repository
//! over becomes timeline 2). On 15 and 18 the full set (time, LSN, xid, restore point, timeline
//! 2); on the others time and timeline 2. Each drill's plan must stop where PostgreSQL stopped.
//! 17 runs with 8 MiB segments, the others with 16 MiB. A shutdown at the target is seen
//! with the log elsewhere. Restore refuses binaries of another major. Server binaries of majors other than 15 come from
//! `scripts/install-postgres-majors.sh`; client programs are Debian's 15.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use walarch_tests::pg::server_bin;
use walarch_tests::{
    Cluster, KillOnDrop, Scratch, free_port, run_ok, walarch_as_postgres, walarch_backup,
    walarch_binary,
};

/// Every row, in order, with its phase.
const SNAPSHOT_SQL: &str =
    "select coalesce(string_agg(id || ':' || phase, ',' order by id), '') from drill";

fn write_rows(cluster: &Cluster, from: u32, to: u32, phase: &str) {
    for id in from..=to {
        cluster.sql(&format!("insert into drill values ({id}, '{phase}')"));
    }
}

fn server_time(cluster: &Cluster) -> String {
    cluster.sql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    )
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

struct Version {
    major: u32,
    scratch: Scratch,
    bin: PathBuf,
    repo: String,
}

struct Drill {
    name: &'static str,
    args: Vec<String>,
    expected_rows: String,
}

impl Version {
    fn walarch(&self, args: &[&str]) -> walarch_tests::WalarchRun {
        let mut all = vec!["--repo", self.repo.as_str(), "--json"];
        all.extend_from_slice(args);
        walarch_as_postgres(&self.bin, &[], &all)
    }

    /// `restore --start` into a new directory on a free port, with `args`; the JSON result and
    /// the running copy.
    fn restore(&self, name: &str, args: &[String]) -> (serde_json::Value, Cluster) {
        let dir = self.scratch.subdir(name);
        let data = dir.join("data");
        let port = free_port();
        let server_bin = server_bin(self.major);
        let mut all: Vec<String> = vec![
            "restore".into(),
            "--pgdata".into(),
            data.to_str().unwrap().into(),
            "--start".into(),
            "--pg-bin".into(),
            server_bin.to_str().unwrap().into(),
            "--start-timeout".into(),
            "300".into(),
            "--set".into(),
            format!("port={port}"),
            "--set".into(),
            format!("unix_socket_directories={}", dir.display()),
            "--set".into(),
            "listen_addresses=127.0.0.1".into(),
        ];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let run = self.walarch(&refs);
        let log =
            std::fs::read_to_string(data.join("log/walarch-recovery.log")).unwrap_or_default();
        assert_eq!(
            run.code, 0,
            "PostgreSQL {} {name}: {run:?}\n{log}",
            self.major
        );
        (run.json(), Cluster::adopt(data, port))
    }

    fn drill(&self, drill: &Drill) -> String {
        let mut args = drill.args.clone();
        args.extend(["--set".into(), "archive_mode=off".into()]);
        let (result, copy) = self.restore(drill.name, &args);
        let rows = copy.sql(SNAPSHOT_SQL);
        assert_eq!(
            rows, drill.expected_rows,
            "PostgreSQL {} {}: exactly the rows committed up to the target\n{result}",
            self.major, drill.name
        );
        // Where the plan said recovery stops is where PostgreSQL stopped.
        let planned = &result["plan"]["stop"]["replay_end"];
        let replayed = &result["recovery"]["replayed_to"];
        assert_eq!(
            planned, replayed,
            "PostgreSQL {} {}: the plan's stop LSN is where recovery stopped\n{result}",
            self.major, drill.name
        );
        format!(
            "{} -> {} (stopped at {replayed}; {})",
            drill.name,
            result["plan"]["target"].as_str().unwrap_or("?"),
            result["recovery"]["stop_message"].as_str().unwrap_or("-")
        )
    }
}

fn run_major(major: u32, segment_mib: u32, full: bool) {
    let started = Instant::now();
    let scratch = Scratch::new(&format!("pg{major}"));
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let version = Version {
        major,
        repo: repo_dir.to_str().unwrap().to_owned(),
        bin,
        scratch,
    };
    let mut primary = Cluster::init_major(&version.scratch, "primary", segment_mib, major);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {} wal-push %p'\nwal_level = replica\n",
        version.bin.display(),
        version.repo
    ));
    primary.start_and_wait();
    assert!(
        primary
            .sql("select current_setting('server_version_num')")
            .starts_with(&major.to_string()),
        "the server runs PostgreSQL {major}"
    );
    primary.sql("create table drill (id int primary key, phase text not null)");
    run_ok(&mut primary.pgbench(&["-i", "-q", "-s", "1"]));
    write_rows(&primary, 1, 5, "seed");

    // The backup runs while pgbench writes.
    let load = KillOnDrop(
        primary
            .pgbench(&["-n", "-c", "2", "-T", "8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let backup_started = Instant::now();
    let run = walarch_backup(&version.bin, &[], &version.repo, &primary);
    let backup_seconds = backup_started.elapsed().as_secs_f64();
    assert_eq!(run.code, 0, "PostgreSQL {major} backup: {run:?}");
    let mut load = load;
    assert!(
        load.0.try_wait().unwrap().is_none(),
        "PostgreSQL {major}: pgbench was still writing when the backup finished"
    );
    load.0.wait().unwrap();

    let mut drills = Vec::new();
    write_rows(&primary, 6, 10, "a");
    settle();
    let time1 = server_time(&primary);
    let expected_time = primary.sql(SNAPSHOT_SQL);
    settle();
    primary.sql("delete from drill where id <= 8");
    write_rows(&primary, 11, 15, "after-delete");
    drills.push(Drill {
        name: "time",
        args: vec![
            "--target-time".into(),
            time1.clone(),
            "--target-action".into(),
            "promote".into(),
        ],
        expected_rows: expected_time,
    });
    if full {
        write_rows(&primary, 16, 18, "b");
        let expected_lsn = primary.sql(SNAPSHOT_SQL);
        let lsn = primary.sql("select pg_current_wal_insert_lsn()");
        primary.sql("update drill set phase = 'clobbered'");
        let xid = primary.sql("insert into drill values (21, 'xid') returning txid_current()");
        let expected_xid = primary.sql(SNAPSHOT_SQL);
        primary.sql("delete from drill");
        write_rows(&primary, 24, 25, "c");
        let expected_name = primary.sql(SNAPSHOT_SQL);
        primary.sql("select pg_create_restore_point('before-truncate')");
        primary.sql("truncate drill");
        drills.push(Drill {
            name: "lsn",
            args: vec!["--target-lsn".into(), lsn],
            expected_rows: expected_lsn,
        });
        drills.push(Drill {
            name: "xid",
            args: vec![
                "--target-xid".into(),
                xid,
                "--target-action".into(),
                "promote".into(),
            ],
            expected_rows: expected_xid,
        });
        drills.push(Drill {
            name: "name",
            args: vec!["--target-name".into(), "before-truncate".into()],
            expected_rows: expected_name,
        });
    }
    write_rows(&primary, 26, 27, "end-tl1");
    let last = primary.switch_and_wait_archived(Duration::from_secs(120));
    primary.stop();
    let archived_tl1 = walarch_tests::files_below(&repo_dir.join("wal"))
        .iter()
        .filter(|p| p.to_string_lossy().contains("00000001000000"))
        .count();

    // A restored copy takes the repository over and promotes: timeline 2.
    let (result, promoted) = version.restore(
        "takeover",
        &[
            "--take-over".into(),
            "--target-action".into(),
            "promote".into(),
        ],
    );
    assert_eq!(result["recovery"]["timeline"], 2, "{result}");
    // All archived WAL replayed: the plan's end of it is where replay ended.
    assert_eq!(
        result["plan"]["stop"]["replay_end"], result["recovery"]["replayed_to"],
        "PostgreSQL {major}: {result}"
    );
    write_rows(&promoted, 28, 30, "tl2");
    settle();
    let time2 = server_time(&promoted);
    let expected_tl2 = promoted.sql(SNAPSHOT_SQL);
    settle();
    promoted.sql("delete from drill where phase <> 'tl2'");
    write_rows(&promoted, 31, 32, "after-tl2");
    promoted.switch_and_wait_archived(Duration::from_secs(120));
    drop(promoted);
    drills.push(Drill {
        name: "timeline2",
        args: vec![
            "--target-time".into(),
            time2,
            "--target-action".into(),
            "promote".into(),
        ],
        expected_rows: expected_tl2,
    });

    let mut outcomes: Vec<String> = drills.iter().map(|d| version.drill(d)).collect();

    // Shut down at the target while the log goes to the logging collector: `restore --start`
    // learns where recovery stopped from pg_control (these builds have no pg_controldata).
    let (result, _stopped) = version.restore(
        "shutdown",
        &[
            "--target-time".into(),
            time1,
            "--target-action".into(),
            "shutdown".into(),
            "--set".into(),
            "logging_collector=on".into(),
            "--set".into(),
            "archive_mode=off".into(),
        ],
    );
    assert_eq!(
        result["recovery"]["state"], "shut down",
        "PostgreSQL {major}: {result}"
    );
    outcomes.push("shutdown at the time target: shut down".into());

    // A copy of this major does not start with another major's binaries: refused by name
    // before anything is written.
    let other = if major == 18 { 17 } else { 18 };
    let refused_dir = version.scratch.subdir("wrong-binaries").join("data");
    let run = version.walarch(&[
        "restore",
        "--pgdata",
        refused_dir.to_str().unwrap(),
        "--start",
        "--pg-bin",
        server_bin(other).to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "holds PostgreSQL {other}'s binaries, but the backup is of PostgreSQL {major}"
        )),
        "{run:?}"
    );
    assert!(!refused_dir.exists(), "nothing was written");

    eprintln!(
        "PostgreSQL {major} ({segment_mib} MiB segments): {archived_tl1} WAL objects on timeline 1 up to {last}; backup under load {backup_seconds:.1} s; {}; {:.0} s in all",
        outcomes.join("; "),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn postgresql_13() {
    run_major(13, 16, false);
}

#[test]
fn postgresql_14() {
    run_major(14, 16, false);
}

#[test]
fn postgresql_15() {
    run_major(15, 16, true);
}

#[test]
fn postgresql_16() {
    run_major(16, 16, false);
}

#[test]
fn postgresql_17() {
    run_major(17, 8, false);
}

#[test]
fn postgresql_18() {
    run_major(18, 16, true);
}

/// What a major upgrade leads to: a repository of PostgreSQL 15 refuses the WAL and a backup
/// of the upgraded server (16, with a new system identifier, as pg_upgrade gives it), saying
/// that a major upgrade starts a new repository, and nothing is written to it.
#[test]
fn a_major_upgrade_starts_a_new_repository() {
    let scratch = Scratch::new("upgrade");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let repo = repo_dir.to_str().unwrap();
    let mut old = Cluster::init_major(&scratch, "pg15", 16, 15);
    old.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\n",
        bin.display()
    ));
    old.start_and_wait();
    let run = walarch_backup(&bin, &[], repo, &old);
    assert_eq!(run.code, 0, "{run:?}");
    old.stop();
    let before = repository_contents(&repo_dir);

    let mut new = Cluster::init_major(&scratch, "pg16", 16, 16);
    new.start_and_wait();
    let segment = new.data.join("pg_wal/000000010000000000000001");
    let run = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", repo, "wal-push", segment.to_str().unwrap()],
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(
            "it is PostgreSQL 16 WAL but the repository holds PostgreSQL 15 WAL; a major upgrade starts a new repository"
        ),
        "{run:?}"
    );
    let run = walarch_backup(&bin, &[], repo, &new);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(
            "holds PostgreSQL 15 WAL and backups, but this server runs PostgreSQL 16: a major upgrade starts a new repository"
        ),
        "{run:?}"
    );
    assert_eq!(
        repository_contents(&repo_dir),
        before,
        "nothing was written"
    );
}

/// PostgreSQL 12 is not supported: its backup is refused when walarch connects, its WAL by
/// its page magic, each with a message that names the supported majors, and the repository
/// stays empty.
#[test]
fn postgresql_12_is_refused() {
    let scratch = Scratch::new("pg12");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let repo = repo_dir.to_str().unwrap();
    let mut server = Cluster::init_major(&scratch, "pg12", 16, 12);
    server.start_and_wait();
    let run = walarch_backup(&bin, &[], repo, &server);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("PostgreSQL 12.22 is not supported: walarch backs up PostgreSQL 13 to 18"),
        "{run:?}"
    );
    let segment = server.data.join("pg_wal/000000010000000000000001");
    let run = walarch_as_postgres(
        &bin,
        &[],
        &["--repo", repo, "wal-push", segment.to_str().unwrap()],
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("unsupported WAL page magic 0xD101: walarch reads PostgreSQL 13 to 18"),
        "{run:?}"
    );
    assert_eq!(
        repository_contents(&repo_dir),
        Vec::new(),
        "nothing was written"
    );
}

/// Every file of a repository (relative path) with its bytes, in path order.
fn repository_contents(root: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    walarch_tests::files_below(root)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(root.join(&path)).unwrap();
            (path, bytes)
        })
        .collect()
}

/// How `restore --start` finds a major's server binaries, on real binaries: among the
/// candidates (PATH) the first that holds that major, other majors passed over; `{major}` in a
/// directory stands for the version; a given directory of another major is refused by both
/// versions; when none is found, the error lists where it looked.
#[tokio::test]
async fn the_binaries_of_the_backups_major_are_found() {
    use walarch_core::postgres::{ServerError, find_server_binaries};
    let bin16 = server_bin(16);
    let bin18 = server_bin(18);
    let found = find_server_binaries(16, None, &[bin18.clone(), bin16.clone()])
        .await
        .unwrap();
    assert_eq!((found.dir, found.major), (bin16.clone(), 16));

    let pattern = bin16.to_str().unwrap().replace("/16/", "/{major}/");
    assert!(pattern.contains("{major}"), "{pattern}");
    let found = find_server_binaries(18, Some(std::path::Path::new(&pattern)), &[])
        .await
        .unwrap();
    assert_eq!((found.dir, found.major), (bin18.clone(), 18));

    let refused = find_server_binaries(16, Some(&bin18), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ServerError::WrongBinaries {
                found: 18,
                wanted: 16,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("holds PostgreSQL 18's binaries, but the backup is of PostgreSQL 16"),
        "{refused}"
    );

    // A directory with `postgres` but no `pg_ctl` does not count (the start would fail after
    // the restore); relative candidates (an empty PATH entry: the working directory) are skipped.
    let scratch = Scratch::new("binaries");
    let only_postgres = scratch.subdir("only-postgres");
    std::os::unix::fs::symlink(bin16.join("postgres"), only_postgres.join("postgres")).unwrap();
    let missing = find_server_binaries(16, Some(&only_postgres), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ServerError::NoBinaries { major: 16, .. }),
        "{missing}"
    );
    let relative = std::path::PathBuf::from(pattern.trim_start_matches('/'));
    let missing = find_server_binaries(16, None, std::slice::from_ref(&relative))
        .await
        .unwrap_err();
    let relative16 = relative.to_str().unwrap().replace("{major}", "16");
    assert!(!missing.to_string().contains(&relative16), "{missing}");

    // 11 is nowhere here: the error names the candidates and the usual places it searched.
    let missing = find_server_binaries(11, None, std::slice::from_ref(&bin16))
        .await
        .unwrap_err();
    let text = missing.to_string();
    assert!(
        matches!(missing, ServerError::NoBinaries { major: 11, .. }),
        "{text}"
    );
    assert!(
        text.contains(bin16.to_str().unwrap()) && text.contains("/usr/lib/postgresql/11/bin"),
        "{text}"
    );
}
