//! Retention policies: keep the N newest backups, keep what recovery to any point of a time
//! window needs, or both (the union).

use std::fmt;
use std::str::FromStr;

use chrono::TimeDelta;
use serde::{Serialize, Serializer};

use super::RetentionError;

/// How far back recovery must stay possible: `30d`, `12h`, `90m` or `45s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionWindow {
    seconds: u64,
}

/// Units a window is written in, largest first (for printing).
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// A century: anything longer is a typo, and larger values would overflow time arithmetic.
const MAX_SECONDS: u64 = 100 * 366 * 86_400;

impl RetentionWindow {
    /// A window of `seconds`; refuses 0 and more than 100 years.
    pub fn from_seconds(seconds: u64) -> Result<Self, RetentionError> {
        let invalid = |reason: &str| RetentionError::InvalidWindow {
            text: format!("{seconds}s"),
            reason: reason.to_owned(),
        };
        match seconds {
            0 => Err(invalid("a window must be longer than zero")),
            s if s > MAX_SECONDS => Err(invalid("a window is at most 100 years")),
            _ => Ok(RetentionWindow { seconds }),
        }
    }

    /// The window's length in seconds.
    pub fn as_seconds(self) -> u64 {
        self.seconds
    }

    /// The window's length as a duration.
    pub fn as_time_delta(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds as i64)
    }
}

impl FromStr for RetentionWindow {
    type Err = RetentionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| RetentionError::InvalidWindow {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let expected = "expected a number and a unit: 30d, 12h, 90m or 45s";
        let unit = text.chars().last().ok_or_else(|| invalid(expected))?;
        let (_, multiplier) = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .ok_or_else(|| invalid(expected))?;
        let digits = &text[..text.len() - unit.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(expected));
        }
        let seconds = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(*multiplier))
            .ok_or_else(|| invalid("a window is at most 100 years"))?;
        RetentionWindow::from_seconds(seconds).map_err(|e| match e {
            RetentionError::InvalidWindow { reason, .. } => invalid(&reason),
            other => other,
        })
    }
}

impl fmt::Display for RetentionWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, size) = UNITS
            .iter()
            .find(|(_, size)| self.seconds.is_multiple_of(*size))
            .expect("every whole number of seconds divides by 1 s");
        write!(f, "{}{unit}", self.seconds / size)
    }
}

impl Serialize for RetentionWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What to keep. At least one of the two is given; with both, a backup is kept when either
/// keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    keep: Option<u32>,
    window: Option<RetentionWindow>,
}

impl RetentionPolicy {
    /// `keep`: the number of newest backups to keep (at least 1); `window`: keep whatever
    /// recovery to any point of the last `window` needs.
    pub fn new(keep: Option<u32>, window: Option<RetentionWindow>) -> Result<Self, RetentionError> {
        match (keep, window) {
            (None, None) => Err(RetentionError::NoPolicy),
            (Some(0), _) => Err(RetentionError::KeepZero),
            _ => Ok(RetentionPolicy { keep, window }),
        }
    }

    /// The number of newest backups to keep (at least 1); `None` when only the window counts.
    pub fn keep(&self) -> Option<u32> {
        self.keep
    }

    /// The time window recovery must reach back over; `None` when only the number of backups
    /// counts.
    pub fn window(&self) -> Option<RetentionWindow> {
        self.window
    }
}

impl fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keep = self.keep.map(|n| match n {
            1 => "the newest backup".to_owned(),
            n => format!("the {n} newest backups"),
        });
        let window = self
            .window
            .map(|w| format!("what recovery to any point of the last {w} needs"));
        match (keep, window) {
            (Some(k), Some(w)) => write!(f, "keep {k} and {w}"),
            (Some(k), None) => write!(f, "keep {k}"),
            (None, Some(w)) => write!(f, "keep {w}"),
            // Not constructible; printed honestly all the same.
            (None, None) => f.write_str("keep everything"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_print_in_their_unit() {
        for (text, seconds) in [
            ("30d", 30 * 86_400),
            ("12h", 12 * 3_600),
            ("90m", 90 * 60),
            ("45s", 45),
            ("1d", 86_400),
        ] {
            let window: RetentionWindow = text.parse().unwrap();
            assert_eq!(window.as_seconds(), seconds, "{text}");
            assert_eq!(window.to_string(), text);
        }
        assert_eq!("120m".parse::<RetentionWindow>().unwrap().to_string(), "2h");
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-1d",
            "0d",
            "1.5h",
            " 3d",
            "3d ",
            "1h30m",
            "99999999999999999999d",
            "40000d",
            "3é",
        ] {
            assert!(bad.parse::<RetentionWindow>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_policy_needs_something_to_keep() {
        assert!(matches!(
            RetentionPolicy::new(None, None),
            Err(RetentionError::NoPolicy)
        ));
        assert!(matches!(
            RetentionPolicy::new(Some(0), None),
            Err(RetentionError::KeepZero)
        ));
        let window = "30d".parse().ok();
        let both = RetentionPolicy::new(Some(2), window).unwrap();
        assert_eq!(
            both.to_string(),
            "keep the 2 newest backups and what recovery to any point of the last 30d needs"
        );
        assert_eq!(
            serde_json::to_value(both).unwrap(),
            serde_json::json!({"keep": 2, "window": "30d"})
        );
    }
}
