//! Timeline history files (`<TLI>.history`): one line per ancestor timeline, each naming the
//! LSN at which the next timeline branched off. Parsed as PostgreSQL's
//! `readTimeLineHistory` does: blank lines and `#` comments are skipped, fields are
//! separated by white space, and the reason text is free-form.

use super::{Lsn, TimelineId, WalError};

/// One line of a history file: `parent` ended at `switch_lsn`, where the next timeline began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub parent: TimelineId,
    /// The LSN at which `parent` ended and the next timeline branched off.
    pub switch_lsn: Lsn,
    /// Free-form text PostgreSQL wrote about why the timeline was switched.
    pub reason: String,
}

/// The ancestry of a timeline, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimelineHistory {
    /// One entry per ancestor timeline, oldest first.
    pub entries: Vec<HistoryEntry>,
}

impl TimelineHistory {
    /// Parses the content of a history file. Timelines must increase and switch points must
    /// not go backwards, as PostgreSQL requires.
    pub fn parse(content: &[u8]) -> Result<Self, WalError> {
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (index, raw) in content.split(|b| *b == b'\n').enumerate() {
            let line = index + 1;
            let err = |reason: &str| WalError::InvalidHistory {
                line,
                reason: reason.to_owned(),
            };
            let trimmed = raw.trim_ascii_start();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            let (tli_text, rest) = next_field(trimmed);
            let (lsn_text, reason) = next_field(rest);
            let parent = std::str::from_utf8(tli_text)
                .ok()
                .and_then(|t| t.parse::<u32>().ok())
                .ok_or_else(|| err("expected a timeline number"))
                .and_then(|n| TimelineId::new(n).map_err(|_| err("timeline 0")))?;
            let switch_lsn = std::str::from_utf8(lsn_text)
                .ok()
                .and_then(|t| t.parse::<Lsn>().ok())
                .ok_or_else(|| err("expected a switch point LSN"))?;
            if let Some(prev) = entries.last() {
                if parent <= prev.parent {
                    return Err(err("timeline IDs must be in increasing sequence"));
                }
                if switch_lsn < prev.switch_lsn {
                    return Err(err("switch points must not go backwards"));
                }
            }
            // The reason may quote a restore point name in the cluster's own encoding.
            let reason = String::from_utf8_lossy(reason.trim_ascii()).into_owned();
            entries.push(HistoryEntry {
                parent,
                switch_lsn,
                reason,
            });
        }
        Ok(TimelineHistory { entries })
    }

