//! A hierarchical timing wheel: O(1) timers for a poll-mode core.
//!
//! Every connection of a core has a deadline (TCP's retransmit, delayed-ACK and
//! keep-alive timers, a handshake's deadline, a record transmittal timer), and the
//! deadlines move all the time. A binary heap costs O(log n) per insertion and per
//! expiry, and with 50,000 connections each of its levels is a cache miss. This wheel
//! (the scheme of Varghese and Lauck, as kernels use it) files a deadline in one slot
//! chosen from its bits, and expiry takes a whole slot at once.
//!
//! Layout: [`LEVELS`] levels of 64 slots, one bitmap word per level saying which slots
//! hold entries. A tick is [`TICK_US`] µs. Level 0 covers the next 64 ticks (1 ms) one
//! tick per slot, level 1 the next 64 ms, level 2 4.2 s, level 3 4.5 min, level 4 4.8 h,
//! level 5 12.7 days; a deadline further out is filed at the end of the wheel and filed
//! again when that slot comes up. When time reaches a slot of level 1 or above, its
//! entries move down to the finer level that now covers them (each entry moves at most
//! `LEVELS - 1` times in its life).
//!
//! Precision: a deadline is rounded up to its tick, so an entry never comes out before
//! its deadline and at most one tick after it (plus the poll loop's own latency).
//!
//! Like the heap it replaces, the wheel has no handles: moving a deadline means filing a
//! new entry; the owner skips entries that no longer match when they come due. Time is
//! an argument (µs on the core's clock); the wheel never reads a clock.

/// Microseconds per tick.
pub const TICK_US: u64 = 16;
/// Levels of the wheel.
pub const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Ticks the wheel covers from its current time.
const SPAN: u64 = 1 << (SLOT_BITS * LEVELS as u32);

/// Deadlines (µs) with a payload each, handed out when due.
#[derive(Debug)]
pub struct TimerWheel<T> {
    /// The tick up to which every slot has been taken: entries at or before it are due.
    elapsed: u64,
    slots: Vec<Vec<(u64, T)>>,
    occupied: [u64; LEVELS],
    /// Entries found due and not yet handed out.
    due: Vec<(u64, T)>,
    /// No slot holds an entry for a tick before this one: an empty poll before it
    /// (most polls of a poll-mode loop) returns at once.
    quiet_until: u64,
    len: usize,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The level whose slots tell `elapsed` and `when` (ticks) apart.
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = ((elapsed ^ when) | (SLOTS as u64 - 1)).min(SPAN - 1);
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

fn slot_of(level: usize, when: u64) -> usize {
    ((when >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1)
}

impl<T> TimerWheel<T> {
    pub fn new() -> Self {
        Self {
            elapsed: 0,
            slots: (0..LEVELS * SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; LEVELS],
            due: Vec::new(),
            quiet_until: 0,
            len: 0,
        }
    }

    /// Files `value` to come due at `at_us` (µs). A deadline already past is due at the
    /// next [`TimerWheel::pop_due`].
    pub fn insert(&mut self, at_us: u64, value: T) {
        self.len += 1;
        self.file(at_us, value);
    }

    fn file(&mut self, at_us: u64, value: T) {
        let when = at_us.div_ceil(TICK_US);
        if when <= self.elapsed {
            self.due.push((at_us, value));
            return;
        }
        self.quiet_until = self.quiet_until.min(when);
        // Beyond the wheel's span: filed in the top level's last slot ahead (never the
        // slot time is in), filed again when that slot comes up.
        let top = SLOT_BITS * (LEVELS as u32 - 1);
        let when = when.min((((self.elapsed >> top) + SLOTS as u64) << top) - 1);
        let level = level_for(self.elapsed, when);
        let slot = slot_of(level, when);
        self.slots[level * SLOTS + slot].push((at_us, value));
        self.occupied[level] |= 1 << slot;
    }

    /// The first occupied slot (level, slot, its first tick), soonest first.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        // A finer level's occupied slots all lie in the current slot of every coarser
        // level, so the finest level with an entry has the soonest one.
        let level = (0..LEVELS).find(|&l| self.occupied[l] != 0)?;
        let shift = SLOT_BITS * level as u32;
        let now_slot = ((self.elapsed >> shift) as u32) & (SLOTS as u32 - 1);
        let ahead = self.occupied[level].rotate_right(now_slot).trailing_zeros();
        let slot = ((now_slot + ahead) as usize) & (SLOTS - 1);
        let level_span = 1u64 << (shift + SLOT_BITS);
        let mut start = (self.elapsed & !(level_span - 1)) + ((slot as u64) << shift);
        if start < self.elapsed & !((1u64 << shift) - 1) {
            start += level_span;
        }
        Some((level, slot, start))
    }

    /// Advances the wheel to `now_us` and hands out one entry that is due, with its
    /// deadline; `None` when nothing is due. Entries come out in tick order (within a
    /// tick, in no particular order).
    pub fn pop_due(&mut self, now_us: u64) -> Option<(u64, T)> {
        if let Some(e) = self.take_due() {
            return Some(e);
        }
        let now = now_us / TICK_US;
        if now < self.quiet_until {
            return None;
        }
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now {
                self.quiet_until = start;
                break;
            }
            self.occupied[level] &= !(1 << slot);
            let mut entries = std::mem::take(&mut self.slots[level * SLOTS + slot]);
            self.elapsed = self.elapsed.max(start);
            // Each entry goes to a finer level (or is due): never back to this slot.
            for (at, v) in entries.drain(..) {
                self.file(at, v);
            }
            // Keep the slot's allocation for the next time it fills.
            self.slots[level * SLOTS + slot] = entries;
            if !self.due.is_empty() {
                break;
            }
        }
        let e = self.take_due();
        if e.is_none() {
            self.elapsed = self.elapsed.max(now);
            if self.len == 0 {
                self.quiet_until = u64::MAX;
            }
        }
        e
    }

