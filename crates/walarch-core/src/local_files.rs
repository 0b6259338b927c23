//! Temporary files walarch writes beside local files (WAL handed to PostgreSQL, spooled
//! segments, spool records): one naming scheme, `.<name>.walarch-<pid>.tmp`, so that what a
//! killed process leaves behind can be recognised as walarch's and swept, and only when the
//! process that wrote it is gone (a live writer's file is never touched).

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
