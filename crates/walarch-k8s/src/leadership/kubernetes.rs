//! The leader lease on Kubernetes: `coordination.k8s.io/v1` Lease objects in the pod's
//! namespace, labelled `walarch.io/cluster=<cluster>`.
//!
//! - `<cluster>`: the leader lease. `holderIdentity` names the leader; the holder renews it by
//!   replacing it (compare-and-swap on `resourceVersion`, so a lost race is a 409, never a
//!   silent overwrite). Annotations on it carry the cluster's records, written only by the
//!   holder the same way: `walarch.io/sync`, `walarch.io/switchover`,
//!   `walarch.io/initialized`.
//! - `<cluster>-member-<name>`: one per member, its published state in
//!   `walarch.io/state`, renewed with the member's own renewals.
//!
//! Expiry is judged on the observer's own clock, never on the timestamps inside the object
//! (clocks differ between nodes): a record whose `resourceVersion` has not changed for a full
//! TTL since this member first saw it is expired. A member that just started has seen nothing
//! for long, so it waits a full TTL before it can take a lease anyone held.
//!
//! The store revisions the decision logic compares (who published after a vacancy began) are
//! this member's own observation sequence: Kubernetes forbids comparing `resourceVersion`s.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{
    ClusterView, Coordination, CoordinationError, MemberState, Published, Renewal, SyncState,
};

pub(crate) const CLUSTER_LABEL: &str = "walarch.io/cluster";
pub(crate) const STATE: &str = "walarch.io/state";
pub(crate) const SYNC: &str = "walarch.io/sync";
pub(crate) const SWITCHOVER: &str = "walarch.io/switchover";
pub(crate) const INITIALIZED: &str = "walarch.io/initialized";

/// One member's handle on the cluster's Lease objects.
pub struct KubeCoordination {
    leases: Api<Lease>,
    cluster: String,
    member: String,
    ttl: Duration,
    call_timeout: Duration,
    seen: Mutex<Observations>,
    /// This member took the leader lease and has not released or lost it: a renewal that
    /// finds another holder is then a loss, not a plain member renewal.
    leading: AtomicBool,
}

impl std::fmt::Debug for KubeCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCoordination")
            .field("cluster", &self.cluster)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

/// How a write to the leader lease as its holder went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HolderWrite {
    Written,
    /// Someone else holds it (or nobody, or it does not exist).
    NotHolder,
    /// The change was not needed.
    Declined,
    /// Another write came between the read and the replace (409).
    Conflict,
}

/// What this member has seen of each Lease: its `resourceVersion`, when (own clock) and in
/// which view it first saw that version.
#[derive(Debug, Default)]
struct Observations {
    sequence: i64,
    records: HashMap<String, (String, Instant, i64)>,
}

impl Observations {
    /// Notes `name` at `version`; returns (first seen at, sequence first seen in).
    fn note(&mut self, name: &str, version: &str, now: Instant) -> (Instant, i64) {
        let sequence = self.sequence;
        let entry = self
            .records
            .entry(name.to_owned())
            .or_insert_with(|| (version.to_owned(), now, sequence));
        if entry.0 != version {
            *entry = (version.to_owned(), now, sequence);
        }
        (entry.1, entry.2)
    }
}

impl KubeCoordination {
    /// A handle for `member` of `cluster` on the Leases `leases` (namespaced).
    pub fn new(
        leases: Api<Lease>,
        cluster: &str,
        member: &str,
        ttl: Duration,
        call_timeout: Duration,
    ) -> KubeCoordination {
        KubeCoordination {
            leases,
            cluster: cluster.to_owned(),
            member: member.to_owned(),
            ttl,
            call_timeout,
            seen: Mutex::new(Observations::default()),
            leading: AtomicBool::new(false),
        }
    }

