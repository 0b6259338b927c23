//! `walarch`: the command-line front of walarch-core. Argument parsing, settings, output and
//! exit codes live here; every decision about WAL, stores and recovery is in the library.
//!
//! Exit statuses are a contract with PostgreSQL (see [`Failure::exit_code`]).

mod args;
mod commands;
mod hints;
mod output;
mod pg_env;
mod progress;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use walarch_core::ErrorKind;

use crate::args::{Cli, Command};
use crate::output::Output;

/// How a command ended when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// wal-fetch only: the repository answered that the file does not exist. PostgreSQL
    /// reads status 1 as "not in the archive" and moves on (end of WAL, missing history).
    NotInArchive,
    /// Anything else, with the one line that says what failed and what to do.
    Error(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Error(error.into())
    }
}

impl Failure {
    /// The engine's classification of the failure, when it came from the engine.
    fn kind(&self) -> Option<ErrorKind> {
        match self {
            Failure::NotInArchive => Some(ErrorKind::NotFound),
            Failure::Error(error) => engine_error(error).map(walarch_core::Error::kind),
        }
    }

    /// The exit-code table, one match over the classification. wal-fetch answers 1 only for
    /// a file the store says it does not have; any other failure is 126: PostgreSQL treats a
    /// restore_command status above 125 as fatal and stops recovery instead of promoting
    /// early on WAL it could not get. wal-push failures use 1: for archive_command any
    /// non-zero status means "retry later", while a status above 125 would restart the
    /// archiver process. Every other command fails with 1.
    fn exit_code(&self, command: &Command) -> u8 {
        match (command, self) {
            (_, Failure::NotInArchive) => 1,
            (Command::WalFetch(_), Failure::Error(_)) => STOP_RECOVERY,
            (_, Failure::Error(_)) => 1,
        }
    }
}

/// The engine error a failure carries, if any.
fn engine_error(error: &anyhow::Error) -> Option<&walarch_core::Error> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<walarch_core::Error>())
}

fn main() -> ExitCode {
    // Until the arguments are parsed, "is this wal-fetch?" is read off the raw words: a
    // restore_command that cannot even be parsed must stop recovery (126), never look like
    // "not found" (clap's usage status is 2, and PostgreSQL reads any status up to 125 that way).
    let fetching = std::env::args().any(|word| word == "wal-fetch");
    install_panic_hook(if fetching { STOP_RECOVERY } else { 1 });
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if fetching { STOP_RECOVERY } else { 2 });
        }
    };
    output::init_logging(cli.global.log.as_deref());
    let out = Output::new(cli.global.json);
    let result = commands::run(&cli, &out);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let code = failure.exit_code(&cli.command);
            if let Failure::Error(error) = &failure {
                out.error(error, failure.kind(), hints::hint(error), code);
            }
            ExitCode::from(code)
        }
    }
}

/// The status that makes PostgreSQL stop recovery rather than treat a file as missing.
const STOP_RECOVERY: u8 = 126;

/// A bug must not change the exit-code contract: a panic (Rust's status 101 would read as
/// "not found" to restore_command) prints one line and exits with the command's failure code.
fn install_panic_hook(code: u8) {
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("walarch: internal error (please report): {info}");
        std::process::exit(i32::from(code));
    }));
}
