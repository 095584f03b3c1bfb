//! From the tracker's ack to the slot's flush LSN: what `tidemark pg` may confirm upstream.
//!
//! The tracker works in *commit LSNs*: each streamed transaction is a commit whose `tx` is its
//! commit LSN (the start of its commit record), and the ack is a `tx` such that every commit at
//! or below it was stored by every writer it went to (or that writer was evicted). PostgreSQL
//! wants a *flush LSN*: on restart it skips every transaction whose commit record starts below
//! the slot's `confirmed_flush_lsn`. So an ack `a` maps to the **end LSN** of the newest commit
//! with `commit_lsn <= a`: that skips exactly the stored commits, and every later commit starts
//! at or after that end, so none of them is skipped.
//!
//! Keepalives: a keepalive's `wal_end` is the walsender's sent position — every transaction
//! whose commit record lies below it has been sent to us before the keepalive. Once every
//! commit received before the keepalive is done, `wal_end` itself may be confirmed, which moves
//! the slot across WAL that holds no published change (unpublished tables, empty
//! transactions). A commit received later starts at or after `wal_end`, so it is not skipped.
//! The caller passes only keepalives received outside a transaction.
//!
//! [`AckMap`] holds these *ack points* in stream order and turns acks into confirmations that
//! never move backwards.

use std::collections::VecDeque;

/// One position that may be confirmed once the ack reaches `needs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    /// The ack must be at least this commit LSN; `None`: no commit was streamed before it.
    needs: Option<u64>,
    /// The flush LSN it allows.
    confirm: u64,
}

/// Ack points in stream order, and the position confirmed so far.
#[derive(Clone, Debug)]
pub struct AckMap {
    points: VecDeque<Point>,
    /// The newest position handed out by [`advance`](Self::advance) (or the start).
    confirmed: u64,
    /// The newest commit LSN streamed.
    last_commit: Option<u64>,
    /// The newest position queued (commit end or keepalive), to keep the queue increasing.
    last_queued: u64,
}

/// Why a stream position was refused (the stream is inconsistent; nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMapError {
    /// A commit LSN did not exceed the previous one.
    CommitRegressed {
        /// The previous commit LSN.
        last: u64,
        /// The refused one.
        offered: u64,
    },
    /// A commit started below a position already confirmed or queued: confirming that position
    /// would have skipped it (the stream contradicts the keepalive or start position).
    BehindConfirmed {
        /// The commit LSN.
        commit: u64,
        /// The newest position confirmed or queued.
        queued: u64,
    },
    /// A commit's end LSN was below its commit LSN.
    EndBeforeCommit {
        /// The commit LSN.
        commit: u64,
        /// Its end LSN.
        end: u64,
    },
}

impl AckMap {
    /// A map whose confirmed position starts at `start` (the slot's `confirmed_flush_lsn`).
    pub fn new(start: u64) -> AckMap {
        AckMap {
            points: VecDeque::new(),
            confirmed: start,
            last_commit: None,
            last_queued: start,
        }
    }

    /// A streamed commit: `commit_lsn` is its `tx` at the tracker, `end_lsn` what confirming it
    /// means upstream.
    pub fn commit(&mut self, commit_lsn: u64, end_lsn: u64) -> Result<(), AckMapError> {
        if let Some(last) = self.last_commit
            && commit_lsn <= last
        {
            return Err(AckMapError::CommitRegressed {
                last,
                offered: commit_lsn,
            });
        }
        // Commit records never overlap, and a keepalive's `wal_end` (or the start) is never
        // above a commit streamed after it.
        if commit_lsn < self.last_queued {
            return Err(AckMapError::BehindConfirmed {
                commit: commit_lsn,
                queued: self.last_queued,
            });
        }
        if end_lsn < commit_lsn {
            return Err(AckMapError::EndBeforeCommit {
                commit: commit_lsn,
                end: end_lsn,
            });
        }
        self.last_commit = Some(commit_lsn);
        self.push(Some(commit_lsn), end_lsn);
        Ok(())
    }

