//! The object store behind a repository: opened from a URL (`file:///path` or a bare path,
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`), with each cloud's
//! standard credential environment, durable local writes and retries with backoff.
//!
//! Every backend is an `object_store::ObjectStore`:
//! Credentials and cloud settings come from [`StoreOptions::cloud`], never from the process
//! environment: the command line passes its environment, an embedder what applies.
//!
//! - local paths use `LocalFileSystem` built `with_fsync(true)`: a put writes a staged file,
//!   fsyncs it, links or renames it into place and fsyncs the directory, so success means
//!   durable and a partial file is never visible under its final name; a delete that empties
//!   a folder removes it;
//! - S3, GCS and Azure retry transient HTTP failures inside object_store's client with
//!   exponential backoff, bounded by [`RetryOptions`].

pub mod keys;
mod redact;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
pub use redact::redact_secrets;

use crate::error::{ErrorKind, StoreFailure, io_error_kind};
use url::Url;

/// Where a repository lives, parsed but not yet opened (parsing does no I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepoLocation {
    /// A local directory (`file:///path` or a bare path), absolute.
    Local(PathBuf),
    /// An Amazon S3 or S3-compatible bucket (`s3://bucket/prefix`).
    S3 {
        /// The bucket's name.
        bucket: String,
        /// The key prefix inside the bucket, without leading or trailing `/`; empty for none.
        prefix: String,
    },
    /// A Google Cloud Storage bucket (`gs://bucket/prefix`).
    Gcs {
        /// The bucket's name.
        bucket: String,
        /// The key prefix inside the bucket, without leading or trailing `/`; empty for none.
        prefix: String,
    },
    /// An Azure Blob Storage container (`az://container/prefix`).
    Azure {
        /// The container's name.
        container: String,
        /// The key prefix inside the container, without leading or trailing `/`; empty for
        /// none.
        prefix: String,
    },
}

impl RepoLocation {
    /// Parses a repository URL or a bare path. Relative paths are made absolute against the
    /// current directory (PostgreSQL runs archive_command inside the data directory).
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: redact_secrets(text),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid("the repository location is empty"));
        }
        if !text.contains("://") {
            let path = std::path::absolute(text).map_err(|_| invalid("cannot resolve the path"))?;
            return Ok(RepoLocation::Local(path));
        }
        let url = Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are not accepted; use the cloud's environment variables",
            ));
        }
        if url.query().is_some() {
            return Err(invalid(
                "query parameters are not accepted; use the configuration file",
            ));
        }
        let bucket = || {
            url.host_str()
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| invalid("missing bucket"))
        };
        let prefix = url.path().trim_matches('/').to_owned();
        match url.scheme() {
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(invalid(
                        "file URLs take no host: write file:///absolute/path",
                    ));
                }
                let path = url
                    .to_file_path()
                    .map_err(|_| invalid("not an absolute local path"))?;
                Ok(RepoLocation::Local(path))
            }
            "s3" | "s3a" => Ok(RepoLocation::S3 {
                bucket: bucket()?,
                prefix,
            }),
            "gs" | "gcs" => Ok(RepoLocation::Gcs {
                bucket: bucket()?,
                prefix,
            }),
            "az" | "azure" | "abfs" => Ok(RepoLocation::Azure {
                container: bucket()?,
                prefix,
            }),
            other => Err(invalid(&format!(
                "unsupported scheme {other:?}: use file, s3, gs or az"
            ))),
        }
    }

    /// Whether the repository is a local directory.
    pub fn is_local(&self) -> bool {
        matches!(self, RepoLocation::Local(_))
    }
}

impl std::fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with_prefix =
            |f: &mut std::fmt::Formatter<'_>, scheme: &str, bucket: &str, prefix: &str| {
                if prefix.is_empty() {
                    write!(f, "{scheme}://{bucket}")
                } else {
                    write!(f, "{scheme}://{bucket}/{prefix}")
                }
            };
        match self {
            RepoLocation::Local(path) => write!(f, "file://{}", path.display()),
            RepoLocation::S3 { bucket, prefix } => with_prefix(f, "s3", bucket, prefix),
            RepoLocation::Gcs { bucket, prefix } => with_prefix(f, "gs", bucket, prefix),
            RepoLocation::Azure { container, prefix } => with_prefix(f, "az", container, prefix),
        }
    }
}

/// Retry policy for transient failures of cloud stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    /// How many times a failed request is retried.
    pub max_retries: usize,
    /// Give up retrying once this much time has passed since the first attempt.
    pub timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 5,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Options for S3-compatible servers; unset values fall back to the `AWS_*` environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// The endpoint URL of an S3-compatible server; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The bucket's region.
    pub region: Option<String>,
    /// Whether an `http://` (unencrypted) endpoint is allowed.
    pub allow_http: Option<bool>,
    /// `false` for servers that do not honour `If-None-Match: *`; walarch then checks for
    /// an existing object before each put instead of relying on a create-only put.
    pub conditional_put: Option<bool>,
}

