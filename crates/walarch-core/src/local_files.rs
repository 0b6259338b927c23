//! Local files walarch writes: through a temporary file beside the destination, renamed into
//! place only once complete ([`write_through_temp`]), durably when asked (file fsynced before
//! the rename, directory after it, as PostgreSQL's own `durable_rename` does);
//! [`write_durably`] for small records. One naming scheme for the temporary files,
//! `.<name>.walarch-<pid>.tmp`, so that what a killed process leaves behind can be recognised
//! as walarch's and swept, and only when the process that wrote it is gone (a live writer's
//! file is never touched).

use std::io::Write;
use std::path::{Path, PathBuf};

const MARK: &str = ".walarch-";
const SUFFIX: &str = ".tmp";

/// The temporary name this process writes `dest` under before renaming it into place.
pub fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(|| "walarch".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}{MARK}{}{SUFFIX}", std::process::id()))
}

/// Runs `fill` on a temporary file beside `dest` and renames it to `dest` if `fill`
/// succeeds; removes it otherwise, so a partial file never appears under `dest`. What a
/// killed writer left in the directory is swept first. `durable` adds fsyncs of the file
/// before and of the directory after the rename. Errors of `fill` come back as they are;
/// the temporary file's own errors through `io_error`.
pub fn write_through_temp<T, E>(
    dest: &Path,
    durable: bool,
    io_error: impl Fn(&Path, std::io::Error) -> E,
    fill: impl FnOnce(&mut std::fs::File) -> Result<T, E>,
) -> Result<T, E> {
    if dest.file_name().is_none() {
        return Err(io_error(
            dest,
            std::io::Error::other("destination has no file name"),
        ));
    }
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sweep_stale_temp_files(dir);
    let temp = temp_beside(dest);
    let result = std::fs::File::create(&temp)
        .map_err(|e| io_error(&temp, e))
        .and_then(|mut file| {
            let value = fill(&mut file)?;
            if durable {
                file.sync_all().map_err(|e| io_error(&temp, e))?;
            }
            Ok(value)
        })
        .and_then(|value| {
            std::fs::rename(&temp, dest).map_err(|e| io_error(dest, e))?;
            if durable {
                sync_dir(dir).map_err(|e| io_error(dir, e))?;
            }
            Ok(value)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Writes `content` to `path` so that it is complete and durable when this returns (the
/// directory is created if needed).
pub fn write_durably(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write_through_temp(path, true, |_, e| e, |file| file.write_all(content))
}

/// fsync of a directory: makes the names created or renamed in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `mkdir -p` that survives a power loss: every directory it creates, and the directory that
/// holds the first one, is fsynced (a new repository must not vanish after a push said done).
pub fn create_dir_durably(path: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut dir = path;
    while !dir.exists() {
        missing.push(dir.to_path_buf());
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    // Deepest first, then the existing ancestor whose entry list changed.
    for created in missing.iter().chain(std::iter::once(&dir.to_path_buf())) {
        std::fs::File::open(created)?.sync_all()?;
    }
    Ok(())
}

/// The pid in a temporary name made by [`temp_beside`], if `name` is one.
fn writer_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(SUFFIX)?;
    let (_, pid) = rest.rsplit_once(MARK)?;
    pid.parse().ok()
}

fn process_is_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // EPERM: the process exists but belongs to another user.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Removes the temporary files in `dir` whose writer has exited (killed mid-write): up to a
/// WAL segment each, which nothing else would ever remove. Returns how many went.
pub fn sweep_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = writer_pid(&name.to_string_lossy()) else {
            continue;
        };
        if pid != std::process::id()
            && !process_is_alive(pid)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            tracing::info!(file = %entry.path().display(), "removed a temporary file left by an interrupted walarch");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_nothing_and_a_durable_write_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("record");
        let failed: Result<(), String> = write_through_temp(
            &dest,
            true,
            |_, e| e.to_string(),
            |file| {
                file.write_all(b"half").unwrap();
                Err("no".into())
            },
        );
        assert!(failed.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_durably(&dir.path().join("sub/record"), b"whole").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sub/record")).unwrap(),
            b"whole"
        );
    }

    #[test]
    fn temp_names_carry_their_writer_and_only_dead_writers_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mine = temp_beside(&dir.path().join("RECOVERYXLOG"));
        assert_eq!(
            mine.file_name().unwrap().to_string_lossy(),
            format!(".RECOVERYXLOG.walarch-{}.tmp", std::process::id())
        );
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            child.id()
        };
        let stale = dir.path().join(format!(".RECOVERYXLOG.walarch-{dead}.tmp"));
        let stale_position = dir.path().join(format!(".position.walarch-{dead}.tmp"));
        let others = [
            dir.path().join("000000010000000000000002"),
            dir.path().join(".other.tmp"),
            dir.path()
                .join(format!(".x.walarch-{}.tmp", std::process::id())),
        ];
        for path in others.iter().chain([&mine, &stale, &stale_position]) {
            std::fs::write(path, "x").unwrap();
        }
        assert_eq!(sweep_stale_temp_files(dir.path()), 2);
        assert!(!stale.exists() && !stale_position.exists());
        assert!(mine.exists(), "a live writer's file stays");
        assert!(others.iter().all(|p| p.exists()), "not ours, or alive");
        assert_eq!(writer_pid(".a.walarch-12.tmp"), Some(12));
        assert_eq!(writer_pid("a.walarch-12.tmp"), None);
        assert_eq!(writer_pid(".a.walarch-x.tmp"), None);
    }
}
