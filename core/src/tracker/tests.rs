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

#[test]
fn register_if_allocated_declines_exactly_when_the_table_must_grow() {
    let t = Tracker::default();
    let first_segment = 1usize << CELL_BASE_SHIFT;
    // No segment yet: the first registration needs an allocation.
    assert_eq!(t.register_if_allocated().unwrap(), None);
    assert_eq!(
        t.cells.capacity(),
        0,
        "a declined registration allocates nothing"
    );
    let a = t.register().unwrap();
    assert_eq!(t.cells.capacity(), first_segment);
    // The rest of the first segment registers without allocating.
    let mut ids = vec![a];
    while let Some(id) = t.register_if_allocated().unwrap() {
        ids.push(id);
    }
    assert_eq!(ids.len(), first_segment);
    assert_eq!(t.cells.capacity(), first_segment);
    // A freed id is reused without allocating, with a new generation.
    t.unregister(ids[3]).unwrap();
    let again = t
        .register_if_allocated()
        .unwrap()
        .expect("a free cell needs no allocation");
    assert_ne!(again, ids[3]);
    assert!(t.writer_status(ids[3]).is_err());
    assert_eq!(t.register_if_allocated().unwrap(), None);
    // Limits are reported as by `register`.
    let small = Tracker::new(TrackerOptions {
        max_writers: 1,
        expected_writers: 1,
        ..TrackerOptions::default()
    })
    .unwrap();
    assert!(small.register_if_allocated().unwrap().is_some());
    assert!(matches!(
        small.register_if_allocated(),
        Err(TrackerError::CapacityExceeded { max_writers: 1 })
    ));
}
