//! Electric's algorithm keeps the original's quirks: the lag while a new writer is the minimum,
//! duplicate notifications, and (the one deviation) completion by a report beyond `last_sent`.

use tidemark::Offset;
use tidemark_testkit::model::ElectricTracker;

fn o(tx: u64, op: u64) -> Offset {
    Offset::new(tx, op)
}

#[test]
fn lags_one_commit_while_a_new_writer_is_the_minimum() {
    let mut r = ElectricTracker::<u64>::new();
    r.commit(o(10, 3), &[1, 2]);
    r.commit(o(11, 1), &[2]);
    // Both writers entered at (9, 0); the map was never empty: no recompute yet.
    assert_eq!(r.ack(), None, "nothing notified before the first recompute");
    r.flushed(2, o(11, 1));
    // Writer 1 still sits at its artificial (9, 0): global (9, 0), notify 8.
    assert_eq!(r.ack(), Some(8));
    r.flushed(1, o(10, 3));
    assert_eq!(r.ack(), Some(11));
    assert_eq!(r.pending(), 0);
}

#[test]
fn partial_reports_and_removal() {
    let mut r = ElectricTracker::<u64>::new();
    r.commit(o(5, 0), &[7]);
    r.commit(o(6, 0), &[7, 8]);
    r.flushed(7, o(5, 0)); // partial: 7 owes (6, 0)
    // min flushed is writer 8's (5, 0): global (5, 0), notify 4.
    assert_eq!(r.ack(), Some(4));
    r.flushed(99, o(6, 0)); // absent: ignored
    r.remove(8);
    assert_eq!(
        r.ack(),
        Some(4),
        "global (5, 0) = writer 7's flushed: unchanged"
    );
    r.flushed(7, o(7, 0)); // beyond last_sent: completes (documented deviation)
    assert_eq!(r.ack(), Some(6));
    assert_eq!(r.last_seen(), Some(o(6, 0)));
}

#[test]
fn empty_commit_with_nothing_pending_acks_at_once() {
    let mut r = ElectricTracker::<u64>::new();
    r.commit(o(3, 0), &[]);
    assert_eq!(r.ack(), Some(3));
    assert_eq!(r.notifications(), 1);
}

#[test]
fn notifies_duplicates_like_the_original() {
    let mut r = ElectricTracker::<u64>::new();
    r.commit(o(3, 0), &[]);
    assert_eq!(r.ack(), Some(3));
    // Writer 1 enters at (4, 0); the map is not empty, so no recompute.
    r.commit(o(5, 0), &[1]);
    assert_eq!(r.notifications(), 1);
    // A partial report: global = max((3, 0), (4, 9)) = (4, 9), notify 4 − 1 = 3 again.
    r.flushed(1, o(4, 9));
    assert_eq!(r.ack(), Some(3));
    assert_eq!(r.notifications(), 2);
}

#[test]
fn ack_keeps_the_highest_value_while_the_raw_output_moves_back() {
    let mut r = ElectricTracker::<u64>::new();
    r.commit(o(10, 0), &[]);
    assert_eq!((r.ack(), r.last_notified()), (Some(10), Some(10)));
    // A replayed commit at a lower offset with nothing pending: the original notifies it.
    r.commit(o(7, 0), &[]);
    assert_eq!(r.last_notified(), Some(7), "raw output moved back");
    assert_eq!(r.ack(), Some(10), "the ack a host sends never moves back");
    assert_eq!(r.notifications(), 2);
    r.commit(o(12, 0), &[]);
    assert_eq!((r.ack(), r.last_notified()), (Some(12), Some(12)));
}
