//! `tidemark pg` flags, the fault specification, and the seeded random numbers.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::duration;
use crate::pipeline_common::flags::{self, Args, Common, Flags};

/// The local cluster of `scripts/pg.sh` (port `TIDEMARK_PG_PORT`, default 54329).
pub(crate) const DEFAULT_URL: &str = "postgresql://postgres@127.0.0.1:54329/postgres";

/// Which tracker decides what is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrackerKind {
    /// `tidemark::Tracker`: exact ack, staleness sweeps, evictions.
    Tidemark,
    /// Electric's algorithm (`tidemark_testkit::model::ElectricTracker`): per-writer minimum, no sweeps.
    Electric,
}

impl TrackerKind {
    /// A stable name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TrackerKind::Tidemark => "tidemark",
            TrackerKind::Electric => "electric",
        }
    }
}

/// A fault kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FaultKind {
    /// The writer's worker drops it without any cleanup (in-flight batch abandoned); the host
    /// reports `down(teardown)` as a process monitor would. Must be evicted `orphaned`.
    Kill,
    /// Keeps accepting, never stores, never answers a challenge. Must be evicted `stalled`.
    Wedge,
    /// Storage latency `--slow-ms` per batch, still progressing. Must not be evicted.
    Slow,
}

impl FaultKind {
    /// A stable name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Wedge => "wedge",
            FaultKind::Slow => "slow",
        }
    }

    /// The documented detection bound `G + k·P`: its `k`.
    pub(crate) fn bound_sweeps(self) -> u64 {
        match self {
            FaultKind::Kill => 1,
            FaultKind::Wedge | FaultKind::Slow => 2,
        }
    }

    /// Does it pin the slot until evicted?
    pub(crate) fn pins(self) -> bool {
        matches!(self, FaultKind::Kill | FaultKind::Wedge)
    }
}

/// One requested fault: a kind and, optionally, when (ms after the load starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FaultSpec {
    /// What.
    pub kind: FaultKind,
    /// When; `None`: spread over the run (see [`Config::fault_times`]).
    pub at_ms: Option<u64>,
}

/// The flags (see [`HELP`]).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// The server (`postgresql://user[:password]@host:port/db`).
    pub url: String,
    /// The logical slot.
    pub slot: String,
    /// The publication.
    pub publication: String,
    /// Which tracker acknowledges.
    pub tracker: TrackerKind,
    /// Rows inserted or updated per second.
    pub rate: u64,
    /// Keys per writer (row ids `0..writers * keys`; writer = id mod writers).
    pub keys_per_writer: u64,
    /// Fraction of transactions that write the unpublished table instead.
    pub noise: f64,
    /// Payload bytes per row.
    pub row_bytes: usize,
    /// Faults, in order.
    pub faults: Vec<FaultSpec>,
    /// Storage latency per batch (ms).
    pub latency_ms: u64,
    /// fsync every append.
    pub fsync: bool,
    /// Standby status update interval (ms).
    pub status_ms: u64,
    /// Where the stores go (default: a fresh temp dir, removed at the end).
    pub store_dir: Option<PathBuf>,
    /// Keep the store directory.
    pub keep_store: bool,
    /// Keep the slot when this run created it (it is dropped by default: a leftover slot
    /// retains WAL forever).
    pub keep_slot: bool,
    /// Top of the chart's retained-WAL axis (MiB; default: the run's peak), so that two
    /// charts can share a scale.
    pub chart_max_mib: Option<f64>,
    /// The flags both commands take.
    pub common: Common,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: DEFAULT_URL.to_owned(),
            slot: "tidemark".to_owned(),
            publication: "tidemark".to_owned(),
            tracker: TrackerKind::Tidemark,
            rate: 2_000,
            keys_per_writer: 8,
            noise: 0.1,
            row_bytes: 64,
            faults: vec![
                FaultSpec {
                    kind: FaultKind::Kill,
                    at_ms: None,
                },
                FaultSpec {
                    kind: FaultKind::Wedge,
                    at_ms: None,
                },
                FaultSpec {
                    kind: FaultKind::Slow,
                    at_ms: None,
                },
            ],
            latency_ms: 5,
            fsync: false,
            status_ms: 100,
            store_dir: None,
            keep_store: false,
            keep_slot: false,
            chart_max_mib: None,
            common: Common {
                duration: Duration::from_secs(20),
                writers: 1_000,
                grace_ms: 2_000,
                sweep_ms: 200,
                seed: 1,
                workers: 2,
                slow_ms: 300,
                linger_ms: 5,
                max_batch: 64,
                capacity: 256,
                chart: None,
                json: false,
                progress: true,
            },
        }
    }
}

