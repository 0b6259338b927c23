//! The custom resources (`walarch.io/v1alpha1`): `Cluster`, `Backup`, `ScheduledBackup`.
//!
//! Shapes follow CloudNativePG's where they fit (`spec.cluster.name`, `recoveryTarget` with
//! `targetTime`/`targetLSN`/..., `backupOwnerReference`, six-field cron), so users coming from it
//! find their way. Every field carries a structural schema; values from a fixed set are enums,
//! values of a fixed form carry a pattern. What a schema cannot say (a clone archiving into
//! its source's repository) the reconciler refuses as well as a CEL rule where one can say it.

// Each `printcolumn(...)` repeats `type_ = ...`: clippy reads the repeats as duplicated
// attributes, kube-derive as one column each.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "walarch.io";

/// A replicated PostgreSQL cluster with its repository, backups and failover.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "walarch.io",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "wcluster",
    derive = "PartialEq",
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.instances"),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyInstances"
    ),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary"
    ),
    printcolumn(name = "Timeline", type_ = "integer", json_path = ".status.timeline"),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastSuccessfulBackup"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.bootstrap) || !has(self.bootstrap.recovery) || !has(self.repository) || self.bootstrap.recovery.source.url != self.repository.url"
).message("a recovery cluster must not archive into its source's repository: give spec.repository a new URL"))]
#[x_kube(validation = Rule::new(
    "!has(self.synchronousReplicas) || self.synchronousReplicas < self.instances"
).message("synchronousReplicas must be smaller than instances"))]
#[x_kube(validation = Rule::new("self.storage == oldSelf.storage")
    .message("storage cannot change once the cluster exists (the StatefulSet's volume claims are fixed)"))]
#[x_kube(validation = Rule::new(
    "has(self.walStorage) == has(oldSelf.walStorage) && (!has(self.walStorage) || self.walStorage == oldSelf.walStorage)"
).message("walStorage cannot change once the cluster exists"))]
#[x_kube(validation = Rule::new("self.postgresMajor == oldSelf.postgresMajor")
    .message("postgresMajor cannot change: a major upgrade starts a new cluster and a new repository"))]
#[x_kube(validation = Rule::new(
    "has(self.bootstrap) == has(oldSelf.bootstrap) && (!has(self.bootstrap) || self.bootstrap == oldSelf.bootstrap)"
).message("bootstrap cannot change once the cluster exists"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of PostgreSQL instances (one primary, the rest replicas).
    #[schemars(range(min = 1, max = 16))]
    pub instances: u32,
    /// Container image holding PostgreSQL's server binaries, `walarch` and `walarch-k8s`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// PostgreSQL's major version in the image, where its binaries are looked for
    /// (`/usr/lib/postgresql/<major>/bin`).
    #[serde(default = "default_major")]
    #[schemars(range(min = 13, max = 18))]
    pub postgres_major: u32,
    /// The data volume of each instance.
    pub storage: StorageSpec,
    /// A separate volume for `pg_wal`; by default WAL lives on the data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<StorageSpec>,
    /// CPU and memory of the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where instances are scheduled.
    #[serde(default)]
    pub affinity: AffinitySpec,
    /// `ANY n` of the replicas acknowledge each commit before it returns (0: asynchronous).
    /// Commits wait while fewer replicas are connected: no acknowledged commit is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_replicas: Option<u32>,
    /// The leader lease.
    #[serde(default)]
    pub lease: LeaseTimings,
    /// Seconds the replicas wait after the leader lease expired before one takes over.
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub failover_delay_seconds: u32,
    /// The repository WAL is archived into and backups are taken to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,
    /// What is deleted from the repository after each successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// How the first instance gets its data: a new database (default) or a recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,
}

impl ClusterSpec {
    /// The recovery bootstrap, if the cluster starts from a repository.
    pub fn recovery(&self) -> Option<&RecoverySpec> {
        self.bootstrap.as_ref().and_then(|b| b.recovery.as_ref())
    }
}

fn default_major() -> u32 {
    15
}

/// A persistent volume claim template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, a Kubernetes quantity (`10Gi`).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// Storage class; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// Scheduling: spread instances apart, and where they may run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffinitySpec {
    /// Whether instances of the cluster avoid sharing a `topologyKey` domain.
    #[serde(default)]
    pub pod_anti_affinity_type: AntiAffinity,
    /// The domain instances are spread over.
    #[serde(default = "default_topology_key")]
    pub topology_key: String,
    /// Nodes the instances may run on (node labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the instances tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

