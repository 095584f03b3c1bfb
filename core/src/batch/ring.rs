//! The lock-free multi-producer, single-consumer ring that carries accepted messages to the sink.
//!
//! A bounded ring of slots, each with a `stamp` (Vyukov's bounded queue, one consumer):
//!
//! | slot `i` stamp | meaning |
//! | --- | --- |
//! | `t` with `t % len == i` | free, waiting for the producer of ticket `t` |
//! | `t + 1` | ticket `t`'s message is published, waiting for the consumer |
//!
//! A producer takes a ticket with one `fetch_add` on `tail`, waits until its slot is free for
//! that ticket, writes the message and publishes `t + 1`. The consumer (the sink side, which
//! holds the only [`Head`]) reads slot `head`, and frees it for the next lap with
//! `head + len`.
//!
//! Producers hold a capacity reservation in the state word before they take a ticket, and the
//! ring has at least `capacity_messages` slots. Every ticket that is taken but not yet consumed
//! belongs to a live reservation, so at most `len` tickets are outstanding and a producer finds
//! its slot already free: the stamp wait below is a safety net, not a lock.
//!
//! Memory-ordering edges (docs/MEMORY_ORDERING.md, "batch ring"):
//! - R1: producer `stamp.store(t + 1, Release)` → consumer `stamp.load(Acquire)`: the message
//!   written into the slot happens-before the consumer moves it out.
//! - R2: consumer `stamp.store(head + len, Release)` → producer `stamp.load(Acquire)` one lap
//!   later: the consumer's move-out happens-before the next producer's overwrite.
//! - `tail.fetch_add(Relaxed)`: only hands out unique tickets; no data travels with it.
use std::mem::MaybeUninit;

use super::Message;
use crate::sync::{AtomicU64, Backoff, CachePadded, Ordering, UnsafeCell};

/// One slot; 64-byte aligned so producers writing neighbouring slots do not share a line.
#[repr(align(64))]
struct Slot {
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<Message>>,
}

/// The ring (shared by producers and the consumer).
pub(super) struct Ring {
    slots: Box<[Slot]>,
    mask: u64,
    /// Next ticket. Written by every producer, never by the consumer (which keeps its own head).
    tail: CachePadded<AtomicU64>,
}

// SAFETY: a slot's value is written only by the producer holding that slot's ticket while the
// stamp says "free for this ticket", and read only by the single consumer (the holder of the one
// `Head`) while the stamp says "published"; edges R1/R2 order the two. `Message` is `Send`.
unsafe impl Sync for Ring {}
// SAFETY: the ring owns its messages; moving it to another thread moves them (`Message: Send`).
unsafe impl Send for Ring {}

/// A producer's claim on one slot: exactly one exists per ticket, and publishing consumes it.
#[must_use = "a claimed ticket must be published or the consumer waits for it"]
pub(super) struct Ticket(u64);

/// The consumer's position. Exactly one exists per ring (created with it), so `take` has one
/// caller at a time (it needs `&mut Head`).
pub(super) struct Head {
    pos: u64,
    ring_id: usize,
}

impl Head {
    /// The ticket of the next message `take` returns.
    pub(super) fn position(&self) -> u64 {
        self.pos
    }
}