impl Config {
    /// When each fault happens (ms after the load starts): the given time, or from 20 % of
    /// the run on, one every [`Config::fault_spacing_ms`] when they all fit before 70 % of it
    /// (so that each kill or wedge is resolved before the next), else spread over 20–60 %.
    pub(crate) fn fault_times(&self) -> Vec<u64> {
        let total = self.common.duration.as_millis() as u64;
        let n = self.faults.len().max(1) as u64;
        let spread = (total * 2 / 5) / n;
        let gap = self.fault_spacing_ms().max(spread);
        let gap = if total / 5 + gap * (n - 1) <= total * 7 / 10 {
            gap
        } else {
            spread
        };
        self.faults
            .iter()
            .enumerate()
            .map(|(k, f)| f.at_ms.unwrap_or(total / 5 + gap * k as u64))
            .collect()
    }

    /// The time a kill or a wedge needs to resolve: its detection bound `G + 2P` plus 1.5 s
    /// for the slot to follow.
    pub(crate) fn fault_spacing_ms(&self) -> u64 {
        self.common.grace_ms + 2 * self.common.sweep_ms + 1_500
    }
}

/// `tidemark pg --help`.
pub(crate) const HELP: &str = "\
usage: tidemark pg [flags]

Streams a real PostgreSQL logical slot (pgoutput, streaming replication protocol) into writers
with their own batch buffers and append-only stores, acknowledges the slot with the tracker's
ack, injects faults, and checks that no change is confirmed before every writer it went to had
stored it. Start a throwaway server with `scripts/pg.sh start`. Exit status 0 when every check
passed, 1 otherwise, 2 on bad flags or when the server cannot be used.

