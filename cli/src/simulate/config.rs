//! `tidemark simulate` flags and the seeded random numbers every part of the run draws from.

use std::time::Duration;

use crate::pipeline_common::flags::{self, Args, Common, Flags};

/// The flags (see [`HELP`]).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Target commits per second; `None`: as fast as the pipeline allows.
    pub rate: Option<u64>,
    /// Injected faults, cycling kill, wedge, slow, pause.
    pub faults: usize,
    /// Storage latency per batch (µs).
    pub latency_us: u64,
    /// Storage throughput per worker (bytes per second).
    pub throughput: u64,
    /// How long a paused writer stays paused (ms).
    pub pause_ms: u64,
    /// Payload bytes per message.
    pub message_bytes: usize,
    /// Probability that the storage rejects a batch transiently (the batch is requeued).
    pub nack_rate: f64,
    /// Deliberately broken behaviour, to prove the checks can fail (tests).
    pub inject_bug: Option<Bug>,
    /// The flags both commands take.
    pub common: Common,
}

/// A deliberate bug for mutation tests: the run must then fail its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bug {
    /// The sink acks a batch (and so reports it flushed to the tracker) when it *takes* it,
    /// before storage completes: the parallel-consumer bug of docs/CONTRACT.md §7 (acking the
    /// highest *seen* offset). The observer must catch the ack passing an unflushed commit.
    EarlyAck,
    /// Paused writers are never resumed at the tracker (and are not paused there either): the
    /// sweep must evict them, which the report must count as a bad eviction.
    ForgetPause,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate: None,
            faults: 8,
            latency_us: 500,
            throughput: 400 << 20,
            pause_ms: 2_000,
            message_bytes: 64,
            nack_rate: 0.001,
            inject_bug: None,
            common: Common {
                duration: Duration::from_secs(10),
                writers: 100_000,
                grace_ms: 1_000,
                sweep_ms: 100,
                seed: 1,
                workers: 2,
                slow_ms: 200,
                linger_ms: 5,
                max_batch: 16,
                capacity: 16,
                chart: None,
                json: false,
                progress: true,
            },
        }
    }
}

/// `tidemark simulate --help`.
pub(crate) const HELP: &str = "\
usage: tidemark simulate [flags]

Runs a replication pipeline on the real library (sequencer -> tracker -> per-writer batch
buffers -> storage sink -> tracker link), injects faults, checks invariants with an independent
observer and prints a report. Exit status 0 when every check passed, 1 otherwise, 2 on bad flags.

flags (defaults in brackets):
  --duration D       how long commits are produced, e.g. 10s, 500ms [10s]
  --writers N        registered writers, one batch buffer each [100000]
  --rate N           target commits per second [as fast as the pipeline allows]
  --faults N         injected faults, cycling kill, wedge, slow, pause [8]
  --grace-ms G       stall grace period of the tracker [1000]
  --sweep-ms P       sweep period [100]
  --seed S           seed of every random choice [1]
  --workers N        worker threads (each a shard of writers and one storage device) [2]
  --latency-us U     storage latency per batch [500]
  --throughput B     storage bytes per second per worker [419430400]
  --slow-ms L        storage latency per batch of a slow writer [200]; it keeps up while
                     it receives fewer than --max-batch messages per L ms
  --pause-ms L       how long a paused writer is held back [2000]
  --linger-ms L      batch linger [5]
  --max-batch N      messages per batch [16]
  --capacity N       buffer capacity per writer, messages [16]
  --message-bytes N  payload bytes per message [64]
  --nack-rate F      probability that storage rejects a batch (it is requeued) [0.001]
  --chart FILE       write an SVG chart of last-seen vs ack with fault and eviction markers
  --json             print the report as JSON
  --no-progress      no live progress (it is drawn only when stdout is a terminal anyway)
  --inject-bug B     for tests: early-ack or forget-pause (the run must then fail)
";

impl Flags for Config {
    const CMD: &'static str = "simulate";

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn own(&mut self, flag: &str, a: &mut Args<'_>) -> Result<bool, String> {
        match flag {
            "--rate" => self.rate = Some(a.number(flag)?),
            "--faults" => self.faults = a.number(flag)?,
            "--latency-us" => self.latency_us = a.number(flag)?,
            "--throughput" => self.throughput = a.number(flag)?,
            "--pause-ms" => self.pause_ms = a.number(flag)?,
            "--message-bytes" => self.message_bytes = a.number(flag)?,
            "--nack-rate" => self.nack_rate = a.fraction(flag)?,
            "--inject-bug" => {
                self.inject_bug = Some(match a.value(flag)? {
                    "early-ack" => Bug::EarlyAck,
                    "forget-pause" => Bug::ForgetPause,
                    other => return Err(format!("simulate: unknown --inject-bug `{other}`")),
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn validate(&self) -> Result<(), String> {
        let c = self;
        let own_first = [
            (c.common.writers >= 4, "--writers must be at least 4"),
            (
                c.common.writers <= 4_000_000,
                "--writers must be at most 4000000",
            ),
            (c.rate != Some(0), "--rate must be positive"),
        ];
        let own_last = [
            (c.throughput > 0, "--throughput must be positive"),
            (
                c.faults <= c.common.writers / 2,
                "--faults must be at most half the writers",
            ),
        ];
        let shared = flags::pipeline_checks(&c.common);
        flags::check(
            Self::CMD,
            own_first.into_iter().chain(shared).chain(own_last),
            c.common.duration,
            Duration::from_millis(100),
        )
    }
}

/// Parses the arguments after `simulate`; `None` when help was asked for.
#[cfg(test)]
fn parse(args: &[String]) -> Result<Option<Config>, String> {
    flags::parse(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_flags_and_durations() {
        let Some(c) = parse(&args(
            "--duration 1500ms --writers 1_000 --rate 5000 --seed 7 --grace-ms 300 --json",
        ))
        .unwrap() else {
            panic!("expected a run")
        };
        assert_eq!(c.common.duration, Duration::from_millis(1500));
        assert_eq!(
            (c.common.writers, c.rate, c.common.seed, c.common.grace_ms),
            (1000, Some(5000), 7, 300)
        );
        assert_eq!(
            c.common.sweep_ms, 30,
            "default sweep period follows the grace period"
        );
        assert!(c.common.json);
        assert!(parse(&args("--duration 5x")).is_err());
        assert!(parse(&args("--bogus")).is_err());
        assert!(parse(&args("--writers")).is_err());
        assert!(parse(&args("--capacity 4 --max-batch 8")).is_err());
    }
}
