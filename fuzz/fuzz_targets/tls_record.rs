//! The TLS record reader takes untrusted bytes in arbitrary splits: it must never panic,
//! and record offload's view of it (peeking ahead from any position, lending the buffer
//! to a job and taking it back) must agree with reading record by record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tls::record::Deframer;

fuzz_target!(|data: &[u8]| {
    let mut d = Deframer::default();
    for piece in data.chunks(7) {
        d.push(piece);
        // Peek ahead as record offload does, without moving.
        let mut at = d.pos();
        let mut peeked = Vec::new();
        while let Ok(Some(r)) = d.peek_record(at) {
            peeked.push((r.start, r.end));
            at = r.end;
        }
        // Lend and restore: nothing changes.
        let pos = d.pos();
        let buf = d.lend();
        assert_eq!(d.push(b"x"), 0, "no bytes while lent");
        assert!(matches!(d.peek_record(pos), Ok(None)));
        d.restore(buf, pos);
        let mut read = Vec::new();
        while let Ok(Some(r)) = d.next_record() {
            let _ = d.header(&r);
            let _ = d.body_mut(&r);
            read.push((r.start, r.end));
        }
        assert_eq!(peeked, read);
    }
});
