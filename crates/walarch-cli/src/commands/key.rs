//! `walarch key new|rotate|show FILE`: encryption key files. A key file is a standard age
//! identity file, readable by its owner only; the first key seals new objects.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use walarch_core::crypto::Keyring;

use crate::Failure;
use crate::args::KeyCommand;
use crate::output::Output;

#[derive(Debug, Serialize)]
struct KeyFileResult {
    file: String,
    /// The key new objects are sealed for.
    current: String,
    /// Every key in the file, the current one first.
    keys: Vec<String>,
}

pub fn run(command: &KeyCommand, out: &Output) -> Result<(), Failure> {
    let file = match command {
        KeyCommand::New { file } => {
            create_new(file, &Keyring::generate())?;
            file
        }
        KeyCommand::Rotate { file } => {
            // Read through the same checks every command applies (owner-only, every line a key).
            Keyring::load(file)?;
            let old = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let rotated = format!("{}{old}", Keyring::generate());
            replace_keeping_owner(file, &rotated)?;
            file
        }
        KeyCommand::Show { file } => file,
    };
    let keyring = Keyring::load(file)?;
    let result = KeyFileResult {
        file: file.display().to_string(),
        current: keyring.current().to_string(),
        keys: keyring.ids().iter().map(ToString::to_string).collect(),
    };
    let human = format!(
        "{}: seals with key {}{}",
        result.file,
        result.current,
        if result.keys.len() > 1 {
            format!("; also opens {}", result.keys[1..].join(", "))
        } else {
            String::new()
        }
    );
    out.result(&result, Some(human));
    Ok(())
}

/// Replaces `file` with `text` atomically: a temporary file created owner-only (never
/// readable by others, not even before it is renamed), given the original's owner (a root
/// rotating the postgres user's key must not lock PostgreSQL's archive_command out of it),
/// synced, renamed over the original, and the directory synced.
fn replace_keeping_owner(file: &Path, text: &str) -> anyhow::Result<()> {
    let original = std::fs::metadata(file)?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .context("a key file name")?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.walarch-{}.tmp", std::process::id()));
    let written = (|| -> anyhow::Result<()> {
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        std::os::unix::fs::fchown(&handle, Some(original.uid()), Some(original.gid()))
            .with_context(|| format!("cannot give {} its owner", temp.display()))?;
        handle.write_all(text.as_bytes())?;
        handle.sync_all()?;
        std::fs::rename(&temp, file)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Creates `file` with the key, readable and writable by its owner only, durably; never
/// replaces an existing file (it may hold the only copy of a key).
fn create_new(file: &Path, text: &str) -> anyhow::Result<()> {
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create key file {}", file.display()))?;
    handle.write_all(text.as_bytes())?;
    handle.sync_all()?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
