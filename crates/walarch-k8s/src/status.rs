//! `walarch-k8s status`: the cluster as the coordination store sees it.

use serde::Serialize;

use crate::leadership::{ClusterView, PublishedRole, SyncState};

/// One member's line.
#[derive(Debug, Clone, Serialize)]
pub struct MemberLine {
    /// Name.
    pub name: String,
    /// Published role.
    pub role: PublishedRole,
    /// Whether it holds the leader lease.
    pub leader: bool,
    /// Timeline.
    pub timeline: u32,
    /// Received LSN.
    pub received_lsn: String,
    /// Replayed LSN.
    pub replayed_lsn: String,
    /// Bytes behind the leader's published position (replayed).
    pub lag_bytes: u64,
    /// PostgreSQL address.
    pub address: String,
    /// Manager HTTP address.
    pub http: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Cluster name.
    pub cluster: String,
    /// Holder of the leader lease.
    pub leader: Option<String>,
    /// The cluster's system identifier (null before initialization).
    pub system_identifier: Option<String>,
    /// The synchronous-replication record.
    pub synchronous: Option<SyncState>,
    /// Members alive.
    pub members: Vec<MemberLine>,
}

/// Builds the report from one view.
pub fn report(cluster: &str, view: &ClusterView) -> ClusterStatus {
    let leader_position = view
        .leader
        .as_deref()
        .and_then(|l| view.member(l))
        .map_or(0, |m| m.state.received_lsn);
    let lsn = |v: u64| walarch_core::wal::Lsn::new(v).to_string();
    ClusterStatus {
        cluster: cluster.to_owned(),
        leader: view.leader.clone(),
        system_identifier: view.initialized.clone(),
        synchronous: view.sync.clone(),
        members: view
            .members
            .iter()
            .map(|m| MemberLine {
                name: m.state.name.clone(),
                role: m.state.role,
                leader: view.leader.as_deref() == Some(m.state.name.as_str()),
                timeline: m.state.timeline,
                received_lsn: lsn(m.state.received_lsn),
                replayed_lsn: lsn(m.state.replayed_lsn),
                lag_bytes: leader_position.saturating_sub(m.state.replayed_lsn),
                address: format!("{}:{}", m.state.host, m.state.pg_port),
                http: m.state.http.clone(),
            })
            .collect(),
    }
}

/// The report as a table for a terminal.
pub fn render_table(status: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster {}  leader {}  system {}\n",
        status.cluster,
        status.leader.as_deref().unwrap_or("(none)"),
        status
            .system_identifier
            .as_deref()
            .unwrap_or("(not initialized)")
    );
    if let Some(sync) = &status.synchronous {
        out.push_str(&format!(
            "synchronous: ANY {} of [{}]\n",
            sync.quorum,
            sync.members.join(", ")
        ));
    }
    out.push_str(&format!(
        "{:<12} {:<9} {:>3} {:>14} {:>14} {:>12}  {}\n",
        "MEMBER", "ROLE", "TL", "RECEIVED", "REPLAYED", "LAG", "ADDRESS"
    ));
    for m in &status.members {
        let role = serde_json::to_value(m.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<12} {:<9} {:>3} {:>14} {:>14} {:>12}  {}{}\n",
            m.name,
            role,
            m.timeline,
            m.received_lsn,
            m.replayed_lsn,
            m.lag_bytes,
            m.address,
            if m.leader { "  (leader)" } else { "" }
        ));
    }
    out
}
