//! The replicated cluster end to end: one etcd, three PostgreSQL 15 servers each under its own
//! `walarch-k8s instance`, archiving into a local repository. Each manager reaches etcd through
//! its own relay, so a test can cut one member off. A checker writes to every member every
//! 50 ms and records which member acknowledged which write.
//!
//! Failover runs `WALARCH_FAILOVER_RUNS` times (2 by default: each run also rejoins the killed
//! member, so two show a failover onto each of two members; the measured series of at least 5
//! is `WALARCH_FAILOVER_RUNS=5`, see benches/README.md).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use walarch_tests::ha::{Accepted, Checker, Etcd, Member, walarch_k8s_binary};
use walarch_tests::{
    Cluster, Scratch, wait_for, wait_for_or_explain, walarch_as_postgres, walarch_binary,
};

/// Three clusters at once would not fit two cores: the tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Setup {
    // Fields drop in order: the members (managers and servers) stop first, then etcd, and
    // only then is the scratch directory removed (a running member would write into it again).
    members: Vec<Member>,
    etcd: Etcd,
    scratch: Scratch,
    repo: std::path::PathBuf,
    walarch: std::path::PathBuf,
    k8s: std::path::PathBuf,
}

impl Setup {
    fn start(label: &str) -> Setup {
        let scratch = Scratch::new(label);
        let etcd = Etcd::start(&scratch);
        let repo = scratch.subdir("repo");
        let walarch = walarch_binary(&scratch);
        let k8s = walarch_k8s_binary(&scratch);
        let members = ["a", "b", "c"]
            .iter()
            .map(|name| Member::new(&scratch, &k8s, name, &etcd.address(), &repo, &walarch, 1))
            .collect();
        let setup = Setup {
            scratch,
            etcd,
            members,
            repo,
            walarch,
            k8s,
        };
        let primary = setup.wait_healthy(Duration::from_secs(120));
        // The synchronous set settles last (the manager rewrites its configuration file for
        // each step; a file-level backup taken meanwhile could catch it changing size).
        let others: Vec<String> = (0..3)
            .filter(|&i| i != primary)
            .map(|i| format!("\"{}\"", setup.members[i].name))
            .collect();
        let wanted = format!("ANY 1 ({})", others.join(", "));
        wait_for(
            "the synchronous set to settle",
            Duration::from_secs(60),
            || {
                (psql_try(&setup.members[primary], "SHOW synchronous_standby_names").as_deref()
                    == Some(wanted.as_str()))
                .then_some(())
            },
        );
        psql(
            &setup.members[primary],
            "CREATE TABLE checker (member text, seq bigint PRIMARY KEY)",
        );
        setup
    }

