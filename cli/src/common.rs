//! Pieces `simulate` and `pg` share: the seeded generator, the duration flag parser and the
//! live status line.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemark::Pinning;

/// `10`, `10s`, `500ms`, `2m` (at most a day), for flag `flag` of command `cmd`.
pub(crate) fn duration(cmd: &str, flag: &str, v: &str) -> Result<Duration, String> {
    let err = || format!("{cmd}: {flag} wants e.g. 10s or 500ms, got `{v}`");
    let (digits, unit) = match v.find(|ch: char| !ch.is_ascii_digit() && ch != '.') {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: f64 = digits.parse().map_err(|_| err())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(err()),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// SplitMix64: small, fast and good enough for workload choices. Every thread derives its own
/// stream from the seed, so the choices (not the thread interleaving) are reproducible.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The stream `stream` of seed `seed`.
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }
}

/// A live status line on the terminal (indicatif), absent when disabled (the caller checks
/// that stdout is a terminal), refreshed at most five times a second.
pub(crate) struct LiveLine {
    bar: Option<ProgressBar>,
    last: Instant,
}

impl LiveLine {
    /// Draws only when `enabled`.
    pub(crate) fn new(enabled: bool) -> LiveLine {
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout_with_hz(8));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(125));
            bar
        });
        LiveLine {
            bar,
            last: Instant::now(),
        }
    }

    /// The bar and the time since the previous refresh, when a refresh is due (at least 200 ms
    /// since the last one); `None` otherwise or when disabled.
    pub(crate) fn due(&mut self) -> Option<(&ProgressBar, Duration)> {
        let bar = self.bar.as_ref()?;
        let dt = self.last.elapsed();
        if dt < Duration::from_millis(200) {
            return None;
        }
        self.last = Instant::now();
        Some((bar, dt))
    }

    /// Clears the line.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The writer pinning the ack, for the live line: `index age ms [orphaned|challenged|paused]`.
pub(crate) fn pin_text(pinning: Option<Pinning>) -> String {
    pinning.map_or_else(
        || "none".to_owned(),
        |p| {
            let mut s = format!("{} {} ms", p.writer.index(), p.ms_since_progress);
            if p.orphaned {
                s.push_str(" orphaned");
            } else if p.challenged {
                s.push_str(" challenged");
            } else if p.paused {
                s.push_str(" paused");
            }
            s
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let (mut a, mut b) = (Rng::new(7, 1), Rng::new(7, 1));
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(7, 2).next_u64());
    }

    #[test]
    fn durations() {
        assert_eq!(
            duration("x", "--d", "1500ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(duration("x", "--d", "2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("x", "--d", "10"), Ok(Duration::from_secs(10)));
        assert_eq!(
            duration("pg", "--faults", "5x"),
            Err("pg: --faults wants e.g. 10s or 500ms, got `5x`".to_owned())
        );
        assert!(duration("x", "--d", "2d").is_err());
    }
}
