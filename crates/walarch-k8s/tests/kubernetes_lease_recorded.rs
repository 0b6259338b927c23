//! The Kubernetes Lease implementation against recorded API exchanges (tower-test, as kube-rs
//! tests its own client): each test lists the requests the implementation must make, in
//! order, and the API server's answers. No Kubernetes API server can run on the machines
//! these tests run on; the exchanges follow the Kubernetes API reference for
//! `coordination.k8s.io/v1` Leases (paths, `resourceVersion` compare-and-swap answered by
//! 409 Conflict, `Status` bodies), written by hand, not captured from a live server.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;
use walarch_k8s::leadership::kubernetes::KubeCoordination;
use walarch_k8s::leadership::{Coordination, Renewal};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/db/leases";
const TTL: Duration = Duration::from_secs(15);

/// A check on a request's JSON body.
type BodyCheck = Box<dyn Fn(&Value) + Send>;

/// One expected request and the answer to it.
struct Exchange {
    method: Method,
    /// The path (and query) must start with this.
    path: String,
    /// Checks on the request body (JSON), if any.
    body: Option<BodyCheck>,
    status: StatusCode,
    answer: Value,
}

fn exchange(method: Method, path: &str, status: StatusCode, answer: Value) -> Exchange {
    Exchange {
        method,
        path: path.to_owned(),
        body: None,
        status,
        answer,
    }
}

fn with_body(mut e: Exchange, check: impl Fn(&Value) + Send + 'static) -> Exchange {
    e.body = Some(Box::new(check));
    e
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("recorded {reason}"), "reason": reason, "code": code})
}

fn lease(name: &str, version: &str, holder: Option<&str>, annotations: Value) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "db", "resourceVersion": version,
                     "labels": {"walarch.io/cluster": "orders"}, "annotations": annotations},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 3,
                 "renewTime": "2026-12-01T00:00:00.000000Z"}
    })
}

/// A client for member `me` of cluster `orders` in namespace `db`, answered by `script`.
/// Returns the handle and the task that plays the script (it fails the test on a mismatch
/// and checks the whole script was used).
fn recorded(me: &str, script: Vec<Exchange>) -> (KubeCoordination, tokio::task::JoinHandle<()>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let player = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        for (i, expected) in script.into_iter().enumerate() {
            let (request, respond) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("exchange {i}: no request came"));
            let path = request.uri().path_and_query().unwrap().to_string();
            assert_eq!(request.method(), expected.method, "exchange {i}: {path}");
            assert!(
                path.starts_with(&expected.path),
                "exchange {i}: {path} is not {}",
                expected.path
            );
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            if let Some(check) = &expected.body {
                check(&serde_json::from_slice(&bytes).expect("a JSON body"));
            }
            let response = Response::builder()
                .status(expected.status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&expected.answer).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
    });
    let client = kube::Client::new(service, "db");
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, "db");
    (
        KubeCoordination::new(leases, "orders", me, TTL, Duration::from_secs(30)),
        player,
    )
}

#[tokio::test]
async fn a_cluster_without_a_lease_is_led_by_the_member_that_creates_it() {
    let (store, player) = recorded(
        "a",
        vec![
            exchange(
                Method::GET,
                &format!("{LEASES}/orders"),
                StatusCode::NOT_FOUND,
                status(404, "NotFound"),
            ),
            with_body(
                exchange(
                    Method::POST,
                    LEASES,
                    StatusCode::CREATED,
                    lease("orders", "1", Some("a"), json!({})),
                ),
                |body| {
                    assert_eq!(body["metadata"]["name"], "orders");
                    assert_eq!(body["metadata"]["labels"]["walarch.io/cluster"], "orders");
                    assert_eq!(body["spec"]["holderIdentity"], "a");
                    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
                },
            ),
        ],
    );
    assert!(store.acquire().await.unwrap());
    player.await.unwrap();
}

