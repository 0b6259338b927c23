//! The operator's reconcilers against recorded API exchanges (tower-test, as kube-rs tests its
//! own controllers): each scenario lists, in order, every request a reconciliation must make
//! and the API server's answer; a request out of order, an extra one or a missing one fails
//! the test. No Kubernetes API server can run on the machines these tests run on; the
//! exchanges follow the Kubernetes API reference (paths, server-side apply, JSON and merge
//! patches, `Status` bodies), written by hand, not captured from a live server.
//!
//! The repositories the operator reads (recovery plans, retention) are real: local walarch
//! repositories written by the engine in a temporary directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use tower_test::mock;
use walarch_core::testing::{SyntheticRecord, segments_with_records, synthetic_backup};
use walarch_core::wal::Lsn;
use walarch_core::{Engine, EngineConfig};
use walarch_k8s::operator::backup::{BackupState, InstanceApi, InstanceError};
use walarch_k8s::operator::resources::{Backup, ScheduledBackup};
use walarch_k8s::operator::{Context, backup, cluster, schedule};

const NS: &str = "db";
const API: &str = "/apis/walarch.io/v1alpha1/namespaces/db";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/db/events";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/db/leases";
const PODS: &str = "/api/v1/namespaces/db/pods";
const CLUSTER_UID: &str = "6a1f1c2e-0000-4000-8000-00000000c1a5";

// The recorded API server ------------------------------------------------------------------

type Check = Box<dyn Fn(&Value) + Send>;
type Answer = Box<dyn Fn(&Value) -> Value + Send>;

/// One expected request and the answer to it.
struct Exchange {
    method: Method,
    /// The path and query must start with this.
    path: String,
    /// The query must contain each of these.
    query: Vec<String>,
    check: Option<Check>,
    status: StatusCode,
    answer: Answer,
}

fn expect(method: Method, path: impl Into<String>) -> Exchange {
    Exchange {
        method,
        path: path.into(),
        query: Vec::new(),
        check: None,
        status: StatusCode::OK,
        answer: Box::new(|body| body.clone()),
    }
}

impl Exchange {
    fn query(mut self, part: &str) -> Self {
        self.query.push(part.to_owned());
        self
    }
    fn check(mut self, check: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }
    fn answer(
        mut self,
        status: StatusCode,
        answer: impl Fn(&Value) -> Value + Send + 'static,
    ) -> Self {
        self.status = status;
        self.answer = Box::new(answer);
        self
    }
    fn answer_json(self, value: Value) -> Self {
        self.answer(StatusCode::OK, move |_| value.clone())
    }
}

/// Plays `script` as the API server; returns the client and a handle whose join fails the
/// test if a request differed or the script was not used up. Every request body is kept.
fn api_server(
    script: Vec<Exchange>,
) -> (kube::Client, tokio::task::JoinHandle<Vec<(String, Value)>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let player = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let mut seen = Vec::new();
        for (i, expected) in script.into_iter().enumerate() {
            let Some((request, respond)) = handle.next_request().await else {
                panic!(
                    "exchange {i}: no request came; expected {} {}",
                    expected.method, expected.path
                );
            };
            let path = request.uri().path_and_query().unwrap().to_string();
            let decoded = urlencoding_decode(&path);
            assert_eq!(request.method(), expected.method, "exchange {i}: {path}");
            assert!(
                decoded.starts_with(&expected.path),
                "exchange {i}: {decoded} is not {} {}",
                expected.method,
                expected.path
            );
            for part in &expected.query {
                assert!(
                    decoded.contains(part.as_str()),
                    "exchange {i}: {decoded} lacks {part}"
                );
            }
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("a JSON body")
            };
            if let Some(check) = &expected.check {
                check(&body);
            }
            let answer = (expected.answer)(&body);
            seen.push((decoded, body));
            respond.send_response(
                Response::builder()
                    .status(expected.status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
        seen
    });
    (kube::Client::new(service, NS), player)
}

fn urlencoding_decode(text: &str) -> String {
    text.replace("%3D", "=")
        .replace("%2F", "/")
        .replace("%2C", ",")
}

/// The operator's context on `client`, at `now`, with `instances` for backups.
fn context(
    client: kube::Client,
    now: DateTime<Utc>,
    instances: Arc<dyn InstanceApi>,
) -> Arc<Context> {
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "walarch-operator".into(),
                instance: None,
            },
        ),
        client,
        clock: Arc::new(move || now),
        instances,
        lease_sightings: Arc::default(),
    })
}

/// Instance managers that must not be called.
struct NoInstances;

