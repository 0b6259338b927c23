//! The transfers a worker keeps going at once (push-ahead uploads, fetch-ahead downloads):
//! at most `limit` in flight, each file once, and a file that failed not tried again by the
//! same worker (PostgreSQL's own call tries it and reports).

use std::collections::BTreeSet;
use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

pub(crate) struct InFlight<F> {
    limit: usize,
    running: FuturesUnordered<F>,
    names: BTreeSet<String>,
    failed: BTreeSet<String>,
}

impl<K: ToString, R, F: Future<Output = (K, R)>> InFlight<F> {
    pub fn new(limit: usize) -> Self {
        InFlight {
            limit: limit.max(1),
            running: FuturesUnordered::new(),
            names: BTreeSet::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Whether another transfer may start.
    pub fn has_room(&self) -> bool {
        self.running.len() < self.limit
    }

    /// How many transfers are under way.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether `name` is under way or already failed here.
    pub fn skips(&self, name: &str) -> bool {
        self.names.contains(name) || self.failed.contains(name)
    }

    /// Starts the transfer of `name`; `transfer` yields `name` back with its result.
    pub fn start(&mut self, name: String, transfer: F) {
        self.names.insert(name);
        self.running.push(transfer);
    }

    /// The next transfer to finish; `None` when none is under way.
    pub async fn next(&mut self) -> Option<(K, R)> {
        let (name, result) = self.running.next().await?;
        self.names.remove(&name.to_string());
        Some((name, result))
    }

    /// Remembers that `name` failed: this worker does not try it again.
    pub fn failed(&mut self, name: String) {
        self.failed.insert(name);
    }
}
