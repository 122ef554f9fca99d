//! The session decoder: tickets are ours, but a shared session store is another
//! machine, so its values are parsed like network input. Whatever decodes must encode
//! back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tls::Session;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Session::decode(data) {
        let again = Session::decode(s.encode().bytes()).expect("re-decode");
        assert_eq!(again, s);
    }
});
