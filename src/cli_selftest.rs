//! `warden selftest`: ask the running Warden to check its filtering now (`POST
//! /selftest`), print each failing check and the count, and exit 1 if any failed (2 if
//! it could not be asked), so a monitoring script or a governor's check can rely on it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::selftest::Outcome;

/// Run `warden selftest` with the config at `path`.
pub(crate) fn run(path: &Path) -> Result<ExitCode> {
    let config = crate::config::Config::load(path)?;
    let runtime = crate::cli_daemon::current_thread_runtime()?;
    let reply = runtime.block_on(crate::cli_daemon::post(&config, "/selftest"))?;
    if let Some(error) = reply.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("the running Warden did not run the self-test: {error}");
    }
    let outcomes: Vec<Outcome> = serde_json::from_value(reply["run"]["outcomes"].clone())
        .map_err(|e| anyhow::anyhow!("the running Warden's answer is not a self-test: {e}"))?;
    let mut out = std::io::stdout().lock();
    write_report(&mut out, &outcomes)?;
    Ok(if outcomes.iter().all(|o| o.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A line per failing check, then `N of M checks pass`.
fn write_report(out: &mut impl Write, outcomes: &[Outcome]) -> std::io::Result<()> {
    for o in outcomes.iter().filter(|o| !o.ok) {
        writeln!(out, "FAIL {}: {}", o.label(), o.detail)?;
    }
    let passed = outcomes.iter().filter(|o| o.ok).count();
    writeln!(out, "{passed} of {} checks pass", outcomes.len())
}
