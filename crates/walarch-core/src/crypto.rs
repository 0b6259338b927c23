//! Client-side encryption of what holds table data: WAL segments (and `.partial` and
//! `.backup` files) and base backup parts. Each is sealed after compression as an
//! [age](https://age-encryption.org/v1) file (X25519 recipient; ChaCha20-Poly1305 in 64 KiB
//! chunks, each authenticated, so a flipped byte or a cut object fails to open), so that the
//! standard `age` tool can open any object by hand with the same key file:
//! `age -d -i KEYFILE OBJECT | zstd -d > FILE`.
//!
//! The header carries one extra stanza, `-> walarch-key <id>`, naming the key the object was
//! sealed for (the first 16 hex digits of SHA-256 over the key's public recipient). It is
//! covered by the header's MAC, and age ignores stanzas it does not know.
//!
//! What stays readable without the key, so that `info`, `backups` and retention work on a
//! host that holds no key: the identity object (`walarch.json`), backup manifests (file
//! names, sizes, CRC-32s, LSNs, times), `backup_label`/`tablespace_map`, claims, and timeline
//! history files (switch points between timelines). None of them holds table content.
//!
//! A key file is a standard age identity file: one `AGE-SECRET-KEY-1…` line per key, `#`
//! comments. The first key seals new objects; the others only open (rotation keeps old
//! objects readable). It must be readable by its owner only.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use sha2::{Digest, Sha256};

use crate::error::ErrorKind;

/// How every sealed object begins (age's version line).
pub const SEALED_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The header stanza that names the key.
const KEY_ID_TAG: &str = "walarch-key";
/// How far into an object its header is looked for.
const HEADER_LIMIT: usize = 4096;

/// A key's identifier: public, stored with every object sealed for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    fn of(recipient: &age::x25519::Recipient) -> Self {
        let digest = Sha256::digest(recipient.to_string().as_bytes());
        KeyId(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Key {
    id: KeyId,
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
}

/// The keys of one key file. Printed (`Debug`) by identifier only.
pub struct Keyring {
    keys: Vec<Key>,
    source: Option<PathBuf>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.ids())
            .field("source", &self.source)
            .finish()
    }
}

impl Keyring {
    /// Reads a key file; refuses one that others than its owner can read or write.
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let file_error = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        // The checks are made on the open file, so that what is checked is what is read.
        let mut file = std::fs::File::open(path).map_err(file_error)?;
        let metadata = file.metadata().map_err(file_error)?;
        if !metadata.is_file() {
            return Err(file_error(io::Error::other("not a regular file")));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(file_error)?;
        let mut ring = Keyring::parse(&text).map_err(|e| match e {
            KeyError::Invalid { line, reason, .. } => KeyError::Invalid {
                path: Some(path.to_owned()),
                line,
                reason,
            },
            other => other,
        })?;
        ring.source = Some(path.to_owned());
        Ok(ring)
    }

