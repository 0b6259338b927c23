//! Client-side encryption end to end, against a real S3 server (moto) and a real PostgreSQL 15:
//! a drill (archive → base backup → a mistake → point-in-time recovery) with encryption on,
//! every stored WAL object and backup part sealed; the key rotated half-way, old objects still
//! readable; a wrong key, a missing key and one flipped byte in a stored WAL object or backup
//! part all fail (126 for wal-fetch), nothing handed to PostgreSQL; and the emergency path:
//! a stored segment opened by hand with the standard `age` tool and `zstd`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walarch_tests::{
    Cluster, S3Server, Scratch, run_ok, walarch_as_postgres, walarch_backup, walarch_binary,
};

const SNAPSHOT_SQL: &str =
    "select coalesce(string_agg(id || ':' || phase, ',' order by id), '') from drill";

fn write_rows(cluster: &Cluster, from: u32, to: u32, phase: &str) {
    cluster.sql(&format!(
        "do $$ begin for i in {from}..{to} loop \
         insert into drill (id, phase) values (i, '{phase}'); commit; end loop; end $$"
    ));
}

/// The S3 server's objects, read and written directly (to inspect and to damage them).
struct Bucket {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(s3: &S3Server) -> Self {
        Bucket {
            store: s3.bucket_store(),
            runtime: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let prefix = object_store::path::Path::from(prefix);
        self.runtime.block_on(async {
            let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await.unwrap();
            listed.into_iter().map(|m| m.location.to_string()).collect()
        })
    }

    fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let key = object_store::path::Path::from(key);
        self.runtime.block_on(async {
            self.store
                .get(&key)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let key = object_store::path::Path::from(key);
        self.runtime
            .block_on(self.store.put(&key, bytes.into()))
            .unwrap();
    }
}

fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(b"age-encryption.org/v1\n")
}

/// `walarch key new|rotate FILE` as the PostgreSQL OS user (who reads the key).
fn key(bin: &Path, verb: &str, file: &Path) -> serde_json::Value {
    let run = walarch_as_postgres(bin, &[], &["--json", "key", verb, file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "key {verb}: {run:?}");
    run.json()
}

#[test]
fn an_encrypted_archive_backs_up_and_recovers_to_a_time_and_refuses_wrong_keys_and_damage() {
    let scratch = Scratch::new("encryption");
    let s3 = S3Server::start(&scratch, "walarch-encrypted");
    let bucket = Bucket::new(&s3);
    let bin = walarch_binary(&scratch);
    let env = s3.env();
    let repo = "s3://walarch-encrypted/repo";
    let keys = scratch.subdir("keys");
    let key_file = keys.join("walarch.key");
    let first_key = key(&bin, "new", &key_file)["current"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_arg = key_file.to_str().unwrap().to_owned();
    let walarch = |args: &[&str]| {
        let mut all = vec!["--repo", repo, "--encryption-key-file", key_arg.as_str()];
        all.extend_from_slice(args);
        walarch_as_postgres(&bin, &env, &all)
    };

    let mut primary = Cluster::init(&scratch, "primary", 1).with_env(&env);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} --encryption-key-file {} wal-push %p'\n\
         wal_level = replica\n",
        bin.display(),
        key_file.display()
    ));
    primary.start_and_wait();
    primary.sql("create table drill (id int primary key, phase text not null)");
    primary.sql("create table filler (g int, payload text)");
    write_rows(&primary, 1, 5, "seed");
    let backup = walarch_backup(
        &bin,
        &[
            env.clone(),
            vec![("WALARCH_ENCRYPTION_KEY_FILE".into(), key_arg.clone())],
        ]
        .concat(),
        repo,
        &primary,
    );
    assert_eq!(backup.code, 0, "backup: {backup:?}");
    let backup_id = backup.json()["id"].as_str().unwrap().to_owned();

