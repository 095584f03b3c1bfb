//! Command-line reading for `simulate` and `pg`: the flags both take (the pipeline's shape,
//! timing and output), the readers for flag values, and the checks both make.

use std::path::PathBuf;
use std::time::Duration;

/// The flags both commands take, pointing into a command's configuration.
pub(crate) struct CommonFlags<'a> {
    /// `--duration`.
    pub duration: &'a mut Duration,
    /// `--writers`.
    pub writers: &'a mut usize,
    /// `--grace-ms`.
    pub grace_ms: &'a mut u64,
    /// `--sweep-ms`.
    pub sweep_ms: &'a mut u64,
    /// `--seed`.
    pub seed: &'a mut u64,
    /// `--workers`.
    pub workers: &'a mut usize,
    /// `--slow-ms`.
    pub slow_ms: &'a mut u64,
    /// `--linger-ms`.
    pub linger_ms: &'a mut u64,
    /// `--max-batch`.
    pub max_batch: &'a mut usize,
    /// `--capacity`.
    pub capacity: &'a mut usize,
    /// `--chart`.
    pub chart: &'a mut Option<PathBuf>,
    /// `--json`.
    pub json: &'a mut bool,
    /// `--no-progress` clears it.
    pub progress: &'a mut bool,
}

/// A command's configuration as flags set it.
pub(crate) trait Flags: Default {
    /// The command name, the prefix of every error.
    const CMD: &'static str;

    /// The flags it shares with the other command.
    fn common(&mut self) -> CommonFlags<'_>;

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
        *f.sweep_ms = (*f.sweep_ms).min((*f.grace_ms / 10).max(1));
    }
    c.validate()?;
    Ok(Some(c))
}

/// Reads `flag` when both commands take it; `Ok(false)` when it is not one of those.
fn common_flag(f: CommonFlags<'_>, flag: &str, a: &mut Args<'_>) -> Result<bool, String> {
    match flag {
        "--json" => *f.json = true,
        "--no-progress" => *f.progress = false,
        "--duration" => *f.duration = a.duration(flag)?,
        "--writers" => *f.writers = a.number(flag)?,
        "--grace-ms" => *f.grace_ms = a.number(flag)?,
        "--sweep-ms" => *f.sweep_ms = a.number(flag)?,
        "--seed" => *f.seed = a.number(flag)?,
        "--workers" => *f.workers = a.number(flag)?,
        "--slow-ms" => *f.slow_ms = a.number(flag)?,
        "--linger-ms" => *f.linger_ms = a.number(flag)?,
        "--max-batch" => *f.max_batch = a.number(flag)?,
        "--capacity" => *f.capacity = a.number(flag)?,
        "--chart" => *f.chart = Some(PathBuf::from(a.value(flag)?)),
        _ => return Ok(false),
    }
    Ok(true)
}

/// The checks both commands make on the pipeline's shape and timing.
pub(crate) fn pipeline_checks(
    workers: usize,
    grace_ms: u64,
    sweep_ms: u64,
    max_batch: usize,
    capacity: usize,
) -> [(bool, &'static str); 4] {
    [
        ((1..=64).contains(&workers), "--workers must be in 1..=64"),
        (grace_ms >= 10, "--grace-ms must be at least 10"),
        (sweep_ms >= 1, "--sweep-ms must be at least 1"),
        (
            max_batch >= 1 && capacity >= max_batch,
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