    /// Checks the history belongs to `timeline`: every ancestor is older than it.
    pub fn validate_for(&self, timeline: TimelineId) -> Result<(), WalError> {
        match self.entries.last() {
            Some(last) if last.parent >= timeline => Err(WalError::InvalidHistory {
                line: 0,
                reason: format!(
                    "ancestor timeline {} is not older than timeline {timeline}",
                    last.parent
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// The stretch of WAL that recovery reads from one timeline on its way to a target timeline:
/// from `begin` (inclusive) to `end` (exclusive; `None` while the timeline is the newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSpan {
    /// The timeline to read.
    pub timeline: TimelineId,
    /// The first position read from this timeline (inclusive).
    pub begin: Lsn,
    /// Where the next timeline branches off (exclusive); `None` for the newest timeline.
    pub end: Option<Lsn>,
}

impl TimelineSpan {
    /// Whether `lsn` lies within `begin..end`.
    pub fn contains(&self, lsn: Lsn) -> bool {
        lsn >= self.begin && self.end.is_none_or(|end| lsn < end)
    }
}

impl TimelineHistory {
    /// The path recovery follows to reach `timeline`, oldest first: each ancestor up to the
    /// point where the next timeline branched off, then `timeline` itself, open-ended.
    pub fn spans(&self, timeline: TimelineId) -> Vec<TimelineSpan> {
        let mut spans = Vec::with_capacity(self.entries.len() + 1);
        let mut begin = Lsn::new(0);
        for entry in &self.entries {
            spans.push(TimelineSpan {
                timeline: entry.parent,
                begin,
                end: Some(entry.switch_lsn),
            });
            begin = entry.switch_lsn;
        }
        spans.push(TimelineSpan {
            timeline,
            begin,
            end: None,
        });
        spans
    }
}

/// Whether a recovery that starts at `lsn` on `timeline` can follow `spans` (a target
/// timeline's path): `timeline` is on the path and `lsn` lies before it branched off.
pub fn path_passes(spans: &[TimelineSpan], timeline: TimelineId, lsn: Lsn) -> bool {
    spans
        .iter()
        .any(|span| span.timeline == timeline && span.end.is_none_or(|end| lsn < end))
}

/// Splits off the first white-space separated field; the rest keeps its inner spacing.
fn next_field(text: &[u8]) -> (&[u8], &[u8]) {
    let text = text.trim_ascii_start();
    let end = text
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(text.len());
    text.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgresql_output() {
        let text = b"1\t0/3000148\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point \"x\"\n";
        let history = TimelineHistory::parse(text).unwrap();
        assert_eq!(history.entries.len(), 2);
        assert_eq!(history.entries[0].parent.get(), 1);
        assert_eq!(history.entries[0].switch_lsn.to_string(), "0/3000148");
        assert_eq!(history.entries[0].reason, "no recovery target specified");
        assert_eq!(history.entries[1].reason, "at restore point \"x\"");
        history.validate_for(TimelineId::new(3).unwrap()).unwrap();
        assert!(history.validate_for(TimelineId::new(2).unwrap()).is_err());
    }

    #[test]
    fn accepts_lines_without_reason_and_extra_spaces() {
        let history = TimelineHistory::parse(b"  1   0/16B3748\n").unwrap();
        assert_eq!(history.entries[0].switch_lsn.to_string(), "0/16B3748");
        assert_eq!(history.entries[0].reason, "");
    }

    #[test]
    fn reason_text_may_be_in_any_encoding() {
        // A LATIN1 restore point name: "café".
        let history =
            TimelineHistory::parse(b"1\t0/3000148\tat restore point \"caf\xe9\"\n").unwrap();
        assert_eq!(history.entries[0].switch_lsn.to_string(), "0/3000148");
        assert!(
            history.entries[0]
                .reason
                .starts_with("at restore point \"caf")
        );
    }

    #[test]
    fn spans_follow_the_ancestry_up_to_each_switch_point() {
        let history = TimelineHistory::parse(b"1\t0/3000148\tx\n2\t0/5000000\ty\n").unwrap();
        let tli = |n| TimelineId::new(n).unwrap();
        let lsn = |s: &str| s.parse::<Lsn>().unwrap();
        let spans = history.spans(tli(3));
        assert_eq!(
            spans,
            vec![
                TimelineSpan {
                    timeline: tli(1),
                    begin: lsn("0/0"),
                    end: Some(lsn("0/3000148"))
                },
                TimelineSpan {
                    timeline: tli(2),
                    begin: lsn("0/3000148"),
                    end: Some(lsn("0/5000000"))
                },
                TimelineSpan {
                    timeline: tli(3),
                    begin: lsn("0/5000000"),
                    end: None
                },
            ]
        );
        assert!(spans[1].contains(lsn("0/3000148")) && !spans[1].contains(lsn("0/5000000")));
        assert!(path_passes(&spans, tli(1), lsn("0/2000028")));
        assert!(
            !path_passes(&spans, tli(1), lsn("0/3000148")),
            "TLI 1 left at the switch"
        );
        assert!(path_passes(&spans, tli(3), lsn("5/0")));
        assert!(!path_passes(&spans, tli(4), lsn("0/1")));
        assert_eq!(TimelineHistory::default().spans(tli(1)).len(), 1);
    }

    #[test]
    fn rejects_garbage() {
        let bad: [&[u8]; 7] = [
            b"x\t0/1\n",
            b"1\n",
            b"1\tzz\n",
            b"0\t0/1\n",
            b"2\t0/1\n1\t0/2\n",
            b"1\t0/5\n2\t0/4\n",
            b"\xff\xfe\t0/1\n",
        ];
        for content in bad {
            assert!(
                TimelineHistory::parse(content).is_err(),
                "{content:?} must be refused"
            );
        }
    }
}