    /// Parses a key file's text (see the module documentation).
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // age's own parser error quotes nothing of the line; neither do we.
            let identity =
                age::x25519::Identity::from_str(line).map_err(|_| KeyError::Invalid {
                    path: None,
                    line: index + 1,
                    reason: "not an age X25519 secret key (AGE-SECRET-KEY-1...)".into(),
                })?;
            let recipient = identity.to_public();
            keys.push(Key {
                id: KeyId::of(&recipient),
                identity,
                recipient,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Invalid {
                path: None,
                line: 0,
                reason: "the file holds no key".into(),
            });
        }
        Ok(Keyring { keys, source: None })
    }

    /// A fresh key as key file text (comments: creation time, identifier, public key).
    pub fn generate() -> String {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        format!(
            "# created: {}\n# walarch key id: {}\n# public key: {}\n{}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            KeyId::of(&recipient),
            recipient,
            identity.to_string().expose_secret()
        )
    }

    /// The identifier of the key new objects are sealed for.
    pub fn current(&self) -> &KeyId {
        &self.keys[0].id
    }

    /// Every key's identifier, the current one first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// Wraps `output` so that what is written to it is sealed for the current key. The
    /// writer must be finished (`StreamWriter::finish`) for the object to open.
    pub fn seal_writer<W: Write>(&self, output: W) -> io::Result<age::stream::StreamWriter<W>> {
        let key = &self.keys[0];
        let recipient = KeyedRecipient {
            inner: &key.recipient,
            id: &key.id,
        };
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(io::Error::other)?;
        encryptor.wrap_output(output)
    }

    /// Seals a whole buffer.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 256);
        let mut writer = self.seal_writer(&mut out).expect("writing to memory");
        writer.write_all(plain).expect("writing to memory");
        writer.finish().expect("writing to memory");
        out
    }

    /// Opens a sealed stream: checks the header (MAC, a key of ours) at once; the chunks
    /// are authenticated as they are read (a failure is an `InvalidData` I/O error).
    pub fn open_reader<'a, R: Read + 'a>(
        &self,
        mut input: R,
    ) -> Result<Box<dyn Read + 'a>, SealError> {
        // The header's first bytes name the key, for the error if none of ours opens it.
        let mut head = Vec::with_capacity(HEADER_LIMIT);
        (&mut input)
            .take(HEADER_LIMIT as u64)
            .read_to_end(&mut head)
            .map_err(|e| SealError::Tampered {
                reason: e.to_string(),
            })?;
        let key_id = sealed_key_id(&head);
        let input = io::Cursor::new(head).chain(input);
        let decryptor =
            age::Decryptor::new(input).map_err(|e| self.open_error(e, key_id.clone()))?;
        let identities = self.keys.iter().map(|k| &k.identity as &dyn age::Identity);
        let reader = decryptor
            .decrypt(identities)
            .map_err(|e| self.open_error(e, key_id))?;
        Ok(Box::new(reader))
    }

    /// Opens a whole sealed object.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let key_id = sealed_key_id(sealed);
        let decryptor =
            age::Decryptor::new_buffered(sealed).map_err(|e| self.open_error(e, key_id.clone()))?;
        let identities = self.keys.iter().map(|k| &k.identity as &dyn age::Identity);
        let mut reader = decryptor
            .decrypt(identities)
            .map_err(|e| self.open_error(e, key_id.clone()))?;
        let mut plain = Vec::with_capacity(sealed.len());
        reader
            .read_to_end(&mut plain)
            .map_err(|e| SealError::Tampered {
                reason: e.to_string(),
            })?;
        Ok(plain)
    }

    fn open_error(&self, error: age::DecryptError, key_id: Option<KeyId>) -> SealError {
        match error {
            // The object names one of our keys, yet that key does not open it: the stanza
            // that wraps its file key was changed.
            age::DecryptError::NoMatchingKeys
                if key_id.as_ref().is_some_and(|id| self.ids().contains(id)) =>
            {
                SealError::Tampered {
                    reason: format!(
                        "key {} is in the key file but does not open it",
                        key_id.unwrap()
                    ),
                }
            }
            age::DecryptError::NoMatchingKeys => SealError::UnknownKey {
                key_id,
                have: self.ids(),
            },
            other => SealError::Tampered {
                reason: other.to_string(),
            },
        }
    }
}

/// The X25519 recipient plus the stanza that names its key.
struct KeyedRecipient<'a> {
    inner: &'a age::x25519::Recipient,
    id: &'a KeyId,
}

impl age::Recipient for KeyedRecipient<'_> {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let (mut stanzas, labels) = self.inner.wrap_file_key(file_key)?;
        stanzas.push(Stanza {
            tag: KEY_ID_TAG.into(),
            args: vec![self.id.0.clone()],
            body: Vec::new(),
        });
        Ok((stanzas, labels))
    }
}

/// Whether `stored` is a sealed object.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED_MAGIC)
}

/// The key a sealed object names in its header, if it names one. Reads the header's text
/// only (not authenticated here; opening checks the MAC).
pub fn sealed_key_id(stored: &[u8]) -> Option<KeyId> {
    if !is_sealed(stored) {
        return None;
    }
    let header = &stored[..stored.len().min(HEADER_LIMIT)];
    let prefix = format!("-> {KEY_ID_TAG} ");
    header
        .split(|&b| b == b'\n')
        .take_while(|line| !line.starts_with(b"---"))
        .find_map(|line| line.strip_prefix(prefix.as_bytes()))
        .and_then(|id| std::str::from_utf8(id).ok())
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|id| KeyId(id.to_owned()))
}

/// Opens `stored` if it is sealed, else hands it back: the one read path for WAL objects
/// and parts. `keyring` is the caller's; `must_be_sealed` is set for a repository created
/// with encryption, where a plaintext object can only be a substitution.
pub fn open_stored(
    keyring: Option<&Keyring>,
    stored: bytes::Bytes,
    must_be_sealed: bool,
) -> Result<bytes::Bytes, SealError> {
    if !is_sealed(&stored) {
        if must_be_sealed {
            return Err(SealError::Unsealed);
        }
        return Ok(stored);
    }
    let Some(keyring) = keyring else {
        return Err(SealError::NoKey {
            key_id: sealed_key_id(&stored),
        });
    };
    keyring.open(&stored).map(bytes::Bytes::from)
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Others than its owner can read or write it.
    #[error(
        "key file {} can be read or written by others than its owner (mode {mode:04o}): \
         run chmod 600 on it",
        path.display()
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not a key.
    #[error("invalid key file{} at line {line}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Invalid {
        /// The key file, when read from one.
        path: Option<PathBuf>,
        /// The line (1-based; 0 for the whole file).
        line: usize,
        /// What is wrong (never the line's text).
        reason: String,
    },
}

