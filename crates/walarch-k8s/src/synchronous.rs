//! The synchronous set, kept by the leader: which replicas PostgreSQL waits for
//! (`synchronous_standby_names = 'ANY n (...)'`) and the record in the store that promotion
//! relies on ([`SyncState`]: every acknowledged commit is on `quorum` of `members`).
//!
//! The order of steps keeps that record true at every moment:
//! - a member joins the record *before* PostgreSQL is told to wait for it (a larger set only
//!   asks more of a candidate);
//! - a member leaves the record only after PostgreSQL stopped counting it *and* `quorum` of the
//!   remaining ones have flushed past the position the new setting took effect at (so what was
//!   acknowledged with its help is on enough of the others). The leader itself, in the record
//!   after its promotion, leaves the same way.
//!
//! With fewer streaming replicas than the quorum PostgreSQL keeps waiting for the members it
//! knows: commits block rather than go unprotected (the strict choice).

use crate::leadership::SyncState;

/// What PostgreSQL was last configured with, and the WAL position right after it took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The names in `ANY n (...)`.
    pub names: Vec<String>,
    /// `pg_current_wal_lsn()` after the reload.
    pub effective_at: u64,
}

/// The next step toward the wanted synchronous set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Everything agrees.
    Keep,
    /// Write this record to the store (only the leader can).
    WriteRecord(SyncState),
    /// Set `synchronous_standby_names` to `ANY quorum (names)` and reload.
    Configure(Vec<String>),
}

/// One step. `streaming`: replicas streaming from this leader now, with their flushed LSN.
pub fn next_step(
    me: &str,
    quorum: u32,
    record: Option<&SyncState>,
    configured: Option<&Configured>,
    streaming: &[(String, u64)],
) -> SyncStep {
    let record = record.cloned().unwrap_or(SyncState {
        members: Vec::new(),
        quorum,
    });
    // A lower quorum is recorded first: the weaker record is true of what was acknowledged
    // under either. Out of asynchronous replication the new quorum is recorded first too:
    // nothing acknowledged so far was protected. A higher quorum otherwise waits (below)
    // until PostgreSQL asks for it and enough members hold everything acknowledged before:
    // recorded early, it would let a promotion see fewer members than the commits acknowledged
    // under the lower quorum need.
    if record.quorum > quorum || (record.quorum == 0 && quorum > 0) {
        return SyncStep::WriteRecord(SyncState {
            members: record.members,
            quorum,
        });
    }
    if quorum == 0 {
        return match configured {
            Some(c) if c.names.is_empty() => SyncStep::Keep,
            _ => SyncStep::Configure(Vec::new()),
        };
    }
    let mut live: Vec<String> = streaming
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| name != me)
        .collect();
    live.sort();
    live.dedup();
    let wanted = if live.len() >= quorum as usize {
        live
    } else {
        // Too few streaming: keep waiting for the known ones too.
        let mut names: Vec<String> = record
            .members
            .iter()
            .filter(|m| m.as_str() != me)
            .cloned()
            .chain(live)
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !record.members.contains(w))
        .collect();
    if !missing.is_empty() {
        let mut members = record.members.clone();
        members.extend(missing.into_iter().cloned());
        members.sort();
        return SyncStep::WriteRecord(SyncState {
            members,
            quorum: record.quorum,
        });
    }
    let Some(configured) = configured.filter(|c| c.names == wanted) else {
        return SyncStep::Configure(wanted);
    };
    // Each member once, however many connections it has (an old one may linger).
    let mut caught_up: Vec<&String> = streaming
        .iter()
        .filter(|(name, flushed)| wanted.contains(name) && *flushed >= configured.effective_at)
        .map(|(name, _)| name)
        .collect();
    caught_up.sort();
    caught_up.dedup();
    let caught_up = caught_up.len();
    if record.quorum < quorum && caught_up >= quorum as usize {
        // PostgreSQL waits for `quorum` since `effective_at`, and `quorum` members hold all
        // WAL before it: every acknowledged commit is on `quorum` of them.
        return SyncStep::WriteRecord(SyncState {
            members: record.members,
            quorum,
        });
    }
    let leaving = record.members.iter().any(|m| !wanted.contains(m));
    if leaving && caught_up >= record.quorum as usize {
        return SyncStep::WriteRecord(SyncState {
            members: wanted,
            quorum: record.quorum,
        });
    }
    SyncStep::Keep
}

