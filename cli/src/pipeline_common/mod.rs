//! The host side that `simulate` and `pg` wire the same way around the tracker:
//!
//! - [`writer`]: one writer's batch buffer, mode, spill queue and observer inputs, and the
//!   counters the workers keep.
//! - [`worker`]: the worker loop over a shard of writers (linger timers, a storage heap, faults,
//!   the graceful drain); each command supplies its storage through [`worker::Storage`].
//! - [`sweep`]: the sweeper loop (gate-locked sweep, eviction marks, sweep measurements).
//! - [`host`]: the state around the writers both commands share (clock, gate, sweep log,
//!   worker counters) and what a worker works on.
//! - [`flags`]: the flags both commands take and the helpers to read the rest.
//! - [`faults`]: fault targets on distinct writers.
//! - [`report`]: the message balance, checks and percentiles of the final reports.

pub(crate) mod faults;
pub(crate) mod flags;
pub(crate) mod host;
pub(crate) mod report;
pub(crate) mod sweep;
pub(crate) mod worker;
pub(crate) mod writer;

use std::process::ExitCode;

/// The chart of a run of `simulate` or `pg`.
pub(crate) trait Chart {
    /// The chart (SVG).
    fn svg(&self) -> String;
}

/// What a run of `simulate` or `pg` produces; where the chart goes and whether the report is
/// JSON are the run's flags.
pub(crate) trait Outcome: Chart {
    /// The report as JSON.
    fn json(&self) -> serde_json::Value;
    /// The report as text.
    fn text(&self) -> String;
    /// Did every check that counts pass?
    fn passed(&self) -> bool;
}

/// Runs command `C::CMD` with the arguments after it: parses the flags (usage errors exit 2),
/// runs, writes the chart, prints the report; exit 0 when it passed, 1 otherwise, 2 when the
/// run could not be made or the chart not written.
pub(crate) fn main<C: flags::Flags, R: Outcome>(
    args: &[String],
    help: &str,
    run: impl FnOnce(C) -> Result<R, String>,
) -> ExitCode {
    let cmd = C::CMD;
    let mut cfg = match flags::parse::<C>(args) {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return crate::usage_error(&e),
    };
    let (chart, json) = {
        let common = cfg.common();
        (common.chart.clone(), common.json)
    };
    let report = match run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidemark: {cmd}: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    if let Some(path) = chart
        && let Err(e) = std::fs::write(&path, report.svg())
    {
        eprintln!("tidemark: {cmd}: cannot write {}: {e}", path.display());
        return ExitCode::from(crate::EXIT_USAGE);
    }
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