impl KeyError {
    /// Every key file problem is a setting to fix.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Configuration
    }
}

/// Why a stored object cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The object is sealed and no key was given.
    #[error(
        "the object is encrypted{}; give the key file with --encryption-key-file",
        key_id.as_ref().map(|id| format!(" (key {id})")).unwrap_or_default()
    )]
    NoKey {
        /// The key the object names.
        key_id: Option<KeyId>,
    },
    /// None of the given keys opens it.
    #[error(
        "the object is encrypted for {}, which is not in the key file (it holds {})",
        key_id.as_ref().map(|id| format!("key {id}")).unwrap_or_else(|| "another key".into()),
        have.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
    )]
    UnknownKey {
        /// The key the object names.
        key_id: Option<KeyId>,
        /// The keys the key file holds.
        have: Vec<KeyId>,
    },
    /// The object fails authentication: changed, cut short, or not what it claims.
    #[error("the encrypted object fails authentication (changed or cut short): {reason}")]
    Tampered {
        /// age's reason.
        reason: String,
    },
    /// A plaintext object in a repository created with encryption.
    #[error("the object is not encrypted, but the repository was created with encryption")]
    Unsealed,
}

impl SealError {
    /// A missing or wrong key is a setting to fix; anything else is a damaged object.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SealError::NoKey { .. } | SealError::UnknownKey { .. } => ErrorKind::Configuration,
            SealError::Tampered { .. } | SealError::Unsealed => ErrorKind::Corrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::parse(&Keyring::generate()).unwrap()
    }

    #[test]
    fn seals_and_opens_and_names_the_key() {
        let ring = ring();
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = ring.seal(&plain);
        assert!(is_sealed(&sealed));
        assert_eq!(sealed_key_id(&sealed).as_ref(), Some(ring.current()));
        assert_eq!(ring.open(&sealed).unwrap(), plain);
        let mut streamed = Vec::new();
        ring.open_reader(&sealed[..])
            .unwrap()
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(streamed, plain);
    }

    #[test]
    fn a_wrong_key_or_any_flipped_byte_fails() {
        let (ring, other) = (ring(), ring());
        let plain = vec![7u8; 150_000];
        let sealed = ring.seal(&plain);
        let err = other.open(&sealed).unwrap_err();
        assert!(matches!(err, SealError::UnknownKey { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(err.to_string().contains(ring.current().as_str()), "{err}");
        // Bytes of the X25519 stanza, of the key's own stanza, of the payload's first and
        // last chunks.
        let key_stanza = sealed
            .windows(KEY_ID_TAG.len())
            .position(|w| w == KEY_ID_TAG.as_bytes())
            .unwrap();
        for position in [
            30,
            60,
            key_stanza + 2,
            key_stanza + 15,
            sealed.len() / 3,
            sealed.len() - 5,
        ] {
            let mut flipped = sealed.clone();
            flipped[position] ^= 0x01;
            let err = ring.open(&flipped).expect_err("a flipped byte");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "byte {position}: {err}");
        }
        let err = ring.open(&sealed[..sealed.len() - 100]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "cut short: {err}");
    }

    #[test]
    fn rotation_keeps_old_objects_readable() {
        let old = Keyring::generate();
        let old_ring = Keyring::parse(&old).unwrap();
        let sealed_before = old_ring.seal(b"before rotation");
        let rotated = Keyring::parse(&format!("{}{old}", Keyring::generate())).unwrap();
        assert_ne!(rotated.current(), old_ring.current());
        assert_eq!(rotated.ids()[1], *old_ring.current());
        assert_eq!(rotated.open(&sealed_before).unwrap(), b"before rotation");
        let sealed_after = rotated.seal(b"after");
        assert_eq!(
            sealed_key_id(&sealed_after).as_ref(),
            Some(rotated.current())
        );
        assert!(old_ring.open(&sealed_after).is_err());
    }

    #[test]
    fn plaintext_passes_unless_the_repository_is_encrypted() {
        let ring = ring();
        let plain = bytes::Bytes::from_static(b"\x28\xb5\x2f\xfd plain zstd");
        assert_eq!(
            open_stored(Some(&ring), plain.clone(), false).unwrap(),
            plain
        );
        assert!(matches!(
            open_stored(Some(&ring), plain, true),
            Err(SealError::Unsealed)
        ));
        let sealed = bytes::Bytes::from(ring.seal(b"x"));
        assert!(matches!(
            open_stored(None, sealed, false),
            Err(SealError::NoKey { key_id: Some(_) })
        ));
    }

    #[test]
    fn bad_key_files_are_refused_without_quoting_them() {
        for text in ["", "# only a comment\n", "AGE-SECRET-KEY-1NOTAKEY\n"] {
            let err = Keyring::parse(text).unwrap_err();
            assert!(!err.to_string().contains("NOTAKEY"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, Keyring::generate()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyError::Exposed { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ring = Keyring::load(&path).unwrap();
        assert!(!format!("{ring:?}").contains("AGE-SECRET-KEY"));
    }
}

/// Encryption as the archive uses it, against a local repository.
#[cfg(test)]
mod archive_tests {
    use std::sync::Arc;

    use super::*;
    use crate::archive::{FetchOutcome, fetch_wal_file, push_wal_file};
    use crate::codec::{Codec, Compression};
    use crate::repo::{RepoError, Repository};
    use crate::store::{RepoLocation, keys};
    use crate::testing::synthetic_segment;
    use crate::wal::{SegmentName, SegmentNo, SystemId, TimelineId, WalFileName, WalSegmentSize};
    use object_store::ObjectStoreExt;

    fn repo(dir: &Path, keyring: Option<Arc<Keyring>>) -> Repository {
        Repository::open_for_write(RepoLocation::Local(dir.join("repo")), &Default::default())
            .unwrap()
            .with_keyring(keyring)
    }

    fn segment(dir: &Path, segno: u64) -> (PathBuf, WalFileName, Vec<u8>) {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let content = synthetic_segment(
            SystemId::new(5),
            TimelineId::FIRST,
            SegmentNo::new(segno),
            size,
        );
        let name = SegmentName::new(TimelineId::FIRST, SegmentNo::new(segno), size);
        let path = dir.join(name.to_string());
        std::fs::write(&path, &content).unwrap();
        (path, WalFileName::Segment(name), content)
    }

    #[tokio::test]
    async fn history_files_stay_readable_in_an_encrypted_repository() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(Keyring::parse(&Keyring::generate()).unwrap());
        let repo = repo(dir.path(), Some(ring));
        let (path, _, _) = segment(dir.path(), 1);
        push_wal_file(&repo, &path, Compression::default(), None)
            .await
            .unwrap();
        let history = dir.path().join("00000002.history");
        std::fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
        push_wal_file(&repo, &history, Compression::default(), None)
            .await
            .unwrap();
        // PostgreSQL pushes it again after a crash: compared, found identical.
        push_wal_file(&repo, &history, Compression::default(), None)
            .await
            .expect("a history file pushed again");
        let dest = dir.path().join("RECOVERYHISTORY");
        let fetched = fetch_wal_file(
            &repo,
            &"00000002.history".parse().unwrap(),
            &dest,
            Codec::Zstd,
            false,
        )
        .await
        .unwrap();
        assert!(matches!(fetched, FetchOutcome::Fetched(_)));
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&history).unwrap()
        );
    }

    #[tokio::test]
    async fn with_a_key_a_plaintext_segment_is_refused_even_without_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(Keyring::parse(&Keyring::generate()).unwrap());
        let plain = repo(dir.path(), None);
        let (path, name, _) = segment(dir.path(), 1);
        push_wal_file(&plain, &path, Compression::default(), None)
            .await
            .unwrap();
        // Someone who can write the store removes the identity and plants plaintext WAL.
        plain.store().delete(&keys::identity()).await.unwrap();
        let keyed = repo(dir.path(), Some(ring));
        let dest = dir.path().join("RECOVERYXLOG");
        let err = fetch_wal_file(&keyed, &name, &dest, Codec::Zstd, false)
            .await
            .expect_err("plaintext under a key");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn keys_and_repositories_must_agree_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(Keyring::parse(&Keyring::generate()).unwrap());
        let (first, _, _) = segment(dir.path(), 1);
        let (second, _, _) = segment(dir.path(), 2);
        // Created without encryption: a key cannot start sealing into it.
        let plain = repo(dir.path(), None);
        push_wal_file(&plain, &first, Compression::default(), None)
            .await
            .unwrap();
        let keyed = repo(dir.path(), Some(ring.clone()));
        let err = push_wal_file(&keyed, &second, Compression::default(), None)
            .await
            .expect_err("a key for a plaintext repository");
        assert!(
            matches!(
                err,
                crate::archive::PushError::Repo(RepoError::CreatedWithoutEncryption { .. })
            ),
            "{err}"
        );
        // Created with encryption: writing needs the key.
        let other = tempfile::tempdir().unwrap();
        push_wal_file(
            &repo(other.path(), Some(ring)),
            &first,
            Compression::default(),
            None,
        )
        .await
        .unwrap();
        let err = push_wal_file(
            &repo(other.path(), None),
            &second,
            Compression::default(),
            None,
        )
        .await
        .expect_err("no key for an encrypted repository");
        assert!(
            matches!(
                err,
                crate::archive::PushError::Repo(RepoError::KeyRequired { .. })
            ),
            "{err}"
        );
    }
}