/// The `synchronous_standby_names` value for `names` (empty with a quorum: a name no replica
/// has, so commits wait rather than go unprotected).
pub fn standby_names_setting(quorum: u32, names: &[String]) -> String {
    if quorum == 0 {
        return String::new();
    }
    let list = if names.is_empty() {
        "\"walarch_no_replica_yet\"".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("\"{}\"", n.replace('"', "")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("ANY {quorum} ({list})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn record(names: &[&str], quorum: u32) -> SyncState {
        SyncState {
            members: s(names),
            quorum,
        }
    }

    fn streaming(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(n, l)| (n.to_string(), *l)).collect()
    }

    #[test]
    fn a_new_replica_joins_the_record_before_postgresql_waits_for_it() {
        let st = streaming(&[("b", 10)]);
        let step = next_step("a", 1, None, None, &st);
        assert_eq!(step, SyncStep::WriteRecord(record(&["b"], 1)));
        let step = next_step("a", 1, Some(&record(&["b"], 1)), None, &st);
        assert_eq!(step, SyncStep::Configure(s(&["b"])));
        let configured = Configured {
            names: s(&["b"]),
            effective_at: 5,
        };
        assert_eq!(
            next_step("a", 1, Some(&record(&["b"], 1)), Some(&configured), &st),
            SyncStep::Keep
        );
    }

    #[test]
    fn a_member_leaves_the_record_only_after_the_rest_caught_up() {
        // After a failover: b leads, the record still holds b and c, c streams.
        let rec = record(&["b", "c"], 1);
        let st = streaming(&[("c", 90)]);
        assert_eq!(
            next_step("b", 1, Some(&rec), None, &st),
            SyncStep::Configure(s(&["c"]))
        );
        let configured = Configured {
            names: s(&["c"]),
            effective_at: 100,
        };
        // c has not flushed what b acknowledged before: b stays in the record.
        assert_eq!(
            next_step("b", 1, Some(&rec), Some(&configured), &st),
            SyncStep::Keep
        );
        let st = streaming(&[("c", 100)]);
        assert_eq!(
            next_step("b", 1, Some(&rec), Some(&configured), &st),
            SyncStep::WriteRecord(record(&["c"], 1))
        );
    }

    #[test]
    fn with_too_few_replicas_postgresql_keeps_waiting_for_the_known_ones() {
        let rec = record(&["b", "c"], 1);
        // Nobody streams: the known replicas stay configured, nothing leaves the record.
        assert_eq!(
            next_step("a", 1, Some(&rec), None, &[]),
            SyncStep::Configure(s(&["b", "c"]))
        );
        let configured = Configured {
            names: s(&["b", "c"]),
            effective_at: 1,
        };
        assert_eq!(
            next_step("a", 1, Some(&rec), Some(&configured), &[]),
            SyncStep::Keep
        );
        assert_eq!(
            standby_names_setting(1, &[]),
            "ANY 1 (\"walarch_no_replica_yet\")"
        );
        assert_eq!(
            standby_names_setting(2, &s(&["b", "c"])),
            "ANY 2 (\"b\", \"c\")"
        );
        assert_eq!(standby_names_setting(0, &s(&["b"])), "");
    }

    #[test]
    fn a_higher_quorum_is_recorded_once_postgresql_asks_for_it_and_enough_caught_up() {
        // ANY 1 of {b, c} recorded; the cluster now wants ANY 2.
        let rec = record(&["b", "c"], 1);
        let st = streaming(&[("b", 90), ("c", 95)]);
        assert_eq!(
            next_step("a", 2, Some(&rec), None, &st),
            SyncStep::Configure(s(&["b", "c"])),
            "not recorded before PostgreSQL waits for two"
        );
        let configured = Configured {
            names: s(&["b", "c"]),
            effective_at: 100,
        };
        // A commit acknowledged by b alone before 100 is not on two members yet.
        let st = streaming(&[("b", 120), ("c", 95)]);
        assert_eq!(
            next_step("a", 2, Some(&rec), Some(&configured), &st),
            SyncStep::Keep
        );
        let st = streaming(&[("b", 120), ("c", 100)]);
        assert_eq!(
            next_step("a", 2, Some(&rec), Some(&configured), &st),
            SyncStep::WriteRecord(record(&["b", "c"], 2))
        );
    }

    #[test]
    fn out_of_asynchronous_replication_the_quorum_is_recorded_first() {
        // Nothing acknowledged asynchronously was protected; commits acknowledged once
        // PostgreSQL waits must be, so the record promises the quorum before it waits.
        let rec = record(&[], 0);
        let st = streaming(&[("b", 10)]);
        assert_eq!(
            next_step("a", 1, Some(&rec), None, &st),
            SyncStep::WriteRecord(record(&[], 1))
        );
        assert_eq!(
            next_step("a", 1, Some(&record(&[], 1)), None, &st),
            SyncStep::WriteRecord(record(&["b"], 1))
        );
    }

    #[test]
    fn a_lower_quorum_is_recorded_before_it_is_configured() {
        let rec = record(&["b", "c"], 2);
        assert_eq!(
            next_step("a", 1, Some(&rec), None, &[]),
            SyncStep::WriteRecord(record(&["b", "c"], 1))
        );
    }
}