    /// The member serving as primary (holding the lease), if exactly one does.
    fn primary(&self) -> Option<usize> {
        let primaries: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                self.members[i]
                    .status()
                    .is_some_and(|s| s["role"] == "primary" && s["lease_held"] == true)
            })
            .collect();
        (primaries.len() == 1).then(|| primaries[0])
    }

    /// One primary; every other member a replica streaming from it, in the synchronous set.
    fn wait_healthy(&self, timeout: Duration) -> usize {
        let describe = || self.describe();
        let started = Instant::now();
        loop {
            if let Some(p) = self.primary() {
                let leader = self.members[p].name.clone();
                let followers_ok = self.members.iter().enumerate().all(|(i, m)| {
                    i == p
                        || m.status().is_some_and(|s| {
                            s["role"] == "replica" && s["leader"] == leader.as_str()
                        })
                });
                let streaming = psql_try(
                    &self.members[p],
                    "SELECT string_agg(application_name, ',' ORDER BY application_name)
                       FROM pg_stat_replication WHERE state = 'streaming'",
                );
                let others: Vec<&str> = (0..self.members.len())
                    .filter(|&i| i != p)
                    .map(|i| self.members[i].name.as_str())
                    .collect();
                if followers_ok && streaming.as_deref() == Some(others.join(",").as_str()) {
                    return p;
                }
            }
            assert!(
                started.elapsed() < timeout,
                "cluster not healthy after {timeout:?}:\n{}",
                describe()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn checker(&self) -> Checker {
        Checker::start(
            &self
                .members
                .iter()
                .map(|m| (m.name.clone(), m.conninfo()))
                .collect::<Vec<_>>(),
        )
    }

    fn walarch(&self, args: &[&str]) -> walarch_tests::WalarchRun {
        let repo = self.repo.display().to_string();
        let mut all = vec!["--repo", repo.as_str(), "--json"];
        all.extend_from_slice(args);
        walarch_as_postgres(&self.walarch, &[], &all)
    }

    fn wait_new_primary(&self, old: usize, timeout: Duration) -> usize {
        let started = Instant::now();
        loop {
            if let Some(p) = self.primary().filter(|&p| p != old) {
                return p;
            }
            assert!(
                started.elapsed() < timeout,
                "no other member became primary within {timeout:?}:\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Each member's status and the end of its manager's log, for failure messages.
    fn describe(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}: {:?}\n{}", m.name, m.status(), m.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn psql_try(member: &Member, sql: &str) -> Option<String> {
    let out = std::process::Command::new(Path::new(walarch_tests::pg::PG_BIN).join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &member.conninfo(),
            "-c",
            sql,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn psql(member: &Member, sql: &str) -> String {
    psql_try(member, sql)
        .unwrap_or_else(|| panic!("{sql} failed on {}\n{}", member.name, member.log_tail()))
}

fn first_accepted_after(accepted: &[Accepted], member: &str, after: Instant) -> Option<Instant> {
    accepted
        .iter()
        .filter(|a| a.member == member && a.at > after)
        .map(|a| a.at)
        .min()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
fn failover_after_kill_9_loses_no_acknowledged_commit_and_the_old_primary_rejoins() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runs: usize = std::env::var("WALARCH_FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut setup = Setup::start("failover");
    // A base backup on timeline 1, for the recovery across the failovers at the end.
    let p = setup.primary().unwrap();
    let pgdata = setup.members[p].pgdata.display().to_string();
    let conninfo = setup.members[p].conninfo();
    let backup = setup.walarch(&["backup", "--pgdata", &pgdata, "--dbname", &conninfo]);
    assert_eq!(backup.code, 0, "{backup:?}");
    let checker = setup.checker();
    let mut times = Vec::new();
    for run in 0..runs {
        std::thread::sleep(Duration::from_millis(1500));
        let old = setup.primary().expect("a primary");
        let old_name = setup.members[old].name.clone();
        let killed_at = Instant::now();
        setup.members[old].kill_all();
        let new = setup.wait_new_primary(old, Duration::from_secs(60));
        let new_name = setup.members[new].name.clone();
        let first = wait_for(
            "a write accepted by the new primary",
            Duration::from_secs(60),
            || first_accepted_after(&checker.snapshot(), &new_name, killed_at),
        );
        let took = first.duration_since(killed_at).as_secs_f64();
        eprintln!("run {run}: killed {old_name}, {new_name} accepted a write {took:.2} s later");
        times.push(took);
        // The killed member comes back: archives what it had not, rewinds, follows.
        setup.members[old].start();
        setup.wait_healthy(Duration::from_secs(120));
        let log = setup.members[old].log_text();
        assert!(
            log.contains("archived the old primary's remaining WAL before rewinding"),
            "{log}"
        );
        assert!(
            !log.contains("rewind failed"),
            "pg_rewind was not enough:\n{log}"
        );
    }
    let accepted = checker.finish();
    let primary = setup.primary().expect("a primary at the end");
    // `walarch-k8s status --json` sees the same cluster.
    let status = std::process::Command::new(&setup.k8s)
        .args(["status", "--cluster", "test", "--json", "--coordination"])
        .arg(format!("etcd://{}/walarch-test", setup.etcd.address()))
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["leader"],
        setup.members[primary].name.as_str(),
        "{status}"
    );
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    // Every write a client saw acknowledged is on the final primary.
    let stored: std::collections::HashSet<i64> =
        psql(&setup.members[primary], "SELECT seq FROM checker")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let lost: Vec<&Accepted> = accepted
        .iter()
        .filter(|a| !stored.contains(&a.seq))
        .collect();
    let per_member: Vec<(String, usize)> = setup
        .members
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                accepted.iter().filter(|a| a.member == m.name).count(),
            )
        })
        .collect();
    eprintln!(
        "failover over {runs} runs: median {:.2} s, max {:.2} s; acknowledged writes per member {per_member:?}, lost {}",
        median(times.clone()),
        times.iter().copied().fold(0.0, f64::max),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes missing after failover: {lost:?}"
    );
    assert!(
        accepted.len() > 20,
        "the checker wrote too little to show anything: {}",
        accepted.len()
    );
    // The repository holds every new timeline's history file.
    for timeline in 2..=(runs as u32 + 1) {
        let history = setup.repo.join(format!("wal/{timeline:08X}.history"));
        wait_for(
            &format!("{} in the repository", history.display()),
            Duration::from_secs(30),
            || history.is_file().then_some(()),
        );
    }
    point_in_time_recovery_after_the_failovers(&setup, primary, stored.len());
}

/// Restores the timeline-1 backup to a time after the last failover: recovery follows the
/// archived history files and WAL of every timeline and returns the final primary's rows.
fn point_in_time_recovery_after_the_failovers(setup: &Setup, primary: usize, rows: usize) {
    let member = &setup.members[primary];
    std::thread::sleep(Duration::from_millis(1100));
    let target = psql(
        member,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_millis(1100));
    psql(
        member,
        "INSERT INTO checker VALUES ('after the target', -1)",
    );
    let segment = psql(member, "SELECT pg_walfile_name(pg_current_wal_lsn())");
    psql(member, "SELECT pg_switch_wal()");
    wait_for("the last segment archived", Duration::from_secs(60), || {
        let archived = psql(
            member,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        (archived.as_str() >= segment.as_str()).then_some(())
    });
    let dir = setup.scratch.subdir("pitr");
    let data = dir.join("data");
    let port = walarch_tests::free_port();
    let restore = setup.walarch(&[
        "restore",
        "--pgdata",
        data.to_str().unwrap(),
        "--target-time",
        &target,
        "--start",
        "--pg-bin",
        walarch_tests::pg::PG_BIN,
        "--set",
        &format!("port={port}"),
        "--set",
        &format!("unix_socket_directories={}", dir.display()),
        "--set",
        "listen_addresses=127.0.0.1",
        "--set",
        "archive_mode=off",
    ]);
    let recovery_log =
        std::fs::read_to_string(data.join("log/walarch-recovery.log")).unwrap_or_default();
    let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap_or_default();
    let conf_tail: Vec<&str> = conf.lines().rev().take(15).collect();
    assert_eq!(
        restore.code, 0,
        "{restore:?}\n{recovery_log}\npostgresql.conf ends (last first): {conf_tail:?}"
    );
    let restored = Cluster::adopt(data, port);
    // Recovery followed the archived history files to the final primary's timeline.
    let primary_timeline = member.status().unwrap()["timeline"].as_u64().unwrap();
    assert!(
        restore.stdout.contains(&format!(
            "[\"recovery_target_timeline\",\"{primary_timeline}\"]"
        )),
        "{restore:?}"
    );
    let timeline = primary_timeline;
    assert_eq!(
        restored.sql("SELECT count(*) FROM checker"),
        rows.to_string()
    );
    assert_eq!(
        restored.sql("SELECT count(*) FROM checker WHERE seq = -1"),
        "0"
    );
    eprintln!("PITR to {target} (timeline {timeline}): {rows} rows, as the final primary had");
}

#[test]
fn a_primary_cut_off_from_etcd_stops_writing_before_another_member_is_promoted() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::start("partition");
    let checker = setup.checker();
    std::thread::sleep(Duration::from_millis(1500));
    let old = setup.primary().expect("a primary");
    let old_name = setup.members[old].name.clone();
    let cut_at = Instant::now();
    setup.members[old].relay.cut();
    // The others still reach etcd: one of them takes over.
    let new = setup.wait_new_primary(old, Duration::from_secs(60));
    let new_name = setup.members[new].name.clone();
    wait_for(
        "a write accepted by the new primary",
        Duration::from_secs(60),
        || first_accepted_after(&checker.snapshot(), &new_name, cut_at),
    );
    std::thread::sleep(Duration::from_secs(2));
    let accepted = checker.finish();
    let last_old = accepted
        .iter()
        .filter(|a| a.member == old_name)
        .map(|a| a.at)
        .max()
        .expect("the old primary accepted writes before the cut");
    let first_new = first_accepted_after(&accepted, &new_name, cut_at).unwrap();
    let overlaps = accepted
        .iter()
        .filter(|a| a.member == old_name && a.at >= first_new)
        .count();
    let per_member: Vec<(String, usize)> = setup
        .members
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                accepted.iter().filter(|a| a.member == m.name).count(),
            )
        })
        .collect();
    eprintln!(
        "partition: {old_name} cut off; its last write {:.2} s after the cut, {new_name}'s first {:.2} s after; writes per member {per_member:?}; overlaps {overlaps}",
        last_old.saturating_duration_since(cut_at).as_secs_f64(),
        first_new.duration_since(cut_at).as_secs_f64()
    );
    assert!(
        last_old < first_new,
        "the old primary accepted a write after the new one did"
    );
    assert_eq!(overlaps, 0);
    // Back in touch, the old primary rejoins as a replica of the new one.
    setup.members[old].relay.restore();
    setup.wait_healthy(Duration::from_secs(120));
    assert_eq!(setup.primary(), Some(new));
}

#[test]
fn with_etcd_down_no_member_accepts_writes_until_it_is_back() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut setup = Setup::start("etcd-down");
    let checker = setup.checker();
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    setup.etcd.kill();
    // The lease TTL is 4 s: by then the primary must have stopped writing, and nobody else
    // may start. Watch for three TTLs.
    std::thread::sleep(Duration::from_secs(12));
    let during = checker.snapshot();
    let ttl = Duration::from_secs(4);
    let late: Vec<&Accepted> = during.iter().filter(|a| a.at > killed_at + ttl).collect();
    let last = during
        .iter()
        .map(|a| a.at)
        .max()
        .map(|at| at.saturating_duration_since(killed_at).as_secs_f64());
    eprintln!(
        "etcd down: last write accepted {last:?} s after etcd was killed; {} writes after the TTL",
        late.len()
    );
    assert!(
        late.is_empty(),
        "writes accepted with no coordination store: {late:?}"
    );
    let restarted_at = Instant::now();
    setup.etcd.restart();
    let first = wait_for(
        "a write accepted after etcd came back",
        Duration::from_secs(60),
        || {
            checker
                .snapshot()
                .iter()
                .filter(|a| a.at > restarted_at)
                .map(|a| a.at)
                .min()
        },
    );
    eprintln!(
        "etcd back: writes accepted again {:.2} s after its restart",
        first.duration_since(restarted_at).as_secs_f64()
    );
    let accepted = checker.finish();
    setup.wait_healthy(Duration::from_secs(120));
    // Nothing acknowledged was lost.
    let primary = setup.primary().unwrap();
    let stored: std::collections::HashSet<i64> =
        psql(&setup.members[primary], "SELECT seq FROM checker")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    assert!(accepted.iter().all(|a| stored.contains(&a.seq)));
}