impl Ring {
    /// A ring with room for at least `capacity` messages (a power of two, at least 2 so the two
    /// stamp states of a slot differ), and its one consumer head.
    pub(super) fn new(capacity: usize) -> (Ring, Head) {
        let len = capacity.max(2).next_power_of_two();
        let slots: Box<[Slot]> = (0..len as u64)
            .map(|i| Slot {
                stamp: AtomicU64::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        let ring = Ring {
            mask: len as u64 - 1,
            slots,
            tail: CachePadded::new(AtomicU64::new(0)),
        };
        let head = Head {
            pos: 0,
            ring_id: ring.id(),
        };
        (ring, head)
    }

    /// Identity of this ring (its slot allocation), used to tie a [`Head`] and batches to it.
    pub(super) fn id(&self) -> usize {
        self.slots.as_ptr() as usize
    }

    fn len(&self) -> u64 {
        self.mask + 1
    }

    /// Claims `n` consecutive tickets (in this producer's program order).
    #[inline]
    pub(super) fn claim(&self, n: u64) -> impl Iterator<Item = Ticket> {
        // Relaxed: the RMW alone makes tickets unique; the data edges are R1/R2 on the stamps.
        let first = self.tail.fetch_add(n, Ordering::Relaxed);
        (first..first + n).map(Ticket)
    }

    /// Claims one ticket.
    #[inline]
    pub(super) fn claim_one(&self) -> Ticket {
        // Relaxed: as in `claim`.
        Ticket(self.tail.fetch_add(1, Ordering::Relaxed))
    }

    /// Writes `message` into the ticket's slot and publishes it to the consumer.
    #[inline]
    pub(super) fn publish(&self, ticket: Ticket, message: Message) {
        let t = ticket.0;
        let slot = &self.slots[(t & self.mask) as usize];
        // Acquire: edge R2 (the consumer's move-out of the previous lap's message happens-before
        // our write). With reservations the slot is already free; the loop is a safety net.
        let mut backoff = Backoff::new();
        while slot.stamp.load(Ordering::Acquire) != t {
            backoff.snooze();
        }
        slot.value.with_mut(|p| {
            // SAFETY: stamp == t means the slot is free for ticket t, and `Ticket` is unique, so
            // no other thread reads or writes the value until we publish below.
            unsafe { (*p).write(message) };
        });
        // Release: edge R1 (our write happens-before the consumer's read).
        slot.stamp.store(t + 1, Ordering::Release);
    }

    /// The next ticket to be handed out: every ticket below it was claimed before this load.
    #[inline]
    pub(super) fn claimed(&self) -> u64 {
        // Relaxed: a position only (which messages count as claimed "before now" for arrival
        // stamps); the data edges are R1/R2.
        self.tail.load(Ordering::Relaxed)
    }

    /// Moves out the next message if it is published.
    #[inline]
    pub(super) fn take(&self, head: &mut Head) -> Option<Message> {
        assert_eq!(
            head.ring_id,
            self.id(),
            "a ring head used with another ring"
        );
        let pos = head.pos;
        let slot = &self.slots[(pos & self.mask) as usize];
        // Acquire: edge R1 (the producer's write of the value happens-before our read).
        if slot.stamp.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        let message = slot.value.with(|p| {
            // SAFETY: stamp == pos + 1 means ticket pos's value is initialised and published;
            // we hold the only head, so nobody else reads it, and no producer writes it until we
            // free the slot below.
            unsafe { (*p).assume_init_read() }
        });
        // Release: edge R2 (our move-out happens-before the next lap's producer overwrites).
        slot.stamp.store(pos + self.len(), Ordering::Release);
        head.pos = pos + 1;
        Some(message)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Exclusive access: no producer or consumer is left. Drop every published, unconsumed
        // value (the buffer drains before this, so normally there is none).
        let len = self.len();
        for (i, slot) in self.slots.iter().enumerate() {
            // Relaxed: `&mut self` already orders every earlier access before this one.
            let stamp = slot.stamp.load(Ordering::Relaxed);
            if stamp % len == (i as u64 + 1) % len {
                slot.value.with_mut(|p| {
                    // SAFETY: a published stamp means the value is initialised and unconsumed.
                    unsafe { (*p).assume_init_drop() };
                });
            }
        }
    }
}

#[cfg(all(test, not(tidemark_loom)))]
mod tests {
    use super::*;

    fn msg(i: u8) -> Message {
        Message::new(vec![i])
    }

    #[test]
    fn fifo_across_laps() {
        let (ring, mut head) = Ring::new(3); // 4 slots
        for lap in 0..5u8 {
            for t in ring.claim(3) {
                let i = (t.0 % 251) as u8;
                ring.publish(t, msg(i));
            }
            for k in 0..3u64 {
                let got = ring.take(&mut head).expect("published");
                assert_eq!(got.payload, vec![((lap as u64 * 3 + k) % 251) as u8]);
            }
            assert!(ring.take(&mut head).is_none());
        }
    }

    #[test]
    fn unconsumed_messages_are_dropped_with_the_ring() {
        let (ring, mut head) = Ring::new(2);
        for t in ring.claim(2) {
            ring.publish(t, msg(1));
        }
        assert!(ring.take(&mut head).is_some());
        drop(ring); // one left: must not leak (checked by miri / sanitizers) nor double-drop
    }
}
