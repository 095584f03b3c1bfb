//! Property tests: random operation sequences drive the tracker, the exact model and the
//! reference (Electric) model side by side. After every step: identical results and errors,
//! ack == exact model (so ≤ exact holds with equality), ack ≥ reference, monotonic, identical
//! events, and `pinning` names a writer that really holds the ack.
//!
//! The budgeted variants give the tracker a call budget of 1–3 deliveries, so releases and
//! compactions leave backlogs that later calls (and `run_backlog` steps) continue: while a
//! backlog is left the ack must stay ≤ the exact model (and never move backwards), once it is
//! gone it must equal it again, and no call may examine more than the budget.

use proptest::prelude::*;
use tidemark::{DownClass, Event, Offset, Tracker, TrackerOptions, WriterId};
use tidemark_testkit::model::{ElectricTracker, ExactModel};

#[derive(Clone, Debug)]
enum Op {
    Register,
    Unregister(usize),
    /// `step == 0` makes a regressed (or equal) commit.
    Commit {
        step: u64,
        op: u64,
        writers: Vec<usize>,
        dt: u64,
    },
    /// `kind`: 0 partial, 1 on the boundary of a commit, 2 beyond last_sent, 3 an old offset,
    /// 4 exactly last_sent.
    Flushed {
        w: usize,
        kind: u8,
        pick: usize,
        dt: u64,
    },
    Remove(usize),
    Down(usize, u8),
    Touch(usize, u64),
    Pause(usize),
    Resume(usize, u64),
    Sweep(u64),
    /// One `run_backlog` step (budgeted variants only).
    RunBacklog,
}

fn op_strategy(staleness: bool) -> impl Strategy<Value = Op> {
    let w = 0usize..12;
    let base = prop_oneof![
        3 => Just(Op::Register),
        1 => w.clone().prop_map(Op::Unregister),
        6 => (0u64..3, 0u64..4, prop::collection::vec(w.clone(), 0..=4), 0u64..40)
            .prop_map(|(step, op, writers, dt)| Op::Commit { step, op, writers, dt }),
        8 => (w.clone(), 0u8..5, any::<usize>(), 0u64..40)
            .prop_map(|(w, kind, pick, dt)| Op::Flushed { w, kind, pick, dt }),
        1 => w.clone().prop_map(Op::Remove),
    ];
    if !staleness {
        return base.boxed();
    }
    prop_oneof![
        10 => base,
        1 => (w.clone(), 0u8..3).prop_map(|(w, c)| Op::Down(w, c)),
        1 => (w.clone(), 0u64..40).prop_map(|(w, dt)| Op::Touch(w, dt)),
        1 => w.clone().prop_map(Op::Pause),
        1 => (w.clone(), 0u64..40).prop_map(|(w, dt)| Op::Resume(w, dt)),
        3 => (0u64..120).prop_map(Op::Sweep),
    ]
    .boxed()
}

/// The operations plus explicit backlog steps, for the budgeted variants.
fn budgeted_strategy(staleness: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => op_strategy(staleness),
        1 => Just(Op::RunBacklog),
    ]
}

fn sorted(mut v: Vec<Event>) -> Vec<Event> {
    v.sort_by_key(|e| format!("{e:?}"));
    v
}

struct Harness {
    t: Tracker,
    m: ExactModel,
    r: ElectricTracker<WriterId>,
    compare_reference: bool,
    ids: Vec<WriterId>,
    commits: Vec<Offset>,
    next_tx: u64,
    now: u64,
    last_ack: Option<u64>,
    /// The call budget, when the test sets one (budgeted variants).
    budget: Option<usize>,
}

impl Harness {
    fn new(initial_ack: Option<u64>, grace: u64, budget: Option<usize>) -> Self {
        let t = Tracker::new(TrackerOptions {
            initial_ack,
            stall_grace_ms: grace,
            ..TrackerOptions::default()
        })
        .unwrap();
        if let Some(b) = budget {
            t.set_call_budget(b);
        }
        Harness {
            t,
            m: ExactModel::new(initial_ack, grace),
            r: ElectricTracker::new(),
            compare_reference: initial_ack.is_none(),
            ids: Vec::new(),
            commits: Vec::new(),
            next_tx: initial_ack.map_or(0, |a| a + 1),
            now: 0,
            last_ack: initial_ack,
            budget,
        }
    }

