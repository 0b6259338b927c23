//! Backs a running server up, plans recovery to a moment between two commits, restores the
//! backup to that moment and starts the copy, with walarch-core's public API only. The copy
//! must hold the row committed before the moment and not the one after.
//!
//! ```text
//! cargo run -p walarch-core --example backup_plan_restore -- \
//!     REPO CONNINFO TARGET_DIR WALARCH_BIN PG_BIN_DIR
//! ```
//!
//! The server must archive its WAL into `REPO` (`archive_command = 'walarch --repo REPO
//! wal-push %p'`); the restored copy fetches WAL with `WALARCH_BIN`. Run it as the database's
//! OS user. The copy is started on a free port and stopped at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use walarch_core::backup::Progress;
use walarch_core::postgres::{StartOptions, find_server_binaries};
use walarch_core::recovery::{RecoveryTarget, TargetSpec, TimelineChoice};
use walarch_core::store::RepoLocation;
use walarch_core::{
    BackupRequest, CancellationToken, Engine, EngineConfig, RestoreCommand, RestoreRequest,
    TargetAction,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, conninfo, target_dir, walarch_bin, pg_bin] = args.as_slice() else {
        return Err(
            "usage: backup_plan_restore REPO CONNINFO TARGET_DIR WALARCH_BIN PG_BIN_DIR".into(),
        );
    };
    let engine = Engine::open_for_write(EngineConfig::new(RepoLocation::parse(repo)?))?;
    let connection: tokio_postgres::Config = conninfo.parse()?;
    let cancel = CancellationToken::new();

    // 1. A base backup; it returns once the WAL that makes it consistent is archived.
    let manifest = engine
        .backup(
            BackupRequest::new(connection.clone()),
            Arc::new(Progress::default()),
            &cancel,
        )
        .await?;
    println!("backup {} ({} files)", manifest.id, manifest.files.len());

    // 2. Two commits, and the moment between them.
    let (client, driver) = connection.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(driver);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS walarch_example (n int)")
        .await?;
    client
        .execute("INSERT INTO walarch_example VALUES (1)", &[])
        .await?;
    let moment: chrono::DateTime<chrono::Utc> = client
        .query_one("SELECT clock_timestamp()", &[])
        .await?
        .get(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    client
        .execute("INSERT INTO walarch_example VALUES (2)", &[])
        .await?;
    client.execute("SELECT pg_switch_wal()", &[]).await?;

    // 3. The plan: possible once the WAL with the second commit is archived.
    let spec = TargetSpec {
        target: RecoveryTarget::Time(moment),
        timeline: TimelineChoice::Latest,
        inclusive: true,
    };
    let started = Instant::now();
    let plan = loop {
        match engine.plan(&spec, None, &cancel).await {
            Ok(plan) => break plan,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                println!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    println!(
        "plan: backup {}, {} WAL segments, stops at {}",
        plan.plan().backup.id,
        plan.plan().wal_segments,
        plan.plan().stop.description
    );

    // 4. Restore, on a free port, without archiving into the source's repository.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut request = RestoreRequest::new(
        target_dir,
        RestoreCommand::Walarch {
            program: PathBuf::from(walarch_bin),
            config_file: None,
            encryption_key_file: None,
        },
    );
    request.target_action = Some(TargetAction::Promote);
    request.settings = vec![
        ("port".into(), port.to_string()),
        ("archive_mode".into(), "off".into()),
    ];
    let restored = engine
        .restore(&plan, request, Arc::new(Progress::default()), &cancel)
        .await?;
    println!("restored {} files", restored.files);

    // 5. Start the copy, wait for recovery to reach the moment, and look.
    let user = std::env::var("USER").unwrap_or_else(|_| "postgres".into());
    let binaries = find_server_binaries(
        plan.plan().backup.pg_major,
        Some(std::path::Path::new(pg_bin)),
        &[],
    )
    .await?;
    let outcome = engine
        .start_restored(&StartOptions {
            pgdata: PathBuf::from(target_dir),
            binaries,
            user: user.clone(),
            action: TargetAction::Promote.as_str().into(),
            timeout: Duration::from_secs(120),
        })
        .await?;
    println!(
        "recovery {}: {}",
        outcome.state,
        outcome.stop_message.as_deref().unwrap_or("-")
    );
    // The copy: the same host, user and database, on its own port.
    let mut copy = tokio_postgres::Config::new();
    match connection.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(path)) => copy.host_path(path),
        Some(tokio_postgres::config::Host::Tcp(host)) => copy.host(host),
        None => copy.host("localhost"),
    };
    copy.port(port).user(user.as_str()).dbname("postgres");
    if let Some(password) = connection.get_password() {
        copy.password(password);
    }
    let rows = async {
        let (client, driver) = copy.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(driver);
        let row = client
            .query_one(
                "SELECT array_agg(n ORDER BY n)::text FROM walarch_example",
                &[],
            )
            .await?;
        Ok::<String, tokio_postgres::Error>(row.get(0))
    }
    .await;
    let stopped = tokio::process::Command::new(PathBuf::from(pg_bin).join("pg_ctl"))
        .args(["stop", "-m", "fast", "-D", target_dir])
        .output()
        .await?;
    let rows = rows?;
    println!(
        "the copy holds {rows}; stopped: {}",
        stopped.status.success()
    );
    if rows != "{1}" {
        return Err(
            format!("expected only the row committed before the moment, found {rows}").into(),
        );
    }
    Ok(())
}
