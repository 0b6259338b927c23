//! The decision logic under long random sequences of faults, against a model of everything
//! around it: a coordination store with leases that expire on the store's clock, PostgreSQL
//! servers that accept writes whenever they run as a primary (the lease means nothing to
//! them), streaming replication with random lag, synchronous commits acknowledged by the
//! configured quorum, and the manager's pieces as the real one has them (a renewer, a fencing
//! watchdog every 50 ms, rounds every 200 ms that may run late).
//!
//! Faults: members killed (manager and server, `kill -9`) and restarted, members cut off from
//! the store, the store down, rounds delayed (slow disks), clocks running up to 2 % fast or
//! slow. Checked at every 10 ms step:
//! - never two servers accepting writes at once;
//! - a promoted replica holds every write any primary acknowledged.
//!
//! And, so the safety cannot come from doing nothing: after the faults stop, a primary is
//! serving again, and across the seeds failovers happened.
//!
//! Assumption (as for Patroni without a watchdog device): a manager process is not frozen as a
//! whole for longer than the room between its renew deadline and the lease TTL. Wall-clock
//! jumps do not enter: the decision logic only takes the monotonic clock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use walarch_k8s::leadership::{ClusterView, MemberState, Published, PublishedRole, SyncState};
use walarch_k8s::member::{Action, LeaseHold, Member, Observation, Server, Timings, WalPosition};
use walarch_k8s::synchronous::{self, Configured, SyncStep};

const STEP_MS: u64 = 10;
const TTL_MS: u64 = 4000;
const TIMINGS: Timings = Timings {
    ttl: Duration::from_millis(TTL_MS),
    renew_deadline: Duration::from_millis(2500),
    failover_delay: Duration::ZERO,
};
const QUORUM: u32 = 1;
const NAMES: [&str; 3] = ["a", "b", "c"];

/// splitmix64: enough randomness for a reproducible test, not worth a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }
}

/// The coordination store: leases expire on its own clock.
#[derive(Default)]
struct Store {
    up: bool,
    revision: i64,
    next_lease: i64,
    leases: HashMap<i64, u64>,
    leader: Option<(String, i64)>,
    members: BTreeMap<String, (MemberState, i64, i64)>,
    sync: Option<SyncState>,
    initialized: bool,
}