impl InstanceApi for NoInstances {
    fn start_backup(
        &self,
        base: String,
        _: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>> {
        panic!("no backup was to be started ({base})")
    }
    fn backup_state(
        &self,
        base: String,
        _: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>> {
        panic!("no backup was to be followed ({base})")
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

async fn finish(
    result: Result<Action, walarch_k8s::operator::Error>,
    player: tokio::task::JoinHandle<Vec<(String, Value)>>,
) -> (Action, Vec<(String, Value)>) {
    let action = result.unwrap_or_else(|e| panic!("reconcile failed: {e:?}"));
    let seen = tokio::time::timeout(Duration::from_secs(5), player)
        .await
        .expect("the script was used up")
        .expect("every exchange matched");
    (action, seen)
}

// Objects ----------------------------------------------------------------------------------

fn cluster_json(spec: Value, finalizers: &[&str], deleting: bool) -> Value {
    let mut meta = json!({
        "name": "orders", "namespace": NS, "uid": CLUSTER_UID, "generation": 1,
        "resourceVersion": "100", "creationTimestamp": "2026-12-01T00:00:00Z",
        "finalizers": finalizers,
    });
    if deleting {
        meta["deletionTimestamp"] = json!("2026-12-01T00:10:00Z");
    }
    json!({"apiVersion": "walarch.io/v1alpha1", "kind": "Cluster", "metadata": meta, "spec": spec})
}

fn three_instances() -> Value {
    json!({
        "instances": 3, "image": "walarch:test", "postgresMajor": 17,
        "storage": {"size": "10Gi"}, "walStorage": {"size": "2Gi", "storageClass": "fast"},
        "synchronousReplicas": 1,
        "repository": {"url": "s3://backups/orders", "credentials": {"name": "s3"},
                       "s3Endpoint": "http://minio:9000"},
        "bootstrap": {"initdb": {}}
    })
}

/// The answer to a status patch: the object with the patched status.
fn with_status(object: Value) -> impl Fn(&Value) -> Value + Send + 'static {
    move |patch| {
        let mut object = object.clone();
        object["status"] = patch["status"].clone();
        object
    }
}

fn member(name: &str, role: &str, timeline: u32, lsn: u64, renewed: &str) -> Value {
    let state = json!({
        "name": name, "role": role, "timeline": timeline, "received_lsn": lsn,
        "replayed_lsn": lsn, "position_final": true, "host": format!("10.0.0.{}", &name[7..]),
        "pg_port": 5432, "http": "0.0.0.0:8008", "archive_backlog": 0
    });
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("orders-member-{name}"), "namespace": NS,
                     "resourceVersion": "7", "labels": {"walarch.io/cluster": "orders"},
                     "annotations": {"walarch.io/state": state.to_string()}},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 15, "renewTime": renewed}
    })
}

fn leader(holder: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "orders", "namespace": NS, "resourceVersion": "9",
                     "labels": {"walarch.io/cluster": "orders"},
                     "annotations": {"walarch.io/initialized": "7300000000000000001"}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed}
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "50"}, "items": items})
}

fn pod(name: &str, role: Option<&str>) -> Value {
    let mut labels = json!({"walarch.io/cluster": "orders"});
    if let Some(role) = role {
        labels["walarch.io/role"] = json!(role);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "labels": labels}})
}

/// The exchanges of the server-side applies of a cluster's objects, in the reconciler's
/// order, each body checked by `checks` (by kind/name).
fn applies(checks: &Arc<Mutex<BTreeMap<String, Value>>>, new: bool) -> Vec<Exchange> {
    // The superuser password: created once, a later create finds it (409) and leaves it.
    let secret = expect(Method::POST, "/api/v1/namespaces/db/secrets").check(|secret| {
        assert_eq!(secret["metadata"]["name"], "orders-superuser");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], CLUSTER_UID);
        let password = secret["stringData"]["password"].as_str().unwrap();
        assert_eq!(password.len(), 48);
        assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
    });
    let secret = if new {
        secret.answer(StatusCode::CREATED, |s| s.clone())
    } else {
        secret.answer(StatusCode::CONFLICT, |_| {
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "secrets \"orders-superuser\" already exists",
                   "reason": "AlreadyExists", "code": 409})
        })
    };
    let objects = [
        (
            "/api/v1/namespaces/db/serviceaccounts/orders",
            "ServiceAccount",
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/db/roles/orders",
            "Role",
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/db/rolebindings/orders",
            "RoleBinding",
        ),
        ("/api/v1/namespaces/db/services/orders-rw", "Service"),
        ("/api/v1/namespaces/db/services/orders-ro", "Service"),
        ("/api/v1/namespaces/db/services/orders-r", "Service"),
        (
            "/apis/policy/v1/namespaces/db/poddisruptionbudgets/orders",
            "PodDisruptionBudget",
        ),
        (
            "/apis/apps/v1/namespaces/db/statefulsets/orders",
            "StatefulSet",
        ),
    ];
    let applied = objects.into_iter().map(|(path, kind)| {
        let keep = checks.clone();
        let name = path.rsplit('/').next().unwrap().to_owned();
        expect(Method::PATCH, path)
            .query("fieldManager=walarch-operator")
            .query("force=true")
            .check(move |body| {
                assert_eq!(body["kind"], kind, "{name}");
                // Owned by the Cluster, as its controller: garbage-collected with it.
                let owner = &body["metadata"]["ownerReferences"][0];
                assert_eq!(owner["uid"], CLUSTER_UID, "{name}");
                assert_eq!(owner["controller"], true, "{name}");
                assert_eq!(body["metadata"]["labels"]["walarch.io/cluster"], "orders");
                keep.lock()
                    .unwrap()
                    .insert(format!("{kind}/{name}"), body.clone());
            })
    });
    std::iter::once(secret).chain(applied).collect()
}

