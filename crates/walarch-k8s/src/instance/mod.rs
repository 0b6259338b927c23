//! The instance manager (`walarch-k8s instance`): one PostgreSQL server, one member of the
//! cluster. Each round it observes its server and the coordination store, publishes its state,
//! asks the pure decision logic ([`crate::member`]) what to do and does it. Beside the rounds:
//! a renewer keeps the member's lease alive, and a fencing watchdog stops a primary the moment
//! its renew deadline passes, whatever the round is busy with.

mod http;
pub mod postgres;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use walarch_core::backup::BackupSelector;
use walarch_core::codec::Compression;
use walarch_core::crypto::Keyring;
use walarch_core::recovery::TargetSpec;
use walarch_core::store::{RepoLocation, StoreOptions};
use walarch_core::{Engine, EngineConfig, RestoreCommand, RestoreRequest, TargetAction};

use crate::leadership::{ClusterView, Coordination, MemberState, PublishedRole, Renewal};
use crate::member::{Action, LeaseHold, Member, Observation, Server, Timings};
use crate::synchronous::{self, Configured, SyncStep};
use postgres::{PgSettings, Postgres, StartAs};

/// Everything `walarch-k8s instance` was given.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Member name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// The server.
    pub pg: PgSettings,
    /// Lease timings.
    pub timings: Timings,
    /// `ANY n` of the replicas acknowledge each commit (0: asynchronous).
    pub sync_replicas: u32,
    /// Where `/status`, `/healthz`, `/readyz`, `/metrics` are served.
    pub http: SocketAddr,
    /// How often a round runs.
    pub tick: Duration,
    /// The repository WAL is archived into (and fetched from).
    pub repo: Option<RepoLocation>,
    /// How the manager's own engine reaches stores (endpoint, credentials, timeouts).
    pub store: StoreOptions,
    /// How the manager's backups are compressed.
    pub compression: Compression,
    /// The walarch binary PostgreSQL runs as archive_command/restore_command.
    pub walarch_bin: Option<PathBuf>,
    /// Bootstrap the cluster by recovering from a repository instead of `initdb`.
    pub recovery: Option<RecoveryBootstrap>,
    /// The keys of client-side encryption, if on.
    pub encryption: Option<Arc<Keyring>>,
    /// Their file, for the restore_command a recovery bootstrap writes.
    pub encryption_key_file: Option<PathBuf>,
}

impl InstanceConfig {
    /// An engine configuration for `repo` with the manager's store settings.
    pub fn engine_config(&self, repo: RepoLocation) -> EngineConfig {
        let mut config = EngineConfig::new(repo);
        config.store = self.store.clone();
        config.compression = self.compression;
        config.encryption = self.encryption.clone();
        config
    }
}

/// A recovery bootstrap: the first member restores `backup` (or the one the target calls for)
/// from `source` and recovers to `target`; the cluster then archives into its own repository.
#[derive(Debug, Clone)]
pub struct RecoveryBootstrap {
    /// The repository recovered from (only read).
    pub source: RepoLocation,
    /// The backup to start from.
    pub backup: Option<BackupSelector>,
    /// Where recovery stops.
    pub target: TargetSpec,
}

/// A backup the manager takes for the operator (`POST /backups`, `GET /backups/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BackupState {
    /// The Backup object's name.
    pub name: String,
    /// `running`, `completed` or `failed`.
    pub phase: String,
    /// The repository's id (once completed).
    #[serde(default)]
    pub backup_id: Option<String>,
    /// Where its WAL starts.
    #[serde(default)]
    pub begin_lsn: Option<String>,
    /// Where its WAL ends.
    #[serde(default)]
    pub end_lsn: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// `GET /status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Member name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// `primary`, `replica`, `fenced`, `starting` or `stopped`.
    pub role: String,
    /// Holder of the leader lease as last seen (null: none, or store unreachable).
    pub leader: Option<String>,
    /// Timeline.
    pub timeline: u32,
    /// Flushed/received LSN.
    pub received_lsn: String,
    /// Replayed LSN.
    pub replayed_lsn: String,
    /// Bytes between the leader's published position and this member's replay.
    pub lag_bytes: u64,
    /// PostgreSQL's port.
    pub pg_port: u16,
    /// Archiving.
    pub archive: ArchiveStatus,
    /// Seconds since the repository's newest backup completed (null: none, or no `--repo`).
    pub last_backup_age_seconds: Option<f64>,
    /// Whether the member holds the leader lease and may write.
    pub lease_held: bool,
    /// Whether the coordination store answered the last round.
    pub store_reachable: bool,
    /// Seconds since the manager started.
    pub uptime_seconds: f64,
}