flags (defaults in brackets):
  --url URL          server [postgresql://postgres@127.0.0.1:54329/postgres, scripts/pg.sh]
  --slot NAME        logical slot, created (pgoutput) unless it exists [tidemark]
  --publication P    publication, created unless it exists [tidemark]
  --tracker T        tidemark or electric (per-writer minimum, no staleness sweeps) [tidemark]
  --duration D       how long the load runs, e.g. 20s, 500ms [20s]
  --writers N        writers; a row with id k goes to writer k mod N [1000]
  --rate N           rows inserted or updated per second [2000]
  --keys N           keys per writer [8]
  --noise F          fraction of transactions on an unpublished table [0.1]
  --row-bytes N      payload bytes per row [64]
  --faults LIST      comma-separated kill, wedge, slow, each optionally @TIME (e.g. kill@4s);
                     `none` for no faults [kill,wedge,slow, from 20 % of the run on, each
                     resolved before the next when they fit]
  --grace-ms G       stall grace period [2000]
  --sweep-ms P       sweep period [200]
  --workers N        worker threads storing batches [2]
  --latency-ms L     storage latency per batch [5]
  --slow-ms L        storage latency per batch of a slow writer [300]
  --fsync            fsync every append
  --linger-ms L      batch linger [5]
  --max-batch N      messages per batch [64]
  --capacity N       buffer capacity per writer, messages [256]
  --status-ms S      standby status update interval [100]
  --seed S           seed of every random choice [1]
  --store-dir DIR    where the per-writer stores go [a fresh temp dir, removed at the end]
  --keep-store       keep the store directory
  --keep-slot        keep the slot even when this run created it [dropped at the end]
  --chart FILE       write an SVG chart: retained WAL, confirmed vs newest commit, faults
  --chart-max-mib M  top of the chart's retained-WAL axis, to compare charts [the peak]
  --json             print the report as JSON
  --no-progress      no live progress (it is drawn only when stdout is a terminal anyway)
";

impl Flags for Config {
    const CMD: &'static str = "pg";

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn own(&mut self, flag: &str, a: &mut Args<'_>) -> Result<bool, String> {
        match flag {
            "--fsync" => self.fsync = true,
            "--keep-store" => self.keep_store = true,
            "--keep-slot" => self.keep_slot = true,
            "--url" => self.url = a.value(flag)?.to_owned(),
            "--slot" => self.slot = ident(flag, a.value(flag)?)?,
            "--publication" => self.publication = ident(flag, a.value(flag)?)?,
            "--tracker" => {
                self.tracker = match a.value(flag)? {
                    "tidemark" => TrackerKind::Tidemark,
                    "electric" => TrackerKind::Electric,
                    other => return Err(format!("pg: unknown --tracker `{other}`")),
                }
            }
            "--rate" => self.rate = a.number(flag)?,
            "--keys" => self.keys_per_writer = a.number(flag)?,
            "--noise" => self.noise = a.fraction(flag)?,
            "--row-bytes" => self.row_bytes = a.number(flag)?,
            "--faults" => self.faults = faults(a.value(flag)?)?,
            "--latency-ms" => self.latency_ms = a.number(flag)?,
            "--status-ms" => self.status_ms = a.number(flag)?,
            "--store-dir" => self.store_dir = Some(PathBuf::from(a.value(flag)?)),
            "--chart-max-mib" => {
                let v = a.value(flag)?;
                self.chart_max_mib = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|m| m.is_finite() && *m > 0.0)
                        .ok_or_else(|| {
                            format!("pg: --chart-max-mib wants a positive number, got `{v}`")
                        })?,
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn validate(&self) -> Result<(), String> {
        let c = self;
        let own_first = [
            (
                c.common.writers >= 1 && c.common.writers <= 100_000,
                "--writers must be in 1..=100000",
            ),
            (
                c.rate >= 1 && c.rate <= 1_000_000,
                "--rate must be in 1..=1000000",
            ),
            (c.keys_per_writer >= 1, "--keys must be at least 1"),
        ];
        let own_last = [
            (
                c.status_ms >= 1 && c.status_ms <= 10_000,
                "--status-ms must be in 1..=10000",
            ),
            (
                c.faults.len() <= c.common.writers,
                "--faults: at most one fault per writer",
            ),
        ];
        let shared = flags::pipeline_checks(&c.common);
        flags::check(
            Self::CMD,
            own_first.into_iter().chain(shared).chain(own_last),
            c.common.duration,
            Duration::from_millis(500),
        )?;
        let total = c.common.duration.as_millis() as u64;
        if c.faults.iter().any(|f| f.at_ms.is_some_and(|t| t >= total)) {
            return Err("pg: --faults: every fault time must be within --duration".into());
        }
        Ok(())
    }
}

/// Parses the arguments after `pg`; `None` when help was asked for.
#[cfg(test)]
fn parse(args: &[String]) -> Result<Option<Config>, String> {
    flags::parse(args)
}

/// `kill,wedge@8s,slow` or `none`.
fn faults(v: &str) -> Result<Vec<FaultSpec>, String> {
    if v == "none" || v.is_empty() {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|item| {
            let (kind, at) = match item.split_once('@') {
                Some((k, t)) => (k, Some(duration("pg", "--faults", t)?.as_millis() as u64)),
                None => (item, None),
            };
            let kind = match kind.trim() {
                "kill" => FaultKind::Kill,
                "wedge" => FaultKind::Wedge,
                "slow" => FaultKind::Slow,
                other => return Err(format!("pg: unknown fault `{other}` (kill, wedge, slow)")),
            };
            Ok(FaultSpec { kind, at_ms: at })
        })
        .collect()
}

/// A slot or publication name: a plain lower-case identifier (it is spliced into SQL).
fn ident(flag: &str, v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '_')
        && v.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "pg: {flag} wants a lower-case identifier ([a-z_][a-z0-9_]*, at most 63), got `{v}`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_flags_and_faults() {
        let Some(c) = parse(&args(
            "--duration 5s --writers 50 --faults kill@1s,wedge --tracker electric --grace-ms 500",
        ))
        .unwrap() else {
            panic!("expected a run")
        };
        assert_eq!(c.common.duration, Duration::from_secs(5));
        assert_eq!(c.tracker, TrackerKind::Electric);
        assert_eq!(
            c.common.sweep_ms, 50,
            "sweep period follows the grace period"
        );
        assert_eq!(
            c.faults,
            vec![
                FaultSpec {
                    kind: FaultKind::Kill,
                    at_ms: Some(1000)
                },
                FaultSpec {
                    kind: FaultKind::Wedge,
                    at_ms: None
                }
            ]
        );
        assert_eq!(c.fault_times(), vec![1000, 3100]);
        assert!(parse(&args("--faults explode")).is_err());
        assert!(parse(&args("--faults kill@30s")).is_err());
        assert!(parse(&args("--slot Bad-Name")).is_err());
        assert!(parse(&args("--bogus")).is_err());
        assert!(matches!(
            parse(&args("--faults none")).unwrap(),
            Some(c) if c.faults.is_empty()
        ));
    }
}
