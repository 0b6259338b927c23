//! What a member does, as a pure function of what it observes: its lease, its PostgreSQL
//! server, its peers' published states and its own monotonic clock. No I/O here: the
//! instance manager gathers an [`Observation`], asks [`Member::decide`] and carries the
//! [`Action`] out. That split is what lets the table tests and the randomized safety test
//! (`tests` below, `crate::simulation`) check every rule without a server.
//!
//! The safety rules this module holds (DESIGN §6):
//! - a member accepts writes only while it holds the lease and its renew deadline (counted
//!   from the *sending* of its last successful renewal, shorter than the TTL) has not passed:
//!   otherwise a running primary is fenced, before anything else is considered;
//! - without the coordination store, nothing changes but fencing;
//! - a replica tries to lead only when nobody holds the lease, after `failover_delay`, when it
//!   is the most advanced of the members that published after the vacancy (received LSN,
//!   replayed LSN, then name), and when it sees enough of the synchronous set that one of them
//!   must hold every acknowledged commit ([`may_try_to_lead`]);
//! - it promotes only holding the lease, with its WAL receiver stopped.

use std::time::Duration;

use crate::leadership::{ClusterView, PublishedRole, SyncState};

/// The lease settings every member of a cluster shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long the store keeps a lease after its last renewal.
    pub ttl: Duration,
    /// A leader that has not renewed successfully within this (counted from sending the last
    /// successful renewal) stops accepting writes. Must leave room for stopping PostgreSQL
    /// before `ttl`.
    pub renew_deadline: Duration,
    /// How long a vacancy must last before a replica tries to lead.
    pub failover_delay: Duration,
}

impl Timings {
    /// Checks the relation fencing depends on.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.ttl {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease TTL ({:?}): a leader must stop writing before its lease can expire for others",
                self.renew_deadline, self.ttl
            ));
        }
        if self.ttl < Duration::from_secs(2) {
            return Err(format!(
                "a lease TTL of {:?} is below etcd's minimum (2 s)",
                self.ttl
            ));
        }
        Ok(())
    }
}

/// Where a member's WAL stands (compared received first, then replayed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalPosition {
    /// Flushed locally (a replica's received LSN; a primary's or stopped server's last LSN).
    pub received: u64,
    /// Replayed.
    pub replayed: u64,
}

/// What the member's PostgreSQL is, as the manager saw it this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// No data directory yet.
    Absent,
    /// A data directory, no server running. `was_primary`: it last ran as a primary (its
    /// pg_control says "in production" or "shut down", not "in archive recovery"), or was
    /// started as a replica since only to recover, so it may have diverged.
    Stopped {
        /// It last ran as a primary.
        was_primary: bool,
        /// Its timeline.
        timeline: u32,
        /// Its last checkpoint's position: its end of WAL after a clean shutdown (the
        /// shutdown checkpoint is the last record), else a lower bound.
        position: WalPosition,
        /// It shut down cleanly, so `position` is exact.
        clean: bool,
    },
    /// The manager is initializing, cloning or starting it, or it runs but does not answer
    /// yet (a standby still recovering): nothing to decide but where a standby streams from.
    Busy {
        /// The member a running standby is configured to stream from.
        upstream: Option<String>,
    },
    /// Running, accepting writes.
    Primary {
        /// Its timeline.
        timeline: u32,
        /// Its insert position.
        lsn: u64,
    },
    /// Running in recovery.
    Replica {
        /// Its timeline.
        timeline: u32,
        /// Received and replayed.
        position: WalPosition,
        /// A WAL receiver process is running.
        receiver_running: bool,
        /// The member it is configured to stream from.
        upstream: Option<String>,
        /// It last ran as a primary and was started as a replica only to finish its crash
        /// recovery: it may have diverged from the next leader and must rewind first.
        was_primary: bool,
        /// `position` covers all the WAL it holds: it has streamed since it started (a
        /// standby replays its pg_wal before its receiver starts), or, with nothing to stream
        /// from, its replay has stood still for a TTL. Right after a start a replica reports
        /// only what it replayed so far, less than it may have flushed and acknowledged.
        complete: bool,
    },
}

