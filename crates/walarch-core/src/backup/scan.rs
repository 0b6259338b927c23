//! What a base backup copies: a walk of the data directory and its tablespaces, leaving out
//! what PostgreSQL's documentation says a backup must or may omit ("Making a Base Backup
//! Using the Low Level API"; the lists follow `basebackup.c`).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::manifest::{DirectoryEntry, Tablespace};

/// Directories kept empty: their contents are recreated or meaningless after a restore.
const EMPTY_DIRECTORIES: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Top-level files left out. `backup_label` and `tablespace_map` come from
/// `pg_backup_stop` instead; `walarch_restore.json` describes this data directory's own origin,
/// not the origin of a copy made from it.
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    super::marker::MARKER_FILE,
    super::restore::IN_PROGRESS,
];

/// A file to copy: stored under `path` (relative, `/`-separated), read from `source`.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub path: String,
    pub source: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SourceTree {
    pub directories: Vec<DirectoryEntry>,
    /// Largest first, so that parallel workers finish together.
    pub files: Vec<SourceFile>,
}

impl SourceTree {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Walks `data_dir` and the tablespaces (each stored under `pg_tblspc/<oid>/`, only the
/// `PG_<major>_*` directory that belongs to this server version).
pub(crate) fn scan(
    data_dir: &Path,
    tablespaces: &[Tablespace],
    pg_major: u32,
) -> io::Result<SourceTree> {
    let mut tree = SourceTree::default();
    walk(data_dir, "", &mut tree, true)?;
    let version_prefix = format!("PG_{pg_major}_");
    for tablespace in tablespaces {
        let base = format!("pg_tblspc/{}", tablespace.oid);
        for entry in read_dir_sorted(&tablespace.location)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&version_prefix) && entry.file_type()?.is_dir() {
                let path = format!("{base}/{name}");
                tree.directories
                    .push(directory_entry(&path, &entry.path())?);
                walk(&entry.path(), &path, &mut tree, false)?;
            }
        }
    }
    tree.files
        .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    Ok(tree)
}

fn walk(dir: &Path, rel: &str, tree: &mut SourceTree, top: bool) -> io::Result<()> {
    let entries = read_dir_sorted(dir)?;
    let names: HashSet<String> = entries
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let unlogged = unlogged_relations(&names);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if name.starts_with("pgsql_tmp") || name.starts_with("pg_internal.init") {
            continue;
        }
        if top && EXCLUDED_FILES.contains(&name.as_str()) {
            continue;
        }
        let mut file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if file_type.is_symlink() {
            // pg_tblspc links are the tablespaces, walked separately. Any other link is
            // followed and stored as what it points to (restore makes no links but the
            // tablespaces'): a pg_wal made by `initdb -X`, or a symlinked pg_stat_tmp, becomes
            // a directory, kept empty like the original. Dropping one instead would leave
            // the restored copy without it.
            if rel == "pg_tblspc" {
                continue;
            }
            file_type = match fs::metadata(entry.path()) {
                Ok(meta) => meta.file_type(),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot follow the link {}: {e}", entry.path().display()),
                    ));
                }
            };
        }
        if file_type.is_dir() {
            tree.directories
                .push(directory_entry(&path, &entry.path())?);
            if top && EMPTY_DIRECTORIES.contains(&name.as_str()) {
                if name == "pg_wal" {
                    tree.directories.push(DirectoryEntry {
                        path: format!("{path}/archive_status"),
                        mode: 0o700,
                    });
                }
                continue;
            }
            walk(&entry.path(), &path, tree, false)?;
        } else if file_type.is_file() {
            if is_temporary_relation(&name) || unlogged.iter().any(|r| is_fork_to_skip(&name, r)) {
                continue;
            }
            let meta = match fs::metadata(entry.path()) {
                Ok(m) => m,
                // Dropped while we walk: nothing to copy, WAL replay removes it anyway.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            tree.files.push(SourceFile {
                path,
                source: entry.path(),
                size: meta.len(),
                mode: meta.permissions().mode() & 0o7777,
                mtime: meta.mtime().max(0) as u64,
            });
        }
        // Sockets, FIFOs and devices have no place in a data directory; leave them out.
    }
    Ok(())
}

fn directory_entry(path: &str, source: &Path) -> io::Result<DirectoryEntry> {
    let mode = fs::metadata(source)?.permissions().mode() & 0o7777;
    Ok(DirectoryEntry {
        path: path.to_owned(),
        mode,
    })
}