/// Archiving, as `/status` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveStatus {
    /// Segments waiting for archive_command (`.ready` files).
    pub backlog: u64,
    /// The last file PostgreSQL archived.
    pub last_archived: Option<String>,
    /// Its age in seconds.
    pub last_archived_age_seconds: Option<f64>,
}

/// What the HTTP side and the rounds share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    status: Mutex<Status>,
    fenced_by_operator: AtomicBool,
    /// A planned switchover asked for through `POST /switchover?to=NAME`.
    switchover_to: Mutex<Option<String>>,
    /// When the repository's newest backup completed.
    last_backup: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// Set while the manager's server runs and is healthy.
    healthy: AtomicBool,
    ready: AtomicBool,
    /// What backups need: the engine and the server's connection (with `--repo`).
    backup_source: Mutex<Option<(Arc<Engine>, tokio_postgres::Config)>>,
    /// The backups taken for the operator since the manager started, by name.
    backups: Mutex<std::collections::BTreeMap<String, BackupState>>,
    /// Where the leader's server listens, as last seen (a replica's backup asks it to finish
    /// its WAL segment).
    leader_address: Mutex<Option<(String, u16)>>,
}

/// When the member's last successful renewal was *sent* (the lease lives at least TTL from
/// then), and whether the member took the leader lease with it.
#[derive(Debug, Default)]
struct LeaseClock {
    renewed_at: Option<Instant>,
    leader: bool,
}

/// Runs the manager until `cancel`.
pub async fn run<C: Coordination>(
    config: InstanceConfig,
    store: Arc<C>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    config.timings.validate().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("listening on {}", config.http))?;
    tokio::spawn(http::serve(listener, shared.clone(), cancel.clone()));

    let lease = Arc::new(Mutex::new(LeaseClock::default()));
    tokio::spawn(renew_forever(
        store.clone(),
        lease.clone(),
        config.timings,
        cancel.clone(),
    ));
    // The watchdog: the postmaster's pid while it runs as a primary.
    let primary_pid = Arc::new(AtomicU32::new(0));
    tokio::spawn(fence_watchdog(
        lease.clone(),
        primary_pid.clone(),
        config.timings,
        cancel.clone(),
    ));

    let engine = match &config.repo {
        Some(repo) => {
            let engine = Arc::new(Engine::open(config.engine_config(repo.clone()))?);
            tokio::spawn(watch_backups(
                engine.clone(),
                shared.clone(),
                cancel.clone(),
            ));
            Some(engine)
        }
        None => None,
    };
    let pg = Postgres::new(config.pg.clone(), Some(primary_pid.clone()));
    pg.stop_leftover().await?;
    if pg.discard_unfinished_bootstrap()? {
        tracing::warn!("a recovery bootstrap did not finish: starting it over");
    }
    if let Some(engine) = &engine {
        *shared.backup_source.lock().unwrap() = Some((engine.clone(), pg.local_connection()));
    }
    let mut manager = Manager {
        member: Member::new(config.name.clone(), config.timings),
        pg,
        config,
        store,
        lease,
        shared,
        primary_pid,
        upstream_name: None,
        busy: false,
        configured_sync: None,
        started,
        engine,
        push_worker: None,
        cancel: cancel.clone(),
        replay_still: None,
        last_view: None,
    };
    let mut ticker = tokio::time::interval(manager.config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Err(e) = manager.round().await {
            tracing::warn!("round failed: {e:#}");
        }
    }
    // A stopping manager stops its server fast and gives the lease up for a quick handover.
    manager.primary_pid.store(0, Ordering::SeqCst);
    manager.pg.stop(false).await?;
    if manager.lease.lock().unwrap().leader {
        let _ = manager.store.release().await;
    }
    Ok(())
}

struct Manager<C> {
    config: InstanceConfig,
    member: Member,
    pg: Postgres,
    store: Arc<C>,
    lease: Arc<Mutex<LeaseClock>>,
    shared: Arc<Shared>,
    primary_pid: Arc<AtomicU32>,
    upstream_name: Option<String>,
    /// Set around long actions so the published role says `starting`.
    busy: bool,
    configured_sync: Option<Configured>,
    started: Instant,
    /// The repository's engine (archiving and backups), when `--repo` is given.
    engine: Option<Arc<Engine>>,
    /// The push-ahead worker, run as a task of the manager while the primary archives.
    push_worker: Option<tokio::task::JoinHandle<()>>,
    cancel: CancellationToken,
    /// Where replay stood and since when (see `replay_still_for_a_ttl`).
    replay_still: Option<(u64, Instant)>,
    /// The store's last view (for settings derived from it while acting).
    last_view: Option<ClusterView>,
}