#[tokio::test]
async fn two_members_creating_the_lease_at_once_one_gets_409_and_does_not_lead() {
    let (store, player) = recorded(
        "b",
        vec![
            exchange(
                Method::GET,
                &format!("{LEASES}/orders"),
                StatusCode::NOT_FOUND,
                status(404, "NotFound"),
            ),
            exchange(
                Method::POST,
                LEASES,
                StatusCode::CONFLICT,
                status(409, "AlreadyExists"),
            ),
        ],
    );
    assert!(!store.acquire().await.unwrap());
    player.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_by_a_dead_holder_is_taken_only_after_a_full_ttl_on_the_observers_clock() {
    let held = || {
        lease(
            "orders",
            "7",
            Some("old"),
            json!({"walarch.io/initialized": "42"}),
        )
    };
    let get = || {
        exchange(
            Method::GET,
            &format!("{LEASES}/orders"),
            StatusCode::OK,
            held(),
        )
    };
    let (store, player) = recorded(
        "b",
        vec![
            get(),
            get(),
            get(),
            with_body(
                exchange(
                    Method::PUT,
                    &format!("{LEASES}/orders"),
                    StatusCode::OK,
                    lease("orders", "8", Some("b"), json!({})),
                ),
                |body| {
                    // Compare-and-swap on the version read, the records kept.
                    assert_eq!(body["metadata"]["resourceVersion"], "7");
                    assert_eq!(
                        body["metadata"]["annotations"]["walarch.io/initialized"],
                        "42"
                    );
                    assert_eq!(body["spec"]["holderIdentity"], "b");
                    assert_eq!(body["spec"]["leaseTransitions"], 4);
                },
            ),
        ],
    );
    // Just seen: whatever its renewTime says, it is held for a TTL from now.
    assert!(!store.acquire().await.unwrap());
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    assert!(
        !store.acquire().await.unwrap(),
        "unchanged for less than a TTL"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        store.acquire().await.unwrap(),
        "unchanged for a full TTL: expired"
    );
    player.await.unwrap();
}

/// Acquires by creating the lease, then renews with `after` as the leader lease's answers.
fn leader_then(
    me: &str,
    renewal: Vec<Exchange>,
) -> (KubeCoordination, tokio::task::JoinHandle<()>) {
    let mut script = vec![
        exchange(
            Method::GET,
            &format!("{LEASES}/orders"),
            StatusCode::NOT_FOUND,
            status(404, "NotFound"),
        ),
        exchange(
            Method::POST,
            LEASES,
            StatusCode::CREATED,
            lease("orders", "1", Some(me), json!({})),
        ),
        with_body(
            exchange(
                Method::PATCH,
                &format!("{LEASES}/orders-member-{me}"),
                StatusCode::OK,
                lease(&format!("orders-member-{me}"), "2", Some(me), json!({})),
            ),
            |body| assert!(body["spec"]["renewTime"].is_string()),
        ),
    ];
    script.extend(renewal);
    recorded(me, script)
}

#[tokio::test]
async fn a_409_on_renew_with_another_holder_loses_the_lease() {
    let (store, player) = leader_then(
        "a",
        vec![
            exchange(
                Method::GET,
                &format!("{LEASES}/orders"),
                StatusCode::OK,
                lease("orders", "3", Some("a"), json!({})),
            ),
            exchange(
                Method::PUT,
                &format!("{LEASES}/orders"),
                StatusCode::CONFLICT,
                status(409, "Conflict"),
            ),
            exchange(
                Method::GET,
                &format!("{LEASES}/orders"),
                StatusCode::OK,
                lease("orders", "4", Some("c"), json!({})),
            ),
        ],
    );
    assert!(store.acquire().await.unwrap());
    assert_eq!(store.renew().await.unwrap(), Renewal::Lost);
    player.await.unwrap();
}

#[tokio::test]
async fn a_409_on_renew_from_a_concurrent_write_of_its_own_is_retried() {
    let (store, player) = leader_then(
        "a",
        vec![
            exchange(
                Method::GET,
                &format!("{LEASES}/orders"),
                StatusCode::OK,
                lease("orders", "3", Some("a"), json!({})),
            ),
            exchange(
                Method::PUT,
                &format!("{LEASES}/orders"),
                StatusCode::CONFLICT,
                status(409, "Conflict"),
            ),
            exchange(
                Method::GET,
                &format!("{LEASES}/orders"),
                StatusCode::OK,
                lease("orders", "4", Some("a"), json!({"walarch.io/sync": "{}"})),
            ),
            with_body(
                exchange(
                    Method::PUT,
                    &format!("{LEASES}/orders"),
                    StatusCode::OK,
                    lease("orders", "5", Some("a"), json!({})),
                ),
                |body| assert_eq!(body["metadata"]["resourceVersion"], "4"),
            ),
        ],
    );
    assert!(store.acquire().await.unwrap());
    assert_eq!(store.renew().await.unwrap(), Renewal::Renewed);
    player.await.unwrap();
}

#[tokio::test]
async fn records_are_written_only_by_the_holder() {
    let (store, player) = recorded(
        "b",
        vec![exchange(
            Method::GET,
            &format!("{LEASES}/orders"),
            StatusCode::OK,
            lease("orders", "3", Some("a"), json!({})),
        )],
    );
    let sync = walarch_k8s::leadership::SyncState {
        members: vec!["b".into()],
        quorum: 1,
    };
    assert!(
        !store.set_sync(&sync).await.unwrap(),
        "b does not hold the lease"
    );
    player.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_view_reads_leader_records_and_members_and_orders_their_changes() {
    let state = |name: &str, received: u64| {
        json!({"walarch.io/state": serde_json::to_string(&json!({
            "name": name, "role": "replica", "timeline": 1, "received_lsn": received,
            "replayed_lsn": received, "position_final": false, "host": "10.0.0.1",
            "pg_port": 5432, "http": "10.0.0.1:8008"})).unwrap()})
    };
    let list = |member_b_version: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList", "metadata": {"resourceVersion": "20"},
        "items": [
            lease("orders", "10", Some("a"), json!({"walarch.io/sync": "{\"members\":[\"b\"],\"quorum\":1}",
                                                  "walarch.io/initialized": "42"})),
            lease("orders-member-b", member_b_version, Some("b"), state("b", 100)),
        ]})
    };
    let (store, player) = recorded(
        "c",
        vec![
            exchange(Method::GET, LEASES, StatusCode::OK, list("11")),
            exchange(Method::GET, LEASES, StatusCode::OK, list("11")),
            exchange(Method::GET, LEASES, StatusCode::OK, list("12")),
            exchange(Method::GET, LEASES, StatusCode::OK, list("12")),
        ],
    );
    let first = store.view().await.unwrap();
    assert_eq!(first.leader.as_deref(), Some("a"));
    assert_eq!(first.initialized.as_deref(), Some("42"));
    assert_eq!(first.sync.as_ref().unwrap().members, ["b"]);
    assert_eq!(first.members.len(), 1);
    assert_eq!(first.members[0].state.received_lsn, 100);
    let second = store.view().await.unwrap();
    assert_eq!(
        second.members[0].revision, first.members[0].revision,
        "unchanged: same revision"
    );
    let third = store.view().await.unwrap();
    assert!(
        third.members[0].revision > second.revision,
        "a change counts as newer than every view before it"
    );
    // Nothing changes for a TTL: the leader and the member count as gone.
    tokio::time::advance(TTL).await;
    let fourth = store.view().await.unwrap();
    assert_eq!(fourth.leader, None);
    assert!(fourth.members.is_empty());
    player.await.unwrap();
}