#[test]
fn a_planned_switchover_loses_nothing_and_a_fenced_primary_hands_over() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::start("switchover");
    let checker = setup.checker();
    std::thread::sleep(Duration::from_millis(1500));
    let old = setup.primary().expect("a primary");
    let chosen = (old + 2) % 3;
    let chosen_name = setup.members[chosen].name.clone();
    // Asked of a replica, the request is refused with the leader's name.
    let (code, body) = walarch_tests::ha::http_request(
        &setup.members[(old + 1) % 3].http,
        "POST",
        &format!("/switchover?to={chosen_name}"),
    )
    .unwrap();
    assert_eq!(code, 409, "{body}");
    let asked_at = Instant::now();
    let (code, body) = walarch_tests::ha::http_request(
        &setup.members[old].http,
        "POST",
        &format!("/switchover?to={chosen_name}"),
    )
    .unwrap();
    assert_eq!(code, 202, "{body}");
    let new = setup.wait_new_primary(old, Duration::from_secs(30));
    assert_eq!(
        new,
        chosen,
        "the chosen member took over\n{}",
        setup.describe()
    );
    let first = wait_for(
        "a write accepted by the chosen member",
        Duration::from_secs(30),
        || first_accepted_after(&checker.snapshot(), &chosen_name, asked_at),
    );
    let took = first.duration_since(asked_at).as_secs_f64();
    eprintln!("switchover to {chosen_name}: writes accepted again {took:.2} s after the request");
    assert!(
        took < 10.0,
        "switchover took {took:.2} s\n{}",
        setup.describe()
    );
    setup.wait_healthy(Duration::from_secs(120));

    // An operator fences the primary: it stops writing and gives the lease up; another
    // member takes over; unfenced, it rejoins as a replica.
    let fenced_at = Instant::now();
    let (code, _) =
        walarch_tests::ha::http_request(&setup.members[new].http, "POST", "/fence").unwrap();
    assert_eq!(code, 200);
    let after_fence = setup.wait_new_primary(new, Duration::from_secs(60));
    wait_for(
        "the fenced member to say so",
        Duration::from_secs(30),
        || (setup.members[new].role().as_deref() == Some("fenced")).then_some(()),
    );
    let next_name = setup.members[after_fence].name.clone();
    let first_after_fence = wait_for("a write after the fence", Duration::from_secs(60), || {
        first_accepted_after(&checker.snapshot(), &next_name, fenced_at)
    });
    let (code, _) =
        walarch_tests::ha::http_request(&setup.members[new].http, "POST", "/unfence").unwrap();
    assert_eq!(code, 200);
    setup.wait_healthy(Duration::from_secs(120));
    let accepted = checker.finish();
    let fenced_name = &setup.members[new].name;
    let late = accepted
        .iter()
        .filter(|a| {
            &a.member == fenced_name
                && a.at >= first_after_fence
                && a.at < first_after_fence + Duration::from_secs(5)
        })
        .count();
    assert_eq!(
        late, 0,
        "the fenced member accepted writes after the next primary did"
    );
    let primary = setup.primary().unwrap();
    let stored: std::collections::HashSet<i64> =
        psql(&setup.members[primary], "SELECT seq FROM checker")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let lost: Vec<&Accepted> = accepted
        .iter()
        .filter(|a| !stored.contains(&a.seq))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[test]