impl<C: Coordination> Manager<C> {
    async fn round(&mut self) -> anyhow::Result<()> {
        let (server, running) = self.observe_server().await?;
        let view = self.store.view().await.ok();
        if view.is_some() {
            self.last_view = view.clone();
        }
        let lease = self.lease_hold(view.as_ref());
        let fenced_by_operator = self.shared.fenced_by_operator.load(Ordering::SeqCst);
        self.publish(&server, fenced_by_operator).await;
        self.update_status(&server, running.as_ref(), view.as_ref(), lease);

        let requested = self.shared.switchover_to.lock().unwrap().take();
        if let (Some(to), Server::Primary { .. }, Some(view)) = (requested, &server, &view) {
            if self
                .member
                .may_write(lease, self.started.elapsed(), fenced_by_operator)
            {
                return self.switch_over(&to, view).await;
            }
            tracing::warn!(
                to,
                "switchover asked of a member that does not hold the lease"
            );
        }
        let switched_to_me = matches!(server, Server::Primary { .. })
            && matches!(lease, LeaseHold::Held { .. })
            && view.as_ref().is_some_and(|v| v.switchover.is_some());
        if switched_to_me {
            // The switchover that made this member the leader is done.
            self.store.clear_switchover().await?;
        }
        let action = self.member.decide(&Observation {
            now: self.started.elapsed(),
            view: view.as_ref(),
            lease,
            server: server.clone(),
            fenced_by_operator,
        });
        if action != Action::Wait {
            tracing::info!(?action, ?server, "decided");
        }
        self.carry_out(action, view.as_ref(), lease).await?;
        let may_write = self
            .member
            .may_write(lease, self.started.elapsed(), fenced_by_operator);
        if may_write && matches!(server, Server::Primary { .. }) {
            self.keep_push_worker();
        }
        if let (Server::Primary { .. }, Some(view), Some(running), true) =
            (&server, &view, &running, may_write)
        {
            self.keep_synchronous_set(view, running).await?;
        }
        Ok(())
    }

    /// Whether replay has stood at `replayed` for a full TTL (a replica with nothing to stream
    /// from has then replayed all the WAL it holds).
    fn replay_still_for_a_ttl(&mut self, replayed: u64) -> bool {
        match self.replay_still {
            Some((at, since)) if at == replayed => since.elapsed() >= self.config.timings.ttl,
            _ => {
                self.replay_still = Some((replayed, Instant::now()));
                false
            }
        }
    }

    fn now_instant(&self) -> Instant {
        Instant::now()
    }

    /// The lease as the decision logic sees it: held while the member took the leader record
    /// and the store still shows it, valid until the last renewal's send time + deadline.
    fn lease_hold(&self, view: Option<&ClusterView>) -> LeaseHold {
        let mut clock = self.lease.lock().unwrap();
        if view.is_some_and(|v| v.leader.as_deref() != Some(self.config.name.as_str())) {
            clock.leader = false;
        }
        match (clock.leader, clock.renewed_at) {
            (true, Some(at)) => LeaseHold::Held {
                valid_until: (at + self.config.timings.renew_deadline)
                    .saturating_duration_since(self.started),
            },
            _ => LeaseHold::NotHeld,
        }
    }

    async fn observe_server(&mut self) -> anyhow::Result<(Server, Option<postgres::Running>)> {
        if self.busy {
            return Ok((Server::Busy { upstream: None }, None));
        }
        if !self.pg.is_running() {
            self.primary_pid.store(0, Ordering::SeqCst);
            return Ok((self.pg.stopped_state()?, None));
        }
        match self.pg.observe().await {
            Ok(running) => {
                // What a standby reports can trail a timeline switch; its pg_wal says which
                // timeline its newest WAL is on. Unreadable, its position is not final.
                let newest = self.pg.newest_wal_timeline();
                let server = if running.in_recovery {
                    Server::Replica {
                        timeline: running
                            .timeline
                            .max(newest.as_ref().ok().copied().flatten().unwrap_or(0)),
                        position: crate::member::WalPosition {
                            received: running.flushed,
                            replayed: running.replayed,
                        },
                        receiver_running: running.receiver_running,
                        upstream: self.upstream_name.clone(),
                        was_primary: self.pg.rewind_needed(),
                        complete: newest.is_ok()
                            && (running.streamed_since_start
                                || self.replay_still_for_a_ttl(running.replayed)),
                    }
                } else {
                    Server::Primary {
                        timeline: running.timeline,
                        lsn: running.flushed,
                    }
                };
                Ok((server, Some(running)))
            }
            // Running but not answering (crash recovery, overload): nothing to decide on.
            Err(_) => Ok((
                Server::Busy {
                    upstream: self.upstream_name.clone(),
                },
                None,
            )),
        }
    }

