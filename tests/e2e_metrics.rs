//! `walarch metrics` with a real PostgreSQL 15, read by real parsers: the Prometheus
//! project's OpenMetrics parser (PyPI `prometheus-client`, strict) and `promtool check
//! metrics` (the text format node_exporter's textfile collector reads). A healthy server with
//! a backup and a passed drill reports them; an archive_command that fails shows in the
//! failure counter and the backlog; a store that is down reports `walarch_repository_up 0`
//! and no backup figures at all (never zeros an alert would misread); `--listen` serves the
//! same over HTTP. The example alert rules load (`promtool check rules`), fire as their unit
//! tests say (`promtool test rules`), and name only metrics walarch really prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use walarch_tests::ha::http_get;
use walarch_tests::{
    Cluster, KillOnDrop, Scratch, free_port, wait_for, walarch, walarch_as_postgres,
    walarch_backup, walarch_binary,
};

/// Parsed families: name → samples as (sample name, labels, value).
type Families = BTreeMap<String, Vec<(String, BTreeMap<String, String>, f64)>>;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// promtool, from `WALARCH_PROMTOOL` or `PATH` (scripts/install-prerequisites.sh installs it).
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("WALARCH_PROMTOOL") {
        return path.into();
    }
    let found = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "promtool is missing: run scripts/install-prerequisites.sh (or set WALARCH_PROMTOOL)"
    );
    path.into()
}

