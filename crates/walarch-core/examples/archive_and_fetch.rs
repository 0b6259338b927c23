//! Archives one WAL file of a data directory into a repository and fetches it back, with
//! walarch-core's public API only.
//!
//! ```text
//! cargo run -p walarch-core --example archive_and_fetch -- REPO PGDATA WAL_FILE_NAME
//! ```
//!
//! `REPO` is a repository URL or a local directory (created if missing); `WAL_FILE_NAME` a
//! completed segment in `PGDATA/pg_wal`. Exits non-zero if anything fails or the fetched file
//! differs from the original.

use std::path::PathBuf;

use walarch_core::archive::FetchOutcome;
use walarch_core::store::RepoLocation;
use walarch_core::wal::WalFileName;
use walarch_core::{Engine, EngineConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, pgdata, name] = args.as_slice() else {
        return Err("usage: archive_and_fetch REPO PGDATA WAL_FILE_NAME".into());
    };
    let pgdata = PathBuf::from(pgdata);
    let name: WalFileName = name.parse()?;
    let engine = Engine::open_for_write(EngineConfig::new(RepoLocation::parse(repo)?))?;

    // The data directory is given: its restore marker, if it is a restored copy, decides
    // whether this repository may take its WAL.
    let file = pgdata.join("pg_wal").join(name.to_string());
    let pushed = engine.push(&file, Some(&pgdata)).await?;
    println!(
        "{name}: {:?} as {} ({} bytes stored for {})",
        pushed.outcome, pushed.key, pushed.stored_bytes, pushed.original_bytes
    );

    let dest = std::env::temp_dir().join(format!("walarch-example-{}", std::process::id()));
    std::fs::create_dir_all(&dest)?;
    let fetched_file = dest.join("RECOVERYXLOG");
    let outcome = engine.fetch(&name, &fetched_file).await;
    let same = std::fs::read(&fetched_file).ok() == Some(std::fs::read(&file)?);
    std::fs::remove_dir_all(&dest)?;
    match outcome? {
        FetchOutcome::Fetched(report) if same => {
            println!(
                "{name}: fetched back byte-identical ({} bytes, CRC-32 {:08x}, checksum verified)",
                report.restored_bytes, report.crc32
            );
            Ok(())
        }
        FetchOutcome::Fetched(_) => Err("the fetched file differs from the original".into()),
        other => Err(format!("{name} was not fetched: {other:?}").into()),
    }
}