    async fn publish(&self, server: &Server, fenced: bool) {
        let position_final = matches!(
            server,
            Server::Stopped { clean: true, .. } | Server::Replica { complete: true, .. }
        );
        let (role, timeline, received, replayed) = match server {
            Server::Primary { timeline, lsn } => (PublishedRole::Primary, *timeline, *lsn, *lsn),
            Server::Replica {
                timeline, position, ..
            } => (
                PublishedRole::Replica,
                *timeline,
                position.received,
                position.replayed,
            ),
            Server::Stopped {
                timeline, position, ..
            } => (
                if fenced {
                    PublishedRole::Fenced
                } else {
                    PublishedRole::Stopped
                },
                *timeline,
                position.received,
                position.replayed,
            ),
            Server::Absent | Server::Busy { .. } => (PublishedRole::Starting, 0, 0, 0),
        };
        let state = MemberState {
            name: self.config.name.clone(),
            role,
            timeline,
            received_lsn: received,
            replayed_lsn: replayed,
            position_final,
            host: self.config.pg.host.clone(),
            pg_port: self.config.pg.port,
            http: self.config.http.to_string(),
            archive_backlog: Some(archive_status(&self.config.pg.pgdata, None).backlog),
        };
        if let Err(e) = self.store.publish(&state).await {
            tracing::debug!("publishing state: {e}");
        }
    }