/// The member's lease as the manager knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseHold {
    /// It holds the leader lease; it may write until `valid_until` (last successful renewal's
    /// send time + renew deadline), on the member's monotonic clock.
    Held {
        /// Writes must have stopped by then.
        valid_until: Duration,
    },
    /// It does not hold the leader lease.
    NotHeld,
}

/// One round's input.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The member's monotonic clock.
    pub now: Duration,
    /// The store's view this round; `None` when it could not be read.
    pub view: Option<&'a ClusterView>,
    /// The member's lease.
    pub lease: LeaseHold,
    /// Its server.
    pub server: Server,
    /// An operator fenced this member (`POST /fence`).
    pub fenced_by_operator: bool,
}

/// What the manager should do now (one action per round; the next round sees its effect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    Wait,
    /// Stop accepting writes now: stop PostgreSQL at once.
    Fence,
    /// Try to take the leader lease.
    AcquireLease,
    /// Give the leader lease up.
    ReleaseLease,
    /// Initialize a new cluster (holding the lease, nothing recorded yet) and start it.
    Bootstrap,
    /// Start the existing data directory as the primary (holding the lease).
    StartPrimary,
    /// Copy the leader's data into the empty data directory and stream from it.
    Clone {
        /// The leader.
        from: String,
    },
    /// Start the data directory as a replica of `upstream` (none: of the archive only).
    StartReplica {
        /// Whom to stream from.
        upstream: Option<String>,
    },
    /// Stream from another member.
    Repoint {
        /// The new upstream.
        upstream: String,
    },
    /// Stop the WAL receiver (before promoting).
    StopReceiver,
    /// Promote the replica (holding the lease, receiver stopped).
    Promote,
    /// The data directory last ran as a primary but another member leads: archive what it
    /// has not archived, then rewind (or re-clone) and follow `upstream`.
    Rejoin {
        /// The leader.
        upstream: String,
    },
}

/// The decision state a member keeps between rounds.
#[derive(Debug, Clone)]
pub struct Member {
    name: String,
    timings: Timings,
    /// When (store revision, own clock) this member first saw the lease vacant; reset when a
    /// leader is seen.
    vacancy: Option<(i64, Duration)>,
}

