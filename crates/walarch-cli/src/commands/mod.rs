//! One module per command; each turns settings and arguments into library calls.

mod backup;
mod backups;
mod check;
mod drill;
mod fetch_worker;
mod info;
mod key;
mod metrics;
mod plan;
mod push_worker;
mod restore;
mod retention;
mod spawn;
mod verify;
mod wal_fetch;
mod wal_push;

use walarch_core::CancellationToken;

use crate::Failure;
use crate::args::{Cli, Command};
use crate::output::Output;
use crate::settings::Settings;

pub fn run(cli: &Cli, out: &Output) -> Result<(), Failure> {
    // Keys are managed without a repository.
    if let Command::Key(command) = &cli.command {
        return key::run(command, out);
    }
    let settings = tracing::debug_span!("settings").in_scope(|| Settings::resolve(&cli.global))?;
    // One thread for the per-file commands: a single wal-push or wal-fetch gains nothing from
    // more, and start-up is the hot path (PostgreSQL runs these once per WAL file). Backups
    // and restores move whole data directories: their network I/O gets threads of its own,
    // beside the blocking threads that read, compress and write files.
    let runtime_span = tracing::debug_span!("runtime start").entered();
    let runtime = match cli.command {
        Command::Backup(_)
        | Command::Restore(_)
        | Command::Verify(_)
        | Command::Plan(_)
        | Command::Drill(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    drop(runtime_span);
    runtime.block_on(async {
        match &cli.command {
            Command::WalPush(args) => wal_push::run(&settings, &cli.global, args, out).await,
            Command::PushWorker(args) => push_worker::run(&settings, args).await,
            Command::FetchWorker(args) => fetch_worker::run(&settings, args).await,
            Command::Info(args) => info::run(&settings, args, out).await,
            Command::WalFetch(args) => wal_fetch::run(&settings, &cli.global, args, out).await,
            Command::Backup(args) => backup::run(&settings, args, cli.global.json, out).await,
            Command::Backups => backups::run(&settings, out).await,
            Command::Restore(args) => restore::run(&settings, &cli.global, args, out).await,
            Command::Verify(args) => verify::run(&settings, args, cli.global.json, out).await,
            Command::Plan(args) => plan::run(&settings, args, out).await,
            Command::Retention(args) => retention::run(&settings, args, cli.global.json, out).await,
            Command::Check(args) => check::run(&settings, args, out).await,
            Command::Metrics(args) => metrics::run(&settings, args).await,
            Command::Drill(args) => drill::run(&settings, &cli.global, args, out).await,
            Command::Key(_) => unreachable!("handled above"),
        }
    })
}

/// A token cancelled when the process gets SIGINT (Ctrl-C) or SIGTERM (a Kubernetes job
/// stopped): long commands then end cleanly (a backup withdraws its claim and writes no
/// manifest, a restore leaves a directory PostgreSQL refuses to start). A second signal
/// ends the process at once (status 130).
pub fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            let Ok(mut terminate) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            let Ok(mut interrupt) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            else {
                return;
            };
            for signals in 0.. {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                if signals > 0 {
                    eprintln!("walarch: interrupted again: stopping now");
                    std::process::exit(130);
                }
                eprintln!("walarch: interrupted: cancelling (again to stop at once)");
                cancel.cancel();
            }
        }
    });
    cancel
}
