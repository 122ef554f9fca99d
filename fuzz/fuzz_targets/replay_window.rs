//! The secure datagrams' replay window against a model: whatever order and spread of
//! sequence numbers arrives (three bytes each: a jump or a step back), the window
//! never lets one through twice, never refuses one it has not seen inside its size,
//! and never panics; datagram headers parse without panicking too.
#![no_main]
use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use socks_wire::datagram::{Header, Replay, ReplayWindow};

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let mut w = ReplayWindow::new(64 * (u32::from(size % 8) + 1));
    let mut seen = HashSet::new();
    let mut highest: Option<u64> = None;
    let mut seq: u64 = 0;
    for op in rest.chunks_exact(3) {
        let step = u64::from(u16::from_be_bytes([op[1], op[2]]));
        seq = if op[0] & 1 == 0 {
            seq.saturating_add(step)
        } else {
            seq.saturating_sub(step)
        };
        let inside = seq != u64::MAX && highest.is_none_or(|h| seq > h || h - seq < w.size());
        match w.check(seq) {
            Ok(()) => {
                assert!(!seen.contains(&seq), "{seq} let through twice");
                assert!(inside, "{seq} older than the window let through");
                if op[0] & 2 == 0 {
                    // Opened: recorded.
                    w.accept(seq);
                    seen.insert(seq);
                    highest = Some(highest.map_or(seq, |h| h.max(seq)));
                }
            }
            Err(Replay::Duplicate) => assert!(seen.contains(&seq), "{seq} refused unseen"),
            Err(Replay::TooOld) => assert!(!inside, "{seq} inside the window refused"),
        }
    }
});
