//! Live progress on the terminal (indicatif), hidden when stdout is not a terminal.

use super::pipeline::Shared;
use crate::common::{LiveLine, pin_text};

/// The live line: rates since the previous refresh and the tracker's state.
pub(crate) struct Progress {
    line: LiveLine,
    last_commits: u64,
    last_flushes: u64,
    last_messages: u64,
}

impl Progress {
    /// Draws only when `enabled` (the caller checks that stdout is a terminal).
    pub(crate) fn new(enabled: bool) -> Progress {
        Progress {
            line: LiveLine::new(enabled),
            last_commits: 0,
            last_flushes: 0,
            last_messages: 0,
        }
    }

    /// Refreshes the line at most five times a second.
    pub(crate) fn tick(&mut self, sh: &Shared, phase: &str) {
        let Some((bar, dt)) = self.line.due() else {
            return;
        };
        let now_ms = sh.now_ms();
        let st = sh.tracker.stats(now_ms);
        let commits = sh.seq.commits.load(std::sync::atomic::Ordering::Relaxed);
        let messages = sh.host.work_sum(|c| &c.delivered);
        let per_s = |now: u64, before: u64| (now.saturating_sub(before)) as f64 / dt.as_secs_f64();
        let pin = pin_text(st.pinning);
        let evictions = st.evicted_crashed + st.evicted_orphaned + st.evicted_stalled;
        bar.set_message(format!(
            "{phase} | commits/s {} | flushes/s {} | msgs/s {} | lag {} | pending {} | pin {pin} | evicted {evictions}",
            si(per_s(commits, self.last_commits)),
            si(per_s(st.flushes, self.last_flushes)),
            si(per_s(messages, self.last_messages)),
            si(st.ack_lag.unwrap_or(0) as f64),
            si(st.pending as f64),
        ));
        self.last_commits = commits;
        self.last_flushes = st.flushes;
        self.last_messages = messages;
    }

    /// Clears the line.
    pub(crate) fn finish(&self) {
        self.line.finish();
    }
}

/// `1234567.0` → `1.23M`: keeps the live line short.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}
