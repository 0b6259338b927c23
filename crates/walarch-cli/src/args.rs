//! Command-line arguments: validated but inert values (parsing does no I/O).

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

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
    /// Background worker that pushes queued WAL files ahead of PostgreSQL (started by wal-push)
    #[command(hide = true)]
    PushWorker(WorkerArgs),
    /// Background worker that downloads WAL ahead of recovery (started by wal-fetch)
    #[command(hide = true)]
    FetchWorker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// Path of the WAL file (PostgreSQL's %p)
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Data directory whose archiving (queued files, push-ahead, prefetch) to report
    #[arg(long, env = "PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
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
        add("WALARCH_LOG", self.log.clone());
        env
    }
}
