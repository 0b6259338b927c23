//! `check`: is archiving into this repository working end to end, right now? One item per
//! question, each ok, a warning or failed, with what to do. The proof that the repository is
//! writable is the server's own archiving: a forced WAL switch and that segment arriving in
//! the repository (a probe object would need deleting, and the repository is append-only).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use crate::backup::BackupSelector;
use crate::recovery::{RecoveryTarget, TargetSpec};
use crate::store::RepoLocation;
use crate::wal::WalFileName;
use crate::{CancellationToken, Engine};

/// How one item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// As it should be.
    Ok,
    /// Not wrong, but worth a look (e.g. a setting that cannot be read for the repository).
    Warning,
    /// Archiving into this repository is not working, or recovery from it would fail.
    Failed,
}

/// One item of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    /// What was checked: `server`, `repository`, `archive_command`, `restore_command`,
    /// `archiving`, `backup`.
    pub name: &'static str,
    /// How it came out.
    pub status: CheckStatus,
    /// What was found, and on failure what to do.
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Every item, in the order checked.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// Whether no item failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.status != CheckStatus::Failed)
    }

    fn push(&mut self, name: &'static str, status: CheckStatus, detail: impl Into<String>) {
        self.items.push(CheckItem {
            name,
            status,
            detail: detail.into(),
        });
    }
}

/// Runs every check against the server reached with `connection`; waits at most
/// `archive_timeout` for the switched segment to arrive.
pub(crate) async fn run(
    engine: &Engine,
    connection: &tokio_postgres::Config,
    archive_timeout: Duration,
    cancel: &CancellationToken,
) -> CheckReport {
    use CheckStatus::{Failed, Ok, Warning};
    let mut report = CheckReport { items: Vec::new() };
    let location = engine.config().repo.clone();

    let client = match connect(connection).await {
        Result::Ok(client) => client,
        Err(e) => {
            report.push("server", Failed, format!("cannot connect: {e}"));
            return report;
        }
    };
    let facts = match ServerFacts::read(&client).await {
        Result::Ok(facts) => facts,
        Err(e) => {
            report.push("server", Failed, format!("cannot read its settings: {e}"));
            return report;
        }
    };
    report.push(
        "server",
        Ok,
        format!(
            "PostgreSQL {}, system {}, {}",
            facts.version,
            facts.system_id,
            if facts.in_recovery {
                "in recovery"
            } else {
                "primary"
            }
        ),
    );

    // The repository: reachable, and this server's.
    let repository_ok = match engine.repository() {
        Err(e) => {
            report.push("repository", Failed, e.to_string());
            false
        }
        Result::Ok(repo) => match repo.identity().await {
            Err(e) => {
                report.push(
                    "repository",
                    Failed,
                    crate::store::redact_secrets(&e.to_string()),
                );
                false
            }
            Result::Ok(None) => {
                report.push(
                    "repository",
                    Warning,
                    format!("{location} holds no identity yet: nothing archived there so far"),
                );
                true
            }
            Result::Ok(Some(identity)) if identity.system_id.to_string() != facts.system_id => {
                report.push(
                    "repository",
                    Failed,
                    format!(
                        "{location} belongs to system {}, the server is system {}: a wrong repository",
                        identity.system_id, facts.system_id
                    ),
                );
                false
            }
            Result::Ok(Some(identity)) => {
                report.push(
                    "repository",
                    Ok,
                    format!(
                        "{location} is this system's (PostgreSQL {})",
                        identity.pg_major
                    ),
                );
                true
            }
        },
    };

    // The commands PostgreSQL runs name this repository.
    if !matches!(facts.archive_mode.as_str(), "on" | "always") {
        report.push(
            "archive_command",
            Failed,
            format!(
                "archive_mode is {}: set it to on (needs a restart)",
                facts.archive_mode
            ),
        );
    } else {
        let (status, detail) =
            names_repository("archive_command", &facts.archive_command, &location);
        report.push("archive_command", status, detail);
    }
    let (status, detail) = if facts.restore_command.trim().is_empty() {
        (
            Warning,
            "not set: a standby or a restore of this server needs it (walarch restore writes it)"
                .to_owned(),
        )
    } else {
        names_repository("restore_command", &facts.restore_command, &location)
    };
    report.push("restore_command", status, detail);

    // End to end: a new segment, switched out, must arrive in the repository.
    if facts.in_recovery {
        report.push(
            "archiving",
            Warning,
            "the server is in recovery: no WAL switch can be forced here; run check on the primary",
        );
    } else if repository_ok {
        let (status, detail) = switch_and_wait(engine, &client, archive_timeout, cancel).await;
        report.push("archiving", status, detail);
    } else {
        report.push(
            "archiving",
            Failed,
            "not tried: the repository is not usable",
        );
    }

    // The newest backup is restorable: every segment from its start to its end is there.
    if repository_ok {
        let spec = TargetSpec {
            target: RecoveryTarget::Immediate,
            ..TargetSpec::default()
        };
        match engine
            .plan(&spec, Some(&BackupSelector::Latest), cancel)
            .await
        {
            Result::Ok(plan) => report.push(
                "backup",
                Ok,
                format!(
                    "the newest backup, {}, is restorable (its WAL is in the repository)",
                    plan.plan().backup.id
                ),
            ),
            Err(e) => report.push(
                "backup",
                Failed,
                format!("the newest backup is not restorable: {e}"),
            ),
        }
    }
    report
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection to PostgreSQL ended");
        }
    });
    Result::Ok(client)
}

/// What check reads from the server.
struct ServerFacts {
    version: String,
    system_id: String,
    in_recovery: bool,
    archive_mode: String,
    archive_command: String,
    restore_command: String,
}

