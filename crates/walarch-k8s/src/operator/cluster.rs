//! The Cluster reconciler.
//!
//! Each pass, in order: refuse an unsound spec (with an event, creating nothing); for a
//! recovery cluster not yet created, plan the recovery from the source repository and stop
//! there with a condition naming what is missing when the target is out of reach; apply the
//! owned objects (server-side apply); label each pod with the role its instance manager
//! published, so `<cluster>-rw` follows the leader; write the status.
//!
//! The finalizer deletes the instance managers' Leases: they are not owned by the Cluster
//! (the instances create them), and a new Cluster of the same name must not find the old
//! one's leader and system identifier.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::objects::{self, CLUSTER_LABEL, ROLE_LABEL};
use super::observe::Observed;
use super::resources::{Cluster, ClusterStatus, RepositorySpec};
use super::{Context, Error, apply_status, condition, repository, set_condition};

/// The finalizer the operator puts on every Cluster.
pub const FINALIZER: &str = "walarch.io/cluster-leases";
/// The field manager of the operator's server-side applies.
pub const MANAGER: &str = "walarch-operator";
/// How often a healthy cluster is looked at again without a change (roles also change
/// through the Leases, which the controller watches).
const RESYNC: Duration = Duration::from_secs(30);
/// How often an unreachable recovery target is planned again (the archive may catch up).
const REPLAN: Duration = Duration::from_secs(60);

