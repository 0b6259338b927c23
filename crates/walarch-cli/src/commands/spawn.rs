//! Starting background workers: the same executable, the same settings, detached from
//! PostgreSQL's wait but in the calling process group, so they stop with the server.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::args::GlobalArgs;

/// Starts `walarch <subcommand> <pg_wal>` with this call's settings. A failure is logged, not
/// fatal: the calling command still does its own work.
pub fn worker(global: &GlobalArgs, subcommand: &str, pg_wal: &Path) -> bool {
    let spawned = std::env::current_exe()
        .context("cannot find the walarch executable")
        .and_then(|exe| {
            Command::new(exe)
                // Settings travel in the environment, not the command line, which `ps` shows.
                .envs(global.to_env())
                .arg(subcommand)
                .arg(pg_wal)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start the {subcommand}"))
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "working without a background worker for this call");
            false
        }
    }
}