impl Default for AffinitySpec {
    fn default() -> Self {
        AffinitySpec {
            pod_anti_affinity_type: AntiAffinity::default(),
            topology_key: default_topology_key(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

fn default_topology_key() -> String {
    "kubernetes.io/hostname".into()
}

/// How strictly instances are kept apart.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum AntiAffinity {
    /// Apart when the scheduler can.
    #[default]
    Preferred,
    /// Apart or not scheduled.
    Required,
    /// No rule.
    None,
}

/// The leader lease's timings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.renewDeadlineSeconds < self.ttlSeconds")
    .message("lease.renewDeadlineSeconds must be shorter than lease.ttlSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct LeaseTimings {
    /// How long a lease lives without renewal.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 2, max = 600))]
    pub ttl_seconds: u32,
    /// A leader that could not renew for this long stops accepting writes.
    #[serde(default = "default_renew_deadline")]
    #[schemars(range(min = 1, max = 599))]
    pub renew_deadline_seconds: u32,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            ttl_seconds: default_ttl(),
            renew_deadline_seconds: default_renew_deadline(),
        }
    }
}

fn default_ttl() -> u32 {
    15
}

fn default_renew_deadline() -> u32 {
    10
}

/// A walarch repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or `file:///path`.
    #[schemars(
        regex(pattern = r"^(s3|gs|az)://[^/]+(/.*)?$|^file:///.+$"),
        length(max = 1024)
    )]
    pub url: String,
    /// A Secret whose keys become the instance's environment: the store's usual variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `GOOGLE_SERVICE_ACCOUNT`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretReference>,
    /// How WAL and backups are compressed.
    #[serde(default)]
    pub compression: CompressionName,
    /// Files stored at once (archiving ahead, backup parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub parallelism: Option<u32>,
    /// An S3-compatible endpoint (MinIO, Ceph); AWS's by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// The S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
}

/// A Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretReference {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// walarch's codecs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    /// zstd (default).
    #[default]
    Zstd,
    /// gzip.
    Gzip,
    /// No compression.
    None,
}

impl CompressionName {
    /// The name `walarch` takes (`--compression`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionName::Zstd => "zstd",
            CompressionName::Gzip => "gzip",
            CompressionName::None => "none",
        }
    }
}

/// What retention keeps; at least one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.keep) || has(self.window)")
    .message("retention needs keep, window or both"))]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep the N newest complete backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep: Option<u32>,
    /// Keep what recovery to any point of the last window needs: `30d`, `12h`, `90m`, `45s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+[dhms]$"))]
    pub window: Option<String>,
}

/// How the cluster's first instance gets its data: exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.initdb) != has(self.recovery)")
    .message("bootstrap takes exactly one of initdb and recovery"))]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// A new, empty database cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitdbSpec>,
    /// A point-in-time recovery from a repository (a clone when `spec.repository` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// `initdb`'s options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct InitdbSpec {
    /// Write checksums into data pages (`initdb --data-checksums`).
    #[serde(default = "yes")]
    pub data_checksums: bool,
}

fn yes() -> bool {
    true
}

/// Recovery from a repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// The repository recovered from; it is only read.
    pub source: RepositorySpec,
    /// The backup to start from (an id); by default the one the target calls for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Za-z_-]+$"))]
    pub backup_id: Option<String>,
    /// Where recovery stops; the end of the archive when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_target: Option<RecoveryTargetSpec>,
}

/// A recovery target: at most one of time, LSN, xid, name and immediate; none means the end of
/// the archive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "(has(self.targetTime) ? 1 : 0) + (has(self.targetLSN) ? 1 : 0) + (has(self.targetXID) ? 1 : 0) + (has(self.targetName) ? 1 : 0) + ((has(self.targetImmediate) && self.targetImmediate) ? 1 : 0) <= 1"
).message("give at most one of targetTime, targetLSN, targetXID, targetName, targetImmediate"))]
pub struct RecoveryTargetSpec {
    /// Stop before the first transaction that committed after this time (RFC 3339, with a
    /// zone: `2026-11-21T11:32:00Z`).
    #[serde(
        rename = "targetTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
    ))]
    pub target_time: Option<String>,
    /// Stop at this WAL position (`0/3000060`).
    #[serde(rename = "targetLSN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub target_lsn: Option<String>,
    /// Stop at this transaction's commit.
    #[serde(rename = "targetXID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    pub target_xid: Option<String>,
    /// Stop at this restore point.
    #[serde(
        rename = "targetName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1, max = 63))]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[serde(
        rename = "targetImmediate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_immediate: Option<bool>,
    /// The timeline to follow: `latest` (default), `current` or a number.
    #[serde(rename = "targetTLI", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(latest|current|[0-9]+)$"))]
    pub target_tli: Option<String>,
    /// Stop just before the target instead of just after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
}

