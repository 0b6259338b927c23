//! Settings from three layers, strongest first: command-line flags, `WALARCH_*` environment
//! variables (both handled by clap), then the TOML configuration file. Every setting has one
//! name: the flag `--push-ahead`, the variable `WALARCH_PUSH_AHEAD`, the file key
//! `push_ahead`. The result is the engine's configuration; the clouds' own variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`) are handed to it here, since the engine reads no
//! environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use walarch_core::EngineConfig;
use walarch_core::codec::{Codec, Compression};
use walarch_core::crypto::Keyring;
use walarch_core::store::{CloudSettings, RepoLocation, RetryOptions, S3Options, StoreOptions};

use crate::args::GlobalArgs;

const DEFAULT_CONFIG: &str = "/etc/walarch.toml";
const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 120;
/// Enough to overlap store latency; compression of 16 MiB at zstd-1 takes ~17 ms of one core.
const DEFAULT_PUSH_AHEAD: usize = 4;
/// Parallel downloads during recovery when not configured: one per core, at most 4. Replay
/// keeps one core busy; more decompressing downloads than cores slowed recovery on a 2-core
/// machine (benches/README.md).
fn default_prefetch() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}
/// 32 segments of 16 MiB: far more than replay consumes while a few downloads complete.
const DEFAULT_PREFETCH_MIB: u64 = 512;
/// Free space fetch-ahead leaves on pg_wal's file system: PostgreSQL itself needs room for
/// new WAL (after promotion up to max_wal_size, 1 GiB by default), and a full pg_wal stops it.
const DEFAULT_PREFETCH_RESERVE_MIB: u64 = 1024;
/// The push-ahead worker exits this long after PostgreSQL's last archive_command call (a
/// paused or stopped archiver); the next wal-push with a backlog starts another.
const PUSH_WORKER_IDLE_EXIT: Duration = Duration::from_secs(2);
/// The fetch-ahead worker exits once recovery has asked for nothing new for this long
/// (recovery ended, paused, or waits for WAL that is not archived yet).
const FETCH_WORKER_IDLE_EXIT: Duration = Duration::from_secs(5);

