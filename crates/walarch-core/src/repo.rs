//! A repository: one object store location holding the WAL and backups of one database
//! system. This module owns the identity object (`walarch.json`) and the primitive
//! operations on stored objects that the safety contract is built from: create-only puts,
//! gets that distinguish "the store says it does not exist" from every other failure, and
//! lookups of a WAL file under any codec.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::crypto::{self, Keyring, SealError};
use crate::error::{ErrorKind, StoreFailure};
use crate::store::{self, RepoLocation, StoreError, StoreOptions, keys};
use crate::wal::{SystemId, WalFileName, WalSegmentSize};

/// The repository format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// `walarch.json`: which database system the repository belongs to. Written once, by the
/// first push of a WAL segment, with a create-only put; never rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The repository format ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The database system identifier of the cluster whose WAL the repository holds.
    pub system_id: SystemId,
    /// The cluster's WAL segment size.
    pub wal_segment_size: WalSegmentSize,
    /// The cluster's PostgreSQL major version, for example 15.
    pub pg_major: u32,
    /// When the identity was written.
    pub created_at: DateTime<Utc>,
    /// The walarch that wrote it: `walarch <version>`.
    pub created_by: String,
    /// `age` when the repository was created with encryption: every WAL object and backup
    /// part must then be sealed, and writing needs the key (`crypto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
}

impl Identity {
    /// An identity in the current format, created now by this walarch.
    pub fn new(system_id: SystemId, wal_segment_size: WalSegmentSize, pg_major: u32) -> Self {
        Identity {
            format: FORMAT_VERSION,
            system_id,
            wal_segment_size,
            pg_major,
            created_at: Utc::now(),
            created_by: format!("walarch {}", env!("CARGO_PKG_VERSION")),
            encryption: None,
        }
    }
}

/// A WAL file found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWal {
    /// The object's key, which names the codec.
    pub key: Path,
    /// The compression the object is stored with.
    pub codec: Codec,
    /// The object's stored size in bytes.
    pub size: u64,
}

/// Whether a create-only put stored the object or found one already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// The object was stored.
    Created,
    /// An object was already at the key; nothing was written.
    AlreadyExists,
}

/// An open repository: the object store and its location, and the repository's identity once read.
#[derive(Debug)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    location: RepoLocation,
    /// Cleared when the store turns out not to support create-only puts; later puts then
    /// rely on the existence check done before them.
    create_only_supported: AtomicBool,
    /// `walarch.json` once read or written. The identity is never rewritten (the repository is
    /// append-only), so one read serves a long-lived worker for all its files.
    identity: std::sync::OnceLock<Identity>,
    /// An S3 repository opened without credentials: object_store then asks the instance
    /// metadata service, and its failure is reported as "no credentials".
    without_credentials: bool,
    /// The keys that seal and open WAL objects and backup parts, if encryption is on.
    keyring: Option<Arc<Keyring>>,
    /// Whether planning stores the segment summaries it makes (it reads stored ones anyway).
    summary_writes: bool,
}

impl Repository {
    /// Opens a repository for reading. A local repository directory must already exist.
    pub fn open(location: RepoLocation, options: &StoreOptions) -> Result<Self, RepoError> {
        Self::open_with(location, options, false)
    }

    /// Opens a repository for writing, creating a local repository directory if needed.
    pub fn open_for_write(
        location: RepoLocation,
        options: &StoreOptions,
    ) -> Result<Self, RepoError> {
        Self::open_with(location, options, true)
    }

    fn open_with(
        location: RepoLocation,
        options: &StoreOptions,
        create: bool,
    ) -> Result<Self, RepoError> {
        let store = store::open(&location, options, create)?;
        let without_credentials =
            matches!(location, RepoLocation::S3 { .. }) && !options.cloud.has_s3_credentials();
        let mut repo = Self::from_store(store, location);
        repo.without_credentials = without_credentials;
        Ok(repo)
    }

    /// Wraps an already opened object store (tests, embedding applications).
    pub fn from_store(store: Arc<dyn ObjectStore>, location: RepoLocation) -> Self {
        Repository {
            store,
            location,
            create_only_supported: AtomicBool::new(true),
            identity: std::sync::OnceLock::new(),
            without_credentials: false,
            keyring: None,
            summary_writes: true,
        }
    }

    /// Seals WAL objects and backup parts written from now on for the keyring's current key,
    /// and opens sealed ones with any of its keys.
    pub fn with_keyring(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// Whether planning stores segment summaries here (on by default). Off for a repository
    /// that must only be read, such as the source of a recovery: stored summaries are still
    /// read, none is written.
    pub fn with_summary_writes(mut self, on: bool) -> Self {
        self.summary_writes = on;
        self
    }

    /// Whether planning stores segment summaries here.
    pub(crate) fn writes_summaries(&self) -> bool {
        self.summary_writes
    }

    /// The keys, if encryption is on.
    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keyring.as_ref()
    }