/// How to open a repository's store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Retries of cloud store requests.
    pub retry: RetryOptions,
    /// Settings for S3 and S3-compatible servers.
    pub s3: S3Options,
    /// Per-request timeout for cloud stores (connection and transfer).
    pub request_timeout: Option<Duration>,
    /// The clouds' credentials and settings, as their standard variables name them
    /// (`AWS_ACCESS_KEY_ID`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_KEY`, ...). The
    /// engine never reads the process environment: the caller passes what applies.
    pub cloud: CloudSettings,
}

/// The clouds' standard variables (`AWS_*`, `GOOGLE_*` and `SERVICE_ACCOUNT`, `AZURE_*` and
/// `MSI_ENDPOINT`) given to the store. Printed (`Debug`) by name only: values can be secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CloudSettings(Vec<(String, String)>);

impl CloudSettings {
    /// Keeps the clouds' variables among `vars` (e.g. `std::env::vars()`), ignoring the rest.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let cloud = |name: &str| {
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                || matches!(name, "SERVICE_ACCOUNT" | "MSI_ENDPOINT")
        };
        CloudSettings(vars.into_iter().filter(|(name, _)| cloud(name)).collect())
    }

    /// Adds one variable.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.push((name.to_owned(), value.to_owned()));
    }

    /// The variables starting with `prefix`, as object_store's lower-case configuration
    /// keys (`AWS_ACCESS_KEY_ID` → `aws_access_key_id`).
    fn keys_for<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (String, &'a str)> + 'a {
        self.0
            .iter()
            .filter(move |(name, _)| name.starts_with(prefix))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether S3 credentials (or a way to get them other than the instance metadata
    /// service) are given.
    pub fn has_s3_credentials(&self) -> bool {
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_SKIP_SIGNATURE",
        ]
        .iter()
        .any(|name| self.get(name).is_some_and(|v| !v.is_empty()))
    }
}

impl std::fmt::Debug for CloudSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Opens the object store for `location`. Local repositories are created if missing only
/// when `create_local` is set: a reader must not mistake an absent (unmounted, mistyped)
/// directory for an empty repository.
pub fn open(
    location: &RepoLocation,
    options: &StoreOptions,
    create_local: bool,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: options.retry.max_retries,
        retry_timeout: options.retry.timeout,
    };
    // Client settings go in one by one: replacing the client options wholesale would drop
    // what from_env() read (AWS_ALLOW_HTTP, proxies, ...).
    let mut client_settings = vec![(ClientConfigKey::ConnectTimeout, "5s".to_owned())];
    if let Some(timeout) = options.request_timeout {
        client_settings.push((
            ClientConfigKey::Timeout,
            format!("{}ms", timeout.as_millis()),
        ));
    }
    // TLS certificates are verified unless the caller's cloud variables say otherwise
    // (`AWS_ALLOW_INVALID_CERTIFICATES`, ...); that must not go unnoticed.
    if options.cloud.0.iter().any(|(name, value)| {
        name.ends_with("ALLOW_INVALID_CERTIFICATES") && value.eq_ignore_ascii_case("true")
    }) {
        tracing::warn!(%location, "TLS certificates of the store are not verified (ALLOW_INVALID_CERTIFICATES is set)");
    }
    let open_err = |source: object_store::Error| StoreError::Open {
        location: location.to_string(),
        source: StoreFailure::new(source),
    };
    let (store, prefix): (Arc<dyn ObjectStore>, &str) = match location {
        RepoLocation::Local(path) => return open_local(path, create_local),
        RepoLocation::S3 { bucket, prefix } => {
            let s3 = &options.s3;
            if let Some(allow) = s3.allow_http {
                client_settings.push((ClientConfigKey::AllowHttp, allow.to_string()));
            }
            let mut builder = AmazonS3Builder::new();
            for (key, value) in options.cloud.keys_for("AWS_") {
                if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            let mut builder = builder.with_bucket_name(bucket).with_retry(retry);
            for (key, value) in client_settings {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if s3.conditional_put == Some(false) {
                builder = builder.with_conditional_put(S3ConditionalPut::Disabled);
            }
            (Arc::new(builder.build().map_err(open_err)?), prefix)
        }
        RepoLocation::Gcs { bucket, prefix } => {
            let mut builder = GoogleCloudStorageBuilder::new();
            if let Some(path) = options.cloud.get("SERVICE_ACCOUNT") {
                builder = builder.with_service_account_path(path);
            }
            for (key, value) in options.cloud.keys_for("GOOGLE_") {
                if let Ok(key) = key.parse::<GoogleConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            let mut builder = builder.with_bucket_name(bucket).with_retry(retry);
            for (key, value) in client_settings {
                builder = builder.with_config(GoogleConfigKey::Client(key), value);
            }
            (Arc::new(builder.build().map_err(open_err)?), prefix)
        }
        RepoLocation::Azure { container, prefix } => {
            let mut builder = MicrosoftAzureBuilder::new();
            for (key, value) in options.cloud.keys_for("AZURE_") {
                if let Ok(key) = key.parse::<AzureConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            if let Some(endpoint) = options.cloud.get("MSI_ENDPOINT") {
                builder = builder.with_msi_endpoint(endpoint);
            }
            let mut builder = builder.with_container_name(container).with_retry(retry);
            for (key, value) in client_settings {
                builder = builder.with_config(AzureConfigKey::Client(key), value);
            }
            (Arc::new(builder.build().map_err(open_err)?), prefix)
        }
    };
    if prefix.is_empty() {
        Ok(store)
    } else {
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}

fn open_local(path: &Path, create: bool) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if create {
        crate::local_files::create_dir_durably(path).map_err(|source| {
            StoreError::LocalDirectory {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(StoreError::LocalDirectory {
                path: path.to_owned(),
                source: std::io::Error::other("not a directory"),
            });
        }
        Err(source) => {
            return Err(StoreError::LocalDirectory {
                path: path.to_owned(),
                source,
            });
        }
    }
    let store = LocalFileSystem::new_with_prefix(path)
        .map_err(|source| StoreError::Open {
            location: format!("file://{}", path.display()),
            source: StoreFailure::new(source),
        })?
        .with_fsync(true)
        // Deleting a folder's last file removes the folder: an empty `backups/<id>/` left by
        // retention would otherwise be listed as an interrupted backup. A concurrent put into
        // a folder being removed recreates it (object_store retries on a missing parent).
        .with_automatic_cleanup(true);
    Ok(Arc::new(store))
}

/// Why a repository location cannot be parsed or its store opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The location is not a supported repository URL or path.
    #[error("invalid repository location {url:?}: {reason}")]
    InvalidUrl {
        /// The location as given, with secrets removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local repository directory cannot be created, does not exist or is not a directory.
    #[error("repository directory {}: {source}", path.display())]
    LocalDirectory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store's client could not be built (bad settings or credentials configuration).
    #[error("cannot open repository {location}: {source}")]
    Open {
        /// The repository's location.
        location: String,
        /// The store's error.
        source: StoreFailure,
    },
}

impl StoreError {
    /// What kind of failure this is: every failure to open a store is a setting to fix.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::LocalDirectory { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::NotADirectory
                | std::io::ErrorKind::Other => ErrorKind::Configuration,
                _ => io_error_kind(source),
            },
            StoreError::InvalidUrl { .. } | StoreError::Open { .. } => ErrorKind::Configuration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_location() {
        assert_eq!(
            RepoLocation::parse("/var/lib/walarch").unwrap(),
            RepoLocation::Local("/var/lib/walarch".into())
        );
        assert_eq!(
            RepoLocation::parse("file:///var/lib/walarch").unwrap(),
            RepoLocation::Local("/var/lib/walarch".into())
        );
        assert_eq!(
            RepoLocation::parse("s3://bucket/some/prefix/").unwrap(),
            RepoLocation::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            RepoLocation::parse("gs://b").unwrap(),
            RepoLocation::Gcs {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            RepoLocation::parse("az://container/p").unwrap(),
            RepoLocation::Azure {
                container: "container".into(),
                prefix: "p".into()
            }
        );
        assert!(
            matches!(RepoLocation::parse("relative/dir").unwrap(), RepoLocation::Local(p) if p.is_absolute())
        );
        assert_eq!(
            RepoLocation::parse("s3://bucket/p/").unwrap().to_string(),
            "s3://bucket/p"
        );
    }

    #[test]
    fn refuses_bad_locations_without_echoing_secrets() {
        for bad in [
            "",
            "ftp://host/x",
            "s3://",
            "file://host/x",
            "s3://bucket/p?x=1",
        ] {
            assert!(RepoLocation::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let err = RepoLocation::parse("s3://AKIAKEY:supersecret@bucket/p")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("supersecret"), "{err}");
    }

    #[test]
    fn local_repository_must_exist_unless_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("repo");
        let err = open(
            &RepoLocation::Local(missing.clone()),
            &StoreOptions::default(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("repo"), "{err}");
        open(
            &RepoLocation::Local(missing.clone()),
            &StoreOptions::default(),
            true,
        )
        .unwrap();
        assert!(missing.is_dir());
    }
}
