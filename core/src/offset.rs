use std::fmt;

/// A position in the source log: `(tx, op)`, ordered by `tx` then `op`.
///
/// `tx` is the transaction's commit position (an LSN, a Kafka offset); `op` is the position
/// inside the transaction. A commit is handed to the tracker with its *last* offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset {
    /// The transaction's commit position.
    pub tx: u64,
    /// The operation's position inside the transaction.
    pub op: u64,
}

impl Offset {
    /// The smallest offset, `(0, 0)`.
    pub const ZERO: Offset = Offset { tx: 0, op: 0 };

    /// Builds an offset from its two parts.
    #[inline]
    pub const fn new(tx: u64, op: u64) -> Offset {
        Offset { tx, op }
    }
}

impl From<(u64, u64)> for Offset {
    fn from((tx, op): (u64, u64)) -> Offset {
        Offset { tx, op }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tx, self.op)
    }
}
