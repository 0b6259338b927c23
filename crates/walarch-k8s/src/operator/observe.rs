//! What the operator reads of a running cluster: the instance managers' Leases (the leader
//! lease and one member record each, see `leadership::kubernetes`), turned into the pods' role
//! labels and the Cluster's status.
//!
//! Expiry is judged as the instance managers judge it, on the observer's own clock (clocks
//! differ between nodes): a Lease is alive while the operator saw its `resourceVersion` change
//! within `leaseDurationSeconds`. The first sight of a Lease counts from its `renewTime` when
//! that is not in the operator's future (a Lease dead for long is not taken for alive after
//! an operator restart), else from now. The operator only labels pods and reports: a label a
//! few seconds stale routes clients to a server that has fenced itself (it refuses writes),
//! never to a second writer.

use std::collections::{BTreeMap, HashMap};

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

/// When the operator saw each Lease's `resourceVersion` change, by `namespace/name`.
pub type Sightings = HashMap<String, (String, DateTime<Utc>)>;

impl Observed {
    /// Reads the leases of `cluster` at `now`, noting in `sightings` which changed.
    pub fn from_leases(
        cluster: &str,
        leases: &[Lease],
        now: DateTime<Utc>,
        sightings: &mut Sightings,
    ) -> Observed {
        let member_prefix = format!("{cluster}-member-");
        let mut observed = Observed::default();
        for lease in leases {
            let Some(name) = lease.metadata.name.as_deref() else {
                continue;
            };
            if !alive(lease, now, sightings) {
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

/// Whether `lease` changed within its duration, on the operator's clock (see the module
/// documentation).
fn alive(lease: &Lease, now: DateTime<Utc>, sightings: &mut Sightings) -> bool {
    let Some(seconds) = lease.spec.as_ref().and_then(|s| s.lease_duration_seconds) else {
        return false;
    };
    let key = format!(
        "{}/{}",
        lease.metadata.namespace.as_deref().unwrap_or_default(),
        lease.metadata.name.as_deref().unwrap_or_default()
    );
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let changed_at = match sightings.get(&key) {
        Some((seen, at)) if *seen == version => *at,
        Some(_) => now,
        None => lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()))
            .filter(|renewed| *renewed <= now)
            .unwrap_or(now),
    };
    sightings.insert(key, (version, changed_at));
    now - changed_at < chrono::Duration::seconds(i64::from(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(version: &str, renewed: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "n", "resourceVersion": version},
            "spec": {"holderIdentity": "c-0", "leaseDurationSeconds": 15, "renewTime": renewed}
        }))
        .unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_lease_lives_while_it_changes_on_the_observers_clock() {
        let mut seen = Sightings::new();
        // The holder's clock is an hour ahead: its renewTime lies in the operator's future.
        let ahead = "2026-12-01T01:00:00.000000Z";
        assert!(alive(
            &lease("1", ahead),
            at("2026-12-01T00:00:00Z"),
            &mut seen
        ));
        assert!(alive(
            &lease("2", ahead),
            at("2026-12-01T00:00:10Z"),
            &mut seen
        ));
        assert!(alive(
            &lease("3", ahead),
            at("2026-12-01T00:00:20Z"),
            &mut seen
        ));
        // No change for 15 s: expired, whatever renewTime says.
        assert!(!alive(
            &lease("3", ahead),
            at("2026-12-01T00:00:36Z"),
            &mut seen
        ));

        // The holder's clock is an hour behind: renewTime looks old at first sight, but
        // each change the operator sees keeps the lease alive.
        let mut seen = Sightings::new();
        let behind = "2026-11-30T23:00:00.000000Z";
        assert!(!alive(
            &lease("1", behind),
            at("2026-12-01T00:00:00Z"),
            &mut seen
        ));
        assert!(alive(
            &lease("2", behind),
            at("2026-12-01T00:00:05Z"),
            &mut seen
        ));
        assert!(alive(
            &lease("2", behind),
            at("2026-12-01T00:00:19Z"),
            &mut seen
        ));
        assert!(!alive(
            &lease("2", behind),
            at("2026-12-01T00:00:21Z"),
            &mut seen
        ));
    }
}
