//! The steering classifier reads untrusted frames on every core: it must never panic.
#![no_main]
use dataplane::steer::{SteerKey, Steering};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = Steering::new(1, 3, [10, 77, 0, 1], SteerKey::random(), &[80, 443]);
    let _ = s.classify(data);
});
