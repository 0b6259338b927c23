//! What the operator reads of a running cluster: the instance managers' Leases (the leader
//! lease and one member record each, see `leadership::kubernetes`), turned into the pods' role
//! labels and the Cluster's status.
//!
//! The operator judges expiry by `renewTime + leaseDurationSeconds` against its own clock. It
//! only labels pods and reports: a label a few seconds stale routes clients to a server that
//! has fenced itself (it refuses writes), never to a second writer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;

use super::resources::InstanceStatus;
use crate::leadership::kubernetes::{STATE, SWITCHOVER, annotation};
use crate::leadership::{MemberState, PublishedRole};

/// The cluster as its Leases describe it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Holder of an unexpired leader lease.
    pub leader: Option<String>,
    /// A planned switchover's target.
    pub switchover_to: Option<String>,
    /// Unexpired member records, by member (pod) name.
    pub members: BTreeMap<String, MemberState>,
}

impl Observed {
    /// Reads the leases of `cluster` at `now`.
    pub fn from_leases(cluster: &str, leases: &[Lease], now: DateTime<Utc>) -> Observed {
        let member_prefix = format!("{cluster}-member-");
        let mut observed = Observed::default();
        for lease in leases {
            let Some(name) = lease.metadata.name.as_deref() else {
                continue;
            };
            if !alive(lease, now) {
                continue;
            }
            if name == cluster {
                observed.leader = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .filter(|h| !h.is_empty());
                observed.switchover_to = annotation(lease, SWITCHOVER).map(str::to_owned);
            } else if name.starts_with(&member_prefix)
                && let Some(state) = annotation(lease, STATE)
                    .and_then(|j| serde_json::from_str::<MemberState>(j).ok())
            {
                observed.members.insert(state.name.clone(), state);
            }
        }
        observed
    }

    /// The member serving as primary: the lease holder, publishing itself as primary.
    pub fn primary(&self) -> Option<&MemberState> {
        self.leader
            .as_deref()
            .and_then(|l| self.members.get(l))
            .filter(|m| m.role == PublishedRole::Primary)
    }

    /// The role label `pod` should carry: `primary` for the serving primary, `replica` for a
    /// streaming replica, none otherwise (it then leaves both role Services).
    pub fn role_label(&self, pod: &str) -> Option<&'static str> {
        if self.primary().is_some_and(|p| p.name == pod) {
            return Some("primary");
        }
        match self.members.get(pod) {
            Some(m) if m.role == PublishedRole::Replica && self.leader.as_deref() != Some(pod) => {
                Some("replica")
            }
            _ => None,
        }
    }

    /// Each member, for `status.instancesStatus`: lag is measured against the primary's
    /// position.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        let head = self.primary().map_or(0, |p| p.received_lsn);
        self.members
            .values()
            .map(|m| InstanceStatus {
                name: m.name.clone(),
                role: role_name(m.role).into(),
                timeline: m.timeline,
                lag_bytes: head.saturating_sub(m.replayed_lsn),
            })
            .collect()
    }
}

fn role_name(role: PublishedRole) -> &'static str {
    match role {
        PublishedRole::Primary => "primary",
        PublishedRole::Replica => "replica",
        PublishedRole::Fenced => "fenced",
        PublishedRole::Starting => "starting",
        PublishedRole::Stopped => "stopped",
    }
}

/// Whether `lease` was renewed within its duration, by `now`.
fn alive(lease: &Lease, now: DateTime<Utc>) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    let renewed_ms = renewed.0.as_millisecond();
    renewed_ms + i64::from(seconds) * 1000 > now.timestamp_millis()
}
