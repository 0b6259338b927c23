//! The Kubernetes operator (`walarch-k8s operator`): one reconciler per kind.
//!
//! - [`resources`]: the custom resources (`walarch.io/v1alpha1`).
//! - [`crdgen`]: their CustomResourceDefinitions (`walarch-k8s crdgen`).
//! - [`objects`]: what a Cluster owns (StatefulSet, Services, PDB, RBAC), as pure functions.
//! - [`observe`]: the instance managers' Leases read as roles and status.
//! - [`repository`]: the engine as the operator uses it (spec checks, recovery plans).
//! - [`cluster`], [`backup`], [`schedule`]: the reconcilers.
//!
//! The operator never decides who leads: the instance managers do, through their Leases
//! (`leadership::kubernetes`). It keeps objects in shape, labels pods after the fact, and
//! runs backups and schedules.

pub mod backup;
pub mod cluster;
pub mod crdgen;
pub mod objects;
pub mod observe;
pub mod repository;
pub mod resources;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use resources::{Backup, Cluster, ScheduledBackup};

/// The time, as the reconcilers see it (a fixed clock in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every reconciler shares.
#[derive(Clone)]
pub struct Context {
    /// The API server.
    pub client: Client,
    /// Publishes Events about the resources.
    pub recorder: Recorder,
    /// Now.
    pub clock: Clock,
    /// Talks to the instance managers (backups).
    pub instances: Arc<dyn backup::InstanceApi>,
    /// When the operator saw each Lease change (see [`observe`]), by namespace/name.
    pub lease_sightings: Arc<std::sync::Mutex<observe::Sightings>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context on `client` with the system clock and HTTP to the instance managers.
    pub fn new(client: Client) -> Context {
        Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "walarch-operator".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
            client,
            clock: Arc::new(Utc::now),
            instances: Arc::new(backup::HttpInstances::default()),
            lease_sightings: Arc::default(),
        }
    }

    /// The context's now.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The cluster `cluster` as its instance managers' Leases describe it now.
    pub async fn observe(
        &self,
        namespace: &str,
        cluster: &str,
    ) -> Result<observe::Observed, Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let selector =
            ListParams::default().labels(&format!("{}={cluster}", objects::CLUSTER_LABEL));
        let list = leases.list(&selector).await?;
        let mut sightings = self.lease_sightings.lock().unwrap();
        Ok(observe::Observed::from_leases(
            cluster,
            &list.items,
            self.now(),
            &mut sightings,
        ))
    }

    /// Publishes an Event about `object`.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        kind: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), Error> {
        self.recorder
            .publish(
                &Event {
                    type_: kind,
                    reason: reason.into(),
                    note: Some(note.chars().take(1024).collect()),
                    action: "Reconcile".into(),
                    secondary: None,
                },
                &object.object_ref(&()),
            )
            .await?;
        Ok(())
    }
}

/// Applies `status` to `name`'s status subresource by server-side apply as `manager`: fields
/// the manager applied before and leaves out now are removed, other managers' fields stay.
pub async fn apply_status<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    manager: &str,
    status: impl serde::Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Why a reconciliation failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer's bookkeeping failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object could not be serialized.
    #[error("serializing: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A resource without a namespace (every walarch kind is namespaced).
    #[error("the resource has no namespace")]
    NotNamespaced,
    /// An instance manager could not be reached or refused.
    #[error("instance manager: {0}")]
    Instance(String),
    /// The repository could not be read or changed.
    #[error("repository: {0}")]
    Repository(String),
    /// Something must happen first (pods to stop); the pass is retried.
    #[error("waiting: {0}")]
    Waiting(String),
}

/// A condition as of `now`.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: time(now),
        observed_generation: None,
    }
}