    fn take_due(&mut self) -> Option<(u64, T)> {
        let e = self.due.pop()?;
        self.len -= 1;
        Some(e)
    }

    /// The earliest time (µs) at which an entry may be due: exact for the next tick's
    /// entries, a lower bound for entries on a coarser level (waking then moves them
    /// down and finds the exact one). `None` when empty.
    pub fn next_us(&self) -> Option<u64> {
        if !self.due.is_empty() {
            return Some(self.elapsed * TICK_US);
        }
        self.next_slot().map(|(_, _, start)| start * TICK_US)
    }

    /// Entries held (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(w: &mut TimerWheel<u32>, now: u64) -> Vec<(u64, u32)> {
        std::iter::from_fn(|| w.pop_due(now)).collect()
    }

    #[test]
    fn entries_come_out_when_due_never_before() {
        let mut w = TimerWheel::new();
        w.insert(300, 1);
        w.insert(100, 2);
        w.insert(200, 3);
        assert_eq!(w.len(), 3);
        assert_eq!(drain(&mut w, 99), vec![]);
        assert_eq!(drain(&mut w, 250), vec![(100, 2), (200, 3)]);
        assert_eq!(w.len(), 1);
        // 300 µs rounds up to tick 19 (304 µs): never early, at most a tick late.
        assert_eq!(drain(&mut w, 303), vec![]);
        assert_eq!(drain(&mut w, 304), vec![(300, 1)]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_past_deadline_is_due_at_once() {
        let mut w = TimerWheel::new();
        assert_eq!(drain(&mut w, 10_000), vec![]);
        w.insert(5, 7);
        assert_eq!(w.next_us(), Some(10_000 / TICK_US * TICK_US));
        assert_eq!(drain(&mut w, 10_000), vec![(5, 7)]);
    }

    #[test]
    fn far_deadlines_move_down_the_levels_and_come_out_in_order() {
        let mut w = TimerWheel::new();
        // One per level and beyond the span (about 12.7 days).
        let ats = [
            50u64,
            5_000,
            300_000,
            20_000_000,
            1_000_000_000,
            30_000_000_000,
            5_000_000_000_000,
        ];
        for (i, &at) in ats.iter().enumerate().rev() {
            w.insert(at, i as u32);
        }
        for (i, &at) in ats.iter().enumerate() {
            let next = w.next_us().unwrap();
            assert!(next <= at.div_ceil(TICK_US) * TICK_US, "{next} after {at}");
            assert_eq!(drain(&mut w, next - 1), vec![], "nothing before next_us");
            assert_eq!(drain(&mut w, at - 1), vec![], "nothing early ({at})");
            assert_eq!(drain(&mut w, at + TICK_US), vec![(at, i as u32)]);
        }
        assert!(w.is_empty());
        assert_eq!(w.next_us(), None);
    }

    /// Against a reference list: random deadlines inserted while time moves in random
    /// steps; each entry comes out exactly once, at the first poll at or after the end
    /// of its deadline's tick, and never before `next_us` said it could.
    #[test]
    fn matches_a_reference_under_random_load() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut w = TimerWheel::new();
        let mut pending: Vec<(u64, u32)> = Vec::new();
        let mut now = 0u64;
        let mut fired = 0;
        for id in 0..20_000u32 {
            let span = [100, 10_000, 1_000_000, 100_000_000, 1 << 50][rnd(5) as usize];
            let at = now + rnd(span);
            w.insert(at, id);
            pending.push((at, id));
            if rnd(8) == 0 {
                let next = w.next_us().unwrap();
                let step = [50, 5_000, 500_000, 1 << 40][rnd(4) as usize];
                now += rnd(step);
                let mut out = drain(&mut w, now);
                assert!(out.is_empty() || next <= now, "{next} > {now}");
                let tick_done = now / TICK_US;
                let mut due: Vec<_> = pending
                    .iter()
                    .filter(|e| e.0.div_ceil(TICK_US) <= tick_done)
                    .copied()
                    .collect();
                pending.retain(|e| e.0.div_ceil(TICK_US) > tick_done);
                fired += out.len();
                out.sort_unstable();
                due.sort_unstable();
                assert_eq!(out, due, "at {now}");
                assert_eq!(w.len(), pending.len());
            }
        }
        assert!(fired > 5_000, "{fired}");
    }
}
