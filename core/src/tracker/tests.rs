use super::*;

fn o(tx: u64, op: u64) -> Offset {
    Offset::new(tx, op)
}

#[test]
fn doc_story() {
    let t = Tracker::default();
    let (a, b) = (t.register().unwrap(), t.register().unwrap());
    assert_eq!(t.ack(), None);
    t.commit(o(10, 3), &[a, b], 0).unwrap();
    t.commit(o(11, 1), &[b], 0).unwrap();
    t.flushed(b, o(11, 1), 5).unwrap();
    assert_eq!(t.ack(), Some(9));
    t.flushed(a, o(10, 3), 6).unwrap();
    assert_eq!(t.ack(), Some(11));
}
