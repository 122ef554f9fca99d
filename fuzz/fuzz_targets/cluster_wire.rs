//! The cluster wire parser reads datagrams from the management network: it must never
//! panic, and whatever parses must re-encode to the same bytes (the encoding is
//! canonical). The MAC is checked too, on the same input, so that path is covered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use session_store::wire::Message;
use session_store::ClusterKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse_unauthenticated(data) {
        assert_eq!(m.encode_unauthenticated(), data);
    }
    thread_local! {
        static KEY: ClusterKey = ClusterKey::from_secret(&[0x5a; 32]).expect("key");
    }
    KEY.with(|k| {
        if let Ok(m) = Message::decode(data, k) {
            assert_eq!(m.encode(k).expect("encode"), data);
        }
    });
});