impl Store {
    fn expire(&mut self, t: u64) {
        self.leases.retain(|_, expiry| *expiry > t);
        let leases = &self.leases;
        if self
            .leader
            .as_ref()
            .is_some_and(|(_, id)| !leases.contains_key(id))
        {
            self.leader = None;
            self.revision += 1;
        }
        self.members.retain(|_, (_, _, id)| leases.contains_key(id));
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            revision: self.revision,
            leader: self.leader.as_ref().map(|(n, _)| n.clone()),
            members: self
                .members
                .values()
                .map(|(state, rev, _)| Published {
                    state: state.clone(),
                    revision: *rev,
                })
                .collect(),
            sync: self.sync.clone(),
            initialized: self.initialized.then(|| "1".to_owned()),
            switchover: None,
        }
    }

    /// Renews `lease` (granting a new one if it expired): its id.
    fn renew(&mut self, lease: Option<i64>, t: u64) -> (i64, bool) {
        match lease {
            Some(id) if self.leases.contains_key(&id) => {
                self.leases.insert(id, t + TTL_MS);
                (id, true)
            }
            _ => {
                self.next_lease += 1;
                self.leases.insert(self.next_lease, t + TTL_MS);
                (self.next_lease, lease.is_none())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Pg {
    Absent,
    Stopped { was_primary: bool, clean: bool },
    Primary,
    Replica { upstream: Option<String> },
}

struct Node {
    name: String,
    alive: bool,
    started_at: u64,
    rate: f64,
    member: Member,
    lease: Option<i64>,
    renewed_at: Option<Duration>,
    leader: bool,
    next_round: u64,
    next_renew: u64,
    cut_until: u64,
    restart_at: u64,
    pg: Pg,
    /// The WAL: write ids in order.
    log: Vec<u64>,
    timeline: u32,
    standby_names: Vec<String>,
    configured: Option<Configured>,
    /// A former primary running as a replica without a rewind (the manager's marker file).
    rewind_needed: bool,
    /// How much of `log` its server has replayed since it started: after a start a replica
    /// reports only this until its receiver streams (everything in pg_wal is replayed first).
    replayed: usize,
    /// Its receiver has streamed since the server started.
    streamed: bool,
    /// Its replay has not moved for a TTL (as the manager measures it).
    still_for_a_ttl: bool,
    /// Replay position and since when it stood still (own step time).
    still: (usize, u64),
}

impl Node {
    fn new(name: &str, rate: f64) -> Node {
        Node {
            name: name.to_owned(),
            alive: true,
            started_at: 0,
            rate,
            member: Member::new(name, TIMINGS),
            lease: None,
            renewed_at: None,
            leader: false,
            next_round: 0,
            next_renew: 0,
            cut_until: 0,
            restart_at: 0,
            pg: Pg::Absent,
            log: Vec::new(),
            timeline: 0,
            standby_names: Vec::new(),
            configured: None,
            rewind_needed: false,
            replayed: 0,
            streamed: false,
            still_for_a_ttl: false,
            still: (0, 0),
        }
    }

    fn own_now(&self, t: u64) -> Duration {
        Duration::from_millis(((t - self.started_at) as f64 * self.rate) as u64)
    }

    fn reachable(&self, store: &Store, t: u64) -> bool {
        self.alive && store.up && t >= self.cut_until
    }

    /// What the server reports: a running replica that has not streamed since its start,
    /// only what it replayed; otherwise all it holds.
    fn position(&self) -> WalPosition {
        let n = match self.pg {
            Pg::Replica { .. } if !self.streamed => self.replayed,
            _ => self.log.len(),
        } as u64;
        WalPosition {
            received: n,
            replayed: n,
        }
    }

    /// A server (re)starts as a replica: replay begins somewhere before the end of its WAL.
    fn start_replica(&mut self, upstream: Option<String>, rng: &mut Rng, t: u64) {
        self.pg = Pg::Replica { upstream };
        self.streamed = false;
        self.replayed = rng.below(self.log.len() as u64 + 1) as usize;
        self.still = (self.replayed, t);
    }

    fn server(&self) -> Server {
        match &self.pg {
            Pg::Absent => Server::Absent,
            Pg::Stopped { was_primary, clean } => Server::Stopped {
                was_primary: *was_primary || self.rewind_needed,
                timeline: self.timeline,
                position: self.position(),
                clean: *clean,
            },
            Pg::Primary => Server::Primary {
                timeline: self.timeline,
                lsn: self.log.len() as u64,
            },
            Pg::Replica { upstream } => Server::Replica {
                timeline: self.timeline,
                position: self.position(),
                receiver_running: upstream.is_some(),
                upstream: upstream.clone(),
                was_primary: self.rewind_needed,
                complete: self.streamed || self.still_for_a_ttl,
            },
        }
    }

    fn lease_hold(&self) -> LeaseHold {
        match (self.leader, self.renewed_at) {
            (true, Some(at)) => LeaseHold::Held {
                valid_until: at + TIMINGS.renew_deadline,
            },
            _ => LeaseHold::NotHeld,
        }
    }
}

struct World {
    t: u64,
    rng: Rng,
    store: Store,
    nodes: Vec<Node>,
    next_write: u64,
    /// Writes waiting for their synchronous acknowledgement: (id, primary).
    pending: Vec<(u64, usize)>,
    acknowledged: Vec<u64>,
    promotions: usize,
    /// Recent decisions and their effects, for failure messages.
    events: std::collections::VecDeque<String>,
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng(seed);
        let nodes = NAMES
            .iter()
            .map(|n| Node::new(n, 0.98 + rng.below(41) as f64 / 1000.0))
            .collect();
        World {
            t: 0,
            rng,
            store: Store {
                up: true,
                ..Store::default()
            },
            nodes,
            next_write: 1,
            pending: Vec::new(),
            acknowledged: Vec::new(),
            promotions: 0,
            events: std::collections::VecDeque::new(),
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn step(&mut self, faults: bool) {
        self.t += STEP_MS;
        let t = self.t;
        self.store.expire(t);
        if faults {
            self.inject_faults();
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                if t >= self.nodes[i].restart_at {
                    self.restart(i);
                }
                continue;
            }
            if t.is_multiple_of(50) {
                self.watchdog(i);
            }
            if t >= self.nodes[i].next_renew {
                self.renew(i);
            }
            if t >= self.nodes[i].next_round {
                self.round(i);
                let late = if faults && self.rng.chance(20_000) {
                    self.rng.below(600)
                } else {
                    0
                };
                self.nodes[i].next_round = t + 200 + late;
            }
        }
        self.replicate();
        self.write_and_acknowledge();
        let writers: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.alive && n.pg == Pg::Primary)
            .map(|n| n.name.as_str())
            .collect();
        assert!(
            writers.len() <= 1,
            "t={t} ms: two servers accept writes: {writers:?}"
        );
    }

    fn inject_faults(&mut self) {
        let t = self.t;
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive && self.rng.chance(300) {
                // kill -9 of the manager and its server.
                let line = format!("t={t} {} killed", self.nodes[i].name);
                self.note(line);
                let node = &mut self.nodes[i];
                node.alive = false;
                node.restart_at = t + 1000 + self.rng.below(8000);
                if matches!(node.pg, Pg::Primary | Pg::Replica { .. }) {
                    let was_primary = node.pg == Pg::Primary;
                    node.pg = Pg::Stopped {
                        was_primary,
                        clean: false,
                    };
                }
            }
            if self.nodes[i].alive && self.rng.chance(400) {
                self.nodes[i].cut_until = t + 1000 + self.rng.below(9000);
            }
        }
        if self.store.up && self.rng.chance(60) {
            self.store.up = false;
        } else if !self.store.up && self.rng.chance(2000) {
            // etcd extends every lease when it comes back.
            self.store.up = true;
            for expiry in self.store.leases.values_mut() {
                *expiry = t + TTL_MS;
            }
        }
    }

    fn restart(&mut self, i: usize) {
        let t = self.t;
        let node = &mut self.nodes[i];
        node.alive = true;
        node.started_at = t;
        node.member = Member::new(node.name.clone(), TIMINGS);
        node.lease = None;
        node.renewed_at = None;
        node.leader = false;
        node.next_round = t;
        node.next_renew = t;
        node.standby_names.clear();
        node.configured = None;
    }

    fn watchdog(&mut self, i: usize) {
        let now = self.nodes[i].own_now(self.t);
        let node = &mut self.nodes[i];
        if node.pg == Pg::Primary {
            let expired = !node.leader
                || node
                    .renewed_at
                    .is_none_or(|at| now >= at + TIMINGS.renew_deadline);
            if expired {
                node.pg = Pg::Stopped {
                    was_primary: true,
                    clean: false,
                };
            }
        }
    }

    fn renew(&mut self, i: usize) {
        let t = self.t;
        self.nodes[i].next_renew = t + 625;
        if !self.nodes[i].reachable(&self.store, t) {
            return;
        }
        let now = self.nodes[i].own_now(t);
        let (id, renewed) = self.store.renew(self.nodes[i].lease, t);
        let node = &mut self.nodes[i];
        if renewed {
            node.renewed_at = Some(now);
        } else {
            // Lost: the old lease expired (the new one serves from the next renewal).
            node.renewed_at = None;
            node.leader = false;
        }
        node.lease = Some(id);
    }

    fn round(&mut self, i: usize) {
        let t = self.t;
        let reachable = self.nodes[i].reachable(&self.store, t);
        let view = reachable.then(|| self.store.view());
        if view
            .as_ref()
            .is_some_and(|v| v.leader.as_deref() != Some(self.nodes[i].name.as_str()))
        {
            self.nodes[i].leader = false;
        }
        let server = self.nodes[i].server();
        if reachable {
            self.publish(i, &server);
        }
        let now = self.nodes[i].own_now(t);
        let lease = self.nodes[i].lease_hold();
        let action = self.nodes[i].member.decide(&Observation {
            now,
            view: view.as_ref(),
            lease,
            server,
            fenced_by_operator: false,
        });
        if action != Action::Wait {
            let node = &self.nodes[i];
            let line = format!(
                "t={t} {} {:?} (log {} pos {:?} tl {}, view leader {:?} sync {:?})",
                node.name,
                action,
                node.log.len(),
                node.position().received,
                node.timeline,
                view.as_ref().and_then(|v| v.leader.clone()),
                view.as_ref().and_then(|v| v.sync.clone()),
            );
            self.note(line);
        }
        self.apply(i, action, view.as_ref());
        let may_write = self.nodes[i].member.may_write(lease, now, false);
        if let (true, Some(view), Pg::Primary) = (may_write, &view, &self.nodes[i].pg) {
            self.keep_synchronous_set(i, view);
        }
    }

    fn publish(&mut self, i: usize, server: &Server) {
        let t = self.t;
        // As the real one: the record goes with the member's lease (granted if it has none),
        // and publishing does not extend it; with an expired lease the put fails.
        let id = match self.nodes[i].lease {
            Some(id) if self.store.leases.contains_key(&id) => id,
            Some(_) => return,
            None => {
                let (id, _) = self.store.renew(None, t);
                self.nodes[i].lease = Some(id);
                id
            }
        };
        let node = &self.nodes[i];
        let role = match server {
            Server::Primary { .. } => PublishedRole::Primary,
            Server::Replica { .. } => PublishedRole::Replica,
            Server::Stopped { .. } => PublishedRole::Stopped,
            _ => PublishedRole::Starting,
        };
        let state = MemberState {
            name: node.name.clone(),
            role,
            timeline: node.timeline,
            received_lsn: node.position().received,
            replayed_lsn: node.position().replayed,
            position_final: matches!(
                server,
                Server::Stopped { clean: true, .. } | Server::Replica { complete: true, .. }
            ),
            host: String::new(),
            pg_port: 0,
            http: String::new(),
            archive_backlog: None,
        };
        self.store.revision += 1;
        self.store
            .members
            .insert(node.name.clone(), (state, self.store.revision, id));
    }

    fn strict_names(&self, i: usize, view: Option<&ClusterView>) -> Vec<String> {
        view.and_then(|v| v.sync.as_ref())
            .map(|s| {
                s.members
                    .iter()
                    .filter(|m| **m != self.nodes[i].name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn apply(&mut self, i: usize, action: Action, view: Option<&ClusterView>) {
        let t = self.t;
        let reachable = self.nodes[i].reachable(&self.store, t);
        let me = self.nodes[i].name.clone();
        match action {
            Action::Wait => {}
            Action::Fence => {
                self.nodes[i].pg = Pg::Stopped {
                    was_primary: true,
                    clean: false,
                }
            }
            Action::AcquireLease if reachable => {
                self.renew(i);
                if self.nodes[i].renewed_at.is_some() && self.store.leader.is_none() {
                    self.store.leader = Some((me, self.nodes[i].lease.unwrap()));
                    self.store.revision += 1;
                    self.nodes[i].leader = true;
                }
            }
            Action::AcquireLease => {}
            Action::ReleaseLease => {
                if reachable && self.store.leader.as_ref().is_some_and(|(n, _)| *n == me) {
                    self.store.leader = None;
                    self.store.revision += 1;
                }
                self.nodes[i].leader = false;
            }
            Action::Bootstrap if reachable && !self.store.initialized => {
                self.store.initialized = true;
                let node = &mut self.nodes[i];
                node.pg = Pg::Primary;
                node.timeline = 1;
                node.log.clear();
                node.standby_names.clear();
                node.configured = None;
            }
            Action::Bootstrap => {}
            Action::StartPrimary => {
                let names = self.strict_names(i, view);
                let node = &mut self.nodes[i];
                node.rewind_needed = false;
                node.standby_names = names;
                node.configured = None;
                node.pg = Pg::Primary;
            }
            Action::Clone { from } => {
                if let Some(j) = self.index(&from).filter(|&j| self.serving(j)) {
                    let (log, timeline) = (self.nodes[j].log.clone(), self.nodes[j].timeline);
                    let node = &mut self.nodes[i];
                    node.log = log;
                    node.rewind_needed = false;
                    node.timeline = timeline;
                    node.start_replica(Some(from), &mut self.rng, t);
                }
            }
            Action::StartReplica { upstream } => {
                let node = &mut self.nodes[i];
                if matches!(
                    node.pg,
                    Pg::Stopped {
                        was_primary: true,
                        ..
                    }
                ) {
                    node.rewind_needed = true;
                }
                node.start_replica(upstream, &mut self.rng, t);
            }
            Action::Repoint { upstream } => {
                self.nodes[i].pg = Pg::Replica {
                    upstream: Some(upstream),
                }
            }
            Action::StopReceiver => self.nodes[i].pg = Pg::Replica { upstream: None },
            Action::Promote => {
                let missing: Vec<u64> = self
                    .acknowledged
                    .iter()
                    .filter(|w| !self.nodes[i].log.contains(w))
                    .copied()
                    .collect();
                assert!(
                    missing.is_empty(),
                    "t={t} ms: {me} promoted without acknowledged writes {missing:?}; {}",
                    self.describe()
                );
                let names = self.strict_names(i, view);
                let node = &mut self.nodes[i];
                node.pg = Pg::Primary;
                node.rewind_needed = false;
                node.timeline += 1;
                node.standby_names = names;
                node.configured = None;
                self.promotions += 1;
            }
            Action::Rejoin { upstream } => {
                if let Some(j) = self.index(&upstream).filter(|&j| self.serving(j)) {
                    // Rewind: keep the common prefix, then follow.
                    let common = self.nodes[i]
                        .log
                        .iter()
                        .zip(&self.nodes[j].log)
                        .take_while(|(a, b)| a == b)
                        .count();
                    let timeline = self.nodes[j].timeline;
                    let node = &mut self.nodes[i];
                    node.log.truncate(common);
                    node.rewind_needed = false;
                    node.timeline = timeline;
                    node.start_replica(Some(upstream), &mut self.rng, t);
                }
            }
        }
    }

    /// Keeps the last 40 events.
    fn note(&mut self, line: String) {
        if self.events.len() == 40 {
            self.events.pop_front();
        }
        self.events.push_back(line);
    }

    fn describe(&self) -> String {
        let recent: Vec<&str> = self.events.iter().map(String::as_str).collect();
        let mut out = format!("\n{}\n", recent.join("\n"));
        out += &format!(
            "leader {:?}, sync {:?}, initialized {}; ",
            self.store.leader, self.store.sync, self.store.initialized
        );
        for n in &self.nodes {
            out.push_str(&format!(
                "{}: alive {} pg {:?} log {} replayed {} streamed {} tl {} leader {} lease {:?}; ",
                n.name,
                n.alive,
                n.pg,
                n.log.len(),
                n.replayed,
                n.streamed,
                n.timeline,
                n.leader,
                n.lease
            ));
        }
        out
    }

    fn serving(&self, j: usize) -> bool {
        self.nodes[j].alive && self.nodes[j].pg == Pg::Primary
    }

    fn keep_synchronous_set(&mut self, i: usize, view: &ClusterView) {
        let me = self.nodes[i].name.clone();
        let streaming: Vec<(String, u64)> = self
            .nodes
            .iter()
            .filter(|n| {
                n.alive
                    && n.pg
                        == (Pg::Replica {
                            upstream: Some(me.clone()),
                        })
            })
            .filter(|n| self.nodes[i].log.starts_with(&n.log))
            .map(|n| (n.name.clone(), n.log.len() as u64))
            .collect();
        match synchronous::next_step(
            &me,
            QUORUM,
            view.sync.as_ref(),
            self.nodes[i].configured.as_ref(),
            &streaming,
        ) {
            SyncStep::Keep => {}
            SyncStep::WriteRecord(record) => {
                self.note(format!("t={} {me} sync record {record:?}", self.t));
                if self.store.leader.as_ref().is_some_and(|(n, _)| *n == me) {
                    self.store.sync = Some(record);
                    self.store.revision += 1;
                }
            }
            SyncStep::Configure(names) => {
                self.note(format!("t={} {me} configure {names:?}", self.t));
                let node = &mut self.nodes[i];
                node.standby_names = names.clone();
                node.configured = Some(Configured {
                    names,
                    effective_at: node.log.len() as u64,
                });
            }
        }
    }

    fn replicate(&mut self) {
        let t = self.t;
        for node in &mut self.nodes {
            // Replay catches up with what the server holds.
            if node.alive && matches!(node.pg, Pg::Replica { .. }) {
                if node.replayed < node.log.len() && self.rng.chance(500_000) {
                    node.replayed = (node.replayed + 3).min(node.log.len());
                }
                if node.still.0 != node.replayed {
                    node.still = (node.replayed, t);
                }
                node.still_for_a_ttl = t - node.still.1 >= TTL_MS;
            } else {
                node.replayed = node.log.len();
            }
        }
        for i in 0..self.nodes.len() {
            let Pg::Replica {
                upstream: Some(upstream),
            } = self.nodes[i].pg.clone()
            else {
                continue;
            };
            if !self.nodes[i].alive {
                continue;
            }
            let Some(j) = self.index(&upstream).filter(|&j| self.serving(j)) else {
                continue;
            };
            let have = self.nodes[i].log.len();
            if !self.nodes[j].log.starts_with(&self.nodes[i].log) || have >= self.nodes[j].log.len()
            {
                continue;
            }
            let more = (1 + self.rng.below(3) as usize).min(self.nodes[j].log.len() - have);
            // The receiver starts only after pg_wal was replayed.
            if self.nodes[i].replayed >= have && self.rng.chance(500_000) {
                let next: Vec<u64> = self.nodes[j].log[have..have + more].to_vec();
                self.nodes[i].log.extend(next);
                self.nodes[i].timeline = self.nodes[j].timeline;
                self.nodes[i].streamed = true;
            }
        }
    }

    fn write_and_acknowledge(&mut self) {
        let writer = (0..self.nodes.len()).find(|&p| self.serving(p));
        if let (Some(p), true) = (writer, self.rng.chance(300_000)) {
            let id = self.next_write;
            self.next_write += 1;
            self.nodes[p].log.push(id);
            self.pending.push((id, p));
        }
        let mut still = Vec::new();
        for (id, p) in std::mem::take(&mut self.pending) {
            if !self.serving(p) {
                continue; // the client saw an error: not acknowledged
            }
            let names = &self.nodes[p].standby_names;
            let holders = names
                .iter()
                .filter_map(|n| self.index(n))
                .filter(|&j| self.nodes[j].log.contains(&id))
                .count();
            if holders >= QUORUM as usize {
                self.acknowledged.push(id);
            } else {
                still.push((id, p));
            }
        }
        self.pending = still;
    }
}

#[test]
fn no_two_writers_and_no_promotion_behind_an_acknowledged_commit_under_random_faults() {
    let seeds: u64 = std::env::var("WALARCH_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (mut promotions, mut acknowledged) = (0, 0);
    for seed in 0..seeds {
        let mut world = World::new(seed);
        // 90 s of faults, then 30 s of calm in which the cluster must serve again.
        for _ in 0..(90_000 / STEP_MS) {
            world.step(true);
        }
        world.store.up = true;
        for node in &mut world.nodes {
            node.cut_until = 0;
        }
        let mut served = false;
        for _ in 0..(30_000 / STEP_MS) {
            world.step(false);
            served |= (0..world.nodes.len()).any(|p| world.serving(p));
        }
        assert!(
            served,
            "seed {seed}: no primary after 30 s without faults: {}",
            world.describe()
        );
        promotions += world.promotions;
        acknowledged += world.acknowledged.len();
    }
    eprintln!("{seeds} seeds: {promotions} promotions, {acknowledged} acknowledged writes");
    assert!(
        promotions > seeds as usize,
        "too few failovers happened to show anything"
    );
    assert!(acknowledged > 1000);
}
