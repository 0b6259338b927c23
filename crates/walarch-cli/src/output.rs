//! What walarch prints: logs to standard error (PostgreSQL's log for archive and restore
//! commands), results to standard output as JSON with `--json`, and one line per failure.

use serde::Serialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use walarch_core::store::redact_secrets;

/// Logs at `filter` (`WALARCH_LOG`, default `warn`). Each phase span that closes prints its
/// time (`time.busy`, `time.idle`): at `debug` that is the per-phase profile of a call, for
/// PostgreSQL's log or a benchmark (the phases are debug spans, silent at the default level).
pub fn init_logging(filter: Option<&str>) {
    let filter =
        EnvFilter::try_new(filter.unwrap_or("warn")).unwrap_or_else(|_| EnvFilter::new("warn"));
    // No timestamps on lines (PostgreSQL's log has its own), but span timings stay: the
    // builder's `without_time` would turn those off too.
    let format = tracing_subscriber::fmt::format()
        .without_time()
        .with_target(false)
        .with_ansi(false);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(format)
        .init();
}

/// Joins an error and its causes with ": ", skipping a cause whose text the line already
/// holds (library errors often quote their source in their own message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        // Redact before folding lines: header values end at a line break.
        let text = redact_secrets(&cause.to_string());
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // Store errors can quote multi-line response bodies; PostgreSQL's log wants one line.
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// Prints a command's result: JSON when asked for, else the human line (if any).
    pub fn result<T: Serialize>(&self, value: &T, human: Option<String>) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(value).expect("results serialise")
            );
        } else if let Some(line) = human {
            println!("{line}");
        }
    }

    /// The one line that says what failed (with its causes), secrets removed, and what to do
    /// about it in this command line's terms; `--json` adds the engine's classification.
    pub fn error(
        &self,
        error: &anyhow::Error,
        kind: Option<walarch_core::ErrorKind>,
        hint: Option<&str>,
        exit_code: u8,
    ) {
        let mut message = one_line(error);
        if let Some(hint) = hint {
            message.push_str(" (");
            message.push_str(hint);
            message.push(')');
        }
        eprintln!("walarch: error: {message}");
        if self.json {
            let value =
                serde_json::json!({ "error": message, "kind": kind, "exit_code": exit_code });
            println!("{value}");
        }
    }
}

/// Bytes in binary units, one decimal: `924.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use anyhow::Context;

    #[test]
    fn causes_are_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let err = Err::<(), _>(io)
            .context("cannot write x: disk on fire")
            .context("wal-fetch failed")
            .unwrap_err();
        assert_eq!(
            one_line(&err),
            "wal-fetch failed: cannot write x: disk on fire"
        );
    }
}
