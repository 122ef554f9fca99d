//! The TLS record reader takes untrusted bytes in arbitrary splits: it must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tls::record::Deframer;

fuzz_target!(|data: &[u8]| {
    let mut d = Deframer::default();
    for piece in data.chunks(7) {
        d.push(piece);
        while let Ok(Some(r)) = d.next_record() {
            let _ = d.header(&r);
            let _ = d.body_mut(&r);
        }
    }
});
