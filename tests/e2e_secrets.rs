//! Secret hygiene, end to end: every walarch command runs with known secrets in its
//! environment (the clouds' keys and tokens, a PostgreSQL password) and the most verbose
//! logging, against a real S3 server and a real PostgreSQL 15 that archives through walarch
//! (push-ahead worker included), on success and on failure paths. Then every line printed,
//! every log PostgreSQL and the workers wrote, every file in the spools, the repository's
//! objects and the restored data directory, and the command line of every walarch process
//! seen while archiving are searched for the secrets. None may be found.

use std::path::{Path, PathBuf};
use std::time::Duration;

use walarch_tests::{
    Cluster, S3Server, Scratch, WalarchRun, files_below, walarch_as_postgres, walarch_binary,
};

/// Distinctive values nobody else prints.
const SECRETS: &[(&str, &str)] = &[
    ("AWS_SECRET_ACCESS_KEY", "wsecret-aws-Zq9xK2vB7"),
    ("AWS_SESSION_TOKEN", "wsecret-token-Pq7M3nR1"),
    ("AZURE_STORAGE_ACCOUNT_KEY", "wsecret-azure-Lm4Tt8Hc"),
    ("GOOGLE_SERVICE_ACCOUNT_KEY", "wsecret-google-Yy2Jd5Wq"),
    ("PGPASSWORD", "wsecret-pg-Vb6Nf0Se"),
];

/// The secret line of the key file the commands encrypt with.
static ENCRYPTION_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn env_with_secrets(s3: &S3Server) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    env.extend(SECRETS.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.push(("WALARCH_LOG".into(), "trace".into()));
    env
}

