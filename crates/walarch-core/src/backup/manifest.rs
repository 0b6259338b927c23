//! The backup manifest (`backups/<id>/manifest.json`, DESIGN.md §3): what a backup holds and
//! everything needed to restore and verify it. It is written last, so its existence is what
//! makes a backup exist.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::wal::{Lsn, SegmentName, SegmentNo, SystemId, TimelineId, WalFileName, WalSegmentSize};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// A backup's name: its start time in UTC, `20261121T142700Z`, so names sort by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct BackupId(String);

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl BackupId {
    /// The id of a backup starting at `time`, truncated to the second.
    pub fn from_time(time: DateTime<Utc>) -> Self {
        BackupId(time.format(ID_FORMAT).to_string())
    }

    /// The id as text, e.g. `20261121T142700Z`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time the id names: when the backup started, to the second.
    pub fn time(&self) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&self.0, ID_FORMAT)
            .expect("ids are checked to be times when made")
            .and_utc()
    }
}

impl FromStr for BackupId {
    type Err = ManifestError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Parsing as a time both checks the shape and keeps the id a plain key segment.
        match NaiveDateTime::parse_from_str(text, ID_FORMAT) {
            Ok(_) if text.len() == 16 => Ok(BackupId(text.to_owned())),
            _ => Err(ManifestError::BadBackupId(text.to_owned())),
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = ManifestError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tablespace outside the data directory. Its files are stored under
/// `pg_tblspc/<oid>/...` in the parts; restore links `pg_tblspc/<oid>` to its location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// The tablespace's oid, its directory name under `pg_tblspc`.
    pub oid: u32,
    /// The tablespace's name (`spcname`).
    pub name: String,
    /// Where the tablespace lived on the backed-up server (`pg_tablespace_location`).
    pub location: PathBuf,
}

/// A directory of the data directory (or of a tablespace, under `pg_tblspc/<oid>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The directory's path relative to the data directory, without a trailing `/`.
    pub path: String,
    /// The directory's permission bits (`mode & 0o7777`).
    pub mode: u32,
}

/// A file as stored: `size` bytes whose CRC-32 is `crc32`, in part `part`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file's path relative to the data directory.
    pub path: String,
    /// The file's length as stored, in bytes.
    pub size: u64,
    /// CRC-32 of the stored content.
    pub crc32: u32,
    /// The file's permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// The index of the part holding the file.
    pub part: u32,
}

/// One compressed tar stream of the backup's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    /// The part's number, from 0; manifests list parts in this order.
    pub index: u32,
    /// Bytes of the tar stream before compression.
    pub tar_bytes: u64,
    /// Bytes stored (the object's size).
    pub stored_bytes: u64,
    /// Number of files in the part (directories not counted).
    pub files: u32,
}

/// A backup's manifest, stored as `backups/<id>/manifest.json` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The backup's id, also its folder's name.
    pub id: BackupId,
    /// Always `full` in this format.
    pub kind: String,
    /// The walarch that wrote the backup: `walarch <version>`.
    pub tool_version: String,
    /// The database system identifier of the backed-up cluster.
    pub system_id: SystemId,
    /// `server_version_num`, e.g. 150018.
    pub pg_version_num: u32,
    /// The cluster's WAL segment size.
    pub wal_segment_size: WalSegmentSize,
    /// The timeline the backup started on (`START TIMELINE` of `backup_label`).
    pub timeline: TimelineId,
    /// Where recovery from the backup starts reading WAL.
    pub start_lsn: Lsn,
    /// The backup's end: recovery must replay up to here to be consistent.
    pub stop_lsn: Lsn,
    /// When walarch started the backup on the server.
    pub started_at: DateTime<Utc>,
    /// When the server's backup was stopped, after the files were copied.
    pub stopped_at: DateTime<Utc>,
    /// When the WAL up to `stop_lsn` was confirmed in the repository and the backup was done.
    pub completed_at: DateTime<Utc>,
    /// Whether the backup was taken from a standby.
    pub from_standby: bool,
    /// How the parts are compressed.
    pub codec: Codec,
    /// Whether a `tablespace_map` is stored beside `backup_label`.
    pub has_tablespace_map: bool,
    /// CRC-32 of the stored `backup_label`, checked before restore writes it into the target
    /// (manifests written before walarch recorded it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_label_crc32: Option<u32>,
    /// The tablespaces outside the data directory.
    pub tablespaces: Vec<Tablespace>,
    /// Every directory restore creates, including empty ones.
    pub directories: Vec<DirectoryEntry>,
    /// Every file in the parts, sorted by path.
    pub files: Vec<FileEntry>,
    /// The parts, by index.
    pub parts: Vec<PartEntry>,
}

