//! When an established connection that moves no byte gives its empty buffers back.
//!
//! A handler counts the bytes it moved; once that count stands still for
//! [`IDLE_TRIM_US`], the handler frees its engines' empty buffers and gives back the
//! pages of its sockets' empty buffers ([`netstack::Stack::trim_idle`]). Once per quiet
//! spell: bytes moving again start a new one. One timer a spell, not a new deadline at
//! every step of a busy connection.

/// How long an established connection moves no byte before it gives its empty buffers
/// back. Shorter costs page faults on a request that was merely a little late; this
/// long, only connections that really sit idle (a browser's spare or keep-alive
/// connection, a quiet database or message-queue connection) pay it.
pub const IDLE_TRIM_US: u64 = 1_000_000;

/// One connection's quiet-spell state.
#[derive(Debug, Default)]
pub struct IdleTrim {
    /// When the connection, if it stays idle, gives its buffers back.
    at_us: Option<u64>,
    /// It has, in this quiet spell.
    done: bool,
    /// The bytes moved when the spell began.
    mark: u64,
}

impl IdleTrim {
    /// The handler's deadline for this, while a spell runs.
    pub fn deadline_us(&self) -> Option<u64> {
        self.at_us
    }

    /// Called on every step of an established connection with the bytes it has moved
    /// so far: `true` when the spell has run its course and the handler should trim now
    /// (then [`IdleTrim::trimmed`]).
    pub fn due(&mut self, now_us: u64, moved: u64) -> bool {
        match self.at_us {
            // The first look, or bytes moved since the last trim: a spell may start.
            None if !self.done || moved != self.mark => {
                self.done = false;
                self.mark = moved;
                self.at_us = Some(now_us + IDLE_TRIM_US);
                false
            }
            // Bytes moved during the spell: it starts again.
            Some(at) if now_us >= at && moved != self.mark => {
                self.mark = moved;
                self.at_us = Some(now_us + IDLE_TRIM_US);
                false
            }
            Some(at) => now_us >= at,
            None => false,
        }
    }

    /// The handler trimmed; `complete` is false when a send buffer still held bytes
    /// (unacknowledged data), and another spell is timed.
    pub fn trimmed(&mut self, now_us: u64, complete: bool) {
        self.done = complete;
        self.at_us = (!complete).then_some(now_us + IDLE_TRIM_US);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trim_per_quiet_spell() {
        let mut t = IdleTrim::default();
        assert!(!t.due(0, 100), "the first look starts a spell");
        assert_eq!(t.deadline_us(), Some(IDLE_TRIM_US));
        assert!(!t.due(IDLE_TRIM_US / 2, 100));
        assert!(t.due(IDLE_TRIM_US, 100), "a second with no byte moved");
        t.trimmed(IDLE_TRIM_US, true);
        assert_eq!(t.deadline_us(), None);
        assert!(!t.due(5 * IDLE_TRIM_US, 100), "once per spell");
        // Bytes moved: a new spell.
        assert!(!t.due(6 * IDLE_TRIM_US, 200));
        assert!(t.due(7 * IDLE_TRIM_US, 200));
    }

    #[test]
    fn bytes_moving_during_a_spell_restart_it() {
        let mut t = IdleTrim::default();
        t.due(0, 0);
        assert!(!t.due(IDLE_TRIM_US, 10), "moved during the spell");
        assert_eq!(t.deadline_us(), Some(2 * IDLE_TRIM_US));
        assert!(t.due(2 * IDLE_TRIM_US, 10));
        // A send buffer still held bytes: another spell.
        t.trimmed(2 * IDLE_TRIM_US, false);
        assert_eq!(t.deadline_us(), Some(3 * IDLE_TRIM_US));
        assert!(t.due(3 * IDLE_TRIM_US, 10));
    }
}