fn a_primary_whose_manager_dies_stops_with_it_and_another_member_takes_over() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut setup = Setup::start("orphan");
    let checker = setup.checker();
    std::thread::sleep(Duration::from_millis(1500));
    let old = setup.primary().expect("a primary");
    let old_name = setup.members[old].name.clone();
    let killed_at = Instant::now();
    setup.members[old].kill_manager();
    // Nobody could fence a server whose manager is gone: it stops by itself.
    let port = setup.members[old].pg_port;
    wait_for(
        "the orphaned primary to stop",
        Duration::from_secs(10),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    );
    let stopped_after = killed_at.elapsed().as_secs_f64();
    let new = setup.wait_new_primary(old, Duration::from_secs(60));
    let new_name = setup.members[new].name.clone();
    wait_for(
        "a write accepted by the new primary",
        Duration::from_secs(60),
        || first_accepted_after(&checker.snapshot(), &new_name, killed_at),
    );
    let accepted = checker.finish();
    let late = accepted
        .iter()
        .filter(|a| a.member == old_name && a.at > killed_at + Duration::from_secs(1))
        .count();
    eprintln!(
        "orphan: {old_name}'s server stopped {stopped_after:.2} s after its manager was killed; {new_name} took over"
    );
    assert_eq!(
        late, 0,
        "the orphaned primary accepted writes after its manager died"
    );
}

