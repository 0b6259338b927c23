//! `backup_label` as returned by `pg_backup_stop`: where recovery from the backup starts.

use crate::wal::{Lsn, TimelineId};

/// The fields of `backup_label` that walarch relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    /// `START WAL LOCATION`: the LSN recovery from the backup starts at.
    pub start_lsn: Lsn,
    /// `START TIMELINE`: the timeline the backup started on.
    pub timeline: TimelineId,
    /// `BACKUP FROM: standby`.
    pub from_standby: bool,
}

impl BackupLabel {
    /// Parses the text PostgreSQL wrote, e.g.
    /// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` and `START TIMELINE: 1`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
                .ok_or_else(|| format!("backup_label has no {name} line"))
        };
        let location = field("START WAL LOCATION")?;
        let lsn_text = location.split_whitespace().next().unwrap_or_default();
        let start_lsn: Lsn = lsn_text
            .parse()
            .map_err(|e| format!("backup_label START WAL LOCATION {lsn_text:?}: {e}"))?;
        let timeline_text = field("START TIMELINE")?.trim();
        let timeline = timeline_text
            .parse::<u32>()
            .ok()
            .and_then(|t| TimelineId::new(t).ok())
            .ok_or_else(|| {
                format!("backup_label START TIMELINE {timeline_text:?} is not a timeline")
            })?;
        let from_standby = field("BACKUP FROM").is_ok_and(|from| from.trim() == "standby");
        Ok(BackupLabel {
            start_lsn,
            timeline,
            from_standby,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_postgresql_writes() {
        let text = "START WAL LOCATION: 0/9000028 (file 000000020000000000000009)\n\
                    CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\n\
                    START TIME: 2026-11-21 14:27:00 UTC\nLABEL: walarch\nSTART TIMELINE: 2\n";
        let label = BackupLabel::parse(text).unwrap();
        assert_eq!(label.start_lsn, "0/9000028".parse().unwrap());
        assert_eq!(label.timeline.get(), 2);
        assert!(label.from_standby);
    }

    #[test]
    fn refuses_labels_without_the_needed_lines() {
        assert!(BackupLabel::parse("").is_err());
        assert!(
            BackupLabel::parse("START WAL LOCATION: zz (file x)\nSTART TIMELINE: 1\n").is_err()
        );
        assert!(
            BackupLabel::parse("START WAL LOCATION: 0/1 (file x)\nSTART TIMELINE: 0\n").is_err()
        );
    }
}
