//! wal-push and wal-fetch: moving single WAL files between `pg_wal` and the repository with
//! the data-safety contract (DESIGN.md §2): validate before storing, never overwrite
//! different content, success only once durable, "not found" only when the store says so.

mod fetch;
mod in_flight;
mod prefetch;
mod push;
mod push_ahead;
mod spool;
pub mod stored;
mod validate;

pub use fetch::{FetchError, FetchOutcome, FetchReport, fetch_wal_file};
pub use prefetch::{
    FetchSpool, FetchSpoolStatus, PrefetchOptions, PrefetchReport, decoders_for_cores,
    run_prefetch_worker,
};
pub use push::{PushError, PushOutcome, PushReport, push_wal_file};
pub use push_ahead::{
    PushAheadOptions, PushAheadReport, PushSpool, PushSpoolStatus, run_push_worker,
};
pub use validate::{ContentError, validate_segment, validate_wal_content};
