//! The manager's HTTP interface (DESIGN §6): `/status`, `/healthz`, `/readyz`, `/metrics`
//! (OpenMetrics), and the operator's `/fence` and `/unfence`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use super::Shared;

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/fence", post(fence))
        .route("/unfence", post(unfence))
        .route("/switchover", post(switchover))
        .with_state(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("HTTP server stopped: {e}");
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<super::Status> {
    Json(shared.status.lock().unwrap().clone())
}

fn flag(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> StatusCode {
    flag(shared.healthy.load(Ordering::SeqCst))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> StatusCode {
    flag(shared.ready.load(Ordering::SeqCst))
}

async fn fence(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.fenced_by_operator.store(true, Ordering::SeqCst);
    StatusCode::OK
}

async fn unfence(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.fenced_by_operator.store(false, Ordering::SeqCst);
    StatusCode::OK
}

#[derive(Debug, serde::Deserialize)]
struct SwitchoverQuery {
    to: String,
}

/// Accepted by the primary's manager only; the work happens in its next round.
async fn switchover(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<SwitchoverQuery>,
) -> (StatusCode, String) {
    let status = shared.status.lock().unwrap().clone();
    if status.role != "primary" || !status.lease_held {
        let leader = status.leader.unwrap_or_else(|| "(none)".into());
        return (
            StatusCode::CONFLICT,
            format!(
                "{} is not the primary; ask the leader ({leader})\n",
                status.name
            ),
        );
    }
    if query.to == status.name {
        return (StatusCode::BAD_REQUEST, "already the primary\n".into());
    }
    *shared.switchover_to.lock().unwrap() = Some(query.to.clone());
    (
        StatusCode::ACCEPTED,
        format!("switching over to {}\n", query.to),
    )
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.status.lock().unwrap().clone();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render_metrics(&s),
    )
        .into_response()
}

/// The OpenMetrics exposition of one status.
pub(crate) fn render_metrics(s: &super::Status) -> String {
    let mut out = String::new();
    let labels = format!("member=\"{}\",cluster=\"{}\"", s.name, s.cluster);
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# TYPE walarch_{name} gauge");
        let _ = writeln!(out, "# HELP walarch_{name} {help}");
        let _ = writeln!(out, "walarch_{name}{{{labels}}} {value}");
    };
    gauge(
        "member_is_primary",
        "1 while this member serves as the primary",
        f64::from(u8::from(s.role == "primary")),
    );
    gauge(
        "member_lease_held",
        "1 while this member holds the leader lease and may write",
        f64::from(u8::from(s.lease_held)),
    );
    gauge(
        "member_store_reachable",
        "1 when the coordination store answered the last round",
        f64::from(u8::from(s.store_reachable)),
    );
    gauge(
        "member_timeline",
        "the server's timeline",
        f64::from(s.timeline),
    );
    gauge(
        "member_lag_bytes",
        "bytes between the leader's position and this member's replay",
        s.lag_bytes as f64,
    );
    gauge(
        "archive_backlog_segments",
        "WAL files waiting for archive_command",
        s.archive.backlog as f64,
    );
    if let Some(age) = s.last_backup_age_seconds {
        gauge(
            "last_backup_age_seconds",
            "seconds since the repository's newest backup completed",
            age,
        );
    }
    if let Some(age) = s.archive.last_archived_age_seconds {
        gauge(
            "archive_last_archived_age_seconds",
            "seconds since the last file was archived",
            age,
        );
    }
    let _ = writeln!(out, "# EOF");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_openmetrics_with_one_sample_per_gauge_and_an_eof() {
        let status = super::super::Status {
            name: "a".into(),
            cluster: "c".into(),
            role: "primary".into(),
            lease_held: true,
            lag_bytes: 42,
            ..Default::default()
        };
        let text = render_metrics(&status);
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("walarch_member_is_primary{member=\"a\",cluster=\"c\"} 1\n"));
        assert!(text.contains("walarch_member_lag_bytes{member=\"a\",cluster=\"c\"} 42\n"));
        assert!(!text.contains("last_archived_age"));
    }
}
