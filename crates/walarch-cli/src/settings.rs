//! Settings from three layers, strongest first: command-line flags, `WALARCH_*` environment
//! variables (both handled by clap), then the TOML configuration file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use walarch_core::codec::{Codec, Compression};
use walarch_core::store::{RepoLocation, RetryOptions, S3Options, StoreOptions};

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

/// The configuration file. Unknown keys are errors, so a typo does not silently fall back
/// to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    repo: Option<String>,
    compression: Option<String>,
    compression_level: Option<i32>,
    push_ahead: Option<usize>,
    prefetch: Option<usize>,
    prefetch_mib: Option<u64>,
    prefetch_reserve_mib: Option<u64>,
    #[serde(default)]
    s3: FileS3,
    #[serde(default)]
    retry: FileRetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileS3 {
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
    conditional_put: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    max_retries: Option<usize>,
    timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
}

/// Everything a command needs, resolved.
#[derive(Debug)]
pub struct Settings {
    pub repo: RepoLocation,
    pub compression: Compression,
    pub store: StoreOptions,
    /// Files pushed ahead at once; 0 = off.
    pub push_ahead: usize,
    /// Segments downloaded ahead at once; 0 = off.
    pub prefetch: usize,
    /// Bytes of WAL kept downloaded ahead.
    pub prefetch_bytes: u64,
    /// Bytes left free on pg_wal's file system by fetch-ahead.
    pub prefetch_reserve_bytes: u64,
}

impl Settings {
    pub fn resolve(args: &GlobalArgs) -> anyhow::Result<Settings> {
        let file = load_file(args.config.as_deref())?;
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
                    .or(file.retry.max_retries)
                    .unwrap_or(defaults.max_retries),
                timeout: args
                    .retry_timeout
                    .or(file.retry.timeout_secs)
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.timeout),
            },
            s3: S3Options {
                endpoint: args.s3_endpoint.clone().or(file.s3.endpoint),
                region: args.s3_region.clone().or(file.s3.region),
                allow_http: args.s3_allow_http.or(file.s3.allow_http),
                conditional_put: args.s3_conditional_put.or(file.s3.conditional_put),
            },
            // object_store's 30 s default is too short for one PUT of a large segment.
            request_timeout: Some(Duration::from_secs(
                args.request_timeout
                    .or(file.retry.request_timeout_secs)
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS),
            )),
        };
        let push_ahead = args
            .push_ahead
            .or(file.push_ahead)
            .unwrap_or(DEFAULT_PUSH_AHEAD);
        let prefetch = args
            .prefetch
            .or(file.prefetch)
            .unwrap_or_else(default_prefetch);
        let prefetch_bytes = args
            .prefetch_mib
            .or(file.prefetch_mib)
            .unwrap_or(DEFAULT_PREFETCH_MIB)
            << 20;
        let prefetch_reserve_bytes = args
            .prefetch_reserve_mib
            .or(file.prefetch_reserve_mib)
            .unwrap_or(DEFAULT_PREFETCH_RESERVE_MIB)
            << 20;
        Ok(Settings {
            repo,
            compression,
            store,
            push_ahead,
            prefetch,
            prefetch_bytes,
            prefetch_reserve_bytes,
        })
    }
}

/// The database role a local connection uses by default, as libpq chooses it: `PGUSER`,
/// else the OS user (`USER`, `LOGNAME`), else `postgres`.
pub fn os_user() -> String {
    ["PGUSER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "postgres".to_owned())
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
        anyhow::anyhow!(
            "invalid configuration file {} at line {line}: {}",
            path.display(),
            e.message()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(argv: &[&str], file: Option<&str>) -> anyhow::Result<Settings> {
        let dir = std::env::temp_dir().join(format!(
            "walarch-settings-{}-{}",
            std::process::id(),
            argv.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut full = vec!["walarch"];
        let config = dir.join("walarch.toml");
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
        let file = "repo = \"/from/file\"\ncompression = \"gzip\"\n[s3]\nregion = \"eu-west-1\"\n[retry]\nmax_retries = 2\n";
        let s = resolve(&["--repo", "/from/flag"], Some(file)).unwrap();
        assert_eq!(s.repo, RepoLocation::Local("/from/flag".into()));
        assert_eq!(s.compression.codec(), Codec::Gzip);
        assert_eq!(s.store.s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.store.retry.max_retries, 2);
        let s = resolve(&["--compression", "none"], Some(file)).unwrap();
        assert_eq!(s.repo, RepoLocation::Local("/from/file".into()));
        // "none" stores without compression in a checksummed gzip member (level 0).
        assert_eq!(s.compression.codec(), Codec::Gzip);
        assert_eq!(s.compression.level(), 0);
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
