//! Live progress on the terminal (indicatif), hidden when stdout is not a terminal: rates, the
//! retained WAL the sampler last read, how far the slot's confirmed position trails the newest
//! streamed commit, and (with tidemark) who pins the ack.

use std::sync::atomic::Ordering;

use super::pipeline::Shared;
use super::report::kib;
use crate::common::{LiveLine, pin_text};

/// The live line.
pub(crate) struct Progress {
    line: LiveLine,
    last_commits: u64,
    last_rows: u64,
}

impl Progress {
    /// Draws only when `enabled` (the caller checks that stdout is a terminal).
    pub(crate) fn new(enabled: bool) -> Progress {
        Progress {
            line: LiveLine::new(enabled),
            last_commits: 0,
            last_rows: 0,
        }
    }

    /// Refreshes the line at most five times a second.
    pub(crate) fn tick(&mut self, sh: &Shared, phase: &str) {
        let Some((bar, dt)) = self.line.due() else {
            return;
        };
        let commits = sh.disp.commits.load(Ordering::Relaxed);
        let rows = sh.disp.rows.load(Ordering::Relaxed);
        let per_s = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt.as_secs_f64();
        let sample = sh.samples.lock().unwrap().last().copied();
        let (retained, behind) = match sample {
            Some(s) => (
                kib(s.slot.retained),
                s.newest_end
                    .map_or(0, |e| e.saturating_sub(s.slot.confirmed) as i64),
            ),
            None => ("-".to_owned(), 0),
        };
        let tracker = match sh.source.tracker() {
            Some(t) => {
                let st = t.stats(sh.now_ms());
                let pin = pin_text(st.pinning);
                let ev = st.evicted_crashed + st.evicted_orphaned + st.evicted_stalled;
                format!(" | pending {} | pin {pin} | evicted {ev}", st.pending)
            }
            None => String::new(),
        };
        bar.set_message(format!(
            "{phase} | commits/s {:.0} | rows/s {:.0} | retained WAL {retained} | confirmed {} behind{tracker}",
            per_s(commits, self.last_commits),
            per_s(rows, self.last_rows),
            kib(behind),
        ));
        self.last_commits = commits;
        self.last_rows = rows;
    }

    /// Clears the line.
    pub(crate) fn finish(&self) {
        self.line.finish();
    }
}
