//! The driver's timers: one deadline per connection handler, earliest first.
//!
//! A handler says when it next wants to be stepped ([`crate::Handler::deadline_us`]:
//! a TLS handshake's deadline, a session lookup's, a transmittal timer); the driver
//! keeps one entry per change of that deadline here. An entry is not removed when its
//! deadline moves or its handler ends: it is skipped when it comes due and no longer
//! matches (the driver checks the handler's armed deadline), which keeps every
//! operation O(log n) without a handle per entry. TCP's own timers stay in `netstack`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::HandlerId;

/// Deadlines (µs on the core's clock) of handlers, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
}

impl Timers {
    /// Arms a deadline for `id` at `at_us`.
    pub fn arm(&mut self, id: HandlerId, at_us: u64) {
        self.heap.push(Reverse((at_us, id.idx, id.gen)));
    }

    /// Pops the next entry due at `now_us`, with its deadline (it may be stale).
    pub fn pop_due(&mut self, now_us: u64) -> Option<(HandlerId, u64)> {
        let &Reverse((at, idx, gen)) = self.heap.peek()?;
        if at > now_us {
            return None;
        }
        self.heap.pop();
        Some((HandlerId { idx, gen }, at))
    }

    /// The earliest deadline armed (possibly stale).
    pub fn next_us(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Entries held (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_earliest_first_and_only_when_due() {
        let mut t = Timers::default();
        let a = HandlerId { idx: 1, gen: 1 };
        let b = HandlerId { idx: 2, gen: 1 };
        t.arm(a, 300);
        t.arm(b, 100);
        t.arm(a, 200);
        assert_eq!(t.next_us(), Some(100));
        assert_eq!(t.pop_due(99), None);
        assert_eq!(t.pop_due(250), Some((b, 100)));
        assert_eq!(t.pop_due(250), Some((a, 200)));
        assert_eq!(t.pop_due(250), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(1_000), Some((a, 300)));
        assert!(t.is_empty());
    }
}
