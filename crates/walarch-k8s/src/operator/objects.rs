//! The objects a Cluster owns, as pure functions of its spec: the instances' StatefulSet (pods
//! and volume claims), the three Services, the PodDisruptionBudget, and the ServiceAccount,
//! Role and RoleBinding the instance managers use for their Leases.
//!
//! Every object carries the cluster label and a controller owner reference to the Cluster,
//! so Kubernetes' garbage collector removes them with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Secret, SecretEnvSource,
    SecretKeySelector, Service, ServiceAccount, ServicePort, ServiceSpec, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::resources::{AntiAffinity, Cluster, RecoverySpec, RepositorySpec, StorageSpec};

/// Every object of a cluster (and its pods, and its Leases) carries `walarch.io/cluster`.
pub const CLUSTER_LABEL: &str = "walarch.io/cluster";
/// `primary` or `replica` on a pod; the Services select on it.
pub const ROLE_LABEL: &str = "walarch.io/role";
/// PostgreSQL's port in every pod.
pub const PG_PORT: i32 = 5432;
/// The instance manager's HTTP port.
pub const HTTP_PORT: i32 = 8008;
const DATA_MOUNT: &str = "/var/lib/postgresql/data";
const WAL_MOUNT: &str = "/var/lib/postgresql/wal";
/// The `postgres` user of the usual PostgreSQL images.
const POSTGRES_UID: i64 = 999;

/// The Secret holding the password of `postgres`: instances authenticate to each other with
/// it (replication, rewind), and clients may too. Created once, never overwritten.
pub fn superuser_secret_name(cluster: &str) -> String {
    format!("{cluster}-superuser")
}

/// The superuser Secret of `cluster` with `password` (created only when absent).
pub fn superuser_secret(cluster: &Cluster, password: &str) -> Secret {
    Secret {
        metadata: meta(cluster, &superuser_secret_name(&cluster.name_any())),
        type_: Some("kubernetes.io/basic-auth".into()),
        string_data: Some(BTreeMap::from([
            ("username".to_owned(), "postgres".to_owned()),
            ("password".to_owned(), password.to_owned()),
        ])),
        ..Default::default()
    }
}

/// A new random password: 24 bytes, hex.
pub fn new_password() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything the cluster owns, in the order the reconciler applies it.
#[derive(Debug, Clone)]
pub struct Owned {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub services: [Service; 3],
    pub disruption_budget: PodDisruptionBudget,
    pub stateful_set: StatefulSet,
}

/// The objects `cluster` should have.
pub fn owned(cluster: &Cluster) -> Owned {
    let name = cluster.name_any();
    Owned {
        service_account: ServiceAccount {
            metadata: meta(cluster, &name),
            ..Default::default()
        },
        role: instance_role(cluster),
        role_binding: RoleBinding {
            metadata: meta(cluster, &name),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                namespace: cluster.namespace(),
                ..Default::default()
            }]),
        },
        services: [
            service(cluster, "rw", Some("primary")),
            service(cluster, "ro", Some("replica")),
            service(cluster, "r", None),
        ],
        disruption_budget: PodDisruptionBudget {
            metadata: meta(cluster, &name),
            spec: Some(PodDisruptionBudgetSpec {
                // One instance at a time: a drain never takes the primary and its only
                // synchronous replica together.
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(cluster_selector(&name)),
                ..Default::default()
            }),
            ..Default::default()
        },
        stateful_set: stateful_set(cluster),
    }
}

/// The labels every object of the cluster carries.
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CLUSTER_LABEL.to_owned(), cluster.to_owned())])
}

fn cluster_selector(cluster: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(cluster_labels(cluster)),
        ..Default::default()
    }
}

fn meta(cluster: &Cluster, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: cluster.namespace(),
        labels: Some(cluster_labels(&cluster.name_any())),
        owner_references: cluster.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

/// What an instance manager may do: its Leases (the leader's and its member record), nothing
/// else.
fn instance_role(cluster: &Cluster) -> Role {
    Role {
        metadata: meta(cluster, &cluster.name_any()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            verbs: ["get", "list", "watch", "create", "update", "patch"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }]),
    }
}

