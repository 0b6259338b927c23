//! Recovery targets: what the user asks for, checked and normalised before anything is
//! planned, and the PostgreSQL settings that stand for it.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, Timelike, Utc};

use crate::wal::{Lsn, TimelineId};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Stop before the first transaction that committed (or aborted) after this time
    /// (at this time too, when not inclusive).
    Time(DateTime<Utc>),
    /// Stop after (or, not inclusive, before) the first record at or past this LSN.
    Lsn(Lsn),
    /// Stop after (or before) the commit or abort of this transaction.
    Xid(u32),
    /// Stop at this restore point (`pg_create_restore_point`).
    Name(String),
    /// Stop as soon as the backup is consistent.
    Immediate,
    /// Replay all archived WAL.
    Latest,
}

/// Which timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimelineChoice {
    /// The newest timeline in the archive that descends from the backup's (PostgreSQL's default).
    #[default]
    Latest,
    /// The backup's own timeline.
    Current,
    /// This timeline.
    Id(TimelineId),
}

/// A complete request: target, timeline, inclusiveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// Which timeline recovery follows (`recovery_target_timeline`).
    pub timeline: TimelineChoice,
    /// `recovery_target_inclusive` (PostgreSQL's default: true).
    pub inclusive: bool,
}

impl Default for TargetSpec {
    fn default() -> Self {
        TargetSpec {
            target: RecoveryTarget::Latest,
            timeline: TimelineChoice::Latest,
            inclusive: true,
        }
    }
}

/// Why a recovery target, timeline or restore point name given by the user is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// A time target that cannot be read, or has no time zone.
    #[error(
        "{text:?} is not a time walarch can read: use e.g. '2026-11-21 11:32:00+00' or 2026-11-21T11:32:00Z (with a time zone: the server's zone may differ from this shell's)"
    )]
    Time {
        /// The text as given.
        text: String,
    },
    /// A transaction ID target that is not a number of at least 3 (the first normal xid).
    #[error("{text:?} is not a transaction id")]
    Xid {
        /// The text as given.
        text: String,
    },
    /// A timeline that is neither a timeline ID, `current` nor `latest`.
    #[error("{text:?} is not a timeline: use a number, current or latest")]
    Timeline {
        /// The text as given.
        text: String,
    },
    /// A restore point name that is empty or longer than 63 bytes.
    #[error("a restore point name is at most 63 bytes, and not empty")]
    Name,
}

/// Reads a time with an explicit zone. PostgreSQL would read a time without one in the
/// server's `timezone`, which walarch cannot know when planning: refusing is safer than
/// planning for a different instant than the server will stop at.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, TargetError> {
    // PostgreSQL keeps microseconds: plan for the instant the server will compare against.
    parse_time_exact(text).map(|time| {
        time.with_nanosecond(time.nanosecond() / 1000 * 1000)
            .unwrap_or(time)
    })
}

fn parse_time_exact(text: &str) -> Result<DateTime<Utc>, TargetError> {
    let trimmed = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(time.with_timezone(&Utc));
    }
    // ISO 8601's `T` between date and time, as a space.
    let normalised = match trimmed.split_at_checked(10) {
        Some((date, rest)) if rest.starts_with('T') => format!("{date} {}", &rest[1..]),
        _ => trimmed.to_owned(),
    };
    let with_zone = |s: &str| -> Option<DateTime<FixedOffset>> {
        [
            "%Y-%m-%d %H:%M:%S%.f%#z",
            "%Y-%m-%d %H:%M:%S%.f %#z",
            "%Y-%m-%d %H:%M%#z",
        ]
        .iter()
        .find_map(|format| DateTime::parse_from_str(s, format).ok())
    };
    if let Some(time) = with_zone(&normalised) {
        return Ok(time.with_timezone(&Utc));
    }
    for suffix in [" UTC", "Z", " Z", " GMT"] {
        if let Some(local) = normalised.strip_suffix(suffix) {
            for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
                if let Ok(naive) = NaiveDateTime::parse_from_str(local.trim_end(), format) {
                    return Ok(naive.and_utc());
                }
            }
        }
    }
    Err(TargetError::Time {
        text: text.to_owned(),
    })
}

/// Reads a transaction ID target (`recovery_target_xid`); a 64-bit, epoch-qualified xid is cut to
/// its low 32 bits, as WAL records carry them.
pub fn parse_xid(text: &str) -> Result<u32, TargetError> {
    // PostgreSQL accepts a 64-bit (epoch-qualified) xid too; WAL records carry the low half.
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&x| x >= 3)
        .map(|x| x as u32)
        .ok_or_else(|| TargetError::Xid {
            text: text.to_owned(),
        })
}

/// Reads `recovery_target_timeline`: `latest`, `current` or a timeline ID.
pub fn parse_timeline(text: &str) -> Result<TimelineChoice, TargetError> {
    match text.trim() {
        "latest" => Ok(TimelineChoice::Latest),
        "current" => Ok(TimelineChoice::Current),
        number => number
            .parse::<u32>()
            .ok()
            .and_then(|n| TimelineId::new(n).ok())
            .map(TimelineChoice::Id)
            .ok_or_else(|| TargetError::Timeline {
                text: text.to_owned(),
            }),
    }
}