fn read_dir_sorted(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", dir.display())))?
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// Relation file nodes in this directory that have an init fork (`<node>_init`): unlogged
/// relations, whose other forks are reset from the init fork at startup.
fn unlogged_relations(names: &HashSet<String>) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| n.strip_suffix("_init"))
        .filter(|node| !node.is_empty() && node.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

/// Every fork of unlogged relation `node` except its init fork: `<node>`, `<node>.<n>`,
/// `<node>_fsm`, `<node>_vm` and their segments.
fn is_fork_to_skip(name: &str, node: &str) -> bool {
    let Some(rest) = name.strip_prefix(node) else {
        return false;
    };
    let rest = rest.split('.').next().unwrap_or_default();
    let segment_ok = name[node.len()..]
        .split_once('.')
        .is_none_or(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    segment_ok && matches!(rest, "" | "_fsm" | "_vm")
}

/// Temporary relations: `t<backend>_<node>[_fork][.segment]`.
fn is_temporary_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, node)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && node.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    #[test]
    fn leaves_out_what_a_base_backup_must_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "PG_VERSION",
            "global/pg_control",
            "global/pg_internal.init",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "walarch_restore.json",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/000000010000000000000001.done",
            "pg_wal/walarch/push/x.ok",
            "pg_replslot/slot/state",
            "pg_stat_tmp/global.stat",
            "pg_subtrans/0000",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384_init",
            "base/5/16384_fsm",
            "base/5/16384.1",
            "base/5/163840",
            "base/5/t3_16400",
            "base/5/pgsql_tmp/pgsql_tmp123.0",
            "pg_xact/0000",
        ] {
            touch(&d.join(f));
        }
        fs::create_dir_all(d.join("pg_notify")).unwrap();
        let tree = scan(d, &[], 15).unwrap();
        let mut files: Vec<_> = tree.files.iter().map(|f| f.path.as_str()).collect();
        files.sort();
        assert_eq!(
            files,
            [
                "PG_VERSION",
                "base/5/1259",
                "base/5/163840",
                "base/5/16384_init",
                "global/pg_control",
                "pg_xact/0000"
            ]
        );
        let dirs: Vec<_> = tree.directories.iter().map(|d| d.path.as_str()).collect();
        for kept in [
            "pg_wal",
            "pg_wal/archive_status",
            "pg_replslot",
            "pg_notify",
            "pg_stat_tmp",
            "base/5",
        ] {
            assert!(dirs.contains(&kept), "{kept} in {dirs:?}");
        }
        assert!(
            !dirs.iter().any(|d| d.contains("pgsql_tmp")
                || d.starts_with("pg_wal/walarch")
                || d.starts_with("pg_replslot/")),
            "{dirs:?}"
        );
    }

    #[test]
    fn tablespaces_are_stored_under_pg_tblspc_for_this_version_only() {
        let data = tempfile::tempdir().unwrap();
        let space = tempfile::tempdir().unwrap();
        touch(&data.path().join("PG_VERSION"));
        touch(&space.path().join("PG_15_202209061/5/16500"));
        touch(&space.path().join("PG_16_202307071/5/16500"));
        fs::create_dir_all(data.path().join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink(space.path(), data.path().join("pg_tblspc/16499")).unwrap();
        let spaces = [Tablespace {
            oid: 16499,
            name: "fast".into(),
            location: space.path().to_path_buf(),
        }];
        let tree = scan(data.path(), &spaces, 15).unwrap();
        let files: Vec<_> = tree.files.iter().map(|f| f.path.as_str()).collect();
        assert!(
            files.contains(&"pg_tblspc/16499/PG_15_202209061/5/16500"),
            "{files:?}"
        );
        assert!(!files.iter().any(|f| f.contains("PG_16")), "{files:?}");
    }

    #[test]
    fn links_are_followed_and_stored_as_what_they_point_to() {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        touch(&data.path().join("PG_VERSION"));
        touch(&elsewhere.path().join("wal/000000010000000000000001"));
        touch(&elsewhere.path().join("extra.conf"));
        std::os::unix::fs::symlink(elsewhere.path().join("wal"), data.path().join("pg_wal"))
            .unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("extra.conf"),
            data.path().join("extra.conf"),
        )
        .unwrap();
        let tree = scan(data.path(), &[], 15).unwrap();
        let files: Vec<_> = tree.files.iter().map(|f| f.path.as_str()).collect();
        let dirs: Vec<_> = tree.directories.iter().map(|d| d.path.as_str()).collect();
        assert!(files.contains(&"extra.conf"), "{files:?}");
        assert!(
            dirs.contains(&"pg_wal") && dirs.contains(&"pg_wal/archive_status"),
            "{dirs:?}"
        );
        assert!(
            !files.iter().any(|f| f.starts_with("pg_wal")),
            "WAL stays out: {files:?}"
        );
    }

    #[test]
    fn relation_name_rules() {
        assert!(is_temporary_relation("t3_16400"));
        assert!(is_temporary_relation("t12_16400_fsm"));
        assert!(!is_temporary_relation("t3"));
        assert!(!is_temporary_relation("tx_1"));
        assert!(is_fork_to_skip("16384", "16384"));
        assert!(is_fork_to_skip("16384.2", "16384"));
        assert!(is_fork_to_skip("16384_vm", "16384"));
        assert!(!is_fork_to_skip("16384_init", "16384"));
        assert!(!is_fork_to_skip("163840", "16384"));
    }
}