fn service(cluster: &Cluster, suffix: &str, role: Option<&str>) -> Service {
    let name = cluster.name_any();
    let mut selector = cluster_labels(&name);
    if let Some(role) = role {
        selector.insert(ROLE_LABEL.into(), role.into());
    }
    Service {
        metadata: meta(cluster, &format!("{name}-{suffix}")),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: PG_PORT,
                target_port: Some(IntOrString::Int(PG_PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn stateful_set(cluster: &Cluster) -> StatefulSet {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let mut claims = vec![claim(&name, "data", &spec.storage)];
    let mut mounts = vec![mount("data", DATA_MOUNT)];
    if let Some(wal) = &spec.wal_storage {
        claims.push(claim(&name, "wal", wal));
        mounts.push(mount("wal", WAL_MOUNT));
    }
    let mut labels = cluster_labels(&name);
    labels.insert("app.kubernetes.io/name".into(), "walarch".into());
    labels.insert("app.kubernetes.io/instance".into(), name.clone());
    let container = Container {
        name: "postgres".into(),
        image: Some(spec.image.clone()),
        command: Some(vec!["walarch-k8s".into()]),
        args: Some(instance_args(cluster)),
        env: Some(instance_env(cluster)),
        env_from: Some(credential_sources(cluster)).filter(|sources| !sources.is_empty()),
        ports: Some(vec![port("postgres", PG_PORT), port("manager", HTTP_PORT)]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 30)),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(cluster, &name),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.instances as i32),
            service_name: Some(format!("{name}-r")),
            // Every instance starts at once: replicas must not wait for the primary's
            // readiness (the instance managers order the cluster, not the StatefulSet).
            pod_management_policy: Some("Parallel".into()),
            selector: cluster_selector(&name),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    containers: vec![container],
                    affinity: affinity(cluster),
                    node_selector: (!spec.affinity.node_selector.is_empty())
                        .then(|| spec.affinity.node_selector.clone()),
                    tolerations: (!spec.affinity.tolerations.is_empty())
                        .then(|| spec.affinity.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(POSTGRES_UID),
                        run_as_group: Some(POSTGRES_UID),
                        fs_group: Some(POSTGRES_UID),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    // A primary's clean shutdown lets its replicas receive every byte.
                    termination_grace_period_seconds: Some(60),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(claims),
            // The data outlives the Cluster: deleting it keeps the volume claims (labelled
            // walarch.io/cluster) for whoever deletes them on purpose.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `walarch-k8s instance`'s arguments for the cluster's pods.
fn instance_args(cluster: &Cluster) -> Vec<String> {
    let spec = &cluster.spec;
    let mut args: Vec<String> = [
        "instance",
        "--name=$(POD_NAME)",
        "--pgdata=/var/lib/postgresql/data/pgdata",
        "--coordination=kubernetes",
        "--pg-host=$(POD_IP)",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--cluster={}", cluster.name_any()));
    args.push(format!("--http=0.0.0.0:{HTTP_PORT}"));
    args.push(format!("--pg-port={PG_PORT}"));
    args.push(format!(
        "--sync-replicas={}",
        spec.synchronous_replicas.unwrap_or(0)
    ));
    args.push(format!("--lease-ttl={}s", spec.lease.ttl_seconds));
    args.push(format!(
        "--renew-deadline={}s",
        spec.lease.renew_deadline_seconds
    ));
    args.push(format!("--failover-delay={}s", spec.failover_delay_seconds));
    args.push(format!(
        "--pg-bin=/usr/lib/postgresql/{}/bin",
        spec.postgres_major
    ));
    args.push("--set=listen_addresses=*".into());
    // Peers replicate and rewind over the pod network; clients use passwords.
    args.push("--hba=host replication all all scram-sha-256".into());
    args.push("--hba=host all all all scram-sha-256".into());
    if spec.wal_storage.is_some() {
        args.push(format!("--waldir={WAL_MOUNT}/pg_wal"));
    }
    if spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.initdb.as_ref())
        .is_some_and(|initdb| !initdb.data_checksums)
    {
        args.push("--no-data-checksums".into());
    }
    if let Some(recovery) = spec.recovery() {
        args.extend(recovery_args(recovery));
    }
    args
}

/// The instance manager's flags for a recovery bootstrap.
pub fn recovery_args(recovery: &RecoverySpec) -> Vec<String> {
    let mut args = vec![format!("--recover-from={}", recovery.source.url)];
    if let Some(id) = &recovery.backup_id {
        args.push(format!("--recovery-backup={id}"));
    }
    if let Some(target) = &recovery.recovery_target {
        let flags = [
            ("--recovery-target-time", &target.target_time),
            ("--recovery-target-lsn", &target.target_lsn),
            ("--recovery-target-xid", &target.target_xid),
            ("--recovery-target-name", &target.target_name),
            ("--recovery-target-timeline", &target.target_tli),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                args.push(format!("{flag}={value}"));
            }
        }
        if target.target_immediate == Some(true) {
            args.push("--recovery-target=immediate".into());
        }
        if target.exclusive == Some(true) {
            args.push("--recovery-target-inclusive=false".into());
        }
    }
    args
}

/// The credentials Secrets the instances read: the recovery source's, then the cluster's
/// repository's (a variable in both takes the repository's value).
fn credential_sources(cluster: &Cluster) -> Vec<EnvFromSource> {
    let recovery_source = cluster.spec.recovery().map(|r| &r.source);
    [recovery_source, cluster.spec.repository.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|repo| repo.credentials.as_ref())
        .map(|secret| EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect()
}

fn instance_env(cluster: &Cluster) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_IP", "status.podIP"),
        EnvVar {
            name: "PGPASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: superuser_secret_name(&cluster.name_any()),
                    key: "password".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    // Store settings (endpoint, region) come from the repository archived into, or, for a
    // recovery cluster without one, from its source: one store's settings per pod.
    let recovery_source = cluster.spec.recovery().map(|r| &r.source);
    if let Some(repo) = cluster.spec.repository.as_ref().or(recovery_source) {
        env.extend(repository_env(repo));
    }
    if cluster.spec.repository.is_none() {
        env.retain(|e| e.name != "WALARCH_REPO");
    }
    env
}

/// The `WALARCH_*` variables that point `walarch` (archive_command, restore_command, backups)
/// at `repo`.
pub fn repository_env(repo: &RepositorySpec) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    let mut env = vec![
        value("WALARCH_REPO", repo.url.clone()),
        value("WALARCH_COMPRESSION", repo.compression.as_str().into()),
    ];
    if let Some(parallelism) = repo.parallelism {
        env.push(value("WALARCH_PUSH_AHEAD", parallelism.to_string()));
    }
    if let Some(endpoint) = &repo.s3_endpoint {
        env.push(value("WALARCH_S3_ENDPOINT", endpoint.clone()));
    }
    if let Some(region) = &repo.s3_region {
        env.push(value("WALARCH_S3_REGION", region.clone()));
    }
    env
}

fn affinity(cluster: &Cluster) -> Option<Affinity> {
    let spread = &cluster.spec.affinity;
    let term = PodAffinityTerm {
        label_selector: Some(cluster_selector(&cluster.name_any())),
        topology_key: spread.topology_key.clone(),
        ..Default::default()
    };
    let anti = match spread.pod_anti_affinity_type {
        AntiAffinity::None => return None,
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        },
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        },
    };
    Some(Affinity {
        pod_anti_affinity: Some(anti),
        ..Default::default()
    })
}

fn claim(cluster: &str, name: &str, storage: &StorageSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(cluster_labels(cluster)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        ..Default::default()
    }
}

fn probe(path: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(HTTP_PORT),
            ..Default::default()
        }),
        period_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}
