//! Fault targets: each fault goes to its own writer.

use std::collections::HashSet;

use crate::common::Rng;

/// Draws writers out of `writers` for faults, never the same one twice.
pub(crate) struct Targets {
    writers: u64,
    used: HashSet<u32>,
}

impl Targets {
    /// Targets among `writers` writers (more than the faults drawn).
    pub(crate) fn new(writers: usize) -> Targets {
        Targets {
            writers: writers as u64,
            used: HashSet::new(),
        }
    }

    /// A writer not drawn before.
    pub(crate) fn draw(&mut self, rng: &mut Rng) -> u32 {
        loop {
            let w = rng.below(self.writers) as u32;
            if self.used.insert(w) {
                return w;
            }
        }
    }
}