    // The key is rotated: what follows is sealed for the new key, the old objects stay
    // readable through the old key, still in the file. A running push-ahead worker keeps the
    // key it started with until it exits, two seconds after archiving goes idle.
    primary.switch_and_wait_archived(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let rotated = key(&bin, "rotate", &key_file);
    assert_ne!(rotated["current"], first_key.as_str());
    assert_eq!(rotated["keys"][1], first_key.as_str());
    write_rows(&primary, 6, 10, "a");
    primary.sql(
        "insert into filler select g, repeat(md5(g::text), 16) from generate_series(1, 4000) g",
    );
    std::thread::sleep(Duration::from_millis(300));
    let target = primary.sql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    let expected = primary.sql(SNAPSHOT_SQL);
    std::thread::sleep(Duration::from_millis(300));
    primary.sql("delete from drill"); // the mistake
    write_rows(&primary, 11, 12, "after");
    primary.switch_and_wait_archived(Duration::from_secs(60));

    // What the bucket holds: every WAL segment and backup part sealed, for the key of its
    // time; the identity says the repository is encrypted; history files and the manifest
    // are readable.
    let wal_keys: Vec<String> = bucket
        .keys("repo/wal")
        .into_iter()
        .filter(|k| !k.ends_with(".history"))
        .collect();
    assert!(wal_keys.len() >= 3, "{wal_keys:?}");
    let mut key_ids = std::collections::BTreeSet::new();
    for key in &wal_keys {
        let bytes = bucket.get(key);
        assert!(is_sealed(&bytes), "{key} is not sealed");
        let header = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned();
        let id = header
            .lines()
            .find_map(|l| l.strip_prefix("-> walarch-key "))
            .unwrap_or_else(|| panic!("{key} names no key: {header}"));
        key_ids.insert(id.to_owned());
    }
    assert_eq!(key_ids.len(), 2, "objects of both keys: {key_ids:?}");
    let part_keys = bucket.keys(&format!("repo/backups/{backup_id}"));
    let parts: Vec<&String> = part_keys.iter().filter(|k| k.contains("/data/")).collect();
    assert!(!parts.is_empty(), "{part_keys:?}");
    for part in &parts {
        assert!(is_sealed(&bucket.get(part)), "{part} is not sealed");
    }
    let identity: serde_json::Value =
        serde_json::from_slice(&bucket.get("repo/walarch.json")).unwrap();
    assert_eq!(identity["encryption"], "age", "{identity}");
    let manifest = bucket.get(&format!("repo/backups/{backup_id}/manifest.json"));
    assert!(serde_json::from_slice::<serde_json::Value>(&manifest).is_ok());

    // Without the key: listing and planning what needs no content work; fetching does not.
    let keyless = walarch_as_postgres(&bin, &env, &["--repo", repo, "--json", "backups"]);
    assert_eq!(keyless.code, 0, "backups without the key: {keyless:?}");
    let fetched = scratch.subdir("fetched");
    let dest = fetched.join("RECOVERYXLOG");
    let segment_name = |key: &str| {
        Path::new(key)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_owned()
    };
    let first_segment = segment_name(&wal_keys[0]);
    let no_key = walarch_as_postgres(
        &bin,
        &env,
        &[
            "--repo",
            repo,
            "wal-fetch",
            &first_segment,
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(no_key.code, 126, "{no_key:?}");
    assert!(no_key.stderr.contains("encryption-key-file"), "{no_key:?}");
    assert!(!dest.exists());

    // A wrong key: 126, named.
    let other_key = keys.join("other.key");
    key(&bin, "new", &other_key);
    let wrong = walarch_as_postgres(
        &bin,
        &env,
        &[
            "--repo",
            repo,
            "--encryption-key-file",
            other_key.to_str().unwrap(),
            "wal-fetch",
            &first_segment,
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(wrong.code, 126, "{wrong:?}");
    assert!(wrong.stderr.contains("not in the key file"), "{wrong:?}");
    assert!(!dest.exists());

    // The right key opens old and new objects alike.
    let ok = walarch(&["wal-fetch", &first_segment, dest.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{ok:?}");

    // Nor may a host without the key write into the repository (it would store plaintext).
    let spare = scratch.subdir("spare");
    std::fs::copy(&dest, spare.join(&first_segment)).unwrap();
    scratch.give_to_postgres(&spare.join(&first_segment));
    let keyless_push = walarch_as_postgres(
        &bin,
        &env,
        &[
            "--repo",
            repo,
            "wal-push",
            spare.join(&first_segment).to_str().unwrap(),
        ],
    );
    assert_eq!(keyless_push.code, 1, "{keyless_push:?}");
    assert!(
        keyless_push.stderr.contains("created with encryption"),
        "{keyless_push:?}"
    );
    std::fs::remove_file(&dest).unwrap();

    // The emergency path, by hand with standard tools: age opens the object, zstd unpacks it.
    let sealed_path = scratch.path().join("sealed.zst.age");
    std::fs::write(&sealed_path, bucket.get(&wal_keys[0])).unwrap();
    let opened = run_ok(Command::new("sh").arg("-c").arg(format!(
        "age -d -i {} {} | zstd -d -c",
        key_file.display(),
        sealed_path.display()
    )));
    let via_walarch = walarch(&["wal-fetch", &first_segment, dest.to_str().unwrap()]);
    assert_eq!(via_walarch.code, 0);
    assert!(
        opened.stdout == std::fs::read(&dest).unwrap(),
        "age | zstd gives the segment walarch fetches"
    );
    std::fs::remove_file(&dest).unwrap();

    // The recovery drill, with the key: restore the backup and recover to the target.
    let restore_dir = scratch.subdir("restored");
    let data = restore_dir.join("data");
    let port = walarch_tests::free_port();
    let restore = walarch(&[
        "--json",
        "restore",
        "--pgdata",
        data.to_str().unwrap(),
        "--target-time",
        &target,
        "--start",
        "--pg-bin",
        walarch_tests::pg::PG_BIN,
        "--start-timeout",
        "300",
        "--set",
        &format!("port={port}"),
        "--set",
        &format!("unix_socket_directories={}", restore_dir.display()),
        "--set",
        "listen_addresses=127.0.0.1",
        "--set",
        "archive_mode=off",
    ]);
    let log = std::fs::read_to_string(data.join("log/walarch-recovery.log")).unwrap_or_default();
    assert_eq!(restore.code, 0, "{restore:?}\n{log}");
    let auto_conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("--encryption-key-file"),
        "the restored server fetches with the key: {auto_conf}"
    );
    let restored = Cluster::adopt(data.clone(), port);
    assert_eq!(
        restored.sql(SNAPSHOT_SQL),
        expected,
        "exactly the rows committed before the target"
    );
    drop(restored);

    // One flipped byte in a stored WAL object: 126, nothing handed to PostgreSQL.
    let victim = wal_keys.last().unwrap();
    let mut bytes = bucket.get(victim);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    bucket.put(victim, bytes);
    let damaged = walarch(&["wal-fetch", &segment_name(victim), dest.to_str().unwrap()]);
    assert_eq!(damaged.code, 126, "{damaged:?}");
    assert!(damaged.stderr.contains("authentication"), "{damaged:?}");
    assert!(!dest.exists());

    // One flipped byte in a backup part: verify and restore refuse it.
    let part = parts[0];
    let mut bytes = bucket.get(part);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    bucket.put(part, bytes);
    let verify = walarch(&["--json", "verify", "--backup", &backup_id]);
    assert_ne!(
        verify.code, 0,
        "verify must fail on a flipped byte: {verify:?}"
    );
    let broken = scratch.subdir("broken").join("data");
    let restore = walarch(&["restore", "--pgdata", broken.to_str().unwrap()]);
    assert_ne!(restore.code, 0, "{restore:?}");
    assert!(!broken.join("global/pg_control").exists(), "no pg_control");
    primary.stop();
}
