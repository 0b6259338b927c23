//! Metrics: what monitoring needs to know about archiving, backups, recoverability and
//! drills, as OpenMetrics text (for the node_exporter textfile collector, or served by
//! `walarch metrics --listen`). Read fresh on every call: the repository (identity, WAL,
//! backups, recoverable windows, drill reports), the server's spools when a data directory
//! is given, and PostgreSQL's own archiver statistics when a connection is given. A source
//! that cannot be read is reported as such (`walarch_repository_up 0`, `walarch_postgres_up
//! 0`), never as zeros: an alert on "no backup for a day" must not fire, or stay silent,
//! because the store was down.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::Engine;
use crate::archive::{FetchSpool, PushSpool};

/// The content type of [`Metrics::text`], for an HTTP response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One reading of every metric, rendered.
#[derive(Debug, Clone)]
pub struct Metrics {
    text: String,
}

impl Metrics {
    /// The OpenMetrics text, ending with `# EOF`.
    pub fn text(&self) -> &str {
        &self.text
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;
type Labelled = Family<Vec<(String, String)>, FloatGauge>;

/// Builds the registry one metric at a time; a metric is registered only when its value is
/// known.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let gauge = FloatGauge::default();
        gauge.set(value);
        match unit {
            Some(unit) => self.registry.register_with_unit(name, help, unit, gauge),
            None => self.registry.register(name, help, gauge),
        }
    }

    fn labelled(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: Vec<(Vec<(String, String)>, f64)>,
    ) {
        if values.is_empty() {
            return;
        }
        let family = Labelled::default();
        for (labels, value) in values {
            family.get_or_create(&labels).set(value);
        }
        match unit {
            Some(unit) => self.registry.register_with_unit(name, help, unit, family),
            None => self.registry.register(name, help, family),
        }
    }
}

fn timestamp(time: DateTime<Utc>) -> f64 {
    time.timestamp_millis() as f64 / 1000.0
}

fn age(time: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    ((now - time).num_milliseconds() as f64 / 1000.0).max(0.0)
}