/// Replaces the condition of the same type, keeping its transition time when its status did
/// not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// A Kubernetes time.
pub fn time(at: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(at.timestamp_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!("reconciliation failed: {error}");
    Action::requeue(Duration::from_secs(15))
}

/// Runs the three controllers until the process is stopped.
///
/// Each controller is triggered by what it must act on, not by its own writes: a status
/// patch changes neither `generation` nor the finalizers, so it does not trigger its own
/// reconciler again (no hot loop); Leases trigger a Cluster pass only when a leader or a
/// member's role changes, not at every renewal. Everything else is seen at the resync.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(client.clone()));
    let config = watcher::Config::default();

    let (cluster_store, cluster_writer) = reflector::store();
    let cluster_changes = watcher(Api::<Cluster>::all(client.clone()), config.clone())
        .default_backoff()
        .reflect(cluster_writer)
        .applied_objects()
        .predicate_filter(spec_or_finalizers, Default::default());
    let role_changes = watcher(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().labels(objects::CLUSTER_LABEL),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(leadership_of, Default::default());
    let clusters = Controller::for_stream(cluster_changes, cluster_store)
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .watches_stream(role_changes, |lease: Lease| {
            let cluster = lease.labels().get(objects::CLUSTER_LABEL)?.clone();
            Some(ObjectRef::<Cluster>::new(&cluster).within(&lease.namespace()?))
        })
        .shutdown_on_signal()
        .run(cluster::reconcile, error_policy, ctx.clone())
        .for_each(log_failure);

    let (backup_store, backup_writer) = reflector::store();
    let backup_changes = watcher(Api::<Backup>::all(client.clone()), config.clone())
        .default_backoff()
        .reflect(backup_writer)
        .applied_objects()
        .predicate_filter(spec_or_finalizers, Default::default());
    let backups = Controller::for_stream(backup_changes, backup_store)
        .shutdown_on_signal()
        .run(backup::reconcile, error_policy, ctx.clone())
        .for_each(log_failure);

    let (schedule_store, schedule_writer) = reflector::store();
    let schedule_changes = watcher(Api::<ScheduledBackup>::all(client.clone()), config)
        .default_backoff()
        .reflect(schedule_writer)
        .applied_objects()
        .predicate_filter(spec_or_finalizers, Default::default());
    let schedules = Controller::for_stream(schedule_changes, schedule_store)
        .shutdown_on_signal()
        .run(schedule::reconcile, error_policy, ctx)
        .for_each(log_failure);

    tracing::info!("walarch operator running");
    tokio::join!(clusters, backups, schedules);
    Ok(())
}

async fn log_failure<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!("controller: {e}");
    }
}

fn hash_of(value: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What a resource's own reconciler reacts to: its spec (`generation`, which deletion bumps
/// too) and its finalizers (added in one pass, acted on in the next), never its status.
pub fn spec_or_finalizers<K: Resource>(object: &K) -> Option<u64> {
    let meta = object.meta();
    Some(hash_of((
        meta.generation,
        &meta.finalizers,
        meta.deletion_timestamp.is_some(),
    )))
}

/// What of a Lease moves the role labels: the leader lease's holder, a member record's role
/// and timeline (not its positions, which change with every write).
pub fn leadership_of(lease: &Lease) -> Option<u64> {
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let published = lease
        .annotations()
        .get("walarch.io/state")
        .and_then(|state| serde_json::from_str::<crate::leadership::MemberState>(state).ok())
        .map(|state| (format!("{:?}", state.role), state.timeline));
    Some(hash_of((holder, published)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(generation: i64, finalizers: &[&str], phase: &str) -> Cluster {
        serde_json::from_value(json!({
            "apiVersion": "walarch.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "n", "generation": generation, "finalizers": finalizers},
            "spec": {"instances": 1, "image": "i", "storage": {"size": "1Gi"}},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn a_status_write_does_not_trigger_its_own_reconciler() {
        let base = spec_or_finalizers(&cluster(1, &[], "Setting up"));
        assert_eq!(base, spec_or_finalizers(&cluster(1, &[], "Healthy")));
        assert_ne!(base, spec_or_finalizers(&cluster(2, &[], "Setting up")));
        assert_ne!(
            base,
            spec_or_finalizers(&cluster(1, &["walarch.io/cluster-leases"], "Setting up"))
        );
    }

    fn lease(holder: &str, role: &str, lsn: u64, renewed: &str) -> Lease {
        let state = json!({"name": "c-0", "role": role, "timeline": 1, "received_lsn": lsn,
                           "replayed_lsn": lsn, "host": "h", "pg_port": 5432, "http": "h:8008"});
        serde_json::from_value(json!({
            "metadata": {"name": "c-member-c-0", "annotations": {"walarch.io/state": state.to_string()}},
            "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15}
        }))
        .unwrap()
    }

    #[test]
    fn only_a_leadership_change_in_a_lease_triggers_a_cluster_pass() {
        let base = leadership_of(&lease("c-0", "replica", 100, "2026-12-01T00:00:00.000000Z"));
        // A renewal with more WAL received: no pass.
        assert_eq!(
            base,
            leadership_of(&lease("c-0", "replica", 900, "2026-12-01T00:00:02.000000Z"))
        );
        assert_ne!(
            base,
            leadership_of(&lease("c-0", "primary", 900, "2026-12-01T00:00:02.000000Z"))
        );
        assert_ne!(
            base,
            leadership_of(&lease("c-1", "replica", 100, "2026-12-01T00:00:00.000000Z"))
        );
    }
}