/// The configuration file: the same names as the flags. Unknown keys are errors, so a typo
/// does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    repo: Option<String>,
    compression: Option<String>,
    compression_level: Option<i32>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_allow_http: Option<bool>,
    s3_conditional_put: Option<bool>,
    retries: Option<usize>,
    retry_timeout: Option<u64>,
    request_timeout: Option<u64>,
    push_ahead: Option<usize>,
    prefetch: Option<usize>,
    prefetch_mib: Option<u64>,
    prefetch_reserve_mib: Option<u64>,
    pg_bin: Option<String>,
    encryption_key_file: Option<PathBuf>,
    max_rate_mib: Option<u64>,
    /// Earlier versions' tables: still read (a configuration that stopped working would stop
    /// archiving), with a warning naming the new keys.
    s3: Option<LegacyS3>,
    retry: Option<LegacyRetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyS3 {
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
    conditional_put: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyRetry {
    max_retries: Option<usize>,
    timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
}

impl FileConfig {
    /// Moves the earlier versions' `[s3]` and `[retry]` keys to their current names (the
    /// current ones win), with a warning that names the new keys.
    fn adopt_legacy_tables(mut self) -> Self {
        let mut renamed = Vec::new();
        let mut note = |old: &'static str, new: &'static str, present: bool| {
            if present {
                renamed.push(format!("{old} is now {new}"));
            }
        };
        if let Some(s3) = self.s3.take() {
            note("[s3] endpoint", "s3_endpoint", s3.endpoint.is_some());
            note("[s3] region", "s3_region", s3.region.is_some());
            note("[s3] allow_http", "s3_allow_http", s3.allow_http.is_some());
            note(
                "[s3] conditional_put",
                "s3_conditional_put",
                s3.conditional_put.is_some(),
            );
            self.s3_endpoint = self.s3_endpoint.or(s3.endpoint);
            self.s3_region = self.s3_region.or(s3.region);
            self.s3_allow_http = self.s3_allow_http.or(s3.allow_http);
            self.s3_conditional_put = self.s3_conditional_put.or(s3.conditional_put);
        }
        if let Some(retry) = self.retry.take() {
            note(
                "[retry] max_retries",
                "retries",
                retry.max_retries.is_some(),
            );
            note(
                "[retry] timeout_secs",
                "retry_timeout",
                retry.timeout_secs.is_some(),
            );
            note(
                "[retry] request_timeout_secs",
                "request_timeout",
                retry.request_timeout_secs.is_some(),
            );
            self.retries = self.retries.or(retry.max_retries);
            self.retry_timeout = self.retry_timeout.or(retry.timeout_secs);
            self.request_timeout = self.request_timeout.or(retry.request_timeout_secs);
        }
        if !renamed.is_empty() {
            tracing::warn!(
                "the configuration file uses old names, still read: {}; settings are named like their flags now",
                renamed.join(", ")
            );
        }
        self
    }
}

/// Everything a command needs, resolved.
#[derive(Debug)]
pub struct Settings {
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// Where PostgreSQL's server binaries are (`{major}` stands for the major version).
    pub pg_bin: Option<String>,
    /// The key file in force (absolute), for the restore_command a restore writes.
    pub encryption_key_file: Option<PathBuf>,
}

impl Settings {
    pub fn resolve(args: &GlobalArgs) -> anyhow::Result<Settings> {
        let file = load_file(args.config.as_deref())?.adopt_legacy_tables();
        let Some(repo) = args.repo.clone().or(file.repo) else {
            bail!(
                "no repository configured: pass --repo URL, set WALARCH_REPO, or set repo in {DEFAULT_CONFIG}"
            );
        };
        let repo = RepoLocation::parse(&repo)?;
        let codec = match args.compression.clone().or(file.compression) {
            Some(name) => name.parse::<Codec>()?,
            None => Codec::Zstd,
        };
        let compression =
            Compression::new(codec, args.compression_level.or(file.compression_level))?;
        let defaults = RetryOptions::default();
        let store = StoreOptions {
            retry: RetryOptions {
                max_retries: args
                    .retries
                    .or(file.retries)
                    .unwrap_or(defaults.max_retries),
                timeout: args
                    .retry_timeout
                    .or(file.retry_timeout)
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.timeout),
            },
            s3: S3Options {
                endpoint: args.s3_endpoint.clone().or(file.s3_endpoint),
                region: args.s3_region.clone().or(file.s3_region),
                allow_http: args.s3_allow_http.or(file.s3_allow_http),
                conditional_put: args.s3_conditional_put.or(file.s3_conditional_put),
            },
            // object_store's 30 s default is too short for one PUT of a large segment.
            request_timeout: Some(Duration::from_secs(
                args.request_timeout
                    .or(file.request_timeout)
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS),
            )),
            cloud: CloudSettings::from_vars(std::env::vars()),
        };
        let mut engine = EngineConfig::new(repo);
        engine.store = store;
        engine.compression = compression;
        engine.push_ahead.parallelism = args
            .push_ahead
            .or(file.push_ahead)
            .unwrap_or(DEFAULT_PUSH_AHEAD);
        engine.push_ahead.idle_exit = PUSH_WORKER_IDLE_EXIT;
        engine.fetch_ahead.parallelism = args
            .prefetch
            .or(file.prefetch)
            .unwrap_or_else(default_prefetch);
        engine.fetch_ahead.max_bytes = args
            .prefetch_mib
            .or(file.prefetch_mib)
            .unwrap_or(DEFAULT_PREFETCH_MIB)
            << 20;
        engine.fetch_ahead.reserve_bytes = args
            .prefetch_reserve_mib
            .or(file.prefetch_reserve_mib)
            .unwrap_or(DEFAULT_PREFETCH_RESERVE_MIB)
            << 20;
        engine.fetch_ahead.idle_exit = FETCH_WORKER_IDLE_EXIT;
        engine.transfer_limit = match args.max_rate_mib.or(file.max_rate_mib) {
            Some(mib @ 1..=0x4000_0000) => Some(mib << 20),
            Some(other) => bail!("max_rate_mib must be from 1 to 1073741824 MiB/s, not {other}"),
            None => None,
        };
        let encryption_key_file = args
            .encryption_key_file
            .clone()
            .or(file.encryption_key_file)
            .map(std::path::absolute)
            .transpose()?;
        if let Some(path) = &encryption_key_file {
            engine.encryption = Some(std::sync::Arc::new(Keyring::load(path)?));
        }
        Ok(Settings {
            engine,
            pg_bin: args.pg_bin.clone().or(file.pg_bin),
            encryption_key_file,
        })
    }
}