    fn member_lease(&self, name: &str) -> String {
        format!("{}-member-{name}", self.cluster)
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CoordinationError> {
        super::bounded(self.call_timeout, what, call).await
    }

    /// Like `bounded`, but a 409 (someone else changed the object first) or 404 comes back
    /// as `Ok(None)`.
    async fn bounded_cas<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Option<T>, CoordinationError> {
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(value)) => Ok(Some(value)),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 || status.code == 404 => {
                Ok(None)
            }
            Ok(Err(e)) => Err(CoordinationError::Unreachable(format!("{what}: {e}"))),
            Err(_) => Err(CoordinationError::Unreachable(format!(
                "{what}: no answer within {:?}",
                self.call_timeout
            ))),
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(CLUSTER_LABEL.to_owned(), self.cluster.clone())])
    }

    async fn leader_lease(&self) -> Result<Option<Lease>, CoordinationError> {
        self.bounded(
            "reading the leader lease",
            self.leases.get_opt(&self.cluster),
        )
        .await
    }

    /// Whether the leader lease, as read now, is held by someone (by this member's own clock).
    async fn held_by(&self, lease: &Lease) -> Option<String> {
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty())?;
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let (first_seen, _) = self
            .seen
            .lock()
            .await
            .note(&self.cluster, &version, Instant::now());
        (first_seen.elapsed() < self.ttl).then_some(holder)
    }

    /// Replaces the leader lease if this member holds it, after `change`; `Ok(false)` if it
    /// does not, `change` declined, or another writer came first.
    async fn change_as_holder(
        &self,
        what: &str,
        change: impl Fn(&mut Lease) -> bool,
    ) -> Result<bool, CoordinationError> {
        Ok(self.write_as_holder(what, change).await? == HolderWrite::Written)
    }

    async fn write_as_holder(
        &self,
        what: &str,
        change: impl Fn(&mut Lease) -> bool,
    ) -> Result<HolderWrite, CoordinationError> {
        let Some(mut lease) = self.leader_lease().await? else {
            return Ok(HolderWrite::NotHolder);
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.member.as_str()) {
            return Ok(HolderWrite::NotHolder);
        }
        if !change(&mut lease) {
            return Ok(HolderWrite::Declined);
        }
        // resourceVersion stays as read: a 409 means another write came first.
        let written = self
            .bounded_cas(
                what,
                self.leases
                    .replace(&self.cluster, &PostParams::default(), &lease),
            )
            .await?;
        match written {
            Some(written) => {
                self.note_written(&self.cluster, &written).await;
                Ok(HolderWrite::Written)
            }
            None => Ok(HolderWrite::Conflict),
        }
    }

    /// A version this member wrote itself counts as seen now.
    async fn note_written(&self, name: &str, lease: &Lease) {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        self.seen.lock().await.note(name, &version, Instant::now());
    }

    fn now() -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::now())
    }
}

pub(crate) fn annotation<'a>(lease: &'a Lease, key: &str) -> Option<&'a str> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn set_annotation(lease: &mut Lease, key: &str, value: Option<String>) {
    let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => {
            annotations.insert(key.to_owned(), v);
        }
        None => {
            annotations.remove(key);
        }
    }
}

