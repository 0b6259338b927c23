//! Bad input, end to end, with segments written by a real PostgreSQL 15: every case ends in a
//! clear error (or the documented exit status) and nothing stored is lost or changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use walarch_tests::{
    Cluster, Scratch, WalarchRun, files_below, free_port, walarch, walarch_binary,
};

/// A cluster archiving into a local repository, with a few segments already archived.
struct Fixture {
    // Fields drop in order: the server must stop before its scratch directory is removed.
    cluster: Cluster,
    scratch: Scratch,
    bin: PathBuf,
    repo: PathBuf,
    /// A segment PostgreSQL archived, still in pg_wal.
    archived_segment: String,
}

impl Fixture {
    fn new(label: &str) -> Self {
        let scratch = Scratch::new(label);
        let bin = walarch_binary(&scratch);
        let repo = scratch.subdir("repo");
        let mut cluster = Cluster::init(&scratch, "primary", 1);
        cluster.append_conf(&format!(
            "archive_mode = on\narchive_command = '{} wal-push --repo {} %p'\nwal_keep_size = '1GB'\n",
            bin.display(),
            repo.display()
        ));
        cluster.start_and_wait();
        cluster.sql("create table t as select g, md5(g::text) from generate_series(1, 20000) g");
        let archived_segment = cluster.sql("select pg_walfile_name(pg_current_wal_lsn())");
        cluster.switch_and_wait_archived(Duration::from_secs(60));
        Fixture {
            scratch,
            bin,
            repo,
            cluster,
            archived_segment,
        }
    }

    fn run(&self, args: &[&str]) -> WalarchRun {
        let mut full = vec!["--repo", self.repo.to_str().unwrap()];
        full.extend_from_slice(args);
        walarch(&self.bin, &[], &full)
    }

    fn segment_bytes(&self) -> Vec<u8> {
        std::fs::read(
            self.cluster
                .data
                .join("pg_wal")
                .join(&self.archived_segment),
        )
        .unwrap()
    }

    /// Writes `content` as `name` in a scratch directory and returns its path.
    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let dir = self.scratch.subdir("input");
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn repo_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        files_below(&self.repo)
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(self.repo.join(&p)).unwrap()))
            .collect()
    }

    fn stored_object(&self) -> PathBuf {
        self.repo
            .join("wal")
            .join(&self.archived_segment[..16])
            .join(format!("{}.zst", self.archived_segment))
    }
}

fn push(fx: &Fixture, path: &Path) -> WalarchRun {
    fx.run(&["wal-push", path.to_str().unwrap()])
}

#[test]
fn segment_of_another_cluster_is_refused_naming_both_system_ids() {
    let fx = Fixture::new("foreign");
    let mut other = Cluster::init(&fx.scratch, "other", 1);
    other.start_and_wait();
    other.sql("create table u as select g from generate_series(1, 10000) g");
    let foreign_name = other.sql("select pg_walfile_name(pg_switch_wal())");
    let foreign = fx.file(
        &foreign_name,
        &std::fs::read(other.data.join("pg_wal").join(&foreign_name)).unwrap(),
    );
    let before = fx.repo_snapshot();

    let run = push(&fx, &foreign);
    assert_eq!(run.code, 1, "{run:?}");
    let (ours, theirs) = (fx.cluster.system_identifier(), other.system_identifier());
    assert_ne!(ours, theirs);
    assert!(
        run.stderr.contains(&ours) && run.stderr.contains(&theirs),
        "message names both system ids: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "one line: {}",
        run.stderr
    );
    assert_eq!(fx.repo_snapshot(), before, "the repository is unchanged");
}

#[test]
fn misnamed_segment_is_refused() {
    let fx = Fixture::new("misnamed");
    let before = fx.repo_snapshot();
    let wrong_name = format!(
        "{}{:08X}",
        &fx.archived_segment[..16],
        u32::from_str_radix(&fx.archived_segment[16..], 16).unwrap() + 100
    );
    let run = push(&fx, &fx.file(&wrong_name, &fx.segment_bytes()));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&fx.archived_segment),
        "says which segment the content really is: {}",
        run.stderr
    );
    assert_eq!(fx.repo_snapshot(), before);
}