impl Manifest {
    /// The PostgreSQL major version, e.g. 15 for `pg_version_num` 150018.
    pub fn pg_major(&self) -> u32 {
        self.pg_version_num / 10000
    }

    /// Bytes of file content in the backup.
    pub fn data_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Bytes stored for the parts.
    pub fn stored_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.stored_bytes).sum()
    }

    /// The first WAL segment recovery from this backup needs.
    pub fn start_segment(&self) -> SegmentName {
        SegmentName::new(
            self.timeline,
            self.start_lsn.segment(self.wal_segment_size),
            self.wal_segment_size,
        )
    }

    /// The last WAL segment needed to make this backup consistent: the one holding the last
    /// byte before `stop_lsn` (`stop_lsn` itself may be the first byte of the next segment).
    pub fn stop_segment(&self) -> SegmentName {
        let last_byte = Lsn::new(
            self.stop_lsn
                .as_u64()
                .saturating_sub(1)
                .max(self.start_lsn.as_u64()),
        );
        SegmentName::new(
            self.timeline,
            last_byte.segment(self.wal_segment_size),
            self.wal_segment_size,
        )
    }

    /// Every WAL segment from the start segment to the stop segment: what must be in the
    /// archive for the backup to be restorable.
    pub fn wal_segments(&self) -> Vec<WalFileName> {
        let size = self.wal_segment_size;
        let first = self.start_lsn.segment(size).as_u64();
        let last = self
            .stop_segment()
            .segment_no(size)
            .expect("a name made from this size")
            .as_u64();
        (first..=last)
            .map(|n| WalFileName::Segment(SegmentName::new(self.timeline, SegmentNo::new(n), size)))
            .collect()
    }

    /// Parses and checks a stored manifest: its format, and that every path in it is a
    /// plain relative path and every file names an existing part.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat(manifest.format));
        }
        for path in manifest
            .directories
            .iter()
            .map(|d| &d.path)
            .chain(manifest.files.iter().map(|f| &f.path))
        {
            safe_relative_path(path)?;
        }
        for (expected, part) in manifest.parts.iter().enumerate() {
            if part.index as usize != expected {
                return Err(ManifestError::Invalid(format!(
                    "part {} listed at position {expected}",
                    part.index
                )));
            }
        }
        if let Some(file) = manifest
            .files
            .iter()
            .find(|f| f.part as usize >= manifest.parts.len())
        {
            return Err(ManifestError::Invalid(format!(
                "{} is in part {}, which the manifest does not list",
                file.path, file.part
            )));
        }
        if manifest.stop_lsn < manifest.start_lsn {
            return Err(ManifestError::Invalid(format!(
                "stop LSN {} before start LSN {}",
                manifest.stop_lsn, manifest.start_lsn
            )));
        }
        Ok(manifest)
    }

    /// The manifest as stored: pretty-printed JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }
}

/// Checks that `path` (from a manifest or a tar entry) is relative and made only of plain
/// names: no `..`, no `.`, no root, no empty name. Joined to a directory it stays inside it
/// (DESIGN.md §2.8), as long as no component is a link, which restore never creates except
/// for the tablespace links it makes itself.
pub fn safe_relative_path(path: &str) -> Result<PathBuf, ManifestError> {
    let unsafe_path = || ManifestError::UnsafePath(path.to_owned());
    // tar writes directories with a trailing '/', and some tars prefix names with "./".
    let trimmed = path.strip_prefix("./").unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() || trimmed.contains('\0') {
        return Err(unsafe_path());
    }
    let mut clean = PathBuf::new();
    for name in trimmed.split('/') {
        if name.is_empty() || name == "." || name == ".." {
            return Err(unsafe_path());
        }
        clean.push(name);
    }
    Ok(clean)
}