impl Member {
    /// A member named `name` with the cluster's `timings`.
    pub fn new(name: impl Into<String>, timings: Timings) -> Member {
        Member {
            name: name.into(),
            timings,
            vacancy: None,
        }
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the member may accept writes at `now` with `lease`.
    pub fn may_write(&self, lease: LeaseHold, now: Duration, fenced_by_operator: bool) -> bool {
        matches!(lease, LeaseHold::Held { valid_until } if now < valid_until) && !fenced_by_operator
    }

    /// The one thing to do this round.
    pub fn decide(&mut self, obs: &Observation<'_>) -> Action {
        let may_write = self.may_write(obs.lease, obs.now, obs.fenced_by_operator);
        // Fencing comes before everything, and needs nothing from the store.
        if matches!(obs.server, Server::Primary { .. }) && !may_write {
            return Action::Fence;
        }
        let Some(view) = obs.view else {
            return Action::Wait;
        };
        match &view.leader {
            Some(_) => self.vacancy = None,
            None => {
                if self.vacancy.is_none() {
                    self.vacancy = Some((view.revision, obs.now));
                }
            }
        }
        let holds = matches!(obs.lease, LeaseHold::Held { .. })
            && view.leader.as_deref() == Some(self.name.as_str());
        if obs.fenced_by_operator {
            return if holds {
                Action::ReleaseLease
            } else {
                Action::Wait
            };
        }
        if holds && may_write {
            return self.decide_as_leader(view, &obs.server);
        }
        match view.leader.as_deref() {
            // Our own record, but not (or no longer) renewable by us: wait for it to expire.
            Some(leader) if leader == self.name => Action::Wait,
            Some(leader) => self.decide_as_follower(view, leader, &obs.server),
            None => self.decide_in_vacancy(view, &obs.server, obs.now),
        }
    }

    fn decide_as_leader(&self, view: &ClusterView, server: &Server) -> Action {
        match server {
            Server::Absent if view.initialized.is_none() => Action::Bootstrap,
            // The cluster exists and this member has no data: it cannot lead.
            Server::Absent => Action::ReleaseLease,
            Server::Stopped {
                was_primary: true, ..
            } => Action::StartPrimary,
            Server::Stopped { .. } => Action::StartReplica { upstream: None },
            Server::Replica {
                receiver_running: true,
                ..
            } => Action::StopReceiver,
            Server::Replica { .. } => Action::Promote,
            Server::Busy { .. } | Server::Primary { .. } => Action::Wait,
        }
    }

    fn decide_as_follower(&self, view: &ClusterView, leader: &str, server: &Server) -> Action {
        // Follow only a leader that is serving as primary (not one still promoting).
        let leader_serves = view
            .member(leader)
            .is_some_and(|m| m.state.role == PublishedRole::Primary);
        if !leader_serves {
            return Action::Wait;
        }
        let leader_timeline = view.member(leader).map_or(0, |m| m.state.timeline);
        match server {
            Server::Absent => Action::Clone {
                from: leader.to_owned(),
            },
            Server::Stopped {
                was_primary: true, ..
            } => Action::Rejoin {
                upstream: leader.to_owned(),
            },
            // A replica of an older timeline than the leader's switched past: PostgreSQL
            // follows the new timeline itself when it streams (recovery_target_timeline=latest).
            Server::Stopped { .. } => Action::StartReplica {
                upstream: Some(leader.to_owned()),
            },
            // An old primary that recovered as a replica meanwhile: rewind before following.
            Server::Replica {
                was_primary: true, ..
            } => Action::Rejoin {
                upstream: leader.to_owned(),
            },
            // A standby that cannot reach consistency from a dead upstream must be pointed at
            // the new leader even before it answers queries.
            Server::Busy {
                upstream: Some(upstream),
            } if upstream != leader => Action::Repoint {
                upstream: leader.to_owned(),
            },
            Server::Replica { upstream, .. } if upstream.as_deref() != Some(leader) => {
                Action::Repoint {
                    upstream: leader.to_owned(),
                }
            }
            Server::Replica { timeline, .. } if *timeline > leader_timeline => {
                // Ahead of the leader's timeline: diverged, cannot stream from it.
                Action::Wait
            }
            _ => Action::Wait,
        }
    }

    fn decide_in_vacancy(&self, view: &ClusterView, server: &Server, now: Duration) -> Action {
        if view.initialized.is_none() {
            // A new cluster: whoever takes the lease initializes it.
            return match server {
                Server::Absent => Action::AcquireLease,
                _ => Action::Wait,
            };
        }
        let position = match server {
            // After a crash a stopped server's end of WAL is unknown (its checkpoint is only a
            // lower bound), and nobody counts it as seen: finish its crash recovery as a
            // replica of nothing, which then publishes where its WAL really ends.
            Server::Stopped { clean: false, .. } => {
                return Action::StartReplica { upstream: None };
            }
            Server::Replica {
                position, timeline, ..
            }
            | Server::Stopped {
                position, timeline, ..
            } => (*timeline, *position),
            _ => return Action::Wait,
        };
        let (timeline, position) = position;
        let (vacant_at_revision, vacant_since) = self.vacancy.unwrap_or((view.revision, now));
        let vacant_for = now.saturating_sub(vacant_since);
        // A planned switchover gives its chosen member the first TTL of the vacancy (then
        // anyone may, in case it cannot): it wins ties, and nobody else tries meanwhile.
        if let Some(chosen) = view
            .switchover
            .as_deref()
            .filter(|_| vacant_for < self.timings.ttl)
        {
            return if chosen == self.name
                && may_try_to_lead_with(
                    &self.name,
                    timeline,
                    position,
                    view,
                    vacant_at_revision,
                    true,
                ) {
                Action::AcquireLease
            } else {
                Action::Wait
            };
        }
        if vacant_for < self.timings.failover_delay {
            return Action::Wait;
        }
        if may_try_to_lead(&self.name, timeline, position, view, vacant_at_revision) {
            Action::AcquireLease
        } else {
            Action::Wait
        }
    }
}

/// Whether `me`, at `position`, may try to take a vacant lease: it sees, among the members
/// that published after the vacancy began (store revision > `vacant_at_revision`), nobody
/// more advanced (timeline, received, replayed, then the smaller name wins), and it sees at least
/// `k - n + 1` of the `k` members of the synchronous set (quorum `n`), counting itself —
/// every acknowledged commit is on `n` of them, so any `k - n + 1` include one that has it,
/// and the most advanced of those has it too.
///
/// `timeline` is the candidate's, that of the newest WAL it holds: a running replica
/// publishes the newest timeline among the segments in its pg_wal when PostgreSQL reports an
/// older one (its last checkpoint's, with the receiver stopped), so a newer timeline's WAL
/// outranks any LSN an older timeline reached.
pub fn may_try_to_lead(
    me: &str,
    timeline: u32,
    position: WalPosition,
    view: &ClusterView,
    vacant_at_revision: i64,
) -> bool {
    may_try_to_lead_with(me, timeline, position, view, vacant_at_revision, false)
}

/// [`may_try_to_lead`], where `wins_ties` makes `me` win against peers at the same position
/// (the member a switchover chose).
fn may_try_to_lead_with(
    me: &str,
    timeline: u32,
    position: WalPosition,
    view: &ClusterView,
    vacant_at_revision: i64,
    wins_ties: bool,
) -> bool {
    // Seen: published after the vacancy began (its primary is gone, so a replica's position
    // no longer grows), at a position that covers all the WAL it holds (`position_final`: a
    // replica that streamed since its start, a server stopped cleanly).
    let fresh: Vec<_> = view
        .members
        .iter()
        .filter(|m| m.state.name != me && m.revision > vacant_at_revision)
        .filter(|m| match m.state.role {
            PublishedRole::Replica | PublishedRole::Stopped | PublishedRole::Fenced => {
                m.state.position_final
            }
            PublishedRole::Primary | PublishedRole::Starting => false,
        })
        .collect();
    let sync = view.sync.clone().unwrap_or_default();
    if !sees_enough_of_sync_set(me, &sync, fresh.iter().map(|m| m.state.name.as_str())) {
        return false;
    }
    // Positions on different timelines are not comparable: WAL on a newer timeline carries
    // what the newer primaries acknowledged, whatever LSN an older timeline's diverged WAL
    // (a returning old primary's) reached. So the newest timeline first, then the position.
    let mine = (timeline, position);
    fresh.iter().all(|peer| {
        let theirs = (
            peer.state.timeline,
            WalPosition {
                received: peer.state.received_lsn,
                replayed: peer.state.replayed_lsn,
            },
        );
        theirs < mine || (theirs == mine && (wins_ties || me < peer.state.name.as_str()))
    })
}

fn sees_enough_of_sync_set<'a>(
    me: &str,
    sync: &SyncState,
    visible: impl Iterator<Item = &'a str>,
) -> bool {
    if sync.quorum == 0 {
        return true;
    }
    let visible: Vec<&str> = visible.collect();
    let seen = sync
        .members
        .iter()
        .filter(|m| m.as_str() == me || visible.contains(&m.as_str()))
        .count();
    let needed = (sync.members.len() + 1).saturating_sub(sync.quorum as usize);
    seen >= needed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leadership::{MemberState, Published};

    const T: Timings = Timings {
        ttl: Duration::from_secs(4),
        renew_deadline: Duration::from_millis(2500),
        failover_delay: Duration::ZERO,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn peer(name: &str, role: PublishedRole, received: u64, revision: i64) -> Published {
        Published {
            state: MemberState {
                name: name.into(),
                role,
                timeline: 1,
                received_lsn: received,
                replayed_lsn: received,
                position_final: true,
                host: "127.0.0.1".into(),
                pg_port: 5432,
                http: String::new(),
                archive_backlog: None,
            },
            revision,
        }
    }

    fn view(leader: Option<&str>, members: Vec<Published>, sync: Option<SyncState>) -> ClusterView {
        ClusterView {
            revision: 100,
            leader: leader.map(str::to_owned),
            members,
            sync,
            initialized: Some("7".into()),
            switchover: None,
        }
    }

    fn replica(received: u64, receiver_running: bool, upstream: Option<&str>) -> Server {
        Server::Replica {
            timeline: 1,
            position: WalPosition {
                received,
                replayed: received,
            },
            receiver_running,
            upstream: upstream.map(str::to_owned),
            was_primary: false,
            complete: true,
        }
    }

    fn decide(
        member: &mut Member,
        now: Duration,
        view: Option<&ClusterView>,
        lease: LeaseHold,
        server: Server,
    ) -> Action {
        member.decide(&Observation {
            now,
            view,
            lease,
            server,
            fenced_by_operator: false,
        })
    }

    #[test]
    fn a_primary_past_its_renew_deadline_fences_even_without_the_store() {
        let mut m = Member::new("a", T);
        let primary = Server::Primary {
            timeline: 1,
            lsn: 10,
        };
        let held = LeaseHold::Held {
            valid_until: secs(10),
        };
        assert_eq!(
            decide(&mut m, secs(9), None, held, primary.clone()),
            Action::Wait
        );
        assert_eq!(
            decide(&mut m, secs(10), None, held, primary.clone()),
            Action::Fence
        );
        let v = view(Some("a"), vec![], None);
        assert_eq!(
            decide(&mut m, secs(11), Some(&v), held, primary.clone()),
            Action::Fence
        );
        assert_eq!(
            decide(&mut m, secs(1), Some(&v), LeaseHold::NotHeld, primary),
            Action::Fence
        );
    }

    #[test]
    fn an_operator_fence_stops_writes_and_gives_the_lease_up() {
        let mut m = Member::new("a", T);
        let held = LeaseHold::Held {
            valid_until: secs(10),
        };
        let v = view(Some("a"), vec![], None);
        let obs = |server| Observation {
            now: secs(1),
            view: Some(&v),
            lease: held,
            server,
            fenced_by_operator: true,
        };
        assert_eq!(
            m.decide(&obs(Server::Primary {
                timeline: 1,
                lsn: 1
            })),
            Action::Fence
        );
        let stopped = Server::Stopped {
            was_primary: true,
            timeline: 1,
            position: WalPosition::default(),
            clean: true,
        };
        assert_eq!(m.decide(&obs(stopped)), Action::ReleaseLease);
    }

    #[test]
    fn a_new_leader_stops_its_receiver_then_promotes() {
        let mut m = Member::new("b", T);
        let v = view(Some("b"), vec![], None);
        let held = LeaseHold::Held {
            valid_until: secs(10),
        };
        assert_eq!(
            decide(&mut m, secs(1), Some(&v), held, replica(5, true, Some("a"))),
            Action::StopReceiver
        );
        assert_eq!(
            decide(&mut m, secs(1), Some(&v), held, replica(5, false, None)),
            Action::Promote
        );
        assert_eq!(
            decide(
                &mut m,
                secs(1),
                Some(&v),
                held,
                Server::Primary {
                    timeline: 2,
                    lsn: 5
                }
            ),
            Action::Wait
        );
    }

    #[test]
    fn bootstrap_needs_the_lease_and_an_uninitialized_cluster() {
        let mut m = Member::new("a", T);
        let mut v = view(None, vec![], None);
        v.initialized = None;
        assert_eq!(
            decide(
                &mut m,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                Server::Absent
            ),
            Action::AcquireLease
        );
        v.leader = Some("a".into());
        let held = LeaseHold::Held {
            valid_until: secs(10),
        };
        assert_eq!(
            decide(&mut m, secs(1), Some(&v), held, Server::Absent),
            Action::Bootstrap
        );
        v.initialized = Some("7".into());
        assert_eq!(
            decide(&mut m, secs(1), Some(&v), held, Server::Absent),
            Action::ReleaseLease
        );
    }

    #[test]
    fn followers_clone_start_repoint_and_rejoin_toward_a_serving_leader() {
        let mut m = Member::new("c", T);
        let mut v = view(
            Some("a"),
            vec![peer("a", PublishedRole::Starting, 0, 1)],
            None,
        );
        // The leader is still promoting: nobody follows it yet.
        assert_eq!(
            decide(
                &mut m,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                Server::Absent
            ),
            Action::Wait
        );
        v.members = vec![peer("a", PublishedRole::Primary, 0, 2)];
        assert_eq!(
            decide(
                &mut m,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                Server::Absent
            ),
            Action::Clone { from: "a".into() }
        );
        assert_eq!(
            decide(
                &mut m,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                replica(1, true, Some("b"))
            ),
            Action::Repoint {
                upstream: "a".into()
            }
        );
        assert_eq!(
            decide(
                &mut m,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                replica(1, true, Some("a"))
            ),
            Action::Wait
        );
        let old_primary = Server::Stopped {
            was_primary: true,
            timeline: 1,
            position: WalPosition::default(),
            clean: false,
        };
        assert_eq!(
            decide(&mut m, secs(1), Some(&v), LeaseHold::NotHeld, old_primary),
            Action::Rejoin {
                upstream: "a".into()
            }
        );
    }

    #[test]
    fn only_the_most_advanced_fresh_replica_tries_to_lead() {
        // Vacancy first seen at revision 100; peers must publish after it to count.
        let members = vec![
            peer("b", PublishedRole::Replica, 50, 101),
            peer("c", PublishedRole::Replica, 60, 102),
        ];
        let v = view(None, members, None);
        let mut b = Member::new("b", T);
        let mut c = Member::new("c", T);
        assert_eq!(
            decide(
                &mut b,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                replica(50, true, Some("a"))
            ),
            Action::Wait
        );
        assert_eq!(
            decide(
                &mut c,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                replica(60, true, Some("a"))
            ),
            Action::AcquireLease
        );
        // Equal positions: the smaller name.
        let tie = view(
            None,
            vec![
                peer("b", PublishedRole::Replica, 60, 101),
                peer("c", PublishedRole::Replica, 60, 102),
            ],
            None,
        );
        let mut c = Member::new("c", T);
        assert_eq!(
            decide(
                &mut c,
                secs(1),
                Some(&tie),
                LeaseHold::NotHeld,
                replica(60, true, None)
            ),
            Action::Wait
        );
        let mut b = Member::new("b", T);
        assert_eq!(
            decide(
                &mut b,
                secs(1),
                Some(&tie),
                LeaseHold::NotHeld,
                replica(60, true, None)
            ),
            Action::AcquireLease
        );
    }

    #[test]
    fn a_peer_that_has_not_published_since_the_vacancy_is_not_counted_for_quorum() {
        let sync = SyncState {
            members: vec!["b".into(), "c".into()],
            quorum: 1,
        };
        // c published before the vacancy (revision 90 < 100): b cannot know c's final position.
        let v = view(
            None,
            vec![peer("c", PublishedRole::Replica, 10, 90)],
            Some(sync.clone()),
        );
        let mut b = Member::new("b", T);
        assert_eq!(
            decide(
                &mut b,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                replica(50, true, None)
            ),
            Action::Wait
        );
        let v = view(
            None,
            vec![peer("c", PublishedRole::Replica, 10, 101)],
            Some(sync),
        );
        let mut b = Member::new("b", T);
        assert_eq!(
            decide(
                &mut b,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                replica(50, true, None)
            ),
            Action::AcquireLease
        );
    }

    #[test]
    fn the_quorum_rule_counts_k_minus_n_plus_one_members_of_the_sync_set() {
        let at = WalPosition {
            received: 9,
            replayed: 9,
        };
        let set = |members: &[&str], quorum| SyncState {
            members: members.iter().map(|s| s.to_string()).collect(),
            quorum,
        };
        let fresh = |names: &[&str]| {
            view(
                None,
                names
                    .iter()
                    .map(|n| peer(n, PublishedRole::Replica, 1, 200))
                    .collect(),
                None,
            )
        };
        let with = |mut v: ClusterView, s| {
            v.sync = Some(s);
            v
        };
        // ANY 1 of {b, c}: b alone may not lead (c may hold a commit b lacks).
        assert!(!may_try_to_lead(
            "b",
            1,
            at,
            &with(fresh(&[]), set(&["b", "c"], 1)),
            100
        ));
        assert!(may_try_to_lead(
            "b",
            1,
            at,
            &with(fresh(&["c"]), set(&["b", "c"], 1)),
            100
        ));
        // ANY 2 of {b, c, d}: two of three suffice.
        assert!(may_try_to_lead(
            "b",
            1,
            at,
            &with(fresh(&["d"]), set(&["b", "c", "d"], 2)),
            100
        ));
        // A member outside the set that sees the whole set may lead (it is more advanced).
        assert!(may_try_to_lead(
            "x",
            1,
            at,
            &with(fresh(&["b", "c"]), set(&["b", "c"], 1)),
            100
        ));
        assert!(!may_try_to_lead(
            "x",
            1,
            at,
            &with(fresh(&["b"]), set(&["b", "c"], 1)),
            100
        ));
        // Asynchronous: anyone most advanced.
        assert!(may_try_to_lead(
            "b",
            1,
            at,
            &with(fresh(&[]), set(&["b", "c"], 0)),
            100
        ));
    }

    #[test]
    fn the_newer_timeline_leads_whatever_lsn_an_older_timeline_reached() {
        // a: the old primary, back on timeline 1 with WAL nobody acknowledged up to 150;
        // c: a replica of the timeline-2 primary that died, holding its commits up to 120.
        let sync = SyncState {
            members: vec!["c".into()],
            quorum: 1,
        };
        let mut old = peer("a", PublishedRole::Stopped, 150, 101);
        old.state.timeline = 1;
        let mut newer = peer("c", PublishedRole::Replica, 120, 102);
        newer.state.timeline = 2;
        let v = view(None, vec![old.clone(), newer.clone()], Some(sync.clone()));
        let at = |lsn| WalPosition {
            received: lsn,
            replayed: lsn,
        };
        // From a's side: c is on a newer timeline; a must not lead.
        let as_a = view(None, vec![newer], Some(sync.clone()));
        assert!(!may_try_to_lead("a", 1, at(150), &as_a, 100));
        // From c's side: a's higher LSN on timeline 1 does not count against it.
        let as_c = view(None, vec![old], Some(sync));
        assert!(may_try_to_lead("c", 2, at(120), &as_c, 100));
        // Same timeline: the position decides, as before.
        assert!(!may_try_to_lead("b", 2, at(100), &v, 100));
    }

    #[test]
    fn a_member_stopped_by_a_crash_is_not_seen_its_position_is_only_a_lower_bound() {
        let sync = SyncState {
            members: vec!["a".into(), "b".into(), "c".into()],
            quorum: 1,
        };
        let mut crashed = peer("a", PublishedRole::Stopped, 10, 101);
        crashed.state.position_final = false;
        let members = vec![crashed.clone(), peer("c", PublishedRole::Replica, 10, 102)];
        let v = view(None, members, Some(sync.clone()));
        let at = WalPosition {
            received: 50,
            replayed: 50,
        };
        assert!(
            !may_try_to_lead("b", 1, at, &v, 100),
            "a may hold commits nobody else has"
        );
        crashed.state.position_final = true;
        let members = vec![crashed, peer("c", PublishedRole::Replica, 10, 102)];
        let v = view(None, members, Some(sync));
        assert!(may_try_to_lead("b", 1, at, &v, 100));
    }

    #[test]
    fn a_crashed_member_recovers_as_a_replica_in_a_vacancy_and_rewinds_before_following() {
        let v = view(None, vec![], None);
        let crashed = Server::Stopped {
            was_primary: true,
            timeline: 1,
            position: WalPosition::default(),
            clean: false,
        };
        let mut a = Member::new("a", T);
        assert_eq!(
            decide(&mut a, secs(1), Some(&v), LeaseHold::NotHeld, crashed),
            Action::StartReplica { upstream: None }
        );
        let led = view(
            Some("b"),
            vec![peer("b", PublishedRole::Primary, 9, 1)],
            None,
        );
        let recovered = Server::Replica {
            timeline: 1,
            position: WalPosition::default(),
            receiver_running: false,
            upstream: None,
            was_primary: true,
            complete: false,
        };
        assert_eq!(
            decide(&mut a, secs(2), Some(&led), LeaseHold::NotHeld, recovered),
            Action::Rejoin {
                upstream: "b".into()
            }
        );
    }

    #[test]
    fn a_replica_that_restarted_and_has_not_streamed_yet_is_not_seen() {
        // c restarted: it reports only what it replayed so far, maybe less than it flushed
        // (and acknowledged) before; b cannot count it toward the synchronous set.
        let sync = SyncState {
            members: vec!["b".into(), "c".into()],
            quorum: 1,
        };
        let mut restarted = peer("c", PublishedRole::Replica, 10, 101);
        restarted.state.position_final = false;
        let v = view(None, vec![restarted], Some(sync));
        let at = WalPosition {
            received: 50,
            replayed: 50,
        };
        assert!(!may_try_to_lead("b", 1, at, &v, 100));
    }

    #[test]
    fn a_recovering_standby_that_does_not_answer_yet_is_repointed_to_a_new_leader() {
        let mut c = Member::new("c", T);
        let v = view(
            Some("b"),
            vec![peer("b", PublishedRole::Primary, 9, 1)],
            None,
        );
        let busy = |upstream: &str| Server::Busy {
            upstream: Some(upstream.into()),
        };
        assert_eq!(
            decide(&mut c, secs(1), Some(&v), LeaseHold::NotHeld, busy("a")),
            Action::Repoint {
                upstream: "b".into()
            }
        );
        assert_eq!(
            decide(&mut c, secs(1), Some(&v), LeaseHold::NotHeld, busy("b")),
            Action::Wait
        );
    }

    #[test]
    fn failover_waits_for_the_delay_on_the_members_own_clock() {
        let timings = Timings {
            failover_delay: secs(3),
            ..T
        };
        let mut b = Member::new("b", timings);
        let v = view(None, vec![], None);
        let r = || replica(5, true, None);
        assert_eq!(
            decide(&mut b, secs(10), Some(&v), LeaseHold::NotHeld, r()),
            Action::Wait
        );
        assert_eq!(
            decide(&mut b, secs(12), Some(&v), LeaseHold::NotHeld, r()),
            Action::Wait
        );
        assert_eq!(
            decide(&mut b, secs(13), Some(&v), LeaseHold::NotHeld, r()),
            Action::AcquireLease
        );
        // A leader seen in between restarts the wait.
        let led = view(Some("a"), vec![], None);
        assert_eq!(
            decide(&mut b, secs(14), Some(&led), LeaseHold::NotHeld, r()),
            Action::Wait
        );
        assert_eq!(
            decide(&mut b, secs(15), Some(&v), LeaseHold::NotHeld, r()),
            Action::Wait
        );
    }

    #[test]
    fn a_switchover_lets_its_chosen_member_lead_first_even_on_a_tie() {
        let members = vec![
            peer("b", PublishedRole::Replica, 60, 101),
            peer("c", PublishedRole::Replica, 60, 102),
            peer("a", PublishedRole::Stopped, 55, 103),
        ];
        let mut v = view(None, members, None);
        v.switchover = Some("c".into());
        let r = || replica(60, true, None);
        // b would win the tie by name, but c was chosen.
        let mut b = Member::new("b", T);
        assert_eq!(
            decide(&mut b, secs(1), Some(&v), LeaseHold::NotHeld, r()),
            Action::Wait
        );
        let mut c = Member::new("c", T);
        assert_eq!(
            decide(&mut c, secs(1), Some(&v), LeaseHold::NotHeld, r()),
            Action::AcquireLease
        );
        // The old primary, stopped at the same position, waits too.
        let mut a = Member::new("a", T);
        let stopped = Server::Stopped {
            was_primary: true,
            timeline: 1,
            position: WalPosition {
                received: 55,
                replayed: 55,
            },
            clean: true,
        };
        assert_eq!(
            decide(&mut a, secs(1), Some(&v), LeaseHold::NotHeld, stopped),
            Action::Wait
        );
        // The chosen member never leads from behind.
        let mut c = Member::new("c", T);
        assert_eq!(
            decide(
                &mut c,
                secs(1),
                Some(&v),
                LeaseHold::NotHeld,
                replica(50, true, None)
            ),
            Action::Wait
        );
        // After a TTL of vacancy the choice lapses and the usual rule applies.
        assert_eq!(
            decide(&mut b, secs(6), Some(&v), LeaseHold::NotHeld, r()),
            Action::AcquireLease
        );
    }

    #[test]
    fn timings_that_would_let_a_lease_expire_before_fencing_are_refused() {
        assert!(T.validate().is_ok());
        let bad = Timings {
            renew_deadline: secs(4),
            ..T
        };
        assert!(bad.validate().is_err());
    }
}
