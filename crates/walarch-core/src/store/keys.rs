//! The repository's key layout (format 1). Every object key is spelled here and nowhere else.
//!
//! ```text
//! walarch.json                                   identity
//! wal/<TTTTTTTTXXXXXXXX>/<walfile>[.zst|.gz]       segments, .partial and .backup files
//! wal/<TTTTTTTT>.history                         timeline history files, uncompressed
//! backups/<backup-id>/data/<n>.tar[.zst|.gz]     base backup content, split into parts
//! backups/<backup-id>/backup_label, tablespace_map
//! backups/<backup-id>/manifest.json              written last: a backup without it does not exist
//! drills/<drill-id>.json                         restore drill reports (create-only)
//! summaries/<TTTTTTTTXXXXXXXX>/<segment>.<first|next>.<hash>.json.zst
//!                                                what planning read from one WAL segment (a cache)
//! ```
//!
//! Segment summaries live outside `wal/` and `backups/`, so no listing of WAL or backups ever
//! sees them. `<hash>` is taken over the WAL object's size and entity tag (or modification
//! time), so a segment stored anew gets a new key and create-only writes never block the
//! summary of the object actually stored; `first` and `next` say whether the segment was
//! decoded as the first of a scan or after the one before it.

use object_store::path::Path;

use crate::codec::Codec;
use crate::wal::WalFileName;

/// The repository identity object.
pub fn identity() -> Path {
    Path::from("walarch.json")
}

/// Codecs a stored WAL file may have been written with. History files are always stored
/// uncompressed, so an operator can read them directly.
pub fn possible_codecs(name: &WalFileName) -> &'static [Codec] {
    match name {
        WalFileName::History(_) => &[Codec::None],
        _ => &Codec::ALL,
    }
}

/// The key of WAL file `name` stored with `codec`.
pub fn wal_file(name: &WalFileName, codec: Codec) -> Path {
    let file = match codec.extension() {
        Some(ext) => format!("{name}.{ext}"),
        None => name.to_string(),
    };
    match name.segment() {
        Some(segment) => Path::from(format!("wal/{}/{file}", segment.timeline_and_log_id())),
        None => Path::from(format!("wal/{file}")),
    }
}

/// The prefix under which every backup lives.
pub fn backups() -> Path {
    Path::from("backups")
}

/// The folder of one backup; `id` is a [`crate::backup::BackupId`] (checked to be a plain name).
pub fn backup_dir(id: &str) -> Path {
    Path::from(format!("backups/{id}"))
}

/// The manifest of backup `id`, written last.
pub fn backup_manifest(id: &str) -> Path {
    Path::from(format!("backups/{id}/manifest.json"))
}

/// `backup_label` (or `tablespace_map`) as returned by `pg_backup_stop`.
pub fn backup_file(id: &str, name: &str) -> Path {
    Path::from(format!("backups/{id}/{name}"))
}

/// Part `index` of backup `id`'s content, a tar stream in `codec`.
pub fn backup_part(id: &str, index: u32, codec: Codec) -> Path {
    match codec.extension() {
        Some(ext) => Path::from(format!("backups/{id}/data/{index}.tar.{ext}")),
        None => Path::from(format!("backups/{id}/data/{index}.tar")),
    }
}

/// The prefix under which drill reports live.
pub fn drills() -> Path {
    Path::from("drills")
}

/// The report of drill `id` (a time-sorted id, checked to be a plain name by its maker).
pub fn drill_report(id: &str) -> Path {
    Path::from(format!("drills/{id}.json"))
}

/// The prefix under which every segment summary lives.
pub fn summaries() -> Path {
    Path::from("summaries")
}

/// The folder of the summaries of segments in the same `TTTTTTTTXXXXXXXX` group as `segment`.
pub fn summary_dir(segment: &crate::wal::SegmentName) -> Path {
    Path::from(format!("summaries/{}", segment.timeline_and_log_id()))
}

/// The summary of WAL segment `segment` as decoded in `context` (`first` of a scan, or `next`
/// after the segment before it), made from the object whose identity hashes to
/// `object_hash` (hex, from the object's size and entity tag).
pub fn segment_summary(
    segment: &crate::wal::SegmentName,
    context: &str,
    object_hash: &str,
) -> Path {
    Path::from(format!(
        "summaries/{}/{segment}.{context}.{object_hash}.json.zst",
        segment.timeline_and_log_id()
    ))
}

/// The segment a summary key describes, if `key` is one (for deleting the summaries of WAL
/// that retention deleted).
pub fn summarized_segment(key: &Path) -> Option<crate::wal::SegmentName> {
    let mut parts = key.parts();
    if parts.next()?.as_ref() != "summaries" {
        return None;
    }
    let _group = parts.next()?;
    let file = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (segment, _) = file.as_ref().split_once('.')?;
    match segment.parse().ok()? {
        WalFileName::Segment(name) => Some(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_design() {
        let seg: WalFileName = "000000010000000A0000002F".parse().unwrap();
        assert_eq!(
            wal_file(&seg, Codec::Zstd).as_ref(),
            "wal/000000010000000A/000000010000000A0000002F.zst"
        );
        assert_eq!(
            wal_file(&seg, Codec::Gzip).as_ref(),
            "wal/000000010000000A/000000010000000A0000002F.gz"
        );
        assert_eq!(
            wal_file(&seg, Codec::None).as_ref(),
            "wal/000000010000000A/000000010000000A0000002F"
        );
        let partial: WalFileName = "000000020000000A0000002F.partial".parse().unwrap();
        assert_eq!(
            wal_file(&partial, Codec::Zstd).as_ref(),
            "wal/000000020000000A/000000020000000A0000002F.partial.zst"
        );
        let backup: WalFileName = "000000010000000000000002.00000028.backup".parse().unwrap();
        assert_eq!(
            wal_file(&backup, Codec::Zstd).as_ref(),
            "wal/0000000100000000/000000010000000000000002.00000028.backup.zst"
        );
        let history: WalFileName = "00000002.history".parse().unwrap();
        assert_eq!(
            wal_file(&history, Codec::None).as_ref(),
            "wal/00000002.history"
        );
        assert_eq!(possible_codecs(&history), &[Codec::None]);
        assert_eq!(identity().as_ref(), "walarch.json");
        let id = "20261121T142700Z";
        assert_eq!(
            backup_part(id, 3, Codec::Zstd).as_ref(),
            "backups/20261121T142700Z/data/3.tar.zst"
        );
        assert_eq!(
            backup_manifest(id).as_ref(),
            "backups/20261121T142700Z/manifest.json"
        );
        assert_eq!(
            backup_file(id, "backup_label").as_ref(),
            "backups/20261121T142700Z/backup_label"
        );
        let WalFileName::Segment(segment) = seg else {
            unreachable!()
        };
        let summary = segment_summary(&segment, "next", "0123abcd");
        assert_eq!(
            summary.as_ref(),
            "summaries/000000010000000A/000000010000000A0000002F.next.0123abcd.json.zst"
        );
        assert!(summary.as_ref().starts_with(summaries().as_ref()));
        assert!(summary.as_ref().starts_with(summary_dir(&segment).as_ref()));
        assert_eq!(summarized_segment(&summary), Some(segment));
        assert_eq!(summarized_segment(&wal_file(&seg, Codec::Zstd)), None);
        assert_eq!(summarized_segment(&Path::from("summaries/x/y/z")), None);
    }
}