/// Reads the configuration file: the one named explicitly must exist; the default one is
/// optional.
fn load_file(explicit: Option<&Path>) -> anyhow::Result<FileConfig> {
    let (path, required) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileConfig::default());
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read configuration file {}", path.display()));
        }
    };
    // toml's own message quotes the offending line, which may hold a secret: say where only.
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |span| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        });
        let message = e.message();
        // The file is meant to be readable by the DBAs who run walarch: it holds no secrets,
        // and a credential put there is refused with where it belongs instead.
        let credential = ["secret", "password", "token", "access_key", "account_key"]
            .iter()
            .any(|word| message.to_ascii_lowercase().contains(word));
        let hint = if credential {
            "; credentials are never read from the configuration file: set the cloud's variables \
             (AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, GOOGLE_SERVICE_ACCOUNT, ...) in \
             the environment, or use the cloud's default credential chain"
        } else {
            ""
        };
        anyhow::anyhow!(
            "invalid configuration file {} at line {line}: {message}{hint}",
            path.display(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(argv: &[&str], file: Option<&str>) -> anyhow::Result<Settings> {
        // One directory per call (tests run in parallel threads of one process), removed
        // when the call returns: some files hold a test secret.
        let dir = tempfile::tempdir().unwrap();
        let mut full = vec!["walarch"];
        let config = dir.path().join("walarch.toml");
        let config_arg = config.display().to_string();
        if let Some(text) = file {
            std::fs::write(&config, text).unwrap();
            full.extend(["--config", config_arg.as_str()]);
        }
        full.extend_from_slice(argv);
        full.extend(["wal-push", "x"]);
        let cli = crate::args::Cli::try_parse_from(full).unwrap();
        Settings::resolve(&cli.global)
    }

    #[test]
    fn flags_override_the_file() {
        let file = "repo = \"/from/file\"\ncompression = \"gzip\"\ns3_region = \"eu-west-1\"\nretries = 2\n";
        let s = resolve(&["--repo", "/from/flag"], Some(file)).unwrap();
        assert_eq!(s.engine.repo, RepoLocation::Local("/from/flag".into()));
        assert_eq!(s.engine.compression.codec(), Codec::Gzip);
        assert_eq!(s.engine.store.s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.engine.store.retry.max_retries, 2);
        let s = resolve(&["--compression", "none"], Some(file)).unwrap();
        assert_eq!(s.engine.repo, RepoLocation::Local("/from/file".into()));
        // "none" stores without compression in a checksummed gzip member (level 0).
        assert_eq!(s.engine.compression.codec(), Codec::Gzip);
        assert_eq!(s.engine.compression.level(), 0);
    }

    #[test]
    fn every_setting_has_one_name_for_its_flag_variable_and_file_key() {
        // Each file key is the flag's name with underscores; the old sectioned keys are
        // refused with the new name.
        let file = "retries = 3\nretry_timeout = 7\nrequest_timeout = 9\npush_ahead = 0\nprefetch = 1\nprefetch_mib = 64\nprefetch_reserve_mib = 10\ns3_endpoint = \"http://127.0.0.1:9\"\ns3_allow_http = true\ns3_conditional_put = false\ncompression_level = 3\nmax_rate_mib = 40\n";
        let s = resolve(&["--repo", "/r"], Some(file)).unwrap().engine;
        assert_eq!(s.transfer_limit, Some(40 << 20));
        assert_eq!(s.store.retry.max_retries, 3);
        assert_eq!(s.store.retry.timeout, Duration::from_secs(7));
        assert_eq!(s.store.request_timeout, Some(Duration::from_secs(9)));
        assert_eq!(s.push_ahead.parallelism, 0);
        assert_eq!(s.fetch_ahead.parallelism, 1);
        assert_eq!(s.fetch_ahead.max_bytes, 64 << 20);
        assert_eq!(s.fetch_ahead.reserve_bytes, 10 << 20);
        assert_eq!(s.store.s3.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.store.s3.allow_http, Some(true));
        assert_eq!(s.store.s3.conditional_put, Some(false));
        assert_eq!(s.compression.level(), 3);
        let flags = resolve(
            &[
                "--repo",
                "/r",
                "--retries",
                "4",
                "--retry-timeout",
                "8",
                "--request-timeout",
                "10",
            ],
            Some(file),
        )
        .unwrap()
        .engine;
        assert_eq!(flags.store.retry.max_retries, 4);
        assert_eq!(flags.store.retry.timeout, Duration::from_secs(8));
        assert_eq!(flags.store.request_timeout, Some(Duration::from_secs(10)));
        // Earlier versions' tables are still read (with a warning); the new names win.
        let legacy = resolve(
            &["--repo", "/r"],
            Some(
                "retries = 7\n[retry]\nmax_retries = 2\ntimeout_secs = 11\n[s3]\nregion = \"x\"\n",
            ),
        )
        .unwrap()
        .engine;
        assert_eq!(legacy.store.retry.max_retries, 7);
        assert_eq!(legacy.store.retry.timeout, Duration::from_secs(11));
        assert_eq!(legacy.store.s3.region.as_deref(), Some("x"));
    }

    #[test]
    fn typos_and_missing_files_are_errors() {
        let err = resolve(&[], Some("rep = \"/x\"\n")).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        let err = resolve(
            &[],
            Some("repo = \"/x\"\nsecret_access_key = \"Zq9SECRET\"\n"),
        )
        .unwrap_err();
        assert!(
            !format!("{err:#}").contains("Zq9SECRET"),
            "the value is not echoed: {err:#}"
        );
        assert!(
            format!("{err:#}").contains("never read from the configuration file"),
            "{err:#}"
        );
        let cli = crate::args::Cli::try_parse_from([
            "walarch",
            "--config",
            "/nonexistent/walarch.toml",
            "wal-push",
            "x",
        ])
        .unwrap();
        let err = Settings::resolve(&cli.global).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/walarch.toml"),
            "{err:#}"
        );
        let err = resolve(&["--repo", "/r", "--compression", "lz4"], None).unwrap_err();
        assert!(err.to_string().contains("lz4"), "{err}");
    }
}
