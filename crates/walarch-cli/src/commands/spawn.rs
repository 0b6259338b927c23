//! Starting background workers: the same executable, the same settings, detached from
//! PostgreSQL's wait but in the calling process group, so they stop with the server.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use walarch_core::{WorkerHost, WorkerKind};

use crate::args::GlobalArgs;

/// Starts the engine's workers the way a one-shot command can: as `walarch push-worker` or
/// `walarch fetch-worker` processes with this call's settings.
#[derive(Debug)]
pub struct ReExec<'a> {
    global: &'a GlobalArgs,
}

impl<'a> ReExec<'a> {
    pub fn new(global: &'a GlobalArgs) -> Self {
        ReExec { global }
    }
}

impl WorkerHost for ReExec<'_> {
    fn start(&self, kind: WorkerKind, pg_wal: &Path) -> bool {
        let (subcommand, spool) = match kind {
            WorkerKind::Push => ("push-worker", "push"),
            _ => ("fetch-worker", "fetch"),
        };
        worker(
            self.global,
            subcommand,
            pg_wal,
            &pg_wal.join("walarch").join(spool),
        )
    }
}

/// A worker's log is cut back to nothing once it grows past this.
const MAX_LOG_BYTES: u64 = 1 << 20;

/// Starts `walarch <subcommand> <pg_wal>` with this call's settings, logging to
/// `log_dir/worker.log`: not to the caller's standard error, which a caller reading it to the
/// end would otherwise wait on until the worker exits. A failure is logged, not fatal: the
/// calling command still does its own work.
pub fn worker(global: &GlobalArgs, subcommand: &str, pg_wal: &Path, log_dir: &Path) -> bool {
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
                .stderr(worker_log(log_dir))
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

fn worker_log(dir: &Path) -> Stdio {
    let path = dir.join("worker.log");
    let too_big = std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_LOG_BYTES);
    let file = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(!too_big)
            .write(true)
            .truncate(too_big)
            .open(&path)
    });
    file.map_or_else(|_| Stdio::null(), Stdio::from)
}