/// One reconciliation of `cluster`.
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cluster.namespace().ok_or(Error::NotNamespaced)?;
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&clusters, FINALIZER, cluster, |event| async {
        match event {
            Finalizer::Apply(cluster) => apply(&cluster, &ctx, &namespace).await,
            Finalizer::Cleanup(cluster) => cleanup(&cluster, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = cluster.name_any();
    let mut status = cluster.status.clone().unwrap_or_default();
    status.observed_generation = cluster.meta().generation;

    if let Some(reason) = repository::refusal(&cluster.spec) {
        ctx.event(cluster, EventType::Warning, "Refused", &reason)
            .await?;
        status.phase = Some("Refused".into());
        status.phase_reason = Some(reason.clone());
        set_condition(
            &mut status.conditions,
            condition("Ready", false, "Refused", &reason, ctx.now()),
        );
        patch_status(ctx, namespace, &name, &status).await?;
        return Ok(Action::await_change());
    }

    let recovery = cluster.spec.recovery();
    let planned = status
        .conditions
        .iter()
        .any(|c| c.type_ == "RecoveryTargetReachable" && c.status == "True");
    if let Some(recovery) = recovery
        && !planned
    {
        let vars = secret_vars(ctx, namespace, &recovery.source).await?;
        match repository::check_recovery(recovery, vars).await {
            Err(missing) => {
                ctx.event(
                    cluster,
                    EventType::Warning,
                    "RecoveryTargetUnreachable",
                    &missing,
                )
                .await?;
                status.phase = Some("Recovery target unreachable".into());
                status.phase_reason = Some(missing.clone());
                set_condition(
                    &mut status.conditions,
                    condition(
                        "RecoveryTargetReachable",
                        false,
                        "TargetUnreachable",
                        &missing,
                        ctx.now(),
                    ),
                );
                patch_status(ctx, namespace, &name, &status).await?;
                return Ok(Action::requeue(REPLAN));
            }
            Ok(plan) => {
                let summary = repository::describe(&plan);
                ctx.event(cluster, EventType::Normal, "RecoveryPlanned", &summary)
                    .await?;
                set_condition(
                    &mut status.conditions,
                    condition(
                        "RecoveryTargetReachable",
                        true,
                        "Planned",
                        &summary,
                        ctx.now(),
                    ),
                );
            }
        }
    }

    // Labels first: a failed apply (an immutable StatefulSet field, say) must not keep
    // `-rw` on a pod that no longer leads.
    let observed = label_pods(cluster, ctx, namespace).await?;
    apply_owned(cluster, ctx, namespace).await?;

    describe_running(cluster, &observed, &mut status, ctx);
    patch_status(ctx, namespace, &name, &status).await?;
    Ok(Action::requeue(RESYNC))
}

/// Labels each pod with the role its instance published (see [`Observed::role_label`]);
/// pods losing `primary` are relabelled first, so two pods never both carry it.
async fn label_pods(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<Observed, Error> {
    let name = cluster.name_any();
    let observed = ctx.observe(namespace, &name).await?;
    let selector = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut changes: Vec<(String, Option<&str>, bool)> = Vec::new();
    for pod in pods.list(&selector).await? {
        let pod_name = pod.name_any();
        let want = observed.role_label(&pod_name);
        let was_primary = pod.labels().get(ROLE_LABEL).map(String::as_str) == Some("primary");
        if want != pod.labels().get(ROLE_LABEL).map(String::as_str) {
            changes.push((pod_name, want, was_primary));
        }
    }
    changes.sort_by_key(|(_, _, was_primary)| !was_primary);
    for (pod_name, want, _) in changes {
        // A merge patch with null removes the label.
        let patch = json!({ "metadata": { "labels": { ROLE_LABEL: want } } });
        pods.patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if want == Some("primary") {
            ctx.event(
                cluster,
                EventType::Normal,
                "PrimaryLabelled",
                &format!("{pod_name} leads: {name}-rw selects it"),
            )
            .await?;
        }
    }
    Ok(observed)
}

/// Fills the running cluster's part of the status from what the instances published.
fn describe_running(
    cluster: &Cluster,
    observed: &Observed,
    status: &mut ClusterStatus,
    ctx: &Context,
) {
    let instances = observed.instances();
    let ready = instances
        .iter()
        .filter(|i| observed.role_label(&i.name).is_some())
        .count() as u32;
    let primary = observed.primary();
    status.current_primary = observed.leader.clone();
    status.target_primary = observed
        .switchover_to
        .clone()
        .or_else(|| observed.leader.clone());
    status.timeline = primary.map(|p| p.timeline);
    status.ready_instances = ready;
    status.instances_status = instances;
    let wanted = cluster.spec.instances;
    let (phase, reason) = match primary {
        None if observed.members.is_empty() => ("Setting up", "waiting for the instances"),
        None => (
            "Failing over",
            "no instance holds the leader lease and serves",
        ),
        Some(_) if ready < wanted => (
            "Waiting for instances",
            "not every instance serves its role",
        ),
        Some(_) => ("Healthy", "every instance serves its role"),
    };
    status.phase = Some(phase.into());
    status.phase_reason = Some(reason.into());
    let now = ctx.now();
    set_condition(
        &mut status.conditions,
        condition(
            "Ready",
            primary.is_some() && ready >= wanted,
            if primary.is_some() && ready >= wanted {
                "ClusterIsReady"
            } else {
                "ClusterIsNotReady"
            },
            reason,
            now,
        ),
    );
    if cluster.spec.repository.is_some() {
        let (ok, message) = match primary.and_then(|p| p.archive_backlog) {
            Some(backlog) if backlog <= ARCHIVE_BACKLOG_OK => (
                true,
                format!("the primary has {backlog} segments waiting for the archiver"),
            ),
            Some(backlog) => (
                false,
                format!(
                    "the primary has {backlog} segments waiting for the archiver: archiving fails or falls behind"
                ),
            ),
            None => (false, "no primary reports its archiving".to_owned()),
        };
        set_condition(
            &mut status.conditions,
            condition(
                "ContinuousArchiving",
                ok,
                if ok { "Archiving" } else { "ArchiveBacklog" },
                &message,
                now,
            ),
        );
    }
}

/// Segments waiting for archive_command that still count as keeping up (one being
/// archived, one just completed).
const ARCHIVE_BACKLOG_OK: u64 = 2;

/// Server-side applies every object the cluster owns.
async fn apply_owned(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<(), Error> {
    // The password is made once: a create that finds the Secret leaves it as it is.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = objects::superuser_secret(cluster, &objects::new_password());
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let owned = objects::owned(cluster);
    apply_object::<ServiceAccount>(ctx, namespace, &owned.service_account).await?;
    apply_object::<Role>(ctx, namespace, &owned.role).await?;
    apply_object::<RoleBinding>(ctx, namespace, &owned.role_binding).await?;
    for service in &owned.services {
        apply_object::<Service>(ctx, namespace, service).await?;
    }
    apply_object::<PodDisruptionBudget>(ctx, namespace, &owned.disruption_budget).await?;
    apply_object::<StatefulSet>(ctx, namespace, &owned.stateful_set).await?;
    Ok(())
}

async fn apply_object<K>(ctx: &Context, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let mut body = serde_json::to_value(object).map_err(Error::Serialize)?;
    body["apiVersion"] = K::api_version(&Default::default()).into();
    body["kind"] = K::kind(&Default::default()).into();
    api.patch(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// The conditions the Cluster reconciler owns (the Backup reconciler owns
/// `LastBackupSucceeded`, with `lastSuccessfulBackup` and `firstRecoverabilityPoint`).
const OWN_CONDITIONS: [&str; 3] = ["Ready", "ContinuousArchiving", "RecoveryTargetReachable"];

/// Applies the reconciler's part of the status (server-side apply, its own field manager):
/// fields it leaves out are removed, fields the Backup reconciler owns are left alone.
async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &ClusterStatus,
) -> Result<(), Error> {
    let mut own = status.clone();
    own.last_successful_backup = None;
    own.first_recoverability_point = None;
    own.conditions
        .retain(|c| OWN_CONDITIONS.contains(&c.type_.as_str()));
    apply_status::<Cluster>(ctx, namespace, name, MANAGER, own).await
}

/// The variables a repository's credentials Secret holds (none without one).
pub async fn secret_vars(
    ctx: &Context,
    namespace: &str,
    repo: &RepositorySpec,
) -> Result<Vec<(String, String)>, Error> {
    let Some(reference) = &repo.credentials else {
        return Ok(Vec::new());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets.get(&reference.name).await?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
        .collect())
}

/// Deleting a Cluster: its StatefulSet first, and only once no pod of it runs, the
/// instance managers' Leases (a running manager would write its Lease again). Until then
/// the pass fails, which keeps the finalizer and retries.
async fn cleanup(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = cluster.name_any();
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    match sets.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let selector = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let running = pods.list(&selector).await?.items.len();
    if running > 0 {
        return Err(Error::Waiting(format!(
            "{running} pods of cluster {name} still run; its Leases are deleted once they stopped"
        )));
    }
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), namespace);
    leases
        .delete_collection(&DeleteParams::default(), &selector)
        .await?;
    ctx.event(
        cluster,
        EventType::Normal,
        "LeasesDeleted",
        "the pods stopped and the instance managers' leases are deleted; the volume claims stay (delete them to reuse the name)",
    )
    .await?;
    Ok(Action::await_change())
}