/// What the operator saw of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// `Setting up`, `Healthy`, `Failing over`, `Waiting for instances`,
    /// `Recovery target unreachable`, `Refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the phase is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_reason: Option<String>,
    /// Instances that serve their role.
    #[serde(default)]
    pub ready_instances: u32,
    /// The holder of the leader lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// The instance a switchover or failover is moving the primary to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary: Option<String>,
    /// The primary's timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Each instance as it published itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances_status: Vec<InstanceStatus>,
    /// The earliest point the repository can recover to (its oldest backup's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    /// When the newest successful backup completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// `Ready`, `ContinuousArchiving`, `LastBackupSucceeded`, `RecoveryTargetReachable`: a
    /// map keyed by type, so each reconciler applies its own conditions (server-side apply)
    /// without removing the others'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status answers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One instance, as its member record says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Pod (member) name.
    pub name: String,
    /// `primary`, `replica`, `fenced`, `starting`, `stopped`.
    pub role: String,
    /// Its timeline.
    pub timeline: u32,
    /// Bytes its replay trails the primary's position.
    pub lag_bytes: u64,
}

/// A one-off base backup of a cluster into its repository.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "walarch.io",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    shortname = "wbackup",
    derive = "PartialEq",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Instance", type_ = "string", json_path = ".status.instance"),
    printcolumn(name = "Backup ID", type_ = "string", json_path = ".status.backupId"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The cluster backed up.
    pub cluster: ClusterReference,
    /// How: `walarch`, a base backup streamed into the cluster's repository (the only method).
    #[serde(default)]
    pub method: BackupMethod,
    /// Which instance: a replica when one is ready (default), or the primary.
    #[serde(default)]
    pub target: BackupTarget,
}

/// A Cluster in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ClusterReference {
    /// The Cluster's name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// How a backup is taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum BackupMethod {
    /// A base backup into the repository (`walarch backup`).
    #[default]
    Walarch,
}

/// Where a backup runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackupTarget {
    /// A ready replica, the primary when none is.
    #[default]
    PreferStandby,
    /// The primary.
    Primary,
}

/// A backup's progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// The instance it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The repository's id for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Where its WAL starts and ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_lsn: Option<String>,
    /// Where its WAL ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What retention deleted after it (a summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

/// A backup's phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupPhase {
    /// Waiting for an instance to take it.
    Pending,
    /// Running on `status.instance`.
    Running,
    /// In the repository.
    Completed,
    /// Failed; `status.error` says why.
    Failed,
}

/// Backups of a cluster on a schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "walarch.io",
    version = "v1alpha1",
    kind = "ScheduledBackup",
    namespaced,
    status = "ScheduledBackupStatus",
    shortname = "wsbackup",
    derive = "PartialEq",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupSpec {
    /// Six fields, seconds first, as CloudNativePG: `0 0 2 * * *` is 02:00:00 every day (UTC).
    #[schemars(regex(pattern = r"^\S+( +\S+){5}$"))]
    pub schedule: String,
    /// The cluster backed up.
    pub cluster: ClusterReference,
    /// Create no Backups while true.
    #[serde(default)]
    pub suspend: bool,
    /// Also take one backup as soon as the schedule is created.
    #[serde(default)]
    pub immediate: bool,
    /// Who owns the Backups created: nobody (`none`, default), this schedule (`self`: they
    /// go when it goes) or the cluster (`cluster`).
    #[serde(default)]
    pub backup_owner_reference: OwnerReferencePolicy,
    /// How: see Backup.
    #[serde(default)]
    pub method: BackupMethod,
    /// Which instance: see Backup.
    #[serde(default)]
    pub target: BackupTarget,
}

/// Who owns the Backups a schedule creates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OwnerReferencePolicy {
    /// Nobody: they stay when the schedule or the cluster goes.
    #[default]
    None,
    /// The ScheduledBackup.
    #[serde(rename = "self")]
    SelfReference,
    /// The Cluster.
    Cluster,
}

/// When a schedule last fired.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupStatus {
    /// When the operator last looked at the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<String>,
    /// The scheduled time of the last Backup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// The next scheduled time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
}