impl Coordination for KubeCoordination {
    async fn view(&self) -> Result<ClusterView, CoordinationError> {
        let list = self
            .bounded(
                "listing the cluster's leases",
                self.leases.list(
                    &ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", self.cluster)),
                ),
            )
            .await?;
        let now = Instant::now();
        let mut seen = self.seen.lock().await;
        seen.sequence += 1;
        let mut view = ClusterView {
            revision: seen.sequence,
            ..ClusterView::default()
        };
        let member_prefix = format!("{}-member-", self.cluster);
        for lease in &list.items {
            let Some(name) = lease.metadata.name.as_deref() else {
                continue;
            };
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let (first_seen, sequence) = seen.note(name, &version, now);
            let alive = now.duration_since(first_seen) < self.ttl;
            if name == self.cluster {
                let holder = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .filter(|h| !h.is_empty());
                view.leader = holder.filter(|_| alive);
                view.initialized = annotation(lease, INITIALIZED).map(str::to_owned);
                view.switchover = annotation(lease, SWITCHOVER).map(str::to_owned);
                view.sync =
                    match annotation(lease, SYNC) {
                        Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                            CoordinationError::Invalid(format!("{name}: {SYNC}: {e}"))
                        })?),
                        None => None,
                    };
            } else if let Some(state) = annotation(lease, STATE)
                .filter(|_| name.starts_with(&member_prefix) && alive)
                .and_then(|j| serde_json::from_str::<MemberState>(j).ok())
            {
                view.members.push(Published {
                    state,
                    revision: sequence,
                });
            }
        }
        view.members.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        Ok(view)
    }

    async fn acquire(&self) -> Result<bool, CoordinationError> {
        let spec = |transitions: i32| LeaseSpec {
            holder_identity: Some(self.member.clone()),
            lease_duration_seconds: Some(self.ttl.as_secs().max(1) as i32),
            acquire_time: Some(Self::now()),
            renew_time: Some(Self::now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        match self.leader_lease().await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cluster.clone()),
                        labels: Some(self.labels()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(0)),
                };
                let created = self
                    .bounded_cas(
                        "creating the leader lease",
                        self.leases.create(&PostParams::default(), &lease),
                    )
                    .await?;
                if let Some(created) = &created {
                    self.note_written(&self.cluster, created).await;
                    self.leading.store(true, Ordering::SeqCst);
                }
                Ok(created.is_some())
            }
            Some(mut lease) => {
                if self.held_by(&lease).await.is_some() {
                    return Ok(false);
                }
                let transitions = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0);
                lease.spec = Some(spec(transitions + 1));
                // resourceVersion stays as read: a 409 means somebody else was faster.
                let written = self
                    .bounded_cas(
                        "taking the leader lease",
                        self.leases
                            .replace(&self.cluster, &PostParams::default(), &lease),
                    )
                    .await?;
                if let Some(written) = &written {
                    self.note_written(&self.cluster, written).await;
                    self.leading.store(true, Ordering::SeqCst);
                }
                Ok(written.is_some())
            }
        }
    }

    async fn renew(&self) -> Result<Renewal, CoordinationError> {
        // The member's own record first (nobody else writes it: a merge patch suffices).
        let patch = serde_json::json!({
            "metadata": { "labels": self.labels() },
            "spec": { "holderIdentity": self.member, "renewTime": Self::now() }
        });
        let name = self.member_lease(&self.member);
        let patched = self
            .bounded_cas(
                "renewing the member's lease",
                self.leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await?;
        if let Some(patched) = &patched {
            self.note_written(&name, patched).await;
        }
        // Then the leader lease, if this member holds it; a conflict is read again once
        // (this member's own annotation write may have raced the renewal).
        if patched.is_none() {
            // The member's lease is gone (never published, or deleted): nothing is held.
            self.leading.store(false, Ordering::SeqCst);
            return Ok(Renewal::Lost);
        }
        if !self.leading.load(Ordering::SeqCst) {
            return Ok(Renewal::Renewed);
        }
        for _ in 0..2 {
            let written = self
                .write_as_holder("renewing the leader lease", |l| {
                    if let Some(spec) = l.spec.as_mut() {
                        spec.renew_time = Some(Self::now());
                    }
                    true
                })
                .await?;
            match written {
                HolderWrite::Written | HolderWrite::Declined => return Ok(Renewal::Renewed),
                HolderWrite::NotHolder => break,
                HolderWrite::Conflict => continue,
            }
        }
        // Another holder, or two conflicts: the lease is not this member's any more.
        self.leading.store(false, Ordering::SeqCst);
        Ok(Renewal::Lost)
    }

    async fn release(&self) -> Result<(), CoordinationError> {
        self.leading.store(false, Ordering::SeqCst);
        self.change_as_holder("releasing the leader lease", |l| {
            if let Some(spec) = l.spec.as_mut() {
                spec.holder_identity = None;
            }
            true
        })
        .await?;
        Ok(())
    }

    async fn publish(&self, state: &MemberState) -> Result<(), CoordinationError> {
        let json =
            serde_json::to_string(state).map_err(|e| CoordinationError::Invalid(e.to_string()))?;
        let name = self.member_lease(&self.member);
        let patch = serde_json::json!({
            "metadata": { "labels": self.labels(), "annotations": { STATE: json } },
            "spec": { "holderIdentity": self.member, "renewTime": Self::now() }
        });
        let patched = self
            .bounded_cas(
                "publishing the member's state",
                self.leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await?;
        let written = match patched {
            Some(lease) => lease,
            None => {
                // First publication: create the member's lease.
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(self.labels()),
                        annotations: Some(BTreeMap::from([(STATE.to_owned(), json)])),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.member.clone()),
                        lease_duration_seconds: Some(self.ttl.as_secs().max(1) as i32),
                        renew_time: Some(Self::now()),
                        ..LeaseSpec::default()
                    }),
                };
                self.bounded(
                    "creating the member's lease",
                    self.leases.create(&PostParams::default(), &lease),
                )
                .await?
            }
        };
        self.note_written(&name, &written).await;
        Ok(())
    }

    async fn set_sync(&self, sync: &SyncState) -> Result<bool, CoordinationError> {
        let json =
            serde_json::to_string(sync).map_err(|e| CoordinationError::Invalid(e.to_string()))?;
        self.change_as_holder("writing the synchronous set", |l| {
            set_annotation(l, SYNC, Some(json.clone()));
            true
        })
        .await
    }

    async fn request_switchover(&self, to: &str) -> Result<bool, CoordinationError> {
        self.change_as_holder("recording the switchover", |l| {
            set_annotation(l, SWITCHOVER, Some(to.to_owned()));
            true
        })
        .await
    }

    async fn clear_switchover(&self) -> Result<(), CoordinationError> {
        self.change_as_holder("removing the switchover record", |l| {
            set_annotation(l, SWITCHOVER, None);
            true
        })
        .await?;
        Ok(())
    }

    async fn initialize(&self, system_id: &str) -> Result<bool, CoordinationError> {
        self.change_as_holder("recording the cluster's initialization", |l| {
            if annotation(l, INITIALIZED).is_some() {
                return false;
            }
            set_annotation(l, INITIALIZED, Some(system_id.to_owned()));
            true
        })
        .await
    }
}