    /// Seals `data` (a compressed WAL object or part) if encryption is on.
    pub fn seal(&self, data: Vec<u8>) -> Vec<u8> {
        match &self.keyring {
            Some(keyring) => keyring.seal(&data),
            None => data,
        }
    }

    /// Opens the stored object of WAL file `name` read from `key`: sealed ones with the
    /// keyring; plaintext ones only where encryption is off ([`Self::must_be_sealed`]).
    /// Timeline history files are never sealed (see `crypto`) and come back as they are.
    pub fn open_wal(
        &self,
        name: &WalFileName,
        key: &Path,
        stored: Bytes,
    ) -> Result<Bytes, RepoError> {
        if matches!(name, WalFileName::History(_)) {
            return Ok(stored);
        }
        self.open_object(key, stored)
    }

    /// Opens a sealed object (a WAL segment's or a backup part's) read from `key`.
    pub fn open_object(&self, key: &Path, stored: Bytes) -> Result<Bytes, RepoError> {
        crypto::open_stored(self.keyring.as_deref(), stored, self.must_be_sealed()).map_err(
            |source| RepoError::Sealed {
                key: key.to_string(),
                location: self.location.to_string(),
                source,
            },
        )
    }

    /// Whether WAL segments and backup parts must be sealed: always with a keyring (a
    /// plaintext object can only be a substitution; `walarch.json` is not authenticated, so
    /// it cannot be what turns the rule off), and without one in a repository whose identity
    /// (once read) says it was created with encryption.
    pub fn must_be_sealed(&self) -> bool {
        self.keyring.is_some()
            || self
                .identity
                .get()
                .is_some_and(|identity| identity.encryption.is_some())
    }

