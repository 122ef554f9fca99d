//! The driver's timers: one deadline per connection handler, earliest first.
//!
//! A handler says when it next wants to be stepped ([`crate::Handler::deadline_us`]:
//! a TLS handshake's deadline, a session lookup's, a transmittal timer); the driver
//! keeps one entry per change of that deadline here. An entry is not removed when its
//! deadline moves or its handler ends: it is skipped when it comes due and no longer
//! matches (the driver checks the handler's armed deadline), so no entry needs a
//! handle. The entries live in a hierarchical timing wheel
//! ([`dataplane::timer_wheel`]): arming and expiry are O(1) however many handlers a
//! core holds, and a deadline comes due at most one wheel tick (16 µs) after its time,
//! never before. TCP's own timers stay in `netstack`.

use dataplane::timer_wheel::TimerWheel;

use crate::HandlerId;

/// Deadlines (µs on the core's clock) of handlers, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    wheel: TimerWheel<HandlerId>,
}

impl Timers {
    /// Arms a deadline for `id` at `at_us`.
    pub fn arm(&mut self, id: HandlerId, at_us: u64) {
        self.wheel.insert(at_us, id);
    }

    /// Pops the next entry due at `now_us`, with its deadline (it may be stale).
    pub fn pop_due(&mut self, now_us: u64) -> Option<(HandlerId, u64)> {
        self.wheel.pop_due(now_us).map(|(at, id)| (id, at))
    }

    /// When the next entry may come due (possibly a stale one; for far deadlines a
    /// lower bound: see [`TimerWheel::next_us`]).
    pub fn next_us(&self) -> Option<u64> {
        self.wheel.next_us()
    }

    /// Entries held (stale ones included).
    pub fn len(&self) -> usize {
        self.wheel.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wheel.is_empty()
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
        t.arm(a, 320);
        t.arm(b, 96);
        t.arm(a, 208);
        assert_eq!(t.next_us(), Some(96));
        assert_eq!(t.pop_due(95), None);
        assert_eq!(t.pop_due(250), Some((b, 96)));
        assert_eq!(t.pop_due(250), Some((a, 208)));
        assert_eq!(t.pop_due(250), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(1_000), Some((a, 320)));
        assert!(t.is_empty());
    }
}