fn bool_value(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

/// Reads every metric: the repository's through `engine`, the server's spools under
/// `pgdata`, PostgreSQL's archiver statistics through `connection`.
pub(crate) async fn collect(
    engine: &Engine,
    pgdata: Option<&Path>,
    connection: Option<&tokio_postgres::Config>,
) -> Metrics {
    use Unit::{Bytes, Seconds};
    let now = Utc::now();
    let mut b = Builder {
        registry: Registry::with_prefix("walarch"),
    };

    // The repository.
    let (info, backups) = match (engine.info(None).await, engine.backups().await) {
        (Ok(info), Ok(backups)) => (Some(info), Some(backups)),
        (info, backups) => {
            if let Some(e) = info.err().or(backups.err()) {
                tracing::warn!(error = %e, "cannot read the repository");
            }
            (None, None)
        }
    };
    b.gauge(
        "repository_up",
        "Whether the repository could be read (1) or not (0)",
        None,
        bool_value(info.is_some()),
    );
    if let Some(info) = &info {
        if let Some(wal) = &info.wal {
            if let Some(at) = wal.last_archived_at {
                b.gauge(
                    "last_archived_timestamp",
                    "When the most recently archived WAL file was stored",
                    Some(Seconds),
                    timestamp(at),
                );
                b.gauge(
                    "last_archived_age",
                    "How long ago the most recently archived WAL file was stored",
                    Some(Seconds),
                    age(at, now),
                );
            }
            let per_timeline = |value: &dyn Fn(&crate::catalog::TimelineWal) -> f64| {
                wal.timelines
                    .iter()
                    .map(|t| (vec![("timeline".into(), t.timeline.to_string())], value(t)))
                    .collect::<Vec<_>>()
            };
            b.labelled(
                "wal_segments",
                "WAL segments stored, per timeline",
                None,
                per_timeline(&|t| t.segments as f64),
            );
            b.labelled(
                "wal_gaps",
                "Ranges of missing WAL segments, per timeline: recovery cannot cross one",
                None,
                per_timeline(&|t| t.gaps.len() as f64),
            );
            b.labelled(
                "repository",
                "Bytes stored in the repository, by kind (compressed, as stored)",
                Some(Bytes),
                vec![
                    (
                        vec![("kind".into(), "wal".into())],
                        wal.timelines.iter().map(|t| t.stored_bytes).sum::<u64>() as f64,
                    ),
                    (
                        vec![("kind".into(), "backups".into())],
                        backups
                            .as_ref()
                            .map_or(0, |list: &crate::backup::BackupList| {
                                list.backups
                                    .iter()
                                    .flat_map(|m| &m.parts)
                                    .map(|p| p.stored_bytes)
                                    .sum::<u64>()
                            }) as f64,
                    ),
                ],
            );
        }
        let window = |value: &dyn Fn(&crate::recovery::RecoverableWindow) -> Option<f64>| {
            info.recoverable_windows
                .iter()
                .filter_map(|w| {
                    value(w).map(|v| (vec![("timeline".into(), w.timeline.to_string())], v))
                })
                .collect::<Vec<_>>()
        };
        b.labelled(
            "recoverable_window_start_timestamp",
            "The earliest time recovery can reach, per timeline (the oldest usable backup's end)",
            Some(Seconds),
            window(&|w| Some(timestamp(w.start_time))),
        );
        b.labelled(
            "recoverable_window_end_timestamp",
            "The latest commit recovery can reach, per timeline (the last archived commit before a gap)",
            Some(Seconds),
            window(&|w| w.end_time.map(timestamp)),
        );
        let drills = &info.drills;
        b.gauge(
            "drills",
            "Restore drills stored in the repository",
            None,
            drills.count as f64,
        );
        if let Some(last) = &drills.last {
            b.gauge(
                "drill_last_success",
                "Whether the most recent restore drill passed (1) or failed (0)",
                None,
                bool_value(last.ok),
            );
            b.gauge(
                "drill_last_timestamp",
                "When the most recent restore drill ended",
                Some(Seconds),
                timestamp(last.finished_at),
            );
        }
        if let Some(passed) = &drills.last_successful {
            b.gauge(
                "drill_last_success_timestamp",
                "When the most recent successful restore drill ended",
                Some(Seconds),
                timestamp(passed.finished_at),
            );
            if let Some(rto) = passed.rto_seconds {
                b.gauge(
                    "drill_rto",
                    "Restore plus recovery time of the most recent successful drill",
                    Some(Seconds),
                    rto,
                );
            }
            if let Some(rpo) = passed.rpo.seconds_behind_now {
                b.gauge(
                    "drill_rpo",
                    "Age of the last archived commit when the most recent successful drill ran",
                    Some(Seconds),
                    rpo,
                );
            }
        }
    }
    if let Some(list) = &backups {
        b.gauge(
            "backups",
            "Whole backups stored",
            None,
            list.backups.len() as f64,
        );
        b.gauge(
            "backups_damaged",
            "Backups with a manifest whose objects are missing: not restorable",
            None,
            list.damaged.len() as f64,
        );
        if let Some(last) = list.backups.iter().max_by_key(|m| m.stopped_at) {
            b.gauge(
                "last_backup_timestamp",
                "When the newest whole backup ended",
                Some(Seconds),
                timestamp(last.stopped_at),
            );
            b.gauge(
                "last_backup_age",
                "How long ago the newest whole backup ended",
                Some(Seconds),
                age(last.stopped_at, now),
            );
            b.gauge(
                "last_backup_duration",
                "How long the newest whole backup took, from its start to its manifest",
                Some(Seconds),
                age(last.started_at, last.completed_at),
            );
            b.gauge(
                "last_backup_size",
                "Bytes of data in the newest whole backup (files, uncompressed)",
                Some(Bytes),
                last.files.iter().map(|f| f.size).sum::<u64>() as f64,
            );
            b.gauge(
                "last_backup_stored",
                "Bytes the newest whole backup takes in the repository (compressed)",
                Some(Bytes),
                last.parts.iter().map(|p| p.stored_bytes).sum::<u64>() as f64,
            );
        }
    }

    // The server's side, from its data directory.
    if let Some(pgdata) = pgdata {
        let pg_wal = pgdata.join("pg_wal");
        if let Ok(push) = PushSpool::for_pg_wal(&pg_wal).status() {
            b.gauge(
                "archive_ready_files",
                "WAL files PostgreSQL has finished and not yet archived (archive_status/*.ready)",
                None,
                push.ready as f64,
            );
            b.gauge(
                "archive_oldest_ready_age",
                "How long the oldest WAL file waiting to be archived has waited (0 when none waits)",
                Some(Seconds),
                push.oldest_ready_age.map_or(0.0, |a| a.as_secs_f64()),
            );
            b.gauge(
                "archive_push_failed_files",
                "WAL files whose last push by the push-ahead worker failed",
                None,
                push.failures.len() as f64,
            );
        }
        let fetch = FetchSpool::for_pg_wal(&pg_wal).status();
        b.gauge(
            "restore_fetch_failed_files",
            "WAL files whose last fetch for recovery failed (while recovery or a standby runs)",
            None,
            fetch.failures.len() as f64,
        );
    }

    // PostgreSQL's own count of archive_command calls.
    if let Some(connection) = connection {
        match archiver_stats(connection).await {
            Ok(stats) => {
                b.gauge(
                    "postgres_up",
                    "Whether the server could be asked (1) or not (0)",
                    None,
                    1.0,
                );
                // Gauges, not counters: an OpenMetrics counter's samples end in `_total`
                // while its family does not, which the Prometheus text parser that
                // node_exporter's textfile collector uses reads as two unrelated metrics.
                // `increase()` still handles the reset at a statistics reset or restart.
                b.gauge(
                    "postgres_archived_files",
                    "WAL files archived since the statistics were reset (pg_stat_archiver.archived_count)",
                    None,
                    stats.archived as f64,
                );
                b.gauge(
                    "postgres_archive_failed_calls",
                    "Failed archive_command calls since the statistics were reset (pg_stat_archiver.failed_count)",
                    None,
                    stats.failed as f64,
                );
                if let Some(at) = stats.last_failed {
                    b.gauge(
                        "postgres_archive_last_failed_timestamp",
                        "When archive_command last failed",
                        Some(Seconds),
                        timestamp(at),
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read pg_stat_archiver");
                b.gauge(
                    "postgres_up",
                    "Whether the server could be asked (1) or not (0)",
                    None,
                    0.0,
                );
            }
        }
    }

    let mut text = String::new();
    encode(&mut text, &b.registry).expect("writing to a String does not fail");
    Metrics { text }
}

struct ArchiverStats {
    archived: u64,
    failed: u64,
    last_failed: Option<DateTime<Utc>>,
}

async fn archiver_stats(
    connection: &tokio_postgres::Config,
) -> Result<ArchiverStats, tokio_postgres::Error> {
    let (client, driver) = connection.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(driver);
    let row = client
        .query_one(
            "SELECT archived_count, failed_count, last_failed_time FROM pg_stat_archiver",
            &[],
        )
        .await;
    drop(client);
    let _ = driver.await;
    let row = row?;
    Ok(ArchiverStats {
        archived: row.get::<_, i64>(0).max(0) as u64,
        failed: row.get::<_, i64>(1).max(0) as u64,
        last_failed: row.get(2),
    })
}