    /// Refuses to write into a repository created with encryption without the key (the
    /// object would be stored in plaintext), and to seal objects into one created without
    /// (its older objects could no longer be read with encryption on).
    pub fn check_can_write(&self, identity: &Identity) -> Result<(), RepoError> {
        match (identity.encryption.is_some(), self.keyring.is_some()) {
            (true, false) => Err(RepoError::KeyRequired {
                location: self.location.to_string(),
            }),
            (false, true) => Err(RepoError::CreatedWithoutEncryption {
                location: self.location.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Where the repository is.
    pub fn location(&self) -> &RepoLocation {
        &self.location
    }

    /// The object store itself, for listings (the catalog).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Reads `walarch.json`; `None` when the store says it does not exist.
    pub async fn identity(&self) -> Result<Option<Identity>, RepoError> {
        if let Some(identity) = self.identity.get() {
            return Ok(Some(identity.clone()));
        }
        let key = keys::identity();
        let Some(bytes) = self.get_if_exists(&key).await? else {
            return Ok(None);
        };
        let identity: Identity =
            serde_json::from_slice(&bytes).map_err(|e| RepoError::CorruptIdentity {
                location: self.location.to_string(),
                reason: e.to_string(),
            })?;
        if identity.format != FORMAT_VERSION {
            return Err(RepoError::UnsupportedFormat {
                location: self.location.to_string(),
                format: identity.format,
            });
        }
        Ok(Some(self.identity.get_or_init(|| identity).clone()))
    }

    /// Records `proposed` as the identity unless one exists; returns the identity in force.
    /// Two first pushes racing are settled by the create-only put: the loser reads the winner's.
    pub async fn ensure_identity(&self, proposed: &Identity) -> Result<Identity, RepoError> {
        if let Some(existing) = self.identity().await? {
            return Ok(existing);
        }
        let mut proposed = proposed.clone();
        if self.keyring.is_some() {
            proposed.encryption = Some("age".into());
        }
        let proposed = &proposed;
        let json = serde_json::to_vec_pretty(proposed).expect("identity serialises");
        match self.put_new(&keys::identity(), Bytes::from(json)).await? {
            PutOutcome::Created => {
                tracing::info!(location = %self.location, system_id = %proposed.system_id, "created repository identity");
                Ok(self.identity.get_or_init(|| proposed.clone()).clone())
            }
            PutOutcome::AlreadyExists => {
                self.identity()
                    .await?
                    .ok_or_else(|| RepoError::CorruptIdentity {
                        location: self.location.to_string(),
                        reason: "walarch.json vanished while it was being created".into(),
                    })
            }
        }
    }

    /// Finds every stored copy of WAL file `name` (normally one; several only if the
    /// compression setting changed between two pushes of the same file). The lookups for
    /// the possible codecs run concurrently, so this costs one round trip.
    pub async fn find_wal(&self, name: &WalFileName) -> Result<Vec<StoredWal>, RepoError> {
        self.find_wal_among(name, |_| true).await
    }

    /// [`Repository::find_wal`] without the key of `known`: for a caller whose own request
    /// already answered for that key (a fetch whose get of it missed).
    pub async fn find_wal_except(
        &self,
        name: &WalFileName,
        known: Codec,
    ) -> Result<Vec<StoredWal>, RepoError> {
        self.find_wal_among(name, |codec| codec != known).await
    }

    async fn find_wal_among(
        &self,
        name: &WalFileName,
        wanted: impl Fn(Codec) -> bool,
    ) -> Result<Vec<StoredWal>, RepoError> {
        let codecs = keys::possible_codecs(name).iter().copied();
        let lookups = codecs
            .filter(|&codec| wanted(codec))
            .map(|codec| async move {
                let key = keys::wal_file(name, codec);
                match self.store.head(&key).await {
                    Ok(meta) => Ok(Some(StoredWal {
                        key,
                        codec,
                        size: meta.size,
                    })),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(source) => Err(self.store_error("look up", &key, source)),
                }
            });
        let found = futures::future::try_join_all(lookups).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The size of an object; `None` only when the store answered that it does not exist.
    pub async fn object_size(&self, key: &Path) -> Result<Option<u64>, RepoError> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.store_error("look up", key, source)),
        }
    }

    /// Gets an object; `None` only when the store answered that it does not exist.
    pub async fn get_if_exists(&self, key: &Path) -> Result<Option<Bytes>, RepoError> {
        let result = match self.store.get(key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.store_error("read", key, source)),
        };
        match result.bytes().await {
            Ok(bytes) => Ok(Some(bytes)),
            // The object was deleted between the response headers and the body: still a
            // failure to read, not proof of absence.
            Err(source) => Err(self.store_error("read", key, source)),
        }
    }

    /// Stores `data` at `key` only if nothing is there. Success means the store reported the
    /// object durable (a completed PUT, or fsynced file and directory).
    pub async fn put_new(&self, key: &Path, data: Bytes) -> Result<PutOutcome, RepoError> {
        let payload = PutPayload::from_bytes(data);
        if self.create_only_supported.load(Ordering::Relaxed) {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self.store.put_opts(key, payload.clone(), opts).await {
                Ok(_) => return Ok(PutOutcome::Created),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    return Ok(PutOutcome::AlreadyExists);
                }
                Err(object_store::Error::NotImplemented { .. }) => {
                    tracing::debug!(location = %self.location, "store has no create-only put; checking before each put");
                    self.create_only_supported.store(false, Ordering::Relaxed);
                }
                Err(source) => return Err(self.store_error("write", key, source)),
            }
        }
        // Fallback for stores without conditional puts: the caller has looked the key up
        // just before; check once more immediately before writing to narrow the window.
        match self.store.head(key).await {
            Ok(_) => return Ok(PutOutcome::AlreadyExists),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(self.store_error("look up", key, source)),
        }
        self.store
            .put(key, payload)
            .await
            .map_err(|source| self.store_error("write", key, source))?;
        Ok(PutOutcome::Created)
    }

    pub(crate) fn store_error(
        &self,
        action: &'static str,
        key: &Path,
        source: object_store::Error,
    ) -> RepoError {
        // Without credentials object_store falls back to the instance metadata service
        // (`/latest/api/token`); outside a cloud instance that fails with a network error
        // that says nothing about credentials.
        let text = source.to_string();
        if self.without_credentials
            && (text.contains("/latest/api/token") || text.contains("/latest/meta-data"))
        {
            return RepoError::NoCredentials {
                location: self.location.to_string(),
                source: StoreFailure::new(source),
            };
        }
        RepoError::Store {
            action,
            key: key.to_string(),
            location: self.location.to_string(),
            source: StoreFailure::new(source),
        }
    }
}

