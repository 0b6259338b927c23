//! `walarch check`: is archiving into this repository working end to end, right now? One
//! line per item; exit 1 when any item failed (for monitoring and cron).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::anyhow;
use serde::Serialize;
use walarch_core::Engine;
use walarch_core::check::{CheckReport, CheckStatus};

use crate::Failure;
use crate::args::CheckArgs;
use crate::output::Output;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct CheckResult<'a> {
    passed: bool,
    #[serde(flatten)]
    report: &'a CheckReport,
}

pub async fn run(settings: &Settings, args: &CheckArgs, out: &Output) -> Result<(), Failure> {
    let engine = Engine::open(settings.engine.clone())?;
    let connection = crate::pg_env::connection_config(args.dbname.as_deref())?;
    let report = engine
        .check(
            &connection,
            Duration::from_secs(args.timeout),
            &super::cancel_on_signal(),
        )
        .await;
    let passed = report.passed();
    let mut human = String::new();
    for item in &report.items {
        let status = match item.status {
            CheckStatus::Ok => "ok",
            CheckStatus::Warning => "warning",
            CheckStatus::Failed => "FAILED",
        };
        let _ = writeln!(human, "{status:<8} {:<16} {}", item.name, item.detail);
    }
    out.result(
        &CheckResult {
            passed,
            report: &report,
        },
        Some(human.trim_end().to_owned()),
    );
    if passed {
        Ok(())
    } else {
        Err(anyhow!("check failed (the items marked FAILED above say what to do)").into())
    }
}