    fn update_status(
        &self,
        server: &Server,
        running: Option<&postgres::Running>,
        view: Option<&ClusterView>,
        lease: LeaseHold,
    ) {
        let may_write = self.member.may_write(
            lease,
            self.started.elapsed(),
            self.shared.fenced_by_operator.load(Ordering::SeqCst),
        );
        let role = match server {
            Server::Primary { .. } => "primary",
            Server::Replica { .. } => "replica",
            Server::Stopped { .. } if self.shared.fenced_by_operator.load(Ordering::SeqCst) => {
                "fenced"
            }
            Server::Stopped {
                was_primary: true, ..
            } if view.is_some_and(|v| v.leader.as_deref() != Some(self.config.name.as_str())) => {
                "fenced"
            }
            Server::Stopped { .. } => "stopped",
            Server::Absent | Server::Busy { .. } => "starting",
        };
        let leader_position = view
            .and_then(|v| v.leader.as_deref().and_then(|l| v.member(l)))
            .map_or(0, |m| m.state.received_lsn);
        let (timeline, received, replayed) = match server {
            Server::Primary { timeline, lsn } => (*timeline, *lsn, *lsn),
            Server::Replica {
                timeline, position, ..
            }
            | Server::Stopped {
                timeline, position, ..
            } => (*timeline, position.received, position.replayed),
            _ => (0, 0, 0),
        };
        let archive = archive_status(&self.config.pg.pgdata, running);
        *self.shared.leader_address.lock().unwrap() = view
            .and_then(|v| v.leader.as_deref())
            .filter(|leader| *leader != self.config.name)
            .and_then(|leader| self.peer_address(view, leader));
        let mut status = self.shared.status.lock().unwrap();
        *status = Status {
            name: self.config.name.clone(),
            cluster: self.config.cluster.clone(),
            role: role.to_owned(),
            leader: view.and_then(|v| v.leader.clone()),
            timeline,
            received_lsn: walarch_core::wal::Lsn::new(received).to_string(),
            replayed_lsn: walarch_core::wal::Lsn::new(replayed).to_string(),
            lag_bytes: leader_position.saturating_sub(replayed),
            pg_port: self.config.pg.port,
            archive,
            last_backup_age_seconds: self
                .shared
                .last_backup
                .lock()
                .unwrap()
                .map(|at| (chrono::Utc::now() - at).num_milliseconds() as f64 / 1000.0),
            lease_held: may_write,
            store_reachable: view.is_some(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        };
        let healthy = !matches!(server, Server::Busy { .. }) || self.busy;
        self.shared.healthy.store(healthy, Ordering::SeqCst);
        let ready = match server {
            Server::Primary { .. } => may_write,
            Server::Replica { .. } => true,
            _ => false,
        };
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    fn peer_address(&self, view: Option<&ClusterView>, name: &str) -> Option<(String, u16)> {
        view.and_then(|v| v.member(name))
            .map(|m| (m.state.host.clone(), m.state.pg_port))
    }

    async fn carry_out(
        &mut self,
        action: Action,
        view: Option<&ClusterView>,
        lease_now: LeaseHold,
    ) -> anyhow::Result<()> {
        match action {
            Action::Wait => {}
            Action::Fence => {
                // Past the renew deadline every moment counts: stop at once. Fenced by an
                // operator while holding the lease, shut down cleanly: the replicas receive
                // every byte and the stopped server's position is exact.
                let operator = self.shared.fenced_by_operator.load(Ordering::SeqCst);
                let clean = operator
                    && self
                        .member
                        .may_write(lease_now, self.started.elapsed(), false);
                self.primary_pid.store(0, Ordering::SeqCst);
                self.pg.stop(!clean).await?;
                self.configured_sync = None;
            }
            Action::AcquireLease => {
                let sent = self.now_instant();
                if self.store.renew().await? == Renewal::Renewed && self.store.acquire().await? {
                    let mut clock = self.lease.lock().unwrap();
                    clock.leader = true;
                    clock.renewed_at = Some(clock.renewed_at.map_or(sent, |r| r.max(sent)));
                    tracing::info!("acquired the leader lease");
                }
            }
            Action::ReleaseLease => {
                // Fenced by an operator (stopped cleanly): let the replicas receive the end.
                self.wait_for_replicas_to_receive_everything().await;
                // Not the leader from here on, whether or not the release gets through.
                self.lease.lock().unwrap().leader = false;
                self.store.release().await?;
            }
            Action::Bootstrap => {
                self.busy = true;
                let result = self.bootstrap().await;
                self.busy = false;
                result?;
            }
            Action::StartPrimary => {
                self.pg.clear_rewind_needed()?;
                self.pg
                    .set_standby_names_before_start(self.strict_standby_names(view));
                self.start(StartAs::Primary, None).await?;
            }
            Action::Clone { from } => {
                let (host, port) = self
                    .peer_address(view, &from)
                    .context("the leader has published no address")?;
                self.busy = true;
                let result = self.pg.clone_from(&host, port).await;
                self.busy = false;
                result?;
                self.start(
                    StartAs::Replica {
                        upstream: Some((host, port)),
                    },
                    Some(from),
                )
                .await?;
            }
            Action::StartReplica { upstream } => {
                // A former primary started as a replica without a rewind (crash recovery in a
                // vacancy) must rewind before it follows anyone: remember that on disk.
                if let Ok(Server::Stopped {
                    was_primary: true, ..
                }) = self.pg.stopped_state()
                {
                    self.pg.mark_rewind_needed()?;
                }
                let address = upstream.as_deref().and_then(|u| self.peer_address(view, u));
                self.start(StartAs::Replica { upstream: address }, upstream)
                    .await?;
            }
            Action::Repoint { upstream } => {
                let address = self.peer_address(view, &upstream);
                self.pg.set_upstream(address).await?;
                self.upstream_name = Some(upstream);
            }
            Action::StopReceiver => {
                self.pg.set_upstream(None).await?;
                self.upstream_name = None;
            }
            Action::Promote => {
                // Commits wait for the known replicas from the first one on, before the
                // synchronous set is brought up to date.
                let names = self.strict_standby_names(view);
                self.pg
                    .set_synchronous_standby_names_in_recovery(names)
                    .await?;
                // Watched from before it can accept writes.
                self.watch_primary();
                self.busy = true;
                let result = self.pg.promote().await;
                self.busy = false;
                result?;
                self.configured_sync = None;
                self.pg.clear_rewind_needed()?;
                tracing::info!("promoted");
            }
            Action::Rejoin { upstream } => {
                let (host, port) = self
                    .peer_address(view, &upstream)
                    .context("the leader has published no address")?;
                self.busy = true;
                let result = self.rejoin(&host, port).await;
                self.busy = false;
                result?;
                self.start(
                    StartAs::Replica {
                        upstream: Some((host, port)),
                    },
                    Some(upstream),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn start(&mut self, role: StartAs, upstream: Option<String>) -> anyhow::Result<()> {
        let primary = role == StartAs::Primary;
        if !primary {
            // A replica carries the strict setting from its start (it has no effect during
            // recovery), so a promotion never runs even briefly without it.
            let names = self.strict_standby_names(self.last_view.as_ref());
            self.pg.set_standby_names_before_start(names);
        }
        self.busy = true;
        let result = self.pg.start(role).await;
        self.busy = false;
        result?;
        self.upstream_name = upstream;
        if primary {
            self.configured_sync = None;
            self.watch_primary();
        }
        Ok(())
    }

    /// Keeps the push-ahead worker running as a task while segments wait for archiving:
    /// PostgreSQL's `walarch wal-push` calls then find them stored already. The worker stops
    /// by itself when idle (and is started again by a later round).
    fn keep_push_worker(&mut self) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        if self.push_worker.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let pg_wal = self.config.pg.pgdata.join("pg_wal");
        let waiting = std::fs::read_dir(pg_wal.join("archive_status")).is_ok_and(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "ready"))
        });
        if !waiting {
            return;
        }
        let cancel = self.cancel.clone();
        self.push_worker = Some(tokio::spawn(async move {
            match engine.run_push_worker(&pg_wal, &cancel).await {
                Ok(Some(report)) => tracing::debug!(?report, "push-ahead worker finished"),
                Ok(None) => {} // another worker holds the spool
                Err(e) => tracing::warn!("push-ahead worker: {e}"),
            }
        }));
    }

    /// A planned switchover to `to`: record the choice, checkpoint, stop, archive what is left,
    /// give the lease up. The chosen replica (which then has every byte of WAL) takes it.
    async fn switch_over(&mut self, to: &str, view: &ClusterView) -> anyhow::Result<()> {
        let target_ok = view
            .member(to)
            .is_some_and(|m| m.state.role == PublishedRole::Replica);
        if !target_ok || to == self.config.name {
            tracing::warn!(to, "switchover refused: not a replica of this cluster");
            return Ok(());
        }
        if !self.store.request_switchover(to).await? {
            anyhow::bail!("switchover: this member no longer holds the lease");
        }
        tracing::info!(to, "switchover: checkpoint, stop, archive, release");
        if let Ok(client) = self.pg.connect().await {
            let _ = client.execute("CHECKPOINT", &[]).await;
        }
        self.primary_pid.store(0, Ordering::SeqCst);
        self.busy = true;
        let stopped = self.pg.stop(false).await;
        self.busy = false;
        stopped?;
        if let Some(repo) = &self.config.repo {
            let archived = archive_leftovers(
                self.config.engine_config(repo.clone()),
                &self.config.pg.pgdata,
            )
            .await?;
            tracing::info!(archived, "switchover: the rest of the WAL is archived");
        }
        self.wait_for_replicas_to_receive_everything().await;
        self.lease.lock().unwrap().leader = false;
        self.configured_sync = None;
        self.store.release().await?;
        Ok(())
    }

    /// After a clean stop, before giving the lease up: waits (at most a TTL) until every
    /// replica has published a position at or past this server's shutdown checkpoint. The
    /// WAL was sent before the stop finished, but a replica may still be flushing it: a
    /// vacancy that began now would compare positions that are still growing, and whoever
    /// led might lack the last records another replica has (a divergence pg_rewind would have
    /// to repair).
    async fn wait_for_replicas_to_receive_everything(&self) {
        let Ok(Server::Stopped {
            position,
            clean: true,
            ..
        }) = self.pg.stopped_state()
        else {
            return;
        };
        let deadline = Instant::now() + self.config.timings.ttl;
        while Instant::now() < deadline {
            let behind: Vec<String> = match self.store.view().await {
                Ok(view) => view
                    .members
                    .iter()
                    .filter(|m| m.state.role == PublishedRole::Replica)
                    .filter(|m| m.state.received_lsn < position.received)
                    .map(|m| m.state.name.clone())
                    .collect(),
                Err(_) => return,
            };
            if behind.is_empty() {
                return;
            }
            tracing::debug!(?behind, "waiting for replicas to receive the last WAL");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!("replicas did not report the last WAL within a TTL; stepping down anyway");
    }

    /// `synchronous_standby_names` for a server about to accept writes: the recorded set
    /// without this member (or a name nobody has), so no commit is acknowledged unprotected.
    fn strict_standby_names(&self, view: Option<&ClusterView>) -> String {
        let known: Vec<String> = view
            .and_then(|v| v.sync.as_ref())
            .map(|s| {
                s.members
                    .iter()
                    .filter(|m| **m != self.config.name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Never a lower quorum than the record promises: a manager restarted with a lower
        // --sync-replicas must not acknowledge commits on fewer members before its first
        // round lowers the record.
        let recorded = view.and_then(|v| v.sync.as_ref()).map_or(0, |s| s.quorum);
        synchronous::standby_names_setting(self.config.sync_replicas.max(recorded), &known)
    }

    /// Hands the postmaster's pid to the fencing watchdog.
    fn watch_primary(&self) {
        if let Some(pid) = self.pg.pid() {
            self.primary_pid.store(pid, Ordering::SeqCst);
        }
    }

    /// Initializes the cluster: `initdb`, or a recovery bootstrap — which, failed at any
    /// point, is discarded at once (server stopped, directories removed) to begin again
    /// from nothing at the next round, never left to be started as it is.
    async fn bootstrap(&mut self) -> anyhow::Result<()> {
        let result = self.bootstrap_once().await;
        if result.is_err() && self.pg.bootstrap_in_progress() {
            self.primary_pid.store(0, Ordering::SeqCst);
            self.pg.stop(true).await?;
            self.pg.discard_unfinished_bootstrap()?;
        }
        result
    }

    async fn bootstrap_once(&mut self) -> anyhow::Result<()> {
        match self.config.recovery.clone() {
            None => self.pg.initdb().await?,
            Some(recovery) => self.restore_for_bootstrap(&recovery).await?,
        }
        // Commits wait for a replica from the first one on (strict synchronous mode).
        self.pg
            .start_with_standby_names(synchronous::standby_names_setting(
                self.config.sync_replicas,
                &[],
            ))
            .await?;
        self.watch_primary();
        if self.config.recovery.is_some() {
            self.pg.wait_until_promoted().await?;
            self.pg.finish_recovery_bootstrap().await?;
            tracing::info!("recovered and promoted: the cluster archives into its own repository");
        }
        let bytes = std::fs::read(self.config.pg.pgdata.join("global/pg_control"))?;
        let system_id = walarch_core::wal::system_id_from_pg_control(&bytes)?;
        if !self.store.initialize(&system_id.get().to_string()).await? {
            anyhow::bail!("another member initialized the cluster first");
        }
        tracing::info!(system_id = system_id.get(), "initialized the cluster");
        Ok(())
    }

    /// Restores the data directory from the recovery source: planned first (an unreachable
    /// target fails here, before anything is written), restored beside the data directory and
    /// moved into place whole, marked until the recovered server is promoted.
    async fn restore_for_bootstrap(&mut self, recovery: &RecoveryBootstrap) -> anyhow::Result<()> {
        // The source is only read: no segment summaries are stored in it.
        let mut source_config = self.config.engine_config(recovery.source.clone());
        source_config.segment_summaries = false;
        let source = Engine::open(source_config)?;
        let plan = source
            .plan(&recovery.target, recovery.backup.as_ref(), &self.cancel)
            .await
            .context("planning the recovery bootstrap")?;
        tracing::info!(
            backup = %plan.plan().backup.id,
            target = %plan.plan().target,
            "restoring for the recovery bootstrap"
        );
        let pgdata = self.config.pg.pgdata.clone();
        let staging = self.pg.staging_dir();
        self.pg.mark_bootstrap()?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        let program = self
            .config
            .walarch_bin
            .clone()
            .context("a recovery bootstrap needs the walarch binary (--walarch-bin)")?;
        let mut request = RestoreRequest::new(
            &staging,
            RestoreCommand::Walarch {
                program,
                config_file: None,
                encryption_key_file: self.config.encryption_key_file.clone(),
            },
        );
        request.target_action = Some(TargetAction::Promote);
        source
            .restore(
                &plan,
                request,
                Arc::new(walarch_core::backup::Progress::default()),
                &self.cancel,
            )
            .await
            .context("restoring the recovery bootstrap")?;
        let set_here: Vec<String> = self
            .config
            .pg
            .settings
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        postgres::Postgres::drop_inherited_settings(&staging, &set_here)?;
        if pgdata.exists() {
            std::fs::remove_dir_all(&pgdata)?;
        }
        std::fs::rename(&staging, &pgdata)?;
        if let Some(parent) = pgdata.parent() {
            walarch_core::local_files::sync_dir(parent)?;
        }
        self.pg.relocate_wal()?;
        Ok(())
    }

    /// A returning old primary: archive what it never archived, then rewind to the leader's
    /// timeline (or copy the leader again when rewinding fails).
    async fn rejoin(&mut self, host: &str, port: u16) -> anyhow::Result<()> {
        if let Some(repo) = &self.config.repo {
            let archived = archive_leftovers(
                self.config.engine_config(repo.clone()),
                &self.config.pg.pgdata,
            )
            .await?;
            tracing::info!(
                archived,
                "archived the old primary's remaining WAL before rewinding"
            );
        }
        // A former primary recovered as a replica meanwhile: stop it cleanly first.
        self.pg.stop(false).await?;
        match self.pg.rewind_from(host, port).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("rewind failed, copying the leader instead: {e:#}");
                self.pg.clone_from(host, port).await?;
            }
        }
        self.pg.clear_rewind_needed()
    }

    async fn keep_synchronous_set(
        &mut self,
        view: &ClusterView,
        running: &postgres::Running,
    ) -> anyhow::Result<()> {
        // Only members count: pg_basebackup's WAL stream, or any other client, is no replica.
        let streaming: Vec<(String, u64)> = running
            .streaming
            .iter()
            .filter(|(name, _)| view.member(name).is_some())
            .cloned()
            .collect();
        let step = synchronous::next_step(
            &self.config.name,
            self.config.sync_replicas,
            view.sync.as_ref(),
            self.configured_sync.as_ref(),
            &streaming,
        );
        match step {
            SyncStep::Keep => {}
            SyncStep::WriteRecord(record) => {
                tracing::info!(?record, "synchronous set record");
                self.store.set_sync(&record).await?;
            }
            SyncStep::Configure(names) => {
                let value = synchronous::standby_names_setting(self.config.sync_replicas, &names);
                tracing::info!(%value, "synchronous_standby_names");
                // Members PostgreSQL may still count under the old setting: those configured
                // before, and (after a manager restart, when that is unknown) every streaming
                // member outside the new set.
                // Going asynchronous needs none of this: the record was lowered to 0 first.
                let mut leaving: Vec<String> = self
                    .configured_sync
                    .iter()
                    .flat_map(|c| c.names.iter())
                    .chain(streaming.iter().map(|(name, _)| name))
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                leaving.sort();
                leaving.dedup();
                if self.config.sync_replicas == 0 {
                    leaving.clear();
                }
                let effective_at = self
                    .pg
                    .set_synchronous_standby_names(value, &leaving)
                    .await?;
                self.configured_sync = Some(Configured {
                    names,
                    effective_at,
                });
            }
        }
        Ok(())
    }
}

/// Archives every segment PostgreSQL marked `.ready` and marks it `.done`, as its archiver
/// would have: the old primary's last WAL reaches the repository before a rewind.
async fn archive_leftovers(
    config: EngineConfig,
    pgdata: &std::path::Path,
) -> anyhow::Result<usize> {
    let engine = Engine::open(config)?;
    let status_dir = pgdata.join("pg_wal/archive_status");
    let mut ready: Vec<PathBuf> = std::fs::read_dir(&status_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ready"))
        .collect();
    ready.sort();
    for marker in &ready {
        let name = marker.file_stem().context("a .ready file without a name")?;
        let file = pgdata.join("pg_wal").join(name);
        engine
            .push(&file, Some(pgdata))
            .await
            .with_context(|| format!("archiving {}", file.display()))?;
        std::fs::rename(marker, marker.with_extension("done"))?;
    }
    Ok(ready.len())
}

fn archive_status(pgdata: &std::path::Path, running: Option<&postgres::Running>) -> ArchiveStatus {
    let backlog = std::fs::read_dir(pgdata.join("pg_wal/archive_status"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "ready"))
                .count() as u64
        })
        .unwrap_or(0);
    ArchiveStatus {
        backlog,
        last_archived: running.and_then(|r| r.last_archived.clone()),
        last_archived_age_seconds: running.and_then(|r| r.last_archived_age_seconds),
    }
}

/// Reads the repository's newest backup once a minute for `/status` and `/metrics`.
async fn watch_backups(engine: Arc<Engine>, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        match engine.backups().await {
            Ok(list) => {
                let newest = list.backups.iter().map(|b| b.completed_at).max();
                *shared.last_backup.lock().unwrap() = newest;
            }
            Err(e) => tracing::debug!("listing backups: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Renews the member's lease every quarter of the renew deadline, remembering when the last
/// successful renewal was sent.
async fn renew_forever<C: Coordination>(
    store: Arc<C>,
    lease: Arc<Mutex<LeaseClock>>,
    timings: Timings,
    cancel: CancellationToken,
) {
    let every = timings.renew_deadline / 4;
    loop {
        let sent = Instant::now();
        match store.renew().await {
            Ok(Renewal::Renewed) => {
                let mut clock = lease.lock().unwrap();
                clock.renewed_at = Some(clock.renewed_at.map_or(sent, |r| r.max(sent)));
            }
            Ok(Renewal::Lost) => {
                let mut clock = lease.lock().unwrap();
                clock.renewed_at = None;
                clock.leader = false;
            }
            Err(e) => tracing::debug!("renewing: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Stops a primary the moment its renew deadline passes, independent of the rounds (which
/// may be waiting on a slow store or server).
async fn fence_watchdog(
    lease: Arc<Mutex<LeaseClock>>,
    primary_pid: Arc<AtomicU32>,
    timings: Timings,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let pid = primary_pid.load(Ordering::SeqCst);
        if pid == 0 {
            continue;
        }
        let expired = {
            let clock = lease.lock().unwrap();
            !clock.leader
                || clock
                    .renewed_at
                    .is_none_or(|at| at.elapsed() >= timings.renew_deadline)
        };
        if expired {
            tracing::warn!(
                pid,
                "renew deadline passed: fencing (stopping PostgreSQL now)"
            );
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
            }
            primary_pid.store(0, Ordering::SeqCst);
        }
    }
}