#[test]
fn truncated_segment_is_refused() {
    let fx = Fixture::new("truncated");
    let before = fx.repo_snapshot();
    let bytes = fx.segment_bytes();
    let run = push(
        &fx,
        &fx.file(&fx.archived_segment, &bytes[..bytes.len() - 8192]),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    assert_eq!(fx.repo_snapshot(), before);
}

#[test]
fn same_segment_pushed_twice_succeeds() {
    let fx = Fixture::new("twice");
    let before = fx.repo_snapshot();
    // A copy outside pg_wal: no push-ahead record can vouch for it, so the stored object is
    // read back and compared.
    let copy = fx.file(&fx.archived_segment, &fx.segment_bytes());
    let run = fx.run(&["--json", "wal-push", copy.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["outcome"], "already_archived");
    assert_eq!(fx.repo_snapshot(), before);
}

#[test]
fn different_content_under_an_archived_name_is_refused_and_both_kept() {
    let fx = Fixture::new("different");
    let stored = std::fs::read(fx.stored_object()).unwrap();
    let mut bytes = fx.segment_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xA5;
    let path = fx.file(&fx.archived_segment, &bytes);
    let run = push(&fx, &path);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("different content"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(fx.stored_object()).unwrap(),
        stored,
        "the stored copy is untouched"
    );
    assert!(path.exists(), "the local file is left in place");
}

#[test]
fn fetch_of_a_missing_segment_exits_1() {
    let fx = Fixture::new("missing");
    let dest = fx.scratch.subdir("restore").join("RECOVERYXLOG");
    let run = fx.run(&[
        "wal-fetch",
        "0000000100000000000000FE",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!dest.exists());
    let run = fx.run(&["wal-fetch", "00000002.history", dest.to_str().unwrap()]);
    assert_eq!(
        run.code, 1,
        "a history file of a future timeline is simply not there: {run:?}"
    );
}

#[test]
fn fetch_with_the_store_unreachable_exits_126_and_writes_nothing() {
    let fx = Fixture::new("unreachable");
    let dest = fx.scratch.subdir("restore").join("RECOVERYXLOG");
    // An S3 endpoint where nothing listens.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let envs: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "Zq9SECRETvalue"),
        ("AWS_REGION", "us-east-1"),
        ("WALARCH_S3_ENDPOINT", closed.as_str()),
        ("WALARCH_S3_ALLOW_HTTP", "true"),
        ("WALARCH_RETRIES", "2"),
        ("WALARCH_RETRY_TIMEOUT", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let run = walarch(
        &fx.bin,
        &envs,
        &[
            "--repo",
            "s3://bucket/prefix",
            "wal-fetch",
            &fx.archived_segment,
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 126, "{run:?}");
    assert!(
        run.stderr.contains("after 2 retries"),
        "the store was retried: {}",
        run.stderr
    );
    assert!(!dest.exists());
    assert!(
        !run.stderr.contains("Zq9SECRETvalue"),
        "no secret in the message: {}",
        run.stderr
    );

    // A local repository that is not there (an unmounted volume) is not "not found" either.
    let missing = fx.scratch.path().join("no-such-repo");
    let run = walarch(
        &fx.bin,
        &[],
        &[
            "--repo",
            missing.to_str().unwrap(),
            "wal-fetch",
            &fx.archived_segment,
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 126, "{run:?}");
    assert!(!dest.exists());
}

#[test]
fn corrupted_stored_object_exits_126_and_writes_nothing() {
    let fx = Fixture::new("corrupt");
    let object = fx.stored_object();
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&object, &bytes).unwrap();
    let dest = fx.scratch.subdir("restore").join("RECOVERYXLOG");
    let run = fx.run(&["wal-fetch", &fx.archived_segment, dest.to_str().unwrap()]);
    assert_eq!(run.code, 126, "{run:?}");
    assert!(run.stderr.contains("corrupt"), "{}", run.stderr);
    assert!(!dest.exists());
}

#[test]
fn damaged_objects_stored_without_compression_exit_126_and_write_nothing() {
    // Issue 10, item 1: with `compression = none` a damaged byte in the middle of a stored
    // segment was handed to PostgreSQL, which took the damaged record for the end of WAL.
    let fx = Fixture::new("corrupt-none");
    let repo = fx.scratch.subdir("repo-none");
    let repo_arg = repo.to_str().unwrap();
    let segment = fx.cluster.data.join("pg_wal").join(&fx.archived_segment);
    let none = [("WALARCH_COMPRESSION".to_owned(), "none".to_owned())];
    let run = walarch(
        &fx.bin,
        &none,
        &["--repo", repo_arg, "wal-push", segment.to_str().unwrap()],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let history = fx.file(
        "00000002.history",
        b"1\t0/3000148\tno recovery target specified\n",
    );
    let run = walarch(
        &fx.bin,
        &none,
        &["--repo", repo_arg, "wal-push", history.to_str().unwrap()],
    );
    assert_eq!(run.code, 0, "{run:?}");

    let restore = fx.scratch.subdir("restore-none");
    let fetch = |name: &str| {
        let dest = restore.join("RECOVERYXLOG");
        let _ = std::fs::remove_file(&dest);
        let run = walarch(
            &fx.bin,
            &none,
            &[
                "--repo",
                repo_arg,
                "wal-fetch",
                name,
                dest.to_str().unwrap(),
            ],
        );
        (run, std::fs::read(&dest).ok())
    };
    let (run, fetched) = fetch(&fx.archived_segment);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        fetched.as_deref(),
        Some(&fx.segment_bytes()[..]),
        "intact: same bytes"
    );

    // One byte in the middle of the stored segment: not handed over.
    let object = repo
        .join("wal")
        .join(&fx.archived_segment[..16])
        .join(format!("{}.gz", fx.archived_segment));
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let (run, fetched) = fetch(&fx.archived_segment);
    assert_eq!(run.code, 126, "{run:?}");
    assert!(run.stderr.contains("corrupt"), "{}", run.stderr);
    assert_eq!(fetched, None, "nothing at %p");

    // A segment stored as raw bytes (by hand, or by an earlier walarch): unverifiable.
    std::fs::remove_file(&object).unwrap();
    std::fs::write(object.with_extension(""), fx.segment_bytes()).unwrap();
    let (run, fetched) = fetch(&fx.archived_segment);
    assert_eq!(run.code, 126, "{run:?}");
    assert!(run.stderr.contains("without a checksum"), "{}", run.stderr);
    assert_eq!(fetched, None);

    // A history file whose switch point lost a digit still parses: its checksum line says
    // it is not what was stored.
    let stored_history = repo.join("wal/00000002.history");
    let text = std::fs::read_to_string(&stored_history).unwrap();
    std::fs::write(&stored_history, text.replacen("0/3000148", "0/3000149", 1)).unwrap();
    let (run, fetched) = fetch("00000002.history");
    assert_eq!(run.code, 126, "{run:?}");
    assert!(run.stderr.contains("CRC-32C"), "{}", run.stderr);
    assert_eq!(fetched, None);
}

/// Runs `script` with `dir` mounted as a tmpfs of `size` in a private mount namespace (the
/// mount disappears with the process; as a normal user, a user namespace provides the right
/// to mount). Returns the script's standard output and its exit status.
fn in_small_tmpfs(dir: &Path, size: &str, script: &str) -> (String, i32) {
    std::fs::create_dir_all(dir).unwrap();
    let unshare_flags = if walarch_tests::running_as_root() {
        "-m"
    } else {
        "-rm"
    };
    let full = format!(
        "mount -t tmpfs -o size={size} tmpfs '{}' && {script}",
        dir.display()
    );
    let out = std::process::Command::new("unshare")
        .args([unshare_flags, "sh", "-c", &full])
        .output()
        .expect("unshare (util-linux) is needed for the disk-full tests");
    (
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn fetch_onto_a_full_disk_exits_126_and_writes_nothing() {
    let fx = Fixture::new("fetchfull");
    let full = fx.scratch.path().join("full");
    let script = format!(
        "'{bin}' --repo '{repo}' wal-fetch {seg} '{dir}/RECOVERYXLOG'; echo \"rc=$?\"; ls -A '{dir}'",
        bin = fx.bin.display(),
        repo = fx.repo.display(),
        seg = fx.archived_segment,
        dir = full.display()
    );
    // 1 MiB segments do not fit in 256 KiB.
    let (out, _) = in_small_tmpfs(&full, "256k", &script);
    assert!(out.contains("rc=126"), "{out}");
    assert!(
        out.contains("No space left on device"),
        "the message says why: {out}"
    );
    assert!(
        !out.contains("RECOVERYXLOG\n") && !out.contains(".tmp"),
        "nothing left behind: {out}"
    );
}

#[test]
fn push_into_a_full_repository_fails_and_leaves_nothing_partial() {
    let fx = Fixture::new("pushfull");
    let repo = fx.scratch.path().join("fullrepo");
    let segment = fx.cluster.data.join("pg_wal").join(&fx.archived_segment);
    let script = format!(
        "'{bin}' --repo '{repo}' --compression none wal-push '{seg}'; echo \"rc=$?\"; find '{repo}' -type f",
        bin = fx.bin.display(),
        repo = repo.display(),
        seg = segment.display()
    );
    let (out, _) = in_small_tmpfs(&repo, "256k", &script);
    assert!(out.contains("rc=1\n"), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        !out.contains(&format!("{}\n", fx.archived_segment)) && !out.contains('#'),
        "no partial object: {out}"
    );
    // The segment is still in pg_wal for PostgreSQL's retry.
    assert!(segment.exists());
}
