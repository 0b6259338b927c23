//! Command-line arguments: validated but inert values (parsing does no I/O).

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgGroup, Args, Parser, Subcommand};
use walarch_core::recovery::{self, RecoveryTarget, TargetSpec, TimelineChoice};
use walarch_core::retention::{RetentionError, RetentionWindow};

#[derive(Debug, Parser)]
#[command(
    name = "walarch",
    version,
    about = "PostgreSQL WAL archiving and point-in-time recovery"
)]
#[command(
    after_help = "PostgreSQL settings:\n  archive_command = 'walarch wal-push %p'\n  restore_command = 'walarch wal-fetch %f %p'"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every command shares. Each flag falls back to its `WALARCH_*` variable, then to
/// the configuration file.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Repository URL: file:///path (or a bare path), s3://bucket/prefix, gs://bucket/prefix, az://container/prefix
    #[arg(long, global = true, env = "WALARCH_REPO", value_name = "URL")]
    pub repo: Option<String>,

    /// Configuration file (TOML) [default: /etc/walarch.toml when it exists]
    #[arg(long, global = true, env = "WALARCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print results as JSON on standard output
    #[arg(long, global = true)]
    pub json: bool,

    /// Compression for new objects: zstd (default), gzip or none
    #[arg(long, global = true, env = "WALARCH_COMPRESSION", value_name = "CODEC")]
    pub compression: Option<String>,

    /// Compression level (zstd 1-22, default 1; gzip 0-9, default 6)
    #[arg(
        long,
        global = true,
        env = "WALARCH_COMPRESSION_LEVEL",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub compression_level: Option<i32>,

    /// S3 endpoint for S3-compatible servers (else AWS_ENDPOINT)
    #[arg(
        long,
        global = true,
        env = "WALARCH_S3_ENDPOINT",
        value_name = "URL",
        hide_short_help = true
    )]
    pub s3_endpoint: Option<String>,

    /// S3 region (else AWS_REGION)
    #[arg(
        long,
        global = true,
        env = "WALARCH_S3_REGION",
        value_name = "REGION",
        hide_short_help = true
    )]
    pub s3_region: Option<String>,

    /// Allow plain-HTTP S3 endpoints (test servers on loopback)
    #[arg(
        long,
        global = true,
        env = "WALARCH_S3_ALLOW_HTTP",
        value_name = "BOOL",
        hide_short_help = true,
        value_parser = BoolishValueParser::new()
    )]
    pub s3_allow_http: Option<bool>,

    /// Whether the S3 server honours create-only puts (If-None-Match); set false for servers that do not
    #[arg(
        long,
        global = true,
        env = "WALARCH_S3_CONDITIONAL_PUT",
        value_name = "BOOL",
        hide_short_help = true,
        value_parser = BoolishValueParser::new()
    )]
    pub s3_conditional_put: Option<bool>,

    /// Retries of a failed store request before giving up [default: 5]
    #[arg(
        long,
        global = true,
        env = "WALARCH_RETRIES",
        value_name = "N",
        hide_short_help = true
    )]
    pub retries: Option<usize>,

    /// Stop retrying a store request after this many seconds [default: 60]
    #[arg(
        long,
        global = true,
        env = "WALARCH_RETRY_TIMEOUT",
        value_name = "SECONDS",
        hide_short_help = true
    )]
    pub retry_timeout: Option<u64>,

    /// Time limit for one store request, transfer included [default: 120]
    #[arg(
        long,
        global = true,
        env = "WALARCH_REQUEST_TIMEOUT",
        value_name = "SECONDS",
        hide_short_help = true
    )]
    pub request_timeout: Option<u64>,

    /// Files pushed ahead of PostgreSQL at once by a background worker; 0 turns push-ahead off [default: 4]
    #[arg(
        long,
        global = true,
        env = "WALARCH_PUSH_AHEAD",
        value_name = "N",
        hide_short_help = true
    )]
    pub push_ahead: Option<usize>,

    /// Segments downloaded ahead of recovery at once by a background worker; 0 turns fetch-ahead off [default: cores, at most 4]
    #[arg(
        long,
        global = true,
        env = "WALARCH_PREFETCH",
        value_name = "N",
        hide_short_help = true
    )]
    pub prefetch: Option<usize>,

    /// MiB of WAL kept downloaded ahead of recovery [default: 512]
    #[arg(
        long,
        global = true,
        env = "WALARCH_PREFETCH_MIB",
        value_name = "MIB",
        hide_short_help = true
    )]
    pub prefetch_mib: Option<u64>,

    /// Where PostgreSQL's server binaries are; `{major}` stands for the major version, e.g.
    /// /opt/postgresql/{major}/bin [default: PATH, then the usual install locations]
    #[arg(
        long,
        global = true,
        env = "WALARCH_PG_BIN",
        value_name = "DIR",
        hide_short_help = true
    )]
    pub pg_bin: Option<String>,

    /// MiB left free on pg_wal's file system: downloading ahead pauses below it [default: 1024]
    #[arg(
        long,
        global = true,
        env = "WALARCH_PREFETCH_RESERVE_MIB",
        value_name = "MIB",
        hide_short_help = true
    )]
    pub prefetch_reserve_mib: Option<u64>,

    /// Bandwidth limit of backup, restore and verify transfers, in MiB/s (WAL is never limited)
    #[arg(
        long,
        global = true,
        env = "WALARCH_MAX_RATE_MIB",
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..=1 << 30),
        hide_short_help = true
    )]
    pub max_rate_mib: Option<u64>,

    /// Key file that encrypts WAL and backup parts (an age identity file; `walarch key new`
    /// writes one). The first key seals new objects; every key in it opens old ones
    #[arg(
        long,
        global = true,
        env = "WALARCH_ENCRYPTION_KEY_FILE",
        value_name = "FILE"
    )]
    pub encryption_key_file: Option<PathBuf>,

    /// Log filter for standard error, e.g. info or debug [default: warn]
    #[arg(
        long,
        global = true,
        env = "WALARCH_LOG",
        value_name = "FILTER",
        hide_short_help = true
    )]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive one WAL file (archive_command = 'walarch wal-push %p')
    WalPush(WalPushArgs),
    /// Restore one WAL file (restore_command = 'walarch wal-fetch %f %p'). Exit 1: not in the archive; 126: failure
    WalFetch(WalFetchArgs),
    /// What the repository holds (WAL per timeline, gaps, latest archive) and, with --pgdata, archive health
    Info(InfoArgs),
    /// Take an online base backup of a running cluster (primary or standby)
    Backup(BackupArgs),
    /// List the backups in the repository
    Backups,
    /// Restore a backup into an empty directory, set up to recover from the archive (checked with `plan` first)
    Restore(RestoreArgs),
    /// Can the repository recover to a target? Which backup, timelines and WAL, how much to fetch; nothing is restored
    Plan(PlanArgs),
    /// Check backups against their manifests, and WAL continuity per timeline
    Verify(VerifyArgs),
    /// Delete the backups and WAL a policy no longer needs: --keep N, --window 30d, or both
    Retention(RetentionArgs),
    /// Is archiving into this repository working end to end, right now? (settings, a forced WAL switch arriving, the newest backup restorable)
    Check(CheckArgs),
    /// Metrics as OpenMetrics text: archive backlog, last archive, backups, recoverable window, drills (for node_exporter's textfile collector, or served with --listen)
    Metrics(MetricsArgs),
    /// Prove a recovery: restore into a scratch directory, start PostgreSQL there with archiving off, wait for the target, run checks; report RTO/RPO and store the report in the repository
    Drill(DrillArgs),
    /// Encryption keys: write a new key file, rotate one, show a file's key identifiers
    #[command(subcommand)]
    Key(KeyCommand),
    /// Background worker that pushes queued WAL files ahead of PostgreSQL (started by wal-push)
    #[command(hide = true)]
    PushWorker(WorkerArgs),
    /// Background worker that downloads WAL ahead of recovery (started by wal-fetch)
    #[command(hide = true)]
    FetchWorker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Connection string (`host=... port=... user=...` or a postgresql:// URL); PG* variables fill the rest.
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// Seconds to wait for the switched WAL segment to arrive in the repository.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Data directory whose archive backlog and fetch failures to report.
    #[arg(long, env = "PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Connection string for PostgreSQL's own archiver statistics (pg_stat_archiver); not asked without it.
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// Serve the metrics over HTTP at this address (GET /metrics), read fresh on every scrape, e.g. 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Backup id or `latest` [default: chosen as restore would]
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Where the drill's scratch directory is made (removed afterwards unless --keep); it needs room for the restored data directory.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub scratch: PathBuf,
    /// A query run on the recovered copy that must return one row holding true, e.g. "SELECT count(*) > 0 FROM orders" (repeatable).
    #[arg(long = "check", value_name = "SQL")]
    pub checks: Vec<String>,
    /// The database the --check queries run in.
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    pub dbname: String,
    /// The role the checks connect as: a superuser of the backed-up cluster [default: the OS user]
    #[arg(long, value_name = "ROLE")]
    pub user: Option<String>,
    /// Leave the scratch directory (with the stopped copy) in place.
    #[arg(long)]
    pub keep: bool,
    /// Seconds recovery may take to reach the target.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    pub recovery_timeout: u64,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a fresh key to FILE (readable by its owner only); refuses an existing file
    New {
        /// The key file to create
        file: PathBuf,
    },
    /// Put a fresh key first in FILE: new objects are sealed for it, the older keys still open
    /// what they sealed
    Rotate {
        /// The key file to rotate
        file: PathBuf,
    },
    /// The identifiers of FILE's keys, the one that seals first
    Show {
        /// The key file
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// Path of the WAL file (PostgreSQL's %p)
    pub path: PathBuf,
    /// The data directory the file belongs to, when it is not in that directory's pg_wal:
    /// its restore marker decides whether this repository may take its WAL
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Data directory whose archiving (queued files, push-ahead, prefetch) to report
    #[arg(long, env = "PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The data directory of the server (read locally); by default the server's data_directory.
    #[arg(long, env = "PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Connection string (`host=... port=... user=...` or a postgresql:// URL); PG* variables fill the rest.
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// Files read, compressed and uploaded at once (default: cores, at most 8).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Uncompressed size at which a part is closed and the next one begun.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub part_size_mib: u64,
    /// Let the server spread the starting checkpoint instead of doing it at once.
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// Seconds to wait for the WAL that makes the backup consistent to reach the repository.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub wal_timeout: u64,
    /// Let the upload compete with WAL archiving; by default it pauses while the server has
    /// finished WAL segments waiting for archive_command
    #[arg(long)]
    pub no_wal_priority: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The directory to restore into: absent or empty (see --force).
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// Backup id (see `walarch backups`) or `latest` [default: for time and LSN targets the newest backup that finished before the target, else the newest]
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Replace the contents of a non-empty directory.
    #[arg(long)]
    pub force: bool,
    /// Parts downloaded and unpacked at once (default: cores, at most 8).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Put a tablespace somewhere else: OID=DIR or NAME=DIR (repeatable).
    #[arg(long, value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// This copy replaces the original and will archive into this repository (recorded there).
    #[arg(long)]
    pub take_over: bool,
    /// Start as a standby (standby.signal) instead of recovering once and promoting.
    #[arg(long)]
    pub standby: bool,
    /// restore_command to write instead of this walarch with this repository.
    #[arg(long, value_name = "COMMAND")]
    pub restore_command: Option<String>,
    /// A server setting for the restored copy, written to postgresql.auto.conf, e.g. port=5433 for a clone beside the original (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// Start PostgreSQL on the restored directory and wait until recovery reaches the target; report where it stopped.
    #[arg(long)]
    pub start: bool,
    /// Seconds --start waits for recovery to reach the target.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    pub start_timeout: u64,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Backup id or `latest` [default: chosen as restore would]
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Where recovery stops (PostgreSQL's recovery_target_* settings).
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Recover up to this time, e.g. '2026-11-21 11:32:00+00'.
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover up to this LSN, e.g. 0/3000060.
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover up to this transaction id.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// Recover up to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// `immediate` (stop once consistent) or `latest` (replay all WAL, the default).
    #[arg(long, value_name = "TARGET", value_parser = ["immediate", "latest"])]
    pub target: Option<String>,
    /// Timeline to follow: a number, `current` or `latest`.
    #[arg(long, value_name = "TLI")]
    pub target_timeline: Option<String>,
    /// Whether recovery stops just after the target (true, PostgreSQL's default) or just before it.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub target_inclusive: Option<bool>,
    /// What the server does at the target.
    #[arg(long, value_name = "ACTION", value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: Option<String>,
}

impl TargetArgs {
    /// The recovery target these flags ask for; at most one target.
    pub fn spec(&self) -> anyhow::Result<TargetSpec> {
        let given = [
            self.target_time.is_some(),
            self.target_lsn.is_some(),
            self.target_xid.is_some(),
            self.target_name.is_some(),
            self.target.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            anyhow::bail!(
                "give at most one of --target-time, --target-lsn, --target-xid, --target-name, --target"
            );
        }
        let target = if let Some(time) = &self.target_time {
            RecoveryTarget::Time(recovery::parse_time(time)?)
        } else if let Some(lsn) = &self.target_lsn {
            RecoveryTarget::Lsn(
                lsn.parse()
                    .map_err(|e| anyhow::anyhow!("--target-lsn {lsn}: {e}"))?,
            )
        } else if let Some(xid) = &self.target_xid {
            RecoveryTarget::Xid(recovery::parse_xid(xid)?)
        } else if let Some(name) = &self.target_name {
            recovery::check_name(name)?;
            RecoveryTarget::Name(name.clone())
        } else if self.target.as_deref() == Some("immediate") {
            RecoveryTarget::Immediate
        } else {
            RecoveryTarget::Latest
        };
        let timeline = match &self.target_timeline {
            Some(text) => recovery::parse_timeline(text)?,
            None => TimelineChoice::Latest,
        };
        Ok(TargetSpec {
            target,
            timeline,
            inclusive: self.target_inclusive.unwrap_or(true),
        })
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify only this backup (an id or `latest`); by default all of them.
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("policy")
        .required(true)
        .multiple(true)
        .args(["keep", "window"])
))]
pub struct RetentionArgs {
    /// Keep the N newest complete backups (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Keep what recovery to any point of the last DURATION needs: 30d, 12h, 90m or 45s.
    #[arg(long, value_name = "DURATION", value_parser = parse_window)]
    pub window: Option<RetentionWindow>,
    /// Print what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_window(text: &str) -> Result<RetentionWindow, String> {
    text.parse().map_err(|e: RetentionError| e.to_string())
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The data directory's pg_wal
    pub pg_wal: PathBuf,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// Name of the WAL file wanted (PostgreSQL's %f)
    pub name: String,
    /// Where to write it (PostgreSQL's %p)
    pub dest: PathBuf,
    /// Fetch exactly this file: no download ahead, no spool (for pg_rewind and one-off use)
    #[arg(long)]
    pub no_prefetch: bool,
}

impl GlobalArgs {
    /// The settings in force, as `WALARCH_*` variables for a child process: a background
    /// worker must use exactly the settings of the call that started it, and variables (unlike
    /// arguments) are not visible to other users in `ps`.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        let mut add = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                env.push((name, value));
            }
        };
        add("WALARCH_REPO", self.repo.clone());
        add(
            "WALARCH_CONFIG",
            self.config.as_ref().map(|p| p.display().to_string()),
        );
        add("WALARCH_COMPRESSION", self.compression.clone());
        add(
            "WALARCH_COMPRESSION_LEVEL",
            self.compression_level.map(|v| v.to_string()),
        );
        add("WALARCH_S3_ENDPOINT", self.s3_endpoint.clone());
        add("WALARCH_S3_REGION", self.s3_region.clone());
        add(
            "WALARCH_S3_ALLOW_HTTP",
            self.s3_allow_http.map(|v| v.to_string()),
        );
        add(
            "WALARCH_S3_CONDITIONAL_PUT",
            self.s3_conditional_put.map(|v| v.to_string()),
        );
        add("WALARCH_RETRIES", self.retries.map(|v| v.to_string()));
        add(
            "WALARCH_RETRY_TIMEOUT",
            self.retry_timeout.map(|v| v.to_string()),
        );
        add(
            "WALARCH_REQUEST_TIMEOUT",
            self.request_timeout.map(|v| v.to_string()),
        );
        add("WALARCH_PUSH_AHEAD", self.push_ahead.map(|v| v.to_string()));
        add("WALARCH_PREFETCH", self.prefetch.map(|v| v.to_string()));
        add(
            "WALARCH_PREFETCH_MIB",
            self.prefetch_mib.map(|v| v.to_string()),
        );
        add("WALARCH_PG_BIN", self.pg_bin.clone());
        add(
            "WALARCH_PREFETCH_RESERVE_MIB",
            self.prefetch_reserve_mib.map(|v| v.to_string()),
        );
        add(
            "WALARCH_ENCRYPTION_KEY_FILE",
            self.encryption_key_file
                .as_ref()
                .map(|p| p.display().to_string()),
        );
        add("WALARCH_LOG", self.log.clone());
        env
    }
}