/// Why a backup id or a stored manifest is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The text is not a backup id; holds the text.
    #[error("{0:?} is not a backup id (expected a UTC time like 20261121T142700Z, or latest)")]
    BadBackupId(String),
    /// The manifest does not parse or is inconsistent; holds the reason.
    #[error("the manifest is not valid: {0}")]
    Invalid(String),
    /// The manifest has a format this build does not read; holds that format.
    #[error(
        "the manifest has format {0}; this walarch reads format {MANIFEST_FORMAT}: upgrade walarch"
    )]
    UnsupportedFormat(u32),
    /// A path in the manifest or a part is not a plain relative path; holds the path.
    #[error("refusing path {0:?}: not a plain relative path (absolute, '..' or empty)")]
    UnsafePath(String),
}

impl ManifestError {
    /// What kind of failure this is: a name given by a caller is a setting to fix; a stored
    /// manifest that does not read is damaged.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            ManifestError::BadBackupId(_) => ErrorKind::Configuration,
            ManifestError::UnsupportedFormat(_) => ErrorKind::Configuration,
            ManifestError::Invalid(_) | ManifestError::UnsafePath(_) => ErrorKind::Corrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_sort_by_time_and_refuse_anything_else() {
        let early = BackupId::from_time("2026-11-21T09:05:00Z".parse().unwrap());
        let late = BackupId::from_time("2026-11-21T14:27:00Z".parse().unwrap());
        assert_eq!(early.as_str(), "20261121T090500Z");
        assert!(early < late);
        assert_eq!("20261121T142700Z".parse::<BackupId>().unwrap(), late);
        assert_eq!(
            late.time(),
            "2026-11-21T14:27:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        for bad in [
            "",
            "latest",
            "20261121T142700",
            "../20261121T142700Z",
            "20261121T142700Z/x",
            "20261321T142700Z",
        ] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_plain_relative_paths_are_safe() {
        assert_eq!(
            safe_relative_path("base/5/1259").unwrap(),
            PathBuf::from("base/5/1259")
        );
        assert_eq!(
            safe_relative_path("pg_wal/").unwrap(),
            PathBuf::from("pg_wal")
        );
        assert_eq!(
            safe_relative_path("./global/pg_control").unwrap(),
            PathBuf::from("global/pg_control")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "base/../../x",
            "base/./x",
            ".",
            "a\0b",
            "//x",
        ] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: "20261121T142700Z".parse().unwrap(),
            kind: "full".into(),
            tool_version: "walarch test".into(),
            system_id: SystemId::new(7),
            pg_version_num: 150018,
            wal_segment_size: WalSegmentSize::DEFAULT,
            timeline: TimelineId::FIRST,
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: "0/4000000".parse().unwrap(),
            started_at: Utc::now(),
            stopped_at: Utc::now(),
            completed_at: Utc::now(),
            from_standby: false,
            codec: Codec::Zstd,
            has_tablespace_map: false,
            backup_label_crc32: None,
            tablespaces: vec![],
            directories: vec![DirectoryEntry {
                path: "base".into(),
                mode: 0o700,
            }],
            files: vec![FileEntry {
                path: "base/1/1259".into(),
                size: 8192,
                crc32: 1,
                mode: 0o600,
                part: 0,
            }],
            parts: vec![PartEntry {
                index: 0,
                tar_bytes: 10240,
                stored_bytes: 100,
                files: 1,
            }],
        }
    }

    #[test]
    fn manifests_round_trip_and_bad_ones_are_refused() {
        let manifest = sample();
        assert_eq!(Manifest::from_json(&manifest.to_json()).unwrap(), manifest);
        assert_eq!(
            manifest.start_segment().to_string(),
            "000000010000000000000002"
        );
        // stop LSN on a segment boundary: the last needed segment is the one before it.
        assert_eq!(
            manifest.stop_segment().to_string(),
            "000000010000000000000003"
        );
        assert_eq!(manifest.pg_major(), 15);
        let needed: Vec<String> = manifest
            .wal_segments()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            needed,
            ["000000010000000000000002", "000000010000000000000003"]
        );

        let mut escaping = sample();
        escaping.files[0].path = "../../etc/cron.d/x".into();
        assert!(matches!(
            Manifest::from_json(&escaping.to_json()),
            Err(ManifestError::UnsafePath(_))
        ));
        let mut orphan = sample();
        orphan.files[0].part = 1;
        assert!(matches!(
            Manifest::from_json(&orphan.to_json()),
            Err(ManifestError::Invalid(_))
        ));
        let mut newer = sample();
        newer.format = 2;
        assert!(matches!(
            Manifest::from_json(&newer.to_json()),
            Err(ManifestError::UnsupportedFormat(2))
        ));
        assert!(Manifest::from_json(b"{").is_err());
    }
}