// Scenarios ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_first_pass_puts_the_finalizer_on() {
    let object = cluster_json(three_instances(), &[], false);
    let answer = {
        let mut o = object.clone();
        o["metadata"]["finalizers"] = json!([cluster::FINALIZER]);
        o
    };
    let (client, player) = api_server(vec![
        expect(Method::PATCH, format!("{API}/clusters/orders"))
            .check(|patch| {
                // A JSON patch that fails if someone else set finalizers meanwhile.
                assert_eq!(patch[0]["op"], "test");
                assert_eq!(patch[1]["op"], "add");
                assert_eq!(patch[1]["value"], json!([cluster::FINALIZER]));
            })
            .answer_json(answer),
    ]);
    let ctx = context(client, at("2026-12-01T00:00:05Z"), Arc::new(NoInstances));
    let result = cluster::reconcile(Arc::new(serde_json::from_value(object).unwrap()), ctx).await;
    let (action, _) = finish(result, player).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_new_cluster_creates_its_objects() {
    let bodies = Arc::new(Mutex::new(BTreeMap::new()));
    let object = cluster_json(three_instances(), &[cluster::FINALIZER], false);
    let mut script = vec![
        expect(Method::GET, LEASES)
            .query("labelSelector=walarch.io/cluster=orders")
            .answer_json(list("LeaseList", vec![])),
        expect(Method::GET, PODS)
            .query("labelSelector=walarch.io/cluster=orders")
            .answer_json(list("PodList", vec![])),
    ];
    script.extend(applies(&bodies, true));
    script.push(
        expect(Method::PATCH, format!("{API}/clusters/orders/status"))
            .query("fieldManager=walarch-operator")
            .check(|patch| {
                let status = &patch["status"];
                assert_eq!(status["phase"], "Setting up");
                assert_eq!(status["readyInstances"], 0);
                assert_eq!(status["observedGeneration"], 1);
                let ready = status["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .expect("a Ready condition");
                assert_eq!(ready["status"], "False");
            })
            .answer(StatusCode::OK, with_status(object.clone())),
    );
    let (client, player) = api_server(script);
    let ctx = context(client, at("2026-12-01T00:00:05Z"), Arc::new(NoInstances));
    let result = cluster::reconcile(Arc::new(serde_json::from_value(object).unwrap()), ctx).await;
    let (action, _) = finish(result, player).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    let bodies = bodies.lock().unwrap();
    // Services: read-write selects the primary, read-only the replicas, -r every instance.
    let selector = |name: &str| bodies[&format!("Service/{name}")]["spec"]["selector"].clone();
    assert_eq!(
        selector("orders-rw"),
        json!({"walarch.io/cluster": "orders", "walarch.io/role": "primary"})
    );
    assert_eq!(
        selector("orders-ro"),
        json!({"walarch.io/cluster": "orders", "walarch.io/role": "replica"})
    );
    assert_eq!(
        selector("orders-r"),
        json!({"walarch.io/cluster": "orders"})
    );
    // The instance managers may use Leases, nothing else.
    let role = &bodies["Role/orders"]["rules"];
    assert_eq!(role.as_array().unwrap().len(), 1);
    assert_eq!(role[0]["resources"], json!(["leases"]));
    assert_eq!(
        bodies["PodDisruptionBudget/orders"]["spec"]["maxUnavailable"],
        1
    );
    // The StatefulSet: three instances, data and WAL volumes, the instance manager's flags.
    let sts = &bodies["StatefulSet/orders"]["spec"];
    assert_eq!(sts["replicas"], 3);
    assert_eq!(sts["podManagementPolicy"], "Parallel");
    let claims: Vec<&str> = sts["volumeClaimTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(claims, ["data", "wal"]);
    assert_eq!(
        sts["volumeClaimTemplates"][1]["spec"]["storageClassName"],
        "fast"
    );
    let pod = &sts["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "orders");
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for wanted in [
        "instance",
        "--cluster=orders",
        "--coordination=kubernetes",
        "--sync-replicas=1",
        "--lease-ttl=15s",
        "--renew-deadline=10s",
        "--pg-bin=/usr/lib/postgresql/17/bin",
        "--waldir=/var/lib/postgresql/wal/pg_wal",
    ] {
        assert!(args.contains(&wanted), "{wanted} missing from {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--recover-from")));
    let env = container["env"].as_array().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(var("WALARCH_REPO"), Some(json!("s3://backups/orders")));
    assert_eq!(var("WALARCH_S3_ENDPOINT"), Some(json!("http://minio:9000")));
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "s3");
    let password = env.iter().find(|e| e["name"] == "PGPASSWORD").unwrap();
    assert_eq!(
        password["valueFrom"]["secretKeyRef"],
        json!({"name": "orders-superuser", "key": "password", "optional": false})
    );
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
}

/// Applies the label patches a pass made to `pods`, as the API server would.
fn relabel(pods: &mut [Value], seen: &[(String, Value)]) {
    for (path, body) in seen {
        let Some(name) = path.strip_prefix(&format!("{PODS}/")) else {
            continue;
        };
        let name = name.split('?').next().unwrap();
        let pod = pods
            .iter_mut()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap();
        for (key, value) in body["metadata"]["labels"].as_object().unwrap() {
            let labels = pod["metadata"]["labels"].as_object_mut().unwrap();
            if value.is_null() {
                labels.remove(key);
            } else {
                labels.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The pods a Service selector picks.
fn selected(pods: &[Value], selector: &Value) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            selector
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| p["metadata"]["labels"].get(k) == Some(v))
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// One pass over a running cluster whose Leases are `leases` and pods `pods`; returns the
/// requests made after the applies and the -rw Service's selector.
async fn pass(
    leases: Vec<Value>,
    pods: &[Value],
    mut after_pods: Vec<Exchange>,
    status_check: impl Fn(&Value) + Send + 'static,
) -> (Vec<(String, Value)>, Value) {
    let bodies = Arc::new(Mutex::new(BTreeMap::new()));
    let object = cluster_json(three_instances(), &[cluster::FINALIZER], false);
    // Labels first, then the owned objects.
    let mut script = vec![
        expect(Method::GET, LEASES).answer_json(list("LeaseList", leases)),
        expect(Method::GET, PODS).answer_json(list("PodList", pods.to_vec())),
    ];
    script.append(&mut after_pods);
    script.extend(applies(&bodies, false));
    script.push(
        expect(Method::PATCH, format!("{API}/clusters/orders/status"))
            .check(status_check)
            .answer(StatusCode::OK, with_status(object.clone())),
    );
    let (client, player) = api_server(script);
    let ctx = context(client, at("2026-12-01T00:00:05Z"), Arc::new(NoInstances));
    let result = cluster::reconcile(Arc::new(serde_json::from_value(object).unwrap()), ctx).await;
    let (_, seen) = finish(result, player).await;
    let rw = bodies.lock().unwrap()["Service/orders-rw"]["spec"]["selector"].clone();
    (seen, rw)
}

fn label_patch(pod_name: &str, role: Value) -> Exchange {
    let answer = {
        let mut p = pod(pod_name, None);
        if !role.is_null() {
            p["metadata"]["labels"]["walarch.io/role"] = role.clone();
        }
        p
    };
    expect(Method::PATCH, format!("{PODS}/{pod_name}"))
        .check(move |body| assert_eq!(body["metadata"]["labels"]["walarch.io/role"], role))
        .answer_json(answer)
}

#[tokio::test]
async fn a_leader_change_flips_role_labels_and_the_rw_service_follows() {
    let now = "2026-12-01T00:00:02.000000Z";
    let mut pods = vec![
        pod("orders-0", None),
        pod("orders-1", None),
        pod("orders-2", None),
    ];

    // orders-0 leads: the first pass labels every pod after its published role.
    let (seen, rw) = pass(
        vec![
            leader("orders-0", now),
            member("orders-0", "primary", 1, 5000, now),
            member("orders-1", "replica", 1, 4000, now),
            member("orders-2", "replica", 1, 5000, now),
        ],
        &pods,
        vec![
            label_patch("orders-0", json!("primary")),
            expect(Method::POST, EVENTS)
                .check(|e| assert_eq!(e["reason"], "PrimaryLabelled"))
                .answer(StatusCode::CREATED, |e| e.clone()),
            label_patch("orders-1", json!("replica")),
            label_patch("orders-2", json!("replica")),
        ],
        |patch| {
            let s = &patch["status"];
            assert_eq!(s["currentPrimary"], "orders-0");
            assert_eq!(s["phase"], "Healthy");
            assert_eq!(s["readyInstances"], 3);
            assert_eq!(s["timeline"], 1);
            let lag: Vec<u64> = s["instancesStatus"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["lagBytes"].as_u64().unwrap())
                .collect();
            assert_eq!(lag, [0, 1000, 0]);
        },
    )
    .await;
    relabel(&mut pods, &seen);
    assert_eq!(selected(&pods, &rw), ["orders-0"]);

    // A second pass with nothing changed changes nothing.
    let (_, _) = pass(
        vec![
            leader("orders-0", now),
            member("orders-0", "primary", 1, 5000, now),
            member("orders-1", "replica", 1, 5000, now),
            member("orders-2", "replica", 1, 5000, now),
        ],
        &pods,
        vec![],
        |patch| assert_eq!(patch["status"]["currentPrimary"], "orders-0"),
    )
    .await;

    // orders-0 is gone (its member record expired) and orders-2 won the failover on
    // timeline 2: the labels flip, -rw now selects orders-2 alone.
    let (seen, rw) = pass(
        vec![
            leader("orders-2", now),
            member(
                "orders-0",
                "primary",
                1,
                5000,
                "2026-12-01T00:00:00.000000Z",
            ),
            member("orders-1", "replica", 2, 5200, now),
            member("orders-2", "primary", 2, 5200, now),
        ],
        &pods,
        vec![
            label_patch("orders-0", Value::Null),
            label_patch("orders-2", json!("primary")),
            expect(Method::POST, EVENTS)
                .check(|e| {
                    assert_eq!(e["reason"], "PrimaryLabelled");
                    assert!(e["note"].as_str().unwrap().starts_with("orders-2 leads"));
                })
                .answer(StatusCode::CREATED, |e| e.clone()),
        ],
        |patch| {
            let s = &patch["status"];
            assert_eq!(s["currentPrimary"], "orders-2");
            assert_eq!(s["timeline"], 2);
            assert_eq!(s["readyInstances"], 2);
            assert_eq!(s["phase"], "Waiting for instances");
        },
    )
    .await;
    relabel(&mut pods, &seen);
    assert_eq!(selected(&pods, &rw), ["orders-2"]);
    let ro = json!({"walarch.io/cluster": "orders", "walarch.io/role": "replica"});
    assert_eq!(selected(&pods, &ro), ["orders-1"]);
}

#[tokio::test]
async fn a_lease_holder_that_does_not_serve_as_primary_gets_no_primary_label() {
    // orders-1 took the lease but is still promoting (published: starting): nobody is
    // labelled primary until it serves, so -rw selects nothing rather than a replica.
    let now = "2026-12-01T00:00:02.000000Z";
    let pods = vec![
        pod("orders-0", Some("primary")),
        pod("orders-1", Some("replica")),
    ];
    let (seen, _) = pass(
        vec![
            leader("orders-1", now),
            member("orders-0", "fenced", 1, 5000, now),
            member("orders-1", "starting", 1, 5000, now),
        ],
        &pods,
        vec![
            label_patch("orders-0", Value::Null),
            label_patch("orders-1", Value::Null),
        ],
        |patch| assert_eq!(patch["status"]["phase"], "Failing over"),
    )
    .await;
    assert_eq!(seen.len(), 1 + 8 + 2 + 2 + 1);
}

#[tokio::test]
async fn deleting_a_cluster_runs_its_finalizer() {
    let object = cluster_json(three_instances(), &[cluster::FINALIZER], true);
    let statefulset = "/apis/apps/v1/namespaces/db/statefulsets/orders";
    let deleted =
        || json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});

    // The pods still run: the StatefulSet is deleted, the Leases are not (a running manager
    // would write its Lease again), and the finalizer stays.
    let (client, player) = api_server(vec![
        expect(Method::DELETE, statefulset).answer_json(deleted()),
        expect(Method::GET, PODS)
            .query("labelSelector=walarch.io/cluster=orders")
            .answer_json(list("PodList", vec![pod("orders-0", Some("primary"))])),
    ]);
    let ctx = context(client, at("2026-12-01T00:10:01Z"), Arc::new(NoInstances));
    let result = cluster::reconcile(
        Arc::new(serde_json::from_value(object.clone()).unwrap()),
        ctx,
    )
    .await;
    let error = result.expect_err("a pass that must wait fails, keeping the finalizer");
    assert!(format!("{error:?}").contains("still run"), "{error:?}");
    tokio::time::timeout(Duration::from_secs(5), player)
        .await
        .unwrap()
        .unwrap();

    // The pods are gone (the StatefulSet too): the Leases go, then the finalizer.
    let (client, player) = api_server(vec![
        expect(Method::DELETE, statefulset).answer(StatusCode::NOT_FOUND, |_| {
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "reason": "NotFound", "code": 404})
        }),
        expect(Method::GET, PODS).answer_json(list("PodList", vec![])),
        // The instance managers' Leases are not owned by the Cluster: deleted here.
        expect(Method::DELETE, LEASES)
            .query("labelSelector=walarch.io/cluster=orders")
            .answer_json(list("LeaseList", vec![])),
        expect(Method::POST, EVENTS)
            .check(|e| assert_eq!(e["reason"], "LeasesDeleted"))
            .answer(StatusCode::CREATED, |e| e.clone()),
        expect(Method::PATCH, format!("{API}/clusters/orders"))
            .check(|patch| {
                assert_eq!(patch[0], json!({"op": "test", "path": "/metadata/finalizers/0", "value": cluster::FINALIZER}));
                assert_eq!(patch[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
            })
            .answer_json({
                let mut o = object.clone();
                o["metadata"]["finalizers"] = json!([]);
                o
            }),
    ]);
    let ctx = context(client, at("2026-12-01T00:10:31Z"), Arc::new(NoInstances));
    let result = cluster::reconcile(Arc::new(serde_json::from_value(object).unwrap()), ctx).await;
    let (action, _) = finish(result, player).await;
    assert_eq!(action, Action::await_change());
}

/// A local repository holding one backup of system 7000000000000000001 (taken 11:00) and
/// WAL with commits at 11:10, 11:20 and 11:30 on 2026-11-21.
async fn source_repository(dir: &std::path::Path) -> String {
    let repo = dir.join("source");
    let engine = Engine::open_for_write(EngineConfig::new(
        walarch_core::store::RepoLocation::Local(repo.clone()),
    ))
    .unwrap();
    let t = |m: u32| Utc.with_ymd_and_hms(2026, 11, 21, 11, m, 0).unwrap();
    let records = vec![
        SyntheticRecord::filler(200),
        SyntheticRecord::commit(700, t(10)),
        SyntheticRecord::commit(701, t(20)),
        SyntheticRecord::commit(702, t(30)),
    ];
    for (i, segment) in segments_with_records(1, &records).into_iter().enumerate() {
        let name = format!("0000000100000000{:08X}", 1 + i);
        let file = dir.join(&name);
        std::fs::write(&file, segment).unwrap();
        engine.push(&file, None).await.unwrap();
    }
    synthetic_backup(
        engine.repository().unwrap(),
        &"20261121T110000Z".parse().unwrap(),
        Lsn::new((1 << 20) + 0x28),
        Lsn::new((1 << 20) + 0x100),
        &[],
        &[("PG_VERSION", b"15\n")],
    )
    .await;
    format!("file://{}", repo.display())
}

fn recovery_spec(source: &str, target: Value, archive_into: &str) -> Value {
    json!({
        "instances": 1, "image": "walarch:test", "storage": {"size": "1Gi"},
        "repository": {"url": archive_into},
        "bootstrap": {"recovery": {"source": {"url": source}, "recoveryTarget": target}}
    })
}

#[tokio::test]
async fn a_recovery_target_out_of_reach_is_a_condition_and_creates_no_pod() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_repository(dir.path()).await;
    let clone = format!("file://{}", dir.path().join("clone").display());
    // The archive's last commit is at 11:30: nothing shows that 11:45 was ever reached.
    let spec = recovery_spec(
        &source,
        json!({"targetTime": "2026-11-21T11:45:00Z"}),
        &clone,
    );
    let object = cluster_json(spec, &[cluster::FINALIZER], false);
    let (client, player) = api_server(vec![
        expect(Method::POST, EVENTS)
            .check(|e| {
                assert_eq!(e["type"], "Warning");
                assert_eq!(e["reason"], "RecoveryTargetUnreachable");
            })
            .answer(StatusCode::CREATED, |e| e.clone()),
        expect(Method::PATCH, format!("{API}/clusters/orders/status"))
            .check(|patch| {
                let s = &patch["status"];
                assert_eq!(s["phase"], "Recovery target unreachable");
                let condition = &s["conditions"][0];
                assert_eq!(condition["type"], "RecoveryTargetReachable");
                assert_eq!(condition["status"], "False");
                let message = condition["message"].as_str().unwrap();
                // The missing piece is named: WAL past the target.
                assert!(message.contains("11:45"), "{message}");
                eprintln!("condition message: {message}");
            })
            .answer(StatusCode::OK, with_status(object.clone())),
    ]);
    let ctx = context(client, at("2026-12-01T00:00:05Z"), Arc::new(NoInstances));
    let result = cluster::reconcile(Arc::new(serde_json::from_value(object).unwrap()), ctx).await;
    let (action, _) = finish(result, player).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    // Nothing was written to the clone's repository either.
    assert!(!dir.path().join("clone").exists());
}

#[tokio::test]
async fn a_reachable_recovery_target_creates_the_cluster_with_recovery_flags() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_repository(dir.path()).await;
    let clone = format!("file://{}", dir.path().join("clone").display());
    let spec = recovery_spec(
        &source,
        json!({"targetTime": "2026-11-21T11:25:00Z"}),
        &clone,
    );
    let object = cluster_json(spec, &[cluster::FINALIZER], false);
    let bodies = Arc::new(Mutex::new(BTreeMap::new()));
    let mut script = vec![
        expect(Method::POST, EVENTS)
            .check(|e| assert_eq!(e["reason"], "RecoveryPlanned"))
            .answer(StatusCode::CREATED, |e| e.clone()),
    ];
    script.push(expect(Method::GET, LEASES).answer_json(list("LeaseList", vec![])));
    script.push(expect(Method::GET, PODS).answer_json(list("PodList", vec![])));
    script.extend(applies(&bodies, true));
    script.push(
        expect(Method::PATCH, format!("{API}/clusters/orders/status"))
            .check(|patch| {
                let reachable = patch["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["type"] == "RecoveryTargetReachable")
                    .unwrap()
                    .clone();
                assert_eq!(reachable["status"], "True");
                assert!(
                    reachable["message"]
                        .as_str()
                        .unwrap()
                        .contains("20261121T110000Z")
                );
            })
            .answer(StatusCode::OK, with_status(object.clone())),
    );
    let (client, player) = api_server(script);
    let ctx = context(client, at("2026-12-01T00:00:05Z"), Arc::new(NoInstances));
    let result = cluster::reconcile(Arc::new(serde_json::from_value(object).unwrap()), ctx).await;
    finish(result, player).await;
    let bodies = bodies.lock().unwrap();
    let args =
        bodies["StatefulSet/orders"]["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    let args: Vec<String> = serde_json::from_value(args).unwrap();
    assert!(
        args.contains(&format!("--recover-from={source}")),
        "{args:?}"
    );
    assert!(args.contains(&"--recovery-target-time=2026-11-21T11:25:00Z".to_owned()));
}

#[tokio::test]
async fn a_recovery_into_its_source_repository_is_refused() {
    for (source, archive_into) in [
        ("s3://backups/orders", "s3://backups/orders"),
        // One inside the other shares objects just as well.
        ("s3://backups/orders", "s3://backups/orders/clone"),
        ("s3://backups/orders/clone", "s3://backups/orders/"),
    ] {
        let spec = recovery_spec(
            source,
            json!({"targetTime": "2026-11-21T11:25:00Z"}),
            archive_into,
        );
        let object = cluster_json(spec, &[cluster::FINALIZER], false);
        let (client, player) = api_server(vec![
            expect(Method::POST, EVENTS)
                .check(|e| {
                    assert_eq!(e["type"], "Warning");
                    assert_eq!(e["reason"], "Refused");
                    let note = e["note"].as_str().unwrap();
                    assert!(
                        note.contains("must not archive into its source's repository"),
                        "{note}"
                    );
                })
                .answer(StatusCode::CREATED, |e| e.clone()),
            expect(Method::PATCH, format!("{API}/clusters/orders/status"))
                .check(|patch| {
                    assert_eq!(patch["status"]["phase"], "Refused");
                })
                .answer(StatusCode::OK, with_status(object.clone())),
        ]);
        let ctx = context(client, at("2026-12-01T00:00:05Z"), Arc::new(NoInstances));
        let result =
            cluster::reconcile(Arc::new(serde_json::from_value(object).unwrap()), ctx).await;
        let (action, _) = finish(result, player).await;
        assert_eq!(action, Action::await_change(), "{source} -> {archive_into}");
    }
}

// Schedules --------------------------------------------------------------------------------

fn scheduled(spec: Value, last: Option<&str>) -> (Value, Arc<ScheduledBackup>) {
    let mut object = json!({
        "apiVersion": "walarch.io/v1alpha1", "kind": "ScheduledBackup",
        "metadata": {"name": "nightly", "namespace": NS, "uid": "5c4e0000-0000-4000-8000-000000000001",
                     "creationTimestamp": "2026-12-01T01:00:00Z"},
        "spec": spec,
    });
    if let Some(last) = last {
        object["status"] = json!({"lastScheduleTime": last});
    }
    let parsed = Arc::new(serde_json::from_value(object.clone()).unwrap());
    (object, parsed)
}

fn nightly(extra: Value) -> Value {
    let mut spec = json!({"schedule": "0 0 2 * * *", "cluster": {"name": "orders"}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// One schedule pass at `now`; `backup` is the Backup name expected to be created, if any.
async fn schedule_pass(
    spec: Value,
    last: Option<&str>,
    now: &str,
    backup: Option<&'static str>,
    check_status: impl Fn(&Value) + Send + 'static,
) -> Action {
    let (object, parsed) = scheduled(spec, last);
    let mut script = Vec::new();
    if let Some(name) = backup {
        script.push(
            expect(Method::POST, format!("{API}/backups"))
                .check(move |b| {
                    assert_eq!(b["metadata"]["name"], name);
                    assert_eq!(b["spec"]["cluster"]["name"], "orders");
                    assert_eq!(
                        b["metadata"]["labels"]["walarch.io/scheduled-backup"],
                        "nightly"
                    );
                })
                .answer(StatusCode::CREATED, |b| b.clone()),
        );
        script.push(
            expect(Method::POST, EVENTS)
                .check(|e| assert_eq!(e["reason"], "BackupCreated"))
                .answer(StatusCode::CREATED, |e| e.clone()),
        );
    }
    script.push(
        expect(
            Method::PATCH,
            format!("{API}/scheduledbackups/nightly/status"),
        )
        .check(check_status)
        .answer(StatusCode::OK, with_status(object)),
    );
    let (client, player) = api_server(script);
    let ctx = context(client, at(now), Arc::new(NoInstances));
    let result = schedule::reconcile(parsed, ctx).await;
    finish(result, player).await.0
}

#[tokio::test]
async fn a_scheduled_backup_creates_backups_at_the_scheduled_times() {
    // 01:59:30: nothing due; back at 02:00:00.
    let action = schedule_pass(
        nightly(json!({})),
        None,
        "2026-12-01T01:59:30Z",
        None,
        |p| {
            assert_eq!(p["status"]["nextScheduleTime"], "2026-12-01T02:00:00+00:00");
            assert!(p["status"]["lastScheduleTime"].is_null());
        },
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    // 02:00:01: the 02:00:00 backup, named after its time.
    let action = schedule_pass(
        nightly(json!({})),
        None,
        "2026-12-01T02:00:01Z",
        Some("nightly-20261201020000"),
        |p| {
            assert_eq!(p["status"]["lastScheduleTime"], "2026-12-01T02:00:00+00:00");
            assert_eq!(p["status"]["nextScheduleTime"], "2026-12-02T02:00:00+00:00");
        },
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(24 * 3600 - 1)));

    // 02:00:05, the 02:00 backup made: nothing more.
    schedule_pass(
        nightly(json!({})),
        Some("2026-12-01T02:00:00+00:00"),
        "2026-12-01T02:00:05Z",
        None,
        |p| assert_eq!(p["status"]["lastScheduleTime"], "2026-12-01T02:00:00+00:00"),
    )
    .await;

    // The operator was down for two nights: one backup, for the newest missed time.
    schedule_pass(
        nightly(json!({})),
        Some("2026-12-01T02:00:00+00:00"),
        "2026-12-03T02:30:00Z",
        Some("nightly-20261203020000"),
        |p| assert_eq!(p["status"]["lastScheduleTime"], "2026-12-03T02:00:00+00:00"),
    )
    .await;

    // Seconds count: every 30 seconds.
    schedule_pass(
        json!({"schedule": "*/30 * * * * *", "cluster": {"name": "orders"}}),
        Some("2026-12-01T02:00:00+00:00"),
        "2026-12-01T02:00:31Z",
        Some("nightly-20261201020030"),
        |p| assert_eq!(p["status"]["nextScheduleTime"], "2026-12-01T02:01:00+00:00"),
    )
    .await;
}

#[tokio::test]
async fn a_schedule_honours_suspend_immediate_and_refuses_five_fields() {
    // Suspended: no backup even when due.
    let action = schedule_pass(
        nightly(json!({"suspend": true})),
        None,
        "2026-12-01T02:00:01Z",
        None,
        |p| assert!(p["status"]["nextScheduleTime"].is_null()),
    )
    .await;
    assert_eq!(action, Action::await_change());

    // Immediate: one backup on the first pass, before the first scheduled time.
    schedule_pass(
        nightly(json!({"immediate": true})),
        None,
        "2026-12-01T01:00:02Z",
        Some("nightly-20261201010000"),
        |p| assert_eq!(p["status"]["lastScheduleTime"], "2026-12-01T01:00:00+00:00"),
    )
    .await;

    // A five-field (minute-first) schedule is refused with an event, not guessed at.
    let (object, parsed) = scheduled(
        json!({"schedule": "0 2 * * *", "cluster": {"name": "orders"}}),
        None,
    );
    let (client, player) = api_server(vec![
        expect(Method::POST, EVENTS)
            .check(|e| {
                assert_eq!(e["reason"], "InvalidSchedule");
                assert!(e["note"].as_str().unwrap().contains("six-field"));
            })
            .answer(StatusCode::CREATED, |e| e.clone()),
        expect(
            Method::PATCH,
            format!("{API}/scheduledbackups/nightly/status"),
        )
        .answer(StatusCode::OK, with_status(object)),
    ]);
    let ctx = context(client, at("2026-12-01T02:00:01Z"), Arc::new(NoInstances));
    let (action, _) = finish(schedule::reconcile(parsed, ctx).await, player).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn backups_owned_by_the_schedule_name_it_as_owner() {
    let (object, parsed) = scheduled(nightly(json!({"backupOwnerReference": "self"})), None);
    let (client, player) = api_server(vec![
        expect(Method::POST, format!("{API}/backups"))
            .check(|b| {
                let owner = &b["metadata"]["ownerReferences"][0];
                assert_eq!(owner["kind"], "ScheduledBackup");
                assert_eq!(owner["uid"], "5c4e0000-0000-4000-8000-000000000001");
            })
            .answer(StatusCode::CREATED, |b| b.clone()),
        expect(Method::POST, EVENTS).answer(StatusCode::CREATED, |e| e.clone()),
        expect(
            Method::PATCH,
            format!("{API}/scheduledbackups/nightly/status"),
        )
        .answer(StatusCode::OK, with_status(object)),
    ]);
    let ctx = context(client, at("2026-12-01T02:00:01Z"), Arc::new(NoInstances));
    finish(schedule::reconcile(parsed, ctx).await, player).await;
}

// Backups ----------------------------------------------------------------------------------

/// An instance manager that reports every backup completed, and records who was asked.
#[derive(Default)]
struct CompletedBackups {
    asked: Mutex<Vec<String>>,
}

impl InstanceApi for CompletedBackups {
    fn start_backup(
        &self,
        base: String,
        name: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>> {
        self.asked.lock().unwrap().push(format!("start {base}"));
        Box::pin(async move {
            Ok(BackupState {
                name,
                phase: "running".into(),
                backup_id: None,
                begin_lsn: None,
                end_lsn: None,
                error: None,
            })
        })
    }
    fn backup_state(
        &self,
        base: String,
        name: String,
    ) -> BoxFuture<'static, Result<BackupState, InstanceError>> {
        self.asked.lock().unwrap().push(format!("state {base}"));
        Box::pin(async move {
            Ok(BackupState {
                name,
                phase: "completed".into(),
                backup_id: Some("20261121T120000Z".into()),
                begin_lsn: Some("0/1000028".into()),
                end_lsn: Some("0/1000100".into()),
                error: None,
            })
        })
    }
}

#[tokio::test]
async fn a_backup_runs_on_a_replica_and_retention_follows_its_success() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_repository(dir.path()).await;
    // A second, newer backup: with keep 1, retention lets the 11:00 one go.
    let engine = Engine::open(EngineConfig::new(
        walarch_core::store::RepoLocation::parse(&source).unwrap(),
    ))
    .unwrap();
    synthetic_backup(
        engine.repository().unwrap(),
        &"20261121T120000Z".parse().unwrap(),
        Lsn::new((1 << 20) + 0x28),
        Lsn::new((1 << 20) + 0x100),
        &[],
        &[("PG_VERSION", b"15\n")],
    )
    .await;
    assert_eq!(engine.backups().await.unwrap().backups.len(), 2);

    let spec = json!({"instances": 2, "image": "walarch:test", "storage": {"size": "1Gi"},
                      "repository": {"url": source}, "retention": {"keep": 1}});
    let cluster_object = cluster_json(spec, &[cluster::FINALIZER], false);
    let backup_object = json!({
        "apiVersion": "walarch.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "now", "namespace": NS, "uid": "ba000000-0000-4000-8000-000000000001"},
        "spec": {"cluster": {"name": "orders"}},
    });
    let now = "2026-12-01T00:00:02.000000Z";
    let leases = list(
        "LeaseList",
        vec![
            leader("orders-0", now),
            member("orders-0", "primary", 1, 5000, now),
            member("orders-1", "replica", 1, 4990, now),
        ],
    );
    let instances = Arc::new(CompletedBackups::default());

    // First pass: the replica is chosen (written down before it is asked), then asked.
    let (client, player) = api_server(vec![
        expect(Method::GET, format!("{API}/clusters/orders")).answer_json(cluster_object.clone()),
        expect(Method::GET, LEASES).answer_json(leases.clone()),
        expect(Method::PATCH, format!("{API}/backups/now/status"))
            .query("fieldManager=walarch-operator")
            .check(|p| {
                assert_eq!(p["status"]["phase"], "pending");
                assert_eq!(p["status"]["instance"], "orders-1");
            })
            .answer(StatusCode::OK, with_status(backup_object.clone())),
        expect(Method::PATCH, format!("{API}/backups/now/status"))
            .check(|p| {
                assert_eq!(p["status"]["phase"], "running");
                assert_eq!(p["status"]["instance"], "orders-1");
            })
            .answer(StatusCode::OK, with_status(backup_object.clone())),
        expect(Method::POST, EVENTS)
            .check(|e| assert_eq!(e["note"], "backing up on orders-1"))
            .answer(StatusCode::CREATED, |e| e.clone()),
    ]);
    let ctx = context(client, at("2026-12-01T00:00:05Z"), instances.clone());
    let parsed: Backup = serde_json::from_value(backup_object.clone()).unwrap();
    let (action, _) = finish(backup::reconcile(Arc::new(parsed), ctx).await, player).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(
        *instances.asked.lock().unwrap(),
        ["start http://10.0.0.1:8008"]
    );

    // Second pass: completed, said at once; then retention keeps the newest backup and the
    // Cluster hears of it under the backups' own field manager.
    let mut running = backup_object.clone();
    running["status"] = json!({"phase": "running", "instance": "orders-1"});
    let (client, player) = api_server(vec![
        expect(Method::GET, LEASES).answer_json(leases),
        expect(Method::PATCH, format!("{API}/backups/now/status"))
            .check(|p| {
                let s = &p["status"];
                assert_eq!(s["phase"], "completed");
                assert_eq!(s["backupId"], "20261121T120000Z");
                assert!(s.get("error").is_none());
            })
            .answer(StatusCode::OK, with_status(running.clone())),
        expect(Method::POST, EVENTS)
            .check(|e| assert_eq!(e["reason"], "Completed"))
            .answer(StatusCode::CREATED, |e| e.clone()),
        expect(Method::GET, format!("{API}/clusters/orders")).answer_json(cluster_object.clone()),
        expect(Method::PATCH, format!("{API}/clusters/orders/status"))
            .query("fieldManager=walarch-operator-backups")
            .check(|p| {
                let s = &p["status"];
                // Only the backups' fields: the Cluster reconciler's stay its own.
                let conditions = s["conditions"].as_array().unwrap();
                assert_eq!(conditions.len(), 1);
                assert_eq!(conditions[0]["type"], "LastBackupSucceeded");
                assert_eq!(conditions[0]["status"], "True");
                assert!(s["lastSuccessfulBackup"].is_string());
                assert!(s["firstRecoverabilityPoint"].is_string());
                assert!(s.get("phase").is_none());
            })
            .answer(StatusCode::OK, with_status(cluster_object)),
        expect(Method::PATCH, format!("{API}/backups/now/status"))
            .check(|p| {
                let s = &p["status"];
                assert_eq!(s["phase"], "completed");
                assert_eq!(
                    s["retention"],
                    "retention deleted 1 backups and 0 WAL files"
                );
            })
            .answer(StatusCode::OK, with_status(running.clone())),
    ]);
    let ctx = context(client, at("2026-12-01T00:00:05Z"), instances.clone());
    let parsed: Backup = serde_json::from_value(running).unwrap();
    let (action, _) = finish(backup::reconcile(Arc::new(parsed), ctx).await, player).await;
    assert_eq!(action, Action::await_change());
    // The repository itself: only the newest backup is left.
    let left: Vec<String> = engine
        .backups()
        .await
        .unwrap()
        .backups
        .iter()
        .map(|b| b.id.to_string())
        .collect();
    assert_eq!(left, ["20261121T120000Z"]);
}
