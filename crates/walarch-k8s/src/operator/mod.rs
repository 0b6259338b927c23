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
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
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
        }
    }

    /// The context's now.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
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
pub async fn run(client: Client) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(client.clone()));
    let config = watcher::Config::default();
    let clusters = Controller::new(Api::<Cluster>::all(client.clone()), config.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .watches(
            Api::<Lease>::all(client.clone()),
            watcher::Config::default().labels(objects::CLUSTER_LABEL),
            |lease: Lease| {
                let cluster = lease.labels().get(objects::CLUSTER_LABEL)?.clone();
                Some(ObjectRef::<Cluster>::new(&cluster).within(&lease.namespace()?))
            },
        )
        .shutdown_on_signal()
        .run(cluster::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("cluster controller: {e}");
            }
        });
    let backups = Controller::new(Api::<Backup>::all(client.clone()), config.clone())
        .shutdown_on_signal()
        .run(backup::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let schedules = Controller::new(Api::<ScheduledBackup>::all(client.clone()), config)
        .shutdown_on_signal()
        .run(schedule::reconcile, error_policy, ctx)
        .for_each(|_| async {});
    tracing::info!("walarch operator running");
    tokio::join!(clusters, backups, schedules);
    Ok(())
}
