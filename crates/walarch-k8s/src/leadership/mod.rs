//! Leadership: one leader lease per cluster and the members' published states, kept in a
//! coordination store that already solves consensus (etcd, or the Kubernetes API). walarch
//! never decides leadership by itself; it only reads and compare-and-swaps records here.
//!
//! What every implementation guarantees, and what the instance manager's fencing relies on:
//! - `acquire` succeeds for at most one member while the lease is held (compare-and-swap on the
//!   record's revision);
//! - a successful `renew` that was *sent* at time t keeps the lease for the holder until at
//!   least t + TTL as every other member judges it (the store, or an observer's own clock,
//!   starts counting only after it saw the renewal), so a holder that stops writing by
//!   t + renew deadline (< TTL) has stopped before anyone else can acquire.

pub mod etcd;
pub mod kubernetes;

use std::future::Future;

use serde::{Deserialize, Serialize};

/// What a member publishes about itself, for its peers and `walarch-k8s status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    /// The member's name (unique in the cluster).
    pub name: String,
    /// What its PostgreSQL is doing now.
    pub role: PublishedRole,
    /// The timeline its server is on (0 when unknown).
    pub timeline: u32,
    /// WAL flushed locally: a primary's insert position, a replica's received (flushed) LSN.
    pub received_lsn: u64,
    /// WAL replayed (a primary: its insert position).
    pub replayed_lsn: u64,
    /// The published position covers all the WAL the member holds: a replica that has
    /// streamed since it started (it replayed its pg_wal first), or whose replay stood still
    /// for a TTL with nothing to stream from; a server stopped by a clean shutdown. Others
    /// (just restarted, crashed) report only a lower bound and do not count as seen when
    /// members decide who may lead.
    #[serde(default)]
    pub position_final: bool,
    /// Where peers connect to its PostgreSQL.
    pub host: String,
    /// Its PostgreSQL port.
    pub pg_port: u16,
    /// Its manager's HTTP address.
    pub http: String,
    /// WAL segments waiting for archive_command (`.ready` files); absent from older members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_backlog: Option<u64>,
}

/// A member's role as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishedRole {
    /// Accepting writes under the lease.
    Primary,
    /// Streaming (or trying to) from the primary.
    Replica,
    /// Stopped by fencing (its own or an operator's).
    Fenced,
    /// Initializing, cloning, rewinding or starting.
    Starting,
    /// PostgreSQL is not running.
    Stopped,
}

/// The synchronous-replication record the leader keeps: every commit the leader acknowledged
/// is flushed on at least `quorum` of `members`. A replica may promote only when it sees
/// enough of them to be sure (see `member::may_try_to_lead`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// `ANY quorum` of these hold every acknowledged commit.
    pub members: Vec<String>,
    /// How many of them acknowledge each commit (0: asynchronous).
    pub quorum: u32,
}

/// A member's record as read from the store, with the store revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The member's state.
    pub state: MemberState,
    /// Store revision of the write (orders writes against the view's `revision`).
    pub revision: i64,
}

/// The cluster as one read of the coordination store saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Store revision the view was read at.
    pub revision: i64,
    /// Holder of the leader lease, if the lease is held.
    pub leader: Option<String>,
    /// Members that are alive (their records expire with their own lease).
    pub members: Vec<Published>,
    /// The synchronous-replication record.
    pub sync: Option<SyncState>,
    /// The system identifier the cluster was initialized with (set once, by the first leader).
    pub initialized: Option<String>,
    /// The member a planned switchover hands the lease to (written by the leader before it
    /// steps down, removed by the new leader).
    pub switchover: Option<String>,
}

impl ClusterView {
    /// The published state of `name`.
    pub fn member(&self, name: &str) -> Option<&Published> {
        self.members.iter().find(|m| m.state.name == name)
    }
}

/// Why a coordination call failed. Any failure means "not known to be held".
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// The store did not answer in time or refused the connection.
    #[error("coordination store unreachable: {0}")]
    Unreachable(String),
    /// The store answered with something this member cannot use.
    #[error("coordination store: {0}")]
    Invalid(String),
}

/// Runs a store call with a deadline: a partitioned member must learn in time to fence.
/// Both a failure and a missed deadline mean "unreachable".
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    deadline: std::time::Duration,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, CoordinationError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CoordinationError::Unreachable(format!("{what}: {e}"))),
        Err(_) => Err(CoordinationError::Unreachable(format!(
            "{what}: no answer within {deadline:?}"
        ))),
    }
}

/// Outcome of a lease renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The member's lease (and the leader record, if it holds it) lives on.
    Renewed,
    /// The lease expired in the store: the member holds nothing.
    Lost,
}

/// A coordination store: the leader lease, members' states, the cluster's records.
pub trait Coordination: Send + Sync + 'static {
    /// Reads the whole cluster.
    fn view(&self) -> impl Future<Output = Result<ClusterView, CoordinationError>> + Send;
    /// Takes the leader lease if nobody holds it. `Ok(false)`: somebody else does.
    fn acquire(&self) -> impl Future<Output = Result<bool, CoordinationError>> + Send;
    /// Renews this member's lease (and with it the leader record it may hold).
    fn renew(&self) -> impl Future<Output = Result<Renewal, CoordinationError>> + Send;
    /// Gives the leader lease up (a switchover, a fenced member).
    fn release(&self) -> impl Future<Output = Result<(), CoordinationError>> + Send;
    /// Publishes this member's state (expires with the member's lease).
    fn publish(
        &self,
        state: &MemberState,
    ) -> impl Future<Output = Result<(), CoordinationError>> + Send;
    /// Writes the synchronous-replication record, only while this member holds the lease.
    fn set_sync(
        &self,
        sync: &SyncState,
    ) -> impl Future<Output = Result<bool, CoordinationError>> + Send;
    /// Names the member a planned switchover hands the lease to, only while this member holds
    /// the lease. `Ok(false)`: it does not.
    fn request_switchover(
        &self,
        to: &str,
    ) -> impl Future<Output = Result<bool, CoordinationError>> + Send;
    /// Removes the switchover record, only while this member holds the lease.
    fn clear_switchover(&self) -> impl Future<Output = Result<(), CoordinationError>> + Send;
    /// Records the cluster's system identifier, only if none is recorded and this member holds
    /// the lease. `Ok(false)`: already initialized (or not the leader).
    fn initialize(
        &self,
        system_id: &str,
    ) -> impl Future<Output = Result<bool, CoordinationError>> + Send;
}