/// Checks a restore point name (`recovery_target_name`): 1 to 63 bytes.
pub fn check_name(name: &str) -> Result<(), TargetError> {
    if name.is_empty() || name.len() > 63 {
        return Err(TargetError::Name);
    }
    Ok(())
}

/// The time as PostgreSQL reads it back exactly: UTC, microseconds.
pub fn postgres_time_text(time: DateTime<Utc>) -> String {
    format!("{}+00", time.format("%Y-%m-%d %H:%M:%S%.6f"))
}

impl TargetSpec {
    /// The `recovery_target*` settings for this request (the restore writes every other
    /// recovery_target* setting back to its default).
    pub fn settings(&self, resolved_timeline: Option<TimelineId>) -> Vec<(String, String)> {
        let mut settings = Vec::new();
        let mut set = |name: &str, value: String| settings.push((name.to_owned(), value));
        match &self.target {
            RecoveryTarget::Time(time) => set("recovery_target_time", postgres_time_text(*time)),
            RecoveryTarget::Lsn(lsn) => set("recovery_target_lsn", lsn.to_string()),
            RecoveryTarget::Xid(xid) => set("recovery_target_xid", xid.to_string()),
            RecoveryTarget::Name(name) => set("recovery_target_name", name.clone()),
            RecoveryTarget::Immediate => set("recovery_target", "immediate".into()),
            RecoveryTarget::Latest => {}
        }
        if !matches!(
            self.target,
            RecoveryTarget::Latest | RecoveryTarget::Immediate | RecoveryTarget::Name(_)
        ) {
            set("recovery_target_inclusive", self.inclusive.to_string());
        }
        // The planned timeline is written as a number, so the server follows exactly the
        // path that was checked, even if a newer timeline appears meanwhile.
        let timeline = match (resolved_timeline, self.timeline) {
            (Some(timeline), _) | (None, TimelineChoice::Id(timeline)) => timeline.to_string(),
            (None, TimelineChoice::Current) => "current".into(),
            (None, TimelineChoice::Latest) => "latest".into(),
        };
        set("recovery_target_timeline", timeline);
        settings
    }
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Time(time) => {
                write!(
                    f,
                    "time {}",
                    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                )
            }
            RecoveryTarget::Lsn(lsn) => write!(f, "LSN {lsn}"),
            RecoveryTarget::Xid(xid) => write!(f, "transaction {xid}"),
            RecoveryTarget::Name(name) => write!(f, "restore point {name:?}"),
            RecoveryTarget::Immediate => write!(f, "the end of the backup (immediate)"),
            RecoveryTarget::Latest => write!(f, "the end of the archived WAL (latest)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone_and_come_back_exact() {
        let expect = DateTime::parse_from_rfc3339("2026-11-21T11:32:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2026-11-21 11:32:00.25+00",
            "2026-11-21 11:32:00.250+00:00",
            "2026-11-21T11:32:00.25Z",
            "2026-11-21 12:32:00.25+01",
            "2026-11-21 11:32:00.25 UTC",
            "2026-11-21 06:32:00.25 -05:00",
        ] {
            assert_eq!(parse_time(text).unwrap(), expect, "{text}");
        }
        assert_eq!(
            parse_time("2026-11-21T11:32:00.250000999Z").unwrap(),
            expect,
            "truncated to microseconds, as PostgreSQL reads it"
        );
        for bad in ["2026-11-21 11:32:00", "11:32", "yesterday", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(postgres_time_text(expect), "2026-11-21 11:32:00.250000+00");
        assert_eq!(parse_time(&postgres_time_text(expect)).unwrap(), expect);
    }

    #[test]
    fn xids_timelines_and_names() {
        assert_eq!(parse_xid("1234").unwrap(), 1234);
        assert_eq!(parse_xid(&((5u64 << 32) + 1234).to_string()).unwrap(), 1234);
        assert!(parse_xid("-1").is_err() && parse_xid("2").is_err() && parse_xid("x").is_err());
        assert_eq!(parse_timeline("latest").unwrap(), TimelineChoice::Latest);
        assert_eq!(
            parse_timeline("2").unwrap(),
            TimelineChoice::Id(TimelineId::new(2).unwrap())
        );
        assert!(parse_timeline("0").is_err() && parse_timeline("newest").is_err());
        assert!(check_name("").is_err() && check_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn settings_name_the_target_the_inclusiveness_and_the_planned_timeline() {
        let spec = TargetSpec {
            target: RecoveryTarget::Xid(900),
            timeline: TimelineChoice::Latest,
            inclusive: false,
        };
        assert_eq!(
            spec.settings(Some(TimelineId::new(2).unwrap())),
            vec![
                ("recovery_target_xid".to_owned(), "900".to_owned()),
                ("recovery_target_inclusive".to_owned(), "false".to_owned()),
                ("recovery_target_timeline".to_owned(), "2".to_owned()),
            ]
        );
        let immediate = TargetSpec {
            target: RecoveryTarget::Immediate,
            ..TargetSpec::default()
        };
        assert_eq!(
            immediate.settings(None),
            vec![
                ("recovery_target".to_owned(), "immediate".to_owned()),
                ("recovery_target_timeline".to_owned(), "latest".to_owned()),
            ]
        );
    }
}
