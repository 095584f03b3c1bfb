//! The oracles moved to `tidemark-testkit`; the library keeps their old paths for code written
//! against earlier versions. This checks the old paths still name working types.
#![allow(deprecated)]

use std::time::Duration;

use tidemark::batch::{BatchConfig, RefPoll, ReferenceBatcher};
use tidemark::model::{ExactModel, ReferenceModel};
use tidemark::{Offset, Tracker};

#[test]
fn old_oracle_paths_still_work() {
    let mut exact = ExactModel::new(None, 1_000);
    let t = Tracker::default();
    assert_eq!(exact.register(), t.register().unwrap(), "ids issued alike");

    let mut electric = ReferenceModel::<u32>::new();
    electric.commit(Offset::new(4, 0), &[]);
    assert_eq!(electric.ack(), Some(4));

    let config = BatchConfig::default();
    let mut batcher = ReferenceBatcher::new(&config, Duration::ZERO);
    batcher.push(1, 8).unwrap();
    assert!(matches!(batcher.poll(Duration::ZERO), RefPoll::Wait(_)));
}
