//! The repository's key layout (format 1). Every object key is spelled here and nowhere else.
//!
//! ```text
//! walarch.json                                   identity
//! wal/<TTTTTTTTXXXXXXXX>/<walfile>[.zst|.gz]       segments, .partial and .backup files
//! wal/<TTTTTTTT>.history                         timeline history files, uncompressed
//! ```

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
    }
}