/// What the operator asks of instance managers, with real servers: a backup taken on a
/// replica through `POST /backups`, and a new cluster bootstrapped from the repository at a
/// point in time (a PITR clone) that archives into its own repository, with pg_wal on a
/// separate directory, while the source repository stays untouched.
#[test]
fn a_replica_backs_up_on_request_and_a_clone_bootstraps_from_the_repository_at_a_target() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("cluster-clone");
    let etcd = Etcd::start(&scratch);
    let source_repo = scratch.subdir("repo");
    let walarch = walarch_binary(&scratch);
    let k8s = walarch_k8s_binary(&scratch);
    // Both clusters encrypt their repositories with one key file, the PostgreSQL user's.
    let key_file = scratch.subdir("keys").join("walarch.key");
    let made = walarch_tests::walarch_as_postgres(
        &walarch,
        &[],
        &["key", "new", key_file.to_str().unwrap()],
    );
    assert_eq!(made.code, 0, "{made:?}");
    let with_key = [
        "--encryption-key-file".to_owned(),
        key_file.display().to_string(),
    ];
    let mut members: Vec<Member> = ["a", "b"]
        .iter()
        .map(|name| {
            Member::with_options(
                &scratch,
                &k8s,
                name,
                "test",
                &etcd.address(),
                &source_repo,
                &walarch,
                1,
                &with_key,
                None,
            )
        })
        .collect();
    let (primary, replica) = wait_for(
        "a primary and a streaming replica",
        Duration::from_secs(120),
        || {
            let roles: Vec<Option<String>> = members.iter().map(Member::role).collect();
            match (roles[0].as_deref(), roles[1].as_deref()) {
                (Some("primary"), Some("replica")) => Some((0, 1)),
                (Some("replica"), Some("primary")) => Some((1, 0)),
                _ => None,
            }
        },
    );
    psql(&members[primary], "CREATE TABLE t (id int)");
    psql(
        &members[primary],
        "INSERT INTO t SELECT generate_series(1, 100)",
    );

    // The operator's backup, on the replica.
    let http = members[replica].http.clone();
    let (code, body) =
        walarch_tests::ha::http_request(&http, "POST", "/backups?name=nightly-1").unwrap();
    assert_eq!(code, 202, "{body}");
    let (code, _) = walarch_tests::ha::http_request(&http, "POST", "/backups?name=other").unwrap();
    assert_eq!(code, 409, "one backup at a time");
    let state = wait_for("the backup to complete", Duration::from_secs(120), || {
        let (_, body) = walarch_tests::ha::http_get(&http, "/backups/nightly-1")?;
        let state: serde_json::Value = serde_json::from_str(&body).ok()?;
        (state["phase"] != "running").then_some(state)
    });
    assert_eq!(
        state["phase"],
        "completed",
        "{state}\n{}",
        members[replica].log_tail()
    );
    let backup_id = state["backup_id"].as_str().unwrap().to_owned();
    let (code, _) = walarch_tests::ha::http_get(&http, "/backups/never-asked").unwrap();
    assert_eq!(code, 404);
    let listed = walarch_tests::walarch(
        &walarch,
        &[],
        &["--repo", source_repo.to_str().unwrap(), "--json", "backups"],
    );
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains(&backup_id), "{listed:?}");
    assert!(
        listed.stdout.contains("\"from_standby\":true"),
        "taken on the replica: {listed:?}"
    );
    // Archived WAL and the backup's parts are sealed (the listing needs no key).
    let sealed = |repo: &std::path::Path, what: &str| {
        let files: Vec<_> = walarch_tests::files_below(repo)
            .into_iter()
            .filter(|f| f.to_string_lossy().contains(what) && f.to_string_lossy().ends_with(".zst"))
            .collect();
        assert!(!files.is_empty(), "no {what} objects in {}", repo.display());
        for file in files {
            let bytes = std::fs::read(repo.join(&file)).unwrap();
            assert!(
                bytes.starts_with(b"age-encryption.org/v1\n"),
                "{} is not sealed",
                file.display()
            );
        }
    };
    sealed(&source_repo, "wal/");
    sealed(&source_repo, "/data/");

    // A point in time between two batches of rows.
    std::thread::sleep(Duration::from_millis(1100));
    let target = psql(
        &members[primary],
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || 'Z'",
    );
    std::thread::sleep(Duration::from_millis(1100));
    psql(
        &members[primary],
        "INSERT INTO t SELECT generate_series(101, 200)",
    );
    let segment = psql(
        &members[primary],
        "SELECT pg_walfile_name(pg_current_wal_lsn())",
    );
    psql(&members[primary], "SELECT pg_switch_wal()");
    wait_for("the last segment archived", Duration::from_secs(60), || {
        let archived = psql(
            &members[primary],
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        (archived.as_str() >= segment.as_str()).then_some(())
    });
    for member in &mut members {
        member.stop();
    }
    let source_before = walarch_tests::files_below(&source_repo);

    // The clone refuses its source's repository before it starts anything.
    let refused = std::process::Command::new(&k8s)
        .args(["instance", "--name", "x", "--cluster", "clone", "--pgdata"])
        .arg(scratch.path().join("never"))
        .args([
            "--coordination",
            &format!("etcd://{}/walarch-test", etcd.address()),
        ])
        .args([
            "--http",
            "127.0.0.1:1",
            "--walarch-bin",
            walarch.to_str().unwrap(),
        ])
        .args(["--repo", source_repo.to_str().unwrap()])
        .args(["--recover-from", source_repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("archives into a new repository"),
        "{stderr}"
    );
    assert!(!scratch.path().join("never").exists());

    let clone_repo = scratch.subdir("clone-repo");
    let waldir = scratch.subdir("x-wal");
    scratch.give_to_postgres(&waldir);
    // What an interrupted bootstrap leaves: its marker beside a half-restored data directory
    // that looks startable. The manager must discard it, never start it.
    let clone_dir = scratch.subdir("x");
    let leftover = clone_dir.join("data");
    std::fs::create_dir_all(leftover.join("global")).unwrap();
    std::fs::write(leftover.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(leftover.join("half-restored"), "").unwrap();
    std::fs::write(clone_dir.join("data.bootstrap-in-progress"), "").unwrap();
    scratch.give_to_postgres(&clone_dir);
    let clone = Member::with_options(
        &scratch,
        &k8s,
        "x",
        "clone",
        &etcd.address(),
        &clone_repo,
        &walarch,
        0,
        &[
            "--recover-from".into(),
            source_repo.display().to_string(),
            with_key[0].clone(),
            with_key[1].clone(),
            "--recovery-target-time".into(),
            target.clone(),
            "--waldir".into(),
            waldir.display().to_string(),
        ],
        Some("clone-secret"),
    );
    wait_for(
        "the clone to recover and lead",
        Duration::from_secs(120),
        || (clone.role().as_deref() == Some("primary")).then_some(()),
    );
    assert_eq!(
        psql(&clone, "SELECT count(*) FROM t"),
        "100",
        "the rows before {target} only"
    );
    // The restore's recovery settings are gone: no later start stops at the old target or
    // fetches from the source.
    let auto = std::fs::read_to_string(clone.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("recovery_target_time"), "{auto}");
    assert!(!auto.contains("restore_command"), "{auto}");
    assert!(psql(&clone, "SHOW restore_command").contains(clone_repo.to_str().unwrap()));
    assert_eq!(
        std::fs::read_link(clone.pgdata.join("pg_wal")).unwrap(),
        waldir
    );
    assert!(
        !clone.pgdata.join("half-restored").exists(),
        "the leftover was discarded"
    );
    assert!(!clone_dir.join("data.bootstrap-in-progress").exists());
    assert!(
        clone
            .log_text()
            .contains("a recovery bootstrap did not finish")
    );
    // The clone writes and archives into its own repository; the source is as it was.
    psql(&clone, "INSERT INTO t VALUES (-1)");
    let segment = psql(&clone, "SELECT pg_walfile_name(pg_current_wal_lsn())");
    psql(&clone, "SELECT pg_switch_wal()");
    // A timeout says why: the archiver's view and the member's log.
    wait_for_or_explain(
        "the clone's segment archived",
        Duration::from_secs(60),
        || {
            let archived = psql(
                &clone,
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            (archived.as_str() >= segment.as_str()).then_some(())
        },
        || {
            format!(
                "pg_stat_archiver: {}\npush worker log: {}\n{}",
                psql(
                    &clone,
                    "SELECT archived_count, last_archived_wal, failed_count, last_failed_wal, \
                     last_failed_time FROM pg_stat_archiver"
                ),
                std::fs::read_to_string(clone.pgdata.join("pg_wal/walarch/push/worker.log"))
                    .unwrap_or_default(),
                clone.log_tail()
            )
        },
    );
    let clone_files = walarch_tests::files_below(&clone_repo);
    assert!(
        clone_files
            .iter()
            .any(|f| f.to_string_lossy().contains(&segment)),
        "{segment} in the clone's repository: {clone_files:?}"
    );
    sealed(&clone_repo, "wal/");
    assert_eq!(
        walarch_tests::files_below(&source_repo),
        source_before,
        "the source repository is untouched"
    );
    drop(clone);
    drop(members);
}
