//! Where a poll-mode core's busy iterations spend their cycles, by step of the loop
//! (`[dataplane] loop_phases = true`; off by default).
//!
//! A sampling profiler cannot tell a busy iteration from an idle one: both run the same
//! functions (an RX burst that finds nothing, a timer check that fires nothing), so at
//! half load its "TCP timers" or "RX" share is mostly empty polls. This counts, for
//! iterations that did work only, the cycle counter's advance across each step of
//! [`crate::Driver::poll_once`] (the crate docs number them). An iteration reads the
//! counter eleven times (about 0.1 µs on the machines measured); with the switch off it
//! reads none.
//!
//! What it must not do: anything but count (no allocation, no locked instruction: one
//! writer, the core, with relaxed loads and stores).

use std::sync::atomic::{AtomicU64, Ordering};

/// The steps of one iteration, in loop order (names as the stats serve them).
pub const PHASES: [&str; 10] = [
    "housekeeping",
    "crypto_completions",
    "rx",
    "accept",
    "tcp_timers",
    "handler_timers_and_wakes",
    "steps",
    "records",
    "tcp_egress",
    "tx_flush",
];

/// Busy cycles per step, and how many busy iterations were measured (written by the
/// core; readable from any thread).
#[derive(Debug, Default)]
pub struct PhaseStats {
    cycles: [AtomicU64; PHASES.len()],
    iterations: AtomicU64,
}

impl PhaseStats {
    /// Each step's busy cycles, then `("iterations", n)`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = PHASES
            .iter()
            .zip(&self.cycles)
            .map(|(&n, c)| (n, c.load(Ordering::Relaxed)))
            .collect();
        v.push(("iterations", self.iterations.load(Ordering::Relaxed)));
        v
    }

    /// Adds one busy iteration: `marks[0]` is its start, `marks[i + 1]` the end of step `i`.
    pub(crate) fn add(&self, marks: &[u64; PHASES.len() + 1]) {
        for (i, c) in self.cycles.iter().enumerate() {
            let spent = marks[i + 1].wrapping_sub(marks[i]);
            c.store(
                c.load(Ordering::Relaxed).wrapping_add(spent),
                Ordering::Relaxed,
            );
        }
        let n = &self.iterations;
        n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// One iteration's marks (a no-op when accounting is off).
pub(crate) struct Marks {
    on: bool,
    at: [u64; PHASES.len() + 1],
    next: usize,
}

impl Marks {
    #[inline]
    pub(crate) fn start(on: bool) -> Self {
        let mut m = Marks {
            on,
            at: [0; PHASES.len() + 1],
            next: 0,
        };
        m.mark();
        m
    }

    /// The end of the current step.
    #[inline]
    pub(crate) fn mark(&mut self) {
        if self.on && self.next < self.at.len() {
            self.at[self.next] = dataplane::cores::cycles();
            self.next += 1;
        }
    }

    /// Adds the iteration to `stats` if it did work and every step was marked.
    #[inline]
    pub(crate) fn finish(self, busy: bool, stats: &PhaseStats) {
        if self.on && busy && self.next == self.at.len() {
            stats.add(&self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_iterations_are_counted_by_step_and_idle_ones_are_not() {
        let stats = PhaseStats::default();
        let mut m = Marks::start(true);
        for _ in 0..PHASES.len() {
            std::hint::black_box((0..1000u64).sum::<u64>());
            m.mark();
        }
        let first = m.at;
        m.finish(true, &stats);
        let s = stats.snapshot();
        assert_eq!(s.last(), Some(&("iterations", 1)));
        let total: u64 = s[..PHASES.len()].iter().map(|&(_, c)| c).sum();
        assert_eq!(total, first[PHASES.len()] - first[0]);
        // An idle iteration, and one with the switch off, add nothing.
        let mut idle = Marks::start(true);
        for _ in 0..PHASES.len() {
            idle.mark();
        }
        idle.finish(false, &stats);
        let mut off = Marks::start(false);
        for _ in 0..PHASES.len() {
            off.mark();
        }
        off.finish(true, &stats);
        assert_eq!(stats.snapshot(), s);
        // An iteration with a step unmarked is not added (its last step would be wrong).
        let mut short = Marks::start(true);
        short.mark();
        short.finish(true, &stats);
        assert_eq!(stats.snapshot(), s);
    }
}
