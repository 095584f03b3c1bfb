//! Command-line reading for `simulate` and `pg`: the flags both take (the pipeline's shape,
//! timing and output), the readers for flag values, and the checks both make.

use std::path::PathBuf;
use std::time::Duration;

/// The flags both commands take; each command's configuration holds one, with its own defaults.
#[derive(Clone, Debug)]
pub(crate) struct Common {
    /// How long the load runs (`--duration`; the drain comes after).
    pub duration: Duration,
    /// Writers, each with its own batch buffer (`--writers`).
    pub writers: usize,
    /// The tracker's stall grace period `G` (ms, `--grace-ms`).
    pub grace_ms: u64,
    /// The sweep period `P` (ms, `--sweep-ms`).
    pub sweep_ms: u64,
    /// Seed of every random choice (`--seed`).
    pub seed: u64,
    /// Worker threads (`--workers`).
    pub workers: usize,
    /// Storage latency per batch of a slow writer (ms, `--slow-ms`).
    pub slow_ms: u64,
    /// Batch linger (ms, `--linger-ms`).
    pub linger_ms: u64,
    /// Messages per batch (`--max-batch`).
    pub max_batch: usize,
    /// Buffer capacity per writer, messages (`--capacity`).
    pub capacity: usize,
    /// Write an SVG chart here (`--chart`).
    pub chart: Option<PathBuf>,
    /// Print the report as JSON instead of text (`--json`).
    pub json: bool,
    /// Draw live progress, only when stdout is a terminal (`--no-progress` clears it).
    pub progress: bool,
}

/// A command's configuration as flags set it.
pub(crate) trait Flags: Default {
    /// The command name, the prefix of every error.
    const CMD: &'static str;

    /// The flags it shares with the other command.
    fn common(&mut self) -> &mut Common;

    /// Reads a flag of this command only; `Ok(false)` when it is not one.
    fn own(&mut self, flag: &str, args: &mut Args<'_>) -> Result<bool, String>;

    /// Checks the whole configuration.
    fn validate(&self) -> Result<(), String>;
}

/// The arguments being read.
pub(crate) struct Args<'a> {
    cmd: &'static str,
    it: std::slice::Iter<'a, String>,
}

impl<'a> Args<'a> {
    /// The value after `flag`.
    pub(crate) fn value(&mut self, flag: &str) -> Result<&'a str, String> {
        self.it
            .next()
            .map(String::as_str)
            .ok_or_else(|| format!("{}: {flag} needs a value", self.cmd))
    }

    /// A number (`_` allowed as a separator).
    pub(crate) fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, String> {
        let v = self.value(flag)?;
        let cleaned: String = v.chars().filter(|&ch| ch != '_').collect();
        cleaned
            .parse()
            .map_err(|_| format!("{}: {flag} wants a number, got `{v}`", self.cmd))
    }

    /// A duration (see [`crate::common::duration`]).
    pub(crate) fn duration(&mut self, flag: &str) -> Result<Duration, String> {
        let v = self.value(flag)?;
        crate::common::duration(self.cmd, flag, v)
    }

    /// A fraction `0 <= F < 1`.
    pub(crate) fn fraction(&mut self, flag: &str) -> Result<f64, String> {
        let v = self.value(flag)?;
        v.parse::<f64>()
            .ok()
            .filter(|r| (0.0..1.0).contains(r))
            .ok_or_else(|| format!("{}: {flag} wants 0 <= F < 1, got `{v}`", self.cmd))
    }
}

/// Parses `args` into `C`; `None` when help was asked for.
pub(crate) fn parse<C: Flags>(args: &[String]) -> Result<Option<C>, String> {
    let mut c = C::default();
    let mut sweep_set = false;
    let mut a = Args {
        cmd: C::CMD,
        it: args.iter(),
    };
    while let Some(flag) = a.it.next() {
        let flag = flag.as_str();
        if matches!(flag, "-h" | "--help") {
            return Ok(None);
        }
        if flag == "--sweep-ms" {
            sweep_set = true;
        }
        if !common_flag(c.common(), flag, &mut a)? && !c.own(flag, &mut a)? {
            return Err(format!("{}: unknown flag `{flag}`", C::CMD));
        }
    }
    if !sweep_set {
        // Keep the default sweep period a tenth of the grace period when only G was changed.
        let f = c.common();
        f.sweep_ms = f.sweep_ms.min((f.grace_ms / 10).max(1));
    }
    c.validate()?;
    Ok(Some(c))
}

/// Reads `flag` when both commands take it; `Ok(false)` when it is not one of those.
fn common_flag(f: &mut Common, flag: &str, a: &mut Args<'_>) -> Result<bool, String> {
    // Every field named: a new shared flag cannot be left out here.
    let Common {
        duration,
        writers,
        grace_ms,
        sweep_ms,
        seed,
        workers,
        slow_ms,
        linger_ms,
        max_batch,
        capacity,
        chart,
        json,
        progress,
    } = f;
    match flag {
        "--json" => *json = true,
        "--no-progress" => *progress = false,
        "--duration" => *duration = a.duration(flag)?,
        "--writers" => *writers = a.number(flag)?,
        "--grace-ms" => *grace_ms = a.number(flag)?,
        "--sweep-ms" => *sweep_ms = a.number(flag)?,
        "--seed" => *seed = a.number(flag)?,
        "--workers" => *workers = a.number(flag)?,
        "--slow-ms" => *slow_ms = a.number(flag)?,
        "--linger-ms" => *linger_ms = a.number(flag)?,
        "--max-batch" => *max_batch = a.number(flag)?,
        "--capacity" => *capacity = a.number(flag)?,
        "--chart" => *chart = Some(PathBuf::from(a.value(flag)?)),
        _ => return Ok(false),
    }
    Ok(true)
}

/// The checks both commands make on the pipeline's shape and timing.
pub(crate) fn pipeline_checks(c: &Common) -> [(bool, &'static str); 4] {
    [
        ((1..=64).contains(&c.workers), "--workers must be in 1..=64"),
        (c.grace_ms >= 10, "--grace-ms must be at least 10"),
        (c.sweep_ms >= 1, "--sweep-ms must be at least 1"),
        (
            c.max_batch >= 1 && c.capacity >= c.max_batch,
            "--capacity must be >= --max-batch >= 1",
        ),
    ]
}

/// The first failed check as `cmd: message`; then the duration's minimum.
pub(crate) fn check(
    cmd: &str,
    checks: impl IntoIterator<Item = (bool, &'static str)>,
    duration: Duration,
    min_duration: Duration,
) -> Result<(), String> {
    for (ok, msg) in checks {
        if !ok {
            return Err(format!("{cmd}: {msg}"));
        }
    }
    if duration < min_duration {
        return Err(format!(
            "{cmd}: --duration must be at least {}ms",
            min_duration.as_millis()
        ));
    }
    Ok(())
}