/// Every walarch process running now (its executable is the binary under test): its
/// command line, as `ps` shows it.
fn walarch_command_lines(bin: &Path) -> Vec<String> {
    let bin = std::fs::canonicalize(bin).unwrap();
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        if std::fs::read_link(dir.join("exe")).ok().as_deref() != Some(bin.as_path()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(dir.join("cmdline")) {
            lines.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    lines
}

fn assert_no_secret(what: &str, text: &[u8]) {
    let key = ENCRYPTION_KEY.get().expect("the key is made first");
    let secrets = SECRETS
        .iter()
        .copied()
        .chain([("the encryption key", key.as_str())]);
    for (name, secret) in secrets {
        assert!(
            !text.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{name}'s value found in {what}"
        );
    }
}

#[test]
fn no_command_prints_logs_or_stores_a_secret() {
    let scratch = Scratch::new("secrets");
    let s3 = S3Server::start(&scratch, "walarch-secrets");
    let bin = walarch_binary(&scratch);
    // An encryption key: its secret line must not leak either.
    let key_file = scratch.subdir("keys").join("walarch.key");
    let made = walarch_as_postgres(&bin, &[], &["key", "new", key_file.to_str().unwrap()]);
    assert_eq!(made.code, 0, "{made:?}");
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let secret_line = key_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    ENCRYPTION_KEY.set(secret_line.to_owned()).unwrap();
    let mut env = env_with_secrets(&s3);
    env.push((
        "WALARCH_ENCRYPTION_KEY_FILE".into(),
        key_file.to_str().unwrap().into(),
    ));
    let repo = "s3://walarch-secrets/repo";
    let mut runs: Vec<(String, WalarchRun)> = Vec::new();
    let mut run = |label: &str, args: &[&str]| -> serde_json::Value {
        let result = walarch_as_postgres(&bin, &env, args);
        let json = serde_json::from_str(result.stdout.trim()).unwrap_or_default();
        runs.push((format!("{label}: {args:?}"), result));
        json
    };

    // A primary archiving through walarch, with the push-ahead worker.
    let mut primary = Cluster::init(&scratch, "primary", 16).with_env(&env);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\nwal_level = replica\n",
        bin.display()
    ));
    primary.start_and_wait();
    // A backlog of segments makes wal-push start its worker; sample every walarch process's
    // command line meanwhile.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (bin, sampling) = (bin.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                seen.extend(walarch_command_lines(&bin));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    primary.sql("create table t (g int)");
    for _ in 0..3 {
        for _ in 0..8 {
            primary.sql("insert into t values (1); select pg_switch_wal()");
        }
        primary.switch_and_wait_archived(Duration::from_secs(60));
    }
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let command_lines = sampler.join().unwrap();
    // The worker is a re-executed walarch; it must have been seen for the check to mean
    // anything.
    assert!(
        command_lines.iter().any(|l| l.contains("push-worker")),
        "no push worker seen: {command_lines:?}"
    );
    for line in &command_lines {
        assert_no_secret(&format!("the command line {line:?}"), line.as_bytes());
    }

    // Every command, with --json and without.
    let data = primary.data.to_str().unwrap().to_owned();
    let conninfo = primary.conninfo();
    run("info", &["--repo", repo, "info"]);
    run("info", &["--repo", repo, "--json", "info"]);
    let backup = run(
        "backup",
        &[
            "--repo", repo, "--json", "backup", "--pgdata", &data, "--dbname", &conninfo,
        ],
    );
    assert!(backup["id"].is_string(), "backup: {runs:?}");
    primary.switch_and_wait_archived(Duration::from_secs(60));
    run("backups", &["--repo", repo, "backups"]);
    run("backups", &["--repo", repo, "--json", "backups"]);
    run("verify", &["--repo", repo, "--json", "verify"]);
    run("plan", &["--repo", repo, "--json", "plan"]);
    run(
        "retention",
        &[
            "--repo",
            repo,
            "--json",
            "retention",
            "--keep",
            "1",
            "--dry-run",
        ],
    );
    let fetched = scratch.path().join("fetched");
    std::fs::create_dir_all(&fetched).unwrap();
    scratch.give_to_postgres(&fetched);
    let first = primary
        .archived_names()
        .into_iter()
        .next()
        .expect("archived");
    let dest = fetched.join("RECOVERYXLOG");
    run(
        "wal-fetch",
        &["--repo", repo, "wal-fetch", &first, dest.to_str().unwrap()],
    );
    run(
        "wal-fetch missing",
        &[
            "--repo",
            repo,
            "wal-fetch",
            "0000000100000000000000AA",
            dest.to_str().unwrap(),
        ],
    );
    let target = scratch.subdir("restored").join("data");
    let restore = run(
        "restore",
        &[
            "--repo",
            repo,
            "--json",
            "restore",
            "--pgdata",
            target.to_str().unwrap(),
        ],
    );
    assert!(restore["files"].is_number(), "restore: {runs:?}");

    // Failure paths: a store that is down, a bucket that does not exist, a bad setting.
    let down = format!("http://127.0.0.1:{}", walarch_tests::free_port());
    run(
        "store down",
        &[
            "--repo",
            repo,
            "--s3-endpoint",
            &down,
            "--retries",
            "1",
            "--json",
            "info",
        ],
    );
    run(
        "store down",
        &[
            "--repo",
            repo,
            "--s3-endpoint",
            &down,
            "--retries",
            "1",
            "wal-fetch",
            &first,
            dest.to_str().unwrap(),
        ],
    );
    run(
        "no bucket",
        &["--repo", "s3://no-such-bucket/x", "--json", "info"],
    );
    run(
        "bad setting",
        &["--repo", repo, "--compression", "lz4", "info"],
    );
    run("bad url", &["--repo", "s3://user:pass@bucket/x", "info"]);

    assert!(runs.iter().any(|(_, r)| r.code != 0), "failure paths ran");
    // The search reads what it claims to: the repository's name is printed, not its keys.
    assert!(
        runs.iter()
            .any(|(_, r)| r.stdout.contains("walarch-secrets")
                || r.stderr.contains("walarch-secrets")),
        "{runs:?}"
    );
    for (label, result) in &runs {
        assert_no_secret(&format!("stdout of {label}"), result.stdout.as_bytes());
        assert_no_secret(&format!("stderr of {label}"), result.stderr.as_bytes());
    }

    // What was written to disk: PostgreSQL's logs (archive_command's output), the spools and
    // their worker logs, the restored data directory, anything else under the scratch.
    primary.stop();
    let mut searched = 0;
    for file in files_below(scratch.path()) {
        let path: PathBuf = scratch.path().join(&file);
        if path == key_file {
            continue; // where the key belongs
        }
        if let Ok(bytes) = std::fs::read(&path) {
            assert_no_secret(&format!("{}", path.display()), &bytes);
            searched += 1;
        }
    }
    let worker_logs: Vec<PathBuf> = files_below(scratch.path())
        .into_iter()
        .filter(|f| f.ends_with("worker.log"))
        .map(|f| scratch.path().join(f))
        .collect();
    assert!(
        worker_logs
            .iter()
            .any(|log| std::fs::metadata(log).is_ok_and(|m| m.len() > 0)),
        "the push worker logged (at trace level) and its log was searched: {worker_logs:?}"
    );
    // And every object in the repository.
    let objects = s3_objects(&s3);
    assert!(!objects.is_empty());
    for (key, bytes) in objects {
        assert_no_secret(&format!("object {key}"), &bytes);
    }
    eprintln!("searched {} runs, {searched} files", runs.len());
}

/// Every object under the S3 server's bucket, read directly.
fn s3_objects(s3: &S3Server) -> Vec<(String, Vec<u8>)> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let store = s3.bucket_store();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut objects = Vec::new();
        for meta in listed {
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            objects.push((meta.location.to_string(), bytes.to_vec()));
        }
        objects
    })
}