impl ServerFacts {
    async fn read(client: &Client) -> Result<ServerFacts, tokio_postgres::Error> {
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), \
                        (SELECT system_identifier::text FROM pg_control_system()), \
                        pg_is_in_recovery(), \
                        current_setting('archive_mode'), \
                        current_setting('archive_command'), \
                        current_setting('restore_command')",
                &[],
            )
            .await?;
        Result::Ok(ServerFacts {
            version: row.get(0),
            system_id: row.get(1),
            in_recovery: row.get(2),
            archive_mode: row.get(3),
            archive_command: row.get(4),
            restore_command: row.get(5),
        })
    }
}

/// Whether a walarch command line names `location` with `--repo`. A command without
/// `--repo` (the repository from WALARCH_REPO or a configuration file) cannot be checked
/// from here: a warning; the archiving item shows whether WAL arrives anyway.
fn names_repository(
    setting: &str,
    command: &str,
    location: &RepoLocation,
) -> (CheckStatus, String) {
    if command.trim().is_empty() {
        return (
            CheckStatus::Failed,
            format!("{setting} is empty: set it to walarch"),
        );
    }
    if !command.contains("walarch") {
        return (
            CheckStatus::Failed,
            format!(
                "{setting} does not run walarch: {}",
                crate::store::redact_secrets(command)
            ),
        );
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let named = words
        .windows(2)
        .find(|w| w[0] == "--repo")
        .map(|w| w[1].trim_matches(|c| c == '\'' || c == '"').to_owned())
        .or_else(|| {
            words
                .iter()
                .find_map(|w| w.strip_prefix("--repo="))
                .map(|r| r.trim_matches(|c| c == '\'' || c == '"').to_owned())
        });
    match named.map(|text| RepoLocation::parse(&text)) {
        Some(Result::Ok(named)) if named == *location => (
            CheckStatus::Ok,
            format!("runs walarch with --repo {location}"),
        ),
        Some(Result::Ok(named)) => (
            CheckStatus::Failed,
            format!(
                "{setting} uses --repo {named}, not {location}: the server's WAL goes elsewhere"
            ),
        ),
        Some(Err(e)) => (CheckStatus::Failed, format!("{setting}: {e}")),
        None => (
            CheckStatus::Warning,
            format!(
                "{setting} runs walarch without --repo (WALARCH_REPO or a configuration file): \
                 cannot tell which repository from here; see the archiving item"
            ),
        ),
    }
}

/// Forces a WAL switch and waits for the switched segment in the repository.
async fn switch_and_wait(
    engine: &Engine,
    client: &Client,
    timeout: Duration,
    cancel: &CancellationToken,
) -> (CheckStatus, String) {
    // A restore point writes a record, so the switch always closes a segment with something
    // in it (a switch on an empty segment does nothing).
    let switched = client
        .query_one(
            "SELECT pg_walfile_name(pg_create_restore_point('walarch check')), pg_switch_wal()::text",
            &[],
        )
        .await;
    let segment = match switched {
        Result::Ok(row) => row.get::<_, String>(0),
        Err(e) => {
            return (
                CheckStatus::Failed,
                format!(
                    "cannot switch WAL (needs superuser, or EXECUTE on pg_switch_wal and pg_create_restore_point): {e}"
                ),
            );
        }
    };
    let Result::Ok(name) = segment.parse::<WalFileName>() else {
        return (
            CheckStatus::Failed,
            format!("the server named segment {segment:?}"),
        );
    };
    let started = Instant::now();
    let repo = match engine.repository() {
        Result::Ok(repo) => repo,
        Err(e) => return (CheckStatus::Failed, e.to_string()),
    };
    loop {
        match repo.find_wal(&name).await {
            Result::Ok(found) if !found.is_empty() => {
                return (
                    CheckStatus::Ok,
                    format!(
                        "switched to a new segment; {segment} arrived in the repository after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
            Result::Ok(_) => {}
            Err(e) => {
                return (
                    CheckStatus::Failed,
                    format!(
                        "cannot look for {segment}: {}",
                        crate::store::redact_secrets(&e.to_string())
                    ),
                );
            }
        }
        if started.elapsed() >= timeout || cancel.is_cancelled() {
            return (
                CheckStatus::Failed,
                format!(
                    "{segment} did not arrive in the repository within {} s: archiving is failing \
                     or going elsewhere (see pg_stat_archiver and the server log)",
                    timeout.as_secs()
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_names_the_repository_or_says_it_cannot_tell() {
        let here = RepoLocation::parse("s3://bucket/main").unwrap();
        let ok = names_repository(
            "archive_command",
            "/usr/bin/walarch --repo s3://bucket/main/ wal-push %p",
            &here,
        );
        assert_eq!(ok.0, CheckStatus::Ok, "{ok:?}");
        let quoted = names_repository(
            "archive_command",
            "walarch --repo 's3://bucket/main' wal-push %p",
            &here,
        );
        assert_eq!(quoted.0, CheckStatus::Ok, "{quoted:?}");
        let elsewhere = names_repository(
            "archive_command",
            "walarch --repo s3://bucket/other wal-push %p",
            &here,
        );
        assert_eq!(elsewhere.0, CheckStatus::Failed);
        assert!(elsewhere.1.contains("s3://bucket/other"), "{elsewhere:?}");
        let unknown = names_repository("archive_command", "walarch wal-push %p", &here);
        assert_eq!(unknown.0, CheckStatus::Warning);
        let other_tool = names_repository("archive_command", "cp %p /mnt/archive/%f", &here);
        assert_eq!(other_tool.0, CheckStatus::Failed);
        assert_eq!(
            names_repository("archive_command", " ", &here).0,
            CheckStatus::Failed
        );
    }
}
