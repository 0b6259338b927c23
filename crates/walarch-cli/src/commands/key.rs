//! `walarch key new|rotate|show FILE`: encryption key files. A key file is a standard age
//! identity file, readable by its owner only; the first key seals new objects.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use walarch_core::crypto::Keyring;
use walarch_core::local_files::write_through_temp;

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
            write_through_temp(
                file,
                true,
                |path, e| anyhow::Error::new(e).context(format!("cannot write {}", path.display())),
                |f| {
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                    f.write_all(rotated.as_bytes())?;
                    Ok(())
                },
            )?;
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
