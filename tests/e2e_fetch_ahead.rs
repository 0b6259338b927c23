//! Fetch-ahead through the real binary: remembered segment misses cost no store request,
//! history files are always asked of the store, and the
//! pg_rewind mode fetches exactly the file asked for. (Recovery served from the spool with a
//! real PostgreSQL is checked in e2e_archive.)

use std::path::PathBuf;
use std::time::Duration;

use walarch_tests::{Cluster, Scratch, wait_for, walarch, walarch_binary};

/// A repository with a few archived segments, and a data directory layout recovering from it
/// (`postmaster.pid` names the recovery, as PostgreSQL's does).
struct Fixture {
    _cluster: Cluster,
    scratch: Scratch,
    bin: PathBuf,
    repo: PathBuf,
    pg_wal: PathBuf,
    segment: String,
}

fn fixture(label: &str) -> Fixture {
    let scratch = Scratch::new(label);
    let bin = walarch_binary(&scratch);
    let repo = scratch.subdir("repo");
    let mut cluster = Cluster::init(&scratch, "primary", 1);
    cluster.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-push --repo {} %p'\n",
        bin.display(),
        repo.display()
    ));
    cluster.start_and_wait();
    cluster.sql("create table t as select g from generate_series(1, 20000) g");
    let segment = cluster.sql("select pg_walfile_name(pg_current_wal_lsn())");
    cluster.switch_and_wait_archived(Duration::from_secs(60));
    let data = scratch.subdir("recovering");
    let pg_wal = data.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    std::fs::write(data.join("postmaster.pid"), "31337\n/data\n1763700000\n").unwrap();
    Fixture {
        _cluster: cluster,
        scratch,
        bin,
        repo,
        pg_wal,
        segment,
    }
}

#[test]
fn a_segment_missing_from_the_store_is_asked_for_once_per_recovery_a_history_file_always() {
    let fx = fixture("misses");
    let fetch = |repo: &std::path::Path, name: &str, dest: &str| {
        walarch(
            &fx.bin,
            &[],
            &[
                "--repo",
                repo.to_str().unwrap(),
                "wal-fetch",
                name,
                fx.pg_wal.join(dest).to_str().unwrap(),
            ],
        )
    };
    let beyond = "000000010000000000000099";
    let first = fetch(&fx.repo, beyond, "RECOVERYXLOG");
    assert_eq!(first.code, 1, "{first:?}");
    let history = fetch(&fx.repo, "00000007.history", "RECOVERYHISTORY");
    assert_eq!(history.code, 1, "{history:?}");
    // Take the store away: a request to it now fails with 126.
    let moved = fx.scratch.path().join("repo-moved");
    std::fs::rename(&fx.repo, &moved).unwrap();
    let second = fetch(&fx.repo, beyond, "RECOVERYXLOG");
    assert_eq!(
        second.code, 1,
        "answered from the remembered miss, without the store: {second:?}"
    );
    // History files are asked of the store every time (issue 10, item 5): at the end of
    // recovery PostgreSQL probes them to pick a timeline id no other server took.
    let history = fetch(&fx.repo, "00000007.history", "RECOVERYHISTORY");
    assert_eq!(
        history.code, 126,
        "a history miss is never answered from memory: {history:?}"
    );
    // A new recovery (restart) asks the store again.
    std::fs::write(
        fx.pg_wal.parent().unwrap().join("postmaster.pid"),
        "31338\n/data\n1763700999\n",
    )
    .unwrap();
    let third = fetch(&fx.repo, beyond, "RECOVERYXLOG");
    assert_eq!(
        third.code, 126,
        "a new recovery does not trust old misses: {third:?}"
    );
    // The fetch-ahead worker these calls started exits once idle.
    let lock = fx.pg_wal.join("walarch/fetch/worker.lock");
    wait_for(
        "the fetch-ahead worker to exit",
        Duration::from_secs(60),
        || {
            let held = std::process::Command::new("flock")
                .args(["-n"])
                .arg(&lock)
                .arg("true")
                .status()
                .is_ok_and(|s| !s.success());
            (!held).then_some(())
        },
    );
}

#[test]
fn no_prefetch_mode_fetches_exactly_the_file_asked_for() {
    let fx = fixture("rewind");
    let dest = fx.pg_wal.join("RECOVERYXLOG");
    let run = walarch(
        &fx.bin,
        &[],
        &[
            "--repo",
            fx.repo.to_str().unwrap(),
            "wal-fetch",
            "--no-prefetch",
            &fx.segment,
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(dest.exists());
    assert!(
        !fx.pg_wal.join("walarch").exists(),
        "no spool, no worker, nothing else fetched"
    );
    let entries: Vec<_> = std::fs::read_dir(&fx.pg_wal)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
}
