//! The manager's HTTP interface (DESIGN §6): `/status`, `/healthz`, `/readyz`, `/metrics`
//! (OpenMetrics), and the operator's `/fence`, `/unfence`, `/switchover` and `/backups`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use super::{BackupState, Shared};

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
        .route("/backups", post(start_backup))
        .route("/backups/{name}", get(backup_state))
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

/// How many finished backups `GET /backups/NAME` still answers for.
const REMEMBERED_BACKUPS: usize = 64;

#[derive(Debug, serde::Deserialize)]
struct BackupQuery {
    name: String,
}

fn refuse(status: StatusCode, why: String) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// Starts a base backup of this member's server into the repository, named after the
/// operator's Backup object. Asking again for the same name answers how it goes (the
/// operator retries after a failed status write); one backup at a time.
async fn start_backup(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<BackupQuery>,
) -> Response {
    let name = query.name;
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !plain {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a Backup name"),
        );
    }
    let mut backups = shared.backups.lock().unwrap();
    if let Some(state) = backups.get(&name) {
        return (StatusCode::OK, Json(state.clone())).into_response();
    }
    if let Some(running) = backups.values().find(|b| b.phase == "running") {
        return refuse(
            StatusCode::CONFLICT,
            format!("backup {} is running on this instance", running.name),
        );
    }
    let role = shared.status.lock().unwrap().role.clone();
    if role != "primary" && role != "replica" {
        return refuse(
            StatusCode::CONFLICT,
            format!("this instance is {role}: it takes backups as a primary or a replica"),
        );
    }
    let Some((engine, connection)) = shared.backup_source.lock().unwrap().clone() else {
        return refuse(
            StatusCode::CONFLICT,
            "this instance has no repository (--repo)".into(),
        );
    };
    let state = BackupState {
        name: name.clone(),
        phase: "running".into(),
        backup_id: None,
        begin_lsn: None,
        end_lsn: None,
        error: None,
    };
    // A bounded memory of finished backups (the operator asks within minutes).
    while backups.len() >= REMEMBERED_BACKUPS {
        let Some(finished) = backups
            .values()
            .find(|b| b.phase != "running")
            .map(|b| b.name.clone())
        else {
            break;
        };
        backups.remove(&finished);
    }
    backups.insert(name.clone(), state.clone());
    drop(backups);
    let shared_for_task = shared.clone();
    tokio::spawn(async move {
        let progress = Arc::new(walarch_core::backup::Progress::default());
        let cancel = CancellationToken::new();
        let backup = engine.backup(
            walarch_core::BackupRequest::new(connection),
            progress.clone(),
            &cancel,
        );
        let result = tokio::select! {
            result = backup => result,
            never = finish_segments_while_waiting(&shared_for_task, &progress) => match never {},
        };
        let mut backups = shared_for_task.backups.lock().unwrap();
        let Some(state) = backups.get_mut(&name) else {
            return;
        };
        match result {
            Ok(manifest) => {
                tracing::info!(backup = %manifest.id, "backup {name} completed");
                state.phase = "completed".into();
                state.backup_id = Some(manifest.id.to_string());
                state.begin_lsn = Some(manifest.start_lsn.to_string());
                state.end_lsn = Some(manifest.stop_lsn.to_string());
            }
            Err(e) => {
                tracing::warn!("backup {name} failed: {e}");
                state.phase = "failed".into();
                state.error = Some(e.to_string());
            }
        }
    });
    (StatusCode::ACCEPTED, Json(state)).into_response()
}

/// A backup taken on a replica ends with WAL the primary has not finished: its segment
/// reaches the repository only when the primary switches to the next one. While the backup
/// waits for that WAL, ask the leader to switch every few seconds (a primary with nothing
/// new since its last switch does not switch again).
async fn finish_segments_while_waiting(
    shared: &Shared,
    progress: &walarch_core::backup::Progress,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        if progress.snapshot().phase != walarch_core::backup::Phase::WaitingForWal {
            continue;
        }
        let Some((host, port)) = shared.leader_address.lock().unwrap().clone() else {
            continue;
        };
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host)
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(std::time::Duration::from_secs(2));
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                if let Err(e) = client.batch_execute("SELECT pg_switch_wal()").await {
                    tracing::debug!("pg_switch_wal on the leader: {e}");
                }
            }
            Err(e) => tracing::debug!("connecting to the leader to switch WAL: {e}"),
        }
    }
}

async fn backup_state(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.backups.lock().unwrap().get(&name) {
        Some(state) => (StatusCode::OK, Json(state.clone())).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no backup {name} since this manager started"),
        ),
    }
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