/// Why an operation on a repository failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] StoreError),
    /// Any store failure that survived the retries; the store's error is its source,
    /// displayed with secrets removed.
    #[error("cannot {action} {key} in {location}: {source}")]
    Store {
        /// What was being done: `read`, `write`, `look up`, `list` or `delete`.
        action: &'static str,
        /// The object's key (or the listed prefix).
        key: String,
        /// The repository's location.
        location: String,
        /// The store's error.
        source: StoreFailure,
    },
    /// A stored object walarch reads for its own bookkeeping does not parse.
    #[error("cannot {action} {key} in {location}: {message}")]
    Invalid {
        /// What was being done, for example `parse`.
        action: &'static str,
        /// The object's key.
        key: String,
        /// The repository's location.
        location: String,
        /// What is wrong with the object.
        message: String,
    },
    /// No credentials were given for an S3 repository, and none could be had from the
    /// instance metadata service.
    #[error(
        "no S3 credentials found for {location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
         (or AWS_WEB_IDENTITY_TOKEN_FILE), or run with an instance role ({source})"
    )]
    NoCredentials {
        /// The repository's location.
        location: String,
        /// The store's error from the failed metadata service request.
        source: StoreFailure,
    },
    /// The location holds nothing of walarch's (no identity, WAL or backups).
    #[error(
        "{location} is not a walarch repository (no walarch.json, no WAL, no backups): check the \
         location; nothing has been archived there yet"
    )]
    NotARepository {
        /// The location given.
        location: String,
    },
    /// `walarch.json` does not parse, or vanished while being created.
    #[error("{location}/walarch.json is not a valid repository identity: {reason}")]
    CorruptIdentity {
        /// The repository's location.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// `walarch.json` names a repository format other than [`FORMAT_VERSION`].
    #[error(
        "{location} has repository format {format}, this walarch reads format {FORMAT_VERSION}: upgrade walarch"
    )]
    UnsupportedFormat {
        /// The repository's location.
        location: String,
        /// The format `walarch.json` names.
        format: u32,
    },
    /// A WAL object or backup part cannot be opened: no key, a wrong key, changed bytes.
    #[error("cannot open {key} in {location}: {source}")]
    Sealed {
        /// The object's key.
        key: String,
        /// The repository's location.
        location: String,
        /// Why.
        source: SealError,
    },
    /// The repository was created without encryption and a key was given.
    #[error(
        "{location} was created without encryption: encryption needs a new repository (and a new base backup there)"
    )]
    CreatedWithoutEncryption {
        /// The repository's location.
        location: String,
    },
    /// The repository was created with encryption and no key was given for writing.
    #[error(
        "{location} was created with encryption: give its key file (--encryption-key-file) to write into it"
    )]
    KeyRequired {
        /// The repository's location.
        location: String,
    },
}

impl RepoError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RepoError::Open(e) => e.kind(),
            RepoError::Store { source, .. } => source.kind(),
            RepoError::Invalid { .. } | RepoError::CorruptIdentity { .. } => ErrorKind::Corrupt,
            RepoError::Sealed { source, .. } => source.kind(),
            RepoError::UnsupportedFormat { .. }
            | RepoError::KeyRequired { .. }
            | RepoError::CreatedWithoutEncryption { .. }
            | RepoError::NotARepository { .. }
            | RepoError::NoCredentials { .. } => ErrorKind::Configuration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn repo() -> Repository {
        Repository::from_store(
            Arc::new(InMemory::new()),
            RepoLocation::Local("/mem".into()),
        )
    }

    #[tokio::test]
    async fn identity_is_created_once_and_kept() {
        let repo = repo();
        assert_eq!(repo.identity().await.unwrap(), None);
        let first = Identity::new(SystemId::new(1), WalSegmentSize::DEFAULT, 15);
        assert_eq!(repo.ensure_identity(&first).await.unwrap(), first);
        let second = Identity::new(SystemId::new(2), WalSegmentSize::DEFAULT, 15);
        assert_eq!(
            repo.ensure_identity(&second).await.unwrap(),
            first,
            "the first identity stays"
        );
    }

    #[tokio::test]
    async fn future_formats_and_garbage_identities_are_refused() {
        let repo = repo();
        let mut newer =
            serde_json::to_value(Identity::new(SystemId::new(1), WalSegmentSize::DEFAULT, 15))
                .unwrap();
        newer["format"] = 2.into();
        repo.put_new(
            &keys::identity(),
            serde_json::to_vec(&newer).unwrap().into(),
        )
        .await
        .unwrap();
        assert!(matches!(
            repo.identity().await,
            Err(RepoError::UnsupportedFormat { format: 2, .. })
        ));

        let repo2 = super::tests::repo();
        repo2
            .put_new(&keys::identity(), Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        assert!(matches!(
            repo2.identity().await,
            Err(RepoError::CorruptIdentity { .. })
        ));
    }

    #[tokio::test]
    async fn put_new_never_overwrites() {
        let repo = repo();
        let key = Path::from("wal/x");
        assert_eq!(
            repo.put_new(&key, Bytes::from_static(b"one"))
                .await
                .unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            repo.put_new(&key, Bytes::from_static(b"two"))
                .await
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(
            repo.get_if_exists(&key).await.unwrap().unwrap(),
            Bytes::from_static(b"one")
        );
        assert_eq!(
            repo.get_if_exists(&Path::from("wal/y")).await.unwrap(),
            None
        );
    }
}