fn run_with_stdin(mut command: Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Parses `text` with prometheus_client's strict OpenMetrics parser; panics on any error.
fn parse(text: &str) -> Families {
    let mut python = Command::new("python3");
    python.arg(repo_root().join("tests/prometheus/parse_metrics.py"));
    let out = run_with_stdin(python, text);
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(name, family)| {
            let samples = family["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    (
                        s["name"].as_str().unwrap().to_owned(),
                        labels,
                        s["value"].as_f64().unwrap(),
                    )
                })
                .collect();
            (name.clone(), samples)
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(families: &Families, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .values()
        .flatten()
        .find(|(sample, l, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

fn must(families: &Families, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(families, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}: {families:?}"))
}

/// promtool's lint of the Prometheus text format (what node_exporter's textfile collector reads).
fn promtool_accepts(text: &str) {
    let mut command = Command::new(promtool());
    command.args(["check", "metrics"]);
    let out = run_with_stdin(command, text);
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_are_parsed_by_real_parsers_and_the_alert_rules_load() {
    // The rules first: they load, and fire as their unit tests say.
    let rules = repo_root().join("deploy/prometheus/walarch-alerts.yml");
    for args in [
        vec!["check".into(), "rules".into(), rules.display().to_string()],
        vec![
            "test".into(),
            "rules".into(),
            repo_root()
                .join("tests/prometheus/walarch-alerts.test.yml")
                .display()
                .to_string(),
        ],
    ] {
        let out = Command::new(promtool()).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let scratch = Scratch::new("metrics");
    let bin = walarch_binary(&scratch);
    let repo_dir = scratch.subdir("repo");
    let repo = format!("file://{}", repo_dir.display());
    let drills = scratch.subdir("drills");
    scratch.give_to_postgres(&drills);
    let mut primary = Cluster::init(&scratch, "primary", 1);
    primary.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --repo {repo} wal-push %p'\nwal_level = replica\n",
        bin.display()
    ));
    primary.start_and_wait();
    primary.sql("create table t (id int primary key)");
    primary.sql("insert into t select generate_series(1, 1000)");
    let backup = walarch_backup(&bin, &[], &repo, &primary);
    assert_eq!(backup.code, 0, "{backup:?}");
    let drill = walarch_as_postgres(
        &bin,
        &[],
        &[
            "--repo",
            &repo,
            "drill",
            "--target",
            "immediate",
            "--scratch",
            drills.to_str().unwrap(),
        ],
    );
    assert_eq!(drill.code, 0, "{drill:?}");
    primary.sql("insert into t select generate_series(1001, 2000)");
    primary.switch_and_wait_archived(Duration::from_secs(60));

    let data = primary.data.to_str().unwrap().to_owned();
    let conninfo = primary.conninfo();
    let metrics = || {
        let run = walarch(
            &bin,
            &[],
            &[
                "--repo", &repo, "metrics", "--pgdata", &data, "--dbname", &conninfo,
            ],
        );
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.ends_with("# EOF\n"), "{run:?}");
        run.stdout
    };

    // Healthy: a backup, a passed drill, WAL archived, nothing waiting.
    let text = metrics();
    promtool_accepts(&text);
    let m = parse(&text);
    assert_eq!(must(&m, "walarch_repository_up", &[]), 1.0);
    assert_eq!(must(&m, "walarch_postgres_up", &[]), 1.0);
    assert_eq!(must(&m, "walarch_backups", &[]), 1.0);
    assert_eq!(must(&m, "walarch_backups_damaged", &[]), 0.0);
    let backup_age = must(&m, "walarch_last_backup_age_seconds", &[]);
    assert!((0.0..600.0).contains(&backup_age), "{backup_age}");
    assert!(must(&m, "walarch_last_backup_size_bytes", &[]) > 1e6);
    assert!(must(&m, "walarch_last_backup_stored_bytes", &[]) > 0.0);
    assert!(must(&m, "walarch_last_backup_duration_seconds", &[]) > 0.0);
    assert_eq!(must(&m, "walarch_drills", &[]), 1.0);
    assert_eq!(must(&m, "walarch_drill_last_success", &[]), 1.0);
    assert!(must(&m, "walarch_drill_rto_seconds", &[]) > 0.0);
    let now = chrono::Utc::now().timestamp() as f64;
    let backup_end = must(&m, "walarch_last_backup_timestamp_seconds", &[]);
    let start = must(
        &m,
        "walarch_recoverable_window_start_timestamp_seconds",
        &[("timeline", "1")],
    );
    let end = must(
        &m,
        "walarch_recoverable_window_end_timestamp_seconds",
        &[("timeline", "1")],
    );
    assert!(
        (start - backup_end).abs() < 1.0 && start <= end && end <= now + 1.0,
        "window {start}..{end}, backup ended {backup_end}, now {now}"
    );
    assert_eq!(must(&m, "walarch_wal_gaps", &[("timeline", "1")]), 0.0);
    assert!(must(&m, "walarch_repository_bytes", &[("kind", "wal")]) > 0.0);
    assert!(must(&m, "walarch_repository_bytes", &[("kind", "backups")]) > 0.0);
    assert!(must(&m, "walarch_last_archived_age_seconds", &[]) < 600.0);
    assert!(must(&m, "walarch_postgres_archived_files", &[]) >= 1.0);
    assert_eq!(must(&m, "walarch_postgres_archive_failed_calls", &[]), 0.0);
    assert_eq!(must(&m, "walarch_archive_push_failed_files", &[]), 0.0);
    assert_eq!(must(&m, "walarch_restore_fetch_failed_files", &[]), 0.0);
    assert!(must(&m, "walarch_archive_oldest_ready_age_seconds", &[]) >= 0.0);

    // Every metric the alert rules use is one walarch prints.
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let printed: Vec<&str> = m.values().flatten().map(|(n, _, _)| n.as_str()).collect();
    let mut used: Vec<&str> = rules_text
        .match_indices("walarch_")
        .map(|(at, _)| {
            let rest = &rules_text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        assert!(
            printed.contains(&name),
            "the rules use {name}, which walarch metrics does not print"
        );
    }

    // --listen serves the same, read fresh on every scrape.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let _server = KillOnDrop(
        Command::new(&bin)
            .args([
                "--repo", &repo, "metrics", "--pgdata", &data, "--listen", &address,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = wait_for("the metrics endpoint", Duration::from_secs(30), || {
        http_get(&address, "/metrics").filter(|(status, _)| *status == 200)
    })
    .1;
    let served = parse(&body);
    assert_eq!(must(&served, "walarch_backups", &[]), 1.0);
    assert_eq!(must(&served, "walarch_drill_last_success", &[]), 1.0);
    drop(_server);

    // archive_command fails: the failure counter rises and WAL waits.
    primary.sql("ALTER SYSTEM SET archive_command = 'false'");
    primary.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_secs(1));
    primary.sql("insert into t select generate_series(2001, 3000)");
    primary.sql("SELECT pg_switch_wal()");
    let failing = wait_for("archive failures counted", Duration::from_secs(60), || {
        let m = parse(&metrics());
        (must(&m, "walarch_postgres_archive_failed_calls", &[]) > 0.0).then_some(m)
    });
    assert!(must(&failing, "walarch_archive_ready_files", &[]) >= 1.0);
    assert!(must(&failing, "walarch_archive_oldest_ready_age_seconds", &[]) > 0.0);

    // The store is down: up is 0, and no backup or drill figures at all.
    let down = format!("http://127.0.0.1:{}", free_port());
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
            "metrics",
            "--pgdata",
            &data,
        ],
    );
    assert_eq!(run.code, 0, "metrics never fail as a whole: {run:?}");
    promtool_accepts(&run.stdout);
    let m = parse(&run.stdout);
    assert_eq!(must(&m, "walarch_repository_up", &[]), 0.0);
    for absent in [
        "walarch_backups",
        "walarch_last_backup_age_seconds",
        "walarch_drill_last_success",
        "walarch_wal_gaps",
    ] {
        assert!(value(&m, absent, &[]).is_none(), "{absent}: {m:?}");
    }
    // The server's own side is still reported.
    assert!(must(&m, "walarch_archive_ready_files", &[]) >= 1.0);
    primary.stop();
}