    fn id(&self, i: usize) -> Option<WriterId> {
        (!self.ids.is_empty()).then(|| self.ids[i % self.ids.len()])
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Register => {
                let a = self.t.register().unwrap();
                let b = self.m.register();
                prop_assert_eq!(a, b);
                self.ids.push(a);
            }
            Op::Unregister(i) => {
                let Some(w) = self.id(*i) else { return Ok(()) };
                let a = self.t.unregister(w);
                prop_assert_eq!(&a, &self.m.unregister(w));
                if a.is_ok() {
                    self.r.remove(w);
                }
            }
            Op::Commit {
                step,
                op,
                writers,
                dt,
            } => {
                self.now += dt;
                let tx = if *step == 0 {
                    self.next_tx.saturating_sub(1)
                } else {
                    self.next_tx + step - 1
                };
                let offset = Offset::new(tx, *op);
                let ws: Vec<WriterId> = writers.iter().filter_map(|&i| self.id(i)).collect();
                let a = self.t.commit(offset, &ws, self.now);
                prop_assert_eq!(&a, &self.m.commit(offset, &ws, self.now));
                if a.is_ok() {
                    self.r.commit(offset, &ws);
                    self.commits.push(offset);
                    self.next_tx = tx + 1;
                }
            }
            Op::Flushed { w, kind, pick, dt } => {
                let Some(w) = self.id(*w) else { return Ok(()) };
                self.now += dt;
                let last_sent = self.m.last_sent(w);
                let old = self.commits.get(pick % self.commits.len().max(1)).copied();
                let offset = match (kind, last_sent) {
                    (0, Some(ls)) if ls.op > 0 => Offset::new(ls.tx, ls.op - 1),
                    (0, Some(ls)) => Offset::new(ls.tx.saturating_sub(1), 7),
                    (1, _) => old.unwrap_or(Offset::ZERO),
                    (2, Some(ls)) => Offset::new(ls.tx + 1, 0),
                    (3, _) => old.map_or(Offset::ZERO, |o| Offset::new(o.tx, o.op / 2)),
                    (_, Some(ls)) => ls,
                    (_, None) => old.unwrap_or(Offset::ZERO),
                };
                let a = self.t.flushed(w, offset, self.now);
                prop_assert_eq!(&a, &self.m.flushed(w, offset, self.now));
                if a.is_ok() {
                    self.r.flushed(w, offset);
                }
            }
            Op::Remove(i) => {
                let Some(w) = self.id(*i) else { return Ok(()) };
                let a = self.t.remove(w);
                prop_assert_eq!(&a, &self.m.remove(w));
                if a.is_ok() {
                    self.r.remove(w);
                }
            }
            Op::Down(i, c) => {
                let Some(w) = self.id(*i) else { return Ok(()) };
                let class =
                    [DownClass::Crash, DownClass::Cleanup, DownClass::Teardown][*c as usize];
                let a = self.t.down(w, class, self.now);
                prop_assert_eq!(&a, &self.m.down(w, class, self.now));
                if a.is_ok() && class != DownClass::Teardown {
                    self.r.remove(w);
                }
            }
            Op::Touch(i, dt) => {
                let Some(w) = self.id(*i) else { return Ok(()) };
                self.now += dt;
                prop_assert_eq!(self.t.touch(w, self.now), self.m.touch(w, self.now));
            }
            Op::Pause(i) => {
                let Some(w) = self.id(*i) else { return Ok(()) };
                prop_assert_eq!(self.t.pause(w), self.m.pause(w));
            }
            Op::Resume(i, dt) => {
                let Some(w) = self.id(*i) else { return Ok(()) };
                self.now += dt;
                prop_assert_eq!(self.t.resume(w, self.now), self.m.resume(w, self.now));
            }
            Op::Sweep(dt) => {
                self.now += dt;
                prop_assert_eq!(self.t.stalled(self.now), self.m.stalled(self.now));
                let outcome = self.t.sweep(self.now);
                let produced = self.m.sweep(self.now);
                let evicted: Vec<WriterId> = produced
                    .iter()
                    .filter_map(|e| match e {
                        Event::Evicted(w, _) => Some(*w),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(outcome.evicted, evicted.len());
                prop_assert_eq!(outcome.challenged, produced.len() - evicted.len());
                for w in evicted {
                    self.r.remove(w);
                }
            }
            Op::RunBacklog => {
                let more = self.t.run_backlog();
                prop_assert_eq!(more, self.t.has_backlog());
            }
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let ack = self.t.ack();
        let work = self.t.work_stats();
        if let Some(b) = self.budget {
            prop_assert!(
                work.max_call_work <= b as u64,
                "a call examined {} deliveries (budget {b})",
                work.max_call_work
            );
        }
        if self.t.has_backlog() {
            // Mid-backlog: safe (never above exact), monotonic; exactness comes back later.
            prop_assert!(self.budget.is_some(), "a backlog without a small budget");
            prop_assert!(
                ack <= self.m.ack(),
                "ack {:?} above exact {:?} mid-backlog",
                ack,
                self.m.ack()
            );
            prop_assert!(ack >= self.last_ack, "ack moved backwards");
            self.last_ack = ack;
            let mut got = Vec::new();
            self.t.take_events(&mut got, usize::MAX);
            prop_assert_eq!(sorted(got), sorted(self.m.take_events()));
            // Other calls continue the backlog, so the ack may have moved on since, safely.
            let later = self.t.stats(self.now).ack;
            prop_assert!(
                later >= ack && later <= self.m.ack(),
                "stats ack {:?}",
                later
            );
            return Ok(());
        }
        prop_assert_eq!(ack, self.m.ack(), "ack must equal the exact model");
        if self.compare_reference {
            prop_assert!(
                ack >= self.r.ack(),
                "ack {:?} below reference {:?}",
                ack,
                self.r.ack()
            );
        }
        prop_assert!(ack >= self.last_ack, "ack moved backwards");
        self.last_ack = ack;
        let mut got = Vec::new();
        self.t.take_events(&mut got, usize::MAX);
        prop_assert_eq!(sorted(got), sorted(self.m.take_events()));
        match self.t.pinning(self.now) {
            Some(p) => {
                prop_assert!(self.m.is_pending(p.writer), "pinning writer is not pending");
                prop_assert_eq!(ack, p.owes.tx.checked_sub(1).max(self.last_ack));
            }
            None => prop_assert_eq!(ack, self.m.last_seen().map(|o| o.tx).max(self.last_ack)),
        }
        let stats = self.t.stats(self.now);
        prop_assert_eq!(stats.ack, ack);
        Ok(())
    }
}

fn run(ops: &[Op], initial_ack: Option<u64>, grace: u64) -> Result<(), TestCaseError> {
    run_with(ops, initial_ack, grace, None)
}

/// Runs every leftover backlog step, counting them against the log's length.
fn finish_backlog(h: &mut Harness) -> Result<(), TestCaseError> {
    let limit = h.t.work_stats().log_len + 2;
    let mut steps = 0;
    while h.t.run_backlog() {
        steps += 1;
        prop_assert!(steps <= limit, "backlog not finished after {} steps", steps);
        h.check()?;
    }
    h.check()
}

fn run_with(
    ops: &[Op],
    initial_ack: Option<u64>,
    grace: u64,
    budget: Option<usize>,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(initial_ack, grace, budget);
    for op in ops {
        h.step(op)?;
    }
    finish_backlog(&mut h)?;
    prop_assert!(!h.t.has_backlog());
    // Liveness: once every pending writer reports last_sent (or is removed), ack == last_seen.
    for &w in &h.ids.clone() {
        if let Some(ls) = h.m.last_sent(w) {
            let a = h.t.flushed(w, ls, h.now);
            prop_assert_eq!(&a, &h.m.flushed(w, ls, h.now));
            h.r.flushed(w, ls);
            h.check()?;
        }
    }
    finish_backlog(&mut h)?;
    prop_assert_eq!(
        h.t.ack(),
        h.m.last_seen().map(|o| o.tx).max(initial_ack),
        "liveness"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn tracker_matches_models(ops in prop::collection::vec(op_strategy(false), 1..120)) {
        run(&ops, None, 60_000)?;
    }

    #[test]
    fn tracker_with_initial_ack(ops in prop::collection::vec(op_strategy(false), 1..80), init in 0u64..5) {
        run(&ops, Some(init), 60_000)?;
    }

    #[test]
    fn staleness_matches_models(ops in prop::collection::vec(op_strategy(true), 1..150), grace in 0u64..60) {
        run(&ops, None, grace)?;
    }

    #[test]
    fn budgeted_tracker_stays_safe_and_ends_exact(ops in prop::collection::vec(budgeted_strategy(false), 1..150), budget in 1usize..4) {
        run_with(&ops, None, 60_000, Some(budget))?;
    }

    #[test]
    fn budgeted_staleness_stays_safe_and_ends_exact(ops in prop::collection::vec(budgeted_strategy(true), 1..150), grace in 0u64..60, budget in 1usize..4) {
        run_with(&ops, None, grace, Some(budget))?;
    }
}