    /// A keepalive received outside a transaction: `wal_end` may be confirmed once every
    /// commit streamed before it is done.
    pub fn keepalive(&mut self, wal_end: u64) {
        self.push(self.last_commit, wal_end);
    }

    fn push(&mut self, needs: Option<u64>, confirm: u64) {
        if confirm <= self.last_queued {
            // Confirms nothing new (an older keepalive, or a position already allowed).
            if let Some(last) = self.points.back_mut() {
                // Keep the stronger requirement on the newest point: a later commit must still
                // be done before anything after it is confirmed.
                last.needs = last.needs.max(needs);
            }
            return;
        }
        self.last_queued = confirm;
        self.points.push_back(Point { needs, confirm });
    }

    /// The ack moved to `ack` (or is still `None`): returns the new position to confirm when it
    /// grew. Never returns a position at or below one returned before.
    pub fn advance(&mut self, ack: Option<u64>) -> Option<u64> {
        let mut best = None;
        while let Some(p) = self.points.front() {
            let done = match p.needs {
                None => true,
                Some(tx) => ack.is_some_and(|a| a >= tx),
            };
            if !done {
                break;
            }
            best = Some(p.confirm);
            self.points.pop_front();
        }
        match best {
            Some(c) if c > self.confirmed => {
                self.confirmed = c;
                Some(c)
            }
            _ => None,
        }
    }
}

/// `X/Y` (PostgreSQL's notation) of an LSN.
pub fn lsn_str(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses PostgreSQL's `X/Y` notation.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some(((hi as u64) << 32) | lo as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_confirms_the_end_of_the_newest_commit_at_or_below_it() {
        let mut m = AckMap::new(100);
        m.commit(200, 230).unwrap();
        m.commit(300, 330).unwrap();
        m.commit(400, 430).unwrap();
        assert_eq!(m.advance(None), None);
        assert_eq!(m.advance(Some(199)), None, "commit 200 is not done");
        assert_eq!(m.advance(Some(299)), Some(230));
        assert_eq!(m.advance(Some(299)), None, "de-duplicated");
        assert_eq!(m.advance(Some(400)), Some(430));
        assert_eq!(m.advance(Some(250)), None, "never backwards");
    }

    #[test]
    fn keepalives_confirm_wal_end_only_after_every_earlier_commit() {
        let mut m = AckMap::new(100);
        // Nothing streamed yet: the keepalive's position is confirmable at once.
        m.keepalive(150);
        assert_eq!(m.advance(None), Some(150));
        m.commit(200, 230).unwrap();
        m.keepalive(500);
        assert_eq!(m.advance(None), None, "commit 200 still owed");
        assert_eq!(m.advance(Some(200)), Some(500));
        // A commit streamed after the keepalive starts at or after its wal_end.
        assert_eq!(
            m.commit(480, 490),
            Err(AckMapError::BehindConfirmed {
                commit: 480,
                queued: 500
            })
        );
        m.commit(520, 560).unwrap();
        // An older keepalive confirms nothing new, but cannot jump over commit 520 either.
        m.keepalive(510);
        assert_eq!(m.advance(Some(519)), None);
        assert_eq!(m.advance(Some(520)), Some(560));
    }

    #[test]
    fn inconsistent_streams_are_refused_without_change() {
        let mut m = AckMap::new(0);
        m.commit(10, 20).unwrap();
        assert_eq!(
            m.commit(10, 30),
            Err(AckMapError::CommitRegressed {
                last: 10,
                offered: 10
            })
        );
        assert_eq!(
            m.commit(40, 35),
            Err(AckMapError::EndBeforeCommit {
                commit: 40,
                end: 35
            })
        );
        assert_eq!(m.advance(Some(10)), Some(20));
    }

    #[test]
    fn lsn_notation_round_trips() {
        for v in [0, 1, 0x16B_3748, 0x1_0000_0000, u64::MAX] {
            assert_eq!(parse_lsn(&lsn_str(v)), Some(v));
        }
        assert_eq!(parse_lsn("0/19A0430"), Some(0x19A_0430));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(parse_lsn("1/2/3"), None);
    }
}
