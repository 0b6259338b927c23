//! The Backup reconciler: picks the instance (a ready replica unless the primary is asked
//! for), asks its manager to take the backup (`POST /backups`), follows it
//! (`GET /backups/NAME`), and once it completed applies the cluster's retention policy and
//! reports on the Cluster (`lastSuccessfulBackup`, `firstRecoverabilityPoint`,
//! `LastBackupSucceeded`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use walarch_core::retention::RetentionPolicy;

use super::observe::Observed;
use super::resources::{
    Backup, BackupPhase, BackupStatus, BackupTarget, Cluster, ClusterStatus, RetentionSpec,
};
use super::{Context, Error, apply_status, condition, repository, set_condition};
use crate::leadership::{MemberState, PublishedRole};

/// How often a running backup is looked at.
const POLL: Duration = Duration::from_secs(10);

pub use crate::instance::BackupState;

/// Why an instance manager's answer is not a backup's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InstanceError {
    /// The HTTP status the manager answered with; `None` when it did not answer.
    pub status: Option<u16>,
    /// What went wrong, with the request.
    pub message: String,
}

impl InstanceError {
    fn unanswered(message: String) -> Self {
        InstanceError {
            status: None,
            message,
        }
    }
}

/// The instance managers' backup interface.
pub trait InstanceApi: Send + Sync {
    /// Asks the manager at `base` (`http://HOST:PORT`) to start backup `name`.
    fn start_backup(
        &self,
        base: String,
        name: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>>;
    /// Asks the manager at `base` how backup `name` goes.
    fn backup_state(
        &self,
        base: String,
        name: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>>;
}

/// [`InstanceApi`] over HTTP.
#[derive(Clone, Debug)]
pub struct HttpInstances {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl Default for HttpInstances {
    fn default() -> Self {
        HttpInstances {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        }
    }
}

impl HttpInstances {
    async fn call(&self, method: &str, url: String) -> Result<BackupState, InstanceError> {
        use http_body_util::BodyExt;
        let request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| InstanceError::unanswered(format!("{url}: {e}")))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| {
                InstanceError::unanswered(format!("{method} {url}: no answer within 10 s"))
            })?
            .map_err(|e| InstanceError::unanswered(format!("{method} {url}: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| InstanceError::unanswered(format!("{method} {url}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(InstanceError {
                status: Some(status.as_u16()),
                message: format!(
                    "{method} {url}: {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            });
        }
        serde_json::from_slice(&body).map_err(|e| InstanceError {
            status: Some(status.as_u16()),
            message: format!("{method} {url}: {e}"),
        })
    }
}

impl InstanceApi for HttpInstances {
    fn start_backup(
        &self,
        base: String,
        name: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>> {
        let this = self.clone();
        Box::pin(async move {
            this.call("POST", format!("{base}/backups?name={name}"))
                .await
        })
    }

    fn backup_state(
        &self,
        base: String,
        name: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>> {
        let this = self.clone();
        Box::pin(async move { this.call("GET", format!("{base}/backups/{name}")).await })
    }
}

/// The instance a backup runs on: the replica with the least lag (unless the primary is
/// asked for), the primary when no replica streams.
pub fn choose_instance(observed: &Observed, target: BackupTarget) -> Option<&MemberState> {
    let replica = observed
        .members
        .values()
        .filter(|m| m.role == PublishedRole::Replica)
        .min_by_key(|m| {
            observed
                .primary()
                .map_or(0, |p| p.received_lsn.saturating_sub(m.replayed_lsn))
        });
    match target {
        BackupTarget::PreferStandby => replica.or(observed.primary()),
        BackupTarget::Primary => observed.primary(),
    }
}

/// `http://HOST:PORT` of a member's manager: its published host, its HTTP port.
pub fn manager_base(member: &MemberState) -> String {
    let port = member
        .http
        .rsplit_once(':')
        .map_or("8008", |(_, port)| port);
    format!("http://{}:{port}", member.host)
}

/// One reconciliation of `backup`.
pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = backup.namespace().ok_or(Error::NotNamespaced)?;
    let status = backup.status.clone().unwrap_or_default();
    match status.phase {
        None | Some(BackupPhase::Pending) => start(&backup, &ctx, &namespace, status).await,
        Some(BackupPhase::Running) => follow(&backup, &ctx, &namespace, status).await,
        Some(BackupPhase::Completed | BackupPhase::Failed) => Ok(Action::await_change()),
    }
}

/// Picks the instance and asks it to start. The choice is written to the status before the
/// request, so a pass retried after a lost answer asks the same instance again (its manager
/// answers for a name it knows) and never starts a second backup elsewhere.
async fn start(
    backup: &Backup,
    ctx: &Context,
    namespace: &str,
    mut status: BackupStatus,
) -> Result<Action, Error> {
    let cluster_name = &backup.spec.cluster.name;
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(cluster) = clusters.get_opt(cluster_name).await? else {
        return fail(
            backup,
            ctx,
            namespace,
            status,
            format!("there is no Cluster {cluster_name}"),
        )
        .await;
    };
    if cluster.spec.repository.is_none() {
        return fail(
            backup,
            ctx,
            namespace,
            status,
            format!("Cluster {cluster_name} has no repository to back up into"),
        )
        .await;
    }
    let observed = ctx.observe(namespace, cluster_name).await?;
    let chosen = match &status.instance {
        Some(name) => observed.members.get(name),
        None => choose_instance(&observed, backup.spec.target),
    };
    let Some(member) = chosen else {
        status.phase = Some(BackupPhase::Pending);
        status.instance = None;
        status.error = Some("no instance serves the role the backup needs yet".into());
        patch_backup_status(ctx, namespace, &backup.name_any(), &status).await?;
        return Ok(Action::requeue(POLL));
    };
    if status.instance.is_none() {
        status.phase = Some(BackupPhase::Pending);
        status.instance = Some(member.name.clone());
        status.error = None;
        patch_backup_status(ctx, namespace, &backup.name_any(), &status).await?;
    }
    ctx.instances
        .start_backup(manager_base(member), backup.name_any())
        .await
        .map_err(|e| Error::Instance(e.to_string()))?;
    status.phase = Some(BackupPhase::Running);
    status.started_at = Some(ctx.now().to_rfc3339());
    status.error = None;
    patch_backup_status(ctx, namespace, &backup.name_any(), &status).await?;
    ctx.event(
        backup,
        EventType::Normal,
        "Started",
        &format!("backing up on {}", member.name),
    )
    .await?;
    Ok(Action::requeue(POLL))
}

/// Follows a running backup; once it completed, the Backup says so first, then retention
/// runs and its outcome is added (a retention failure is reported, the backup stays
/// completed).
async fn follow(
    backup: &Backup,
    ctx: &Context,
    namespace: &str,
    mut status: BackupStatus,
) -> Result<Action, Error> {
    let cluster_name = &backup.spec.cluster.name;
    let observed = ctx.observe(namespace, cluster_name).await?;
    let instance = status.instance.clone().unwrap_or_default();
    let Some(member) = observed.members.get(&instance) else {
        return fail(
            backup,
            ctx,
            namespace,
            status,
            format!("instance {instance} is gone: its member record expired during the backup"),
        )
        .await;
    };
    let state = match ctx
        .instances
        .backup_state(manager_base(member), backup.name_any())
        .await
    {
        Ok(state) => state,
        Err(e) if e.status == Some(404) => {
            return fail(
                backup,
                ctx,
                namespace,
                status,
                format!("instance {instance} does not know the backup (its manager restarted)"),
            )
            .await;
        }
        Err(e) => return Err(Error::Instance(e.to_string())),
    };
    match state.phase.as_str() {
        "completed" => {
            status.phase = Some(BackupPhase::Completed);
            status.backup_id = state.backup_id.clone();
            status.begin_lsn = state.begin_lsn.clone();
            status.end_lsn = state.end_lsn.clone();
            status.stopped_at = Some(ctx.now().to_rfc3339());
            status.error = None;
            patch_backup_status(ctx, namespace, &backup.name_any(), &status).await?;
            ctx.event(
                backup,
                EventType::Normal,
                "Completed",
                &format!(
                    "backup {} is in the repository",
                    state.backup_id.as_deref().unwrap_or("?")
                ),
            )
            .await?;
            let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), namespace);
            let retention = match clusters.get_opt(cluster_name).await? {
                Some(cluster) => match after_success(&cluster, ctx, namespace).await {
                    Ok(summary) => summary,
                    Err(e) => {
                        let why = format!("retention after the backup failed: {e}");
                        ctx.event(backup, EventType::Warning, "RetentionFailed", &why)
                            .await?;
                        Some(why)
                    }
                },
                None => None,
            };
            if retention.is_some() {
                status.retention = retention;
                patch_backup_status(ctx, namespace, &backup.name_any(), &status).await?;
            }
            Ok(Action::await_change())
        }
        "failed" => {
            let why = state.error.unwrap_or_else(|| "the backup failed".into());
            fail(backup, ctx, namespace, status, why).await
        }
        _ => Ok(Action::requeue(POLL)),
    }
}

/// After a successful backup: retention (when the cluster has a policy), then the Cluster's
/// backup status. Returns the retention summary.
async fn after_success(
    cluster: &Cluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<String>, Error> {
    let Some(repo) = &cluster.spec.repository else {
        return Ok(None);
    };
    let vars = super::cluster::secret_vars(ctx, namespace, repo).await?;
    let engine = repository::open(repo, vars).map_err(Error::Repository)?;
    let summary = match &cluster.spec.retention {
        Some(retention) => Some(apply_retention(&engine, retention, ctx.now()).await?),
        None => None,
    };
    let list = engine
        .backups()
        .await
        .map_err(|e| Error::Repository(e.to_string()))?;
    let mut status: ClusterStatus = cluster.status.clone().unwrap_or_default();
    status.last_successful_backup = list
        .backups
        .iter()
        .map(|b| b.completed_at)
        .max()
        .map(|t| t.to_rfc3339());
    status.first_recoverability_point = list
        .backups
        .iter()
        .map(|b| b.stopped_at)
        .min()
        .map(|t| t.to_rfc3339());
    set_condition(
        &mut status.conditions,
        condition(
            "LastBackupSucceeded",
            true,
            "BackupCompleted",
            "the last backup completed",
            ctx.now(),
        ),
    );
    apply_cluster_backup_status(ctx, namespace, &cluster.name_any(), &status).await?;
    Ok(summary)
}

async fn apply_retention(
    engine: &walarch_core::Engine,
    retention: &RetentionSpec,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, Error> {
    let window = match &retention.window {
        Some(text) => Some(text.parse().map_err(
            |e: walarch_core::retention::RetentionError| Error::Repository(e.to_string()),
        )?),
        None => None,
    };
    let policy = RetentionPolicy::new(retention.keep, window)
        .map_err(|e| Error::Repository(e.to_string()))?;
    let plan = engine
        .retention_plan(&policy, now)
        .await
        .map_err(|e| Error::Repository(e.to_string()))?;
    let report = engine
        .apply_retention(
            &plan,
            &walarch_core::backup::Progress::default(),
            &walarch_core::CancellationToken::new(),
        )
        .await
        .map_err(|e| Error::Repository(e.to_string()))?;
    Ok(format!(
        "retention deleted {} backups and {} WAL files",
        report.backups_deleted.len(),
        report.wal_files_deleted
    ))
}

async fn fail(
    backup: &Backup,
    ctx: &Context,
    namespace: &str,
    mut status: BackupStatus,
    why: String,
) -> Result<Action, Error> {
    status.phase = Some(BackupPhase::Failed);
    status.stopped_at = Some(ctx.now().to_rfc3339());
    status.error = Some(why.clone());
    patch_backup_status(ctx, namespace, &backup.name_any(), &status).await?;
    ctx.event(backup, EventType::Warning, "Failed", &why)
        .await?;
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(cluster) = clusters.get_opt(&backup.spec.cluster.name).await? {
        let mut cluster_status = cluster.status.clone().unwrap_or_default();
        set_condition(
            &mut cluster_status.conditions,
            condition(
                "LastBackupSucceeded",
                false,
                "BackupFailed",
                &why,
                ctx.now(),
            ),
        );
        apply_cluster_backup_status(ctx, namespace, &cluster.name_any(), &cluster_status).await?;
    }
    Ok(Action::await_change())
}

/// Applies a Backup's status (server-side apply: fields left out are removed).
async fn patch_backup_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &BackupStatus,
) -> Result<(), Error> {
    apply_status::<Backup>(ctx, namespace, name, super::cluster::MANAGER, status).await
}

/// The field manager of the Backup reconciler's part of a Cluster's status.
pub const CLUSTER_STATUS_MANAGER: &str = "walarch-operator-backups";

/// Applies the backup fields of a Cluster's status under their own field manager: the
/// Cluster reconciler's fields and conditions are not touched.
async fn apply_cluster_backup_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &ClusterStatus,
) -> Result<(), Error> {
    let conditions: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| c.type_ == "LastBackupSucceeded")
        .collect();
    let status = json!({
        "lastSuccessfulBackup": status.last_successful_backup,
        "firstRecoverabilityPoint": status.first_recoverability_point,
        "conditions": conditions,
    });
    apply_status::<Cluster>(ctx, namespace, name, CLUSTER_STATUS_MANAGER, status).await
}

impl Backup {
    /// A Backup of `cluster` named `name`, for schedules and tests.
    pub fn for_cluster(name: &str, cluster: &str) -> Backup {
        let mut backup = Backup::new(
            name,
            super::resources::BackupSpec {
                cluster: super::resources::ClusterReference {
                    name: cluster.into(),
                },
                method: Default::default(),
                target: Default::default(),
            },
        );
        backup.meta_mut().labels = Some(super::objects::cluster_labels(cluster));
        backup
    }
}
